//! The WebSocket listener: each client is one task, which reads frames into the hub and writes
//! what the hub queues for it, and holds no buffer while the connection is idle.
//!
//! The request head is read (`web`), judged (`protocol::websocket`), then the connection is
//! announced to the hub (ON_CONNECT comes before the upgrade's answer, as in GatewayWorker) and
//! anything the worker sends before the 101 is written waits in the client's queue.

use super::client::{admit, poll_turn, Admit, Client, Limits, Turn};
use super::conn::{ready_to_write, Conn, Flow, Transport, WRITE_BATCH};
use super::door::{Door, Entry, Refused};
use super::goim::Goim;
use super::poll;
use super::web;
use crate::hub::{close, HubMsg, Out};
use crate::outbox::OutboxRx;
use crate::protocol::goim::Packet;
use crate::protocol::websocket::{self as ws, Decoder, Incoming};
use crate::protocol::websocket_connect::{self, UpgradeRequest};
use bytes::{Bytes, BytesMut};
use register::stats::inc;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

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
    pub limits: Arc<Limits>,
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
    let upgrade = match Upgrade::judge(&head, &config, addr) {
        Ok(u) => u,
        Err(refusal) => {
            let _ = tokio::time::timeout(config.handshake_timeout, stream.write_all(&refusal)).await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    drop(head);
    let client = match admit(&hub, addr, config.queue, config.limits.clone()).await {
        Admit::Yes(client) => Some(client),
        // Nothing can be queued for it (the hub keeps no sender), so its queue is not watched.
        Admit::NoWorker(_) => None,
        Admit::TooManyFromIp => {
            let _ = stream.write_all(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            return;
        }
        Admit::Gone => return,
    };
    let answered = tokio::select! {
        r = tokio::time::timeout(config.handshake_timeout, stream.write_all(&upgrade.response)) => matches!(r, Ok(Ok(()))),
        _ = shut(&client) => false,
    };
    let mut conn = Conn::new(stream, upgrade.rest);
    let Some(client) = client else {
        // No worker to take this client's events: say so instead of dropping it silently.
        if answered {
            ws::encode(&Message::Close(Some(close(1013, "no business worker available"))), &mut conn.wbuf);
            conn.finish().await;
        }
        return;
    };
    if !answered {
        info!(%addr, "WebSocket upgrade not answered within {:?}, closing", config.handshake_timeout);
        client.gone();
        return;
    }
    entry.handshake_done();
    let _ = hub.send(HubMsg::Handshake { conn: client.conn, body: upgrade.body }).await;
    let decoder = Decoder::new(config.max_message_size);
    // The connection goes on in a task of its own: this one is as big as its biggest step
    // (the upgrade's) and would keep that size for the connection's whole life.
    tokio::spawn(run(client, conn, upgrade.framing, decoder, entry));
}

/// Resolves when the hub shuts an admitted client's queue (CMD_DESTROY during the upgrade).
async fn shut(client: &Option<Client>) {
    match client {
        Some(c) => {
            c.rx.recv_if(false).await;
        }
        None => std::future::pending().await,
    }
}

/// An upgrade request judged acceptable: what to answer, and what the connection carries.
struct Upgrade {
    /// The 101 response.
    response: Vec<u8>,
    framing: Framing,
    /// The CMD_ON_WEBSOCKET_CONNECT body for the worker.
    body: Bytes,
    /// Bytes the client sent after its head (frames it did not wait to send).
    rest: BytesMut,
}

impl Upgrade {
    /// Judges a request head; `Err` holds the HTTP refusal to write, already logged.
    fn judge(head: &[u8], config: &WsConfig, addr: SocketAddr) -> Result<Upgrade, Vec<u8>> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(head) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => {
                debug!(%addr, "not an HTTP request head");
                return Err(ws::Refusal::BadRequest("not an HTTP request").response());
            }
        };
        let key = ws::upgrade_key(&req).map_err(|r| {
            debug!(%addr, "WebSocket upgrade refused: {}", r.reason());
            r.response()
        })?;
        let header = |name: &'static str| ws::header_values(&req, name);
        if let Some(origin) = header("origin").next().and_then(|o| std::str::from_utf8(o).ok()) {
            if !config.allowed_origins.is_empty() && !config.allowed_origins.iter().any(|a| a == origin) {
                inc(&config.limits.stats.limited);
                info!(%addr, origin, "WebSocket from an origin that is not allowed: 403");
                let why = "origin not allowed";
                return Err(format!("HTTP/1.1 403 Forbidden\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{why}", why.len()).into_bytes());
            }
        }
        let path = req.path.unwrap_or("/");
        let subprotocol = header("sec-websocket-protocol")
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case(GOIM_SUBPROTOCOL));
        let goim = subprotocol || path.split('?').next().is_some_and(|p| p == "/sub" || p.starts_with("/sub/"));
        let framing = if goim { Framing::Goim(Goim::new(config.max_message_size)) } else { Framing::Json };
        let headers = req.headers.iter().map(|h| (h.name, h.value)).collect();
        let body = websocket_connect::body(&UpgradeRequest { method: "GET", uri: path, protocol: "HTTP/1.1", headers });
        Ok(Upgrade {
            response: ws::accept_response(key, subprotocol.then_some(GOIM_SUBPROTOCOL)),
            framing,
            body: Bytes::from(body),
            rest: BytesMut::from(&head[len..]),
        })
    }
}

