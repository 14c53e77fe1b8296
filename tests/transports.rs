//! The other ways to connect, over real sockets to a running system: text lines over TCP and
//! goim packets (over TCP and inside binary WebSocket frames) meeting WebSocket JSON clients in
//! the same rooms and private conversations. The goim client here is written from the packet
//! format itself, not from the gateway's codec.
//!
//! Each cluster: a register, gateway A (127.x.0.2: WebSocket, text and goim listeners),
//! gateway B (127.x.0.3: WebSocket only) and two chat workers sharing one SQLite store.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const SECRET: &str = "transports-agent-secret";
const MAX: usize = 64 * 1024;

struct Cluster {
    _register: Proc,
    a: Gw,
    b: Gw,
    text: String,
    goim: String,
    _workers: Vec<Proc>,
    dir: std::path::PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn cluster(net: u8) -> Cluster {
    cluster_with(net, &[]).await
}

/// The cluster, with more flags for gateway A.
async fn cluster_with(net: u8, a_extra: &[&str]) -> Cluster {
    let dir = std::env::temp_dir().join(format!("sb-transports-{net}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("switchboard.toml");
    std::fs::write(&config, format!("[events]\nstore = \"sqlite:{}\"\n", dir.join("chat.db").display())).expect("config");
    let ip = |h: u8| format!("127.{net}.0.{h}");
    let reg = format!("{}:{}", ip(1), free_port(&ip(1)));
    let register = start_register(&format!("n{net}-register"), &reg, &[]);
    wait_listening(&reg).await;
    let text = format!("{}:{}", ip(2), free_port(&ip(2)));
    let goim = format!("{}:{}", ip(2), free_port(&ip(2)));
    let max = MAX.to_string();
    let mut a_args = vec!["--text-listen", &text, "--goim-listen", &goim, "--max-message-size", &max];
    a_args.extend_from_slice(a_extra);
    let a = start_gateway(&format!("n{net}-gateway-a"), &ip(2), &reg, &a_args);
    let b = start_gateway(&format!("n{net}-gateway-b"), &ip(3), &reg, &["--max-message-size", &max]);
    let cfg = config.to_str().expect("path");
    let workers = start_chat_workers(&format!("n{net}"), cfg, &reg, SECRET, 2);
    wait_log(&a.proc, "business worker connected", 2).await;
    wait_log(&b.proc, "business worker connected", 2).await;
    Cluster { _register: register, a, b, text, goim, _workers: workers, dir }
}

fn token(bid: &str, agent: &str) -> String {
    mint_token(SECRET, bid, agent)
}

async fn ws_agent(url: &str, bid: &str, id: &str) -> Client {
    let mut c = Client::chat(url).await;
    let r = c.request(json!({"method": "login", "bid": bid, "customer_id": id, "customer_name": id, "token": token(bid, id)}), "login").await;
    assert!(r.get("code").is_none(), "login refused: {r}");
    c
}

/// Reads until the peer closes; panics if it does not within `WAIT`.
async fn expect_closed(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("{what}: the connection stayed open"),
        }
    }
}

// ---------------------------------------------------------------- text lines over TCP

struct TextClient {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
    backlog: VecDeque<Value>,
}

impl TextClient {
    async fn connect(addr: &str) -> TextClient {
        let stream = TcpStream::connect(addr).await.expect("text connect");
        let (read, write) = stream.into_split();
        TextClient { lines: BufReader::new(read).lines(), write, backlog: VecDeque::new() }
    }

    async fn send(&mut self, v: Value) {
        self.write.write_all(format!("{v}\n").as_bytes()).await.expect("text send");
    }

