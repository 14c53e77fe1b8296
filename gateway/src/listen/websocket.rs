//! The WebSocket listener: one task per client, reading frames into the hub and writing what
//! the hub queues for it.
//!
//! The connection is announced to the hub at TCP accept (ON_CONNECT comes before the handshake,
//! as in GatewayWorker) and anything the worker sends before the handshake completes waits in
//! the client's queue.

use super::client::{admit, Admit, Client, Limits};
use super::door::{Door, Entry, Refused};
use super::goim::Goim;
use super::poll;
use super::web;
use crate::hub::{close, HubMsg, Out};
use crate::outbox::OutboxRx;
use crate::protocol::goim::Packet;
use crate::protocol::websocket_connect::{self, UpgradeRequest};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use register::stats::inc;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::server::ErrorResponse;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// tungstenite keeps a read buffer of this size for the connection's whole life (a bigger frame
/// grows it while it is read). Chat frames are small: 512 bytes instead of 4 KiB took an idle
/// connection from 13.2 to 9.6 KB of gateway memory (docs/BENCHMARKS.md).
const READ_BUFFER: usize = 512;
/// Frames are gathered up to this size before a write, so a burst costs few syscalls.
const WRITE_BUFFER: usize = 16 * 1024;

#[derive(Clone)]
pub struct WsConfig {
    /// Pages served on plain GETs (None: only WebSocket).
    pub assets: Option<super::web::Assets>,
    pub max_message_size: usize,
    pub queue: usize,
    pub handshake_timeout: Duration,
    /// Connections per address, and handshake permits (see `door`).
    pub door: Door,
    /// First-message deadline, message rate and the counters, as every transport has them.
    pub limits: Limits,
    pub allowed_origins: Arc<Vec<String>>,
    /// Set when the client port speaks TLS (wss:// and https://).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The HTTP long-polling sessions served on this port.
    pub polls: super::poll::Polls,
}

pub async fn serve(listener: TcpListener, hub: mpsc::Sender<HubMsg>, config: WsConfig) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let entry = match config.door.enter(addr.ip()) {
                    Ok(e) => e,
                    Err(why) => {
                        refuse(&stream, addr, why, &config.limits);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (hub, config) = (hub.clone(), config.clone());
                match config.tls.clone() {
                    None => {
                        tokio::spawn(client_task(stream, addr, hub, config, entry));
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            // The TLS handshake shares the handshake deadline: a slow one is a slowloris.
                            match tokio::time::timeout(config.handshake_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => client_task(tls, addr, hub, config, entry).await,
                                Ok(Err(e)) => debug!(%addr, "TLS handshake failed: {e}"),
                                Err(_) => {
                                    inc(&config.limits.stats.limited);
                                    info!(%addr, "TLS handshake not finished within {:?}, closing", config.handshake_timeout);
                                }
                            }
                        });
                    }
                }
            }
            Err(e) => {
                warn!("client accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Closes a connection the door refused, with a 429 when the address holds too many (written
/// without waiting: nothing is spent on it), logged with the reason.
fn refuse(stream: &tokio::net::TcpStream, addr: SocketAddr, why: Refused, limits: &Limits) {
    inc(&limits.stats.limited);
    info!(%addr, "{}: closing this one", why.reason());
    if why != Refused::TooManyPending {
        let _ = stream.try_write(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    }
}

/// Anything a client can connect over: plain TCP or TLS.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

async fn client_task<S: Transport>(mut stream: S, addr: SocketAddr, hub: mpsc::Sender<HubMsg>, config: WsConfig, mut entry: Entry) {
    // The request head decides between a page and a WebSocket (a slow head is a slowloris).
    let head = match tokio::time::timeout(config.handshake_timeout, web::read_head(&mut stream)).await {
        Ok(web::Head::Upgrade(bytes)) => bytes,
        Ok(web::Head::Get(path)) => return web::respond(stream, &path, config.assets.as_ref()).await,
        Ok(web::Head::Poll(req)) => return poll::handle(stream, addr, req, &hub, &config.polls, &mut entry).await,
        Ok(web::Head::Bad(why)) => {
            debug!(%addr, "not a WebSocket client: {why}");
            return;
        }
        Err(_) => {
            info!(%addr, "no request head within {:?}, closing", config.handshake_timeout);
            return;
        }
    };
    let stream = web::Prefixed::new(head, stream);
    let (client, out_rx) = match admit(&hub, addr, config.queue, config.limits.clone()).await {
        Admit::Yes(client, out_rx) => (Some(client), out_rx),
        Admit::NoWorker(out_rx) => (None, out_rx),
        Admit::TooManyFromIp => {
            let mut stream = stream;
            let _ = stream.write_all(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            return;
        }
        Admit::Gone => return,
    };
    // tungstenite's 128 KiB read and write buffers would cost ~256 KiB per idle connection;
    // small ones keep 100k connections affordable (figures in docs/BENCHMARKS.md).
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size));
    let mut body = None;
    let mut framing = Framing::Json;
    #[allow(clippy::result_large_err)] // the error type is tungstenite's, fixed by its callback API
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |req: &Request, mut resp: Response| {
            if let Some(origin) = req.headers().get("origin").and_then(|o| o.to_str().ok()) {
                if !config.allowed_origins.is_empty() && !config.allowed_origins.iter().any(|a| a == origin) {
                    inc(&config.limits.stats.limited);
                    info!(%addr, origin, "WebSocket from an origin that is not allowed: 403");
                    let mut refusal = ErrorResponse::new(Some("origin not allowed".to_string()));
                    *refusal.status_mut() = StatusCode::FORBIDDEN;
                    return Err(refusal);
                }
            }
            let (goim, subprotocol) = wants_goim(req);
            if goim {
                framing = Framing::Goim(Goim::new(config.max_message_size));
                if subprotocol {
                    resp.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(GOIM_SUBPROTOCOL));
                }
            }
            body = Some(handshake_body(req));
            Ok(resp)
        },
        Some(ws_config),
    );
    let kill = client.as_ref().map(|c| c.kill.clone()).unwrap_or_default();
    let ws = tokio::select! {
        r = tokio::time::timeout(config.handshake_timeout, handshake) => r,
        _ = kill.cancelled() => {
            if let Some(client) = client {
                client.gone().await;
            }
            return;
        }
    };
    let Some(client) = client else {
        // No worker to take this client's events: say so instead of dropping it silently.
        if let Ok(Ok(mut ws)) = ws {
            let _ = ws.close(Some(close(1013, "no business worker available"))).await;
        }
        return;
    };
    let ws = match ws {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            debug!(%addr, "WebSocket handshake failed: {e}");
            client.gone().await;
            return;
        }
        Err(_) => {
            info!(%addr, "WebSocket handshake not finished within {:?}, closing", config.handshake_timeout);
            client.gone().await;
            return;
        }
    };
    entry.handshake_done();
    if let Some(body) = body {
        let _ = hub.send(HubMsg::Handshake { conn: client.conn, body }).await;
    }
    // The connection goes on in a task of its own: this one is as big as its biggest step
    // (the upgrade's, ≈ 4 KiB) and would keep that size for the connection's whole life.
    tokio::spawn(run(client, ws, out_rx, framing, entry));
}

