//! Clients over raw TCP: one accept loop and one connection runner for every framing that is
//! not WebSocket (`text` lines, `goim` packets). A framing is a [`Wire`]: how to cut the byte
//! stream into frames, what the hub gets for each, and how the hub's messages go out.

use super::client::{admit, poll_turn, Admit, Client, Limits, Stop, Turn};
use super::conn::{ready_to_write, Conn, Flow, WRITE_BATCH};
use super::door::{Door, Entry};
use super::parking::{Parking, Sleeper};
use crate::hub::{HubMsg, Out};
use crate::outbox::OutboxRx;
use bytes::{Bytes, BytesMut};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::codec::Decoder;
use tracing::{debug, info, warn};

/// One framing of client bytes. A value is made per connection by [`Wire::connection`] and
/// holds that connection's state (goim's requests waiting for their answers).
pub trait Wire: Send + Sync + 'static {
    type Codec: Decoder<Item = Self::Frame, Error = Self::Error> + Send + Unpin + 'static;
    type Error: std::fmt::Display + From<std::io::Error> + Send;
    type Frame: Send;
    /// The name in logs.
    const NAME: &'static str;

    fn connection(&self) -> Self;
    fn decoder(&self) -> Self::Codec;
    /// What the hub gets for a frame (a client message as JSON); `Err` closes the connection
    /// with that reason.
    fn inbound(&mut self, frame: Self::Frame) -> Result<Bytes, String>;
    /// Appends the wire form of one outgoing message; `Ok(true)` closes after it.
    fn outbound(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<bool, String>;
    /// Whether nothing the client asked waits for its answer; false where the framing cannot
    /// tell (a parked connection then waits a grace period for an answer before sleeping
    /// again: `Conn::poll_nap`).
    fn answered(&self) -> bool {
        false
    }
}

#[derive(Clone)]
pub struct TcpConfig {
    pub queue: usize,
    pub limits: Arc<Limits>,
    /// Connections per address, and permits for those not yet admitted (see `door`).
    pub door: Door,
}

