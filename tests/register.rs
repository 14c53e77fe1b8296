//! The register as a process: its replies, its timers, and deployments with several registers.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Seconds until the register closes `s` (reading and discarding what it sends).
async fn closed_after(s: &mut BufReader<TcpStream>, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_timers_and_bad_requests() {
    let dir = std::env::temp_dir().join(format!("sb-reg-{}", std::process::id()));
    let _removed_at_the_end = TempDir(dir.clone());
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("switchboard.toml");
    std::fs::write(&config, "[register]\nauth_timeout = 1.0\npeer_timeout = 1.0\n").expect("config");
    let addr = format!("127.41.0.1:{}", free_port("127.41.0.1"));
    let _r = Proc::start("n41-register", &["--config", config.to_str().expect("path"), "register", "--listen", &addr]);
    wait_listening(&addr).await;

    // Not JSON: the PHP register's bad-request text, then a close.
    let mut s = BufReader::new(TcpStream::connect(&addr).await.expect("connect"));
    s.get_mut().write_all(b"hello\n").await.expect("write");
    let mut line = String::new();
    s.read_line(&mut line).await.expect("reply");
    assert_eq!(line, "Bad request for Register service. Request info(IP:127.0.0.1, Request Buffer:hello). See http://doc2.workerman.net/register-auth-timeout.html\n");
    assert!(closed_after(&mut s, WAIT).await.is_some());

    // Silent from the start: closed by the auth timer.
    let mut s = BufReader::new(TcpStream::connect(&addr).await.expect("connect"));
    let t = closed_after(&mut s, WAIT).await.expect("closed by the auth timer");
    assert!(t >= Duration::from_millis(900), "{t:?}");

    // A worker gets the list at once; one that pinged and then went silent is dropped...
    let mut pinger = BufReader::new(TcpStream::connect(&addr).await.expect("connect"));
    pinger.get_mut().write_all(b"{\"event\":\"worker_connect\",\"secret_key\":\"\"}\n").await.expect("write");
    let mut line = String::new();
    pinger.read_line(&mut line).await.expect("list");
    assert_eq!(line, "{\"event\":\"broadcast_addresses\",\"addresses\":[]}\n");
    pinger.get_mut().write_all(b"{\"event\":\"ping\"}\n").await.expect("ping");
    assert!(closed_after(&mut pinger, WAIT).await.is_some(), "a silent pinging peer is dropped");
    // ...while a peer that never pings (a PHP peer on 127.0.0.1) is kept.
    let mut quiet = BufReader::new(TcpStream::connect(&addr).await.expect("connect"));
    quiet.get_mut().write_all(b"{\"event\":\"worker_connect\",\"secret_key\":\"\"}\n").await.expect("write");
    let mut line = String::new();
    quiet.read_line(&mut line).await.expect("list");
    assert_eq!(closed_after(&mut quiet, Duration::from_secs(3)).await, None, "a non-pinging peer stays");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_registers_survive_losing_one() {
    let r1 = format!("127.42.0.1:{}", free_port("127.42.0.1"));
    let r2 = format!("127.42.0.5:{}", free_port("127.42.0.5"));
    let mut reg1 = start_register("n42-register-1", &r1, &[]);
    let _reg2 = start_register("n42-register-2", &r2, &[]);
    wait_listening(&r1).await;
    wait_listening(&r2).await;
    let both = format!("{r1},{r2}");
    let a = start_gateway("n42-gateway-a", "127.42.0.2", &both, &[]);
    let _w = start_worker("n42-worker", &both, &[]);
    wait_ready(&[&a], 1).await;
    reg1.kill();
    let b = start_gateway("n42-gateway-b", "127.42.0.3", &both, &[]);
    let mut cb = Client::connect(&b.ws).await;
    let mut ca = Client::connect(&a.ws).await;
    cb.call("bind_uid", json!([cb.id, "far"])).await;
    ca.call("send_to_uid", json!([["far"], "across"])).await;
    cb.expect_text("across").await;
}
