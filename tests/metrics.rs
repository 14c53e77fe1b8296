//! Every metric an operator's dashboard (docs/grafana-dashboard.json) is built on appears on
//! the process that owns it and moves with traffic: a box started with `switchboard start -d`
//! (register, gateway, two chat workers, the LINE channel against a fake LINE, an upstream),
//! scraped at the addresses `switchboard status --json` gives.

mod common;

use common::fake_line::*;
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

const SECRET: &str = "metrics-secret";

fn sb(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN).current_dir(dir).args(args).output().expect("switchboard")
}

/// The sum of every sample of `name` whose labels contain `labels` (`""`: all).
fn sample(exposition: &str, name: &str, labels: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| (l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))) && l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Each role's expositions, scraped at the addresses `status --json` lists.
async fn scrape(dir: &Path) -> HashMap<String, String> {
    let out = sb(dir, &["status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("status json");
    let mut by_role: HashMap<String, String> = HashMap::new();
    for r in rows {
        let role = r["role"].as_str().expect("role").to_string();
        let addr = r["metrics"].as_str().unwrap_or_else(|| panic!("{role} lists no metrics address: {r}"));
        let body = reqwest::get(format!("http://{addr}/metrics")).await.expect("scrape").text().await.expect("body");
        assert!(body.ends_with("# EOF\n"), "{role}: not an OpenMetrics exposition");
        by_role.entry(role).or_default().push_str(&body);
    }
    by_role
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_appears_and_moves() {
    let ip = "127.164.0.1";
    let (fake, line_api) = start_fake_line("127.164.0.9").await;
    let (upstream, answered) = start_upstream("127.164.0.8").await;
    let dir = StartedDir(std::env::temp_dir().join(format!("sb-metrics-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).expect("dir");
    let (reg, ws, inner, line) = (free_port(ip), free_port(ip), free_port(ip), free_port(ip));
    std::fs::write(
        dir.0.join("switchboard.toml"),
        format!(
            "registers = [\"{ip}:{reg}\"]\nmetrics_ip = \"{ip}\"\n[register]\nlisten = \"{ip}:{reg}\"\n\
             [gateway]\nlisten = \"{ip}:{ws}\"\nlan_ip = \"{ip}\"\ninner_port = {inner}\nping_interval = 1.0\nping_not_response_limit = 0\n\
             [events]\nagent_secret = \"{SECRET}\"\nupstream_url = \"{upstream}\"\n\
             [events.line]\nlisten = \"{ip}:{line}\"\napi_base = \"{line_api}\"\ndata_base = \"{line_api}\"\n\
             [[events.line.bots]]\nbid = \"1\"\nchannel_secret = \"{CHANNEL_SECRET}\"\nchannel_access_token = \"{ACCESS_TOKEN}\"\n"
        ),
    )
    .expect("config");
    let started = sb(&dir.0, &["start", "-d"]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));

    // Before any traffic: every role serves, the histograms are there at zero.
    let before = scrape(&dir.0).await;
    let roles: Vec<&str> = ["register", "gateway", "business", "line"].into_iter().filter(|r| !before.contains_key(*r)).collect();
    assert!(roles.is_empty(), "roles without metrics: {roles:?}");
    for (role, name) in [
        ("gateway", "switchboard_group_fanout_count"),
        ("gateway", "switchboard_client_queue_depth_count"),
        ("business", "switchboard_event_wait_seconds_count"),
        ("business", "switchboard_callback_seconds_count"),
    ] {
        assert!(before[role].contains(&format!("{name}{{")), "{role} lacks {name}");
    }
    let fanout_before = sample(&before["gateway"], "switchboard_group_fanout_count", "");

    // Traffic that touches each: an agent in a room (a group send), a visitor, an upstream
    // call, a LINE user answered through the outbox.
    let url = format!("ws://{ip}:{ws}");
    let (mut agent, _) = agent_with(&url, SECRET, "1", "a1", "Ana").await;
    agent.request(json!({"method": "join", "room": "ops"}), "join").await;
    agent.request(json!({"method": "say", "room": "ops", "content": "morning", "cid": "m1"}), "say_ack").await;
    let mut visitor = Client::chat(&url).await;
    visitor.request(json!({"method": "visitor_login", "bid": "1"}), "visitor_login").await;
    visitor.request(json!({"method": "say", "content": "hello", "cid": "v1"}), "say_ack").await;
    agent.send_json(json!({"method": "weather", "city": "Osaka"})).await;
    eventually("the upstream is called", || async { answered.load(std::sync::atomic::Ordering::SeqCst) > 0 }).await;
    let ev = text_event(&fake, "e1", "Umetrics", "1001", "Hello from LINE");
    assert_eq!(post_webhook(&format!("http://{ip}:{line}/line/1/webhook"), &[ev], Some(CHANNEL_SECRET)).await, 200);
    let push = agent.next_where(|m| m["method"] == "conversation_push" && m["visitor_id"] == "line:Umetrics").await;
    let conv = push["conversation_id"].as_str().expect("conversation").to_string();
    agent.request(json!({"method": "say", "conversation_id": conv, "content": "Hi!", "cid": "l1"}), "say_ack").await;
    eventually("LINE got the answer", || async { !fake.delivered_texts("Umetrics").is_empty() }).await;
    // A heartbeat tick (1 s here) samples the queues.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let after = scrape(&dir.0).await;
    let moved = |role: &str, name: &str, labels: &str| {
        let v = sample(&after[role], name, labels);
        assert!(v > 0.0, "{role}: {name}{{{labels}}} did not move:\n{}", after[role]);
    };
    assert!(sample(&after["gateway"], "switchboard_group_fanout_count", "") > fanout_before, "group fan-out did not move");
    moved("gateway", "switchboard_group_fanout_sum", "");
    moved("gateway", "switchboard_client_queue_depth_count", "");
    moved("gateway", "switchboard_messages_in_total", "role=\"gateway\"");
    moved("gateway", "switchboard_clients", "");
    moved("business", "switchboard_event_wait_seconds_count", "");
    moved("business", "switchboard_callback_seconds_count", "");
    moved("business", "switchboard_events_total", "");
    moved("business", "switchboard_store_seconds_count", "op=\"insert_message\"");
    moved("business", "switchboard_store_seconds_count", "op=\"open_conversation\"");
    moved("business", "switchboard_upstream_seconds_count", "");
    moved("line", "switchboard_line_send_seconds_count", "");
    moved("line", "switchboard_store_seconds_count", "op=\"line_inbox_put\"");
    moved("register", "switchboard_gateways", "");
    for role in ["register", "gateway", "business", "line"] {
        moved(role, "process_resident_memory_bytes", "");
    }
    // The dashboard shipped in docs/ asks only for what is served.
    let dashboard = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json")).expect("dashboard");
    let served: String = after.values().cloned().collect();
    let mut asked: Vec<&str> = dashboard
        .match_indices("switchboard_")
        .map(|(i, _)| dashboard[i..].split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or(""))
        .filter(|name| *name != "switchboard_")
        .collect();
    asked.sort();
    asked.dedup();
    assert!(asked.len() >= 10, "the dashboard names the metrics: {asked:?}");
    for name in asked {
        assert!(served.contains(&format!("\n{name}{{")), "the dashboard asks for {name}, which no process serves");
    }
}
