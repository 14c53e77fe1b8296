//! The customer-service chat over real WebSocket connections to a running system: a register,
//! two gateways (127.x.0.2 and 127.x.0.3) and two chat workers sharing one SQLite store.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

const SECRET: &str = "test-agent-secret";

async fn chat_system(net: u8, events_toml: &str) -> ChatSystem {
    chat_system_with(net, events_toml, SECRET).await
}

fn token(bid: &str, agent: &str) -> String {
    mint_token(SECRET, bid, agent)
}

async fn agent(url: &str, bid: &str, id: &str, name: &str) -> (Client, Value) {
    agent_with(url, SECRET, bid, id, name).await
}

fn ids(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list.as_array().expect("list").iter().map(|x| x["customer_id"].as_str().unwrap_or("").to_string()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_log_in_see_each_other_and_log_out_after_the_last_tab() {
    let c = chat_system(51, "").await;
    let mut anon = Client::chat(&c.a.ws).await;
    // Refusals, each with its code.
    let r = anon.request(json!({"method": "login", "bid": "1", "customer_id": "a1", "customer_name": "A"}), "login").await;
    assert_eq!(r["code"], "10004", "no token: {r}");
    let r = anon.request(json!({"method": "login", "bid": "1", "customer_id": "a1", "customer_name": "A", "token": token("2", "a1")}), "login").await;
    assert_eq!(r["code"], "10004", "token of another bot: {r}");
    let r = anon.request(json!({"method": "login", "bid": 1, "customer_id": "a1"}), "login").await;
    assert_eq!((r["code"].as_str(), r["method"].as_str()), (Some("10002"), Some("login")));
    let r = anon.request(json!({"bid": 1}), "none").await;
    assert_eq!(r, json!({"code": "10001", "msg": "missing method"}));
    anon.send_text("{oops").await;
    let r = anon.next_where(|v| v.get("code").is_some()).await;
    assert_eq!(r["code"], "10005");

    // Ids as numbers are accepted and come back as strings; the list holds every agent once.
    let (mut a1_tab1, r) = agent(&c.a.ws, "1", "a1", "Alice").await;
    assert_eq!(ids(&r["customer_list"]), vec!["a1"]);
    let (mut a1_tab2, _) = agent(&c.b.ws, "1", "a1", "Alice").await;
    a1_tab1.next_where(|v| v["method"] == "login_push" && v["customer_id"] == "a1").await;
    let mut b2 = Client::chat(&c.b.ws).await;
    let r = b2
        .request(json!({"method": "login", "bid": 1, "customer_id": "b2", "customer_name": "<b>Bob</b>", "token": token("1", "b2")}), "login")
        .await;
    assert_eq!(ids(&r["customer_list"]), vec!["a1", "b2"], "every online agent once: {r}");
    assert!(r["timestamp"].is_i64());
    let push = a1_tab1.next_where(|v| v["method"] == "login_push" && v["customer_id"] == "b2").await;
    assert_eq!(push["customer_name"], "&lt;b&gt;Bob&lt;/b&gt;", "names are HTML-escaped");
    a1_tab2.next_where(|v| v["method"] == "login_push" && v["customer_id"] == "b2").await;

    // An agent of another bot sees nothing of bot 1.
    let (mut other, r) = agent(&c.a.ws, "2", "z9", "Zed").await;
    assert_eq!(ids(&r["customer_list"]), vec!["z9"]);

    // Closing one of a1's tabs is not a logout; closing the last one is.
    drop(a1_tab1);
    b2.expect_none(Duration::from_millis(800), |v| v["method"] == "logout_push").await;
    drop(a1_tab2);
    let out = b2.next_where(|v| v["method"] == "logout_push").await;
    assert_eq!((out["customer_id"].as_str(), out["customer_name"].as_str()), (Some("a1"), Some("Alice")));
    other.expect_none(Duration::from_millis(300), |v| v["method"] == "logout_push").await;
}

/// An agent alone in its bot has nobody to tell of its login or logout: the gateways get no
/// presence send for it (a lone login was three group sends). The next agent to come lists
/// it, and the one already there hears of the newcomer and of its leaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_agent_tells_nobody_and_the_next_one_is_told() {
    let c = chat_system(174, "").await;
    let sends = || async { metric(&c.metrics[0], "sends_total").await + metric(&c.metrics[1], "sends_total").await };
    let logged_out = || c.workers.iter().map(|w| w.log_text().matches("agent logged out").count()).sum::<usize>();
    let before = sends().await;
    let (alone, r) = agent(&c.a.ws, "8", "a1", "Ann").await;
    assert_eq!(ids(&r["customer_list"]), vec!["a1"]);
    drop(alone);
    eventually("the lone agent's logout is handled", || async { logged_out() == 1 }).await;
    assert_eq!(sends().await, before, "no presence send for an agent alone in its bot");

    let (mut a1, _) = agent(&c.a.ws, "8", "a1", "Ann").await;
    let (b2, r) = agent(&c.b.ws, "8", "b2", "Bob").await;
    assert_eq!(ids(&r["customer_list"]), vec!["a1", "b2"], "the one already there is listed");
    a1.next_where(|v| v["method"] == "login_push" && v["customer_id"] == "b2").await;
    drop(b2);
    a1.next_where(|v| v["method"] == "logout_push" && v["customer_id"] == "b2").await;
    assert!(sends().await > before, "with someone to tell, the pushes are sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_are_assigned_and_converse_with_history_and_unread() {
    let c = chat_system(52, "").await;
    let (mut a1, _) = agent(&c.a.ws, "7", "a1", "Alice").await;
    let (b2, _) = agent(&c.b.ws, "7", "b2", "Bob").await;
    let mut v = Client::chat(&c.a.ws).await;
    let login = v.request(json!({"method": "visitor_login", "bid": 7, "name": "Vera"}), "visitor_login").await;
    let vid = login["visitor_id"].as_str().expect("visitor id").to_string();
    let conv = login["conversation_id"].as_str().expect("conversation id").to_string();
    assert_eq!(login["history"], json!([]));
    a1.next_where(|m| m["method"] == "conversation_push" && m["conversation_id"] == conv.as_str()).await;

    // The first message assigns the conversation to one agent, who alone gets it.
    v.send_json(json!({"method": "say", "content": "hello", "cid": "c1"})).await;
    let ack = v.next_where(|m| m["method"] == "say_ack").await;
    assert_eq!(ack["cid"], "c1");
    let assign = a1.next_where(|m| m["method"] == "assign_push").await;
    let assigned = assign["assigned"]["customer_id"].as_str().expect("assigned").to_string();
    v.next_where(|m| m["method"] == "assign_push").await;
    let (mut mine, mut other) = if assigned == "a1" { (a1, b2) } else { (b2, a1) };
    let said = mine.next_where(|m| m["method"] == "say").await;
    assert_eq!(
        (said["content"].as_str(), said["conversation_id"].as_str(), said["from_name"].as_str()),
        (Some("hello"), Some(conv.as_str()), Some("Vera"))
    );
    assert_eq!(said["id"], ack["id"]);
    other.expect_none(Duration::from_millis(500), |m| m["method"] == "say").await;

    // A re-sent cid is acknowledged with the same id and not delivered again.
    v.send_json(json!({"method": "say", "content": "hello", "cid": "c1"})).await;
    let again = v.next_where(|m| m["method"] == "say_ack").await;
    assert_eq!(again["id"], ack["id"]);
    mine.expect_none(Duration::from_millis(500), |m| m["method"] == "say").await;

    // The agent answers; the visitor and the bot's agents see it.
    mine.send_json(json!({"method": "say", "conversation_id": conv, "content": "hi Vera", "cid": "r1"})).await;
    mine.next_where(|m| m["method"] == "say_ack").await;
    let reply = v.next_where(|m| m["method"] == "say" && m["content"] == "hi Vera").await;
    assert_eq!(reply["from_uid"], assigned.as_str());
    other.next_where(|m| m["method"] == "say" && m["content"] == "hi Vera").await;

    // Unread counts and the read mark.
    for i in 0..3 {
        v.send_json(json!({"method": "say", "content": format!("more {i}"), "cid": format!("m{i}")})).await;
        v.next_where(|m| m["method"] == "say_ack").await;
    }
    let list = mine.request(json!({"method": "conversation_list"}), "conversation_list").await;
    let entry = list["conversations"].as_array().expect("list").iter().find(|e| e["conversation_id"] == conv.as_str()).cloned().expect("entry");
    assert_eq!((entry["unread"].as_u64(), entry["state"].as_str()), (Some(4), Some("mine")));
    assert_eq!(entry["last_message"]["content"], "more 2");
    let read = mine.request(json!({"method": "read", "conversation_id": conv, "id": said["id"]}), "read").await;
    assert_eq!(read["unread"], 3);

    // History pages backwards; a visitor who comes back resumes with what was said.
    let page = mine.request(json!({"method": "history", "conversation_id": conv, "limit": 2}), "history").await;
    let contents: Vec<&str> = page["messages"].as_array().expect("msgs").iter().filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(contents, vec!["more 1", "more 2"]);
    let first = &page["messages"][0]["id"];
    let older = mine.request(json!({"method": "history", "conversation_id": conv, "before_id": first, "limit": 10}), "history").await;
    assert_eq!(older["messages"].as_array().map(Vec::len), Some(3));
    drop(v);
    let mut back = Client::chat(&c.b.ws).await;
    let again = back.request(json!({"method": "visitor_login", "bid": "7", "visitor_id": vid}), "visitor_login").await;
    assert_eq!(again["conversation_id"], conv.as_str());
    assert_eq!(again["history"].as_array().map(Vec::len), Some(5));
    assert_eq!(again["assigned"]["customer_id"], assigned.as_str());

    // Visitors stay inside their own conversation.
    let r = back.request(json!({"method": "say", "to_uid": "a1", "content": "psst"}), "say_ack").await;
    assert_eq!(r["code"], "10004");
    let r = back.request(json!({"method": "claim", "conversation_id": conv}), "claim").await;
    assert_eq!(r["code"], "10004");

    // Claim fails while assigned; transfer by the holder moves it; close ends it.
    let other_id = if assigned == "a1" { "b2" } else { "a1" };
    let r = other.request(json!({"method": "claim", "conversation_id": conv}), "claim").await;
    assert_eq!(r["ok"], false);
    let r = mine.request(json!({"method": "transfer", "conversation_id": conv, "to": other_id}), "transfer").await;
    assert_eq!(r["ok"], true);
    let push = other.next_where(|m| m["method"] == "assign_push" && m["assigned"]["customer_id"] == other_id).await;
    assert_eq!(push["conversation_id"], conv.as_str());
    back.next_where(|m| m["method"] == "assign_push").await;
    let r = other.request(json!({"method": "close", "conversation_id": conv}), "close").await;
    assert_eq!(r["ok"], true);
    back.next_where(|m| m["method"] == "close_push").await;
    let r = back.request(json!({"method": "say", "content": "anyone?"}), "say_ack").await;
    assert_eq!(r["code"], "10004", "a closed conversation takes no more messages");
    let fresh = back.request(json!({"method": "visitor_login", "bid": "7", "visitor_id": vid}), "visitor_login").await;
    assert_ne!(fresh["conversation_id"], conv.as_str(), "a new conversation after close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_never_assign_twice() {
    race(53, "").await;
}

/// The same race with the Redis store, as a multi-server deployment runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_never_assign_twice_on_redis() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!(
        "sbchat:{}:{}:",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    );
    race(57, &format!("store = \"{url}\"\nredis_prefix = \"{prefix}\"")).await;
}

/// The same race with the PostgreSQL store (a database of its own on the test server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_never_assign_twice_on_postgres() {
    let db = common::sqldb::SqlDb::postgres("race").await;
    race(58, &format!("store = \"{}\"", db.url)).await;
}

