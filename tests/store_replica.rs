//! `store_read`: history, conversation lists and unread counts come from a real streaming
//! replica (made by the test, `common::replica`), yet no client ever misses what it wrote
//! itself, even with the replica's replay paused; a replica that dies costs nothing but latency.

mod common;

use common::replica::Replicated;
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "replica-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_replica_serves_reads_and_each_client_reads_its_writes() {
    reads_your_writes(173, Replicated::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_replica_serves_reads_and_each_client_reads_its_writes() {
    reads_your_writes(174, Replicated::mariadb().await).await;
}

fn contents(history: &Value) -> Vec<String> {
    history["messages"].as_array().map(|l| l.iter().filter_map(|m| m["content"].as_str().map(String::from)).collect()).unwrap_or_default()
}

async fn reads_your_writes(net: u8, mut pair: Replicated) {
    let c = chat_system_with(net, &format!("store = \"{}\"\nstore_read = \"{}\"", pair.primary, pair.replica), SECRET).await;
    let (mut agent, _) = agent_with(&c.a.ws, SECRET, "7", "a1", "Ana").await;
    let mut visitor = Client::chat(&c.b.ws).await;
    let login = visitor.request(json!({"method": "visitor_login", "bid": "7", "visitor_id": "vis1"}), "visitor_login").await;
    let conv = login["conversation_id"].as_str().expect("conversation").to_string();
    let history = json!({"method": "history", "conversation_id": conv});
    let r = visitor.request(json!({"method": "say", "content": "hello", "cid": "1"}), "say_ack").await;
    assert!(r.get("code").is_none(), "{r}");
    agent.next_where(|m| m["method"] == "say" && m["content"] == "hello").await;

    // Once the replica has everything, the agent reads: from now on its reads may use the replica.
    pair.caught_up().await;
    assert_eq!(contents(&agent.request(history.clone(), "history").await), ["hello"]);

    // The replica stops applying; the visitor writes and reads at once: its own message is there.
    pair.pause().await;
    let r = visitor.request(json!({"method": "say", "content": "while paused", "cid": "2"}), "say_ack").await;
    assert!(r.get("code").is_none(), "{r}");
    assert_eq!(contents(&visitor.request(history.clone(), "history").await), ["hello", "while paused"], "a client reads its own write");
    agent.next_where(|m| m["method"] == "say" && m["content"] == "while paused").await;

    // The agent has written nothing since its read: its reads are served by the lagging replica,
    // which does not have the visitor's new message yet (it was delivered live all the same).
    assert_eq!(contents(&agent.request(history.clone(), "history").await), ["hello"], "the agent's read came from the replica");
    let list = agent.request(json!({"method": "conversation_list"}), "conversation_list").await;
    assert_eq!(list["conversations"][0]["last_message"]["content"], "hello", "{list}");

    // Once the agent writes, its next reads see its own reply, and everything before it.
    let r = agent.request(json!({"method": "say", "conversation_id": conv, "content": "reply", "cid": "3"}), "say_ack").await;
    assert!(r.get("code").is_none(), "{r}");
    assert_eq!(contents(&agent.request(history.clone(), "history").await), ["hello", "while paused", "reply"]);

    // A new connection of the visitor sees what it wrote before, replica or not.
    let mut again = Client::chat(&c.a.ws).await;
    again.request(json!({"method": "visitor_login", "bid": "7", "visitor_id": "vis1"}), "visitor_login").await;
    assert_eq!(contents(&again.request(history.clone(), "history").await), ["hello", "while paused", "reply"]);

    // Replay resumes: a second agent, which never wrote, catches up through the replica.
    pair.resume().await;
    pair.caught_up().await;
    let (mut other, _) = agent_with(&c.b.ws, SECRET, "7", "a2", "Bo").await;
    assert_eq!(contents(&other.request(history.clone(), "history").await), ["hello", "while paused", "reply"]);

    // The replica dies: reads go to the primary; nobody gets an error.
    pair.kill_replica();
    for client in [&mut agent, &mut other, &mut visitor] {
        let h = client.request(history.clone(), "history").await;
        assert_eq!(contents(&h), ["hello", "while paused", "reply"], "{h}");
    }
    let r = visitor.request(json!({"method": "say", "content": "after", "cid": "4"}), "say_ack").await;
    assert!(r.get("code").is_none(), "writes never touched the replica: {r}");
    let logs: String = c.workers.iter().map(|w| w.log_text()).collect();
    assert!(logs.contains("reads that may lag go to the replica"), "{logs}");
}

/// A worker given a replica it cannot use for read-your-writes refuses to start, saying why,
/// rather than serving reads that could hide a client's own messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_keep_the_promise_is_refused_at_start() {
    let dir = TempDir(std::env::temp_dir().join(format!("sb-replica-refused-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let pg = common::sqldb::SqlDb::postgres("replica").await;
    let my = common::sqldb::SqlDb::mysql("replica").await;
    let mut cases = vec![
        // Not the same kind of database as the store.
        (format!("sqlite:{}/chat.db", dir.0.display()), pg.url.clone(), "same kind of database"),
        (pg.url.clone(), my.url.clone(), "same kind of database"),
    ];
    // A MariaDB primary without a binary log has no GTID position to wait for (the one at
    // MYSQL_URL has none unless its owner turned it on).
    let log_bin: i64 = {
        use sqlx::Connection;
        let mut c = sqlx::MySqlConnection::connect(&my.url).await.expect("MySQL");
        sqlx::query_scalar("SELECT @@log_bin").fetch_one(&mut c).await.expect("log_bin")
    };
    if log_bin == 0 {
        cases.push((my.url.clone(), my.url.clone(), "log_bin"));
    } else {
        eprintln!("the MariaDB at MYSQL_URL has a binary log: the no-GTID case is not tried");
    }
    for (i, (store, read, why)) in cases.iter().enumerate() {
        let cfg = dir.0.join(format!("case{i}.toml"));
        std::fs::write(&cfg, format!("[events]\nstore = \"{store}\"\nstore_read = \"{read}\"\n")).expect("config");
        let mut w = Proc::start(&format!("replica-refused-{i}"), &["--config", cfg.to_str().expect("path"), "business", "--register", "127.0.0.1:1"]);
        assert!(w.wait_exit(std::time::Duration::from_secs(20)).is_some_and(|c| c != 0), "case {i}: the worker refuses to start");
        let log = w.log_text();
        assert!(log.contains("store_read") && log.contains(why), "case {i}: {log}");
    }
}
