//! What every transport does the same way once it has a frame: admission by the hub, the
//! per-connection limit on the message rate, and handing frames on. (The first-message
//! deadline is the hub's: a connection's task keeps no timer.)
//! Each transport keeps only its own framing and writer.

use super::conn::{millis, Conn, Io, Transport};
use super::parking::Parking;
use crate::hub::{Admission, HubMsg, Out};
use crate::outbox::{outbox, OutboxRx};
use crate::peer::Peer;
use crate::stats::Stats;
use crate::tables::ConnId;
use bytes::Bytes;
use futures_util::future::{ready, BoxFuture, Either, Ready};
use register::stats::inc;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::info;

/// The bytes of a message for a transport that frames them itself (text, goim, long poll). A
/// pre-framed WebSocket message (FLAG_NOT_CALL_ENCODE) has no meaning there.
pub fn payload(msg: &tokio_tungstenite::tungstenite::Message) -> Result<Bytes, String> {
    use tokio_tungstenite::tungstenite::Message;
    match msg {
        Message::Text(t) => Ok(Bytes::from(t.clone())),
        Message::Binary(b) => Ok(b.clone()),
        _ => Err("a pre-framed WebSocket message cannot go to this transport".into()),
    }
}

/// The limits a connection's reader enforces itself (no shared state: no locks).
#[derive(Clone)]
pub struct Limits {
    /// Messages per second and burst (rate 0 = no limit).
    pub rate: (f64, f64),
    pub stats: Arc<Stats>,
    /// Messages the gateway keeps as heartbeats (`Config::heartbeat_messages`).
    pub heartbeats: Arc<Vec<Bytes>>,
    /// Where an idle text or goim connection sleeps without a task (None: it never does).
    pub parking: Option<Parking>,
}

/// A token bucket: `rate` messages per second, up to `burst` at once. Eight bytes, not an
/// `f64` and an `Instant` (24): every connection's task holds one for its life.
struct Bucket {
    tokens: f32,
    /// When it was last filled, in milliseconds on [`millis`]'s clock. A wrap (49.7 days) could
    /// only short a client silent for a multiple of that by a few tokens.
    at: u32,
}

impl Bucket {
    fn full(burst: f64) -> Bucket {
        Bucket { tokens: burst as f32, at: millis() }
    }

    fn take(&mut self, rate: f64, burst: f64) -> bool {
        let now = millis();
        let elapsed = f64::from(now.wrapping_sub(self.at)) / 1000.0;
        self.tokens = (f64::from(self.tokens) + elapsed * rate).min(burst) as f32;
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The hub's answer, as a transport sees it.
pub enum Admit {
    /// The client holds its queue's receiving end (`Client::rx`).
    Yes(Client),
    NoWorker(OutboxRx<Out>),
    TooManyFromIp,
    /// The hub is gone (the gateway is stopping).
    Gone,
}

/// Announces a new connection to the hub (ON_CONNECT goes to a worker at once, as in
/// GatewayWorker) and returns what the transport needs to serve it.
pub async fn admit(hub: &mpsc::Sender<HubMsg>, addr: SocketAddr, queue: usize, limits: Arc<Limits>) -> Admit {
    let (out_tx, rx) = outbox::<Out>(queue);
    let (reply_tx, reply_rx) = oneshot::channel();
    // The hub holds the only sender: when it forgets the client, the queue says so.
    let accept = HubMsg::Accept { addr, out: out_tx, reply: reply_tx };
    if hub.send(accept).await.is_err() {
        return Admit::Gone;
    }
    match reply_rx.await {
        Ok(Admission::Admitted(conn)) => {
            let bucket = Bucket::full(limits.rate.1);
            Admit::Yes(Client { conn, addr: addr.into(), rx, hub: hub.clone(), limits, bucket })
        }
        Ok(Admission::NoWorker) => Admit::NoWorker(rx),
        Ok(Admission::TooManyFromIp) => {
            info!(%addr, "too many connections from this address: refused");
            Admit::TooManyFromIp
        }
        Err(_) => Admit::Gone,
    }
}

/// A frame's way to the hub: done at once, or a boxed wait for room.
pub type Delivery = Either<Ready<Result<(), Stop>>, BoxFuture<'static, Result<(), Stop>>>;

/// Why a reader stops taking frames from its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The client went over the message rate.
    Flood,
    /// The hub is gone.
    HubGone,
}

impl Stop {
    /// The WebSocket close code and reason for this stop, when the client should hear one.
    pub fn close(self) -> Option<(u16, &'static str)> {
        match self {
            Stop::Flood => Some((1008, "message rate limit")),
            Stop::HubGone => None,
        }
    }
}

/// One admitted client connection, as its task holds it for the connection's life (every byte
/// here is a byte of every connection's task: docs/BENCHMARKS.md).
pub struct Client {
    pub conn: ConnId,
    pub addr: Peer,
    /// What the hub queues for the client; its `hear` flag is set on a heartbeat the gateway
    /// keeps, for the hub's heartbeat tick.
    pub rx: OutboxRx<Out>,
    pub hub: mpsc::Sender<HubMsg>,
    /// Shared by every connection: one pointer in each connection's task, not 48 bytes.
    limits: Arc<Limits>,
    bucket: Bucket,
}

impl Client {
    /// Hands one client frame to the hub, after the rate limit. The work is done by the call;
    /// the future returned waits only when the hub's queue is full, and then in a box: tokio's
    /// `send` future is ≈ 380 bytes, and a connection's task is as big as the biggest thing it
    /// ever awaits, for its whole life (docs/BENCHMARKS.md).
    pub fn deliver(&mut self, data: Bytes) -> Delivery {
        self.rx.speak();
        let (rate, burst) = self.limits.rate;
        if rate > 0.0 && !self.bucket.take(rate, burst) {
            inc(&self.limits.stats.limited);
            info!(conn = self.conn, addr = %self.addr, "message flood: more than {rate}/s (burst {burst}); closing");
            return Either::Left(ready(Err(Stop::Flood)));
        }
        if self.limits.heartbeats.iter().any(|h| h[..] == *data.trim_ascii()) {
            self.rx.hear();
            return Either::Left(ready(Ok(())));
        }
        match self.hub.try_send(HubMsg::Data { conn: self.conn, data }) {
            Ok(()) => Either::Left(ready(Ok(()))),
            Err(TrySendError::Full(msg)) => {
                let hub = self.hub.clone();
                Either::Right(Box::pin(async move { hub.send(msg).await.map_err(|_| Stop::HubGone) }))
            }
            Err(TrySendError::Closed(_)) => Either::Left(ready(Err(Stop::HubGone))),
        }
    }