/// `switchboard migrate` brings a PostgreSQL or MySQL store to this build's schema and says so; an
/// unknown store fails with the reason, never echoing a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_by_hand() {
    let db = common::sqldb::SqlDb::postgres("cli").await;
    let run = |store: &str| std::process::Command::new(BIN).args(["migrate", "--store", store]).env("RUST_BACKTRACE", "0").output().expect("migrate");
    let out = run(&db.url);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is at schema version 3"), "{}", String::from_utf8_lossy(&out.stdout));
    let again = run(&db.url);
    assert!(again.status.success(), "migrating twice is fine: {}", String::from_utf8_lossy(&again.stderr));
    let my = common::sqldb::SqlDb::mysql("cli").await;
    let out = run(&my.url);
    assert!(String::from_utf8_lossy(&out.stdout).contains("is at schema version 3"), "{}", String::from_utf8_lossy(&out.stderr));
    // Nothing listens on port 1: the server's own reason, and no password.
    let refused = run("postgres://postgres:hunter2@127.0.0.1:1/test");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("Connection refused") && !err.contains("hunter2"), "{err}");
    let bad = run("mysqlx://root:hunter2@127.0.0.1/test");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("unknown store") && !err.contains("hunter2"), "{err}");
}

/// The same race with the MySQL store (MariaDB here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_never_assign_twice_on_mysql() {
    let db = common::sqldb::SqlDb::mysql("race").await;
    race(59, &format!("store = \"{}\"", db.url)).await;
}

