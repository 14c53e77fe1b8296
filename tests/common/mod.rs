//! Real processes, real sockets: helpers to start Switchboard roles from the built binary and
//! to talk to them as WebSocket clients and as raw inner-protocol peers.
#![allow(dead_code)]

pub mod browser;
pub mod cut;
pub mod fake_line;
pub mod hosts;
pub mod http_api;
pub mod raw_ws;
pub mod replica;
pub mod sqldb;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A free TCP port on `ip`, for a process the test starts to bind later.
///
/// Picked below the kernel's ephemeral range (32768 and up here), so that no connection made
/// meanwhile can be handed it, and never twice in one test process: `bind(0)` released and
/// called again can return the same port, and a test that picks three ports for one gateway
/// then saw two of its listeners collide (tests/routing.rs, once in CI). Each test uses its
/// own loopback addresses; the bind below skips a port something else holds there.
pub fn free_port(ip: &str) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Test binaries run one after another; each starts at its own place so that one's
    // lingering children are unlikely to hold the next one's first ports.
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip} between {FIRST} and {}", FIRST + SPAN);
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("logs");
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

/// A child process, killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(name: &str, args: &[&str]) -> Proc {
        Proc::start_env(name, args, &[])
    }

    pub fn start_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::start_in(None, name, args, env)
    }

    /// Starts the binary inside network namespace `netns` when given (`common::hosts`).
    pub fn start_in(netns: Option<&str>, name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let log = log_dir().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .args(args)
            .env("SWITCHBOARD_LOG", "info")
            .env_remove("SWITCHBOARD_SECRET_KEY")
            .env_remove("SWITCHBOARD_AGENT_SECRET")
            .envs(env.iter().copied())
            // What a command prints (a bench's report) lands in the log beside its logging.
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawn switchboard");
        Proc { name: name.into(), child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, the way a crash looks.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`TERM`, `USR1`, ...).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "kill -{sig} {}", self.child.id());
    }

    /// Waits for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    /// A failing test unwinds through its processes: each prints the end of its log, so the
    /// failure's report says what the processes saw (CI keeps only the test's output).
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
            eprintln!("---- {} ({}), last {} lines of its log ----\n{tail}", self.name, self.log.display(), lines.len().min(LOG_TAIL));
        }
    }
}

/// How much of each process's log a failing test prints.
const LOG_TAIL: usize = 25;

/// Waits until something accepts TCP connections at `addr`.
pub async fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listening at {addr}");
}

pub struct Gw {
    pub proc: Proc,
    pub lan_ip: String,
    pub ws: String,
    pub inner: String,
    args: Vec<String>,
}

impl Gw {
    /// A crash and a restart at the same addresses (as a supervisor does): SIGKILL, then the
    /// same command again, waiting until its client port accepts.
    pub async fn crash_and_restart(&mut self) {
        self.proc.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.proc = Proc::start(&self.proc.name.clone(), &args);
        wait_listening(self.ws.trim_start_matches("ws://")).await;
    }
}

pub fn start_register(name: &str, addr: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["register", "--listen", addr];
    args.extend_from_slice(extra);
    Proc::start(name, &args)
}

pub fn start_gateway(name: &str, lan_ip: &str, register: &str, extra: &[&str]) -> Gw {
    let ws_port = free_port(lan_ip).to_string();
    let inner_port = free_port(lan_ip).to_string();
    let listen = format!("{lan_ip}:{ws_port}");
    let mut args = vec!["gateway", "--register", register, "--listen", &listen, "--lan-ip", lan_ip, "--inner-port", &inner_port];
    args.extend_from_slice(extra);
    let proc = Proc::start(name, &args);
    let args = args.iter().map(|a| a.to_string()).collect();
    Gw { proc, lan_ip: lan_ip.into(), ws: format!("ws://{listen}"), inner: format!("{lan_ip}:{inner_port}"), args }
}

