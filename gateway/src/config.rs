//! Everything a gateway process can be told, with GatewayWorker's defaults where they exist.

use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Client-facing WebSocket listener (also the pages, and goim packets in binary frames).
    pub listen: SocketAddr,
    /// Listener for GatewayWorker's `text` protocol: one JSON message per line over TCP (off
    /// when unset).
    pub text_listen: Option<SocketAddr>,
    /// Listener for goim binary packets over TCP (off when unset).
    pub goim_listen: Option<SocketAddr>,
    /// This gateway's LAN address: it goes into every client_id and into the register, so it
    /// must be an IPv4 literal that workers on other servers can reach.
    pub lan_ip: Ipv4Addr,
    /// Inner port for workers and API clients (PHP: startPort + process index).
    pub inner_port: u16,
    /// Listen address for the inner port when it differs from `lan_ip` (Docker/NAT).
    pub inner_listen: Option<IpAddr>,
    /// Register addresses; the gateway registers with every one.
    pub registers: Vec<String>,
    /// Shared secret for the inner port and the register ('' = no check).
    pub secret_key: String,
    /// Heartbeat period in seconds (0 = off).
    pub ping_interval: f64,
    /// Silent intervals before a client is closed (0 = never close, only send `ping_data`).
    pub ping_not_response_limit: u32,
    /// Text sent to idle clients on each heartbeat ('' = send nothing).
    pub ping_data: String,
    /// Client messages that are only a heartbeat (compared after trimming whitespace): the
    /// gateway counts them as the client's sign of life and keeps them, instead of passing
    /// each to a worker as GatewayWorker does. The chat's `beat` and `{"method":"beat"}` get
    /// no reply and change nothing, and 100 000 clients beating every 20 s are 5 000 worker
    /// events a second for nothing. `[]` passes every message on.
    pub heartbeat_messages: Vec<String>,
    /// Largest client message in bytes; bigger frames are refused with close code 1009 (a
    /// longer text line or goim packet closes its connection).
    pub max_message_size: usize,
    /// Largest inner packet in bytes (PHP: 10 MiB).
    pub max_packet_size: usize,
    /// Messages queued for one client before it is treated as a slow reader and closed.
    pub client_queue: usize,
    /// Packets queued for one worker or API connection before new ones are refused.
    pub worker_queue: usize,
    /// Seconds a new connection may take to finish its WebSocket handshake.
    pub handshake_timeout: f64,
    /// Let several gateway processes share the client port (SO_REUSEPORT).
    pub reuse_port: bool,
    /// Seconds between CMD_PING packets to workers.
    pub worker_ping_interval: f64,
    /// Serve the web pages (visitor widget, agent console) on plain GETs to the client port.
    pub web: bool,
    /// Client connections one remote IP may hold (0 = no limit); more get HTTP 429.
    pub max_connections_per_ip: usize,
    /// Connections still in their HTTP/WebSocket handshake at once; more are closed at once.
    pub max_pending_handshakes: usize,
    /// How many of those one address may hold (unset: an eighth of `max_pending_handshakes`;
    /// 0 = no share), so one address cannot take every permit and lock others out.
    pub max_pending_handshakes_per_ip: Option<usize>,
    /// Seconds a new WebSocket may stay silent before its first message (0 = no limit).
    pub first_message_timeout: f64,
    /// Messages per second one connection may send (0 = no limit), with bursts up to
    /// `rate_burst`; a connection that goes beyond is closed with 1008.
    pub rate_limit: f64,
    pub rate_burst: f64,
    /// Seconds a text or goim connection may have nothing to do (nothing read, nothing to
    /// write) before it is parked: its task and tokio's registration let go, its socket watched
    /// in the gateway's own epoll set until it has something to do again (0 = never). It is
    /// parked within twice this.
    pub park_after: f64,
    /// Browser `Origin`s allowed to open a WebSocket (empty = any). Requests without an Origin
    /// header (non-browser clients) are not affected.
    pub allowed_origins: Vec<String>,
    /// PEM certificate chain and private key: the client port then speaks TLS (`wss://`,
    /// `https://` for the pages), so no proxy is needed in front.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 7272)),
            text_listen: None,
            goim_listen: None,
            lan_ip: Ipv4Addr::LOCALHOST,
            inner_port: 2300,
            inner_listen: None,
            registers: vec!["127.0.0.1:1236".into()],
            secret_key: String::new(),
            ping_interval: 25.0,
            ping_not_response_limit: 2,
            ping_data: String::new(),
            heartbeat_messages: vec!["beat".into(), r#"{"method":"beat"}"#.into()],
            max_message_size: 1024 * 1024,
            max_packet_size: crate::protocol::DEFAULT_MAX_PACKET,
            client_queue: 1024,
            worker_queue: 100_000,
            handshake_timeout: 10.0,
            reuse_port: true,
            worker_ping_interval: 25.0,
            web: true,
            max_connections_per_ip: 1000,
            max_pending_handshakes: 1024,
            max_pending_handshakes_per_ip: None,
            first_message_timeout: 60.0,
            rate_limit: 100.0,
            rate_burst: 200.0,
            park_after: 2.0,
            allowed_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Config {
    /// The address registered with the register and encoded in client ids.
    pub fn inner_address(&self) -> std::net::SocketAddrV4 {
        std::net::SocketAddrV4::new(self.lan_ip, self.inner_port)
    }

    /// The per-address share of handshake permits (0 = none).
    pub fn pending_handshakes_per_ip(&self) -> usize {
        self.max_pending_handshakes_per_ip.unwrap_or((self.max_pending_handshakes / 8).max(1))
    }

    pub fn inner_bind(&self) -> SocketAddr {
        SocketAddr::new(self.inner_listen.unwrap_or(IpAddr::V4(self.lan_ip)), self.inner_port)
    }
}

pub(crate) fn secs(s: f64) -> Option<Duration> {
    (s > 0.0 && s.is_finite()).then(|| Duration::from_secs_f64(s))
}
