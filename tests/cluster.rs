//! The core, end to end: a register, two gateways on different loopback addresses (standing
//! for two servers) and two business workers, each its own OS process of the built binary,
//! with real WebSocket clients on both gateways.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

struct Cluster {
    register: Proc,
    reg_addr: String,
    a: Gw,
    b: Gw,
    workers: Vec<Proc>,
}

async fn cluster(net: u8, gateway_extra: &[&str]) -> Cluster {
    let reg_ip = format!("127.{net}.0.1");
    let reg_addr = format!("{reg_ip}:{}", free_port(&reg_ip));
    let register = start_register(&format!("n{net}-register"), &reg_addr, &[]);
    wait_listening(&reg_addr).await;
    let a = start_gateway(&format!("n{net}-gateway-a"), &format!("127.{net}.0.2"), &reg_addr, gateway_extra);
    let b = start_gateway(&format!("n{net}-gateway-b"), &format!("127.{net}.0.3"), &reg_addr, gateway_extra);
    let workers = vec![start_worker(&format!("n{net}-worker-1"), &reg_addr, &[]), start_worker(&format!("n{net}-worker-2"), &reg_addr, &[])];
    wait_listening(&a.ws.replace("ws://", "")).await;
    wait_listening(&b.ws.replace("ws://", "")).await;
    wait_ready(&[&a, &b], 2).await;
    Cluster { register, reg_addr, a, b, workers }
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v.as_array().expect("list").iter().map(|x| x.as_str().unwrap_or("").to_string()).collect();
    out.sort();
    out
}

