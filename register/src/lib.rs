//! The register: the one place that knows where every gateway is.
//!
//! Gateways announce their inner address, business workers (and API clients) ask for the list,
//! and the register pushes a fresh list to every worker whenever it changes. Nothing else flows
//! through it, so it can restart without disturbing traffic (spec §9).
//!
//! `protocol` is the JSON-lines wire format, `server` the register itself, `client` the side
//! gateways and workers run.

pub mod client;
pub mod protocol;
pub mod server;
pub mod stats;

pub use protocol::{Line, LineError};
pub use server::{serve, Config};

/// Sets TCP keepalive so a peer that vanished without a FIN is noticed within about a minute,
/// even when it never pings (PHP peers on 127.0.0.1 do not).
pub fn keepalive(stream: &tokio::net::TcpStream) {
    let ka =
        socket2::TcpKeepalive::new().with_time(std::time::Duration::from_secs(30)).with_interval(std::time::Duration::from_secs(10)).with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!("cannot set TCP keepalive: {e}");
    }
    let _ = stream.set_nodelay(true);
}