/// The subprotocol a goim client asks for; the path `/sub` (goim's own) works too.
pub const GOIM_SUBPROTOCOL: &str = "goim";

/// What a WebSocket connection's frames carry.
enum Framing {
    /// One JSON message per text frame (the client protocol).
    Json,
    /// goim packets in binary frames.
    Goim(Goim),
}

/// Reads and writes until either side ends the connection.
/// `entry` is held to the end: the connection counts for its address until it ends.
#[allow(clippy::manual_async_fn)] // on purpose: see the comment below
fn run<S: Transport>(
    mut client: Client,
    mut conn: Conn<S>,
    mut framing: Framing,
    mut decoder: Decoder,
    entry: Entry,
) -> impl Future<Output = ()> + Send {
    // An `async move` block and not an `async fn`: the arguments stay where the block captured
    // them instead of being copied into locals beside themselves, which doubled their size in
    // the task. The future is 272 bytes in a 384-byte cell (tokio's cells grow in steps of
    // 128; past 280 bytes of future the cell is 512): anything more held across an await here
    // costs every connection 128 bytes (text and goim's `tcp::run` is 256 and 264). Check with `RUSTC_BOOTSTRAP=1 cargo rustc -p gateway
    // --release --lib -- -Zprint-type-sizes` (docs/BENCHMARKS.md).
    async move {
        // A close frame for the client, written after what it is already owed.
        // Boxed: it is set only on the way out, and inline it would size the task for it.
        let mut closing: Option<Box<CloseFrame>> = None;
        let mut ended = false;
        let mut io_first = false;
        'conn: loop {
            // Whole frames first (the upgrade may have brought some along).
            loop {
                let data = match decoder.decode(&mut conn.rbuf) {
                    Ok(None) => break,
                    Ok(Some(Incoming::Text(_))) if matches!(framing, Framing::Goim(_)) => {
                        info!(conn = client.conn, addr = %client.addr, "closing goim client: a text frame where packets go in binary frames");
                        closing = Some(Box::new(close(1003, "goim packets go in binary frames")));
                        break 'conn;
                    }
                    Ok(Some(Incoming::Text(data) | Incoming::Binary(data))) => data,
                    // Answered at once, between whatever messages are being written.
                    Ok(Some(Incoming::Ping(p))) => {
                        ws::encode(&Message::Pong(p), &mut conn.wbuf);
                        continue;
                    }
                    // Not heartbeat activity (spec §10).
                    Ok(Some(Incoming::Pong)) => continue,
                    // The client closes: answer with its own code (RFC 6455 §5.5.1), after what it
                    // is already owed, so it sees a clean close and not 1006.
                    Ok(Some(Incoming::Close(frame))) => {
                        closing = Some(Box::new(frame.unwrap_or_else(|| close(1000, ""))));
                        break 'conn;
                    }
                    Err(fault) => {
                        let (code, why) = fault.close();
                        info!(conn = client.conn, addr = %client.addr, code, "closing client: {fault}");
                        closing = Some(Box::new(close(code, why)));
                        break 'conn;
                    }
                };
                // A JSON frame is one message. A goim frame may carry several, handed on in a
                // boxed wait of their own, so the task is not sized for the list.
                let delivered = match &mut framing {
                    Framing::Json => client.deliver(data).await,
                    Framing::Goim(g) => {
                        let messages = match goim_requests(g, data) {
                            Ok(messages) => messages,
                            Err(why) => {
                                info!(conn = client.conn, addr = %client.addr, "closing goim client: {why}");
                                closing = Some(Box::new(close(1002, "bad goim packet")));
                                break 'conn;
                            }
                        };
                        Box::pin(client.deliver_all(messages)).await
                    }
                };
                if let Err(stop) = delivered {
                    closing = stop.close().map(|(c, why)| Box::new(close(c, why)));
                    break 'conn;
                }
            }
            conn.release_read();
            if conn.eof {
                debug!(conn = client.conn, addr = %client.addr, "client left without a close frame");
                break;
            }
            let taking = conn.wbuf.len() < WRITE_BATCH;
            io_first = !io_first;
            // The turn is settled before anything else is awaited: held across the write below,
            // it would size the task for it.
            // Captured by value where it can be: the wait is held across the task's main await.
            let (c, cl) = (&mut conn, &mut client);
            let taken = match poll_fn(move |cx| poll_turn(cx, c, cl, taking, io_first)).await {
                Turn::Io(io) => match conn.note(io) {
                    Ok(()) => false,
                    Err(e) => {
                        debug!(conn = client.conn, addr = %client.addr, "client connection error: {e}");
                        break;
                    }
                },
                // Shut (or every sender gone): over. While the socket is full nothing is taken,
                // but a shut queue still ends the connection.
                Turn::Out(None) => break,
                Turn::Out(Some(m)) => {
                    if let Flow::End = take(&mut framing, m, &mut client.rx, &mut conn.wbuf) {
                        ended = true;
                        break;
                    }
                    true
                }
            };
            if taken {
                if let Err(e) = conn.write_now().await {
                    debug!(conn = client.conn, addr = %client.addr, "client connection error: {e}");
                    break;
                }
            }
        }
        // Closing is rare and its wait is big (a timer): boxed, so the task is not sized for it.
        if client.rx.is_shut() {
            // Destroyed (CMD_DESTROY, slow reader, heartbeat): nothing more is written.
        } else if ended {
            Box::pin(conn.finish()).await;
        } else if let Some(frame) = closing {
            // What is already queued goes first, then our close frame, unless the queue holds
            // its own ending.
            let mut flow = Flow::Go;
            while let (Flow::Go, Some(m)) = (&flow, client.rx.try_recv()) {
                flow = take(&mut framing, m, &mut client.rx, &mut conn.wbuf);
            }
            if let Flow::Go = flow {
                ws::encode(&Message::Close(Some(*frame)), &mut conn.wbuf);
            }
            Box::pin(conn.finish()).await;
        }
        client.gone();
        drop(entry);
    }
}