/// `get_client_count_by_group` once the commands sent before it are applied. Commands travel
/// on the worker's links and queries on pooled connections, so a query can overtake a command
/// sent just before it (in GatewayWorker too): ask again for a moment before asserting.
async fn settled_count(c: &mut Client, group: &str, want: u64) {
    for _ in 0..50 {
        if c.call("get_client_count_by_group", json!([group])).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.call("get_client_count_by_group", json!([group])).await, want, "clients in {group}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_across_two_gateways() {
    let c = cluster(11, &[]).await;
    let mut a1 = Client::connect(&format!("{}/chat?room=1", c.a.ws)).await;
    let mut a2 = Client::connect(&c.a.ws).await;
    let mut b1 = Client::connect(&c.b.ws).await;
    assert!(a1.id.starts_with("7f0b0002"), "client id encodes gateway A's LAN ip: {}", a1.id);
    assert!(b1.id.starts_with("7f0b0003"), "client id encodes gateway B's LAN ip: {}", b1.id);

    // onWebSocketConnect saw the request path and its session write-back reached the gateway.
    let me = a1.call("whoami", json!([])).await;
    assert_eq!(me["session"]["path"], "/chat");

    // bind_uid: one uid on both gateways; send_to_uid reaches every connection of it.
    a1.call("bind_uid", json!([a1.id, "alice"])).await;
    b1.call("bind_uid", json!([b1.id, "alice"])).await;
    a2.call("bind_uid", json!([a2.id, "bob"])).await;
    a2.call("send_to_uid", json!([["alice"], "hi alice"])).await;
    a1.expect_text("hi alice").await;
    b1.expect_text("hi alice").await;
    assert_eq!(sorted(&a2.call("get_client_id_by_uid", json!(["alice"])).await), sorted(&json!([a1.id, b1.id])));
    assert_eq!(a2.call("is_uid_online", json!(["alice"])).await, true);
    assert_eq!(a2.call("get_uid_by_client_id", json!([b1.id])).await, "alice");
    assert_eq!(sorted(&a2.call("get_all_uid_list", json!([])).await), vec!["alice", "bob"]);
    assert_eq!(a2.call("get_all_uid_count", json!([])).await, 2);
    let batch = a2.call("batch_get_client_id_by_uid", json!([["alice", "nobody"]])).await;
    assert_eq!(batch["alice"].as_array().map(Vec::len), Some(2));
    assert_eq!(batch["nobody"], json!([]));

    // unbind: the uid no longer reaches b1.
    b1.call("unbind_uid", json!([b1.id, "alice"])).await;
    assert_eq!(a2.call("get_client_id_by_uid", json!(["alice"])).await, json!([a1.id]));
    assert_eq!(a2.call("get_uid_by_client_id", json!([b1.id])).await, Value::Null);

    // Groups across gateways, with exclude.
    a1.call("join_group", json!([a1.id, "room1"])).await;
    a2.call("join_group", json!([a2.id, "room1"])).await;
    b1.call("join_group", json!([b1.id, "room1"])).await;
    b1.call("join_group", json!([b1.id, "1"])).await;
    b1.call("send_to_group", json!([["room1"], "to room1", [a2.id]])).await;
    a1.expect_text("to room1").await;
    b1.expect_text("to room1").await;
    a2.expect_none(Duration::from_millis(300), |v| v == "to room1").await;
    settled_count(&mut a1, "room1", 3).await;
    assert_eq!(sorted(&a1.call("get_client_id_list_by_group", json!(["room1"])).await), sorted(&json!([a1.id, a2.id, b1.id])));
    assert_eq!(a1.call("get_uid_list_by_group", json!(["room1"])).await, json!(["alice", "bob"]));
    assert_eq!(a1.call("get_uid_count_by_group", json!(["room1"])).await, 2);
    assert_eq!(sorted(&a1.call("get_all_group_id_list", json!([])).await), vec!["1", "room1"]);
    let counts = a1.call("batch_get_client_count_by_group", json!([["room1", "1", "none"]])).await;
    assert_eq!(counts, json!({"room1": 3, "1": 1, "none": 0}));
    a2.call("leave_group", json!([a2.id, "room1"])).await;
    settled_count(&mut a1, "room1", 2).await;
    a1.call("ungroup", json!(["room1"])).await;
    settled_count(&mut a1, "room1", 0).await;
    assert_eq!(a1.call("is_online", json!([b1.id])).await, true, "ungroup keeps members connected");

    // send_to_all, to a list, and with exclude.
    a1.call("send_to_all", json!(["everyone"])).await;
    for c in [&mut a1, &mut a2, &mut b1] {
        c.expect_text("everyone").await;
    }
    a1.call("send_to_clients", json!([[a2.id, b1.id], "some"])).await;
    a2.expect_text("some").await;
    b1.expect_text("some").await;
    a1.expect_none(Duration::from_millis(300), |v| v == "some").await;
    a1.call("send_to_all_except", json!([[b1.id], "not b1"])).await;
    a1.expect_text("not b1").await;
    a2.expect_text("not b1").await;
    b1.expect_none(Duration::from_millis(300), |v| v == "not b1").await;
    a1.call("send_to_client", json!([b1.id, "direct"])).await;
    b1.expect_text("direct").await;

    // Sessions: set, update (merged), read back, by group, all; local writes in a callback.
    a1.call("set_session", json!([b1.id, {"name": "bee", "n": 1}])).await;
    a1.call("update_session", json!([b1.id, {"n": 2, "extra": {"k": 1}}])).await;
    assert_eq!(a1.call("get_session", json!([b1.id])).await, json!({"name": "bee", "n": 2, "extra": {"k": 1}}));
    let me = b1.call("whoami", json!([])).await;
    assert_eq!(me["session"]["name"], "bee", "the worker sees a session changed by someone else");
    b1.call("session_put", json!(["mood", "happy"])).await;
    assert_eq!(a1.call("get_session", json!([b1.id])).await["mood"], "happy", "callback changes are written back");
    b1.call("join_group", json!([b1.id, "g2"])).await;
    let by_group = a1.call("get_client_sessions_by_group", json!(["g2"])).await;
    assert_eq!(by_group[&b1.id]["mood"], "happy");
    let all = a1.call("get_all_client_sessions", json!([])).await;
    assert!(all.get(&a1.id).is_some() && all.get(&b1.id).is_some());
    assert_eq!(a1.call("get_session", json!(["7f0b000208fc00abcdef"])).await, Value::Null);

    // Counts and lists.
    assert!(a1.call("get_all_client_count", json!([])).await.as_u64().unwrap_or(0) >= 3);
    let all_ids = a1.call("get_all_client_id_list", json!([])).await;
    for id in [&a1.id, &a2.id, &b1.id] {
        assert!(all_ids.as_array().is_some_and(|l| l.contains(&json!(id))));
    }

    // close_client sends its message then closes cleanly; destroy closes at once.
    a1.call("close_client", json!([a2.id, "bye"])).await;
    a2.expect_text("bye").await;
    assert!(a2.raw_next(WAIT).await.is_none_or(|m| m.is_close()));
    let deadline = std::time::Instant::now() + WAIT;
    while a1.call("is_online", json!([a2.id])).await != false {
        assert!(std::time::Instant::now() < deadline, "a2 never went offline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a1.call("destroy_client", json!([b1.id])).await;
    assert!(b1.raw_next(WAIT).await.is_none_or(|m| m.is_close()));
    assert_eq!(a1.call("is_online", json!([b1.id])).await, false);
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_closes_silent_clients() {
    let c = cluster(12, &["--ping-interval", "1", "--ping-not-response-limit", "1", "--ping-data", "{\"type\":\"ping\"}"]).await;
    let mut silent = Client::connect(&c.a.ws).await;
    let mut chatty = Client::connect(&c.a.ws).await;
    let silent_id = silent.id.clone();
    // The silent client gets a ping, then is closed; the chatty one stays.
    silent.next_where(|v| v["type"] == "ping").await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        chatty.send_text("beat").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(silent.raw_next(WAIT).await.is_none_or(|m| m.is_close()), "silent client closed");
    // The gateway kept the beats: the probe, which answers anything that is not JSON, saw none.
    chatty.expect_none(Duration::from_millis(300), |v| v["error"] == "not JSON").await;
    assert_eq!(chatty.call("is_online", json!([silent_id])).await, false);
    assert_eq!(chatty.call("is_online", json!([chatty.id])).await, true);
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_reach_workers_when_the_gateway_keeps_none() {
    // GatewayWorker's behaviour, for applications that want to see them.
    let c = cluster(14, &["--heartbeat-messages", "[]"]).await;
    let mut client = Client::connect(&c.a.ws).await;
    client.send_text("beat").await;
    let r = client.next_where(|v| v.get("error").is_some()).await;
    assert_eq!(r["error"], "not JSON", "the probe got the beat: {r}");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_moves_clients_and_register_restart_is_harmless() {
    let mut c = cluster(13, &[]).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(Client::connect(&c.a.ws).await);
    }
    let victim = clients[0].worker.clone();
    let idx = c.workers.iter().position(|w| victim.starts_with(&w.name)).expect("victim worker");
    c.workers[idx].kill();
    // Every client stays connected and its next messages are served by the other worker. A
    // call the gateway handed to the victim before it saw the link go is lost with the worker
    // (nothing acknowledged it): the client asks again, as a client would.
    for cl in clients.iter_mut() {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let r = cl.call_within("whoami", json!([]), Duration::from_secs(2)).await.unwrap_or_default();
            if !r["worker"].as_str().unwrap_or("").starts_with(&victim) && r.get("ok").is_some() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "client never served after the worker died");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The register goes away: traffic between running gateways and workers is unaffected.
    c.register.kill();
    let (x, rest) = clients.split_at_mut(1);
    x[0].call("bind_uid", json!([x[0].id, "u-x"])).await;
    rest[0].call("send_to_uid", json!([["u-x"], "still flowing"])).await;
    x[0].expect_text("still flowing").await;

    // It comes back; a gateway started after that is found by the worker.
    c.register = start_register("n13-register-again", &c.reg_addr, &[]);
    wait_listening(&c.reg_addr).await;
    let g3 = start_gateway("n13-gateway-c", "127.13.0.4", &c.reg_addr, &[]);
    wait_listening(&g3.ws.replace("ws://", "")).await;
    let mut late = Client::connect(&g3.ws).await;
    late.call("bind_uid", json!([late.id, "late"])).await;
    x[0].call("send_to_uid", json!([["late"], "found you"])).await;
    late.expect_text("found you").await;
    drop(c);
}
