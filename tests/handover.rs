//! A business worker that stops hands its clients over: under steady traffic, SIGTERM to a
//! worker loses no message, handles none twice, and drops no client.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_worker_under_load_loses_nothing() {
    let reg = format!("127.61.0.1:{}", free_port("127.61.0.1"));
    let _r = start_register("n61-register", &reg, &[]);
    wait_listening(&reg).await;
    let g = start_gateway("n61-gateway", "127.61.0.2", &reg, &[]);
    let mut w1 = start_worker("n61-worker-1", &reg, &[]);
    let _w2 = start_worker("n61-worker-2", &reg, &[]);
    wait_ready(&[&g], 2).await;

    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 150;
    let mut handles = Vec::new();
    for c in 0..CLIENTS {
        let client = Client::connect(&g.ws).await;
        handles.push(tokio::spawn(async move {
            let Client { ws, id, .. } = client;
            let (mut tx, mut rx) = ws.split();
            let sender = tokio::spawn(async move {
                for n in 0..PER_CLIENT {
                    let req = json!({"call": "send_to_client", "args": [id, format!("{c}:{n}")], "tag": n});
                    tx.send(Message::Text(req.to_string().into())).await.expect("send");
                    tokio::time::sleep(Duration::from_millis(4)).await;
                }
                tx
            });
            // Every message is echoed once by the gateway and acknowledged once by a worker.
            let mut echoes: HashMap<String, usize> = HashMap::new();
            let mut acks: HashMap<u64, usize> = HashMap::new();
            while echoes.len() < PER_CLIENT || acks.len() < PER_CLIENT {
                let m = tokio::time::timeout(Duration::from_secs(20), rx.next()).await;
                let Ok(Some(Ok(Message::Text(t)))) = m else { panic!("client {c}: connection lost or stalled: {m:?}") };
                match serde_json::from_str::<Value>(&t) {
                    Ok(v) if v.get("tag").is_some() => *acks.entry(v["tag"].as_u64().expect("tag")).or_default() += 1,
                    _ => *echoes.entry(t.to_string()).or_default() += 1,
                }
            }
            let _tx = sender.await.expect("sender");
            // Anything late would be a duplicate.
            if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_millis(500), rx.next()).await {
                panic!("client {c}: unexpected extra message {t}");
            }
            (echoes, acks)
        }));
    }
    // Mid-stream: a graceful stop of worker 1, and a fresh worker taking its place.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _w3 = start_worker("n61-worker-3", &reg, &[]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    w1.signal("TERM");
    for (c, h) in handles.into_iter().enumerate() {
        let (echoes, acks) = h.await.expect("client task");
        assert!(echoes.values().all(|n| *n == 1), "client {c}: an echo arrived twice");
        assert!(acks.values().all(|n| *n == 1), "client {c}: a request was handled twice");
        assert_eq!(echoes.len(), PER_CLIENT, "client {c}: echoes lost");
    }
    assert_eq!(w1.wait_exit(Duration::from_secs(10)), Some(0), "worker 1 exits cleanly after its hand-over");
    let log = w1.log_text();
    assert!(log.contains("draining") && log.contains("business worker stopped"), "{log}");
    assert!(g.proc.log_text().contains("business worker finished draining"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_while_their_worker_finishes() {
    let reg = format!("127.62.0.1:{}", free_port("127.62.0.1"));
    let _r = start_register("n62-register", &reg, &[]);
    wait_listening(&reg).await;
    let g = start_gateway("n62-gateway", "127.62.0.2", &reg, &[]);
    let w1 = start_worker("n62-worker-1", &reg, &[]);
    let _w2 = start_worker("n62-worker-2", &reg, &[]);
    wait_ready(&[&g], 2).await;
    // A client served by worker 1.
    let mut c = loop {
        let c = Client::connect(&g.ws).await;
        if c.worker.starts_with("n62-worker-1") {
            break c;
        }
    };
    // Worker 1 is busy with a slow request when it is told to stop; the client keeps talking.
    c.send_json(json!({"call": "sleep", "args": [600], "tag": "slow"})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    w1.signal("TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 0..5 {
        c.send_json(json!({"call": "whoami", "args": [], "tag": n})).await;
    }
    // The slow request finishes on worker 1 first; then the held requests, in order, elsewhere.
    let mut order = Vec::new();
    for _ in 0..6 {
        let v = c.next_where(|v| v.get("tag").is_some()).await;
        order.push((v["tag"].clone(), v["worker"].as_str().unwrap_or("").to_string()));
    }
    assert_eq!(order[0].0, "slow");
    assert!(order[0].1.starts_with("n62-worker-1"));
    for (i, (tag, worker)) in order[1..].iter().enumerate() {
        assert_eq!(tag, &json!(i), "held requests keep their order");
        assert!(!worker.starts_with("n62-worker-1"), "held requests go to another worker");
    }
    assert!(g.proc.log_text().contains("releasing events held"));
}
