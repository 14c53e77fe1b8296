//! Connections for synchronous queries (and, outside a worker, for commands).
//!
//! Query replies carry no header, so they cannot share the persistent link that carries client
//! events; each query uses a connection of its own, kept in a small pool per gateway so a busy
//! worker does not pay a TCP handshake per query (PHP caches them for 50 s).
//!
//! An unreachable gateway (a partition: its connections neither answer nor close) must not
//! stall the worker, as it does PHP's for 10–15 s (GatewayWorker#37): connects give up after
//! [`CONNECT_TIMEOUT`], a gateway that timed out is not waited for again for [`REST`] (queries
//! to it fail at once meanwhile), and a timed-out pooled connection is not retried on a fresh
//! one, which would only wait again.

use bytes::{Bytes, BytesMut};
use gateway::protocol::{Command, FrameError, ReplyCodec, DEFAULT_MAX_PACKET};
use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// A pooled connection is the socket alone: a query's read buffer is its own and goes with it,
/// so the connections a storm leaves idle (a hundred or more per gateway) hold no buffers. A
/// codec's 8 KiB read and write buffers each were ≈ 170 bytes per client of a worker holding
/// 15 000 (docs/BENCHMARKS.md).
type Conn = TcpStream;

/// A reply's first read: most replies fit, a long listing grows it.
const READ_CHUNK: usize = 4096;

/// Idle connections per gateway inner address.
pub struct Pool {
    secret_key: String,
    timeout: Duration,
    idle: Mutex<HashMap<SocketAddrV4, Vec<(Instant, Conn)>>>,
    /// Gateways that timed out, and until when they are not waited for.
    resting: Mutex<HashMap<SocketAddrV4, Instant>>,
}

/// A TCP connect between servers takes milliseconds; one that takes this long is into a black
/// hole (the first SYN retransmit comes after 1 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a gateway that timed out is skipped before it is tried again.
pub const REST: Duration = Duration::from_secs(5);

/// How long an idle pooled connection is reused.
const IDLE_FOR: Duration = Duration::from_secs(50);
/// Idle connections kept per gateway: as many as a login storm has queries in flight at once.
/// At 16, a storm of 15 000 logins opened and closed a connection for one query in seven, which
/// cost the gateway and the workers a fifth of their CPU (accept, connect, shutdown; BENCHMARKS).
/// An idle one costs a socket on each side, and no buffer (`read_reply`).
const MAX_IDLE_PER_GATEWAY: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cannot connect to gateway {0}: {1}")]
    Connect(SocketAddrV4, std::io::Error),
    #[error("gateway {0} did not answer within {1:?}")]
    Timeout(SocketAddrV4, Duration),
    #[error("gateway {0} closed the connection without answering")]
    Closed(SocketAddrV4),
    #[error("gateway {0}: {1}")]
    Frame(SocketAddrV4, FrameError),
    #[error("gateway {0} timed out a moment ago and is not waited for (a partition?)")]
    Unreachable(SocketAddrV4),
}

impl QueryError {
    /// The gateway could not be reached (as opposed to answering badly).
    pub fn unreachable(&self) -> bool {
        matches!(self, QueryError::Connect(..) | QueryError::Timeout(..) | QueryError::Unreachable(_))
    }
}

impl Pool {
    pub fn new(secret_key: String, timeout: Duration) -> Pool {
        Pool { secret_key, timeout, idle: Mutex::new(HashMap::new()), resting: Mutex::new(HashMap::new()) }
    }

    /// Stops waiting for `addr` for a while: it timed out.
    pub fn rest(&self, addr: SocketAddrV4) {
        if let Ok(mut r) = self.resting.lock() {
            if r.insert(addr, Instant::now() + REST).is_none() {
                tracing::warn!(gateway = %addr, "gateway unreachable: not waited for during the next {REST:?}");
            }
        }
        // Its pooled connections are as dead as the one that timed out.
        if let Ok(mut idle) = self.idle.lock() {
            idle.remove(&addr);
        }
    }

