//! Several servers for real: each role on a host of its own (a network namespace with its own
//! address and network stack, `common::hosts`), the store on another, the test's clients and the
//! load generator on others still. What crosses between roles crosses a link the test can cut.

mod common;

use common::hosts::Hosts;
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const SECRET: &str = "hosts-secret";

/// Host 1: register and gateway a; host 2: gateway b; host 3: two chat workers; host 4: Redis
/// (the store) and, later, the load generator. Fixed ports: each host has its own stack.
struct Deployment {
    hosts: Hosts,
    _redis: Background,
    _register: Proc,
    _a: Proc,
    _b: Proc,
    _workers: Vec<Proc>,
    dir: TempDir,
}

/// A process other than switchboard inside a host, killed when dropped.
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Deployment {
    async fn start(set: u8) -> Deployment {
        let hosts = Hosts::up(set, 5);
        let dir = TempDir(std::env::temp_dir().join(format!("sb-hosts-{set}-{}", std::process::id())));
        std::fs::create_dir_all(&dir.0).expect("dir");
        let redis = Background(
            std::process::Command::new("ip")
                .args(["netns", "exec", &hosts.netns(4), "redis-server", "--bind", &hosts.ip(4), "--port", "6379"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server"),
        );
        let reg = format!("{}:1236", hosts.ip(1));
        let register = hosts.start(1, &format!("h{set}-register"), &["register", "--listen", &reg], &[]);
        let gateway = |i: usize, name: &str| {
            let (ip, listen) = (hosts.ip(i), format!("{}:7272", hosts.ip(i)));
            hosts.start(
                i,
                &format!("h{set}-gateway-{name}"),
                &["gateway", "--register", &reg, "--listen", &listen, "--lan-ip", &ip, "--inner-port", "2300"],
                &[],
            )
        };
        let (a, b) = (gateway(1, "a"), gateway(2, "b"));
        let config = dir.0.join("switchboard.toml");
        std::fs::write(&config, format!("[events]\nstore = \"redis://{}:6379\"\nredis_prefix = \"hosts{set}:\"\n", hosts.ip(4))).expect("config");
        let workers = (1..=2)
            .map(|i| {
                let name = format!("chat{i}");
                let args = ["--config", config.to_str().expect("path"), "business", "--register", &reg, "--name", &name];
                hosts.start(3, &format!("h{set}-chat-worker-{i}"), &args, &[("SWITCHBOARD_AGENT_SECRET", SECRET)])
            })
            .collect();
        wait_log(&a, "business worker connected", 2).await;
        wait_log(&b, "business worker connected", 2).await;
        Deployment { hosts, _redis: redis, _register: register, _a: a, _b: b, _workers: workers, dir }
    }

    fn ws(&self, i: usize) -> String {
        format!("ws://{}:7272", self.hosts.ip(i))
    }
}

/// Chat across hosts, both ways: a visitor on one host's gateway and its agent on another's, a
/// room whose members are split over both, private messages between agents; every message
/// arrives exactly once while the load generator, on a fifth host, runs a room load of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_across_hosts_loses_nothing() {
    let d = Deployment::start(175).await;
    let (ws_a, ws_b) = (d.ws(1), d.ws(2));

    // The load generator on host 5, against gateway b, for the whole of the test.
    let load = d.hosts.start(
        5,
        "h175-bench",
        &["bench", "--url", &ws_b, "--workload", "room", "--connections", "100", "--room-size", "10", "--rate", "4"]
            .into_iter()
            .chain(["--duration", "6", "--drain", "3", "--json"])
            .collect::<Vec<_>>(),
        &[("SWITCHBOARD_AGENT_SECRET", SECRET)],
    );

    // A visitor on host 1's gateway, its agent on host 2's.
    let (mut agent, _) = agent_with(&ws_b, SECRET, "5", "a1", "Ana").await;
    let mut visitor = Client::chat(&ws_a).await;
    let login = visitor.request(json!({"method": "visitor_login", "bid": "5"}), "visitor_login").await;
    let conv = login["conversation_id"].as_str().expect("conversation").to_string();
    let r = visitor.request(json!({"method": "say", "content": "hello from a", "cid": "v1"}), "say_ack").await;
    assert!(r.get("code").is_none(), "{r}");
    agent.next_where(|m| m["method"] == "say" && m["content"] == "hello from a").await;
    let r = agent.request(json!({"method": "say", "conversation_id": conv, "content": "hello from b", "cid": "a1"}), "say_ack").await;
    assert!(r.get("code").is_none(), "{r}");
    visitor.next_where(|m| m["method"] == "say" && m["content"] == "hello from b").await;

    // Private messages, both ways between the hosts.
    let (mut other, _) = agent_with(&ws_a, SECRET, "5", "a2", "Bo").await;
    agent.request(json!({"method": "say", "to_uid": "a2", "content": "psst", "cid": "p1"}), "say_ack").await;
    other.next_where(|m| m["method"] == "say" && m["content"] == "psst").await;
    other.request(json!({"method": "say", "to_uid": "a1", "content": "back", "cid": "p2"}), "say_ack").await;
    agent.next_where(|m| m["method"] == "say" && m["content"] == "back").await;

    // A room split over both gateways: each of 8 agents says 15 things; each hears all 120 once.
    let mut members = Vec::new();
    for i in 0..8 {
        let url = if i % 2 == 0 { &ws_a } else { &ws_b };
        let (mut c, _) = agent_with(url, SECRET, "5", &format!("m{i}"), &format!("M{i}")).await;
        c.request(json!({"method": "join", "room": "lobby"}), "join").await;
        members.push(c);
    }
    for k in 0..15 {
        for (i, c) in members.iter_mut().enumerate() {
            c.send_json(json!({"method": "say", "room": "lobby", "content": format!("m{i}-{k}"), "cid": format!("{k}")})).await;
        }
    }
    for (i, c) in members.iter_mut().enumerate() {
        let mut seen: HashMap<String, usize> = HashMap::new();
        while seen.len() < 120 {
            let m = c.next_where(|m| m["method"] == "say" && m["room"] == "lobby").await;
            *seen.entry(m["content"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
        c.expect_none(Duration::from_millis(300), |m| m["method"] == "say").await;
        assert!(seen.values().all(|n| *n == 1), "member {i} heard something twice: {seen:?}");
    }

    // The load generator's own count: nothing lost, duplicated or misdelivered across hosts.
    let mut load = load;
    assert_eq!(load.wait_exit(Duration::from_secs(60)), Some(0), "the load generator ran: {}", load.log_text());
    let out = std::fs::read_to_string(&load.log).unwrap_or_default();
    let report: Value = out.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or_else(|| panic!("no JSON report in {out}"));
    for k in ["lost", "duplicated", "misdelivered", "connect_failures", "setup_failures"] {
        assert_eq!(report[k], 0, "load generator {k}: {report}");
    }
    assert!(report["deliveries_received"].as_u64().unwrap_or(0) > 0, "{report}");
    drop(d.dir);
}

/// A gateway host cut off the network stalls nobody else: workers started while it is
/// unreachable (as after a `reload`, or on a new server) still find it in the register and try
/// to reach it — a connection into a black hole — while the clients of the reachable gateway
/// chat on, every message within a second. Healed, the host serves again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_gateway_host_stalls_nobody_else() {
    let mut d = Deployment::start(176).await;
    let ws_a = d.ws(1);
    let (mut a1, _) = agent_with(&ws_a, SECRET, "5", "a1", "Ana").await;
    let (mut a2, _) = agent_with(&ws_a, SECRET, "5", "a2", "Bo").await;
    for c in [&mut a1, &mut a2] {
        c.request(json!({"method": "join", "room": "r"}), "join").await;
    }

    d.hosts.cut(2);
    // New workers, which learn of both gateways from the register and cannot reach b.
    let config = d.dir.0.join("switchboard.toml");
    let reg = format!("{}:1236", d.hosts.ip(1));
    for w in d._workers.iter_mut() {
        w.kill();
    }
    d._workers = (1..=2)
        .map(|i| {
            let name = format!("chat{i}");
            let args = ["--config", config.to_str().expect("path"), "business", "--register", &reg, "--name", &name];
            d.hosts.start(3, &format!("h176-chat-worker-new-{i}"), &args, &[("SWITCHBOARD_AGENT_SECRET", SECRET)])
        })
        .collect();
    wait_log(&d._a, "business worker connected", 4).await;

    // Sessions survive on gateway a; the new workers serve them while b is a black hole.
    let mut slowest = Duration::ZERO;
    for k in 0..20 {
        let sent = std::time::Instant::now();
        a1.send_json(json!({"method": "say", "room": "r", "content": format!("k{k}"), "cid": format!("c{k}")})).await;
        let m = a2.next_where(|m| m["method"] == "say" && m["room"] == "r").await;
        assert_eq!(m["content"], format!("k{k}"));
        slowest = slowest.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(slowest < Duration::from_secs(1), "a message took {slowest:?} while gateway b was unreachable");

    // Healed: b serves again, without a restart, and its clients meet a's.
    d.hosts.heal(2);
    let ws_b = d.ws(2);
    eventually("gateway b serves chat again", || {
        let ws_b = ws_b.clone();
        async move {
            let mut c = Client::chat(&ws_b).await;
            let r = c
                .request(
                    json!({"method": "login", "bid": "5", "customer_id": "b1", "customer_name": "B", "token": mint_token(SECRET, "5", "b1")}),
                    "login",
                )
                .await;
            r.get("code").is_none()
        }
    })
    .await;
    let (mut b1, _) = agent_with(&ws_b, SECRET, "5", "b1", "B").await;
    b1.request(json!({"method": "join", "room": "r"}), "join").await;
    b1.send_json(json!({"method": "say", "room": "r", "content": "back", "cid": "back"})).await;
    a2.next_where(|m| m["method"] == "say" && m["content"] == "back").await;
}
