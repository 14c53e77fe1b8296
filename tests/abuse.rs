//! Abuse while well-behaved clients keep chatting: a flood, slowloris handshakes, too many
//! connections from one address, a silent newcomer, a foreign Origin, random bytes on the inner
//! port, an oversized frame. (A forged worker and a client that never reads are in
//! bad_input.rs.) The good clients lose
//! nothing and stay under a latency bound (printed); the gateway's memory stays bounded.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A TCP connection from a chosen source address (another "attacker" host).
async fn connect_from(source: &str, target: &str) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(format!("{source}:0").parse().expect("source")).expect("bind source");
    sock.connect(target.parse().expect("target")).await.expect("connect")
}

async fn ws_from(source: &str, url: &str, origin: Option<&str>) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, String> {
    let stream = connect_from(source, url.trim_start_matches("ws://")).await;
    let mut req = url.into_client_request().expect("request");
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().expect("header"));
    }
    tokio_tungstenite::client_async(req, stream).await.map(|(ws, _)| ws).map_err(|e| e.to_string())
}

/// Reads until the server's close frame; its code.
async fn closed_with(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> Option<u16> {
    while let Ok(Some(m)) = tokio::time::timeout(WAIT, ws.next()).await {
        if let Ok(Message::Close(Some(f))) = m {
            return Some(u16::from(f.code));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusers_are_cut_off_and_good_clients_carry_on() {
    let dir = std::env::temp_dir().join(format!("sb-abuse-{}", std::process::id()));
    let _removed_at_the_end = TempDir(dir.clone());
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("limits.toml");
    std::fs::write(
        &cfg,
        "[gateway]\nmax_connections_per_ip = 5\nmax_pending_handshakes = 20\nhandshake_timeout = 1.0\n\
         first_message_timeout = 1.5\nrate_limit = 50.0\nrate_burst = 50.0\nallowed_origins = [\"http://good.example\"]\n",
    )
    .expect("config");
    let reg = format!("127.92.0.1:{}", free_port("127.92.0.1"));
    let _r = start_register("n92-register", &reg, &[]);
    wait_listening(&reg).await;
    let g = start_gateway("n92-gateway", "127.92.0.2", &reg, &["--config", cfg.to_str().expect("path")]);
    let _w = start_worker("n92-worker", &reg, &[]);
    wait_ready(&[&g], 1).await;
    let target = g.ws.trim_start_matches("ws://").to_string();

    // Good clients: a request every 20 ms for 3 s, each answered and echoed exactly once.
    let mut good = Vec::new();
    for _ in 0..3 {
        good.push(Client::connect(&g.ws).await);
    }
    let chatting = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        let mut latencies = Vec::new();
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_secs(3) {
            for c in good.iter_mut() {
                let t = Instant::now();
                let id = c.id.clone();
                c.call("send_to_client", json!([id, format!("echo {n}")])).await;
                c.expect_text(&format!("echo {n}")).await;
                let l = t.elapsed();
                worst = worst.max(l);
                latencies.push(l);
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        latencies.sort();
        (n, worst, latencies[latencies.len() * 99 / 100])
    });

    // A flood: closed with 1008.
    let mut flood = ws_from("127.92.0.51", &g.ws, None).await.expect("flood connects");
    for i in 0..300 {
        if flood.send(Message::Text(format!("{{\"call\":\"whoami\",\"tag\":{i}}}").into())).await.is_err() {
            break;
        }
    }
    let code = closed_with(&mut flood).await;
    assert_eq!(code, Some(1008), "the flood is closed with 1008");

    // Slowloris: half-sent request heads are dropped after the handshake timeout; beyond the
    // address's share of handshakes they are refused at once with a 429.
    let mut lorises = Vec::new();
    for _ in 0..40 {
        let mut s = connect_from("127.92.0.52", &target).await;
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
        lorises.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(4);
    for mut s in lorises {
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), s.read(&mut buf)).await;
        let refused_at_once = matches!(r, Ok(Ok(n)) if buf[..n].starts_with(b"HTTP/1.1 429"));
        assert!(refused_at_once || matches!(r, Ok(Ok(0)) | Ok(Err(_))), "a half-open handshake is closed in time: {r:?}");
    }

    // One address, too many connections: the sixth gets 429.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(ws_from("127.92.0.53", &g.ws, None).await.expect("within the limit"));
    }
    let refused = ws_from("127.92.0.53", &g.ws, None).await;
    assert!(refused.as_ref().err().is_some_and(|e| e.contains("429")), "{:?}", refused.err());

    // A newcomer that says nothing is closed with 1008; one that spoke at once is not.
    let mut silent = ws_from("127.92.0.54", &g.ws, None).await.expect("connects");
    let mut spoke = ws_from("127.92.0.54", &g.ws, None).await.expect("connects");
    spoke.send(Message::Text("{\"call\":\"whoami\",\"tag\":0}".into())).await.expect("sent");
    let code = closed_with(&mut silent).await;
    assert_eq!(code, Some(1008));
    while let Ok(m) = tokio::time::timeout(Duration::from_millis(500), spoke.next()).await {
        assert!(matches!(m, Some(Ok(Message::Text(_)))), "a client that spoke stays open past the deadline: {m:?}");
    }

    // A page from another origin cannot open a WebSocket; the allowed one can.
    let evil = ws_from("127.92.0.55", &g.ws, Some("http://evil.example")).await;
    assert!(evil.as_ref().err().is_some_and(|e| e.contains("403")), "{:?}", evil.err());
    ws_from("127.92.0.55", &g.ws, Some("http://good.example")).await.expect("allowed origin");

    // Random bytes and a forged worker on the inner port; an oversized frame on the client port.
    let mut junk = connect_from("127.92.0.56", &g.inner).await;
    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let _ = junk.write_all(&noise).await;
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(WAIT, junk.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "random bytes on the inner port: disconnected");
    let mut big = ws_from("127.92.0.57", &g.ws, None).await.expect("connects");
    let _ = big.send(Message::Text("x".repeat(2 * 1024 * 1024).into())).await;
    let code = closed_with(&mut big).await;
    assert_eq!(code, Some(1009), "an oversized frame is refused with 1009");

    let (rounds, worst, p99) = chatting.await.expect("good clients");
    println!("good clients: {rounds} rounds of 3 requests, p99 {p99:?}, worst {worst:?} while under attack");
    assert!(rounds > 20, "the good clients kept going");
    assert!(worst < Duration::from_secs(2), "latency bound: worst {worst:?}");
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{}/status", g.proc.pid()))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0);
    println!("gateway RSS after the attacks: {} KiB", rss_kb);
    assert!(rss_kb > 0 && rss_kb < 200 * 1024, "gateway memory stays bounded");
    let log = g.proc.log_text();
    for reason in
        ["message flood", "no request head within", "too many connections from this address", "no message within", "origin that is not allowed"]
    {
        assert!(log.contains(reason), "logged: {reason}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One address opening silent TCP connections (never sending a request head) gets only its
/// share of the handshake permits, refused at accept beyond it; a client from another address
/// still connects and is served while the attacker holds its connections open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_handshake_permit() {
    let dir = TempDir(std::env::temp_dir().join(format!("sb-abuse-pending-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let cfg = dir.0.join("limits.toml");
    // 40 permits in all: an eighth (5) per address by default.
    std::fs::write(&cfg, "[gateway]\nmax_pending_handshakes = 40\nhandshake_timeout = 10.0\n").expect("config");
    let cl = small_cluster(162, &[], &["--config", cfg.to_str().expect("path")]).await;
    let g = &cl.gw;
    let target = g.ws.trim_start_matches("ws://").to_string();

    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(connect_from("127.162.0.50", &target).await);
    }
    let mut held = 0;
    for s in &mut silent {
        let mut buf = [0u8; 1];
        if tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await.is_err() {
            held += 1;
        }
    }
    assert!(held <= 5, "one address holds {held} handshakes");
    for i in 0..5 {
        let mut ws = ws_from(&format!("127.162.0.{}", 60 + i), &g.ws, None).await.expect("another address gets through");
        let hello = tokio::time::timeout(WAIT, ws.next()).await.expect("served in time");
        assert!(matches!(hello, Some(Ok(Message::Text(_)))), "{hello:?}");
    }
    assert!(g.proc.log_text().contains("too many handshakes in progress from this address"), "the refusals are logged with their reason");
    drop(silent);
}
