//! Where the chat keeps what must outlive a connection: messages (with ids, dedup by `cid`),
//! conversations and their assignment, read marks, and the agents each bot has seen.
//!
//! One trait, four backends: `sqlite` (the embedded default, a WAL file several worker
//! processes on one box share), and for several servers `postgres`, `mysql` (MySQL or
//! MariaDB) and `redis`. Every operation that must be atomic
//! across workers — giving a message its id, refusing a re-sent `cid`, assigning a conversation —
//! is atomic in the backend itself, never a read-then-write in Rust. PostgreSQL and MySQL can
//! serve the reads that may lag from a replica (`replica`). The SQLite store's own parts:
//! `runner` (who runs its jobs, batched), `wal` (copying the WAL back) and `vfs` (writing a
//! commit's WAL frames in one call).

/// The columns the PostgreSQL and MySQL stores read a message from, in their row reader's
/// order; macros, so that SQL built from them is a constant, not formatted at every call.
macro_rules! server_msg_cols {
    () => {
        "thread, id, sender, from_uid, from_name, cid, content, dest, ts"
    };
}
/// A conversation's columns, in the order every SQL store's `row_conversation` reads them.
macro_rules! conv_cols {
    () => {
        "id, bid, visitor_id, visitor_name, assigned, open, created"
    };
}

pub mod copy;
pub mod line;
mod line_mysql;
mod line_postgres;
mod line_redis;
mod line_sqlite;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod replica;
mod runner;
pub mod sqlite;
pub mod timed;
mod vfs;
mod wal;

use async_trait::async_trait;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("redis: {0}")]
    Redis(String),
    /// PostgreSQL or MySQL, as sqlx reports it.
    #[error("database: {0}")]
    Sql(String),
    #[error("the store's worker thread is gone")]
    Gone,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::Sql(e.to_string())
    }
}

/// Pool settings from `[events] store_pool` and `store_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    pub max_connections: u32,
    pub acquire_timeout: std::time::Duration,
}

impl PoolConfig {
    fn from_config(config: &crate::Config) -> PoolConfig {
        PoolConfig { max_connections: config.store_pool, acquire_timeout: std::time::Duration::from_secs_f64(config.store_timeout.max(0.1)) }
    }
}

/// A message to store. `thread` names the conversation, room or private pair it belongs to.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub thread: String,
    /// Who sent it, scoped by bot (`keys::agent_uid` / `keys::visitor_uid`): what a re-sent
    /// `cid` is recognised by, within its thread.
    pub sender: String,
    /// The sender as clients see it (`Who::from_uid`).
    pub from_uid: String,
    pub from_name: String,
    pub cid: Option<String>,
    pub content: String,
    /// The addressing fields echoed to clients (`to_uid`, `room` or `conversation_id`).
    pub to: serde_json::Map<String, serde_json::Value>,
}

impl NewMessage {
    /// The addressing fields as the SQL stores keep them (`dest`): JSON text, written without
    /// copying the map into a `Value` first. (A map with string keys always serializes.)
    pub fn dest(&self) -> String {
        serde_json::to_string(&self.to).unwrap_or_else(|_| "{}".into())
    }
}

/// A stored message: `id` increases within its thread; `timestamp` is milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub id: i64,
    pub thread: String,
    pub sender: String,
    pub from_uid: String,
    pub from_name: String,
    pub cid: Option<String>,
    pub content: String,
    pub to: serde_json::Map<String, serde_json::Value>,
    pub timestamp: i64,
}

impl StoredMessage {
    /// The message `m` as stored under `id` at `timestamp`.
    pub fn stored(m: NewMessage, id: i64, timestamp: i64) -> StoredMessage {
        StoredMessage {
            id,
            thread: m.thread,
            sender: m.sender,
            from_uid: m.from_uid,
            from_name: m.from_name,
            cid: m.cid,
            content: m.content,
            to: m.to,
            timestamp,
        }
    }
}

/// `Duplicate` when the sender already sent this `cid` in this thread: the original comes back.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    New(StoredMessage),
    Duplicate(StoredMessage),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conversation {
    pub id: String,
    pub bid: String,
    pub visitor_id: String,
    pub visitor_name: String,
    pub assigned: Option<String>,
    pub open: bool,
    pub created: i64,
}

/// An open conversation as an agent's list shows it: how many of its messages the agent has
/// not read, and its newest message.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationSummary {
    pub conversation: Conversation,
    pub unread: u64,
    pub last: Option<StoredMessage>,
}

