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

/// Sets TCP keepalive so a peer that vanished without a FIN (a crashed host, a partition) is
/// noticed even when it never pings (PHP peers on 127.0.0.1 do not): an idle link after about
/// 10 s + 15 s, and a link with data in flight after 15 s without an acknowledgement
/// (`TCP_USER_TIMEOUT`; Linux's default is to retransmit for about 15 minutes, during which a
/// gateway would keep routing its clients' events into the black hole). Inner links run between
/// servers of one network: 15 s without an ACK from a live kernel does not happen there.
pub fn keepalive(stream: &tokio::net::TcpStream) {
    use std::time::Duration;
    let ka = socket2::TcpKeepalive::new().with_time(Duration::from_secs(10)).with_interval(Duration::from_secs(5)).with_retries(3);
    let sock = socket2::SockRef::from(stream);
    if let Err(e) = sock.set_tcp_keepalive(&ka) {
        tracing::debug!("cannot set TCP keepalive: {e}");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = sock.set_tcp_user_timeout(Some(Duration::from_secs(15))) {
        tracing::debug!("cannot set TCP_USER_TIMEOUT: {e}");
    }
    let _ = stream.set_nodelay(true);
}
