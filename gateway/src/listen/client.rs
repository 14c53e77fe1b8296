//! What every transport does the same way once it has a frame: admission by the hub, the
//! per-connection limits (first-message deadline, message rate), and handing frames on.
//! Each transport keeps only its own framing and writer.

use super::conn::{Conn, Io, Transport};
use crate::hub::{Admission, HubMsg, Out};
use crate::outbox::{outbox, Outbox, OutboxRx};
use crate::stats::Stats;
use crate::tables::ConnId;
use bytes::Bytes;
use futures_util::future::{ready, BoxFuture, Either, Ready};
use register::stats::inc;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready as ready_poll, Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Sleep;
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
    pub first: Option<Duration>,
    /// Messages per second and burst (rate 0 = no limit).
    pub rate: (f64, f64),
    pub stats: Arc<Stats>,
    /// Messages the gateway keeps as heartbeats (`Config::heartbeat_messages`).
    pub heartbeats: Arc<Vec<Bytes>>,
}

/// A token bucket: `rate` messages per second, up to `burst` at once.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, rate: f64, burst: f64) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(burst);
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
    Yes(Client, OutboxRx<Out>),
    NoWorker(OutboxRx<Out>),
    TooManyFromIp,
    /// The hub is gone (the gateway is stopping).
    Gone,
}