impl ConversationSummary {
    /// A page's summaries from what a SQL backend read for the page's threads in one query:
    /// each thread's unread count and newest message (a thread missing from `details` has
    /// neither).
    fn of_page(page: Vec<Conversation>, mut details: HashMap<String, (u64, Option<StoredMessage>)>) -> Vec<ConversationSummary> {
        page.into_iter()
            .map(|conversation| {
                let (unread, last) = details.remove(&crate::keys::conversation_thread(&conversation.id)).unwrap_or_default();
                ConversationSummary { conversation, unread, last }
            })
            .collect()
    }
}

impl Conversation {
    /// `line` for a LINE user's conversation, `web` for a page's.
    pub fn channel(&self) -> &'static str {
        if crate::keys::line_user(&self.visitor_id).is_some() {
            "line"
        } else {
            "web"
        }
    }
}

#[async_trait]
pub trait Store: line::LineStore + Send + Sync + 'static {
    /// Stores a message under the next id of its thread, unless `(thread, sender, cid)` was
    /// seen: a `cid` only means "the same message" from the same sender in the same thread.
    async fn insert_message(&self, m: NewMessage) -> Result<Inserted>;
    /// Up to `limit` messages with `after < id < before`, oldest first; without `after`, the
    /// newest ones before `before` (paging backwards).
    async fn history(&self, thread: &str, before: Option<i64>, after: Option<i64>, limit: usize) -> Result<Vec<StoredMessage>>;
    /// Moves `reader`'s read mark in `thread` forward to `id` (never backwards); `reader` is a
    /// sender identity (`keys`).
    async fn mark_read(&self, thread: &str, reader: &str, id: i64) -> Result<()>;
    /// Messages in `thread` after `reader`'s read mark that `reader` did not send.
    async fn unread(&self, thread: &str, reader: &str) -> Result<u64>;
    /// Where `reader`'s mark on `thread` stands (the `id` of its latest `mark_read`): a
    /// follower's cursor (`feed`).
    async fn read_mark(&self, thread: &str, reader: &str) -> Result<Option<i64>>;
    /// Takes or renews lease `name` for `owner` until `now_ms + ttl_ms`, when it is free,
    /// expired or `owner`'s already; false when someone else holds it. What keeps one follower
    /// per webhook however many api processes (and servers) run it. A holder gives it up by
    /// renewing it as already expired (`now_ms - 1`, `ttl_ms` 0).
    async fn lease(&self, name: &str, owner: &str, now_ms: i64, ttl_ms: i64) -> Result<bool>;
    /// The visitor's open conversation with this bot, created if there is none (`true`: it
    /// was created by this call).
    async fn open_conversation(&self, bid: &str, visitor_id: &str, visitor_name: &str) -> Result<(Conversation, bool)>;
    async fn conversation(&self, id: &str) -> Result<Option<Conversation>>;
    /// Open conversations of a bot, oldest first: at most `limit`, those after conversation
    /// `after` (which may have closed since; an unknown one means from the start). Paged here,
    /// not by the caller, so a page costs its own size and not the bot's whole list.
    async fn conversations(&self, bid: &str, after: Option<&str>, limit: usize) -> Result<Vec<Conversation>>;
    /// A page of `conversations`, each with `reader`'s unread count and its newest message:
    /// what every agent login and `conversation_list` show. One call for the whole page,
    /// because asked conversation by conversation it is 1 + 2 × `limit` calls (201 with the
    /// default page of 100), which a login storm in a bot with many open conversations pays
    /// for every agent. This default asks in turn; a backend that can answers in one go.
    async fn conversation_summaries(&self, bid: &str, reader: &str, after: Option<&str>, limit: usize) -> Result<Vec<ConversationSummary>> {
        let mut out = Vec::new();
        for conversation in self.conversations(bid, after, limit).await? {
            let thread = crate::keys::conversation_thread(&conversation.id);
            let unread = self.unread(&thread, reader).await?;
            let last = self.history(&thread, None, None, 1).await?.pop();
            out.push(ConversationSummary { conversation, unread, last });
        }
        Ok(out)
    }
    /// Compare-and-set: assigns `agent` only if the conversation is open and currently
    /// assigned to `expected` (`None` = unassigned). True when it changed.
    async fn assign(&self, id: &str, agent: &str, expected: Option<&str>) -> Result<bool>;
    /// Closes an open conversation; true when it was open.
    async fn close_conversation(&self, id: &str) -> Result<bool>;
    /// Open conversations per agent of a bot.
    async fn load(&self, bid: &str) -> Result<std::collections::HashMap<String, u64>>;
    /// Remembers an agent of a bot (at login).
    async fn add_agent(&self, bid: &str, agent: &str, name: &str) -> Result<()>;
    /// The agent's display name, if the bot has seen this agent log in.
    async fn agent_name(&self, bid: &str, agent: &str) -> Result<Option<String>>;
    /// A counter per bot for round-robin assignment.
    async fn next_turn(&self, bid: &str) -> Result<u64>;
    /// Retention: deletes at most `limit` messages stored before `before_ms` (with what
    /// remembers their `cid`); how many. Called in small batches so no lock is held long.
    async fn delete_messages_before(&self, before_ms: i64, limit: usize) -> Result<u64>;
}

