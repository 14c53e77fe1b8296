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

/// Host 1: a register and gateway a; host 2: gateway b (and a second register when asked);
/// host 3: two chat workers; host 4: the store (Redis, or PostgreSQL); hosts 5 and 6: the load generator or
/// gateways started later. Fixed ports: each host has its own stack.
struct Deployment {
    _store: StoreOnHost,
    registers: Vec<Proc>,
    /// Every register's address, comma-separated, as `--register` takes them.
    reg: String,
    a: Proc,
    _b: Proc,
    workers: Vec<Proc>,
    config: std::path::PathBuf,
    _dir: TempDir,
    /// Last: dropped after every process in it.
    hosts: Hosts,
}

/// Which store the deployment's host 4 runs.
#[derive(Clone, Copy, PartialEq)]
enum Store {
    Redis,
    Postgres,
}

/// The store's server on host 4, stopped when dropped.
enum StoreOnHost {
    Redis(#[allow(dead_code)] Background),
    Postgres(#[allow(dead_code)] common::hosts::PgOnHost),
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
    async fn start(set: u8, registers: usize) -> Deployment {
        Deployment::on(Hosts::up(set, 6), set, registers).await
    }

    /// The same deployment on `hosts` (six of them, set `set`).
    async fn on(hosts: Hosts, set: u8, registers: usize) -> Deployment {
        Deployment::with_store(hosts, set, registers, Store::Redis).await
    }

    async fn with_store(hosts: Hosts, set: u8, registers: usize, store: Store) -> Deployment {
        let dir = TempDir(std::env::temp_dir().join(format!("sb-hosts-{set}-{}", std::process::id())));
        std::fs::create_dir_all(&dir.0).expect("dir");
        let (server, store_toml) = match store {
            Store::Redis => (
                StoreOnHost::Redis(Background(
                    std::process::Command::new("ip")
                        .args(["netns", "exec", &hosts.netns(4), "redis-server", "--bind", &hosts.ip(4), "--port", "6379"])
                        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                        .stdout(std::process::Stdio::null())
                        .spawn()
                        .expect("redis-server"),
                )),
                format!("store = \"redis://{}:6379\"\nredis_prefix = \"hosts{set}:\"\n", hosts.ip(4)),
            ),
            Store::Postgres => {
                let pg = hosts.postgres(4);
                let toml = format!("store = \"{}\"\n", pg.url);
                (StoreOnHost::Postgres(pg), toml)
            }
        };
        let reg = (1..=registers).map(|i| format!("{}:1236", hosts.ip(i))).collect::<Vec<_>>().join(",");
        let register_count = registers;
        let registers = (1..=registers).map(|i| start_register_on(&hosts, set, i)).collect();
        let (a, b) = (start_gateway_on(&hosts, set, 1, &reg), start_gateway_on(&hosts, set, 2, &reg));
        let config = dir.0.join("switchboard.toml");
        std::fs::write(&config, format!("[events]\n{store_toml}")).expect("config");
        let mut d = Deployment { hosts, _store: server, registers, reg, a, _b: b, workers: Vec::new(), config, _dir: dir };
        d.workers = (1..=2).map(|i| d.start_worker(&format!("chat{i}"))).collect();
        wait_log(&d.a, "business worker connected", 2).await;
        wait_log(&d._b, "business worker connected", 2).await;
        // Up once each gateway is registered with every register: one that was still starting
        // is retried a second later, and a test that takes a register away counts on the
        // gateways having been registered with it (CI once killed register 1 before gateway a
        // had reached it, and then waited for a re-registration that was its first).
        wait_log(&d.a, "registering gateway", register_count).await;
        wait_log(&d._b, "registering gateway", register_count).await;
        d
    }

    fn start_worker(&self, name: &str) -> Proc {
        self.start_worker_on(3, name)
    }

    fn start_worker_on(&self, host: usize, name: &str) -> Proc {
        let args = ["--config", self.config.to_str().expect("path"), "business", "--register", &self.reg, "--name", name];
        self.hosts.start(host, &format!("{}-{name}", self.hosts.netns(host)), &args, &[("SWITCHBOARD_AGENT_SECRET", SECRET)])
    }

    /// The bench's room load (100 agents in rooms of 10, 4 messages/s each) from host `i`
    /// against `url`, for `secs` seconds and 3 more to drain; see `loses_nothing`. `url` may
    /// list several gateways, comma-separated: the connections are spread over them.
    fn load(&self, i: usize, url: &str, secs: u32) -> Proc {
        self.load_draining(i, url, secs, 3)
    }

    /// `load`, its run ending only after `drain` seconds in which nothing arrived: over a lossy
    /// link a retransmission can take seconds, and a late delivery is not a lost one.
    fn load_draining(&self, i: usize, url: &str, secs: u32, drain: u32) -> Proc {
        let name = format!("{}-bench", self.hosts.netns(i));
        let args = ["bench", "--url", url, "--workload", "room", "--connections", "100", "--room-size", "10", "--rate", "4"];
        let secs = secs.to_string();
        let drain = drain.to_string();
        let args: Vec<&str> = args.into_iter().chain(["--duration", &secs, "--drain", &drain, "--json"]).collect();
        self.hosts.start(i, &name, &args, &[("SWITCHBOARD_AGENT_SECRET", SECRET)])
    }

    fn ws(&self, i: usize) -> String {
        format!("ws://{}:7272", self.hosts.ip(i))
    }
}

fn start_register_on(hosts: &Hosts, set: u8, i: usize) -> Proc {
    hosts.start(i, &format!("h{set}-register-{i}"), &["register", "--listen", &format!("{}:1236", hosts.ip(i))], &[])
}

/// A gateway on host `i`, its clients at `ws://<host i>:7272`.
fn start_gateway_on(hosts: &Hosts, set: u8, i: usize, reg: &str) -> Proc {
    let (ip, listen) = (hosts.ip(i), format!("{}:7272", hosts.ip(i)));
    let args = ["gateway", "--register", reg, "--listen", &listen, "--lan-ip", &ip, "--inner-port", "2300"];
    hosts.start(i, &format!("h{set}-gateway-{i}"), &args, &[])
}

/// Waits for a load generator (`Deployment::load`) and checks its own count: nothing lost,
/// duplicated or misdelivered, and something delivered.
fn loses_nothing(mut load: Proc) -> Value {
    assert_eq!(load.wait_exit(Duration::from_secs(60)), Some(0), "the load generator ran: {}", load.log_text());
    let out = std::fs::read_to_string(&load.log).unwrap_or_default();
    let report: Value = out.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or_else(|| panic!("no JSON report in {out}"));
    for k in ["lost", "duplicated", "misdelivered", "connect_failures", "setup_failures"] {
        assert_eq!(report[k], 0, "load generator {k}: {report}");
    }
    assert!(report["deliveries_received"].as_u64().unwrap_or(0) > 0, "{report}");
    report
}

/// A visitor on `visitor_url`'s gateway and its agent on `agent_url`'s: the visitor says
/// `there`, the agent hears it and answers `back`, which the visitor hears. Returns both and the
/// conversation.
async fn visitor_and_agent_talk(visitor_url: &str, agent_url: &str, there: &str, back: &str) -> (Client, Client, String) {
    let (mut agent, _) = agent_with(agent_url, SECRET, "5", "a1", "Ana").await;
    let mut visitor = Client::chat(visitor_url).await;
    let login = visitor.request(json!({"method": "visitor_login", "bid": "5"}), "visitor_login").await;
    let conv = login["conversation_id"].as_str().expect("conversation").to_string();
    let r = visitor.request(json!({"method": "say", "content": there, "cid": "v1"}), "say_ack").await;
    assert!(r.get("code").is_none(), "{r}");
    agent.next_where(|m| m["method"] == "say" && m["content"] == there).await;
    let r = agent.request(json!({"method": "say", "conversation_id": conv, "content": back, "cid": "a1"}), "say_ack").await;
    assert!(r.get("code").is_none(), "{r}");
    visitor.next_where(|m| m["method"] == "say" && m["content"] == back).await;
    (visitor, agent, conv)
}

/// `from` says `content` in room `r`; `to` must hear it within a second.
async fn heard_within_a_second(from: &mut Client, to: &mut Client, content: &str) {
    let sent = std::time::Instant::now();
    from.send_json(json!({"method": "say", "room": "r", "content": content, "cid": content})).await;
    to.next_where(|m| m["method"] == "say" && m["room"] == "r" && m["content"] == content).await;
    assert!(sent.elapsed() < Duration::from_secs(1), "{content:?} took {:?}", sent.elapsed());
}

/// Waits until a gateway (healed, restarted) serves chat again: an agent's login is answered.
async fn until_it_serves(url: &str) {
    eventually(&format!("{url} serves chat"), || {
        let url = url.to_string();
        async move {
            let mut c = Client::chat(&url).await;
            let token = mint_token(SECRET, "5", "probe");
            let r = c.request(json!({"method": "login", "bid": "5", "customer_id": "probe", "customer_name": "P", "token": token}), "login").await;
            r.get("code").is_none()
        }
    })
    .await;
}

async fn in_room(url: &str, id: &str) -> Client {
    let (mut c, _) = agent_with(url, SECRET, "5", id, id).await;
    c.request(json!({"method": "join", "room": "r"}), "join").await;
    c
}

/// Chat across hosts, both ways: a visitor on one host's gateway and its agent on another's, a
/// room whose members are split over both, private messages between agents; every message
/// arrives exactly once while the load generator, on a fifth host, runs a room load of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_across_hosts_loses_nothing() {
    let _alone = common::hosts::one_at_a_time().await;
    let d = Deployment::start(175, 1).await;
    let (ws_a, ws_b) = (d.ws(1), d.ws(2));

    // The load generator on host 5, against gateway b, for the whole of the test.
    let load = d.load(5, &ws_b, 6);

    // A visitor on host 1's gateway, its agent on host 2's.
    let (_visitor, mut agent, _) = visitor_and_agent_talk(&ws_a, &ws_b, "hello from a", "hello from b").await;

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
    loses_nothing(load);
}

/// A gateway host cut off the network stalls nobody else: workers started while it is
/// unreachable (as after a `reload`, or on a new server) still find it in the register and try
/// to reach it — a connection into a black hole — while the clients of the reachable gateway
/// chat on, every message within a second. Healed, the host serves again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_gateway_host_stalls_nobody_else() {
    let _alone = common::hosts::one_at_a_time().await;
    let mut d = Deployment::start(176, 1).await;
    let ws_a = d.ws(1);
    let (mut a1, mut a2) = (in_room(&ws_a, "a1").await, in_room(&ws_a, "a2").await);