/// The subprotocol a goim client asks for; the path `/sub` (goim's own) works too.
pub const GOIM_SUBPROTOCOL: &str = "goim";

/// `(goim framing?, asked by subprotocol?)`.
fn wants_goim(req: &Request) -> (bool, bool) {
    let subprotocol = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(GOIM_SUBPROTOCOL));
    let path = req.uri().path();
    (subprotocol || path == "/sub" || path.starts_with("/sub/"), subprotocol)
}

/// What a WebSocket connection's frames carry.
#[derive(Clone)]
enum Framing {
    /// One JSON message per text frame (the client protocol).
    Json,
    /// goim packets in binary frames.
    Goim(Goim),
}

fn handshake_body(req: &Request) -> Bytes {
    let uri = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let protocol = match req.version() {
        http_version if http_version == tokio_tungstenite::tungstenite::http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let headers = req.headers().iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
    let value = websocket_connect::build(&UpgradeRequest { method: req.method().as_str(), uri, protocol, headers });
    Bytes::from(value.serialize())
}

/// Reads and writes until either side ends the connection.
/// `entry` is held to the end: the connection counts for its address until it ends.
async fn run<S: Transport>(mut client: Client, ws: WebSocketStream<web::Prefixed<S>>, out_rx: OutboxRx<Out>, framing: Framing, entry: Entry) {
    let (conn, addr, kill) = (client.conn, client.addr, client.kill.clone());
    let (sink, mut stream) = ws.split();
    let writer = tokio::spawn(write_loop(sink, out_rx, kill.clone(), framing.clone()));
    // A close frame for the client, queued after what it is already owed.
    let mut closing: Option<CloseFrame> = None;
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            _ = kill.cancelled() => break,
            stop = client.silent() => {
                closing = stop.close().map(|(c, why)| close(c, why));
                break;
            }
        };
        let data = match next {
            Some(Ok(Message::Text(_))) if matches!(framing, Framing::Goim(_)) => {
                info!(conn, %addr, "closing goim client: a text frame where packets go in binary frames");
                closing = Some(close(1003, "goim packets go in binary frames"));
                break;
            }
            Some(Ok(Message::Text(t))) => Bytes::from(t),
            Some(Ok(Message::Binary(b))) => b,
            // The client closes: answer with its own code (RFC 6455 §5.5.1), after what it is
            // already owed, so it sees a clean close and not 1006.
            Some(Ok(Message::Close(frame))) => {
                closing = Some(frame.unwrap_or_else(|| close(1000, "")));
                break;
            }
            None => break,
            Some(Ok(_)) => continue, // ping/pong: answered by tungstenite; not heartbeat activity (spec §10)
            Some(Err(e)) => {
                let (code, why) = match &e {
                    // The client just went away (TCP reset or EOF without a close frame).
                    WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                        debug!(conn, %addr, "client left without a close frame");
                        break;
                    }
                    WsError::Capacity(CapacityError::MessageTooLong { .. }) => (1009, "message too big"),
                    WsError::Utf8(_) => (1007, "invalid UTF-8 in a text frame"),
                    WsError::Protocol(_) => (1002, "protocol error"),
                    _ => {
                        debug!(conn, %addr, "client connection error: {e}");
                        break;
                    }
                };
                info!(conn, %addr, code, "closing client: {e}");
                closing = Some(close(code, why));
                break;
            }
        };
        let messages = match &framing {
            Framing::Json => Ok(vec![data]),
            Framing::Goim(g) => goim_requests(g, data),
        };
        let messages = match messages {
            Ok(m) => m,
            Err(why) => {
                info!(conn, %addr, "closing goim client: {why}");
                closing = Some(close(1002, "bad goim packet"));
                break;
            }
        };
        let mut stop = None;
        for m in messages {
            if let Err(s) = client.deliver(m).await {
                stop = Some(s);
                break;
            }
        }
        if let Some(s) = stop {
            closing = s.close().map(|(c, why)| close(c, why));
            break;
        }
    }
    let queued = closing.is_some_and(|frame| client.out.try_send(Out::Close(frame)).is_ok());
    if queued && !kill.is_cancelled() {
        // Let the writer send our close frame (after what is queued before it), but not forever.
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    } else {
        // The peer left, or the connection was destroyed (CMD_DESTROY, slow reader, heartbeat,
        // a kick already flushed): nothing more can or should be written.
        writer.abort();
    }
    client.gone().await;
    drop(entry);
}

