//! One suite, both backends: the SQLite file (two handles on one file stand for two worker
//! processes) and a real Redis (REDIS_URL, default redis://127.0.0.1:6379). A missing Redis is
//! a failure, not a skip: CI starts one.

use events::store::redis::RedisStore;
use events::store::sqlite::SqliteStore;
use events::store::{Inserted, NewMessage, Store};
use std::sync::Arc;

fn msg(thread: &str, from: &str, cid: Option<&str>, content: &str) -> NewMessage {
    let mut to = serde_json::Map::new();
    to.insert("room".into(), "lobby".into());
    NewMessage {
        thread: thread.into(),
        from_uid: from.into(),
        from_name: format!("{from} name"),
        cid: cid.map(str::to_string),
        content: content.into(),
        to,
    }
}

/// `a` and `b` are two handles on the same data, as two workers would have.
async fn suite(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    // Ids increase per thread; a re-sent cid returns the original.
    let Inserted::New(m1) = a.insert_message(msg("t1", "u1", Some("c1"), "one")).await.expect("insert") else { panic!("new") };
    assert_eq!(m1.id, 1);
    assert_eq!(m1.to.get("room").and_then(|v| v.as_str()), Some("lobby"));
    let Inserted::New(m2) = b.insert_message(msg("t1", "u2", None, "two")).await.expect("insert") else { panic!("new") };
    assert_eq!(m2.id, 2);
    match b.insert_message(msg("t1", "u1", Some("c1"), "one again")).await.expect("insert") {
        Inserted::Duplicate(d) => assert_eq!((d.id, d.content.as_str()), (1, "one")),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    let Inserted::New(o) = a.insert_message(msg("t2", "u1", None, "other thread")).await.expect("insert") else { panic!("new") };
    assert_eq!(o.id, 1);

    // Concurrent inserts from both handles: distinct ids, one winner per cid.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move { s.insert_message(msg("t3", "u9", Some(&format!("k{}", i / 2)), "x")).await }));
    }
    let mut fresh = Vec::new();
    for t in tasks {
        if let Inserted::New(m) = t.await.expect("join").expect("insert") {
            fresh.push(m.id);
        }
    }
    fresh.sort();
    assert_eq!(fresh, (1..=10).collect::<Vec<_>>(), "ten cids, ten messages, ids without gaps");

    // History pages backwards and forwards.
    for i in 3..=6 {
        a.insert_message(msg("t1", "u2", None, &format!("m{i}"))).await.expect("insert");
    }
    let last2 = a.history("t1", None, None, 2).await.expect("history");
    assert_eq!(last2.iter().map(|m| m.id).collect::<Vec<_>>(), vec![5, 6]);
    let before = b.history("t1", Some(5), None, 10).await.expect("history");
    assert_eq!(before.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    let after = b.history("t1", None, Some(4), 10).await.expect("history");
    assert_eq!(after.iter().map(|m| m.id).collect::<Vec<_>>(), vec![5, 6]);
    assert_eq!(before[0].from_name, "u1 name");

    // Unread: others' messages after the mark; the mark never moves back.
    assert_eq!(a.unread("t1", "u1").await.expect("unread"), 5);
    a.mark_read("t1", "u1", 4).await.expect("mark");
    b.mark_read("t1", "u1", 2).await.expect("mark");
    assert_eq!(a.unread("t1", "u1").await.expect("unread"), 2);

    // Conversations: one open per visitor and bot; resumed; closed ones are not resumed.
    let c1 = a.open_conversation("bot", "v1", "Vee").await.expect("open");
    let again = b.open_conversation("bot", "v1", "Vee").await.expect("open");
    assert_eq!(c1.id, again.id);
    let c2 = b.open_conversation("bot", "v2", "Wee").await.expect("open");
    assert_eq!(a.conversations("bot").await.expect("list").len(), 2);

    // Assignment is a compare-and-set: racing handles, exactly one winner.
    let (x, y) = tokio::join!(a.assign(&c1.id, "alice", None), b.assign(&c1.id, "bob", None));
    assert!(x.expect("assign") ^ y.expect("assign"), "exactly one assignment wins");
    let holder = a.conversation(&c1.id).await.expect("get").expect("exists").assigned.expect("assigned");
    assert!(!a.assign(&c1.id, "carol", Some("nobody")).await.expect("cas"), "wrong expected holder");
    assert!(a.assign(&c1.id, "carol", Some(&holder)).await.expect("transfer"));
    assert!(b.assign(&c2.id, "carol", None).await.expect("assign"));
    assert_eq!(a.load("bot").await.expect("load").get("carol"), Some(&2));

    assert!(a.close_conversation(&c1.id).await.expect("close"));
    assert!(!b.close_conversation(&c1.id).await.expect("close twice"));
    assert!(!a.assign(&c1.id, "dave", Some("carol")).await.expect("closed"), "a closed conversation keeps its agent");
    let c3 = a.open_conversation("bot", "v1", "Vee").await.expect("reopen");
    assert_ne!(c3.id, c1.id);
    let open: Vec<String> = b.conversations("bot").await.expect("list").iter().map(|c| c.id.clone()).collect();
    assert_eq!(open, vec![c2.id.clone(), c3.id.clone()]);

    // Agents and turns.
    a.add_agent("bot", "alice", "Alice").await.expect("agent");
    assert_eq!(b.agent_name("bot", "alice").await.expect("name").as_deref(), Some("Alice"));
    assert_eq!(b.agent_name("other", "alice").await.expect("name"), None);
    let t1 = a.next_turn("bot").await.expect("turn");
    let t2 = b.next_turn("bot").await.expect("turn");
    assert_eq!(t2, t1 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store() {
    let dir = std::env::temp_dir().join(format!("sb-store-{}", std::process::id()));
    let path = dir.join("store.db");
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).expect("open"));
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).expect("open twice"));
    suite(a, b).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("sbtest:{}:{}:", std::process::id(), events::store::now_ms());
    let a = RedisStore::connect(&url, &prefix)
        .await
        .unwrap_or_else(|e| panic!("Redis is required for this test (REDIS_URL={url}): {e}"));
    let b = RedisStore::connect(&url, &prefix).await.expect("second connection");
    suite(Arc::new(a), Arc::new(b)).await;
}
