//! The register server: an accept loop, one task per peer, and one actor that owns the tables.
//!
//! The actor (`Registry`) is the only owner of "which gateways exist" and "who wants to know",
//! so a change and the broadcast it causes happen in one place, in order.

use crate::protocol::{bad_request_reply, line_codec, Line, LineError};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (a LAN address: only gateways and workers talk to the register).
    pub listen: SocketAddr,
    /// Peers must present this key; empty = no check.
    pub secret_key: String,
    /// A new peer must send its first line within this time (PHP: 10 s).
    pub auth_timeout: Duration,
    /// A peer that has pinged before and then stays silent this long is dropped.
    pub peer_timeout: Duration,
    pub stats: std::sync::Arc<crate::stats::Stats>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:1236".parse().expect("valid literal"),
            secret_key: String::new(),
            auth_timeout: Duration::from_secs(10),
            peer_timeout: Duration::from_secs(80),
            stats: Default::default(),
        }
    }
}

type PeerId = u64;

enum Event {
    Gateway { id: PeerId, address: String },
    Worker { id: PeerId, tx: mpsc::Sender<Bytes> },
    Gone { id: PeerId },
}

/// The state: gateway addresses by peer, and the workers to tell.
#[derive(Default)]
struct Registry {
    stats: std::sync::Arc<crate::stats::Stats>,
    gateways: BTreeMap<PeerId, String>,
    workers: BTreeMap<PeerId, mpsc::Sender<Bytes>>,
}

impl Registry {
    fn list(&self) -> Bytes {
        let mut seen = Vec::<String>::new();
        for a in self.gateways.values() {
            if !seen.contains(a) {
                seen.push(a.clone());
            }
        }
        Line::BroadcastAddresses(seen).encode()
    }

    fn broadcast(&mut self) {
        let line = self.list();
        self.workers.retain(|id, tx| match tx.try_send(line.clone()) {
            Ok(()) => true,
            Err(e) => {
                warn!(peer = id, "dropping worker that does not read its address lists: {e}");
                false
            }
        });
    }

    fn count(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut distinct: Vec<&String> = self.gateways.values().collect();
        distinct.sort();
        distinct.dedup();
        self.stats.gateways.store(distinct.len() as u64, Relaxed);
        self.stats.workers.store(self.workers.len() as u64, Relaxed);
    }

    fn apply(&mut self, ev: Event) {
        match ev {
            Event::Gateway { id, address } => {
                info!(peer = id, %address, "gateway registered");
                self.gateways.insert(id, address);
                self.broadcast();
            }
            Event::Worker { id, tx } => {
                debug!(peer = id, "worker registered");
                if tx.try_send(self.list()).is_ok() {
                    self.workers.insert(id, tx);
                }
            }
            Event::Gone { id } => {
                self.workers.remove(&id);
                if let Some(address) = self.gateways.remove(&id) {
                    info!(peer = id, %address, "gateway gone");
                    self.broadcast();
                }
            }
        }
        self.count();
    }
}

/// Runs the register on an already bound listener until the task is dropped.
pub async fn serve(listener: TcpListener, config: Config) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    let stats = config.stats.clone();
    tokio::spawn(async move {
        let mut reg = Registry { stats, ..Registry::default() };
        while let Some(ev) = rx.recv().await {
            reg.apply(ev);
        }
    });
    info!(listen = %listener.local_addr()?, "register listening");
    let mut next_id: PeerId = 0;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        let tx = tx.clone();
        let config = config.clone();
        tokio::spawn(async move {
            if !peer_task(id, stream, peer, config.clone(), &tx).await {
                config.stats.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let _ = tx.send(Event::Gone { id }).await;
        });
    }
}

/// Serves one peer; false when it was refused (bad line, wrong key, timeout).
async fn peer_task(id: PeerId, stream: TcpStream, peer: SocketAddr, config: Config, registry: &mpsc::Sender<Event>) -> bool {
    crate::keepalive(&stream);
    let (read, mut write) = stream.into_split();
    let mut lines = FramedRead::new(read, line_codec());
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(64);
    let mut registered = false;
    let mut pinged = false;
    loop {
        // Before the first line the auth timer runs; afterwards only peers that ping are timed.
        let limit = if !registered {
            Some(config.auth_timeout)
        } else if pinged {
            Some(config.peer_timeout)
        } else {
            None
        };
        let next = async {
            match limit {
                Some(d) => tokio::time::timeout(d, lines.next()).await.ok(),
                None => Some(lines.next().await),
            }
        };
        tokio::select! {
            out = out_rx.recv() => {
                let Some(out) = out else { return true };
                if let Err(e) = write.write_all(&out).await {
                    debug!(peer = id, "write failed: {e}");
                    return true;
                }
            }
            item = next => {
                let line = match item {
                    None if !registered => {
                        warn!(peer = id, %peer, "Register auth timeout: no line within {:?}", config.auth_timeout);
                        return false;
                    }
                    None => {
                        warn!(peer = id, %peer, "peer silent for {:?}, dropping it", config.peer_timeout);
                        return false;
                    }
                    Some(None) => return true,
                    Some(Some(Err(e))) => {
                        warn!(peer = id, %peer, "closing: {e}");
                        return false;
                    }
                    Some(Some(Ok(line))) => line,
                };
                registered = true;
                match Line::decode(&line) {
                    Ok(Line::GatewayConnect { address, secret_key }) => {
                        if !secret_ok(&config, secret_key.as_deref()) {
                            warn!(peer = id, %peer, "gateway_connect with a wrong secret_key, closing");
                            return false;
                        }
                        let _ = registry.send(Event::Gateway { id, address }).await;
                    }
                    Ok(Line::WorkerConnect { secret_key }) => {
                        if !secret_ok(&config, secret_key.as_deref()) {
                            warn!(peer = id, %peer, "worker_connect with a wrong secret_key, closing");
                            return false;
                        }
                        let _ = registry.send(Event::Worker { id, tx: out_tx.clone() }).await;
                    }
                    Ok(Line::Ping) => pinged = true,
                    Ok(Line::BroadcastAddresses(_)) => {
                        warn!(peer = id, %peer, "peer sent broadcast_addresses, closing");
                        return false;
                    }
                    Err(LineError::BadRequest) => {
                        let reply = bad_request_reply(&peer.ip().to_string(), &line);
                        warn!(peer = id, %peer, "{}", String::from_utf8_lossy(&reply).trim_end());
                        let _ = write.write_all(&reply).await;
                        // Close gracefully: FIN after the reply, then read what the peer still
                        // sends (briefly) before dropping the socket. Dropping it with unread
                        // input makes the kernel reset the connection, and the peer may lose
                        // the reply it has not read yet ("connection reset", seen in CI).
                        let _ = write.shutdown().await;
                        let mut read = lines.into_inner();
                        let mut sink = [0u8; 1024];
                        let drain = async { while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {} };
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
                        return false;
                    }
                    Err(e) => {
                        warn!(peer = id, %peer, "closing: {e}");
                        return false;
                    }
                }
            }
        }
    }
}

fn secret_ok(config: &Config, given: Option<&str>) -> bool {
    given.unwrap_or("") == config.secret_key
}