async fn room_history(a: &mut Client) -> Vec<serde_json::Value> {
    a.request(json!({"method": "history", "room": "r"}), "history").await["messages"].as_array().cloned().unwrap_or_default()
}

/// `[events] history_days`: the workers delete what is older by themselves (here a fraction of
/// a day, about 1.7 s, so the test can watch it happen), and keep what is newer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_history_is_deleted_after_history_days() {
    let c = chat_system(172, "history_days = 0.00002").await;
    let (mut agent, _) = agent(&c.a.ws, "4", "a1", "Ana").await;
    agent.request(json!({"method": "join", "room": "r"}), "join").await;
    agent.request(json!({"method": "say", "room": "r", "content": "soon gone", "cid": "g1"}), "say_ack").await;
    assert_eq!(room_history(&mut agent).await.len(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !room_history(&mut agent).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the old message was not deleted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    agent.request(json!({"method": "say", "room": "r", "content": "fresh", "cid": "g2"}), "say_ack").await;
    let left = room_history(&mut agent).await;
    assert_eq!(left.len(), 1, "what is newer stays: {left:?}");
}

async fn race(net: u8, events_toml: &str) {
    let c = chat_system(net, events_toml).await;
    let (mut watcher, _) = agent(&c.a.ws, "9", "a1", "Alice").await;
    let (_b2, _) = agent(&c.b.ws, "9", "b2", "Bob").await;
    let mut convs = Vec::new();
    let mut tabs = Vec::new();
    for i in 0..12 {
        let mut t1 = Client::chat(&c.a.ws).await;
        let login = t1.request(json!({"method": "visitor_login", "bid": "9", "visitor_id": format!("race{i}")}), "visitor_login").await;
        let mut t2 = Client::chat(&c.b.ws).await;
        t2.request(json!({"method": "visitor_login", "bid": "9", "visitor_id": format!("race{i}")}), "visitor_login").await;
        convs.push(login["conversation_id"].as_str().expect("conv").to_string());
        tabs.push((t1, t2));
    }
    // Both tabs of each visitor send their first message at once, through different gateways
    // and (by least-connections routing) different workers.
    for (t1, t2) in tabs.iter_mut() {
        let (x, y) = tokio::join!(
            t1.send_json(json!({"method": "say", "content": "first!", "cid": "x"})),
            t2.send_json(json!({"method": "say", "content": "first too", "cid": "y"}))
        );
        let _ = (x, y);
    }
    let mut pushes = std::collections::HashMap::<String, usize>::new();
    for _ in 0..convs.len() {
        let p = watcher.next_where(|m| m["method"] == "assign_push").await;
        *pushes.entry(p["conversation_id"].as_str().unwrap_or("").to_string()).or_default() += 1;
    }
    watcher.expect_none(Duration::from_millis(1500), |m| m["method"] == "assign_push").await;
    for conv in &convs {
        assert_eq!(pushes.get(conv), Some(&1), "conversation {conv} assigned exactly once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_private_messages_across_gateways() {
    let c = chat_system(54, "").await;
    let (mut a1, _) = agent(&c.a.ws, "3", "a1", "Alice").await;
    let (mut b2, _) = agent(&c.b.ws, "3", "b2", "Bob").await;
    let (mut b2_tab, _) = agent(&c.a.ws, "3", "b2", "Bob").await;
    let r = a1.request(json!({"method": "join", "room": "lobby"}), "join").await;
    assert_eq!(r["members"], json!([{"uid": "a1", "name": "Alice"}]));
    let r = b2.request(json!({"method": "join", "room": "lobby"}), "join").await;
    let mut members: Vec<&str> = r["members"].as_array().expect("members").iter().filter_map(|m| m["uid"].as_str()).collect();
    members.sort();
    assert_eq!(members, vec!["a1", "b2"]);
    a1.next_where(|m| m["method"] == "join_push" && m["uid"] == "b2").await;

    // Room messages reach every member, the sender included.
    a1.send_json(json!({"method": "say", "room": "lobby", "content": "morning", "cid": "k1"})).await;
    let ack = a1.next_where(|m| m["method"] == "say_ack").await;
    let own = a1.next_where(|m| m["method"] == "say" && m["room"] == "lobby").await;
    assert_eq!(own["id"], ack["id"]);
    b2.next_where(|m| m["method"] == "say" && m["content"] == "morning").await;
    b2_tab.expect_none(Duration::from_millis(300), |m| m["content"] == "morning").await;
    let r = b2_tab.request(json!({"method": "say", "room": "kitchen", "content": "x"}), "say_ack").await;
    assert_eq!(r["code"], "10004", "saying in a room one has not joined");

    // Private: every connection of the uid, on any gateway.
    a1.send_json(json!({"method": "say", "to_uid": "b2", "content": "psst", "cid": "p1"})).await;
    a1.next_where(|m| m["method"] == "say_ack" && m["cid"] == "p1").await;
    b2.next_where(|m| m["content"] == "psst" && m["to_uid"] == "b2").await;
    b2_tab.next_where(|m| m["content"] == "psst").await;
    let h = b2.request(json!({"method": "history", "with_uid": "a1"}), "history").await;
    assert_eq!(h["messages"][0]["content"], "psst");

    // Agents of another bot cannot reach bot 3's agents.
    let (mut z, _) = agent(&c.a.ws, "4", "z9", "Zed").await;
    let r = z.request(json!({"method": "say", "to_uid": "a1", "content": "hey"}), "say_ack").await;
    assert_eq!(r["code"], "10004");

    let r = b2.request(json!({"method": "leave", "room": "lobby"}), "leave").await;
    assert_eq!(r["room"], "lobby");
    a1.next_where(|m| m["method"] == "leave_push" && m["uid"] == "b2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unassigned_fan_out_and_bad_input() {
    let c = chat_system(55, "assignment = \"none\"\nmax_content = 10\nrate_limit = 10.0\nrate_burst = 10.0").await;
    let (mut a1, _) = agent(&c.a.ws, "5", "a1", "Alice").await;
    let (mut b2, _) = agent(&c.b.ws, "5", "b2", "Bob").await;
    let mut v = Client::chat(&c.a.ws).await;
    v.request(json!({"method": "visitor_login", "bid": "5"}), "visitor_login").await;
    v.send_json(json!({"method": "say", "content": "help"})).await;
    v.next_where(|m| m["method"] == "say_ack").await;
    a1.next_where(|m| m["method"] == "say" && m["content"] == "help").await;
    b2.next_where(|m| m["method"] == "say" && m["content"] == "help").await;

    let r = v.request(json!({"method": "say", "content": "far too long"}), "say_ack").await;
    assert_eq!(r["code"], "10005");
    let r = v.request(json!({"method": "say", "content": {"x": 1}}), "say_ack").await;
    assert_eq!(r["code"], "10005");
    let r = v.request(json!({"method": "visitor_login", "bid": {"no": 1}}), "visitor_login").await;
    assert_eq!(r["code"], "10005");
    let r = v.request(json!({"method": "no_such_thing"}), "no_such_thing").await;
    assert_eq!(r["code"], "10003", "no upstream configured");
    let r = v.request(json!([1, 2]), "none").await;
    assert_eq!(r["code"], "10005");

    // An agent who was away catches up: unread counts in the login reply, then the history.
    drop(a1);
    v.send_json(json!({"method": "say", "content": "still?", "cid": "s1"})).await;
    v.next_where(|m| m["method"] == "say_ack").await;
    let (mut a1, back) = agent(&c.a.ws, "5", "a1", "Alice").await;
    let conv = back["conversations"].as_array().and_then(|l| l.first()).cloned().expect("the conversation is listed");
    assert_eq!((conv["unread"].as_u64(), conv["state"].as_str()), (Some(2), Some("waiting")));
    let missed = a1.request(json!({"method": "history", "conversation_id": conv["conversation_id"], "after_id": "1"}), "history").await;
    assert_eq!(missed["messages"][0]["content"], "still?");

    // A burst over the rate limit is refused; the connection and everyone else carry on.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..30 {
        v.send_json(json!({"method": "conversation_list"})).await;
    }
    v.next_where(|m| m["msg"] == "rate limit").await;
    a1.send_json(json!({"method": "conversation_list"})).await;
    a1.next_where(|m| m["method"] == "conversation_list").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_go_to_the_upstream() {
    let (url, _) = start_upstream("127.56.0.9").await;
    let cfg = format!("upstream_url = \"{url}\"\nupstream_token = \"up-secret\"\nupstream_timeout = 1.0");
    let c = chat_system(56, &cfg).await;
    let (mut a1, _) = agent(&c.a.ws, "8", "a1", "Alice").await;
    let r = a1.request(json!({"method": "echo", "x": [1, "two"]}), "echo").await;
    assert_eq!(r["target"], "/api/echo?token=up-secret");
    assert_eq!(r["auth"], "Bearer up-secret");
    assert_eq!((r["uid"].as_str(), r["bid"].as_str()), (Some("a1"), Some("8")));
    assert_eq!(r["client"].as_str().map(str::len), Some(20));
    assert_eq!(serde_json::from_str::<Value>(r["body"].as_str().expect("body")).expect("json"), json!({"method": "echo", "x": [1, "two"]}));
    let r = a1.request(json!({"method": "fail"}), "fail").await;
    assert_eq!(r["code"], "500");

    // A slow upstream answers 504 after the timeout, and meanwhile nobody waits for it.
    let (mut b2, _) = agent(&c.b.ws, "8", "b2", "Bob").await;
    b2.request(json!({"method": "join", "room": "r"}), "join").await;
    a1.request(json!({"method": "join", "room": "r"}), "join").await;
    let started = std::time::Instant::now();
    a1.send_json(json!({"method": "slow"})).await;
    a1.send_json(json!({"method": "say", "room": "r", "content": "not blocked", "cid": "nb"})).await;
    a1.next_where(|m| m["method"] == "say_ack" && m["cid"] == "nb").await;
    b2.next_where(|m| m["content"] == "not blocked").await;
    assert!(started.elapsed() < Duration::from_millis(900), "messages waited for the slow upstream");
    let r = a1.next_where(|m| m["method"] == "slow").await;
    assert_eq!(r["code"], "504");
    let r = a1.request(json!({"method": "../x"}), "../x").await;
    assert_eq!(r["code"], "10005");
    for w in &c.workers {
        assert!(!w.log_text().contains("up-secret"), "the upstream token never reaches the logs");
    }
}

/// What one agent learned from a frame: agents that came (`login` list, `login_push`, the
/// login changes of a `presence_push`, rows saying 1) and agents that went.
fn presence_news(v: &Value, came: &mut HashSet<String>, went: &mut HashSet<String>) {
    let id = |x: &Value| x["customer_id"].as_str().unwrap_or("").to_string();
    let rows = |v: &Value, came: &mut HashSet<String>, went: &mut HashSet<String>| {
        for row in v["agents"].as_array().expect("agents") {
            let id = row[0].as_str().expect("a row's id").to_string();
            assert!(row[1].is_string(), "a row's name: {row}");
            match row[2].as_u64() {
                Some(1) => came.insert(id),
                Some(0) => went.insert(id),
                _ => panic!("a row's status is 1 or 0: {row}"),
            };
        }
    };
    match v["method"].as_str() {
        Some("login") if v.get("agents").is_some() => rows(v, came, went),
        Some("login") => came.extend(v["customer_list"].as_array().expect("customer_list").iter().map(id)),
        Some("agents_push") => rows(v, came, went),
        Some("login_push") => {
            came.insert(id(v));
        }
        Some("logout_push") => {
            went.insert(id(v));
        }
        Some("presence_push") => {
            for c in v["changes"].as_array().expect("changes") {
                presence_news(c, came, went);
            }
        }
        _ => {}
    }
}

/// Reads presence frames until `done` holds, checking each is of the form the agent asked for
/// (`single`, `batch` or `compact`).
async fn follow_presence(
    c: &mut Client,
    form: &str,
    came: &mut HashSet<String>,
    went: &mut HashSet<String>,
    done: impl Fn(&HashSet<String>, &HashSet<String>) -> bool,
) {
    let (list, pushes): (&str, &[&str]) = match form {
        "single" => ("customer_list", &["login_push", "logout_push"]),
        "batch" => ("customer_list", &["presence_push"]),
        _ => ("agents", &["agents_push"]),
    };
    while !done(came, went) {
        let v =
            c.next_where(|v| matches!(v["method"].as_str(), Some("login" | "login_push" | "logout_push" | "presence_push" | "agents_push"))).await;
        assert!(v.get("code").is_none(), "refused: {v}");
        let method = v["method"].as_str().unwrap_or("");
        if method == "login" {
            assert!(v.get(list).is_some(), "an agent with presence {form} got no {list}: {v}");
            assert_eq!(v.get("customer_list").is_some() as u8 + v.get("agents").is_some() as u8, 1, "one list: {v}");
        } else {
            assert!(pushes.contains(&method), "an agent with presence {form} got {v}");
        }
        presence_news(&v, came, went);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_leaves_every_agent_knowing_every_other() {
    // Agents on two gateways, served by two workers, all logging in at once: each must learn of
    // every other from its login's list or a push (a race lost there leaves an agent blind to
    // a colleague), in the form it asked for, and of every one that leaves.
    let c = chat_system(173, "").await;
    const N: usize = 120;
    let mut clients = Vec::new();
    for i in 0..N {
        clients.push(Client::chat(if i % 2 == 0 { &c.a.ws } else { &c.b.ws }).await);
    }
    let r = clients[0]
        .request(json!({"method": "login", "bid": "s", "customer_id": "x", "customer_name": "X", "token": token("s", "x"), "presence": 5}), "login")
        .await;
    assert_eq!(r["code"], "10005", "presence must be single, batch or compact: {r}");
    let form = |i: usize| ["single", "batch", "compact"][i % 3];
    for (i, cl) in clients.iter_mut().enumerate() {
        let id = format!("s{i}");
        cl.send_json(json!({"method": "login", "bid": "s", "customer_id": id, "customer_name": id, "token": token("s", &id), "presence": form(i)}))
            .await;
    }
    let everyone: HashSet<String> = (0..N).map(|i| format!("s{i}")).collect();
    let mut known: Vec<(HashSet<String>, HashSet<String>)> = vec![Default::default(); N];
    futures_util::future::join_all(clients.iter_mut().zip(known.iter_mut()).enumerate().map(|(i, (cl, (came, went)))| {
        let everyone = &everyone;
        async move { follow_presence(cl, form(i), came, went, |came, _| came == everyone).await }
    }))
    .await;

    // The first half leaves; the rest hear of each departure.
    let stay = clients.split_off(N / 2);
    drop(clients);
    let gone: HashSet<String> = (0..N / 2).map(|i| format!("s{i}")).collect();
    let mut stay = stay;
    futures_util::future::join_all(stay.iter_mut().zip(known.iter_mut().skip(N / 2)).enumerate().map(|(k, (cl, (came, went)))| {
        let gone = &gone;
        async move { follow_presence(cl, form(N / 2 + k), came, went, |_, went| went == gone).await }
    }))
    .await;
}
