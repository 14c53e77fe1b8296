//! The register's client side, run by gateways (announce an address) and by workers and API
//! clients (learn the addresses). Each register address gets its own reconnecting task, so one
//! register going away never stops the others (spec §9).

use crate::protocol::{line_codec, Line};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

/// How a register client behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub registers: Vec<String>,
    pub secret_key: String,
    /// Pause before reconnecting to a register (PHP: 1 s).
    pub reconnect: Duration,
    /// Ping period; the register drops pinging peers that fall silent.
    pub ping_interval: Duration,
}

impl ClientConfig {
    pub fn new(registers: Vec<String>, secret_key: String) -> Self {
        ClientConfig { registers, secret_key, reconnect: Duration::from_secs(1), ping_interval: Duration::from_secs(25) }
    }

    fn secret(&self) -> Option<String> {
        Some(self.secret_key.clone())
    }
}

/// Announces a gateway's inner address to every register, forever, re-registering whenever a
/// register comes back. Returns when the tasks are spawned.
pub fn announce_gateway(config: ClientConfig, address: String) {
    for register in config.registers.clone() {
        let config = config.clone();
        let line = Line::GatewayConnect { address: address.clone(), secret_key: config.secret() }.encode();
        let address = address.clone();
        tokio::spawn(async move {
            loop {
                match TcpStream::connect(&register).await {
                    Ok(mut stream) => {
                        crate::keepalive(&stream);
                        info!(%register, "registering gateway {address}");
                        if stream.write_all(&line).await.is_ok() {
                            hold(stream, &config, |text| {
                                warn!(%register, "register says: {}", String::from_utf8_lossy(text).trim_end());
                            })
                            .await;
                        }
                        warn!(%register, "lost the register, retrying");
                    }
                    Err(e) => debug!(%register, "cannot reach register: {e}"),
                }
                tokio::time::sleep(config.reconnect).await;
            }
        });
    }
}

/// Keeps a register connection: pings on schedule, hands every received line to `on_line`,
/// and returns when the connection ends.
async fn hold(stream: TcpStream, config: &ClientConfig, mut on_line: impl FnMut(&[u8])) {
    let (read, mut write) = stream.into_split();
    let mut lines = FramedRead::new(read, line_codec());
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if write.write_all(&Line::Ping.encode()).await.is_err() {
                    return;
                }
            }
            line = lines.next() => match line {
                Some(Ok(l)) => on_line(&l),
                Some(Err(e)) => {
                    warn!("register connection: {e}");
                    return;
                }
                None => return,
            }
        }
    }
}

/// Subscribes to the gateway list from every register. The watch holds the latest list (`None`
/// until a register first answers); like PHP, the last list received from any register wins.
pub fn discover_gateways(config: ClientConfig) -> watch::Receiver<Option<Vec<String>>> {
    let (tx, rx) = watch::channel(None);
    for register in config.registers.clone() {
        let config = config.clone();
        let tx = tx.clone();
        let line = Line::WorkerConnect { secret_key: config.secret() }.encode();
        tokio::spawn(async move {
            loop {
                match TcpStream::connect(&register).await {
                    Ok(mut stream) => {
                        crate::keepalive(&stream);
                        if stream.write_all(&line).await.is_ok() {
                            hold(stream, &config, |text| match Line::decode(text) {
                                Ok(Line::BroadcastAddresses(list)) => {
                                    debug!(%register, ?list, "gateway list");
                                    tx.send_replace(Some(list));
                                }
                                _ => warn!(%register, "Received bad data from Register: {}", String::from_utf8_lossy(text)),
                            })
                            .await;
                        }
                        warn!(%register, "lost the register, retrying");
                    }
                    Err(e) => debug!(%register, "cannot reach register: {e}"),
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(config.reconnect).await;
            }
        });
    }
    rx
}

/// Why a one-shot address lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no register reachable among {0:?}")]
    Unreachable(Vec<String>),
    #[error("register {0} did not send an address list: {1}")]
    NoList(String, String),
}

/// One-shot lookup as PHP's GatewayClient does: the first register that accepts the
/// connection answers with one line.
pub async fn fetch_gateways(config: &ClientConfig, timeout: Duration) -> Result<Vec<String>, LookupError> {
    for register in &config.registers {
        let Ok(Ok(mut stream)) = tokio::time::timeout(timeout, TcpStream::connect(register)).await else {
            continue;
        };
        let line = Line::WorkerConnect { secret_key: config.secret() }.encode();
        if stream.write_all(&line).await.is_err() {
            continue;
        }
        let mut lines = FramedRead::new(stream, line_codec());
        return match tokio::time::timeout(timeout, lines.next()).await {
            Ok(Some(Ok(l))) => match Line::decode(&l) {
                Ok(Line::BroadcastAddresses(list)) => Ok(list),
                _ => Err(LookupError::NoList(register.clone(), String::from_utf8_lossy(&l).into_owned())),
            },
            Ok(_) => Err(LookupError::NoList(register.clone(), "connection closed".into())),
            Err(_) => Err(LookupError::NoList(register.clone(), "timed out".into())),
        };
    }
    Err(LookupError::Unreachable(config.registers.clone()))
}
