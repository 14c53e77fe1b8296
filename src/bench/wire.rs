//! How a load connection talks to a gateway: WebSocket JSON frames, text lines over TCP, or
//! goim packets over TCP. The workloads only send and read the chat's JSON messages; this is
//! where each transport frames them (and where a goim client's heartbeat and auth become their
//! own packets).

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use gateway::protocol::goim::{op, GoimCodec, Packet};
use std::net::{IpAddr, SocketAddr};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::codec::{Framed, LinesCodec};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket, one JSON message per text frame (`--url ws://ip:port`).
    Ws,
    /// Text lines over TCP (`--url ip:port` of a gateway's `text_listen`).
    Text,
    /// goim packets over TCP (`--url ip:port` of a gateway's `goim_listen`).
    Goim,
}

/// One connection, before it is split into its two halves.
pub enum Conn {
    Ws(WebSocketStream<TcpStream>),
    Text(Framed<TcpStream, LinesCodec>),
    Goim(Framed<TcpStream, GoimCodec>),
}

pub enum Tx {
    Ws(SplitSink<WebSocketStream<TcpStream>, Message>),
    Text(SplitSink<Framed<TcpStream, LinesCodec>, String>),
    Goim(SplitSink<Framed<TcpStream, GoimCodec>, Packet>, i32),
}

pub enum Rx {
    Ws(SplitStream<WebSocketStream<TcpStream>>),
    Text(SplitStream<Framed<TcpStream, LinesCodec>>),
    Goim(SplitStream<Framed<TcpStream, GoimCodec>>),
}

/// What a read gives: a message (as the JSON text a WebSocket client would get) or the end.
/// The text is the frame's own buffer, not a copy: a login storm's answers are up to hundreds
/// of kilobytes each, and the generator shares the box with the servers it measures.
pub enum Incoming {
    Text(Utf8Bytes),
    Closed(String),
}

/// The largest frame the load generator accepts from a gateway.
const MAX: usize = 16 * 1024 * 1024;

pub async fn connect(transport: Transport, url: &str, source: Option<IpAddr>) -> anyhow::Result<Conn> {
    let hostport = url.split("://").last().unwrap_or("").split('/').next().unwrap_or("");
    let addr: SocketAddr = hostport.parse().with_context(|| format!("{url}: expected [scheme://]ip:port"))?;
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        port_at_connect(&socket);
        socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("bind {ip}"))?;
    }
    let stream = socket.connect(addr).await.with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(match transport {
        Transport::Ws => {
            let url = if url.starts_with("ws://") { url.to_string() } else { format!("ws://{hostport}/") };
            Conn::Ws(tokio_tungstenite::client_async(url, stream).await.context("handshake")?.0)
        }
        Transport::Text => Conn::Text(Framed::new(stream, LinesCodec::new_with_max_length(MAX))),
        Transport::Goim => Conn::Goim(Framed::new(stream, GoimCodec { max: MAX })),
    })
}

/// Has the kernel pick a bound socket's source port at `connect`, by the whole 4-tuple, not at
/// `bind` (`IP_BIND_ADDRESS_NO_PORT`, Linux 4.2). Bound to port 0, a socket's port is otherwise
/// searched among every port bound on its address, TIME_WAIT ones included: a run started within
/// a minute of a 100 000-connection run spent most of the box in the kernel's bind
/// (`perf`: `inet_bind2_bucket_find`, `inet_bhash2_conflict`), and connected in a minute
/// instead of seconds. Without the option (another OS, an old kernel) the bind is as before.
fn port_at_connect(socket: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: the descriptor is the socket's own, open for the call; the value is a c_int
        // that outlives the call, passed with its size.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            tracing::debug!("IP_BIND_ADDRESS_NO_PORT not set: {}", std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

impl Conn {
    pub fn split(self) -> (Tx, Rx) {
        match self {
            Conn::Ws(ws) => {
                let (t, r) = ws.split();
                (Tx::Ws(t), Rx::Ws(r))
            }
            Conn::Text(f) => {
                let (t, r) = f.split();
                (Tx::Text(t), Rx::Text(r))
            }
            Conn::Goim(f) => {
                let (t, r) = f.split();
                (Tx::Goim(t, 0), Rx::Goim(r))
            }
        }
    }
}

impl Tx {
    /// Sends one client message. For goim, `beat` is a heartbeat packet and a message whose
    /// method is `auth` is the auth packet; everything else is op 4.
    pub async fn send(&mut self, text: String) -> anyhow::Result<()> {
        match self {
            Tx::Ws(t) => t.send(Message::Text(text.into())).await?,
            Tx::Text(t) => t.send(text).await?,
            Tx::Goim(t, seq) => {
                *seq += 1;
                let (operation, body) = if text == "beat" {
                    (op::HEARTBEAT, Bytes::new())
                } else if text.starts_with(r#"{"method":"auth""#) {
                    (op::AUTH, Bytes::from(text))
                } else {
                    (op::SEND, Bytes::from(text))
                };
                t.send(Packet::new(operation, *seq, body)).await?
            }
        }
        Ok(())
    }
}

impl Rx {
    pub async fn next(&mut self) -> Incoming {
        loop {
            let got = match self {
                Rx::Ws(r) => match r.next().await {
                    Some(Ok(Message::Text(t))) => Ok(t),
                    Some(Ok(Message::Close(c))) => Err(c.map(|c| format!("{} {}", u16::from(c.code), c.reason)).unwrap_or_else(|| "close".into())),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => Err(format!("error: {e}")),
                    None => Err("ended".into()),
                },
                Rx::Text(r) => match r.next().await {
                    Some(Ok(line)) => Ok(line.into()),
                    Some(Err(e)) => Err(format!("error: {e}")),
                    None => Err("ended".into()),
                },
                Rx::Goim(r) => match r.next().await {
                    // A heartbeat reply's body is a count, not a message.
                    Some(Ok(p)) if p.op == op::HEARTBEAT_REPLY => continue,
                    Some(Ok(p)) => Ok(String::from_utf8_lossy(&p.body).into_owned().into()),
                    Some(Err(e)) => Err(format!("error: {e}")),
                    None => Err("ended".into()),
                },
            };
            return match got {
                Ok(t) => Incoming::Text(t),
                Err(why) => Incoming::Closed(why),
            };
        }
    }
}
