//! Moving a box's history from SQLite into PostgreSQL or MySQL with `switchboard store copy`:
//! a chat runs on SQLite, its file is copied (twice: the second run changes nothing), and a
//! chat started on the target database carries on where the first left off: the conversation,
//! its history, read state, a re-sent `cid` recognised, new ids continuing after the old.

mod common;

use common::sqldb::SqlDb;
use common::*;
use serde_json::json;

const SECRET: &str = "copy-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_history_moves_to_postgres() {
    let db = SqlDb::postgres("copy").await;
    moves_to(168, 169, &db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_history_moves_to_mysql() {
    let db = SqlDb::mysql("copy").await;
    moves_to(170, 171, &db.url).await;
}

async fn moves_to(net: u8, net_after: u8, target: &str) {
    // Before: a conversation on SQLite.
    let before = chat_system_with(net, &format!("agent_secret = \"{SECRET}\""), SECRET).await;
    let (mut agent, _) = agent_with(&before.a.ws, SECRET, "3", "a1", "Ana").await;
    let mut visitor = Client::chat(&before.b.ws).await;
    let login = visitor.request(json!({"method": "visitor_login", "bid": "3", "visitor_id": "v-copy", "name": "Vic"}), "visitor_login").await;
    let conv = login["conversation_id"].as_str().expect("conversation").to_string();
    for i in 1..=3 {
        let r = visitor.request(json!({"method": "say", "content": format!("question {i}"), "cid": format!("q{i}")}), "say_ack").await;
        assert!(r.get("code").is_none(), "{r}");
    }
    let r = agent.request(json!({"method": "say", "conversation_id": conv, "content": "answer", "cid": "a1"}), "say_ack").await;
    assert!(r.get("code").is_none(), "{r}");
    let db_file = before.dir.0.join("chat.db");

    // The copy, twice.
    let copy = || {
        std::process::Command::new(BIN)
            .args(["store", "copy", "--from", &format!("sqlite:{}", db_file.display()), "--to", target])
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("store copy")
    };
    for run in 1..=2 {
        let out = copy();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "run {run}: {}\n{text}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("messages") && text.contains("4 rows") && text.contains("verified"), "run {run}: {text}");
        assert!(text.contains("conversations") && text.contains("copied and verified"), "run {run}: {text}");
    }
    drop((agent, visitor));
    drop(before);

    // After: a chat on the target database.
    let after = chat_system_with(net_after, &format!("agent_secret = \"{SECRET}\"\nstore = \"{target}\""), SECRET).await;
    let (mut agent, login) = agent_with(&after.a.ws, SECRET, "3", "a1", "Ana").await;
    assert!(login["conversations"].as_array().is_some_and(|l| l.iter().any(|c| c["conversation_id"] == conv.as_str())), "{login}");
    let h = agent.request(json!({"method": "history", "conversation_id": conv}), "history").await;
    let texts: Vec<&str> = h["messages"].as_array().expect("messages").iter().filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(texts, ["question 1", "question 2", "question 3", "answer"], "{h}");
    let mut visitor = Client::chat(&after.b.ws).await;
    let again = visitor.request(json!({"method": "visitor_login", "bid": "3", "visitor_id": "v-copy", "name": "Vic"}), "visitor_login").await;
    assert_eq!(again["conversation_id"], conv.as_str(), "the visitor resumes the copied conversation");
    // A re-sent cid is the stored message, not a new one; a new message continues the ids.
    let resent = visitor.request(json!({"method": "say", "content": "question 2", "cid": "q2"}), "say_ack").await;
    assert_eq!(resent["id"], "2", "{resent}");
    let fresh = visitor.request(json!({"method": "say", "content": "question 4", "cid": "q4"}), "say_ack").await;
    assert_eq!(fresh["id"], "5", "{fresh}");
}