    /// Fails at once while `addr` rests; forgets it when the rest is over.
    fn check(&self, addr: SocketAddrV4) -> Result<(), QueryError> {
        let Ok(mut r) = self.resting.lock() else { return Ok(()) };
        match r.get(&addr) {
            Some(until) if Instant::now() < *until => Err(QueryError::Unreachable(addr)),
            Some(_) => {
                r.remove(&addr);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Marks `addr` resting when `e` says it timed out.
    fn noted<T>(&self, addr: SocketAddrV4, r: Result<T, QueryError>) -> Result<T, QueryError> {
        if let Err(QueryError::Timeout(..) | QueryError::Connect(..)) = &r {
            self.rest(addr);
        }
        r
    }

    fn take(&self, addr: SocketAddrV4) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&addr)?;
        while let Some((since, conn)) = list.pop() {
            if since.elapsed() < IDLE_FOR {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, addr: SocketAddrV4, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(addr).or_default();
            if list.len() < MAX_IDLE_PER_GATEWAY {
                list.push((Instant::now(), conn));
            }
        }
    }

    async fn connect(&self, addr: SocketAddrV4) -> Result<Conn, QueryError> {
        let wait = CONNECT_TIMEOUT.min(self.timeout);
        let stream = tokio::time::timeout(wait, TcpStream::connect(addr))
            .await
            .map_err(|_| QueryError::Timeout(addr, wait))?
            .map_err(|e| QueryError::Connect(addr, e))?;
        let _ = stream.set_nodelay(true);
        let mut conn = stream;
        if !self.secret_key.is_empty() {
            let auth = Command::GatewayClientConnect { secret_key: self.secret_key.clone() }.into_packet().to_bytes();
            write(addr, &mut conn, &auth).await?;
        }
        Ok(conn)
    }

    /// Sends a packet that gets no reply.
    pub async fn command(&self, addr: SocketAddrV4, packet: Bytes) -> Result<(), QueryError> {
        self.check(addr)?;
        let mut conn = match self.take(addr) {
            Some(c) => c,
            None => self.noted(addr, self.connect(addr).await)?,
        };
        match write(addr, &mut conn, &packet).await {
            Ok(()) => {
                self.put(addr, conn);
                Ok(())
            }
            // A pooled connection the gateway closed meanwhile: one retry on a fresh one.
            Err(_) => {
                let mut conn = self.noted(addr, self.connect(addr).await)?;
                write(addr, &mut conn, &packet).await?;
                self.put(addr, conn);
                Ok(())
            }
        }
    }

    /// Sends a query and waits for its reply payload (PHP-serialized bytes).
    pub async fn query(&self, addr: SocketAddrV4, packet: Bytes) -> Result<Bytes, QueryError> {
        self.check(addr)?;
        if let Some(conn) = self.take(addr) {
            match self.ask(addr, conn, packet.clone()).await {
                Ok(reply) => return Ok(reply),
                // Silence, not a closed connection: a fresh one would only wait again.
                Err(e @ QueryError::Timeout(..)) => return self.noted(addr, Err(e)),
                // A pooled connection the gateway closed meanwhile: one retry on a fresh one.
                Err(_) => {}
            }
        }
        let conn = self.noted(addr, self.connect(addr).await)?;
        let reply = self.ask(addr, conn, packet).await;
        self.noted(addr, reply)
    }

    async fn ask(&self, addr: SocketAddrV4, mut conn: Conn, packet: Bytes) -> Result<Bytes, QueryError> {
        write(addr, &mut conn, &packet).await?;
        let payload =
            tokio::time::timeout(self.timeout, read_reply(addr, &mut conn)).await.map_err(|_| QueryError::Timeout(addr, self.timeout))??;
        self.put(addr, conn);
        Ok(payload)
    }
}

async fn write(addr: SocketAddrV4, conn: &mut Conn, packet: &[u8]) -> Result<(), QueryError> {
    conn.write_all(packet).await.map_err(|e| QueryError::Frame(addr, e.into()))
}

/// One reply (a length, then that many bytes), read into a buffer of its own. The length is
/// checked against the limit before the buffer grows to it. A query gets one reply, so nothing
/// follows it on the connection.
async fn read_reply(addr: SocketAddrV4, conn: &mut Conn) -> Result<Bytes, QueryError> {
    let mut codec = ReplyCodec { max_len: DEFAULT_MAX_PACKET };
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        // Once the length is known (and allowed), the codec makes room for the rest.
        if let Some(payload) = codec.decode(&mut buf).map_err(|e| QueryError::Frame(addr, e))? {
            return Ok(payload);
        }
        // A full buffer would read 0 bytes, which means closed.
        buf.reserve(1);
        let n = conn.read_buf(&mut buf).await.map_err(|e| QueryError::Frame(addr, e.into()))?;
        if n == 0 {
            return Err(QueryError::Closed(addr));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway::protocol::{Command, Packet};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Reads one packet (its length includes the 4 length bytes); `None` once the peer is gone.
    async fn read_packet(s: &mut tokio::net::TcpStream) -> Option<()> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.ok()?;
        let mut rest = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
        s.read_exact(&mut rest).await.ok().map(|_| ())
    }

    /// A gateway's inner port as far as a query needs it: answers every packet with `N;`,
    /// and counts the connections it accepted.
    async fn fake_gateway() -> (SocketAddrV4, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else { panic!("bound to an IPv4 address") };
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    while read_packet(&mut s).await.is_some() {
                        // Answer after a moment, so the queries of a wave are all in flight at once.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if s.write_all(&[0, 0, 0, 2, b'N', b';']).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn a_wave_of_queries_reuses_the_connections_of_the_wave_before() {
        let (addr, accepted) = fake_gateway().await;
        let pool = Arc::new(Pool::new(String::new(), Duration::from_secs(5)));
        let packet: Packet = Command::GetAllClientSessions.into_packet();
        let packet = packet.to_bytes();
        for wave in 0..3 {
            let queries = (0..100).map(|_| {
                let (pool, packet) = (pool.clone(), packet.clone());
                tokio::spawn(async move { pool.query(addr, packet).await })
            });
            for q in futures_util::future::join_all(queries).await {
                assert_eq!(&q.unwrap().unwrap()[..], b"N;", "wave {wave}");
            }
        }
        // The first wave opens one connection per query; the later ones find them all pooled.
        assert_eq!(accepted.load(Ordering::SeqCst), 100);
    }

    /// A gateway that answers one query with `reply`, written in pieces.
    async fn answering(reply: Vec<u8>) -> SocketAddrV4 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else { panic!("bound to an IPv4 address") };
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_packet(&mut s).await.expect("the query");
            for piece in reply.chunks(3000) {
                if s.write_all(piece).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // Held open: the reader must not wait for more than the reply.
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        addr
    }

    #[tokio::test]
    async fn a_reply_longer_than_a_read_comes_whole_and_an_oversized_one_is_refused() {
        let packet = Command::GetAllClientSessions.into_packet().to_bytes();
        let pool = Pool::new(String::new(), Duration::from_secs(5));
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut reply = (body.len() as u32).to_be_bytes().to_vec();
        reply.extend_from_slice(&body);
        let got = pool.query(answering(reply).await, packet.clone()).await.expect("reply");
        assert_eq!(&got[..], &body[..]);

        let huge = ((DEFAULT_MAX_PACKET + 1) as u32).to_be_bytes().to_vec();
        match pool.query(answering(huge).await, packet).await {
            Err(QueryError::Frame(_, FrameError::TooLarge { .. })) => {}
            other => panic!("an oversized reply must be refused: {other:?}"),
        }
    }
}
