//! The inner port: business workers and API clients (Rust or PHP) connect here and speak
//! GatewayProtocol. Each connection is a task that frames packets, checks the secret key on
//! the first packet and hands commands to the hub; replies and client events come back through
//! the connection's outbound queue.
//!
//! Until a peer has shown the secret key it is a stranger, and a stranger gets little: its
//! first packet must be small (`FIRST_PACKET_MAX`, where PHP would buffer up to 10 MiB before
//! looking at the key) and arrive within `FIRST_PACKET_WAIT`, and strangers are counted at
//! accept like client handshakes (`listen::door`): a bounded number at once, at most half of
//! them from one address.

use crate::hub::HubMsg;
use crate::listen::door::{Door, Entry};
use crate::protocol::{Command, PacketCodec};
use crate::router::LinkId;
use bytes::Bytes;
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Clone)]
pub struct InnerConfig {
    pub stats: Arc<crate::stats::Stats>,
    pub secret_key: Arc<str>,
    pub max_packet: usize,
    pub queue: usize,
    /// Links still to authenticate, per address and in all.
    pub door: Door,
}

/// Largest first packet from a peer that has not shown the secret key: an authentication
/// (CMD_WORKER_CONNECT / CMD_GATEWAY_CLIENT_CONNECT) is a few hundred bytes.
pub const FIRST_PACKET_MAX: usize = 8 * 1024;
/// How long a new peer may take to send that packet (a worker sends it at once).
pub const FIRST_PACKET_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Unauthenticated links at once (at most `FIRST_PACKET_MAX` each: 32 MiB in all), and per
/// address (see `listen::door`). Generous, because a stranger is also every new connection of a
/// legitimate peer until its first packet is read: a busy worker opens query connections in
/// bursts (one per concurrent query beyond its pool), a PHP web server one per request, and
/// under load the gateway reads their authentication late. (A share of 32 per address cut a
/// loaded worker's queries off in the goim benchmark run.)
pub const STRANGERS: usize = 4096;
pub const STRANGERS_PER_IP: usize = STRANGERS / 2;

impl InnerConfig {
    pub fn door() -> Door {
        Door::new(0, STRANGERS_PER_IP, Arc::new(tokio::sync::Semaphore::new(STRANGERS)))
    }
}

