//! Connections for synchronous queries (and, outside a worker, for commands).
//!
//! Query replies carry no header, so they cannot share the persistent link that carries client
//! events; each query uses a connection of its own, kept in a small pool per gateway so a busy
//! worker does not pay a TCP handshake per query (PHP caches them for 50 s).

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gateway::protocol::{Command, FrameError, ReplyCodec, DEFAULT_MAX_PACKET};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

type Conn = Framed<TcpStream, ReplyCodec>;

/// Idle connections per gateway address.
pub struct Pool {
    secret_key: String,
    timeout: Duration,
    idle: Mutex<HashMap<String, Vec<(Instant, Conn)>>>,
}

/// How long an idle pooled connection is reused.
const IDLE_FOR: Duration = Duration::from_secs(50);
const MAX_IDLE_PER_GATEWAY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cannot connect to gateway {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("gateway {0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("gateway {0} closed the connection without answering")]
    Closed(String),
    #[error("gateway {0}: {1}")]
    Frame(String, FrameError),
}

impl Pool {
    pub fn new(secret_key: String, timeout: Duration) -> Pool {
        Pool { secret_key, timeout, idle: Mutex::new(HashMap::new()) }
    }

    fn take(&self, addr: &str) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(addr)?;
        while let Some((since, conn)) = list.pop() {
            if since.elapsed() < IDLE_FOR {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, addr: &str, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(addr.to_string()).or_default();
            if list.len() < MAX_IDLE_PER_GATEWAY {
                list.push((Instant::now(), conn));
            }
        }
    }

    async fn connect(&self, addr: &str) -> Result<Conn, QueryError> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| QueryError::Timeout(addr.to_string(), self.timeout))?
            .map_err(|e| QueryError::Connect(addr.to_string(), e))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Framed::new(stream, ReplyCodec { max_len: DEFAULT_MAX_PACKET });
        if !self.secret_key.is_empty() {
            let auth = Command::GatewayClientConnect { secret_key: self.secret_key.clone() }.into_packet().to_bytes();
            conn.send(auth).await.map_err(|e| QueryError::Frame(addr.to_string(), e))?;
        }
        Ok(conn)
    }

    /// Sends a packet that gets no reply.
    pub async fn command(&self, addr: &str, packet: Bytes) -> Result<(), QueryError> {
        let mut conn = match self.take(addr) {
            Some(c) => c,
            None => self.connect(addr).await?,
        };
        match conn.send(packet.clone()).await {
            Ok(()) => {
                self.put(addr, conn);
                Ok(())
            }
            // A pooled connection the gateway closed meanwhile: one retry on a fresh one.
            Err(_) => {
                let mut conn = self.connect(addr).await?;
                conn.send(packet).await.map_err(|e| QueryError::Frame(addr.to_string(), e))?;
                self.put(addr, conn);
                Ok(())
            }
        }
    }

    /// Sends a query and waits for its reply payload (PHP-serialized bytes).
    pub async fn query(&self, addr: &str, packet: Bytes) -> Result<Bytes, QueryError> {
        if let Some(conn) = self.take(addr) {
            if let Ok(reply) = self.ask(addr, conn, packet.clone()).await {
                return Ok(reply);
            }
        }
        let conn = self.connect(addr).await?;
        self.ask(addr, conn, packet).await
    }

    async fn ask(&self, addr: &str, mut conn: Conn, packet: Bytes) -> Result<Bytes, QueryError> {
        conn.send(packet).await.map_err(|e| QueryError::Frame(addr.to_string(), e))?;
        let reply = tokio::time::timeout(self.timeout, conn.next()).await.map_err(|_| QueryError::Timeout(addr.to_string(), self.timeout))?;
        match reply {
            Some(Ok(payload)) => {
                self.put(addr, conn);
                Ok(payload)
            }
            Some(Err(e)) => Err(QueryError::Frame(addr.to_string(), e)),
            None => Err(QueryError::Closed(addr.to_string())),
        }
    }
}
