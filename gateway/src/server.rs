//! Starts a gateway: binds its listeners (WebSocket, text and goim clients; the inner port), spawns the hub, registers with the registers.

use crate::config::{secs, Config};
use crate::hub::{ConnectionInfo, Hub, HubMsg};
use crate::inner::{self, InnerConfig};
use crate::listen::client::Limits;
use crate::listen::door::Door;
use crate::listen::goim::Goim;
use crate::listen::parking::Parking;
use crate::listen::poll::Polls;
use crate::listen::tcp::{self, TcpConfig};
use crate::listen::text::Text;
use crate::listen::websocket::{self, WsConfig};
use crate::stats::Stats;
use register::client::{announce_gateway, ClientConfig};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot make the parking's epoll set for idle connections: {0}")]
    Parking(std::io::Error),
}

/// Builds the client port's TLS acceptor, when `tls_cert` and `tls_key` are set.
fn tls_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, StartError> {
    match (&config.tls_cert, &config.tls_key) {
        (None, None) => Ok(None),
        (Some(c), Some(k)) => tls_from_pem(c, k).map(Some),
        _ => Err(StartError::Tls("set both tls_cert and tls_key".into())),
    }
}

/// A TLS acceptor from PEM files (rustls with the ring provider): the client port's, and the
/// server API's.
pub fn tls_from_pem(cert: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor, StartError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StartError::Tls(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| StartError::Tls(format!("{}: {e}", key.display())))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| StartError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

/// Binds a listener; `reuse_port` lets several gateway processes share one client port.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> Result<TcpListener, StartError> {
    let err = |source| StartError::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(err)?;
    }
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(4096).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// A started gateway: its counters, and handles to list connections and to stop it.
pub struct Running {
    pub stats: Arc<Stats>,
    pub public: SocketAddr,
    /// The text and goim listeners' addresses, when they are on.
    pub text: Option<SocketAddr>,
    pub goim: Option<SocketAddr>,
    pub inner: String,
    hub: mpsc::Sender<HubMsg>,
    accept: tokio::task::JoinHandle<()>,
    side: Vec<tokio::task::JoinHandle<()>>,
}

/// Lists a running gateway's client connections (cheap to clone).
#[derive(Clone)]
pub struct Lister(mpsc::Sender<HubMsg>);

impl Lister {
    pub async fn connections(&self) -> Vec<ConnectionInfo> {
        let (tx, rx) = oneshot::channel();
        if self.0.send(HubMsg::Connections { reply: tx }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

impl Running {
    pub fn lister(&self) -> Lister {
        Lister(self.hub.clone())
    }

    /// Waits until the accept loop ends (it only does when the listener fails).
    pub async fn wait(&mut self) {
        let _ = (&mut self.accept).await;
    }

    /// Stops accepting, says goodbye to every client (close 1001) and waits up to `limit` for
    /// them to go, so their ON_CLOSE events reach the workers.
    pub async fn shutdown(self, limit: Duration) {
        self.accept.abort();
        self.side.iter().for_each(|t| t.abort());
        let _ = self.hub.send(HubMsg::Goodbye).await;
        let deadline = tokio::time::Instant::now() + limit;
        while self.stats.clients.load(std::sync::atomic::Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the inner links flush the last events.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Binds both listeners, starts the hub and registers with the registers.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with(config, None).await
}

/// `start`, also serving `assets` on plain GETs to the client port.
pub async fn start_with(config: Config, assets: Option<crate::listen::web::Assets>) -> Result<Running, StartError> {
    let tls = tls_acceptor(&config)?;
    let client_listener = bind(config.listen, config.reuse_port)?;
    let text_listener = config.text_listen.map(|a| bind(a, config.reuse_port)).transpose()?;
    let goim_listener = config.goim_listen.map(|a| bind(a, config.reuse_port)).transpose()?;
    let inner_listener = bind(config.inner_bind(), false)?;
    let public = client_listener.local_addr().unwrap_or(config.listen);
    let stats = Arc::new(Stats::default());
    let (hub_tx, hub_rx) = mpsc::channel(65_536);
    tokio::spawn(Hub::new(&config, public.port(), stats.clone()).run(hub_rx, config.clone()));
    let inner_config = InnerConfig {
        secret_key: config.secret_key.clone().into(),
        max_packet: config.max_packet_size,
        queue: config.worker_queue,
        stats: stats.clone(),
        door: InnerConfig::door(),
    };
    tokio::spawn(inner::serve(inner_listener, hub_tx.clone(), inner_config));
    let address = config.inner_address().to_string();
    info!(listen = %public, inner = %address, "gateway started");
    announce_gateway(ClientConfig::new(config.registers.clone(), config.secret_key.clone()), address.clone());
    // Only the raw TCP transports park their idle connections.
    let parking = match secs(config.park_after).filter(|_| text_listener.is_some() || goim_listener.is_some()) {
        Some(after) => Some(Parking::start(after, stats.clone()).map_err(StartError::Parking)?),
        None => None,
    };
    // One set of per-connection limits for every transport.
    let limits = Arc::new(Limits {
        parking,
        rate: (config.rate_limit.max(0.0), config.rate_burst.max(1.0)),
        stats: stats.clone(),
        heartbeats: Arc::new(config.heartbeat_messages.iter().map(|h| bytes::Bytes::copy_from_slice(h.trim().as_bytes())).collect()),
    });
    let handshake_timeout = secs(config.handshake_timeout).unwrap_or(Duration::from_secs(10));
    let allowed_origins = Arc::new(config.allowed_origins.clone());
    if allowed_origins.is_empty() {
        warn!("allowed_origins is empty: a page on any web origin may open WebSockets and long polls here (fine for the demo; list your sites for production)");
    }
    let ws_config = WsConfig {
        assets,
        max_message_size: config.max_message_size,
        queue: config.client_queue,
        handshake_timeout,
        door: Door::new(
            config.max_connections_per_ip,
            config.pending_handshakes_per_ip(),
            Arc::new(tokio::sync::Semaphore::new(config.max_pending_handshakes.max(1))),
        ),
        limits: limits.clone(),
        allowed_origins: allowed_origins.clone(),
        tls,
        polls: Polls::new(config.client_queue, limits.clone(), config.max_message_size, handshake_timeout, allowed_origins),
    };
    let tcp_config = TcpConfig { queue: config.client_queue, limits, door: ws_config.door.clone() };
    let mut side = Vec::new();
    let mut text = None;
    if let Some(l) = text_listener {
        text = l.local_addr().ok();
        info!(listen = ?text, "text clients (one JSON message per line)");
        side.push(tokio::spawn(tcp::serve(l, hub_tx.clone(), tcp_config.clone(), Text { max_line: config.max_message_size })));
    }
    let mut goim = None;
    if let Some(l) = goim_listener {
        goim = l.local_addr().ok();
        info!(listen = ?goim, "goim packet clients");
        side.push(tokio::spawn(tcp::serve(l, hub_tx.clone(), tcp_config, Goim::new(config.max_message_size))));
    }
    let accept = tokio::spawn(websocket::serve(client_listener, hub_tx.clone(), ws_config));
    Ok(Running { stats, public, text, goim, inner: address, hub: hub_tx, accept, side })
}

/// Runs a gateway until its listener fails.
pub async fn run(config: Config) -> Result<(), StartError> {
    start(config).await?.wait().await;
    Ok(())
}
