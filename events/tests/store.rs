//! One suite, every backend: the SQLite file (two handles on one file stand for two worker
//! processes), a real Redis (REDIS_URL, default redis://127.0.0.1:6379) and a real PostgreSQL
//! (POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test; each test makes a database
//! of its own there and drops it). A missing server is a failure, not a skip: CI starts them.

use events::store::line::{delivery, InboxEvent, OutItem};
use events::store::mysql::MySqlStore;
use events::store::postgres::PgStore;
use events::store::redis::RedisStore;
use events::store::sqlite::SqliteStore;
use events::store::PoolConfig;
use events::store::{Inserted, NewMessage, Store};
use std::sync::Arc;

// The one helper that makes a throwaway SQL database, shared with the workspace's tests.
#[path = "../../tests/common/sqldb.rs"]
mod sqldb;
use sqldb::SqlDb;

fn msg(thread: &str, from: &str, cid: Option<&str>, content: &str) -> NewMessage {
    let mut to = serde_json::Map::new();
    to.insert("room".into(), "lobby".into());
    NewMessage {
        thread: thread.into(),
        sender: format!("a:bot:{from}"),
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
    // A cid means "the same message" only from the same sender in the same thread: reused in
    // another thread, or by another sender (another bot's agent of the same id), it is new.
    let Inserted::New(o2) = b.insert_message(msg("t2", "u1", Some("c1"), "c1 elsewhere")).await.expect("insert") else {
        panic!("a cid reused in another thread is a new message")
    };
    assert_eq!((o2.id, o2.content.as_str()), (2, "c1 elsewhere"));
    let mut other_bot = msg("t1", "u1", Some("c1"), "another bot's u1");
    other_bot.sender = "a:bot2:u1".into();
    let Inserted::New(o3) = a.insert_message(other_bot).await.expect("insert") else { panic!("another sender's cid is a new message") };
    assert_eq!(o3.id, 3);

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
    assert_eq!(last2.iter().map(|m| m.id).collect::<Vec<_>>(), vec![6, 7]);
    let before = b.history("t1", Some(5), None, 10).await.expect("history");
    assert_eq!(before.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    let after = b.history("t1", None, Some(4), 10).await.expect("history");
    assert_eq!(after.iter().map(|m| m.id).collect::<Vec<_>>(), vec![5, 6, 7]);
    assert_eq!(before[0].from_name, "u1 name");
    assert_eq!(before[0].sender, "a:bot:u1");

    // Unread: others' messages after the mark (by sender identity); the mark never moves back.
    assert_eq!(a.unread("t1", "a:bot:u1").await.expect("unread"), 6);
    assert_eq!(a.read_mark("t1", "a:bot:u1").await.expect("read mark"), None);
    a.mark_read("t1", "a:bot:u1", 4).await.expect("mark");
    b.mark_read("t1", "a:bot:u1", 2).await.expect("mark");
    assert_eq!(a.unread("t1", "a:bot:u1").await.expect("unread"), 3);
    // A mark only moves forward, and reads back where it stands (a feed follower's cursor).
    assert_eq!(b.read_mark("t1", "a:bot:u1").await.expect("read mark"), Some(4));
    assert_eq!(b.read_mark("t1", "someone else").await.expect("read mark"), None);

    // Leases: one holder at a time, seen alike from both connections; the holder renews it;
    // once it expires it passes on.
    let now = events::store::now_ms();
    assert!(a.lease("webhook:t", "p1", now, 400).await.expect("lease"));
    assert!(!b.lease("webhook:t", "p2", now, 400).await.expect("lease"), "held by p1");
    assert!(b.lease("webhook:t", "p1", now, 400).await.expect("lease"), "renewed by its holder");
    assert!(a.lease("webhook:other", "p2", now, 400).await.expect("lease"), "another lease is free");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let now = events::store::now_ms();
    assert!(b.lease("webhook:t", "p2", now, 400).await.expect("lease"), "expired: passes on");
    assert!(!a.lease("webhook:t", "p1", now, 400).await.expect("lease"), "now p2's");

    // Conversations: one open per visitor and bot; resumed; closed ones are not resumed.
    let (c1, created) = a.open_conversation("bot", "v1", "Vee").await.expect("open");
    assert!(created);
    let (again, created) = b.open_conversation("bot", "v1", "Vee").await.expect("open");
    assert_eq!(c1.id, again.id);
    assert!(!created, "resumed, not created");
    let (c2, _) = b.open_conversation("bot", "v2", "Wee").await.expect("open");
    // Ids joined by a separator cannot meet: bot "bot:v2" visitor "x" is not bot "bot" visitor "v2:x".
    let (s1, _) = a.open_conversation("b:1", "x", "X").await.expect("open");
    let (s2, _) = a.open_conversation("b", "1:x", "X").await.expect("open");
    assert_ne!(s1.id, s2.id);
    assert_eq!(a.conversations("bot", None, usize::MAX).await.expect("list").len(), 2);
    // Pages: the first one, then the rest after it (two opened in the same millisecond may
    // come in either order, so the pages are checked as a whole).
    let first = b.conversations("bot", None, 1).await.expect("page");
    assert_eq!(first.len(), 1);
    let rest = a.conversations("bot", Some(&first[0].id), 10).await.expect("page");
    let mut paged: Vec<&str> = first.iter().chain(&rest).map(|c| c.id.as_str()).collect();
    paged.sort();
    let mut both = vec![c1.id.as_str(), c2.id.as_str()];
    both.sort();
    assert_eq!(paged, both);

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
    let (c3, _) = a.open_conversation("bot", "v1", "Vee").await.expect("reopen");
    assert_ne!(c3.id, c1.id);
    // By creation time; two opened in the same millisecond may come in either order.
    let open = b.conversations("bot", None, usize::MAX).await.expect("list");
    assert!(open.windows(2).all(|w| w[0].created <= w[1].created), "ordered by creation time");
    let mut ids: Vec<String> = open.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    let mut want = vec![c2.id.clone(), c3.id.clone()];
    want.sort();
    assert_eq!(ids, want);

    summaries_suite(&a, &b, &c2.id, &c3.id).await;

    // Agents and turns.
    a.add_agent("bot", "alice", "Alice").await.expect("agent");
    assert_eq!(b.agent_name("bot", "alice").await.expect("name").as_deref(), Some("Alice"));
    assert_eq!(b.agent_name("other", "alice").await.expect("name"), None);
    let t1 = a.next_turn("bot").await.expect("turn");
    let t2 = b.next_turn("bot").await.expect("turn");
    assert_eq!(t2, t1 + 1);

    line_suite(a.clone(), b.clone()).await;
    retention_suite(a, b).await;
}

/// A page of summaries is what asking for the page, then each conversation's unread count and
/// newest message, would give: for the reader it is asked for, paged the same way. `open` are
/// the bot's two open conversations, oldest first.
async fn summaries_suite(a: &Arc<dyn Store>, b: &Arc<dyn Store>, first: &str, second: &str) {
    let reader = "a:bot:carol";
    let t1 = events::keys::conversation_thread(first);
    let mut from_visitor = msg(&t1, "v2", None, "hello");
    from_visitor.sender = "v:bot:v2".into();
    a.insert_message(from_visitor.clone()).await.expect("insert");
    from_visitor.content = "anyone?".into();
    let Inserted::New(newest) = b.insert_message(from_visitor).await.expect("insert") else { panic!("new") };
    let mut own = msg(&t1, "carol", None, "on my way");
    own.sender = reader.into();
    let Inserted::New(reply) = a.insert_message(own).await.expect("insert") else { panic!("new") };
    b.mark_read(&t1, reader, newest.id - 1).await.expect("mark");

    let page = b.conversation_summaries("bot", reader, None, 10).await.expect("summaries");
    let ids: Vec<&str> = page.iter().map(|s| s.conversation.id.as_str()).collect();
    let listed = a.conversations("bot", None, 10).await.expect("list");
    assert_eq!(ids, listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), "the page, in its order");
    for s in &page {
        let thread = events::keys::conversation_thread(&s.conversation.id);
        assert_eq!(s.unread, a.unread(&thread, reader).await.expect("unread"), "unread in {thread}");
        assert_eq!(s.last, a.history(&thread, None, None, 1).await.expect("history").pop(), "newest in {thread}");
    }
    let by_id = |id: &str| page.iter().find(|s| s.conversation.id == id).expect("listed");
    // After the mark: the visitor's newest, not the reader's own reply.
    assert_eq!(by_id(first).unread, 1);
    assert_eq!(by_id(first).last.as_ref().map(|m| m.id), Some(reply.id));
    assert_eq!((by_id(second).unread, by_id(second).last.clone()), (0, None), "nothing said there");
    // Another reader has read nothing, and sent nothing.
    let other = a.conversation_summaries("bot", "a:bot:dave", None, 10).await.expect("summaries");
    assert_eq!(other.iter().find(|s| s.conversation.id == first).map(|s| s.unread), Some(3));
    // Paged as `conversations` pages.
    let head = a.conversation_summaries("bot", reader, None, 1).await.expect("page");
    let tail = b.conversation_summaries("bot", reader, Some(&head[0].conversation.id), 10).await.expect("page");
    assert_eq!(head.iter().chain(&tail).map(|s| s.conversation.id.as_str()).collect::<Vec<_>>(), ids);
    assert!(a.conversation_summaries("another bot", reader, None, 10).await.expect("summaries").is_empty(), "another bot's are not listed");
}

/// Retention deletes by age, in batches, across threads, and forgets the deleted `cid`s; what is
/// newer stays. Run last: it deletes everything the suite wrote before.
async fn retention_suite(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    a.insert_message(msg("old", "u1", Some("o1"), "old one")).await.expect("insert");
    a.insert_message(msg("old", "u1", Some("o2"), "old two")).await.expect("insert");
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let cutoff = events::store::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let Inserted::New(kept) = b.insert_message(msg("old", "u1", Some("n1"), "new one")).await.expect("insert") else { panic!("new") };
    assert_eq!(a.delete_messages_before(cutoff, 1).await.expect("delete"), 1, "one batch of one");
    let mut rest = 0;
    loop {
        let n = b.delete_messages_before(cutoff, 50).await.expect("delete");
        rest += n;
        if n < 50 {
            break;
        }
    }
    assert!(rest >= 1, "the rest of the old messages, in every thread");
    assert_eq!(a.delete_messages_before(cutoff, 50).await.expect("delete"), 0, "nothing old is left");
    let left = a.history("old", None, None, 10).await.expect("history");
    assert_eq!(left.iter().map(|m| m.id).collect::<Vec<_>>(), vec![kept.id], "only the newer message stays");
    assert!(a.history("t1", None, None, 10).await.expect("history").is_empty(), "other threads' old messages went too");
    // A deleted message's cid is forgotten: sent again, it is a new message after the kept one.
    let Inserted::New(again) = a.insert_message(msg("old", "u1", Some("o1"), "old one")).await.expect("insert") else {
        panic!("a deleted message's cid is not a duplicate")
    };
    assert!(again.id > kept.id);
}

fn out(thread: &str, msg_id: i64, to: &str, now: i64) -> OutItem {
    OutItem {
        id: 0,
        bid: "bot".into(),
        to: to.into(),
        conversation_id: "c".into(),
        thread: thread.into(),
        msg_id,
        text: format!("reply {msg_id}"),
        reply_token: None,
        token_at: 0,
        reply_tried: false,
        retry_key: format!("key-{thread}-{msg_id}"),
        state: delivery::QUEUED.into(),
        attempts: 0,
        due: now,
        created: now,
        error: None,
    }
}

/// The LINE channel's inbox, users and outgoing queue.
async fn line_suite(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    // The inbox keeps each webhook event id once, in order, until it is done.
    let ev = |id: &str| InboxEvent { event_id: id.into(), bid: "bot".into(), event: format!("{{\"webhookEventId\":\"{id}\"}}") };
    assert_eq!(a.line_inbox_put(vec![ev("e1"), ev("e2")]).await.expect("put"), 2);
    assert_eq!(b.line_inbox_put(vec![ev("e2"), ev("e3")]).await.expect("put"), 1, "e2 is a redelivery");
    let pending = b.line_inbox_pending(10).await.expect("pending");
    assert_eq!(pending.iter().map(|(_, e)| e.event_id.as_str()).collect::<Vec<_>>(), ["e1", "e2", "e3"]);
    assert_eq!(pending[0].1, ev("e1"));
    a.line_inbox_done(pending[0].0).await.expect("done");
    let left = b.line_inbox_pending(10).await.expect("pending");
    assert_eq!(left.iter().map(|(_, e)| e.event_id.as_str()).collect::<Vec<_>>(), ["e2", "e3"]);
    assert_eq!(a.line_inbox_put(vec![ev("e1")]).await.expect("put"), 0, "a done event is still remembered");

    // Users: name, follow state, and a reply token taken once, only while fresh.
    assert_eq!(a.line_user("bot", "U1").await.expect("user"), None);
    a.line_user_name("bot", "U1", "Yuki").await.expect("name");
    b.line_user_followed("bot", "U1", false).await.expect("unfollow");
    let u = a.line_user("bot", "U1").await.expect("user").expect("known");
    assert_eq!((u.name.as_deref(), u.followed), (Some("Yuki"), false));
    a.line_reply_token_put("bot", "U1", "tok-new", 2000).await.expect("token");
    b.line_reply_token_put("bot", "U1", "tok-old", 1000).await.expect("older token");
    let (x, y) = tokio::join!(a.line_reply_token_take("bot", "U1", 1500), b.line_reply_token_take("bot", "U1", 1500));
    let taken: Vec<_> = [x.expect("take"), y.expect("take")].into_iter().flatten().collect();
    assert_eq!(taken, vec![("tok-new".to_string(), 2000)], "the newest token, to one taker");
    a.line_reply_token_put("bot", "U1", "tok-stale", 3000).await.expect("token");
    assert_eq!(a.line_reply_token_take("bot", "U1", 5000).await.expect("take"), None, "a stale token is not used");
    assert_eq!(a.line_reply_token_take("bot", "U1", 0).await.expect("take"), None, "and it is gone");

    // The queue: one item per message, a user's items in order, leases, release, save.
    let now = 1_000_000;
    let q1 = a.line_outbox_push(out("c:x", 1, "U1", now)).await.expect("push");
    assert!(q1.id > 0);
    let again = b.line_outbox_push(out("c:x", 1, "U1", now)).await.expect("push again");
    assert_eq!(again, q1, "a repeat returns the first");
    let q2 = b.line_outbox_push(out("c:x", 2, "U1", now)).await.expect("push");
    let q3 = a.line_outbox_push(out("c:y", 1, "U2", now)).await.expect("push");
    let first = a.line_outbox_claim("s1", now, 1000).await.expect("claim").expect("an item");
    assert_eq!(first.id, q1.id);
    let second = b.line_outbox_claim("s2", now, 1000).await.expect("claim").expect("an item");
    assert_eq!(second.id, q3.id, "U1's second message waits for its first");
    let mut failed = second.clone();
    failed.state = delivery::FAILED.into();
    failed.error = Some("blocked".into());
    a.line_outbox_save(&failed, true).await.expect("save");
    assert_eq!(a.line_outbox_claim("s1", now, 1000).await.expect("claim"), None);
    // s1 dies; a restarted s1 takes its lease back at once.
    a.line_outbox_release("s1").await.expect("release");
    let retaken = b.line_outbox_claim("s1", now, 1000).await.expect("claim").expect("an item");
    assert_eq!(retaken.id, q1.id);
    // A note without release keeps the lease; a sent item leaves the queue.
    let mut noted = retaken.clone();
    noted.reply_tried = true;
    a.line_outbox_save(&noted, false).await.expect("note");
    assert_eq!(b.line_outbox_claim("s3", now, 1000).await.expect("claim"), None);
    noted.state = delivery::SENT.into();
    a.line_outbox_save(&noted, true).await.expect("save");
    let next = b.line_outbox_claim("s3", now, 1000).await.expect("claim").expect("U1's second");
    assert_eq!(next.id, q2.id);
    // Backoff: a queued item saved with a later due date waits for it; an expired lease frees it.
    let mut later = next.clone();
    later.due = now + 5000;
    later.attempts = 1;
    b.line_outbox_save(&later, true).await.expect("save");
    assert_eq!(a.line_outbox_claim("s1", now + 4000, 1000).await.expect("claim"), None);
    let due = a.line_outbox_claim("s1", now + 5000, 1000).await.expect("claim").expect("due");
    assert_eq!((due.id, due.attempts), (q2.id, 1));
    let expired = b.line_outbox_claim("s2", now + 7000, 1000).await.expect("claim").expect("lease expired");
    assert_eq!(expired.id, q2.id);
    let d = b.line_deliveries("c:x", &[1, 2, 3]).await.expect("deliveries");
    assert_eq!(d.get(&1), Some(&("sent".to_string(), None)));
    assert_eq!(d.get(&2).map(|x| x.0.as_str()), Some("queued"));
    assert!(!d.contains_key(&3));
    let d = a.line_deliveries("c:y", &[1]).await.expect("deliveries");
    assert_eq!(d.get(&1), Some(&("failed".to_string(), Some("blocked".to_string()))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store() {
    let dir = std::env::temp_dir().join(format!("sb-store-{}", std::process::id()));
    let _removed_at_the_end = Removed(dir.clone());
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
    let a = RedisStore::connect(&url, &prefix).await.unwrap_or_else(|e| panic!("Redis is required for this test (REDIS_URL={url}): {e}"));
    let b = RedisStore::connect(&url, &prefix).await.expect("second connection");
    suite(Arc::new(a), Arc::new(b)).await;
}

async fn store(db: &SqlDb) -> PgStore {
    PgStore::connect(&db.url, PoolConfig { max_connections: 4, acquire_timeout: std::time::Duration::from_secs(5) }).await.expect("connect")
}

fn pool(n: u32) -> PoolConfig {
    PoolConfig { max_connections: n, acquire_timeout: std::time::Duration::from_secs(10) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_store() {
    let db = SqlDb::mysql("suite").await;
    let a = MySqlStore::connect(&db.url, pool(4)).await.expect("connect");
    let b = MySqlStore::connect(&db.url, pool(4)).await.expect("connect");
    suite(Arc::new(a), Arc::new(b)).await;
}

/// As on PostgreSQL: ten workers at once migrate once (GET_LOCK), a newer schema is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_migrates_once_and_refuses_a_newer_schema() {
    let db = SqlDb::mysql("migrate").await;
    let starts = (0..10).map(|_| MySqlStore::connect(&db.url, pool(2)));
    for started in futures_util::future::join_all(starts).await {
        started.expect("every worker starts");
    }
    let store = MySqlStore::connect(&db.url, pool(1)).await.expect("connect");
    assert_eq!(store.version().await.expect("version"), 3);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM switchboard_schema").fetch_one(&store.pool).await.expect("count");
    assert_eq!(rows, 1, "one version row");
    sqlx::query("UPDATE switchboard_schema SET version = 99").execute(&store.pool).await.expect("bump");
    let err = MySqlStore::connect(&db.url, pool(1)).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("version 99") && err.contains("upgrade Switchboard"), "refused with the reason: {err}");
}

/// Ids are compared as bytes, whatever the server's default collation: agent `Ann` and agent
/// `ann` are two senders, and one's `cid` is not the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_keys_are_case_sensitive() {
    let db = SqlDb::mysql("case").await;
    let s = MySqlStore::connect(&db.url, pool(2)).await.expect("connect");
    let mut upper = msg("t", "Ann", Some("c1"), "from Ann");
    upper.sender = "a:bot:Ann".into();
    let mut lower = msg("t", "ann", Some("c1"), "from ann");
    lower.sender = "a:bot:ann".into();
    assert!(matches!(s.insert_message(upper).await.expect("insert"), Inserted::New(_)));
    assert!(matches!(s.insert_message(lower).await.expect("insert"), Inserted::New(_)), "ann's c1 is not Ann's");
    s.add_agent("bot", "Ann", "Ann").await.expect("agent");
    assert_eq!(s.agent_name("bot", "ann").await.expect("name"), None);
    let (c1, _) = s.open_conversation("bot", "Vis", "V").await.expect("open");
    let (c2, created) = s.open_conversation("bot", "vis", "v").await.expect("open");
    assert!(created && c1.id != c2.id, "two visitors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store() {
    let db = SqlDb::postgres("suite").await;
    let (a, b) = (store(&db).await, store(&db).await);
    suite(Arc::new(a), Arc::new(b)).await;
}

/// An agent logging in again under the same name leaves its row as it was: PostgreSQL writes a
/// new row version (and WAL) for every UPDATE, even of a value to itself, and every reconnect
/// of every agent logs in. The row's `xmin` (the transaction that wrote this version) tells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_agent_logging_in_again_as_it_was_writes_nothing() {
    let db = SqlDb::postgres("relogin").await;
    let s = store(&db).await;
    let version = || sqlx::query_scalar::<_, String>("SELECT xmin::text FROM agents WHERE bid = 'b' AND agent = 'alice'").fetch_one(&s.pool);
    s.add_agent("b", "alice", "Alice").await.expect("first login");
    let first = version().await.expect("row");
    s.add_agent("b", "alice", "Alice").await.expect("again");
    assert_eq!(version().await.expect("row"), first, "the same name wrote a new row version");
    s.add_agent("b", "alice", "Alice Liddell").await.expect("renamed");
    assert_ne!(version().await.expect("row"), first, "a new name is written");
    assert_eq!(s.agent_name("b", "alice").await.expect("name").as_deref(), Some("Alice Liddell"));
}

/// Ten workers starting at once on an empty database migrate it once (the advisory lock), and
/// a store refuses a schema newer than it knows instead of writing into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrates_once_and_refuses_a_newer_schema() {
    let db = SqlDb::postgres("migrate").await;
    // Concurrently on one task: the ten connections race in the database, which is the point.
    let starts = (0..10).map(|_| PgStore::connect(&db.url, PoolConfig { max_connections: 2, acquire_timeout: std::time::Duration::from_secs(10) }));
    for started in futures_util::future::join_all(starts).await {
        started.expect("every worker starts");
    }
    let store = store(&db).await;
    assert_eq!(store.version().await.expect("version"), 3);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM switchboard_schema").fetch_one(&store.pool).await.expect("count");
    assert_eq!(rows, 1, "one version row");
    sqlx::query("UPDATE switchboard_schema SET version = 99").execute(&store.pool).await.expect("bump");
    let refused = PgStore::connect(&db.url, PoolConfig { max_connections: 1, acquire_timeout: std::time::Duration::from_secs(5) }).await;
    let err = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("version 99") && err.contains("upgrade Switchboard"), "refused with the reason: {err}");
}

/// A database written before senders were scoped by bot (schema version 1) opens, keeps its
/// messages and read marks under their senders' bot-scoped identities, and recognises a re-sent
/// `cid` of an old message in its own thread only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_migrates_version_1() {
    let dir = std::env::temp_dir().join(format!("sb-store-v1-{}", std::process::id()));
    let _removed_at_the_end = Removed(dir.clone());
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("old.db");
    {
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute_batch(
            "CREATE TABLE messages (thread TEXT NOT NULL, id INTEGER NOT NULL, from_uid TEXT NOT NULL, from_name TEXT NOT NULL,
                 cid TEXT, content TEXT NOT NULL, dest TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (thread, id));
             CREATE UNIQUE INDEX messages_cid ON messages(from_uid, cid) WHERE cid IS NOT NULL;
             CREATE TABLE read_marks (thread TEXT NOT NULL, uid TEXT NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (thread, uid));
             CREATE TABLE conversations (id TEXT PRIMARY KEY, bid TEXT NOT NULL, visitor_id TEXT NOT NULL,
                 visitor_name TEXT NOT NULL, assigned TEXT, open INTEGER NOT NULL, created INTEGER NOT NULL);
             INSERT INTO conversations VALUES ('conv1', '10', 'vis', 'Vee', 'shared', 1, 1);
             INSERT INTO messages VALUES ('c:conv1', 1, 'v:vis', 'Vee', 'k1', 'hello', '{}', 1);
             INSERT INTO messages VALUES ('c:conv1', 2, 'shared', 'Sam', 'k1', 'hi', '{}', 2);
             INSERT INTO messages VALUES ('r:10:lobby', 1, 'shared', 'Sam', 'k2', 'room', '{}', 3);
             INSERT INTO read_marks VALUES ('c:conv1', 'shared', 1);",
        )
        .expect("old schema");
    }
    let s = SqliteStore::open(&path).expect("migrating open");
    let agent = "a:10:shared";
    assert_eq!(s.unread("c:conv1", agent).await.expect("unread"), 0, "the agent's mark and own message kept");
    assert_eq!(s.unread("c:conv1", "v:10:vis").await.expect("unread"), 1);
    let mut retry = msg("c:conv1", "shared", Some("k1"), "hi again");
    retry.sender = agent.into();
    match s.insert_message(retry).await.expect("insert") {
        Inserted::Duplicate(d) => assert_eq!((d.id, d.content.as_str()), (2, "hi")),
        other => panic!("an old message's retry is a duplicate, got {other:?}"),
    }
    let mut elsewhere = msg("r:10:lobby", "shared", Some("k1"), "same cid, other thread");
    elsewhere.sender = agent.into();
    assert!(matches!(s.insert_message(elsewhere).await.expect("insert"), Inserted::New(_)));
    drop(s);
    // Opening again (another worker, a restart) finds it done.
    let again = SqliteStore::open(&path).expect("open again");
    assert_eq!(again.history("r:10:lobby", None, None, 10).await.expect("history").len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same for Redis data written by version 1: dedup keys, read marks, open conversations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_migrates_version_1() {
    use redis::AsyncCommands;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let p = format!("sbtest-v1:{}:{}:", std::process::id(), events::store::now_ms());
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut c = client.get_multiplexed_async_connection().await.unwrap_or_else(|e| panic!("Redis is required for this test (REDIS_URL={url}): {e}"));
    let old = |id: i64, from: &str, cid: &str, content: &str| {
        serde_json::json!({"from_uid": from, "from_name": "n", "cid": cid, "content": content, "to": {}, "ts": 1, "id": id}).to_string()
    };
    let _: () = redis::pipe()
        .hset_multiple(
            format!("{p}conv:conv1"),
            &[("bid", "10"), ("visitor_id", "line:U1"), ("visitor_name", "Vee"), ("open", "1"), ("created", "1")],
        )
        .set(format!("{p}open:10:line:U1"), "conv1")
        .zadd(format!("{p}convs:10"), "conv1", 1)
        .zadd(format!("{p}msg:c:conv1"), old(1, "v:line:U1", "k1", "hello"), 1)
        .zadd(format!("{p}msg:c:conv1"), old(2, "shared", "k1", "hi"), 2)
        .set(format!("{p}seq:c:conv1"), 2)
        .set(format!("{p}cid:shared:k1"), old(2, "shared", "k1", "hi"))
        .hset(format!("{p}read:c:conv1"), "shared", 1)
        .query_async(&mut c)
        .await
        .expect("old data");
    let s = RedisStore::connect(&url, &p).await.expect("migrating connect");
    assert_eq!(s.unread("c:conv1", "a:10:shared").await.expect("unread"), 0, "the agent's mark and own message kept");
    assert_eq!(s.unread("c:conv1", "v:10:line%3AU1").await.expect("unread"), 1);
    let mut retry = msg("c:conv1", "shared", Some("k1"), "hi again");
    retry.sender = "a:10:shared".into();
    match s.insert_message(retry).await.expect("insert") {
        Inserted::Duplicate(d) => assert_eq!((d.id, d.content.as_str()), (2, "hi")),
        other => panic!("an old message's retry is a duplicate, got {other:?}"),
    }
    let (conv, created) = s.open_conversation("10", "line:U1", "Vee").await.expect("open");
    assert_eq!((conv.id.as_str(), created), ("conv1", false), "the LINE user's open conversation is resumed");
    let again = RedisStore::connect(&url, &p).await.expect("second connect");
    assert_eq!(again.history("c:conv1", None, None, 10).await.expect("history").len(), 2);
    let keys: Vec<String> = c.keys(format!("{p}*")).await.expect("keys");
    let _: () = c.del(keys).await.expect("clean up");
}

/// Removes a test's directory when dropped, so a failing test leaves nothing behind either.
struct Removed(std::path::PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
