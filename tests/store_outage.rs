//! The database goes away under a live chat and comes back: a message is acknowledged only once
//! it is stored, a refused one gets a clear error frame, the workers stay up, and they recover
//! by themselves; a resend of a refused message (same `cid`) is stored once. The database sits
//! behind a relay the test cuts (`common::cut`), as a dead server or a firewall would.

mod common;

use common::cut::Relay;
use common::sqldb::SqlDb;
use common::*;
use serde_json::json;
use std::time::Duration;

const SECRET: &str = "outage-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_loses_nothing_acknowledged() {
    let db = SqlDb::postgres("outage").await;
    outage(166, &db.url, "127.0.0.1:5432").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_outage_loses_nothing_acknowledged() {
    let db = SqlDb::mysql("outage").await;
    outage(167, &db.url, "127.0.0.1:3306").await;
}

async fn outage(net: u8, url: &str, server: &str) {
    let relay = Relay::start(&format!("127.{net}.0.9"), server).await;
    let through_relay = url.replace(server, &relay.addr);
    let mut c = chat_system_with(net, &format!("store = \"{through_relay}\"\nstore_timeout = 1.0"), SECRET).await;
    let (mut agent, _) = agent_with(&c.a.ws, SECRET, "7", "a1", "Ana").await;
    let mut visitor = Client::chat(&c.b.ws).await;
    let login = visitor.request(json!({"method": "visitor_login", "bid": "7"}), "visitor_login").await;
    let conv = login["conversation_id"].as_str().expect("conversation").to_string();
    let say = |cid: String| json!({"method": "say", "content": format!("message {cid}"), "cid": cid});

    let mut acked = Vec::new();
    for i in 0..5 {
        let r = visitor.request(say(format!("before{i}")), "say_ack").await;
        assert!(r.get("code").is_none(), "{r}");
        acked.push(format!("before{i}"));
    }

    relay.cut();
    let mut refused = Vec::new();
    for i in 0..5 {
        let cid = format!("during{i}");
        let r = visitor.request(say(cid.clone()), "say_ack").await;
        match r.get("code") {
            None => acked.push(cid),
            Some(code) => {
                assert_eq!(code, "500", "{r}");
                assert!(r["msg"].as_str().unwrap_or("").contains("store is unavailable"), "a clear reason: {r}");
                refused.push(cid);
            }
        }
    }
    assert!(!refused.is_empty(), "with the database cut off, messages are refused, not acknowledged");
    for w in c.workers.iter_mut() {
        assert!(w.is_running(), "{} stays up through the outage", w.name);
    }

    relay.heal();
    // The client resends what was refused (same cid) until it is taken; the workers reconnect
    // by themselves.
    for cid in &refused {
        let mut tries = 0;
        loop {
            let r = visitor.request(say(cid.clone()), "say_ack").await;
            if r.get("code").is_none() {
                acked.push(cid.clone());
                break;
            }
            tries += 1;
            assert!(tries < 50, "{cid} is still refused after the database came back: {r}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for i in 0..3 {
        let r = visitor.request(say(format!("after{i}")), "say_ack").await;
        assert!(r.get("code").is_none(), "{r}");
        acked.push(format!("after{i}"));
    }

    // Everything acknowledged is in the history, once.
    let h = agent.request(json!({"method": "history", "conversation_id": conv, "limit": 100}), "history").await;
    let stored: Vec<String> = h["messages"].as_array().expect("messages").iter().filter_map(|m| m["cid"].as_str().map(str::to_string)).collect();
    for cid in &acked {
        assert_eq!(stored.iter().filter(|s| *s == cid).count(), 1, "{cid}: acknowledged, so stored exactly once; history {stored:?}");
    }
    assert!(relay.accepted.load(std::sync::atomic::Ordering::SeqCst) > 0);
}
