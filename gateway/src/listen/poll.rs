//! HTTP long polling on the client port, for browsers on networks that block WebSocket.
//!
//! A session is a client connection like any other to the hub (ON_CONNECT, the same session,
//! groups, ON_CLOSE); only its transport is a series of HTTP requests:
//!
//! * `POST /poll` opens one → `{"sid"}`;
//! * `GET /poll?sid=S&ack=N` waits (up to `wait`) for messages → `{"messages":[{"seq","data"}],
//!   "closed":null|{"code","reason"}}`: every message after `ack`, so an answer lost on the way is
//!   sent again by the next poll, and nothing is dropped;
//! * `POST /poll/send?sid=S&seq=K` with one client message per line → `{"received"}`: line i is
//!   message K+i, and a message number already received is skipped, so a retried send is not
//!   delivered twice;
//! * `POST /poll/close?sid=S` ends it at once (a page being left); otherwise a session nobody
//!   polls for `idle` ends by itself.
//!
//! Each session is an actor owning its buffer of unacknowledged messages; requests reach it
//! through the registry, a map from session id to the actor's channel.

use super::client::{admit, Admit, Client, Limits};
use super::door::Entry;
use crate::hub::{HubMsg, Out};
use bytes::{Bytes, BytesMut};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

/// One HTTP request to `/poll...`, with what was read of its body.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    query: Vec<(String, String)>,
    origin: Option<String>,
    content_length: usize,
    pub body: BytesMut,
}

impl Request {
    pub fn parse(req: &httparse::Request) -> Result<Request, &'static str> {
        let full = req.path.unwrap_or("/");
        let (path, query) = full.split_once('?').unwrap_or((full, ""));
        let query = query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let header =
            |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| String::from_utf8_lossy(h.value).into_owned());
        if header("transfer-encoding").is_some() {
            return Err("chunked poll requests are not taken (send a content-length)");
        }
        let content_length = match header("content-length") {
            None => 0,
            Some(v) => v.trim().parse().map_err(|_| "bad content-length")?,
        };
        Ok(Request {
            method: req.method.unwrap_or("").to_string(),
            path: path.to_string(),
            query,
            origin: header("origin"),
            content_length,
            body: BytesMut::new(),
        })
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn number(&self, key: &str) -> Result<u64, String> {
        match self.param(key) {
            None | Some("") => Ok(0),
            Some(v) => v.parse().map_err(|_| format!("{key} must be a number")),
        }
    }
}

/// What a poll gets: the messages not yet acknowledged, and whether the session is over.
#[derive(Debug, Default)]
struct Answer {
    messages: Vec<(u64, Bytes)>,
    closed: Option<(u16, String)>,
}

enum Cmd {
    Poll { ack: u64, reply: oneshot::Sender<Answer> },
    Send { first: u64, lines: Vec<Bytes>, reply: oneshot::Sender<(u64, Option<(u16, String)>)> },
    Close,
}

/// The long-polling sessions of one gateway, and how they behave.
#[derive(Clone)]
pub struct Polls {
    sessions: Arc<Mutex<HashMap<String, mpsc::Sender<Cmd>>>>,
    pub queue: usize,
    pub limits: Arc<Limits>,
    /// Largest `/poll/send` body.
    pub max_body: usize,
    /// How long a poll waits for a message before it is answered empty.
    pub wait: Duration,
    /// A session nobody polls for this long is closed (its client went away).
    pub idle: Duration,
    pub read_timeout: Duration,
    pub allowed_origins: Arc<Vec<String>>,
}

impl Polls {
    pub fn new(queue: usize, limits: Arc<Limits>, max_body: usize, read_timeout: Duration, allowed_origins: Arc<Vec<String>>) -> Polls {
        Polls {
            sessions: Arc::default(),
            queue,
            limits,
            max_body,
            wait: Duration::from_secs(25),
            idle: Duration::from_secs(40),
            read_timeout,
            allowed_origins,
        }
    }