/// Announces a new connection to the hub (ON_CONNECT goes to a worker at once, as in
/// GatewayWorker) and returns what the transport needs to serve it.
pub async fn admit(hub: &mpsc::Sender<HubMsg>, addr: SocketAddr, queue: usize, limits: Arc<Limits>) -> Admit {
    let (out_tx, out_rx) = outbox::<Out>(queue);
    let (reply_tx, reply_rx) = oneshot::channel();
    let accept = HubMsg::Accept { addr, out: out_tx.clone(), reply: reply_tx };
    if hub.send(accept).await.is_err() {
        return Admit::Gone;
    }
    match reply_rx.await {
        Ok(Admission::Admitted(conn)) => {
            let timer = limits.first.map(|d| Box::pin(tokio::time::sleep(d)));
            let bucket = Bucket { tokens: limits.rate.1, at: Instant::now() };
            Admit::Yes(Client { conn, addr, hub: hub.clone(), out: out_tx, limits, timer, bucket }, out_rx)
        }
        Ok(Admission::NoWorker) => Admit::NoWorker(out_rx),
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
    /// The client sent nothing before the first-message deadline.
    Silent,
    /// The client went over the message rate.
    Flood,
    /// The hub is gone.
    HubGone,
}

impl Stop {
    /// The WebSocket close code and reason for this stop, when the client should hear one.
    pub fn close(self) -> Option<(u16, &'static str)> {
        match self {
            Stop::Silent => Some((1008, "no message received")),
            Stop::Flood => Some((1008, "message rate limit")),
            Stop::HubGone => None,
        }
    }
}

/// One admitted client connection, as its reader holds it.
pub struct Client {
    pub conn: ConnId,
    pub addr: SocketAddr,
    pub hub: mpsc::Sender<HubMsg>,
    /// The connection's own queue, for replies the transport makes itself; its `hear` flag is
    /// set on a heartbeat the gateway keeps, for the hub's heartbeat tick.
    pub out: Outbox<Out>,
    /// Shared by every connection: one pointer in each connection's task, not 48 bytes.
    limits: Arc<Limits>,
    /// The first-message deadline, boxed and let go once a message arrives, so the task of an
    /// established connection is not sized for a timer it no longer needs.
    timer: Option<Pin<Box<Sleep>>>,
    bucket: Bucket,
}

impl Client {
    /// Resolves when the first-message deadline passes (never once a message arrived).
    pub async fn silent(&mut self) -> Stop {
        poll_fn(|cx| self.poll_silent(cx)).await
    }

    /// `silent` as a poll, for [`poll_turn`].
    pub fn poll_silent(&mut self, cx: &mut Context<'_>) -> Poll<Stop> {
        let Some(timer) = self.timer.as_mut() else { return Poll::Pending };
        ready_poll!(timer.as_mut().poll(cx));
        self.timer = None;
        inc(&self.limits.stats.limited);
        info!(conn = self.conn, addr = %self.addr, "no message within {:?} of connecting: closing", self.limits.first.unwrap_or_default());
        Poll::Ready(Stop::Silent)
    }

    /// Hands one client frame to the hub, after the rate limit. The work is done by the call;
    /// the future returned waits only when the hub's queue is full, and then in a box: tokio's
    /// `send` future is ≈ 380 bytes, and a connection's task is as big as the biggest thing it
    /// ever awaits, for its whole life (docs/BENCHMARKS.md).
    pub fn deliver(&mut self, data: Bytes) -> Delivery {
        self.timer = None;
        let (rate, burst) = self.limits.rate;
        if rate > 0.0 && !self.bucket.take(rate, burst) {
            inc(&self.limits.stats.limited);
            info!(conn = self.conn, addr = %self.addr, "message flood: more than {rate}/s (burst {burst}); closing");
            return Either::Left(ready(Err(Stop::Flood)));
        }
        if self.limits.heartbeats.iter().any(|h| h[..] == *data.trim_ascii()) {
            self.out.hear();
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
    /// The first-message deadline passed.
    Silent(Stop),
}

/// Waits on a connection's socket, its queue (taken from only while `taking`: the write batch
/// has room) and its first-message deadline in one poll, for the task's own `poll_fn`: tokio's
/// `select!` over three futures held 128 bytes of every connection's task, and a connection's
/// task is most of what an idle one costs (docs/BENCHMARKS.md). `io_first` says which of the
/// socket and the queue is asked first; the caller alternates it, so that neither a client
/// that writes without pause nor a queue that never empties keeps the other waiting.
pub fn poll_turn<S: Transport>(
    cx: &mut Context<'_>,
    conn: &mut Conn<S>,
    rx: &OutboxRx<Out>,
    client: &mut Client,
    taking: bool,
    io_first: bool,
) -> Poll<Turn> {
    if io_first {
        if let Poll::Ready(io) = conn.poll_io(cx) {
            return Poll::Ready(Turn::Io(io));
        }
    }
    if let Poll::Ready(m) = rx.poll_recv_if(cx, taking) {
        return Poll::Ready(Turn::Out(m));
    }
    if !io_first {
        if let Poll::Ready(io) = conn.poll_io(cx) {
            return Poll::Ready(Turn::Io(io));
        }
    }
    client.poll_silent(cx).map(Turn::Silent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::Message;

    /// A connection over a real socket pair, its client's end, and an admitted `Client` whose
    /// queue is `out`.
    async fn connection(first: Option<Duration>) -> (Conn<TcpStream>, TcpStream, Client, OutboxRx<Out>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (peer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (server, _) = accepted.expect("accept");
        let (out, rx) = outbox::<Out>(64);
        let (hub, _hub_rx) = mpsc::channel(1);
        let limits = Arc::new(Limits { first, rate: (0.0, 0.0), stats: Arc::new(Stats::default()), heartbeats: Arc::new(Vec::new()) });
        let timer = first.map(|d| Box::pin(tokio::time::sleep(d)));
        let bucket = Bucket { tokens: 0.0, at: Instant::now() };
        let client = Client { conn: 1, addr, hub, out, limits, timer, bucket };
        (Conn::new(server, BytesMut::new()), peer.expect("connect"), client, rx)
    }

    #[tokio::test]
    async fn a_busy_socket_and_a_busy_queue_share_the_turns() {
        let (mut conn, mut peer, mut client, rx) = connection(None).await;
        // The client writes without pause, and the queue never runs dry.
        peer.write_all(&[b'x'; 64 * 1024]).await.expect("write");
        let (mut reads, mut messages) = (0, 0);
        let mut io_first = false;
        for _ in 0..20 {
            client.out.try_send(Out::Send(Message::Text("hi".into()))).expect("room");
            io_first = !io_first;
            match poll_fn(|cx| poll_turn(cx, &mut conn, &rx, &mut client, true, io_first)).await {
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
            match poll_fn(|cx| poll_turn(cx, &mut conn, &rx, &mut client, false, true)).await {
                Turn::Io(Io::Read) => conn.rbuf.clear(),
                Turn::Io(Io::Eof) => break,
                _ => panic!("the queue is not taken from while the batch is full"),
            }
        }
        assert!(!client.out.is_empty(), "still queued");
        // A shut queue ends the wait even while nothing is taken.
        client.out.shut();
        assert!(matches!(poll_fn(|cx| poll_turn(cx, &mut conn, &rx, &mut client, false, false)).await, Turn::Out(None)));
    }

    #[tokio::test]
    async fn the_first_message_deadline_ends_a_silent_connection() {
        let (mut conn, _peer, mut client, rx) = connection(Some(Duration::from_millis(50))).await;
        let turn = tokio::time::timeout(Duration::from_secs(5), poll_fn(|cx| poll_turn(cx, &mut conn, &rx, &mut client, true, true))).await;
        assert!(matches!(turn, Ok(Turn::Silent(Stop::Silent))), "the deadline passed");
        assert_eq!(client.limits.stats.limited.load(std::sync::atomic::Ordering::Relaxed), 1, "counted as limited");
    }
}
