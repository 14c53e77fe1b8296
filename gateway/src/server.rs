//! Starts a gateway: binds both listeners, spawns the hub, registers with the registers.

use crate::config::{secs, Config};
use crate::hub::Hub;
use crate::inner::{self, InnerConfig};
use crate::listen::websocket::{self, WsConfig};
use register::client::{announce_gateway, ClientConfig};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
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

/// Runs a gateway until the process ends.
pub async fn run(config: Config) -> Result<(), StartError> {
    let client_listener = bind(config.listen, config.reuse_port)?;
    let inner_listener = bind(config.inner_bind(), false)?;
    let public_port = client_listener.local_addr().map(|a| a.port()).unwrap_or(config.listen.port());
    let (hub_tx, hub_rx) = mpsc::channel(65_536);
    tokio::spawn(Hub::new(&config, public_port).run(hub_rx, config.clone()));
    let inner_config = InnerConfig {
        secret_key: config.secret_key.clone().into(),
        max_packet: config.max_packet_size,
        queue: config.worker_queue,
    };
    tokio::spawn(inner::serve(inner_listener, hub_tx.clone(), inner_config));
    let address = config.inner_address().to_string();
    info!(listen = %config.listen, inner = %address, "gateway started");
    announce_gateway(ClientConfig::new(config.registers.clone(), config.secret_key.clone()), address);
    let ws_config = WsConfig {
        max_message_size: config.max_message_size,
        queue: config.client_queue,
        handshake_timeout: secs(config.handshake_timeout).unwrap_or(Duration::from_secs(10)),
    };
    websocket::serve(client_listener, hub_tx, ws_config).await;
    Ok(())
}