    async fn next_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i).expect("index");
        }
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("text client: nothing matching; backlog {:?}", self.backlog))
                .expect("read")
                .expect("connection open");
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("line is not JSON ({e}): {line}"));
            if pred(&v) {
                return v;
            }
            self.backlog.push_back(v);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_client_chats_with_a_websocket_client() {
    let c = cluster(65).await;
    let mut ws = ws_agent(&c.b.ws, "5", "a1").await;
    let mut t = TextClient::connect(&c.text).await;
    t.send(json!({"method": "login", "bid": "5", "customer_id": "t1", "customer_name": "Terminal", "token": token("5", "t1")})).await;
    let r = t.next_where(|v| v["method"] == "login").await;
    assert!(r.get("code").is_none(), "text login: {r}");
    let mut ids: Vec<&str> = r["customer_list"].as_array().expect("list").iter().filter_map(|a| a["customer_id"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["a1", "t1"], "the text agent sees the WebSocket agent: {r}");
    ws.next_where(|v| v["method"] == "login_push" && v["customer_id"] == "t1").await;

    // One room, both ways.
    ws.request(json!({"method": "join", "room": "ops"}), "join").await;
    t.send(json!({"method": "join", "room": "ops"})).await;
    t.next_where(|v| v["method"] == "join").await;
    t.send(json!({"method": "say", "room": "ops", "content": "from the terminal", "cid": "t-1"})).await;
    let m = ws.next_where(|v| v["method"] == "say" && v["room"] == "ops").await;
    assert_eq!((m["from_uid"].as_str(), m["content"].as_str()), (Some("t1"), Some("from the terminal")));
    t.next_where(|v| v["method"] == "say_ack" && v["cid"] == "t-1").await;
    ws.send_json(json!({"method": "say", "room": "ops", "content": "from the browser", "cid": "w-1"})).await;
    let m = t.next_where(|v| v["method"] == "say" && v["cid"] == "w-1").await;
    assert_eq!(m["content"], "from the browser");

    // One private conversation, both ways.
    t.send(json!({"method": "say", "to_uid": "a1", "content": "psst", "cid": "t-2"})).await;
    let m = ws.next_where(|v| v["method"] == "say" && v["cid"] == "t-2").await;
    assert_eq!((m["from_uid"].as_str(), m["to_uid"].as_str()), (Some("t1"), Some("a1")));
    ws.send_json(json!({"method": "say", "to_uid": "t1", "content": "hi back", "cid": "w-2"})).await;
    let m = t.next_where(|v| v["method"] == "say" && v["cid"] == "w-2").await;
    assert_eq!(m["content"], "hi back");

    // Bad input: a line that is not JSON gets the error frame and the connection stays.
    t.write.write_all(b"{not json\n").await.expect("send");
    let e = t.next_where(|v| v.get("code").is_some()).await;
    assert_eq!(e["code"], "10005");
    // A line over the maximum closes only that connection.
    let mut long = TcpStream::connect(&c.text).await.expect("connect");
    long.write_all(&vec![b'x'; MAX + 10]).await.expect("write");
    expect_closed(&mut long, "an over-long line").await;
    t.send(json!({"method": "say", "to_uid": "a1", "content": "still here", "cid": "t-3"})).await;
    ws.next_where(|v| v["cid"] == "t-3").await;
    wait_log(&c.a.proc, "max line length exceeded", 1).await;
}

/// Waits until gateway A (metrics at `metrics`) has `n` idle connections parked.
async fn wait_parked(metrics: &str, n: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(metrics, "clients_parked").await != n {
        assert!(tokio::time::Instant::now() < deadline, "never {n} parked: {}", metric(metrics, "clients_parked").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Idle text and goim connections are parked without a task (`--park-after`), and a parked
/// client still gets everything, answers, and its end is still noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_text_and_goim_clients_are_parked_and_still_served() {
    let metrics = format!("127.67.0.2:{}", free_port("127.67.0.2"));
    let c = cluster_with(67, &["--park-after", "0.2", "--metrics", &metrics]).await;
    let mut ws = ws_agent(&c.b.ws, "7", "a1").await;
    let mut t = TextClient::connect(&c.text).await;
    t.send(json!({"method": "login", "bid": "7", "customer_id": "t1", "customer_name": "Terminal", "token": token("7", "t1")})).await;
    t.next_where(|v| v["method"] == "login").await;
    ws.next_where(|v| v["method"] == "login_push" && v["customer_id"] == "t1").await;
    wait_parked(&metrics, 1.0).await;

    // Parked: a message for it wakes it, and it gets the message.
    ws.send_json(json!({"method": "say", "to_uid": "t1", "content": "to the sleeper", "cid": "w-1"})).await;
    let m = t.next_where(|v| v["method"] == "say" && v["cid"] == "w-1").await;
    assert_eq!(m["content"], "to the sleeper");
    wait_parked(&metrics, 1.0).await;
    // Parked: its own message wakes it, goes on, and it gets the acknowledgement.
    t.send(json!({"method": "say", "to_uid": "a1", "content": "from the sleeper", "cid": "t-1"})).await;
    ws.next_where(|v| v["method"] == "say" && v["cid"] == "t-1").await;
    t.next_where(|v| v["method"] == "say_ack" && v["cid"] == "t-1").await;

    // A goim agent parks too; a push and a heartbeat's answer still come.
    let (mut g, _) = Goim::auth(&c.goim, "g1", "7", "lobby").await;
    ws.next_where(|v| v["method"] == "login_push" && v["customer_id"] == "g1").await;
    wait_parked(&metrics, 2.0).await;
    ws.send_json(json!({"method": "say", "to_uid": "g1", "content": "to the app", "cid": "w-2"})).await;
    g.push(|v| v["method"] == "say" && v["cid"] == "w-2").await;
    wait_parked(&metrics, 2.0).await;
    assert!(g.heartbeat(30).await >= 1, "a heartbeat answered");
    wait_parked(&metrics, 2.0).await;

    // A parked client that leaves is noticed: the others hear it went.
    drop(t);
    ws.next_where(|v| v["method"] == "logout_push" && v["customer_id"] == "t1").await;
    wait_parked(&metrics, 1.0).await;
    assert_eq!(metric(&metrics, "clients").await, 1.0, "only the goim client is left on gateway A");
}

// ---------------------------------------------------------------- goim packets

/// One packet, as the format says: i32 length, i16 header length 16, i16 version, i32 op, i32 seq.
fn packet(op: i32, seq: i32, body: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(16 + body.len());
    p.extend_from_slice(&((16 + body.len()) as i32).to_be_bytes());
    p.extend_from_slice(&16i16.to_be_bytes());
    p.extend_from_slice(&1i16.to_be_bytes());
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(body);
    p
}

#[derive(Debug, Clone)]
struct Pkt {
    op: i32,
    seq: i32,
    body: Vec<u8>,
}

impl Pkt {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Cuts packets off a byte buffer (whole ones only).
fn take_packets(buf: &mut Vec<u8>) -> Vec<Pkt> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = i32::from_be_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        assert_eq!(i16::from_be_bytes(buf[4..6].try_into().expect("2 bytes")), 16, "header length");
        if buf.len() < len {
            break;
        }
        let op = i32::from_be_bytes(buf[8..12].try_into().expect("4 bytes"));
        let seq = i32::from_be_bytes(buf[12..16].try_into().expect("4 bytes"));
        out.push(Pkt { op, seq, body: buf[16..len].to_vec() });
        buf.drain(..len);
    }
    out
}

struct Goim {
    stream: TcpStream,
    buf: Vec<u8>,
    backlog: VecDeque<Pkt>,
}

impl Goim {
    async fn connect(addr: &str) -> Goim {
        Goim { stream: TcpStream::connect(addr).await.expect("goim connect"), buf: Vec::new(), backlog: VecDeque::new() }
    }

    async fn send(&mut self, op: i32, seq: i32, body: Value) {
        let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        self.stream.write_all(&packet(op, seq, &body)).await.expect("goim send");
    }

    async fn next_where(&mut self, pred: impl Fn(&Pkt) -> bool) -> Pkt {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i).expect("index");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            for p in take_packets(&mut self.buf) {
                self.backlog.push_back(p);
            }
            if let Some(i) = self.backlog.iter().position(&pred) {
                return self.backlog.remove(i).expect("index");
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("goim: nothing matching; backlog {:?}", self.backlog))
                .expect("read");
            assert!(n > 0, "goim: connection closed; backlog {:?}", self.backlog);
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Authenticates as agent `mid` (the token names its shop) in `room`.
    async fn auth(addr: &str, mid: &str, shop: &str, room: &str) -> (Goim, Value) {
        let mut g = Goim::connect(addr).await;
        let body = json!({"mid": mid, "room_id": room, "platform": "android", "accepts": [1000], "key": "k-1", "token": token(shop, mid)});
        g.send(7, 1, body).await;
        let r = g.next_where(|p| p.op == 8).await;
        assert_eq!(r.seq, 1, "the reply carries the request's sequence");
        let v = r.json();
        assert!(v.get("code").is_none(), "auth refused: {v}");
        (g, v)
    }

    async fn push(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        self.next_where(|p| p.op == 5 && pred(&p.json())).await.json()
    }

    async fn heartbeat(&mut self, seq: i32) -> i32 {
        self.send(2, seq, Value::Null).await;
        let p = self.next_where(|p| p.op == 3 && p.seq == seq).await;
        i32::from_be_bytes(p.body[..].try_into().expect("the heartbeat reply is an int32"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goim_clients_chat_with_websocket_clients_sync_and_ack() {
    let c = cluster(66).await;
    // A refused token gets its auth reply, then the connection closes.
    let mut bad = Goim::connect(&c.goim).await;
    bad.send(7, 3, json!({"mid": "g1", "room_id": "lobby", "token": "nope"})).await;
    let r = bad.next_where(|p| p.op == 8).await;
    assert_eq!((r.seq, r.json()["code"].as_str()), (3, Some("10004")));
    expect_closed(&mut bad.stream, "refused auth").await;

    let (mut g, auth) = Goim::auth(&c.goim, "g1", "3", "lobby").await;
    assert_eq!((auth["mid"].as_str(), auth["shop_id"].as_str(), auth["room_id"].as_str()), (Some("g1"), Some("3"), Some("lobby")));
    let mut a1 = ws_agent(&c.b.ws, "3", "a1").await;
    g.push(|v| v["method"] == "login_push" && v["customer_id"] == "a1").await;
    a1.request(json!({"method": "join", "room": "lobby"}), "join").await;
    g.push(|v| v["method"] == "join_push" && v["uid"] == "a1").await;
    assert_eq!(g.heartbeat(9).await, 2, "online in lobby: g1 on gateway A, a1 on gateway B");

    // One room, both ways.
    g.send(4, 10, json!({"method": "say", "room": "lobby", "content": "from the app", "cid": "g-1"})).await;
    let m = a1.next_where(|v| v["method"] == "say" && v["cid"] == "g-1").await;
    assert_eq!((m["from_uid"].as_str(), m["room"].as_str()), (Some("g1"), Some("lobby")));
    g.push(|v| v["method"] == "say_ack" && v["cid"] == "g-1").await;
    a1.send_json(json!({"method": "say", "room": "lobby", "content": "from the browser", "cid": "w-1"})).await;
    let m = g.push(|v| v["method"] == "say" && v["cid"] == "w-1").await;
    assert_eq!(m["content"], "from the browser");

    // One private conversation, both ways: the pair's thread.
    g.send(4, 11, json!({"method": "say", "to_uid": "a1", "content": "app to browser", "cid": "g-2"})).await;
    a1.next_where(|v| v["method"] == "say" && v["cid"] == "g-2" && v["to_uid"] == "a1").await;
    a1.send_json(json!({"method": "say", "to_uid": "g1", "content": "browser to app", "cid": "w-2"})).await;
    let last_seen = g.push(|v| v["method"] == "say" && v["cid"] == "w-2").await;
    let last_seen: i64 = last_seen["id"].as_str().expect("id").parse().expect("numeric id");

    // The app goes away; three private messages and one in the room arrive meanwhile.
    drop(g);
    let mut missed = Vec::new();
    for i in 0..3 {
        let cid = format!("w-missed-{i}");
        a1.send_json(json!({"method": "say", "to_uid": "g1", "content": format!("missed {i}"), "cid": cid})).await;
        let ack = a1.next_where(|v| v["method"] == "say_ack" && v["cid"] == cid.as_str()).await;
        missed.push(ack["id"].as_str().expect("id").to_string());
    }
    // Sync after reconnecting returns exactly the missed ones, oldest first.
    let (mut g, _) = Goim::auth(&c.goim, "g1", "3", "lobby").await;
    g.send(14, 20, json!({"with_uid": "a1", "id": last_seen})).await;
    let s = g.next_where(|p| p.op == 15).await;
    assert_eq!(s.seq, 20);
    let s = s.json();
    let got: Vec<&str> = s["messages"].as_array().expect("messages").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(got, missed, "exactly the missed messages: {s}");
    assert_eq!(s["more"], false);

    // The same user in a browser sees one unread count, which the app's ack moves.
    let mut g1_web = ws_agent(&c.b.ws, "3", "g1").await;
    let before = g1_web.request(json!({"method": "sync", "with_uid": "a1", "id": last_seen}), "sync").await;
    let unread_before = before["unread"].as_u64().expect("unread");
    assert!(unread_before >= 3, "unread before the ack: {before}");
    g.send(16, 21, json!({"with_uid": "a1", "id": missed[2]})).await;
    let ack = g.next_where(|p| p.op == 17).await;
    assert_eq!((ack.seq, ack.json()["unread"].as_u64()), (21, Some(0)), "ack reply: {:?}", ack.json());
    let after = g1_web.request(json!({"method": "sync", "with_uid": "a1", "id": missed[2]}), "sync").await;
    assert_eq!(after["unread"], 0, "the browser sees the app's ack: {after}");

    // goim inside binary WebSocket frames (path /sub) meets the TCP goim client in the room.
    let (mut sub, _) = tokio_tungstenite::connect_async(format!("{}/sub", c.b.ws)).await.expect("ws /sub");
    use futures_util::{SinkExt, StreamExt};
    let auth = json!({"mid": "a2", "room_id": "lobby", "token": token("3", "a2")}).to_string();
    sub.send(tokio_tungstenite::tungstenite::Message::Binary(packet(7, 1, auth.as_bytes()).into())).await.expect("send");
    let say = json!({"method": "say", "room": "lobby", "content": "from a ws app", "cid": "s-1"}).to_string();
    let mut reply_ops = Vec::new();
    loop {
        let frame = tokio::time::timeout(WAIT, sub.next()).await.expect("frame in time").expect("open").expect("frame");
        let tokio_tungstenite::tungstenite::Message::Binary(b) = frame else { continue };
        let mut buf = b.to_vec();
        let pkts = take_packets(&mut buf);
        assert!(buf.is_empty(), "one whole packet per frame");
        for p in pkts {
            reply_ops.push(p.op);
            if p.op == 8 {
                assert!(p.json().get("code").is_none(), "ws goim auth: {:?}", p.json());
                sub.send(tokio_tungstenite::tungstenite::Message::Binary(packet(4, 2, say.as_bytes()).into())).await.expect("send");
            }
        }
        if reply_ops.contains(&8) && reply_ops.iter().filter(|o| **o == 5).count() >= 1 {
            break;
        }
    }
    let m = g.push(|v| v["method"] == "say" && v["cid"] == "s-1").await;
    assert_eq!(m["from_uid"], "a2");

    // Malformed packets each close only their own connection.
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "short length",
            {
                let mut p = packet(2, 1, b"");
                p[0..4].copy_from_slice(&10i32.to_be_bytes());
                p
            },
            false,
        ),
        ("negative length", (-5i32).to_be_bytes().to_vec(), false),
        ("oversized length", ((MAX as i32) + 1).to_be_bytes().to_vec(), false),
        ("unknown op", packet(99, 1, b"{}"), true),
        ("body not JSON", packet(4, 1, b"hello?"), true),
        ("not auth first", packet(4, 1, br#"{"method":"say"}"#), false),
    ];
    for (what, bytes, authed_first) in cases {
        let mut victim = if authed_first { Goim::auth(&c.goim, "g9", "3", "lobby").await.0 } else { Goim::connect(&c.goim).await };
        victim.stream.write_all(&bytes).await.expect("write");
        expect_closed(&mut victim.stream, what).await;
        // g1, a1 and a2 are still in the lobby (the victim, once its close is processed, not).
        let mut online = 0;
        for seq in 30..80 {
            online = g.heartbeat(seq).await;
            if online == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(online, 3, "{what}: the others are unaffected");
    }
    a1.send_json(json!({"method": "say", "to_uid": "g1", "content": "still fine", "cid": "w-end"})).await;
    g.push(|v| v["cid"] == "w-end").await;
    wait_log(&c.a.proc, "unknown operation 99", 1).await;
}

// ---------------------------------------------------------------- HTTP long polling

struct PollClient {
    http: reqwest::Client,
    base: String,
    sid: String,
    ack: u64,
    sent: u64,
    backlog: VecDeque<Value>,
}

impl PollClient {
    async fn open(ws_url: &str) -> PollClient {
        let http = reqwest::Client::new();
        let base = format!("{}/poll", ws_url.replace("ws://", "http://"));
        let r: Value = http.post(&base).send().await.expect("open").json().await.expect("json");
        let sid = r["sid"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_string();
        PollClient { http, base, sid, ack: 0, sent: 0, backlog: VecDeque::new() }
    }

    /// Sends lines numbered from `seq` (a retry passes the same number again).
    async fn send_at(&mut self, seq: u64, msgs: &[Value]) -> Value {
        let body = msgs.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
        let url = format!("{}/send?sid={}&seq={seq}", self.base, self.sid);
        let r: Value = self.http.post(url).body(body).send().await.expect("send").json().await.expect("json");
        self.sent = r["received"].as_u64().expect("received");
        r
    }

    async fn send(&mut self, v: Value) {
        let seq = self.sent;
        let r = self.send_at(seq, &[v]).await;
        assert_eq!(r["received"], seq + 1, "taken: {r}");
    }

    /// One poll acknowledging up to `ack`: `(seq, message)` pairs.
    async fn poll(&self, ack: u64) -> Vec<(u64, Value)> {
        let url = format!("{}?sid={}&ack={ack}", self.base, self.sid);
        let r: Value = self.http.get(url).send().await.expect("poll").json().await.expect("json");
        assert!(r["closed"].is_null(), "session closed: {r}");
        r["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| (m["seq"].as_u64().expect("seq"), serde_json::from_str(m["data"].as_str().expect("data")).expect("JSON")))
            .collect()
    }

    async fn next_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(i) = self.backlog.iter().position(&pred) {
                return self.backlog.remove(i).expect("index");
            }
            assert!(tokio::time::Instant::now() < deadline, "poll client: nothing matching; backlog {:?}", self.backlog);
            for (seq, v) in self.poll(self.ack).await {
                assert!(seq > self.ack, "only what was not acknowledged");
                self.ack = seq;
                self.backlog.push_back(v);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_polling_client_chats_with_a_websocket_client() {
    let c = cluster(68).await;
    let mut ws = ws_agent(&c.b.ws, "6", "a1").await;
    let mut p = PollClient::open(&c.a.ws).await;
    p.send(json!({"method": "login", "bid": "6", "customer_id": "p1", "customer_name": "Polly", "token": token("6", "p1")})).await;
    let r = p.next_where(|v| v["method"] == "login").await;
    assert!(r.get("code").is_none(), "poll login: {r}");
    ws.next_where(|v| v["method"] == "login_push" && v["customer_id"] == "p1").await;

    // One room and one private conversation, both ways.
    ws.request(json!({"method": "join", "room": "desk"}), "join").await;
    p.send(json!({"method": "join", "room": "desk"})).await;
    p.next_where(|v| v["method"] == "join").await;
    p.send(json!({"method": "say", "room": "desk", "content": "over HTTP", "cid": "p-1"})).await;
    let m = ws.next_where(|v| v["method"] == "say" && v["cid"] == "p-1").await;
    assert_eq!((m["from_uid"].as_str(), m["room"].as_str()), (Some("p1"), Some("desk")));
    ws.send_json(json!({"method": "say", "to_uid": "p1", "content": "over WebSocket", "cid": "w-1"})).await;
    let m = p.next_where(|v| v["method"] == "say" && v["cid"] == "w-1").await;
    assert_eq!(m["content"], "over WebSocket");

    // An answer lost on the way: polling again without acknowledging gets the same messages.
    ws.send_json(json!({"method": "say", "to_uid": "p1", "content": "once", "cid": "w-2"})).await;
    let mut first = Vec::new();
    for _ in 0..20 {
        first = p.poll(p.ack).await;
        if first.iter().any(|(_, v)| v["cid"] == "w-2") {
            break;
        }
    }
    assert!(first.iter().any(|(_, v)| v["cid"] == "w-2"), "the message arrived: {first:?}");
    let again = p.poll(p.ack).await;
    assert_eq!(again, first, "unacknowledged messages come again, with the same numbers");
    p.ack = first.last().expect("one").0;

    // A send retried with the same number is not delivered twice (different cids, so the chat's
    // own dedup cannot be what stops it).
    let seq = p.sent;
    let once = json!({"method": "say", "to_uid": "a1", "content": "retried", "cid": "p-2"});
    p.send_at(seq, &[once]).await;
    let r = p.send_at(seq, &[json!({"method": "say", "to_uid": "a1", "content": "retried", "cid": "p-3"})]).await;
    assert_eq!(r["received"], seq + 1, "the retry was skipped: {r}");
    ws.next_where(|v| v["cid"] == "p-2").await;
    ws.expect_none(Duration::from_millis(500), |v| v["cid"] == "p-3").await;

    // Bad requests are refused without touching the session.
    let http = reqwest::Client::new();
    let r = http.get(format!("{}?sid=nope", p.base)).send().await.expect("poll");
    assert_eq!(r.status(), 404);
    let r = http.post(format!("{}/send?sid={}", p.base, p.sid)).body(vec![b'x'; MAX + 1]).send().await.expect("send");
    assert_eq!(r.status(), 413);
    p.send(json!({"method": "say", "room": "desk", "content": "still here", "cid": "p-4"})).await;
    ws.next_where(|v| v["cid"] == "p-4").await;

    // Closing the session is a disconnect: the agent's last connection went, so logout_push.
    let r = http.post(format!("{}/close?sid={}", p.base, p.sid)).send().await.expect("close");
    assert_eq!(r.status(), 200);
    let out = ws.next_where(|v| v["method"] == "logout_push").await;
    assert_eq!(out["customer_id"], "p1");
}

/// A text client that stops reading while a burst far bigger than the socket's buffers is sent
/// to it gets all of it, in order, once it reads again (its connection goes back to its queue
/// each time the socket drains, as a WebSocket connection's does: tests/websocket.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_client_that_pauses_reading_gets_the_whole_burst_after() {
    let text = format!("127.212.0.2:{}", free_port("127.212.0.2"));
    let small = small_cluster(212, &[], &["--text-listen", &text, "--rate-limit", "0"]).await;
    let stream = TcpStream::connect(&text).await.expect("text connect");
    let mut lines = BufReader::new(stream).lines();
    let hello = tokio::time::timeout(WAIT, lines.next_line()).await.expect("hello in time").expect("read").expect("open");
    let hello: Value = serde_json::from_str(&hello).expect("hello is JSON");
    let id = hello["client_id"].as_str().expect("client_id").to_string();
    let mut sender = Client::connect(&small.gw.ws).await;
    let (n, size) = (300, 60_000);
    let body = "x".repeat(size);
    for i in 0..n {
        sender.call("send_to_client", json!([id, format!("{i}:{body}")])).await;
    }
    for i in 0..n {
        let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("in time").expect("read").expect("open");
        let prefix = format!("{i}:");
        assert!(line.starts_with(&prefix) && line.len() == size + prefix.len(), "message {i} of {n} whole and in order");
    }
}
