//! Clients over raw TCP: one accept loop and one connection runner for every framing that is
//! not WebSocket (`text` lines, `goim` packets). A framing is a [`Wire`]: how to cut the byte
//! stream into frames, what the hub gets for each, and how the hub's messages go out.

use super::client::{admit, Admit, Limits, Stop};
use super::door::{Door, Entry};
use crate::hub::{HubMsg, Out};
use crate::outbox::OutboxRx;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// One framing of client bytes. A value is made per connection by [`Wire::connection`], and its
/// clones (one for the reader, one for the writer) share that connection's state.
pub trait Wire: Clone + Send + Sync + 'static {
    type Codec: Decoder<Item = Self::Frame, Error = Self::Error> + Send + Unpin + 'static;
    type Error: std::fmt::Display + From<std::io::Error> + Send;
    type Frame: Send;
    /// The name in logs.
    const NAME: &'static str;

    fn connection(&self) -> Self;
    fn decoder(&self) -> Self::Codec;
    /// What the hub gets for a frame (a client message as JSON); `Err` closes the connection
    /// with that reason.
    fn inbound(&self, frame: Self::Frame) -> Result<Bytes, String>;
    /// Appends the wire form of one outgoing message; `Ok(true)` closes after it.
    fn outbound(&self, msg: &Message, dst: &mut BytesMut) -> Result<bool, String>;
}

#[derive(Clone)]
pub struct TcpConfig {
    pub queue: usize,
    pub limits: Limits,
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
    let (mut client, out_rx) = match admit(&hub, addr, config.queue, config.limits.clone()).await {
        Admit::Yes(client, out_rx) => (client, out_rx),
        Admit::NoWorker(_) => {
            // No close frame to carry a reason on this transport: the log has it.
            info!(%addr, transport = W::NAME, "no business worker available: closing the client");
            return;
        }
        Admit::TooManyFromIp | Admit::Gone => return,
    };
    entry.handshake_done();
    let (read, write) = stream.into_split();
    let writer = tokio::spawn(write_loop(write, out_rx, client.kill.clone(), wire.clone()));
    let mut frames = Frames { read, codec: wire.decoder(), buf: BytesMut::new(), eof: false };
    let (conn, kill) = (client.conn, client.kill.clone());
    // A reason to close that the client should see go out after what is queued for it.
    let reason: Option<String> = loop {
        let next = tokio::select! {
            n = frames.next() => n,
            _ = kill.cancelled() => break None,
            stop = client.silent() => break Some(format!("{stop:?}")),
        };
        let frame = match next {
            None => {
                debug!(conn, %addr, transport = W::NAME, "client left");
                break None;
            }
            Some(Err(e)) => {
                info!(conn, %addr, transport = W::NAME, "closing client: {e}");
                break Some(e.to_string());
            }
            Some(Ok(f)) => f,
        };
        match wire.inbound(frame) {
            Ok(data) => match client.deliver(data).await {
                Ok(()) => {}
                Err(Stop::HubGone) => break None,
                Err(stop) => break Some(format!("{stop:?}")),
            },
            Err(why) => {
                info!(conn, %addr, transport = W::NAME, "closing client: {why}");
                break Some(why);
            }
        }
    };
    if reason.is_some() && !client.kill.is_cancelled() && client.out.try_send(Out::Close(crate::hub::close(1000, ""))).is_ok() {
        // Let what is queued before the close go out, but not forever.
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    } else {
        writer.abort();
    }
    client.gone();
}

/// A connection's frames, read with no buffer kept while nothing is pending: an idle
/// connection holds none (tokio-util's `FramedRead` keeps its buffer, 1 KiB here, for the
/// connection's whole life; docs/BENCHMARKS.md).
struct Frames<C> {
    read: OwnedReadHalf,
    codec: C,
    /// Bytes read and not yet a whole frame; unallocated when empty.
    buf: BytesMut,
    eof: bool,
}

impl<C: Decoder> Frames<C>
where
    C::Error: From<std::io::Error>,
{
    /// The next frame, `None` at the end of the stream. Cancel-safe: what was read stays in
    /// `buf` for the next call.
    async fn next(&mut self) -> Option<Result<C::Item, C::Error>> {
        loop {
            if self.eof {
                return self.codec.decode_eof(&mut self.buf).transpose();
            }
            if !self.buf.is_empty() {
                match self.codec.decode(&mut self.buf) {
                    Ok(Some(frame)) => {
                        if self.buf.is_empty() {
                            self.buf = BytesMut::new();
                        }
                        return Some(Ok(frame));
                    }
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            // Wait for bytes before making room for them.
            if let Err(e) = self.read.readable().await {
                return Some(Err(e.into()));
            }
            self.buf.reserve(READ_CHUNK);
            match self.read.try_read_buf(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.buf.is_empty() {
                        self.buf = BytesMut::new();
                    }
                }
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}

/// Room made for one read.
const READ_CHUNK: usize = 1024;

/// Writes queued messages, gathering a burst into one write; the buffer lives for one burst.
async fn write_loop<W: Wire>(mut sink: OwnedWriteHalf, mut rx: OutboxRx<Out>, kill: CancellationToken, wire: W) {
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = kill.cancelled() => return,
        };
        let Some(mut next) = first else { return };
        let mut buf = BytesMut::new();
        let mut close = false;
        loop {
            let (msg, last) = match next {
                Out::Send(m) => (Some(m), false),
                Out::Kick(m) => (m, true),
                Out::Close(_) => (None, true),
            };
            if let Some(m) = msg {
                match wire.outbound(&m, &mut buf) {
                    Ok(c) => close |= c,
                    Err(why) => warn!(transport = W::NAME, "message not sent: {why}"),
                }
            }
            close |= last;
            if close || buf.len() >= 16 * 1024 {
                break;
            }
            match rx.try_recv() {
                Some(m) => next = m,
                None => break,
            }
        }
        if sink.write_all(&buf).await.is_err() {
            kill.cancel();
            return;
        }
        if close {
            let _ = sink.shutdown().await;
            kill.cancel();
            return;
        }
    }
}