pub fn start_worker(name: &str, register: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["business", "--register", register, "--app", "probe", "--name", name];
    args.extend_from_slice(extra);
    Proc::start(name, &args)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client that keeps what it has not been asked for yet.
pub struct Client {
    pub ws: Ws,
    pub id: String,
    pub worker: String,
    backlog: VecDeque<Value>,
    next_tag: u64,
}

pub const WAIT: Duration = Duration::from_secs(10);

impl Client {
    /// Connects and waits for the probe's hello (so a worker is serving it). A gateway without
    /// a worker yet closes with 1013 "try again later"; that is retried, as a client should.
    pub async fn connect(url: &str) -> Client {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (mut ws, _) = match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await {
                Ok(Ok(ok)) => ok,
                // Not listening yet (a process still starting): retry until the deadline.
                Ok(Err(e)) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                other => panic!("{url}: cannot connect: {other:?}"),
            };
            let first = tokio::time::timeout(WAIT, ws.next()).await.expect("hello in time");
            match first {
                Some(Ok(Message::Text(t))) => {
                    let hello: Value = serde_json::from_str(&t).expect("hello is JSON");
                    assert_eq!(hello["event"], "hello", "first message is the probe's hello");
                    return Client {
                        ws,
                        id: hello["client_id"].as_str().expect("client_id").to_string(),
                        worker: hello["worker"].as_str().unwrap_or("").to_string(),
                        backlog: VecDeque::new(),
                        next_tag: 0,
                    };
                }
                Some(Ok(Message::Close(Some(f)))) if u16::from(f.code) == 1013 && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => panic!("{url}: no hello: {other:?}"),
            }
        }
    }

    /// Connects to a gateway whose workers run the chat, retrying until a worker answers
    /// (an unknown method gets an error reply from any chat worker).
    pub async fn chat(url: &str) -> Client {
        Client::chat_from(None, url).await
    }

    /// `chat` from a chosen source address (another client host on 127.0.0.0/8).
    pub async fn chat_from(source: Option<&str>, url: &str) -> Client {
        let deadline = Instant::now() + Duration::from_secs(20);
        let connect = || async {
            let Some(source) = source else { return tokio_tungstenite::connect_async(url).await.map(|(ws, _)| ws) };
            let sock = tokio::net::TcpSocket::new_v4().expect("socket");
            sock.bind(format!("{source}:0").parse().expect("source")).expect("bind source");
            let target = url.trim_start_matches("ws://").split('/').next().unwrap_or("");
            let stream = sock.connect(target.parse().expect("target")).await.map_err(tokio_tungstenite::tungstenite::Error::Io)?;
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await.map(|(ws, _)| ws)
        };
        loop {
            if let Ok(Ok(mut ws)) = tokio::time::timeout(WAIT, connect()).await {
                let probe = json!({"method": "__ready__"}).to_string();
                if ws.send(Message::Text(probe.into())).await.is_ok() {
                    if let Ok(Some(Ok(Message::Text(_)))) = tokio::time::timeout(WAIT, ws.next()).await {
                        return Client { ws, id: String::new(), worker: String::new(), backlog: VecDeque::new(), next_tag: 0 };
                    }
                }
            }
            assert!(Instant::now() < deadline, "{url}: no chat worker answered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends a JSON request.
    pub async fn send_json(&mut self, v: Value) {
        self.ws.send(Message::Text(v.to_string().into())).await.expect("send");
    }

    /// Sends a request and waits for the reply whose `method` is `reply_method`.
    pub async fn request(&mut self, v: Value, reply_method: &str) -> Value {
        self.send_json(v).await;
        let m = reply_method.to_string();
        self.next_where(move |r| r["method"] == m.as_str() || r.get("code").is_some()).await
    }

    /// The next frame (text or binary), or `None` when the connection ends.
    pub async fn raw_next(&mut self, wait: Duration) -> Option<Message> {
        loop {
            match tokio::time::timeout(wait, self.ws.next()).await {
                Err(_) => panic!("client {}: nothing received within {wait:?}", self.id),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(m))) => return Some(m),
            }
        }
    }

    /// Waits for the first message matching `pred`, keeping the others for later.
    pub async fn next_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        match self.next_within(WAIT, pred).await {
            Some(v) => v,
            None => panic!("client {}: expected message not received; backlog {:?}", self.id, self.backlog),
        }
    }

    /// `next_where`, giving up (`None`) after `wait`.
    pub async fn next_within(&mut self, wait: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(m))) => m,
                Ok(other) => panic!("client {}: connection ended: {other:?}", self.id),
            };
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                Message::Close(f) => panic!("client {}: closed: {f:?}", self.id),
                _ => continue,
            };
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            if pred(&v) {
                return Some(v);
            }
            self.backlog.push_back(v);
        }
    }

    /// Waits for a plain-text message equal to `text`.
    pub async fn expect_text(&mut self, text: &str) {
        let t = text.to_string();
        self.next_where(move |v| v == &Value::String(t.clone())).await;
    }

    /// Asserts nothing matching arrives within `wait`.
    pub async fn expect_none(&mut self, wait: Duration, pred: impl Fn(&Value) -> bool) {
        assert!(!self.backlog.iter().any(&pred), "client {}: unexpected {:?}", self.id, self.backlog);
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::String(t.to_string()));
                    assert!(!pred(&v), "client {}: unexpected {v}", self.id);
                    self.backlog.push_back(v);
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => return,
            }
        }
    }

    /// Calls a Gateway API method through the probe application and returns its result.
    pub async fn call(&mut self, method: &str, args: Value) -> Value {
        let reply = self.try_call(method, args).await;
        if let Some(e) = reply.get("error") {
            panic!("{method} failed: {e}");
        }
        reply["ok"].clone()
    }

    pub async fn try_call(&mut self, method: &str, args: Value) -> Value {
        match self.call_within(method, args, WAIT).await {
            Some(v) => v,
            None => panic!("client {}: no answer to {method} within {WAIT:?}; backlog {:?}", self.id, self.backlog),
        }
    }

    /// `try_call`, giving up (`None`) after `wait`: for a call that may be lost on the way, as
    /// one handed to a worker in the moment it is killed (nothing acknowledged it).
    pub async fn call_within(&mut self, method: &str, args: Value, wait: Duration) -> Option<Value> {
        self.next_tag += 1;
        let tag = format!("{}-{}", self.id, self.next_tag);
        let req = json!({"call": method, "args": args, "tag": tag});
        self.ws.send(Message::Text(req.to_string().into())).await.expect("send");
        self.next_within(wait, move |v| v["tag"] == tag.as_str()).await
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_string().into())).await.expect("send");
    }
}