    fn lookup(&self, sid: &str) -> Option<mpsc::Sender<Cmd>> {
        self.sessions.lock().ok()?.get(sid).cloned()
    }

    fn insert(&self, sid: String, tx: mpsc::Sender<Cmd>) {
        if let Ok(mut m) = self.sessions.lock() {
            m.insert(sid, tx);
        }
    }

    fn remove(&self, sid: &str) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(sid);
        }
    }
}

/// Answers one `/poll...` request on its own connection, then closes it.
pub async fn handle<S>(mut stream: S, addr: SocketAddr, mut req: Request, hub: &mpsc::Sender<HubMsg>, polls: &Polls, entry: &mut Entry)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let origin = req.origin.clone();
    if let Some(o) = &origin {
        if !polls.allowed_origins.is_empty() && !polls.allowed_origins.iter().any(|a| a == o) {
            register::stats::inc(&polls.limits.stats.limited);
            info!(%addr, origin = %o, "long poll from an origin that is not allowed: 403");
            return reply(stream, "403 Forbidden", origin.as_deref(), &json!({"error": "origin not allowed"})).await;
        }
    }
    if req.content_length > polls.max_body {
        info!(%addr, length = req.content_length, "poll send body over {} bytes: 413", polls.max_body);
        return reply(stream, "413 Payload Too Large", origin.as_deref(), &json!({"error": "body too large"})).await;
    }
    // The rest of the body, bounded in size and time like a handshake.
    let read = async {
        while req.body.len() < req.content_length {
            if stream.read_buf(&mut req.body).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
        }
        Ok(())
    };
    match tokio::time::timeout(polls.read_timeout, read).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return debug!(%addr, "poll request body not read: {e}"),
        Err(_) => return info!(%addr, "poll request body not sent within {:?}, closing", polls.read_timeout),
    }
    req.body.truncate(req.content_length);
    // From here the request only waits: it no longer counts as a handshake in progress.
    entry.handshake_done();
    let (status, body) = match (req.method.as_str(), req.path.as_str()) {
        ("OPTIONS", _) => ("204 No Content", None),
        ("POST", "/poll") => open(addr, hub, polls).await,
        ("GET", "/poll") => poll(&req, polls).await,
        ("POST", "/poll/send") => send(&req, polls).await,
        ("POST", "/poll/close") => match req.param("sid").and_then(|s| polls.lookup(s)) {
            Some(tx) if tx.send(Cmd::Close).await.is_ok() => ("200 OK", Some(json!({"closed": true}))),
            _ => unknown_session(),
        },
        _ => ("404 Not Found", Some(json!({"error": "no such poll endpoint"}))),
    };
    match body {
        Some(b) => reply(stream, status, origin.as_deref(), &b).await,
        None => {
            let head = format!("HTTP/1.1 {status}\r\n{}content-length: 0\r\nconnection: close\r\n\r\n", cors(origin.as_deref()));
            let _ = stream.write_all(head.as_bytes()).await;
        }
    }
}

