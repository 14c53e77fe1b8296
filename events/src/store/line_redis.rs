//! [`LineStore`] on Redis. Where the original deployment used LPUSH/BLPOP (a message popped by a
//! sender that then died was gone), the queue here keeps every item until the sender saves its
//! outcome: a sorted set of queued ids, one JSON value per item, and a lease per item. Each
//! step that must be atomic is one Lua script.
//!
//! Keys (under the prefix): `line:inbox` (sorted set of pending sequence numbers),
//! `line:inbox:ev:<seq>` (hash), `line:inbox:seen:<event id>` (dedup, kept 7 days),
//! `line:user:<bid>:<user>` (hash), `line:out:queued` (sorted set of ids),
//! `line:out:item:<id>` (JSON), `line:out:lease:<id>` (hash owner, until),
//! `line:out:idx:<thread>:<msg id>` (id), `line:delivery:<thread>` (hash msg id → state).

use super::line::{delivery, InboxEvent, LineStore, LineUser, OutItem};
use super::redis::RedisStore;
use super::{Result, StoreError};
use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use std::collections::HashMap;

/// How long a webhook event id is remembered; LINE redelivers within hours, not days.
const SEEN_SECS: u64 = 7 * 24 * 3600;

const INBOX_PUT: &str = r#"
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('SET', KEYS[1] .. 'line:inbox:seen:' .. ARGV[i], '1', 'NX', 'EX', KEYS[2]) then
    local seq = redis.call('INCR', KEYS[1] .. 'line:inbox:seq')
    redis.call('HSET', KEYS[1] .. 'line:inbox:ev:' .. seq, 'event_id', ARGV[i], 'bid', ARGV[i + 1], 'event', ARGV[i + 2])
    redis.call('ZADD', KEYS[1] .. 'line:inbox', seq, seq)
    n = n + 1
  end
end
return n
"#;

const TOKEN_PUT: &str = r#"
local at = tonumber(redis.call('HGET', KEYS[1], 'token_at') or '0')
if tonumber(ARGV[2]) >= at then redis.call('HSET', KEYS[1], 'reply_token', ARGV[1], 'token_at', ARGV[2]) end
return 1
"#;

const TOKEN_TAKE: &str = r#"
local t = redis.call('HGET', KEYS[1], 'reply_token')
if not t or t == '' then return false end
local at = redis.call('HGET', KEYS[1], 'token_at') or '0'
redis.call('HDEL', KEYS[1], 'reply_token')
return {t, at}
"#;

const PUSH: &str = r#"
local old = redis.call('GET', KEYS[1])
if old then return redis.call('GET', ARGV[2] .. 'line:out:item:' .. old) end
local id = redis.call('INCR', ARGV[2] .. 'line:out:seq')
local it = cjson.decode(ARGV[1])
it['id'] = id
local enc = cjson.encode(it)
redis.call('SET', KEYS[1], id)
redis.call('SET', ARGV[2] .. 'line:out:item:' .. id, enc)
redis.call('ZADD', ARGV[2] .. 'line:out:queued', id, id)
redis.call('HSET', ARGV[2] .. 'line:delivery:' .. it['thread'], it['msg_id'], cjson.encode({it['state'], false}))
return enc
"#;

const CLAIM: &str = r#"
local p = KEYS[1]
local now = tonumber(ARGV[2])
local seen = {}
for _, id in ipairs(redis.call('ZRANGE', p .. 'line:out:queued', 0, 999)) do
  local raw = redis.call('GET', p .. 'line:out:item:' .. id)
  if raw then
    local it = cjson.decode(raw)
    local who = it['bid'] .. '\n' .. it['to']
    if not seen[who] then
      seen[who] = true
      local lease = tonumber(redis.call('HGET', p .. 'line:out:lease:' .. id, 'until') or '0')
      if tonumber(it['due']) <= now and lease <= now then
        redis.call('HSET', p .. 'line:out:lease:' .. id, 'owner', ARGV[1], 'until', ARGV[3])
        return raw
      end
    end
  end
end
return false
"#;

const RELEASE: &str = r#"
for _, id in ipairs(redis.call('ZRANGE', KEYS[1] .. 'line:out:queued', 0, -1)) do
  local k = KEYS[1] .. 'line:out:lease:' .. id
  if redis.call('HGET', k, 'owner') == ARGV[1] then redis.call('DEL', k) end
end
return 1
"#;

fn err(e: redis::RedisError) -> StoreError {
    StoreError::Redis(e.to_string())
}

impl RedisStore {
    fn user_key(&self, bid: &str, user: &str) -> String {
        self.id_key("line:user", &[bid, user])
    }
}

#[async_trait]
impl LineStore for RedisStore {
    async fn line_inbox_put(&self, events: Vec<InboxEvent>) -> Result<usize> {
        let mut conn = self.conn.clone();
        let script = Script::new(INBOX_PUT);
        let mut inv = script.key(&self.prefix);
        inv.key(SEEN_SECS);
        for e in &events {
            inv.arg(&e.event_id).arg(&e.bid).arg(&e.event);
        }
        inv.invoke_async(&mut conn).await.map_err(err)
    }