/// Polls `f` until it returns true.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

/// The value of `switchboard_<name>` (its first sample) in the `/metrics` served at `addr`;
/// a process that does not export it fails the test.
pub async fn metric(addr: &str, name: &str) -> f64 {
    let body = reqwest::get(format!("http://{addr}/metrics")).await.expect("scrape").text().await.expect("body");
    body.lines()
        .find(|l| l.starts_with(&format!("switchboard_{name}{{")))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{addr} has no {name}:\n{body}"))
}

/// Waits until every worker serves clients on every gateway and knows all `n` gateways.
pub async fn wait_ready(gateways: &[&Gw], workers: usize) {
    for g in gateways {
        wait_listening(&g.ws.replace("ws://", "")).await;
        let mut seen = std::collections::HashSet::new();
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.len() < workers {
            assert!(Instant::now() < deadline, "workers never all reached {}", g.ws);
            // Least-connections routing spreads consecutive clients over the workers.
            let mut c = Client::connect(&g.ws).await;
            let known = c.call("gateways", json!([])).await;
            if known.as_array().map_or(0, Vec::len) >= gateways.len() {
                seen.insert(c.worker.clone());
                held.push(c);
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// A register, one gateway and one probe worker on 127.`net`.0.x, all passed `extra` flags,
/// ready to serve clients.
pub struct Small {
    pub register: Proc,
    pub reg: String,
    pub gw: Gw,
    pub worker: Proc,
}

pub async fn small_cluster(net: u8, extra: &[&str], gateway_extra: &[&str]) -> Small {
    let reg_ip = format!("127.{net}.0.1");
    let reg = format!("{reg_ip}:{}", free_port(&reg_ip));
    let register = start_register(&format!("n{net}-register"), &reg, extra);
    wait_listening(&reg).await;
    let gw = start_gateway(&format!("n{net}-gateway"), &format!("127.{net}.0.2"), &reg, &[extra, gateway_extra].concat());
    let worker = start_worker(&format!("n{net}-worker"), &reg, extra);
    wait_ready(&[&gw], 1).await;
    Small { register, reg, gw, worker }
}

/// An agent token from `switchboard token`, signed with `secret`.
pub fn mint_token(secret: &str, bid: &str, agent: &str) -> String {
    mint_token_ttl(secret, bid, agent, 86_400)
}

/// An agent token valid for `ttl` seconds.
pub fn mint_token_ttl(secret: &str, bid: &str, agent: &str, ttl: u64) -> String {
    let out = Command::new(BIN)
        .args(["token", "--bid", bid, "--agent", agent, "--ttl", &ttl.to_string()])
        .env("SWITCHBOARD_AGENT_SECRET", secret)
        .output()
        .expect("switchboard token");
    assert!(out.status.success(), "token: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8").trim().to_string()
}

/// `n` chat workers (`<prefix>-chat-worker-<i>`, named chat<i>) with this config file and agent
/// secret, registered at `register`.
pub fn start_chat_workers(prefix: &str, config: &str, register: &str, secret: &str, n: usize) -> Vec<Proc> {
    (1..=n)
        .map(|i| {
            Proc::start_env(
                &format!("{prefix}-chat-worker-{i}"),
                &["--config", config, "business", "--register", register, "--name", &format!("chat{i}")],
                &[("SWITCHBOARD_AGENT_SECRET", secret)],
            )
        })
        .collect()
}

/// Waits until `proc`'s log contains `needle` at least `n` times.
pub async fn wait_log(proc: &Proc, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while proc.log_text().matches(needle).count() < n {
        assert!(Instant::now() < deadline, "{}: never logged {needle:?} {n} times", proc.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A real HTTP upstream, started by the test: `/api/echo` answers 200 with what it received,
/// `/api/pause` 200 after 1.5 s, `/api/slow` after 10 s, anything else 500. Returns the URL
/// template and a count of answers sent.
pub async fn start_upstream(ip: &str) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                            .unwrap_or(0);
                        while buf.len() < i + 4 + len {
                            let n = s.read(&mut chunk).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        break (head, String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string());
                    }
                };
                let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                };
                let (status, reply) = if target.starts_with("/api/echo") {
                    let v = json!({"method": "echo", "target": target, "auth": header("authorization"),
                                   "uid": header("x-uid"), "bid": header("x-bid"), "client": header("x-client-id"), "body": body});
                    ("200 OK", v.to_string())
                } else if target.starts_with("/api/pause") {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    ("200 OK", "{\"method\":\"pause\",\"ok\":true}".to_string())
                } else if target.starts_with("/api/slow") {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    ("200 OK", "{}".to_string())
                } else {
                    ("500 Internal Server Error", "{\"error\":\"boom\"}".to_string())
                };
                let resp = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}", reply.len());
                if s.write_all(resp.as_bytes()).await.is_ok() {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    (format!("http://{addr}/api/{{method}}"), answered)
}

/// A directory a test runs `switchboard start` in: whatever happens to the test, the master
/// there is stopped and the directory removed when this is dropped.
pub struct StartedDir(pub PathBuf);

impl Drop for StartedDir {
    fn drop(&mut self) {
        let _ = Command::new(BIN).current_dir(&self.0).args(["stop"]).output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes its directory when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The chat as it runs on several servers, on 127.`net`.0.x: a register, two gateways (`a`
/// on .2 and `b` on .3) and two chat workers sharing one store (SQLite in `dir` unless
/// `events_toml` names one), agents' tokens signed with `secret`.
pub struct ChatSystem {
    pub register: Proc,
    pub reg: String,
    pub a: Gw,
    pub b: Gw,
    pub workers: Vec<Proc>,
    pub config: std::path::PathBuf,
    pub dir: TempDir,
    /// Where gateways `a` and `b` serve `/metrics`.
    pub metrics: [String; 2],
}

/// Both workers serve clients at once (these tests race them against each other and send
/// across them), which on SQLite means `[business] standby = false`.
pub async fn chat_system_with(net: u8, events_toml: &str, secret: &str) -> ChatSystem {
    let dir = std::env::temp_dir().join(format!("sb-chat-{net}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("switchboard.toml");
    let db = dir.join("chat.db");
    let store = if events_toml.contains("store =") { String::new() } else { format!("store = \"sqlite:{}\"\n", db.display()) };
    std::fs::write(&config, format!("[business]\nstandby = false\n[events]\n{store}{events_toml}\n")).expect("config");
    let reg_ip = format!("127.{net}.0.1");
    let reg = format!("{reg_ip}:{}", free_port(&reg_ip));
    let register = start_register(&format!("n{net}-register"), &reg, &[]);
    wait_listening(&reg).await;
    let metrics = [2, 3].map(|h| format!("127.{net}.0.{h}:{}", free_port(&format!("127.{net}.0.{h}"))));
    let a = start_gateway(&format!("n{net}-gateway-a"), &format!("127.{net}.0.2"), &reg, &["--metrics", &metrics[0]]);
    let b = start_gateway(&format!("n{net}-gateway-b"), &format!("127.{net}.0.3"), &reg, &["--metrics", &metrics[1]]);
    let cfg = config.to_str().expect("path");
    let workers = start_chat_workers(&format!("n{net}"), cfg, &reg, secret, 2);
    wait_log(&a.proc, "business worker connected", 2).await;
    wait_log(&b.proc, "business worker connected", 2).await;
    ChatSystem { register, reg, a, b, workers, config, dir: TempDir(dir), metrics }
}

/// Logs an agent in on a new connection, with a token signed by `secret`; the login answer
/// comes back beside the client.
pub async fn agent_with(url: &str, secret: &str, bid: &str, id: &str, name: &str) -> (Client, Value) {
    let mut c = Client::chat(url).await;
    let reply = c
        .request(json!({"method": "login", "bid": bid, "customer_id": id, "customer_name": name, "token": mint_token(secret, bid, id)}), "login")
        .await;
    assert!(reply.get("code").is_none(), "login refused: {reply}");
    (c, reply)
}