type Response = (&'static str, Option<serde_json::Value>);

fn unknown_session() -> Response {
    ("404 Not Found", Some(json!({"error": "unknown session"})))
}

async fn open(addr: SocketAddr, hub: &mpsc::Sender<HubMsg>, polls: &Polls) -> Response {
    let client = match admit(hub, addr, polls.queue, polls.limits.clone()).await {
        Admit::Yes(client) => client,
        Admit::NoWorker(_) => {
            info!(%addr, "no business worker available: poll session refused (503)");
            return ("503 Service Unavailable", Some(json!({"error": "no business worker available", "code": 1013})));
        }
        Admit::TooManyFromIp => return ("429 Too Many Requests", Some(json!({"error": "too many connections"}))),
        Admit::Gone => return ("503 Service Unavailable", Some(json!({"error": "gateway stopping"}))),
    };
    let mut raw = [0u8; 16];
    if getrandom::fill(&mut raw).is_err() {
        warn!("no randomness for a poll session id");
        client.gone();
        return ("500 Internal Server Error", Some(json!({"error": "internal error"})));
    }
    let sid = hex::encode(raw);
    let (tx, rx) = mpsc::channel(16);
    polls.insert(sid.clone(), tx);
    debug!(conn = client.conn, %addr, "long-poll session opened");
    tokio::spawn(session(sid.clone(), client, rx, polls.clone()));
    ("200 OK", Some(json!({"sid": sid})))
}

async fn poll(req: &Request, polls: &Polls) -> Response {
    let ack = match req.number("ack") {
        Ok(a) => a,
        Err(e) => return ("400 Bad Request", Some(json!({"error": e}))),
    };
    let Some(tx) = req.param("sid").and_then(|s| polls.lookup(s)) else { return unknown_session() };
    let (reply, answer) = oneshot::channel();
    if tx.send(Cmd::Poll { ack, reply }).await.is_err() {
        return unknown_session();
    }
    let Ok(a) = answer.await else { return unknown_session() };
    let messages: Vec<_> = a.messages.iter().map(|(seq, data)| json!({"seq": seq, "data": String::from_utf8_lossy(data)})).collect();
    let closed = a.closed.map(|(code, reason)| json!({"code": code, "reason": reason}));
    ("200 OK", Some(json!({"messages": messages, "closed": closed})))
}

async fn send(req: &Request, polls: &Polls) -> Response {
    let first = match req.number("seq") {
        Ok(a) => a,
        Err(e) => return ("400 Bad Request", Some(json!({"error": e}))),
    };
    let Some(tx) = req.param("sid").and_then(|s| polls.lookup(s)) else { return unknown_session() };
    let body = req.body.clone().freeze();
    let lines: Vec<Bytes> =
        body.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).filter(|l| !l.is_empty()).map(|l| body.slice_ref(l)).collect();
    let (reply, answer) = oneshot::channel();
    if tx.send(Cmd::Send { first, lines, reply }).await.is_err() {
        return unknown_session();
    }
    match answer.await {
        Ok((received, closed)) => {
            let closed = closed.map(|(code, reason)| json!({"code": code, "reason": reason}));
            ("200 OK", Some(json!({"received": received, "closed": closed})))
        }
        Err(_) => unknown_session(),
    }
}

/// Allows the page's own origin (already checked against `allowed_origins`): the widget runs
/// on the company's site and polls the gateway's.
fn cors(origin: Option<&str>) -> String {
    match origin {
        Some(o) if !o.contains(['\r', '\n']) => format!("access-control-allow-origin: {o}\r\nvary: origin\r\n"),
        _ => "access-control-allow-origin: *\r\n".to_string(),
    }
}