/// The sender identity of a message stored before senders were scoped by bot: what
/// `Who::uid` would have made of its `from_uid` (`v:<visitor>` for visitors, the bare
/// customer_id for agents), given the bot its thread belongs to.
pub(crate) fn legacy_sender(bid: &str, from_uid: &str) -> String {
    match from_uid.strip_prefix("v:") {
        Some(visitor) => crate::keys::visitor_uid(bid, visitor),
        None => crate::keys::agent_uid(bid, from_uid),
    }
}

/// The bot of a room or private thread stored before ids were escaped (`r:<bid>:…`,
/// `d:<bid>:…`); conversation threads (`c:<id>`) name their bot in the conversation.
pub(crate) fn legacy_thread_bot(thread: &str) -> Option<&str> {
    let rest = thread.strip_prefix("r:").or_else(|| thread.strip_prefix("d:"))?;
    rest.split(':').next()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Whether the store `url` names is one SQLite file, which takes one writer at a time: its
/// workers then ask the gateways to keep one of them active and the others standing by
/// (`[business] standby`; gateway/src/router.rs says why).
pub fn one_writer(url: &str) -> bool {
    matches!(url.split_once(':'), Some(("sqlite", _)))
}

/// Opens the store `[events] store` names, bringing its schema up to this build's version (a
/// bad URL, an unreachable server or a newer schema fail here, at start).
pub async fn open(config: &crate::Config) -> std::result::Result<Arc<dyn Store>, String> {
    let store: Arc<dyn Store> = match config.store.split_once(':') {
        Some(("sqlite", path)) => Arc::new(sqlite::SqliteStore::open(std::path::Path::new(path)).map_err(|e| format!("store {path}: {e}"))?),
        Some(("postgres" | "postgresql", _)) => Arc::new(
            postgres::PgStore::connect(&config.store, PoolConfig::from_config(config))
                .await
                .map_err(|e| format!("store {}: {e}", redacted(&config.store)))?,
        ),
        Some(("mysql" | "mariadb", _)) => Arc::new(
            mysql::MySqlStore::connect(&mysql_url(&config.store), PoolConfig::from_config(config))
                .await
                .map_err(|e| format!("store {}: {e}", redacted(&config.store)))?,
        ),
        Some(("redis" | "rediss", _)) => Arc::new(
            redis::RedisStore::connect_with(&config.store, &config.redis_prefix, std::time::Duration::from_secs_f64(config.store_timeout.max(0.1)))
                .await
                .map_err(|e| format!("store {}: {e}", config.store))?,
        ),
        _ => {
            return Err(format!(
                "unknown store {:?} (expected sqlite:<path>, postgres://user@host/db, mysql://user@host/db or redis://host:port)",
                redacted(&config.store)
            ))
        }
    };
    Ok(store)
}

/// `switchboard migrate`: what `open` does at a worker's start, by hand; says where the store is.
pub async fn migrate(config: &crate::Config) -> std::result::Result<String, String> {
    let pool = PoolConfig { max_connections: 1, ..PoolConfig::from_config(config) };
    let shown = redacted(&config.store);
    let version = match config.store.split_once(':').map(|(scheme, _)| scheme) {
        Some("postgres" | "postgresql") => async { postgres::PgStore::connect(&config.store, pool).await?.version().await }.await,
        Some("mysql" | "mariadb") => async { mysql::MySqlStore::connect(&mysql_url(&config.store), pool).await?.version().await }.await,
        _ => {
            open(config).await?;
            return Ok(format!("store {shown} is up to date"));
        }
    };
    let version = version.map_err(|e| format!("store {shown}: {e}"))?;
    Ok(format!("store {shown} is at schema version {version}"))
}

/// `mariadb://` is accepted as another name for `mysql://`.
fn mysql_url(url: &str) -> String {
    match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_string(),
    }
}

/// A store URL fit for a log line: a password in it is replaced by `***`.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