/// Frames `first` and whatever else waits in the queue (up to a batch) into `wbuf`.
fn take(framing: &mut Framing, first: Out, rx: &mut OutboxRx<Out>, wbuf: &mut BytesMut) -> Flow {
    ready_to_write(wbuf);
    let mut next = first;
    loop {
        match next {
            Out::Send(m) => match framed(framing, m) {
                Ok((m, end)) => {
                    ws::encode(&m, wbuf);
                    if end {
                        ws::encode(&Message::Close(Some(close(1008, "auth refused"))), wbuf);
                        return Flow::End;
                    }
                }
                Err(why) => warn!("message not sent: {why}"),
            },
            Out::Kick(m) => {
                if let Some(Ok((m, _))) = m.map(|m| framed(&mut *framing, m)) {
                    ws::encode(&m, wbuf);
                }
                ws::encode(&Message::Close(Some(close(1000, ""))), wbuf);
                return Flow::End;
            }
            Out::Close(frame) => {
                ws::encode(&Message::Close(Some(frame)), wbuf);
                return Flow::End;
            }
        }
        if wbuf.len() >= WRITE_BATCH {
            return Flow::Go;
        }
        match rx.try_recv() {
            Some(m) => next = m,
            None => return Flow::Go,
        }
    }
}

/// The packets in one binary frame (one or more, each whole), as the hub's messages.
fn goim_requests(g: &mut Goim, data: Bytes) -> Result<Vec<Bytes>, String> {
    let mut buf = bytes::BytesMut::from(&data[..]);
    let mut out = Vec::with_capacity(1);
    while let Some(p) = Packet::decode(&mut buf, g.max_packet()).map_err(|e| e.to_string())? {
        out.push(g.request(p)?);
    }
    if !buf.is_empty() {
        return Err(format!("{} bytes of an incomplete packet at the end of a frame", buf.len()));
    }
    Ok(out)
}

/// A message in this connection's framing; `true` when the connection closes after it.
fn framed(framing: &mut Framing, m: Message) -> Result<(Message, bool), String> {
    match framing {
        Framing::Json => Ok((m, false)),
        Framing::Goim(g) => {
            let (packet, close) = g.response(&m)?;
            Ok((Message::Binary(packet.to_bytes()), close))
        }
    }
}
