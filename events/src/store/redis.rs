//! The Redis store, for deployments of several servers: every worker everywhere sees the same
//! messages, conversations and read marks. Each operation that must be atomic is one Lua
//! script, which Redis runs without interleaving anything else.
//!
//! Keys (all under the configured prefix): `seq:<thread>` (message id counter), `msg:<thread>`
//! (sorted set of message JSON by id), `cid:<uid>:<cid>` (dedup), `read:<thread>` (hash uid →
//! id), `conv:<id>` (hash), `open:<bid>:<visitor>` (the visitor's open conversation),
//! `convs:<bid>` (open conversations by creation time), `agents:<bid>` (hash id → name),
//! `turn:<bid>` (round-robin counter).

use super::{now_ms, Conversation, Inserted, NewMessage, Result, Store, StoreError, StoredMessage};
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
return {1, enc}
"#;

const OPEN: &str = r#"
local existing = redis.call('GET', KEYS[1])
if existing and redis.call('HGET', ARGV[1] .. existing, 'open') == '1' then return existing end
local id = ARGV[2]
redis.call('HSET', ARGV[1] .. id, 'bid', ARGV[3], 'visitor_id', ARGV[4], 'visitor_name', ARGV[5], 'open', '1', 'created', ARGV[6])
redis.call('SET', KEYS[1], id)
redis.call('ZADD', KEYS[2], ARGV[6], id)
return id
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

fn err(e: redis::RedisError) -> StoreError {
    StoreError::Redis(e.to_string())
}

fn decode(thread: &str, raw: &str) -> Result<StoredMessage> {
    let v: Value = serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("message JSON: {e}")))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(StoredMessage {
        id: v.get("id").and_then(Value::as_f64).unwrap_or(0.0) as i64,
        thread: thread.to_string(),
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
        let client = redis::Client::open(url).map_err(err)?;
        let conn = client.get_connection_manager().await.map_err(err)?;
        Ok(RedisStore {
            conn,
            prefix: prefix.to_string(),
            insert: Script::new(INSERT),
            open: Script::new(OPEN),
            assign: Script::new(ASSIGN),
            close: Script::new(CLOSE),
            mark: Script::new(MARK),
        })
    }

    pub(super) fn key(&self, parts: &[&str]) -> String {
        format!("{}{}", self.prefix, parts.join(":"))
    }

    async fn conversation_of(&self, conn: &mut ConnectionManager, id: &str) -> Result<Option<Conversation>> {
        let h: HashMap<String, String> = conn.hgetall(self.key(&["conv", id])).await.map_err(err)?;
        if h.is_empty() {
            return Ok(None);
        }
        let g = |k: &str| h.get(k).cloned().unwrap_or_default();
        Ok(Some(Conversation {
            id: id.to_string(),
            bid: g("bid"),
            visitor_id: g("visitor_id"),
            visitor_name: g("visitor_name"),
            assigned: h.get("assigned").cloned(),
            open: g("open") == "1",
            created: g("created").parse().unwrap_or(0),
        }))
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn insert_message(&self, m: NewMessage) -> Result<Inserted> {
        let mut conn = self.conn.clone();
        let body = json!({"from_uid": m.from_uid, "from_name": m.from_name, "cid": m.cid, "content": m.content,
                          "to": m.to, "ts": now_ms()});
        let cid_key = match &m.cid {
            Some(cid) => self.key(&["cid", &m.from_uid, cid]),
            None => self.key(&["cid", "-"]),
        };
        let (fresh, raw): (i64, String) = self
            .insert
            .key(self.key(&["msg", &m.thread]))
            .key(self.key(&["seq", &m.thread]))
            .key(cid_key)
            .arg(body.to_string())
            .arg(if m.cid.is_some() { "1" } else { "0" })
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

    async fn unread(&self, thread: &str, uid: &str) -> Result<u64> {
        let mut conn = self.conn.clone();
        let mark: Option<i64> = conn.hget(self.key(&["read", thread]), uid).await.map_err(err)?;
        let raw: Vec<String> =
            conn.zrangebyscore(self.key(&["msg", thread]), format!("({}", mark.unwrap_or(0)), "+inf").await.map_err(err)?;
        let mut n = 0;
        for r in &raw {
            if decode(thread, r)?.from_uid != uid {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn open_conversation(&self, bid: &str, visitor_id: &str, visitor_name: &str) -> Result<Conversation> {
        let mut conn = self.conn.clone();
        let id: String = self
            .open
            .key(self.key(&["open", bid, visitor_id]))
            .key(self.key(&["convs", bid]))
            .arg(self.key(&["conv", ""]))
            .arg(super::sqlite::new_id())
            .arg(bid)
            .arg(visitor_id)
            .arg(visitor_name)
            .arg(now_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        self.conversation_of(&mut conn, &id).await?.ok_or_else(|| StoreError::Corrupt(format!("conversation {id} vanished")))
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>> {
        let mut conn = self.conn.clone();
        self.conversation_of(&mut conn, id).await
    }

    async fn conversations(&self, bid: &str) -> Result<Vec<Conversation>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.zrange(self.key(&["convs", bid]), 0, -1).await.map_err(err)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(c) = self.conversation_of(&mut conn, &id).await?.filter(|c| c.open) {
                out.push(c);
            }
        }
        Ok(out)
    }

    async fn assign(&self, id: &str, agent: &str, expected: Option<&str>) -> Result<bool> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .assign
            .key(self.key(&["conv", id]))
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
            .key(self.key(&["conv", id]))
            .key(self.key(&["open", &c.bid, &c.visitor_id]))
            .key(self.key(&["convs", &c.bid]))
            .arg(id)
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(n == 1)
    }

    async fn load(&self, bid: &str) -> Result<HashMap<String, u64>> {
        let mut out = HashMap::new();
        for c in self.conversations(bid).await? {
            if let Some(a) = c.assigned {
                *out.entry(a).or_default() += 1;
            }
        }
        Ok(out)
    }

    async fn add_agent(&self, bid: &str, agent: &str, name: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.hset(self.key(&["agents", bid]), agent, name).await.map_err(err)?;
        Ok(())
    }

    async fn agent_name(&self, bid: &str, agent: &str) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        conn.hget(self.key(&["agents", bid]), agent).await.map_err(err)
    }

    async fn next_turn(&self, bid: &str) -> Result<u64> {
        let mut conn = self.conn.clone();
        conn.incr(self.key(&["turn", bid]), 1).await.map_err(err)
    }
}