/// Accepts inner connections until the listener fails.
pub async fn serve(listener: TcpListener, hub: mpsc::Sender<HubMsg>, config: InnerConfig) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let entry = match config.door.enter(peer.ip()) {
                    Ok(e) => e,
                    Err(why) => {
                        register::stats::inc(&config.stats.errors);
                        warn!(%peer, "inner port: {} (peers still to authenticate), closing", why.reason());
                        continue;
                    }
                };
                let link = NEXT.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(link_task(link, stream, peer, hub.clone(), config.clone(), entry));
            }
            Err(e) => {
                warn!("inner accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn link_task(link: LinkId, stream: TcpStream, peer: SocketAddr, hub: mpsc::Sender<HubMsg>, config: InnerConfig, mut entry: Entry) {
    register::keepalive(&stream);
    let (read, write) = stream.into_split();
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(config.queue);
    let kill = CancellationToken::new();
    if hub.send(HubMsg::LinkUp { link, peer, out: out_tx, kill: kill.clone() }).await.is_err() {
        return;
    }
    let writer = tokio::spawn(write_loop(write, out_rx, kill.clone()));
    let reason = tokio::select! {
        r = read_loop(link, read, &hub, &config, &mut entry) => r,
        _ = kill.cancelled() => "replaced or closed by the gateway".to_string(),
    };
    debug!(link, %peer, "inner connection closed: {reason}");
    if reason != "peer closed" && !reason.starts_with("replaced") {
        register::stats::inc(&config.stats.errors);
    }
    kill.cancel();
    let _ = hub.send(HubMsg::LinkGone { link }).await;
    let _ = writer.await;
}

/// Reads packets until the peer leaves or misbehaves; returns why it ended.
async fn read_loop(
    link: LinkId,
    read: tokio::net::tcp::OwnedReadHalf,
    hub: &mpsc::Sender<HubMsg>,
    config: &InnerConfig,
    entry: &mut Entry,
) -> String {
    let peer = read.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut authorized = config.secret_key.is_empty();
    if authorized {
        // No key to check: every peer is trusted, as in GatewayWorker.
        entry.handshake_done();
    }
    let first_max = if authorized { config.max_packet } else { FIRST_PACKET_MAX.min(config.max_packet) };
    let mut packets = FramedRead::with_capacity(read, PacketCodec { max_len: first_max }, 1024);
    loop {
        let next = if authorized {
            packets.next().await
        } else {
            match tokio::time::timeout(FIRST_PACKET_WAIT, packets.next()).await {
                Ok(n) => n,
                Err(_) => {
                    warn!(%peer, "inner peer sent no authentication within {FIRST_PACKET_WAIT:?}, disconnecting");
                    return "no authentication in time".into();
                }
            }
        };
        let Some(next) = next else { break };
        let packet = match next {
            Ok(p) => p,
            Err(e) => {
                warn!(%peer, "inner peer sent garbage, disconnecting: {e}");
                return e.to_string();
            }
        };
        let cmd = match Command::from_packet(packet) {
            Ok(Command::Unknown(p)) => {
                warn!(%peer, cmd = p.cmd, "gateway inner pack err: unknown command, disconnecting");
                return format!("unknown command {}", p.cmd);
            }
            Ok(Command::Event { .. } | Command::WorkerDrained | Command::Directory(_) | Command::DirectorySettled { .. }) => {
                warn!(%peer, "a gateway event arrived on the inner port, disconnecting");
                return "client event sent to a gateway".into();
            }
            Ok(c) => c,
            Err(e) => {
                warn!(%peer, "bad inner packet, disconnecting: {e}");
                return e.to_string();
            }
        };
        if !authorized {
            let given = match &cmd {
                Command::WorkerConnect { secret_key, .. } | Command::GatewayClientConnect { secret_key } => secret_key,
                _ => {
                    warn!(%peer, "Unauthorized request: first packet is not an authentication, disconnecting");
                    return "unauthorized".into();
                }
            };
            if given.as_str() != &*config.secret_key {
                warn!(%peer, "wrong secret_key, disconnecting");
                return "wrong secret key".into();
            }
            authorized = true;
            entry.handshake_done();
            packets.decoder_mut().max_len = config.max_packet;
        }
        if matches!(cmd, Command::WorkerConnect { .. }) {
            info!(%peer, link, "worker authenticated");
        }
        if hub.send(HubMsg::Command { link, cmd }).await.is_err() {
            return "gateway stopping".into();
        }
    }
    "peer closed".into()
}

/// Writes queued byte chunks, flushing only when the queue is momentarily empty (after a
/// yield) so that a burst becomes a few large writes instead of one syscall per packet. Used
/// by both ends of an inner link. Returns when the queue closes or a write fails.
pub async fn write_queue<W: AsyncWrite + Unpin>(write: W, rx: &mut mpsc::Receiver<Bytes>) {
    let mut w = BufWriter::with_capacity(64 * 1024, write);
    while let Some(first) = rx.recv().await {
        if w.write_all(&first).await.is_err() {
            return;
        }
        // Tokio runs a yielded task again only once the thread has run every task that is
        // ready and polled its sockets: what those tasks queue (a room message's group send
        // and its ack; the events of one read) goes out in this write, not in a syscall each.
        tokio::task::yield_now().await;
        while let Ok(more) = rx.try_recv() {
            if w.write_all(&more).await.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn write_loop(write: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>, kill: CancellationToken) {
    tokio::select! {
        _ = write_queue(write, &mut rx) => {}
        _ = kill.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    /// A socket that records the size of each write it is given.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<usize>>>);

    impl AsyncWrite for Writes {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            self.0.lock().expect("writes").push(buf.len());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Two packets queued by a task that lets others run in between (as a callback does when
    /// it awaits between its group send and its ack) go out in one write.
    #[tokio::test(flavor = "current_thread")]
    async fn packets_queued_in_one_pass_of_the_runtime_go_out_in_one_write() {
        let socket = Writes::default();
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let writer = tokio::spawn({
            let socket = socket.clone();
            async move { write_queue(socket, &mut rx).await }
        });
        tx.send(Bytes::from_static(b"group send")).await.expect("queued");
        tokio::task::yield_now().await;
        tx.send(Bytes::from_static(b"ack")).await.expect("queued");
        drop(tx);
        writer.await.expect("writer");
        assert_eq!(*socket.0.lock().expect("writes"), vec![13]);
    }
}