    /// Hands on the messages of one frame in order (goim packs several in one), stopping at
    /// the first refused.
    pub async fn deliver_all(&mut self, messages: Vec<Bytes>) -> Result<(), Stop> {
        for m in messages {
            self.deliver(m).await?;
        }
        Ok(())
    }

    /// Where the connection sleeps while idle, if it may.
    pub fn parking(&self) -> Option<&Parking> {
        self.limits.parking.as_ref()
    }

    /// Tells the hub the connection is over (ON_CLOSE goes to the worker). Never waits: when
    /// the hub's queue is full, a task of its own delivers it.
    pub fn gone(self) {
        if let Err(TrySendError::Full(msg)) = self.hub.try_send(HubMsg::Gone { conn: self.conn }) {
            let hub = self.hub.clone();
            tokio::spawn(async move {
                let _ = hub.send(msg).await;
            });
        }
    }
}

/// What one wait of a connection's task brought.
pub enum Turn {
    /// The socket: bytes read, the write batch gone, the client's end, or a failure.
    Io(Io),
    /// A message from the hub; `None` once the queue is shut or every sender is gone.
    Out(Option<Out>),
}

/// Waits on a connection's socket and its queue (taken from only while `taking`: the write
/// batch has room) in one poll, for the task's own `poll_fn`: tokio's `select!` over the waits
/// held 128 bytes of every connection's task, and a connection's task is most of what an idle
/// one costs (docs/BENCHMARKS.md). `io_first` says which of the socket and the queue is asked
/// first; the caller alternates it, so that neither a client that writes without pause nor a
/// queue that never empties keeps the other waiting.
pub fn poll_turn<S: Transport>(cx: &mut Context<'_>, conn: &mut Conn<S>, client: &mut Client, taking: bool, io_first: bool) -> Poll<Turn> {
    if io_first {
        if let Poll::Ready(io) = conn.poll_io(cx) {
            return Poll::Ready(Turn::Io(io));
        }
    }
    if let Poll::Ready(m) = client.rx.poll_recv_if(cx, taking) {
        return Poll::Ready(Turn::Out(m));
    }
    if !io_first {
        if let Poll::Ready(io) = conn.poll_io(cx) {
            return Poll::Ready(Turn::Io(io));
        }
    }
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;
    use bytes::BytesMut;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::Message;

    /// A connection over a real socket pair, its client's end, an admitted `Client`, and the
    /// hub's end of its queue.
    async fn connection() -> (Conn<TcpStream>, TcpStream, Client, Outbox<Out>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (peer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (server, _) = accepted.expect("accept");
        let (out, rx) = outbox::<Out>(64);
        let (hub, _hub_rx) = mpsc::channel(1);
        let limits = Arc::new(Limits { rate: (0.0, 0.0), stats: Arc::new(Stats::default()), heartbeats: Arc::new(Vec::new()), parking: None });
        let bucket = Bucket::full(0.0);
        let client = Client { conn: 1, addr: addr.into(), rx, hub, limits, bucket };
        (Conn::new(server, BytesMut::new()), peer.expect("connect"), client, out)
    }

    #[tokio::test]
    async fn a_busy_socket_and_a_busy_queue_share_the_turns() {
        let (mut conn, mut peer, mut client, out) = connection().await;
        // The client writes without pause, and the queue never runs dry.
        peer.write_all(&[b'x'; 64 * 1024]).await.expect("write");
        let (mut reads, mut messages) = (0, 0);
        let mut io_first = false;
        for _ in 0..20 {
            out.try_send(Out::Send(Message::Text("hi".into()))).expect("room");
            io_first = !io_first;
            match poll_fn(|cx| poll_turn(cx, &mut conn, &mut client, true, io_first)).await {
                Turn::Io(Io::Read) => {
                    reads += 1;
                    conn.rbuf.clear();
                }
                Turn::Out(Some(_)) => messages += 1,
                _ => panic!("an unexpected turn"),
            }
        }
        assert_eq!((reads, messages), (10, 10), "each had every other turn");
        // Not taking (the write batch is full): queued messages wait, and the socket is heard.
        drop(peer);
        loop {
            match poll_fn(|cx| poll_turn(cx, &mut conn, &mut client, false, true)).await {
                Turn::Io(Io::Read) => conn.rbuf.clear(),
                Turn::Io(Io::Eof) => break,
                _ => panic!("the queue is not taken from while the batch is full"),
            }
        }
        assert!(!out.is_empty(), "still queued");
        // A shut queue ends the wait even while nothing is taken.
        out.shut();
        assert!(matches!(poll_fn(|cx| poll_turn(cx, &mut conn, &mut client, false, false)).await, Turn::Out(None)));
    }
}
