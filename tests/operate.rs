//! Operating the system through the real binary: start -d, status, stop, restarts after a
//! crash, reload under traffic (nothing lost, nothing twice, nobody dropped), reload picking up
//! a changed config, stop -g, and the three-server example.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::StartedDir as Dir;

fn sb(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(BIN)
        .current_dir(dir)
        .env_remove("SWITCHBOARD_AGENT_SECRET")
        .env_remove("SWITCHBOARD_SECRET_KEY")
        .args(args)
        .output()
        .expect("run switchboard")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A box on 127.`net`.0.x with the given extra TOML; returns its directory and gateway URL.
fn setup(net: u8, extra: &str) -> (Dir, String) {
    setup_with(net, "", extra)
}

/// `setup` with top-level keys too (`top`: TOML wants them before the first section).
fn setup_with(net: u8, top: &str, extra: &str) -> (Dir, String) {
    let dir = std::env::temp_dir().join(format!("sb-op-{net}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let ip = format!("127.{net}.0.1");
    let (reg, ws, inner) = (free_port(&ip), free_port(&ip), free_port(&ip));
    let toml = format!(
        "{top}registers = [\"{ip}:{reg}\"]\nmetrics_ip = \"{ip}\"\n\n[register]\nlisten = \"{ip}:{reg}\"\n\n\
         [gateway]\nlisten = \"{ip}:{ws}\"\nlan_ip = \"{ip}\"\ninner_port = {inner}\n\n{extra}\n"
    );
    std::fs::write(dir.join("switchboard.toml"), toml).expect("config");
    (Dir(dir), format!("ws://{ip}:{ws}"))
}

fn status(dir: &Path) -> Vec<Value> {
    let out = ok(&sb(dir, &["status", "--json"]));
    serde_json::from_str::<Value>(&out).expect("status json").as_array().cloned().expect("rows")
}

fn token(dir: &Path, bid: &str, agent: &str) -> String {
    ok(&sb(dir, &["token", "--bid", bid, "--agent", agent])).trim().to_string()
}

async fn agent(url: &str, dir: &Path, id: &str) -> Client {
    let mut c = Client::chat(url).await;
    let r = c.request(json!({"method": "login", "bid": "1", "customer_id": id, "customer_name": id, "token": token(dir, "1", id)}), "login").await;
    assert!(r.get("code").is_none(), "{r}");
    c
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// Safe defaults (#15 item 7): a box started with nothing configured generates an inner secret
/// key shared by its roles (kept 0600 in run/, printed with how to give it to other servers);
/// a peer without it is refused by the register and the inner port; the run directory and
/// every file the chat writes there are private; the open Origin default is said at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_box_is_keyed_and_private() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (dir, url) = setup(75, "");
    let out = ok(&sb(&dir.0, &["start", "-d"]));
    assert!(out.contains("inner secret key: run/secret-key") && out.contains("SWITCHBOARD_SECRET_KEY="), "{out}");
    assert!(out.contains("any web origin"), "{out}");
    let run = dir.0.join("run");
    let key = std::fs::read_to_string(run.join("secret-key")).expect("a generated secret key");
    assert_eq!(key.trim().len(), 64);
    // Every role got it: the workers joined the gateway, so the chat answers.
    let _agent = agent(&url, &dir.0, "a1").await;
    // Without it, a forged worker is refused by the register and by the gateway's inner port.
    let toml = std::fs::read_to_string(dir.0.join("switchboard.toml")).expect("config");
    let field = |name: &str| -> String {
        let line = toml.lines().find(|l| l.starts_with(name)).expect("field");
        line.split('"').nth(1).expect("quoted").to_string()
    };
    let (register, gw_ip) = (field("listen"), field("lan_ip"));
    let inner_port = toml.lines().find_map(|l| l.strip_prefix("inner_port = ")).expect("inner port").trim().to_string();
    let mut r = tokio::net::TcpStream::connect(&register).await.expect("register");
    r.write_all(b"{\"event\":\"worker_connect\",\"secret_key\":\"\"}\n").await.expect("write");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(WAIT, r.read(&mut buf)).await.expect("answered in time");
    assert!(matches!(n, Ok(0) | Err(_)), "the register accepted a worker without the key");
    let mut g = tokio::net::TcpStream::connect(format!("{gw_ip}:{inner_port}")).await.expect("inner port");
    let forged =
        gateway::protocol::Command::WorkerConnect { worker_key: "Evil:0".into(), secret_key: String::new(), directory: false, standby: None };
    g.write_all(&forged.into_packet().to_bytes()).await.expect("write");
    let n = tokio::time::timeout(WAIT, g.read(&mut buf)).await.expect("answered in time");
    assert!(matches!(n, Ok(0) | Err(_)), "the gateway accepted a worker without the key");
    // Private files: the directory, the secrets, the log, the store and its WAL.
    assert_eq!(mode(&run), 0o700, "run/");
    for f in ["secret-key", "agent-secret", "switchboard.log", "switchboard.db", "switchboard.db-wal"] {
        assert_eq!(mode(&run.join(f)) & 0o077, 0, "run/{f} is readable by others: {:o}", mode(&run.join(f)));
    }
    ok(&sb(&dir.0, &["stop"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_status_restart_and_stop() {
    let (dir, url) = setup(71, "[events]\nagent_secret = \"op-secret\"");
    let out = ok(&sb(&dir.0, &["start", "-d"]));
    assert!(out.contains("switchboard started"), "{out}");
    let rows = status(&dir.0);
    let roles: Vec<&str> = rows.iter().filter_map(|r| r["role"].as_str()).collect();
    assert_eq!(roles, vec!["register", "gateway", "business", "business"]);
    assert!(rows.iter().all(|r| r["ready"] == true && r["pid"].as_u64().unwrap_or(0) > 0));
    let table = ok(&sb(&dir.0, &["status"]));
    assert!(table.starts_with("ROLE") && table.contains("RESTARTS"), "{table}");
    // Starting twice is refused.
    let again = sb(&dir.0, &["start", "-d"]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already running"));

    // Traffic shows in status and connections.
    let mut a = agent(&url, &dir.0, "a1").await;
    a.request(json!({"method": "join", "room": "ops"}), "join").await;
    let conns = ok(&sb(&dir.0, &["connections", "--json"]));
    let conns: Value = serde_json::from_str(&conns).expect("json");
    let mine = conns.as_array().and_then(|l| l.iter().find(|c| c["uid"] == "a:1:a1")).cloned().expect("a1 is listed, by its bot-scoped uid");
    assert!(mine["groups"].as_array().is_some_and(|g| g.contains(&json!("room:1:ops"))), "{mine}");
    let gw = status(&dir.0).into_iter().find(|r| r["role"] == "gateway").expect("gateway row");
    assert!(gw["messages_in"].as_u64().unwrap_or(0) >= 2, "{gw}");

    // A worker killed is back within seconds, and status says so.
    let victim = status(&dir.0).into_iter().find(|r| r["role"] == "business").expect("worker");
    let pid = victim["pid"].as_u64().expect("pid");
    std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let row = status(&dir.0).into_iter().find(|r| r["role"] == "business" && r["index"] == victim["index"]).expect("row");
        if row["restarts"] == 1 && row["pid"].as_u64() != Some(pid) && row["ready"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "worker not restarted: {row}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The client never noticed.
    a.send_json(json!({"method": "say", "room": "ops", "content": "still here", "cid": "s"})).await;
    a.next_where(|m| m["method"] == "say_ack").await;

    let out = ok(&sb(&dir.0, &["stop"]));
    assert!(out.contains("stopped"), "{out}");
    assert!(!dir.0.join("run/switchboard.sock").exists() && !dir.0.join("run/switchboard.pid").exists());
    let after = sb(&dir.0, &["status"]);
    assert!(!after.status.success() && String::from_utf8_lossy(&after.stderr).contains("not running"));
}

/// The runtime threads of a process: tokio's multi-thread runtime names its threads
/// `tokio-rt-worker`; a one-thread runtime runs on the process's main thread and names none.
fn runtime_threads(pid: u64) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap_or_else(|e| panic!("/proc/{pid}/task: {e}"));
    tasks.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok()).filter(|comm| comm.trim() == "tokio-rt-worker").count()
}

/// `gateway_threads` and `worker_threads` reach the processes `start` runs: by default a worker
/// runs one thread (as a Workerman process does: docs/BENCHMARKS.md, session 30, for what a
/// second one cost) and a gateway one per core; each is set here and served a chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_runs_the_threads_its_role_is_given() {
    for (top, gateway, worker) in [("", None, 0), ("gateway_threads = 3\nworker_threads = 2\n", Some(3), 2)] {
        let (dir, url) = setup_with(76, top, "[events]\nagent_secret = \"op-secret\"");
        ok(&sb(&dir.0, &["start", "-d"]));
        let rows = status(&dir.0);
        let pids = |role: &str| rows.iter().filter(|r| r["role"] == role).filter_map(|r| r["pid"].as_u64()).collect::<Vec<_>>();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for pid in pids("gateway") {
            assert_eq!(runtime_threads(pid), gateway.unwrap_or(cores), "gateway {pid} with {top:?}");
        }
        let workers = pids("business");
        assert_eq!(workers.len(), 2, "{rows:?}");
        for pid in workers {
            assert_eq!(runtime_threads(pid), worker, "worker {pid} with {top:?}");
        }
        let mut a = agent(&url, &dir.0, "t1").await;
        a.request(json!({"method": "join", "room": "threads"}), "join").await;
        a.send_json(json!({"method": "say", "room": "threads", "content": "hi", "cid": "t"})).await;
        a.next_where(|m| m["method"] == "say_ack").await;
        ok(&sb(&dir.0, &["stop"]));
    }
}

/// Client events each business worker of the box has handled, by pid, from the metrics
/// addresses `status --json` lists.
async fn events_by_worker(dir: &Path) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for r in status(dir).into_iter().filter(|r| r["role"] == "business") {
        let addr = r["metrics"].as_str().unwrap_or_else(|| panic!("no metrics address: {r}"));
        out.push((r["pid"].as_u64().expect("pid"), metric(addr, "events_total").await as u64));
    }
    out
}

/// Each agent says one message in the room; its ack and every member's copy arrive.
async fn say_round(agents: &mut [Client], round: &str) {
    for i in 0..agents.len() {
        let cid = format!("{round}-{i}");
        agents[i].send_json(json!({"method": "say", "room": "shift", "content": cid, "cid": cid})).await;
        agents[i].next_where(|m| m["method"] == "say_ack" && m["cid"] == cid.as_str()).await;
        for a in agents.iter_mut() {
            a.next_where(|m| m["method"] == "say" && m["content"] == cid.as_str()).await;
        }
    }
}

/// A default box (SQLite, two workers): every client is served by one worker, the other
/// stands by (one process writes the file; gateway/src/router.rs says why). Killed, the active
/// one hands every client to the standby at once: nobody is closed, every message after the
/// kill is acknowledged and delivered, and the restarted process is the standby now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_box_serves_from_one_worker_and_the_standby_takes_over() {
    let (dir, url) = setup(74, "[events]\nagent_secret = \"op-secret\"");
    ok(&sb(&dir.0, &["start", "-d"]));
    let mut agents = Vec::new();
    for i in 0..4 {
        let mut a = agent(&url, &dir.0, &format!("s{i}")).await;
        a.request(json!({"method": "join", "room": "shift"}), "join").await;
        agents.push(a);
    }
    say_round(&mut agents, "before").await;
    let counts = events_by_worker(&dir.0).await;
    let (active, standby) = match counts[..] {
        [(p, n), (q, 0)] if n > 0 => (p, q),
        [(q, 0), (p, n)] if n > 0 => (p, q),
        _ => panic!("one worker serves every client, the other none: {counts:?}"),
    };

    std::process::Command::new("kill").args(["-9", &active.to_string()]).status().expect("kill");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !status(&dir.0).iter().any(|r| r["role"] == "business" && r["restarts"] == 1 && r["pid"].as_u64() != Some(active) && r["ready"] == true) {
        assert!(Instant::now() < deadline, "the killed worker was not restarted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say_round(&mut agents, "after").await;
    let counts = events_by_worker(&dir.0).await;
    let served = |pid: u64| counts.iter().find(|(p, _)| *p == pid).map(|(_, n)| *n);
    assert!(served(standby).is_some_and(|n| n >= 4), "the standby took every client (4 messages): {counts:?}");
    assert!(counts.iter().any(|(p, n)| *p != standby && *p != active && *n == 0), "the restarted worker stands by: {counts:?}");
    drop(agents);
    ok(&sb(&dir.0, &["stop"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_traffic_loses_nothing_and_reads_the_new_config() {
    let (dir, url) = setup(72, "[events]\nagent_secret = \"op-secret\"\nmax_content = 20");
    ok(&sb(&dir.0, &["start", "-d"]));
    let before: Vec<u64> = status(&dir.0).iter().filter(|r| r["role"] == "business").filter_map(|r| r["pid"].as_u64()).collect();
    const AGENTS: usize = 6;
    const EACH: usize = 60;
    let mut clients = Vec::new();
    for i in 0..AGENTS {
        let mut c = agent(&url, &dir.0, &format!("ag{i}")).await;
        c.request(json!({"method": "join", "room": "busy"}), "join").await;
        clients.push(c);
    }
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                c.send_json(json!({"method": "say", "room": "busy", "content": format!("{i}-{n}"), "cid": format!("{i}-{n}")})).await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            c
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reload = tokio::task::spawn_blocking({
        let d = dir.0.clone();
        move || sb(&d, &["reload"])
    });
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.expect("sender"));
    }
    let out = ok(&reload.await.expect("reload"));
    assert!(out.contains("2 business workers replaced"), "{out}");
    // Every member got every message exactly once; every sender every ack exactly once.
    for (i, c) in clients.iter_mut().enumerate() {
        let mut seen = std::collections::HashMap::<String, usize>::new();
        let mut acks = std::collections::HashMap::<String, usize>::new();
        while seen.len() < AGENTS * EACH || acks.len() < EACH {
            let m = c.next_where(|m| m["method"] == "say" || m["method"] == "say_ack").await;
            let key = m["cid"].as_str().unwrap_or("").to_string();
            if m["method"] == "say" {
                *seen.entry(key).or_default() += 1;
            } else {
                *acks.entry(key).or_default() += 1;
            }
        }
        c.expect_none(Duration::from_millis(500), |m| m["method"] == "say" || m["method"] == "say_ack").await;
        assert!(seen.values().all(|n| *n == 1), "agent {i}: a message arrived twice");
        assert!(acks.values().all(|n| *n == 1), "agent {i}: a message was acknowledged twice");
    }
    let after: Vec<u64> = status(&dir.0).iter().filter(|r| r["role"] == "business").filter_map(|r| r["pid"].as_u64()).collect();
    assert!(after.iter().all(|p| !before.contains(p)), "every worker was replaced: {before:?} -> {after:?}");

    // The new workers read the config as it is now.
    let c0 = &mut clients[0];
    let r = c0.request(json!({"method": "say", "room": "busy", "content": "x".repeat(50)}), "say_ack").await;
    assert_eq!(r["code"], "10005", "max_content 20 refuses 50 characters");
    let cfg = dir.0.join("switchboard.toml");
    let text = std::fs::read_to_string(&cfg).expect("config").replace("max_content = 20", "max_content = 100");
    std::fs::write(&cfg, text).expect("config");
    ok(&sb(&dir.0, &["reload"]));
    let r = c0.request(json!({"method": "say", "room": "busy", "content": "x".repeat(50), "cid": "long"}), "say_ack").await;
    assert!(r.get("code").is_none(), "after reload max_content is 100: {r}");

    // An entry that could name two agents (bot 1's `ag:1`, or bot `1:ag`'s `1`) is refused by
    // `reload` before any worker is replaced, with how to write it.
    let workers: Vec<Value> = status(&dir.0).into_iter().filter(|r| r["role"] == "business").map(|r| r["pid"].clone()).collect();
    let good = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, good.replace("[events]\n", "[events]\nrevoked_agents = [\"1:ag:1\"]\n")).expect("config");
    let out = sb(&dir.0, &["reload"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && said.contains("revoked_agents") && said.contains("%3A"), "{said}");
    let still: Vec<Value> = status(&dir.0).into_iter().filter(|r| r["role"] == "business").map(|r| r["pid"].clone()).collect();
    assert_eq!(workers, still, "no worker was replaced");
    std::fs::write(&cfg, good).expect("config");

    // Revoking an agent: config + reload ends its session at its next action.
    let text = std::fs::read_to_string(&cfg).expect("config").replace("[events]\n", "[events]\nrevoked_agents = [\"1:ag1\"]\n");
    std::fs::write(&cfg, text).expect("config");
    ok(&sb(&dir.0, &["reload"]));
    let r = clients[1].request(json!({"method": "conversation_list"}), "conversation_list").await;
    assert_eq!((r["code"].as_str(), r["msg"].as_str()), (Some("10004"), Some("agent token revoked: log in again")), "{r}");
    let mut again = Client::chat(&url).await;
    let r = again
        .request(json!({"method": "login", "bid": "1", "customer_id": "ag1", "customer_name": "ag1", "token": token(&dir.0, "1", "ag1")}), "login")
        .await;
    assert_eq!(r["code"], "10004", "a revoked agent cannot log in again: {r}");
    ok(&sb(&dir.0, &["stop"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_says_goodbye_and_finishes_work() {
    let (url_up, answered) = start_upstream("127.73.0.9").await;
    let (dir, url) = setup(73, &format!("[events]\nagent_secret = \"op-secret\"\nupstream_url = \"{url_up}\""));
    ok(&sb(&dir.0, &["start", "-d"]));
    let mut a = agent(&url, &dir.0, "a1").await;
    a.request(json!({"method": "join", "room": "last"}), "join").await;
    a.send_json(json!({"method": "say", "room": "last", "content": "last words", "cid": "lw"})).await;
    a.next_where(|m| m["method"] == "say_ack").await;
    // A call in flight (the upstream takes 1.5 s) when the stop comes: the worker finishes it.
    let before = answered.load(std::sync::atomic::Ordering::SeqCst);
    a.send_json(json!({"method": "pause"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let out = ok(&sb(&dir.0, &["stop", "-g"]));
    assert!(out.contains("stopped"));
    assert!(started.elapsed() >= Duration::from_millis(1000), "the stop waited for the work in flight");
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), before + 1, "the upstream call completed");
    // The client got a proper goodbye.
    let mut frame = a.raw_next(WAIT).await;
    while matches!(&frame, Some(tokio_tungstenite::tungstenite::Message::Text(_))) {
        frame = a.raw_next(WAIT).await;
    }
    assert!(matches!(&frame, Some(tokio_tungstenite::tungstenite::Message::Close(Some(f))) if u16::from(f.code) == 1001), "{frame:?}");
    let log = std::fs::read_to_string(dir.0.join("run/switchboard.log")).unwrap_or_default();
    assert!(log.contains("closing every client with 1001") && log.contains("business worker stopped"), "{log}");
    assert!(!log.contains("work still in flight"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_with_the_reason() {
    let (dir, url) = setup(77, "");
    // Someone else holds the gateway's port.
    let addr = url.trim_start_matches("ws://").to_string();
    let _squatter = std::net::TcpListener::bind(&addr).expect("bind");
    // Foreground and -d say the same: which role, which address, which key, what to do.
    for args in [&["start", "-d"][..], &["start"][..]] {
        let out = sb(&dir.0, args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("the gateway's client port ([gateway] listen) cannot listen on {addr}: Address already in use"))
                && err.contains("another Switchboard")
                && err.contains("ss -ltnp"),
            "{args:?}: the reason is shown: {err}"
        );
        assert!(!dir.0.join("run/switchboard.sock").exists(), "nothing left running");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_server_example_works() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("sb-three-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("scripts")).expect("dir");
    let copy = |from: &Path, to: &Path| std::fs::copy(from, to).expect("copy");
    std::fs::create_dir_all(dir.join("scripts/three-servers")).expect("dir");
    for s in ["a", "b", "c"] {
        let name = format!("server-{s}.toml");
        copy(&root.join("scripts/three-servers").join(&name), &dir.join("scripts/three-servers").join(&name));
    }
    copy(&root.join("scripts/three-servers.sh"), &dir.join("scripts/three-servers.sh"));
    copy(&root.join("scripts/hosts.sh"), &dir.join("scripts/hosts.sh"));
    let _guard = Dir(dir.clone());
    // Whatever happens below, the example's hosts (and every process in them) go.
    struct Hosts(PathBuf);
    impl Drop for Hosts {
        fn drop(&mut self) {
            let _ = std::process::Command::new("bash").arg(self.0.join("scripts/hosts.sh")).args(["down", "200"]).output();
        }
    }
    let _hosts = Hosts(dir.clone());
    let run = |cmd: &str| {
        std::process::Command::new("bash")
            .arg(dir.join("scripts/three-servers.sh"))
            .arg(cmd)
            .env("SWITCHBOARD_BIN", BIN)
            .env_remove("SWITCHBOARD_AGENT_SECRET")
            .output()
            .expect("script")
    };
    let out = run("start");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let secret = std::fs::read_to_string(dir.join("run/server-c/agent-secret")).expect("server C generated its agent secret");
    let token = |agent: &str| {
        let out = std::process::Command::new(BIN)
            .args(["token", "--bid", "1", "--agent", agent])
            .env("SWITCHBOARD_AGENT_SECRET", secret.trim())
            .output()
            .expect("token");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // An agent on server A and one on server B talk privately, through workers on server C:
    // three hosts, each with its own network stack.
    let mut a = Client::chat("ws://10.200.0.11:7272").await;
    let r = a.request(json!({"method": "login", "bid": "1", "customer_id": "ann", "customer_name": "Ann", "token": token("ann")}), "login").await;
    assert!(r.get("code").is_none(), "{r}");
    let mut b = Client::chat("ws://10.200.0.12:7272").await;
    let r = b.request(json!({"method": "login", "bid": "1", "customer_id": "ben", "customer_name": "Ben", "token": token("ben")}), "login").await;
    assert_eq!(r["customer_list"].as_array().map(Vec::len), Some(2), "{r}");
    a.send_json(json!({"method": "say", "to_uid": "ben", "content": "across servers", "cid": "x"})).await;
    b.next_where(|m| m["content"] == "across servers").await;
    let status = run("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("10.200.0.12:7272") && text.matches("business#").count() == 2, "{text}");
    let out = run("stop");
    assert!(out.status.success());
    for s in ["a", "b", "c"] {
        assert!(!dir.join(format!("run/server-{s}/switchboard.sock")).exists());
    }
}

/// Webhooks on a box run by `switchboard start` (the api process starts because webhooks are
/// configured, and the workers record the feed): conversations go on through a `reload` and a
/// receiver that fails for a while, and every acknowledged visitor message arrives once, in
/// order within its conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_lose_nothing_across_a_reload() {
    use common::http_api::{message_ids, Mode, Receiver};
    const SECRET: &str = "whsec-operate-0123456789";
    let rx = Receiver::start("127.197.0.7", SECRET).await;
    let hook = format!(
        "[events]\nagent_secret = \"op-secret\"\n\n[[api.webhooks]]\nname = \"crm\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
         events = [\"message.created\", \"conversation.created\"]\ntimeout = 1.0\nretry_base = 0.1\nretry_max = 0.5\n",
        rx.url
    );
    let (dir, url) = setup(197, &hook);
    ok(&sb(&dir.0, &["start", "-d"]));
    assert!(status(&dir.0).iter().any(|r| r["role"] == "api"), "webhooks configured: the api process runs");
    let _agent = agent(&url, &dir.0, "ag0").await;
    const VISITORS: usize = 3;
    const EACH: usize = 20;
    let mut tasks = Vec::new();
    for v in 0..VISITORS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::chat(&url).await;
            let login = c.request(json!({"method": "visitor_login", "bid": "1", "name": format!("v{v}")}), "visitor_login").await;
            let conv = login["conversation_id"].as_str().expect("conversation").to_string();
            for n in 0..EACH {
                let cid = format!("{v}-{n}");
                c.send_json(json!({"method": "say", "content": cid, "cid": cid})).await;
                c.next_where(|m| m["method"] == "say_ack" && m["cid"] == cid.as_str()).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            conv
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    rx.set(Mode::Failing);
    let reload = tokio::task::spawn_blocking({
        let d = dir.0.clone();
        move || sb(&d, &["reload"])
    });
    let mut convs = Vec::new();
    for t in tasks {
        convs.push(t.await.expect("visitor"));
    }
    assert!(ok(&reload.await.expect("reload")).contains("business workers replaced"));
    rx.set(Mode::Ok);
    let want: Vec<String> = convs.iter().flat_map(|c| (1..=EACH).map(move |i| format!("message.created:c:{c}:{i}"))).collect();
    let taken = rx.all_once(&want).await;
    assert!(taken.iter().all(|d| d.event["type"] == "message.created" || d.event["type"] == "conversation.created"), "only the types subscribed to");
    for c in &convs {
        assert_eq!(message_ids(&taken, c), (1..=EACH as i64).collect::<Vec<_>>(), "{c}: in order, none missing");
    }
    ok(&sb(&dir.0, &["stop"]));
}