/// The packets in one binary frame (one or more, each whole), as the hub's messages.
fn goim_requests(g: &Goim, data: Bytes) -> Result<Vec<Bytes>, String> {
    let mut buf = bytes::BytesMut::from(&data[..]);
    let mut out = Vec::with_capacity(1);
    while let Some(p) = Packet::decode(&mut buf, g.max_packet).map_err(|e| e.to_string())? {
        out.push(g.request(p)?);
    }
    if !buf.is_empty() {
        return Err(format!("{} bytes of an incomplete packet at the end of a frame", buf.len()));
    }
    Ok(out)
}

type Sink<S> = futures_util::stream::SplitSink<WebSocketStream<web::Prefixed<S>>, Message>;

/// Writes queued messages, batching a burst into one flush.
async fn write_loop<S: Transport>(mut sink: Sink<S>, mut rx: OutboxRx<Out>, kill: CancellationToken, framing: Framing) {
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = kill.cancelled() => return,
        };
        let Some(mut next) = first else { return };
        loop {
            match next {
                Out::Send(m) => match framed(&framing, m) {
                    Ok((m, false)) => {
                        if sink.feed(m).await.is_err() {
                            // The client closed first: closing the sink still sends the
                            // close frame tungstenite queued in answer to its own.
                            let _ = sink.close().await;
                            return;
                        }
                    }
                    Ok((m, true)) => {
                        let _ = sink.feed(m).await;
                        finish(&mut sink, close(1008, "auth refused")).await;
                        kill.cancel();
                        return;
                    }
                    Err(why) => warn!("message not sent: {why}"),
                },
                Out::Kick(m) => {
                    if let Some(Ok((m, _))) = m.map(|m| framed(&framing, m)) {
                        let _ = sink.feed(m).await;
                    }
                    finish(&mut sink, close(1000, "")).await;
                    kill.cancel();
                    return;
                }
                Out::Close(frame) => {
                    finish(&mut sink, frame).await;
                    kill.cancel();
                    return;
                }
            }
            match rx.try_recv() {
                Some(m) => next = m,
                None => break,
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// A message in this connection's framing; `true` when the connection closes after it.
fn framed(framing: &Framing, m: Message) -> Result<(Message, bool), String> {
    match framing {
        Framing::Json => Ok((m, false)),
        Framing::Goim(g) => {
            let (packet, close) = g.response(&m)?;
            Ok((Message::Binary(packet.to_bytes()), close))
        }
    }
}

/// Ends the connection with `frame`. When the client closed first, tungstenite has already
/// queued the echo of the client's frame (the send is refused) and the close flushes it.
async fn finish<S: Transport>(sink: &mut Sink<S>, frame: CloseFrame) {
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}