    d.hosts.cut(2);
    // New workers, which learn of both gateways from the register and cannot reach b.
    for w in d.workers.iter_mut() {
        w.kill();
    }
    d.workers = (1..=2).map(|i| d.start_worker(&format!("new{i}"))).collect();
    wait_log(&d.a, "business worker connected", 4).await;

    // Sessions survive on gateway a; the new workers serve them while b is a black hole.
    for k in 0..20 {
        heard_within_a_second(&mut a1, &mut a2, &format!("k{k}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Healed: b serves again, without a restart, and its clients meet a's.
    d.hosts.heal(2);
    let ws_b = d.ws(2);
    until_it_serves(&ws_b).await;
    let mut b1 = in_room(&ws_b, "b1").await;
    heard_within_a_second(&mut b1, &mut a2, "back").await;
}

/// Two registers on two hosts: killing one, or cutting the other off, leaves traffic as it was,
/// and a gateway started afterwards is found by every worker through the one that is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_of_two_registers_can_go() {
    let _alone = common::hosts::one_at_a_time().await;
    let mut d = Deployment::start(177, 2).await;
    let ws_a = d.ws(1);
    let (mut a1, mut a2) = (in_room(&ws_a, "a1").await, in_room(&ws_a, "a2").await);
    heard_within_a_second(&mut a1, &mut a2, "before").await;

    // Register 1 dies: chat goes on; a gateway started now on host 5 is found through register 2.
    d.registers[0].kill();
    heard_within_a_second(&mut a1, &mut a2, "register 1 dead").await;
    let e = start_gateway_on(&d.hosts, 177, 5, &d.reg);
    wait_log(&e, "business worker connected", 2).await;
    let mut e1 = in_room(&d.ws(5), "e1").await;
    heard_within_a_second(&mut e1, &mut a2, "from e, via register 2").await;

    // Register 1 comes back, and register 2's host (with gateway b) is cut off: chat between a
    // and e goes on, and a gateway started on host 6 is found through register 1.
    d.registers[0] = start_register_on(&d.hosts, 177, 1);
    wait_log(&d.a, "registering gateway", 3).await;
    d.hosts.cut(2);
    heard_within_a_second(&mut a1, &mut e1, "register 2 cut off").await;
    let f = start_gateway_on(&d.hosts, 177, 6, &d.reg);
    wait_log(&f, "business worker connected", 2).await;
    // Logging in asks every gateway who is there: b, cut off, is given up on within a second
    // of the others' answers (PHP's worker waited out its timeouts, 10 s and more).
    let started = std::time::Instant::now();
    let mut f1 = in_room(&d.ws(6), "f1").await;
    assert!(started.elapsed() < Duration::from_secs(3), "a login took {:?} with a gateway cut off", started.elapsed());
    heard_within_a_second(&mut f1, &mut e1, "from f, via register 1").await;
    heard_within_a_second(&mut a1, &mut f1, "and back").await;
}

/// A worker host cut off: the gateway stops routing to its workers within a bounded time (an
/// inner link whose data goes unacknowledged for 15 s is closed, `register::keepalive`) and
/// their clients' events go to the workers of another host. A message sent into the black hole
/// was never acknowledged; its resend with the same `cid` is stored and delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_worker_host_hands_its_clients_to_another() {
    let _alone = common::hosts::one_at_a_time().await;
    let d = Deployment::start(178, 1).await;
    let _more: Vec<Proc> = (1..=2).map(|i| d.start_worker_on(5, &format!("five{i}"))).collect();
    wait_log(&d.a, "business worker connected", 4).await;
    let ws_a = d.ws(1);
    let mut listener = in_room(&ws_a, "listener").await;
    let mut senders = Vec::new();
    for i in 0..8 {
        senders.push(in_room(&ws_a, &format!("s{i}")).await);
    }

    d.hosts.cut(3);
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    for (i, c) in senders.iter_mut().enumerate() {
        // As the client library does: resend what was not acknowledged, with the same cid.
        let say = json!({"method": "say", "room": "r", "content": format!("x{i}"), "cid": format!("x{i}")});
        loop {
            c.send_json(say.clone()).await;
            if c.next_within(Duration::from_secs(2), |m| m["method"] == "say_ack").await.is_some() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(45), "sender {i}: not acknowledged 45 s after the cut");
        }
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("every sender acknowledged {slowest:?} after the worker host was cut");
    let mut heard: HashMap<String, usize> = HashMap::new();
    while heard.len() < senders.len() {
        let m = listener.next_where(|m| m["method"] == "say" && m["room"] == "r").await;
        *heard.entry(m["content"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    listener.expect_none(Duration::from_millis(500), |m| m["method"] == "say").await;
    assert!(heard.values().all(|n| *n == 1), "a message was delivered twice: {heard:?}");
}

/// A gateway host cut off, its clients the client library in a browser: each notices the silence
/// (its heartbeat goes unanswered), reconnects to the other host's gateway and catches up, so it
/// shows every acknowledged message of the room once and in order; its own unacknowledged ones
/// are resent and acknowledged. The other gateway's clients notice nothing: their latency stays
/// within twice what it was. Healed, the host serves again without a restart, delivering once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_gateway_host_s_clients_move_over_and_catch_up() {
    let _alone = common::hosts::one_at_a_time().await;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let d = Deployment::start(179, 1).await;
    let (ws_a, ws_b) = (d.ws(1), d.ws(2));
    let (e2e, chromium) = (common::browser::e2e_dir(), common::browser::chromium());
    let mut watcher = in_room(&ws_a, "watcher").await;
    let (mut p, mut q) = (in_room(&ws_a, "p").await, in_room(&ws_a, "q").await);

    // Four agents in Chromium, on gateway b first, with a as the other choice.
    let agents: Vec<Value> = (1..=4).map(|i| json!({"id": format!("b{i}"), "token": mint_token(SECRET, "5", &format!("b{i}"))})).collect();
    let mut node = tokio::process::Command::new("node")
        .arg(e2e.join("failover.mjs"))
        .arg(format!("http://{}:7272/switchboard-client.js", d.hosts.ip(1)))
        .arg(json!([ws_b, ws_a]).to_string())
        .arg(Value::from(agents).to_string())
        .env("CHROMIUM", &chromium)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut to_page = node.stdin.take().expect("stdin");
    let mut from_page = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let mut next_line = async |what: &str| -> String {
        let line = tokio::time::timeout(Duration::from_secs(60), from_page.next_line()).await;
        match line {
            Ok(Ok(Some(line))) => line,
            other => panic!("the page never said {what}: {other:?}"),
        }
    };
    assert_eq!(next_line("ready").await, "ready");

    // p's messages, heard by q on the same gateway: the latency a's clients see, before and
    // while b's clients fail over (every one acknowledged, so the moved agents must show it).
    let mut acked = Vec::new();
    let mut latency = async |phase: &str, n: usize, acked: &mut Vec<String>| -> Duration {
        let mut took = Vec::new();
        for k in 0..n {
            let content = format!("p-{phase}-{k}");
            let sent = std::time::Instant::now();
            p.send_json(json!({"method": "say", "room": "r", "content": content, "cid": content})).await;
            q.next_where(|m| m["method"] == "say" && m["content"] == content).await;
            took.push(sent.elapsed());
            p.next_where(|m| m["method"] == "say_ack" && m["cid"] == content).await;
            acked.push(content);
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        took.sort();
        took[(took.len() * 99).div_ceil(100) - 1]
    };
    let before = latency("before", 20, &mut acked).await;
    d.hosts.cut(2);
    let during = latency("during", 50, &mut acked).await;
    eprintln!("gateway a's clients: p99 {before:?} before the cut, {during:?} while b's clients moved over");
    assert!(during <= before * 2 + Duration::from_millis(100), "a's clients noticed: p99 {before:?} -> {during:?}");

    // Healed, b serves again; the agents, on a now, stop saying and everything is acknowledged.
    d.hosts.heal(2);
    until_it_serves(&ws_b).await;
    let mut newcomer = in_room(&ws_b, "newcomer").await;
    let last = "p-after-heal";
    p.send_json(json!({"method": "say", "room": "r", "content": last, "cid": last})).await;
    p.next_where(|m| m["method"] == "say_ack" && m["cid"] == last).await;
    acked.push(last.to_string());
    newcomer.next_where(|m| m["method"] == "say" && m["content"] == last).await;
    newcomer.expect_none(Duration::from_millis(500), |m| m["method"] == "say" && m["content"] == last).await;
    to_page.write_all(b"stop\n").await.expect("to the page");
    assert_eq!(next_line("quiet").await, "quiet");
    tokio::time::sleep(Duration::from_secs(1)).await;
    to_page.write_all(b"report\n").await.expect("to the page");
    let mut reports = Vec::new();
    for _ in 0..4 {
        let line = next_line("its report").await;
        reports.push(serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
    }
    for r in &reports {
        acked.extend(r["acked"].as_array().expect("acked").iter().map(|c| c.as_str().unwrap_or_default().to_string()));
    }

    // Every acknowledged message, shown once by each moved agent, in id order…
    for r in &reports {
        assert!(r["url"].as_str().unwrap_or_default().starts_with(&ws_a), "agent {} ended on a: {r}", r["id"]);
        assert!(r["opens"].as_u64().unwrap_or(0) >= 2, "agent {} reconnected: {r}", r["id"]);
        let shown = r["shown"].as_array().expect("shown");
        let mut times: HashMap<&str, usize> = HashMap::new();
        for m in shown {
            *times.entry(m["content"].as_str().unwrap_or_default()).or_default() += 1;
        }
        for c in &acked {
            assert_eq!(times.get(c.as_str()), Some(&1), "agent {} showed {c:?} other than once", r["id"]);
        }
        assert!(times.values().all(|n| *n == 1), "agent {} showed something twice", r["id"]);
        let ids: Vec<u64> = shown.iter().map(|m| m["id"].as_str().and_then(|i| i.parse().ok()).unwrap_or(0)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "agent {} showed messages out of order: {ids:?}", r["id"]);
    }
    // …and delivered once to a client that never moved.
    let mut heard: HashMap<String, usize> = HashMap::new();
    while !acked.iter().all(|c| heard.contains_key(c)) {
        let m = watcher.next_where(|m| m["method"] == "say" && m["room"] == "r").await;
        *heard.entry(m["content"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    watcher.expect_none(Duration::from_millis(500), |m| m["method"] == "say").await;
    assert!(heard.values().all(|n| *n == 1), "the watcher heard something twice");
    eprintln!("{} acknowledged messages, each shown once by the 4 agents that moved", acked.len());
    drop(to_page);
    let _ = tokio::time::timeout(Duration::from_secs(10), node.wait()).await;
}

/// `reload` on one host while the others carry load: host 5 is a box of its own
/// (`switchboard start -d`, two chat workers, the shared store) beside host 3's workers; its
/// workers are replaced while load generators on two other hosts chat through both gateways.
/// Nothing is lost, duplicated or misdelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_on_one_host_loses_nothing() {
    let _alone = common::hosts::one_at_a_time().await;
    let d = Deployment::start(180, 1).await;
    let run = d._dir.0.join("host5");
    let config = d._dir.0.join("host5.toml");
    std::fs::write(
        &config,
        format!(
            "roles = [\"business\"]\nrun_dir = \"{}\"\nregisters = [\"{}\"]\nmetrics_ip = \"{}\"\nworkers = 2\n\
             [events]\nstore = \"redis://{}:6379\"\nredis_prefix = \"hosts180:\"\n",
            run.display(),
            d.reg,
            d.hosts.ip(5),
            d.hosts.ip(4)
        ),
    )
    .expect("config");
    let on_host_5 = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(["netns", "exec", &d.hosts.netns(5), BIN, "--config", config.to_str().expect("path")])
            .args(args)
            .env("SWITCHBOARD_AGENT_SECRET", SECRET)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("switchboard")
    };
    let out = on_host_5(&["start", "-d"]);
    assert!(out.status.success(), "start -d on host 5: {}", String::from_utf8_lossy(&out.stderr));
    wait_log(&d.a, "business worker connected", 4).await;

    // One generator, its connections spread over both gateways (rooms straddle them).
    let load = d.load(6, &format!("{},{}", d.ws(1), d.ws(2)), 8);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reload = on_host_5(&["reload"]);
    let said = String::from_utf8_lossy(&reload.stdout);
    assert!(
        reload.status.success() && said.contains("2 business workers replaced"),
        "reload on host 5: {said} {}",
        String::from_utf8_lossy(&reload.stderr)
    );
    let report = loses_nothing(load);
    eprintln!("through a reload on host 5: {} deliveries, p99 {} ms", report["deliveries_received"], report["latency_ms"]["p99"]);
    let _ = on_host_5(&["stop"]);
}

/// 100 ms round trips and 1 % packet loss between every two hosts (and to the store): the chat
/// keeps working, nothing lost or duplicated. Prints the load generator's figures beside the
/// same load over the plain bridge in the same run (docs/BENCHMARKS.md, "Across hosts").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_over_slow_lossy_links_loses_nothing() {
    let _alone = common::hosts::one_at_a_time().await;
    let mut rows = Vec::new();
    for (set, delay, loss) in [(181, 0, 0.0), (182, 50, 1.0)] {
        let hosts = if delay == 0 { Hosts::up(set, 6) } else { Hosts::up_wired(set, 6, delay, loss) };
        let d = Deployment::on(hosts, set, 1).await;
        let (ws_a, ws_b) = (d.ws(1), d.ws(2));
        let load = d.load_draining(5, &ws_b, 8, 10);
        // A visitor on a, its agent on b, a round trip each way across the slow links.
        visitor_and_agent_talk(&ws_a, &ws_b, "over the slow wire", "and back").await;
        let report = loses_nothing(load);
        rows.push(format!(
            "{} ms RTT, {loss} % loss: {:.0} deliveries/s, p50 {} ms, p99 {} ms",
            2 * delay,
            report["deliveries_per_second"].as_f64().unwrap_or(0.0),
            report["latency_ms"]["p50"],
            report["latency_ms"]["p99"]
        ));
    }
    eprintln!("room load across hosts (100 agents, rooms of 10, 4 msg/s each):\n  {}", rows.join("\n  "));
}

/// The store on a host of its own is PostgreSQL: the chat across hosts, and the load
/// generator's room load, lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_across_hosts_on_postgres_loses_nothing() {
    let _alone = common::hosts::one_at_a_time().await;
    let d = Deployment::with_store(Hosts::up(188, 6), 188, 1, Store::Postgres).await;
    let (ws_a, ws_b) = (d.ws(1), d.ws(2));
    let load = d.load(5, &format!("{ws_a},{ws_b}"), 6);
    let (_visitor, mut agent, conv) = visitor_and_agent_talk(&ws_a, &ws_b, "stored on host 4", "read from host 4").await;
    let history = agent.request(json!({"method": "history", "conversation_id": conv}), "history").await;
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(2), "{history}");
    loses_nothing(load);
}