pub async fn serve<W: Wire>(listener: TcpListener, hub: mpsc::Sender<HubMsg>, config: TcpConfig, wire: W) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let entry = match config.door.enter(addr.ip()) {
                    Ok(e) => e,
                    Err(why) => {
                        register::stats::inc(&config.limits.stats.limited);
                        info!(%addr, transport = W::NAME, "{}: closing this one", why.reason());
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, addr, hub.clone(), config.clone(), wire.connection(), entry));
            }
            Err(e) => {
                warn!(transport = W::NAME, "client accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection<W: Wire>(stream: TcpStream, addr: SocketAddr, hub: mpsc::Sender<HubMsg>, config: TcpConfig, wire: W, mut entry: Entry) {
    let client = match admit(&hub, addr, config.queue, config.limits.clone()).await {
        Admit::Yes(client) => client,
        Admit::NoWorker(_) => {
            // No close frame to carry a reason on this transport: the log has it.
            info!(%addr, transport = W::NAME, "no business worker available: closing the client");
            return;
        }
        Admit::TooManyFromIp | Admit::Gone => return,
    };
    entry.handshake_done();
    let codec = wire.decoder();
    // The connection goes on in a task of its own: this one is as big as admission's wait and
    // would keep that size for the connection's whole life.
    Asleep { client, wire, codec, entry }.spawn(stream, false);
}

/// A connection with no task: what `run` holds but its socket, while it is parked.
struct Asleep<W: Wire> {
    client: Client,
    wire: W,
    codec: W::Codec,
    entry: Entry,
}

impl<W: Wire> Asleep<W> {
    /// The connection's task, around its socket; `roused` from the parking after a rest, or
    /// new.
    fn spawn(self, stream: TcpStream, roused: bool) {
        let Asleep { client, wire, codec, entry } = self;
        let after = client.parking().map(Parking::after);
        tokio::spawn(run(client, Conn::new(stream, BytesMut::new()).nap_after(after, roused), wire, codec, entry));
    }
}

impl<W: Wire> Sleeper for Asleep<W> {
    fn outbox(&self) -> &OutboxRx<Out> {
        &self.client.rx
    }

    fn wake(self: Box<Self>, stream: std::io::Result<TcpStream>, rested: bool) {
        match stream {
            Ok(stream) => self.spawn(stream, rested),
            Err(e) => {
                let client = self.client;
                info!(conn = client.conn, addr = %client.addr, transport = W::NAME, "could not take a parked connection back, closing it: {e}");
                client.gone();
            }
        }
    }
}

/// Reads frames into the hub and writes what the hub queues, in one task, until either side
/// ends the connection. `entry` is held to the end: the connection counts for its address
/// until it ends.
#[allow(clippy::manual_async_fn)] // on purpose, as `websocket::run`: the arguments are not stored twice
fn run<W: Wire>(mut client: Client, mut conn: Conn<TcpStream>, mut wire: W, mut codec: W::Codec, entry: Entry) -> impl Future<Output = ()> + Send {
    async move {
        // Whether the client is owed what is queued for it before the connection ends (a bad
        // frame, a flood); not when it left or was destroyed.
        let mut closing = false;
        let mut ended = false;
        let mut parked = false;
        let mut io_first = false;
        'conn: loop {
            loop {
                let data = match next_frame(&mut wire, &mut codec, &mut conn) {
                    Ok(Some(data)) => data,
                    Ok(None) => break,
                    Err(why) => {
                        info!(conn = client.conn, addr = %client.addr, transport = W::NAME, "closing client: {why}");
                        closing = true;
                        break 'conn;
                    }
                };
                if let Err(stop) = client.deliver(data).await {
                    closing = stop != Stop::HubGone;
                    break 'conn;
                }
            }
            conn.release_read();
            if conn.eof {
                debug!(conn = client.conn, addr = %client.addr, transport = W::NAME, "client left");
                break;
            }
            // The same turn as `websocket::run`'s: the wait is shared (`poll_turn`), its handling
            // written out in both (as one shared async fn, tried, it made both tasks 48 bytes
            // bigger, past a 128-byte step of their cells). The turn is settled before anything
            // else is awaited: held across the write, it would size the task for it.
            let taking = conn.wbuf.len() < WRITE_BATCH;
            io_first = !io_first;
            // Captured by value where it can be: the wait is held across the task's main await.
            // Whether a goim request waits for its answer does not change during the wait: a
            // bool here, not a reference to the wire (8 bytes of every task).
            let (c, cl, answered) = (&mut conn, &mut client, wire.answered());
            // Matched as it comes: a binding of the turn would be kept across the write's await
            // below, 136 bytes of every connection's task.
            let taken = match poll_fn(move |cx| match poll_turn(cx, c, cl, taking, io_first) {
                Poll::Ready(turn) => {
                    c.busy();
                    Poll::Ready(Some(turn))
                }
                Poll::Pending => match cl.parking() {
                    Some(p) => c.poll_nap(cx, p.after(), answered).map(|()| None),
                    None => Poll::Pending,
                },
            })
            .await
            {
                // Idle long enough, with nothing waiting either way: parked below.
                None => {
                    parked = true;
                    break;
                }
                Some(Turn::Io(io)) => match conn.note(io) {
                    Ok(()) => false,
                    Err(e) => {
                        debug!(conn = client.conn, addr = %client.addr, transport = W::NAME, "client connection error: {e}");
                        break;
                    }
                },
                // Shut (or every sender gone): over. While the socket is full nothing is taken,
                // but a shut queue still ends the connection.
                Some(Turn::Out(None)) => break,
                Some(Turn::Out(Some(m))) => {
                    if let Flow::End = take(&mut wire, m, &mut client.rx, &mut conn.wbuf) {
                        ended = true;
                        break;
                    }
                    true
                }
            };
            if taken {
                if let Err(e) = conn.write_now().await {
                    debug!(conn = client.conn, addr = %client.addr, transport = W::NAME, "client connection error: {e}");
                    break;
                }
            }
        }
        if parked {
            if let Some(parking) = client.parking().cloned() {
                parking.park(conn.into_stream(), Box::new(Asleep { client, wire, codec, entry }));
                return;
            }
        }
        // Closing is rare and its wait is big (a timer): boxed, so the task is not sized for it.
        if client.rx.is_shut() {
            // Destroyed (CMD_DESTROY, slow reader, heartbeat): nothing more is written.
        } else if ended {
            Box::pin(conn.finish()).await;
        } else if closing {
            // What is already queued goes out first: this framing has no close message.
            while let Some(m) = client.rx.try_recv() {
                if let Flow::End = take(&mut wire, m, &mut client.rx, &mut conn.wbuf) {
                    break;
                }
            }
            Box::pin(conn.finish()).await;
        }
        client.gone();
        drop(entry);
    }
}

/// The next whole frame read, as the hub gets it; `Err` closes the connection with that reason.
/// Out of the task's body so that nothing of the decoding is held across its awaits.
fn next_frame<W: Wire>(wire: &mut W, codec: &mut W::Codec, conn: &mut Conn<TcpStream>) -> Result<Option<Bytes>, String> {
    let decoded = if conn.eof { codec.decode_eof(&mut conn.rbuf) } else { codec.decode(&mut conn.rbuf) };
    match decoded {
        Ok(Some(frame)) => wire.inbound(frame).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes `first` and whatever else waits in the queue (up to a batch) into `wbuf`.
fn take<W: Wire>(wire: &mut W, first: Out, rx: &mut OutboxRx<Out>, wbuf: &mut BytesMut) -> Flow {
    ready_to_write(wbuf);
    let mut next = first;
    loop {
        let (msg, last) = match next {
            Out::Send(m) => (Some(m), false),
            Out::Kick(m) => (m, true),
            Out::Close(_) => (None, true),
        };
        let mut end = last;
        if let Some(m) = msg {
            match wire.outbound(&m, wbuf) {
                Ok(close) => end |= close,
                Err(why) => warn!(transport = W::NAME, "message not sent: {why}"),
            }
        }
        if end {
            return Flow::End;
        }
        if wbuf.len() >= WRITE_BATCH {
            return Flow::Go;
        }
        match rx.try_recv() {
            Some(m) => next = m,
            None => return Flow::Go,
        }
    }
}