async fn reply<S: AsyncWrite + Unpin>(mut stream: S, status: &str, origin: Option<&str>, body: &serde_json::Value) {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\n\
         x-content-type-options: nosniff\r\n{}connection: close\r\n\r\n",
        body.len(),
        cors(origin)
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The next message queued for a session's client (`None`: its queue is over). Never
/// resolves once the client is let go.
async fn queued(client: &Option<Client>) -> Option<Out> {
    match client {
        Some(c) => c.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The session actor: takes the hub's messages into its buffer and answers polls and sends.
async fn session(sid: String, client: Client, mut cmds: mpsc::Receiver<Cmd>, polls: Polls) {
    let (conn, addr) = (client.conn, client.addr);
    let mut client = Some(client);
    let mut buffer: VecDeque<(u64, Bytes)> = VecDeque::new();
    let mut next_seq = 1u64;
    let mut received = 0u64;
    let mut waiter: Option<(oneshot::Sender<Answer>, Instant)> = None;
    let mut closed: Option<(u16, String)> = None;
    let mut idle_at = Instant::now() + polls.idle;
    loop {
        if closed.is_some() {
            if let Some(c) = client.take() {
                // ON_CLOSE goes to the worker now; the session stays only to tell the page.
                c.gone();
                idle_at = idle_at.min(Instant::now() + Duration::from_secs(10));
            }
        }
        if !buffer.is_empty() || closed.is_some() {
            if let Some((w, _)) = waiter.take() {
                let answer = Answer { messages: buffer.iter().cloned().collect(), closed: closed.clone() };
                let _ = w.send(answer);
                if closed.is_some() {
                    break;
                }
            }
        }
        let wait_until = waiter.as_ref().map(|(_, t)| *t);
        tokio::select! {
            m = queued(&client), if closed.is_none() => {
                let mut next = m;
                loop {
                    match next {
                        Some(Out::Send(msg)) => {
                            if let Some(data) = text_of(&msg) {
                                buffer.push_back((next_seq, data));
                                next_seq += 1;
                            }
                        }
                        Some(Out::Kick(msg)) => {
                            if let Some(data) = msg.as_ref().and_then(text_of) {
                                buffer.push_back((next_seq, data));
                                next_seq += 1;
                            }
                            closed = Some((1000, String::new()));
                        }
                        Some(Out::Close(f)) => closed = Some((f.code.into(), f.reason.to_string())),
                        None => closed = Some((1006, String::new())),
                    }
                    if closed.is_some() {
                        break;
                    }
                    match client.as_mut().and_then(|c| c.rx.try_recv()) {
                        Some(m) => next = Some(m),
                        None => break,
                    }
                }
                if buffer.len() > polls.queue && closed.is_none() {
                    warn!(conn, %addr, "slow long-poll client: {} messages unacknowledged, closing it", buffer.len());
                    closed = Some((1008, "slow reader".into()));
                }
            }
            c = cmds.recv() => match c {
                None => break,
                Some(Cmd::Poll { ack, reply }) => {
                    idle_at = idle_at.max(Instant::now() + polls.idle);
                    while buffer.front().is_some_and(|(seq, _)| *seq <= ack) {
                        buffer.pop_front();
                    }
                    // A newer poll replaces one still waiting (a retry): the old one gets nothing.
                    if let Some((old, _)) = waiter.replace((reply, Instant::now() + polls.wait)) {
                        let _ = old.send(Answer::default());
                    }
                }
                Some(Cmd::Send { first, lines, reply }) => {
                    idle_at = idle_at.max(Instant::now() + polls.idle);
                    for (i, line) in lines.into_iter().enumerate() {
                        let n = first + i as u64;
                        if n < received {
                            continue; // a retried send: already delivered
                        }
                        let Some(c) = client.as_mut() else { break };
                        match c.deliver(line).await {
                            Ok(()) => received = n + 1,
                            Err(stop) => {
                                closed = Some(stop.close().map(|(c, r)| (c, r.to_string())).unwrap_or((1006, String::new())));
                                break;
                            }
                        }
                    }
                    let _ = reply.send((received, closed.clone()));
                }
                Some(Cmd::Close) => {
                    debug!(conn, %addr, "long-poll session closed by the page");
                    closed = Some((1000, String::new()));
                }
            },
            _ = async { tokio::time::sleep_until(wait_until.unwrap_or_else(Instant::now)).await }, if wait_until.is_some() => {
                if let Some((w, _)) = waiter.take() {
                    let _ = w.send(Answer::default());
                }
            }
            _ = tokio::time::sleep_until(idle_at), if waiter.is_none() => {
                if closed.is_none() {
                    info!(conn, %addr, "long-poll session not polled for {:?}: closing it", polls.idle);
                }
                break;
            }
        }
    }
    polls.remove(&sid);
    if let Some(c) = client {
        c.gone();
    }
}

fn text_of(m: &Message) -> Option<Bytes> {
    super::client::payload(m).map_err(|why| warn!("message not sent: {why}")).ok()
}
