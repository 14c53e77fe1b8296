//! The Redis store, for deployments of several servers: every worker everywhere sees the same
//! messages, conversations and read marks. Each operation that must be atomic is one Lua
//! script, which Redis runs without interleaving anything else.
//!
//! Keys (all under the configured prefix; ids escaped as `keys` does, so none can contain the
//! separator; threads are already canonical): `seq:<thread>` (message id counter),
//! `msg:<thread>` (sorted set of message JSON by id), `dedup:<thread>:<sender>:<cid>` (a
//! re-sent `cid`), `read:<thread>` (hash sender identity → id), `conv:<id>` (hash),
//! `open:<bid>:<visitor>` (the visitor's open conversation), `convs:<bid>` (open conversations
//! by creation time), `agents:<bid>` (hash id → name), `turn:<bid>` (round-robin counter),
//! `threads` (every thread by the time of its oldest message, for retention), `schema` (the
//! data's version, see `migrate`).

use super::{now_ms, Conversation, ConversationSummary, Inserted, NewMessage, Result, Store, StoreError, StoredMessage};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde_json::{json, Value};
use std::collections::HashMap;

pub struct RedisStore {
    pub(super) conn: ConnectionManager,
    pub(super) prefix: String,
    insert: Script,
    open: Script,
    assign: Script,
    close: Script,
    mark: Script,
    forget: Script,
    lease: Script,
}

const INSERT: &str = r#"
if ARGV[2] == '1' then
  local old = redis.call('GET', KEYS[3])
  if old then return {0, old} end
end
local id = redis.call('INCR', KEYS[2])
local msg = cjson.decode(ARGV[1])
msg['id'] = id
local enc = cjson.encode(msg)
redis.call('ZADD', KEYS[1], id, enc)
if ARGV[2] == '1' then redis.call('SET', KEYS[3], enc) end
redis.call('ZADD', KEYS[4], 'NX', msg['ts'], ARGV[3])
return {1, enc}
"#;

/// Retention, at the end of one thread: if nothing is left, the thread leaves the index (in one
/// script, so a message inserted meanwhile keeps it there).
const FORGET_IF_EMPTY: &str = r#"
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 0
"#;

const OPEN: &str = r#"
local existing = redis.call('GET', KEYS[1])
if existing and redis.call('HGET', ARGV[1] .. existing, 'open') == '1' then return {existing, 0} end
local id = ARGV[2]
redis.call('HSET', ARGV[1] .. id, 'bid', ARGV[3], 'visitor_id', ARGV[4], 'visitor_name', ARGV[5], 'open', '1', 'created', ARGV[6])
redis.call('SET', KEYS[1], id)
redis.call('ZADD', KEYS[2], ARGV[6], id)
return {id, 1}
"#;

const ASSIGN: &str = r#"
if redis.call('HGET', KEYS[1], 'open') ~= '1' then return 0 end
local cur = redis.call('HGET', KEYS[1], 'assigned')
if ARGV[2] == '0' then
  if cur then return 0 end
else
  if cur ~= ARGV[3] then return 0 end
end
redis.call('HSET', KEYS[1], 'assigned', ARGV[1])
return 1
"#;

const CLOSE: &str = r#"
if redis.call('HGET', KEYS[1], 'open') ~= '1' then return 0 end
redis.call('HSET', KEYS[1], 'open', '0')
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"#;

const MARK: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"#;

/// Takes or renews a lease (`Store::lease`): set when free or the caller's, with its time to
/// live; Redis expires it.
const LEASE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// The version of the data's layout this code writes (`migrate`).
const SCHEMA_VERSION: i64 = 3;

fn err(e: redis::RedisError) -> StoreError {
    StoreError::Redis(e.to_string())
}