    async fn line_inbox_pending(&self, limit: usize) -> Result<Vec<(i64, InboxEvent)>> {
        let mut conn = self.conn.clone();
        let seqs: Vec<i64> = conn.zrange(self.key(&["line", "inbox"]), 0, limit as isize - 1).await.map_err(err)?;
        let mut out = Vec::new();
        for seq in seqs {
            let h: HashMap<String, String> = conn.hgetall(self.key(&["line", "inbox", "ev", &seq.to_string()])).await.map_err(err)?;
            let g = |k: &str| h.get(k).cloned().unwrap_or_default();
            out.push((seq, InboxEvent { event_id: g("event_id"), bid: g("bid"), event: g("event") }));
        }
        Ok(out)
    }

    async fn line_inbox_done(&self, seq: i64) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .zrem(self.key(&["line", "inbox"]), seq)
            .del(self.key(&["line", "inbox", "ev", &seq.to_string()]))
            .exec_async(&mut conn)
            .await
            .map_err(err)
    }

    async fn line_user(&self, bid: &str, user: &str) -> Result<Option<LineUser>> {
        let mut conn = self.conn.clone();
        let h: HashMap<String, String> = conn.hgetall(self.user_key(bid, user)).await.map_err(err)?;
        if h.is_empty() {
            return Ok(None);
        }
        Ok(Some(LineUser {
            name: h.get("name").cloned(),
            name_at: h.get("name_at").and_then(|v| v.parse().ok()).unwrap_or(0),
            followed: h.get("followed").is_none_or(|v| v == "1"),
        }))
    }

    async fn line_user_name(&self, bid: &str, user: &str, name: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let fields = [("name", name.to_string()), ("name_at", super::now_ms().to_string())];
        conn.hset_multiple::<_, _, _, ()>(self.user_key(bid, user), &fields).await.map_err(err)
    }

    async fn line_user_followed(&self, bid: &str, user: &str, followed: bool) -> Result<()> {
        let mut conn = self.conn.clone();
        conn.hset::<_, _, _, ()>(self.user_key(bid, user), "followed", if followed { "1" } else { "0" }).await.map_err(err)
    }

    async fn line_reply_token_put(&self, bid: &str, user: &str, token: &str, at: i64) -> Result<()> {
        let mut conn = self.conn.clone();
        Script::new(TOKEN_PUT).key(self.user_key(bid, user)).arg(token).arg(at).invoke_async::<i64>(&mut conn).await.map_err(err)?;
        Ok(())
    }

    async fn line_reply_token_take(&self, bid: &str, user: &str, fresh_since: i64) -> Result<Option<(String, i64)>> {
        let mut conn = self.conn.clone();
        let got: Option<(String, i64)> = Script::new(TOKEN_TAKE).key(self.user_key(bid, user)).invoke_async(&mut conn).await.map_err(err)?;
        Ok(got.filter(|(_, at)| *at >= fresh_since))
    }

    async fn line_outbox_push(&self, item: OutItem) -> Result<OutItem> {
        let mut conn = self.conn.clone();
        let idx = self.key(&["line", "out", "idx", &item.thread, &item.msg_id.to_string()]);
        let body = serde_json::to_string(&item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let raw: String = Script::new(PUSH).key(idx).arg(body).arg(&self.prefix).invoke_async(&mut conn).await.map_err(err)?;
        OutItem::from_json(&raw)
    }

    async fn line_outbox_claim(&self, owner: &str, now: i64, lease_ms: i64) -> Result<Option<OutItem>> {
        let mut conn = self.conn.clone();
        let raw: Option<String> =
            Script::new(CLAIM).key(&self.prefix).arg(owner).arg(now).arg(now + lease_ms).invoke_async(&mut conn).await.map_err(err)?;
        raw.map(|r| OutItem::from_json(&r)).transpose()
    }

    async fn line_outbox_release(&self, owner: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        Script::new(RELEASE).key(&self.prefix).arg(owner).invoke_async::<i64>(&mut conn).await.map_err(err)?;
        Ok(())
    }

    async fn line_outbox_save(&self, item: &OutItem, release: bool) -> Result<()> {
        let mut conn = self.conn.clone();
        let id = item.id.to_string();
        let body = serde_json::to_string(item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let state = serde_json::json!([item.state, item.error]).to_string();
        let mut pipe = redis::pipe();
        pipe.atomic().set(self.key(&["line", "out", "item", &id]), body).hset(self.key(&["line", "delivery", &item.thread]), item.msg_id, state);
        if release {
            pipe.del(self.key(&["line", "out", "lease", &id]));
        }
        if item.state != delivery::QUEUED {
            pipe.zrem(self.key(&["line", "out", "queued"]), &id);
        }
        pipe.exec_async(&mut conn).await.map_err(err)
    }

    async fn line_deliveries(&self, thread: &str, ids: &[i64]) -> Result<HashMap<i64, (String, Option<String>)>> {
        let mut conn = self.conn.clone();
        let h: HashMap<i64, String> = conn.hgetall(self.key(&["line", "delivery", thread])).await.map_err(err)?;
        let mut out = HashMap::new();
        for id in ids {
            if let Some(raw) = h.get(id) {
                let v: serde_json::Value = serde_json::from_str(raw).unwrap_or_default();
                let state = v.get(0).and_then(|s| s.as_str()).unwrap_or("queued").to_string();
                let error = v.get(1).and_then(|s| s.as_str()).map(str::to_string);
                out.insert(*id, (state, error));
            }
        }
        Ok(out)
    }
}