fn decode(thread: &str, raw: &str) -> Result<StoredMessage> {
    let v: Value = serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("message JSON: {e}")))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(StoredMessage {
        id: v.get("id").and_then(Value::as_f64).unwrap_or(0.0) as i64,
        thread: thread.to_string(),
        sender: s("sender"),
        from_uid: s("from_uid"),
        from_name: s("from_name"),
        cid: v.get("cid").and_then(Value::as_str).map(str::to_string),
        content: s("content"),
        // cjson writes an empty object as `{}` or `[]`; both mean "no fields".
        to: v.get("to").and_then(Value::as_object).cloned().unwrap_or_default(),
        timestamp: v.get("ts").and_then(Value::as_f64).unwrap_or(0.0) as i64,
    })
}

impl RedisStore {
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisStore> {
        RedisStore::connect_with(url, prefix, std::time::Duration::from_secs(5)).await
    }

    /// Connects with `timeout` for connecting and for each command's answer (`store_timeout`).
    /// The redis crate's own defaults (1 s, 0.5 s) fail commands on any link slower than a
    /// LAN's: one lost packet over a 100 ms round trip costs TCP more than half a second.
    pub async fn connect_with(url: &str, prefix: &str, timeout: std::time::Duration) -> Result<RedisStore> {
        let client = redis::Client::open(url).map_err(err)?;
        let config = redis::aio::ConnectionManagerConfig::new().set_response_timeout(Some(timeout)).set_connection_timeout(Some(timeout));
        let conn = client.get_connection_manager_with_config(config).await.map_err(err)?;
        let store = RedisStore {
            conn,
            prefix: prefix.to_string(),
            insert: Script::new(INSERT),
            open: Script::new(OPEN),
            assign: Script::new(ASSIGN),
            close: Script::new(CLOSE),
            mark: Script::new(MARK),
            forget: Script::new(FORGET_IF_EMPTY),
            lease: Script::new(LEASE),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// A key of fixed words and already canonical names (threads), joined as they are.
    pub(super) fn key(&self, parts: &[&str]) -> String {
        format!("{}{}", self.prefix, parts.join(":"))
    }

    /// A key of a kind and ids from outside, each escaped (`keys::key`).
    pub(super) fn id_key(&self, kind: &str, ids: &[&str]) -> String {
        format!("{}{}", self.prefix, crate::keys::key(kind, ids))
    }

    /// Brings data written by an older Switchboard up to `SCHEMA_VERSION`, once: the first
    /// worker takes a lock and migrates, the others wait for the version to change.
    ///
    /// Version 2: a re-sent `cid` is recognised per thread and per bot-scoped sender (it was
    /// per bare `from_uid` across every bot, so one bot's agent could shadow another's message);
    /// messages carry their sender identity, read marks are kept by it, and the visitor's open
    /// conversation pointer is keyed by escaped ids.
    ///
    /// Version 3: the `threads` index (each thread by its oldest message's time) that retention
    /// walks, built from the messages there are.
    async fn migrate(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let schema = self.key(&["schema"]);
        let lock = self.key(&["schema", "migrating"]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let from = loop {
            let v: Option<i64> = conn.get(&schema).await.map_err(err)?;
            if v.unwrap_or(0) >= SCHEMA_VERSION {
                return Ok(());
            }
            let took: bool = redis::cmd("SET")
                .arg(&lock)
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(300)
                .query_async::<Option<String>>(&mut conn)
                .await
                .map_err(err)?
                .is_some();
            if took {
                // Read again under the lock: another worker may have finished meanwhile.
                let v: Option<i64> = conn.get(&schema).await.map_err(err)?;
                break v.unwrap_or(0);
            }
            if std::time::Instant::now() > deadline {
                return Err(StoreError::Redis("another worker's migration of the store did not finish in 120 s".into()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        if from < 2 {
            self.migrate_to_2(&mut conn).await?;
        }
        if from < 3 {
            let mut threads = 0usize;
            for key in self.scan(&mut conn, "msg:*").await? {
                let thread = &key[self.prefix.len() + "msg:".len()..];
                let first: Vec<String> = conn.zrange(&key, 0, 0).await.map_err(err)?;
                if let Some(raw) = first.first() {
                    let ts = decode(thread, raw)?.timestamp;
                    let _: () =
                        redis::cmd("ZADD").arg(self.key(&["threads"])).arg("NX").arg(ts).arg(thread).query_async(&mut conn).await.map_err(err)?;
                    threads += 1;
                }
            }
            if threads > 0 {
                tracing::info!(threads, "store migrated: threads indexed for retention");
            }
        }
        let _: () = redis::pipe().set(&schema, SCHEMA_VERSION).del(&lock).query_async(&mut conn).await.map_err(err)?;
        Ok(())
    }

    /// See `migrate`, version 2.
    async fn migrate_to_2(&self, conn: &mut ConnectionManager) -> Result<()> {
        let (mut messages, mut marks, mut opens) = (0usize, 0usize, 0usize);
        for key in self.scan(conn, "open:*").await? {
            let Some((bid, visitor)) = key[self.prefix.len() + "open:".len()..].split_once(':') else { continue };
            let new = self.id_key("open", &[bid, visitor]);
            if new != key {
                let _: i64 = conn.rename_nx(&key, &new).await.map_err(err)?;
                opens += 1;
            }
        }
        for key in self.scan(conn, "msg:*").await? {
            let thread = key[self.prefix.len() + "msg:".len()..].to_string();
            let bid = self.thread_bot(conn, &thread).await?;
            let all: Vec<(String, f64)> = conn.zrange_withscores(&key, 0, -1).await.map_err(err)?;
            for (raw, score) in all {
                let Ok(Value::Object(mut m)) = serde_json::from_str::<Value>(&raw) else { continue };
                if m.contains_key("sender") {
                    continue;
                }
                let sender = super::legacy_sender(&bid, m.get("from_uid").and_then(Value::as_str).unwrap_or(""));
                m.insert("sender".into(), sender.clone().into());
                let enc = Value::Object(m.clone()).to_string();
                let mut pipe = redis::pipe();
                pipe.atomic().zrem(&key, &raw).zadd(&key, &enc, score);
                if let Some(cid) = m.get("cid").and_then(Value::as_str) {
                    pipe.set(self.id_key("dedup", &[&thread, &sender, cid]), &enc);
                }
                pipe.exec_async(conn).await.map_err(err)?;
                messages += 1;
            }
        }
        for key in self.scan(conn, "read:*").await? {
            let thread = key[self.prefix.len() + "read:".len()..].to_string();
            let bid = self.thread_bot(conn, &thread).await?;
            let h: HashMap<String, i64> = conn.hgetall(&key).await.map_err(err)?;
            for (uid, id) in h {
                let reader = super::legacy_sender(&bid, &uid);
                let _: () = redis::pipe().atomic().hdel(&key, &uid).hset(&key, &reader, id).query_async(conn).await.map_err(err)?;
                marks += 1;
            }
        }
        if messages + marks + opens > 0 {
            tracing::info!(messages, read_marks = marks, open_conversations = opens, "store migrated: senders scoped by bot");
        }
        Ok(())
    }

    /// Every key under the prefix matching `pattern` (SCAN, so Redis is never blocked).
    async fn scan(&self, conn: &mut ConnectionManager, pattern: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}{pattern}", self.prefix))
                .arg("COUNT")
                .arg(500)
                .query_async(conn)
                .await
                .map_err(err)?;
            out.extend(keys);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// The bot a thread written before version 2 belongs to.
    async fn thread_bot(&self, conn: &mut ConnectionManager, thread: &str) -> Result<String> {
        if let Some(conv) = thread.strip_prefix("c:") {
            let bid: Option<String> = conn.hget(self.id_key("conv", &[conv]), "bid").await.map_err(err)?;
            return Ok(bid.unwrap_or_default());
        }
        Ok(super::legacy_thread_bot(thread).unwrap_or_default().to_string())
    }

    async fn conversation_of(&self, conn: &mut ConnectionManager, id: &str) -> Result<Option<Conversation>> {
        let h: HashMap<String, String> = conn.hgetall(self.id_key("conv", &[id])).await.map_err(err)?;
        Ok(conversation_from(id, h))
    }
}

/// A conversation as its hash holds it; `None` for a hash that is not there.
fn conversation_from(id: &str, h: HashMap<String, String>) -> Option<Conversation> {
    if h.is_empty() {
        return None;
    }
    let g = |k: &str| h.get(k).cloned().unwrap_or_default();
    Some(Conversation {
        id: id.to_string(),
        bid: g("bid"),
        visitor_id: g("visitor_id"),
        visitor_name: g("visitor_name"),
        assigned: h.get("assigned").cloned(),
        open: g("open") == "1",
        created: g("created").parse().unwrap_or(0),
    })
}

#[async_trait]
impl Store for RedisStore {
    async fn insert_message(&self, m: NewMessage) -> Result<Inserted> {
        let mut conn = self.conn.clone();
        let body = json!({"sender": m.sender, "from_uid": m.from_uid, "from_name": m.from_name, "cid": m.cid, "content": m.content,
                          "to": m.to, "ts": now_ms()});
        let cid_key = match &m.cid {
            Some(cid) => self.id_key("dedup", &[&m.thread, &m.sender, cid]),
            None => self.key(&["dedup", "-"]),
        };
        let (fresh, raw): (i64, String) = self
            .insert
            .key(self.key(&["msg", &m.thread]))
            .key(self.key(&["seq", &m.thread]))
            .key(cid_key)
            .key(self.key(&["threads"]))
            .arg(body.to_string())
            .arg(if m.cid.is_some() { "1" } else { "0" })
            .arg(&m.thread)
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        let msg = decode(&m.thread, &raw)?;
        Ok(if fresh == 1 { Inserted::New(msg) } else { Inserted::Duplicate(msg) })
    }

    async fn history(&self, thread: &str, before: Option<i64>, after: Option<i64>, limit: usize) -> Result<Vec<StoredMessage>> {
        let mut conn = self.conn.clone();
        let key = self.key(&["msg", thread]);
        let max = before.map_or("+inf".to_string(), |b| format!("({b}"));
        let raw: Vec<String> = if let Some(a) = after {
            conn.zrangebyscore_limit(&key, format!("({a}"), &max, 0, limit as isize).await.map_err(err)?
        } else {
            let mut v: Vec<String> = conn.zrevrangebyscore_limit(&key, &max, "-inf", 0, limit as isize).await.map_err(err)?;
            v.reverse();
            v
        };
        raw.iter().map(|r| decode(thread, r)).collect()
    }

    async fn mark_read(&self, thread: &str, uid: &str, id: i64) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: i64 = self.mark.key(self.key(&["read", thread])).arg(uid).arg(id).invoke_async(&mut conn).await.map_err(err)?;
        Ok(())
    }

    async fn lease(&self, name: &str, owner: &str, _now_ms: i64, ttl_ms: i64) -> Result<bool> {
        let mut conn = self.conn.clone();
        let took: i64 = self.lease.key(self.key(&["lease", name])).arg(owner).arg(ttl_ms.max(1)).invoke_async(&mut conn).await.map_err(err)?;
        Ok(took == 1)
    }

    async fn read_mark(&self, thread: &str, uid: &str) -> Result<Option<i64>> {
        let mut conn = self.conn.clone();
        conn.hget(self.key(&["read", thread]), uid).await.map_err(err)
    }

    async fn unread(&self, thread: &str, uid: &str) -> Result<u64> {
        let mut conn = self.conn.clone();
        let mark: Option<i64> = conn.hget(self.key(&["read", thread]), uid).await.map_err(err)?;
        let raw: Vec<String> = conn.zrangebyscore(self.key(&["msg", thread]), format!("({}", mark.unwrap_or(0)), "+inf").await.map_err(err)?;
        let mut n = 0;
        for r in &raw {
            if decode(thread, r)?.sender != uid {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The page, then two pipelined round trips for all of it: every thread's read mark and
    /// newest message, then every thread's messages after its mark (counted as `unread`
    /// counts them).
    async fn conversation_summaries(&self, bid: &str, reader: &str, after: Option<&str>, limit: usize) -> Result<Vec<ConversationSummary>> {
        let page = self.conversations(bid, after, limit).await?;
        if page.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let threads: Vec<String> = page.iter().map(|c| crate::keys::conversation_thread(&c.id)).collect();
        let mut marks_and_newest = redis::pipe();
        for t in &threads {
            marks_and_newest.hget(self.key(&["read", t]), reader).zrevrangebyscore_limit(self.key(&["msg", t]), "+inf", "-inf", 0, 1);
        }
        let replies: Vec<redis::Value> = marks_and_newest.query_async(&mut conn).await.map_err(err)?;
        let mut since = redis::pipe();
        let mut newest = Vec::with_capacity(threads.len());
        for (t, pair) in threads.iter().zip(replies.chunks(2)) {
            let [mark, last] = pair else { return Err(StoreError::Corrupt("a pipelined reply is missing".into())) };
            let unexpected = |e| StoreError::Corrupt(format!("read mark or newest message of {t}: {e}"));
            let mark: Option<i64> = redis::from_redis_value(mark.clone()).map_err(unexpected)?;
            let last: Vec<String> = redis::from_redis_value(last.clone()).map_err(unexpected)?;
            newest.push(last.first().map(|raw| decode(t, raw)).transpose()?);
            since.zrangebyscore(self.key(&["msg", t]), format!("({}", mark.unwrap_or(0)), "+inf");
        }
        let unread: Vec<Vec<String>> = since.query_async(&mut conn).await.map_err(err)?;
        let mut out = Vec::with_capacity(page.len());
        for (((conversation, t), last), raw) in page.into_iter().zip(&threads).zip(newest).zip(unread) {
            let mut unread = 0;
            for r in &raw {
                if decode(t, r)?.sender != reader {
                    unread += 1;
                }
            }
            out.push(ConversationSummary { conversation, unread, last });
        }
        Ok(out)
    }

    async fn open_conversation(&self, bid: &str, visitor_id: &str, visitor_name: &str) -> Result<(Conversation, bool)> {
        let mut conn = self.conn.clone();
        let (id, created): (String, i64) = self
            .open
            .key(self.id_key("open", &[bid, visitor_id]))
            .key(self.id_key("convs", &[bid]))
            .arg(self.key(&["conv", ""]))
            .arg(crate::keys::new_id())
            .arg(bid)
            .arg(visitor_id)
            .arg(visitor_name)
            .arg(now_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        let conv = self.conversation_of(&mut conn, &id).await?.ok_or_else(|| StoreError::Corrupt(format!("conversation {id} vanished")))?;
        Ok((conv, created == 1))
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>> {
        let mut conn = self.conn.clone();
        self.conversation_of(&mut conn, id).await
    }

    async fn conversations(&self, bid: &str, after: Option<&str>, limit: usize) -> Result<Vec<Conversation>> {
        let mut conn = self.conn.clone();
        let key = self.id_key("convs", &[bid]);
        // The set is ordered by (created, id); the cursor keeps its `created` after it closes.
        let from: Option<i64> = match after {
            Some(a) => conn.hget::<_, _, Option<i64>>(self.id_key("conv", &[a]), "created").await.map_err(err)?,
            None => None,
        };
        let count = isize::try_from(limit).unwrap_or(-1);
        let ids: Vec<String> = match (after, from) {
            (Some(a), Some(created)) => {
                // Conversations created in the same millisecond as the cursor come first in the
                // range; those up to the cursor itself are skipped.
                let ties: isize = conn.zcount(&key, created, created).await.map_err(err)?;
                let n = if count < 0 { -1 } else { count.saturating_add(ties) };
                let found: Vec<(String, i64)> = conn.zrangebyscore_limit_withscores(&key, created, "+inf", 0, n).await.map_err(err)?;
                found.into_iter().filter(|(id, score)| *score > created || id.as_str() > a).map(|(id, _)| id).take(limit).collect()
            }
            _ => conn.zrange(&key, 0, if count < 0 { -1 } else { count - 1 }).await.map_err(err)?,
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Every conversation's hash in one round trip, not one each.
        let mut hashes = redis::pipe();
        for id in &ids {
            hashes.hgetall(self.id_key("conv", &[id]));
        }
        let found: Vec<HashMap<String, String>> = hashes.query_async(&mut conn).await.map_err(err)?;
        Ok(ids.iter().zip(found).filter_map(|(id, h)| conversation_from(id, h)).filter(|c| c.open).collect())
    }

    async fn assign(&self, id: &str, agent: &str, expected: Option<&str>) -> Result<bool> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .assign
            .key(self.id_key("conv", &[id]))
            .arg(agent)
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or(""))
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(n == 1)
    }

    async fn close_conversation(&self, id: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let Some(c) = self.conversation_of(&mut conn, id).await? else { return Ok(false) };
        let n: i64 = self
            .close
            .key(self.id_key("conv", &[id]))
            .key(self.id_key("open", &[&c.bid, &c.visitor_id]))
            .key(self.id_key("convs", &[&c.bid]))
            .arg(id)
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(n == 1)
    }

    async fn load(&self, bid: &str) -> Result<HashMap<String, u64>> {
        let mut out = HashMap::new();
        for c in self.conversations(bid, None, usize::MAX).await? {
            if let Some(a) = c.assigned {
                *out.entry(a).or_default() += 1;
            }
        }
        Ok(out)
    }

    async fn add_agent(&self, bid: &str, agent: &str, name: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.hset(self.id_key("agents", &[bid]), agent, name).await.map_err(err)?;
        Ok(())
    }

    async fn agent_name(&self, bid: &str, agent: &str) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        conn.hget(self.id_key("agents", &[bid]), agent).await.map_err(err)
    }

    async fn next_turn(&self, bid: &str) -> Result<u64> {
        let mut conn = self.conn.clone();
        conn.incr(self.id_key("turn", &[bid]), 1).await.map_err(err)
    }

    async fn delete_messages_before(&self, before_ms: i64, limit: usize) -> Result<u64> {
        let mut conn = self.conn.clone();
        let index = self.key(&["threads"]);
        // Threads whose oldest message is older than the cutoff, a few at a time.
        let threads: Vec<String> = conn.zrangebyscore_limit(&index, "-inf", format!("({before_ms}"), 0, 100).await.map_err(err)?;
        let mut deleted = 0u64;
        for thread in threads {
            let key = self.key(&["msg", &thread]);
            loop {
                let page: Vec<String> = conn.zrange(&key, 0, 99).await.map_err(err)?;
                let msgs: Vec<(String, StoredMessage)> = page.into_iter().filter_map(|raw| decode(&thread, &raw).ok().map(|m| (raw, m))).collect();
                let old: Vec<&(String, StoredMessage)> =
                    msgs.iter().filter(|(_, m)| m.timestamp < before_ms).take(limit.saturating_sub(deleted as usize)).collect();
                if !old.is_empty() {
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    for (raw, m) in &old {
                        pipe.zrem(&key, raw);
                        if let Some(cid) = &m.cid {
                            pipe.del(self.id_key("dedup", &[&thread, &m.sender, cid]));
                        }
                    }
                    pipe.exec_async(&mut conn).await.map_err(err)?;
                    deleted += old.len() as u64;
                }
                let rest = msgs.iter().find(|(_, m)| m.timestamp >= before_ms);
                match rest {
                    // The oldest message left is the thread's new place in the index.
                    Some((_, m)) => {
                        let _: () =
                            redis::cmd("ZADD").arg(&index).arg("XX").arg(m.timestamp).arg(&thread).query_async(&mut conn).await.map_err(err)?;
                        break;
                    }
                    None if msgs.is_empty() || old.len() == msgs.len() && msgs.len() < 100 => {
                        let _: i64 = self.forget.key(&key).key(&index).arg(&thread).invoke_async(&mut conn).await.map_err(err)?;
                        break;
                    }
                    None => {}
                }
                if deleted as usize >= limit {
                    return Ok(deleted);
                }
            }
            if deleted as usize >= limit {
                break;
            }
        }
        Ok(deleted)
    }
}
