//! The store in PostgreSQL (`store = "postgres://user@host/db"`): the chat's history in the
//! database a company already runs and backs up, shared by every worker on every server.
//!
//! sqlx's pool (`store_pool` connections, `store_timeout` to get one); every operation that
//! must be atomic across workers is one statement or one transaction in the database: a
//! message's id comes from a per-thread counter row whose lock orders that thread's writers
//! (ids without gaps; the counter and the message are one statement, one round trip), a
//! re-sent `cid` is caught by a unique index, assignment is one conditional UPDATE. The schema is versioned (`switchboard_schema`); migrations run at
//! start under an advisory lock, so ten workers starting at once migrate once, and a store
//! refuses to start on a schema newer than it knows.

use super::{now_ms, Conversation, ConversationSummary, Inserted, NewMessage, PoolConfig, Result, Store, StoreError, StoredMessage};
use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use std::collections::HashMap;

/// The schema this build knows, one step per version; step `n` brings version `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE messages (
    thread TEXT NOT NULL, id BIGINT NOT NULL, sender TEXT NOT NULL, from_uid TEXT NOT NULL, from_name TEXT NOT NULL,
    cid TEXT, content TEXT NOT NULL, dest TEXT NOT NULL, ts BIGINT NOT NULL, PRIMARY KEY (thread, id));
CREATE UNIQUE INDEX messages_dedup ON messages (thread, sender, cid) WHERE cid IS NOT NULL;
CREATE TABLE threads (thread TEXT PRIMARY KEY, last BIGINT NOT NULL);
CREATE TABLE read_marks (thread TEXT NOT NULL, reader TEXT NOT NULL, id BIGINT NOT NULL, PRIMARY KEY (thread, reader));
CREATE TABLE conversations (seq BIGSERIAL UNIQUE, id TEXT PRIMARY KEY, bid TEXT NOT NULL, visitor_id TEXT NOT NULL,
    visitor_name TEXT NOT NULL, assigned TEXT, open BOOLEAN NOT NULL, created BIGINT NOT NULL);
CREATE UNIQUE INDEX conversations_open ON conversations (bid, visitor_id) WHERE open;
CREATE INDEX conversations_page ON conversations (bid, created, seq) WHERE open;
CREATE TABLE agents (bid TEXT NOT NULL, agent TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (bid, agent));
CREATE TABLE turns (bid TEXT PRIMARY KEY, n BIGINT NOT NULL);
CREATE TABLE line_inbox (seq BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, bid TEXT NOT NULL, event TEXT NOT NULL,
    done BOOLEAN NOT NULL DEFAULT FALSE);
CREATE INDEX line_inbox_pending ON line_inbox (seq) WHERE NOT done;
CREATE TABLE line_users (bid TEXT NOT NULL, line_user TEXT NOT NULL, name TEXT, name_at BIGINT NOT NULL DEFAULT 0,
    followed BOOLEAN NOT NULL DEFAULT TRUE, reply_token TEXT, token_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (bid, line_user));
CREATE TABLE line_outbox (id BIGSERIAL PRIMARY KEY, bid TEXT NOT NULL, line_user TEXT NOT NULL, thread TEXT NOT NULL,
    msg_id BIGINT NOT NULL, state TEXT NOT NULL, due BIGINT NOT NULL, owner TEXT, lease BIGINT NOT NULL DEFAULT 0,
    error TEXT, item TEXT NOT NULL, UNIQUE (thread, msg_id));
CREATE INDEX line_outbox_queued ON line_outbox (id) WHERE state = 'queued';
",
    "
CREATE INDEX messages_ts ON messages (ts);
",
    "
CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, until BIGINT NOT NULL);
",
];

/// The advisory lock migrations run under (any constant; `hashtext('switchboard')`-like).
const MIGRATION_LOCK: i64 = 0x5357_4254_4348;

pub struct PgStore {
    /// The pool, for tools that run their own SQL (tests, `store copy`).
    pub pool: PgPool,
}

impl PgStore {
    /// Connects, then brings the schema up to this build's version (or refuses a newer one).
    pub async fn connect(url: &str, pool: PoolConfig) -> Result<PgStore> {
        let store = PgStore::reach(url, pool).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating: a replica (`store_read`) is read-only and follows the
    /// primary's schema.
    pub async fn reach(url: &str, pool: PoolConfig) -> Result<PgStore> {
        // One plain connection first, so a wrong address, password or database name fails
        // with the server's own words rather than the pool's "timed out".
        let first = tokio::time::timeout(pool.acquire_timeout, <sqlx::PgConnection as sqlx::Connection>::connect(url))
            .await
            .map_err(|_| StoreError::Sql(format!("no answer within {:?}", pool.acquire_timeout)))??;
        let _ = sqlx::Connection::close(first).await;
        let pool = PgPoolOptions::new().max_connections(pool.max_connections.max(1)).acquire_timeout(pool.acquire_timeout).connect(url).await?;
        Ok(PgStore { pool })
    }

    /// The message this sender already stored under `m`'s `cid` in `m`'s thread.
    async fn sent_before(&self, m: &NewMessage) -> Result<Option<StoredMessage>> {
        let Some(cid) = &m.cid else { return Ok(None) };
        let sql = concat!("SELECT ", server_msg_cols!(), " FROM messages WHERE thread = $1 AND sender = $2 AND cid = $3");
        sqlx::query(sql).bind(&m.thread).bind(&m.sender).bind(cid).fetch_optional(&self.pool).await?.as_ref().map(row_message).transpose()
    }

    /// The schema version the database is at (0: empty).
    pub async fn version(&self) -> Result<i64> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('switchboard_schema') IS NOT NULL").fetch_one(&self.pool).await?;
        if !exists {
            return Ok(0);
        }
        Ok(sqlx::query_scalar("SELECT version FROM switchboard_schema").fetch_optional(&self.pool).await?.unwrap_or(0))
    }

    /// Applies every migration the database lacks, in one transaction under an advisory lock:
    /// workers starting together wait for the first and then find nothing to do.
    pub async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS switchboard_schema (version BIGINT NOT NULL)").execute(&mut *tx).await?;
        let at: Option<i64> = sqlx::query_scalar("SELECT version FROM switchboard_schema").fetch_optional(&mut *tx).await?;
        let known = MIGRATIONS.len() as i64;
        let at = at.unwrap_or(0);
        if at > known {
            tx.rollback().await?;
            return Err(StoreError::Corrupt(format!(
                "the database's schema is version {at}, newer than this Switchboard knows ({known}): upgrade Switchboard"
            )));
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(at as usize) {
            sqlx::raw_sql(step).execute(&mut *tx).await?;
            tracing::info!(version = i + 1, "store migrated");
        }
        sqlx::query("DELETE FROM switchboard_schema").execute(&mut *tx).await?;
        sqlx::query("INSERT INTO switchboard_schema (version) VALUES ($1)").bind(known).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn row_message(r: &PgRow) -> Result<StoredMessage> {
    let dest: String = r.try_get("dest")?;
    Ok(StoredMessage {
        thread: r.try_get("thread")?,
        id: r.try_get("id")?,
        sender: r.try_get("sender")?,
        from_uid: r.try_get("from_uid")?,
        from_name: r.try_get("from_name")?,
        cid: r.try_get("cid")?,
        content: r.try_get("content")?,
        to: serde_json::from_str(&dest).unwrap_or_default(),
        timestamp: r.try_get("ts")?,
    })
}

fn row_conversation(r: &PgRow) -> Result<Conversation> {
    Ok(Conversation {
        id: r.try_get("id")?,
        bid: r.try_get("bid")?,
        visitor_id: r.try_get("visitor_id")?,
        visitor_name: r.try_get("visitor_name")?,
        assigned: r.try_get("assigned")?,
        open: r.try_get("open")?,
        created: r.try_get("created")?,
    })
}

/// For each thread of a page (`$1`): `reader`'s (`$2`) unread count, and the columns of its
/// newest message (NULL where it has none), each an index lookup.
const SUMMARIES_SQL: &str = "SELECT t.thread AS page_thread,
    (SELECT COUNT(*) FROM messages c WHERE c.thread = t.thread AND c.sender <> $2
       AND c.id > COALESCE((SELECT r.id FROM read_marks r WHERE r.thread = t.thread AND r.reader = $2), 0)) AS unread,
    m.thread, m.id, m.sender, m.from_uid, m.from_name, m.cid, m.content, m.dest, m.ts
  FROM UNNEST($1::text[]) AS t(thread)
  LEFT JOIN LATERAL (SELECT * FROM messages WHERE thread = t.thread ORDER BY id DESC LIMIT 1) m ON TRUE";

#[async_trait]
impl Store for PgStore {
    async fn insert_message(&self, m: NewMessage) -> Result<Inserted> {
        // One statement, committed on its own (one round trip): the thread's counter row
        // moves and the message is inserted with its value. The counter row's lock, held to
        // the commit, orders the thread's writers, so ids have no gaps. A re-sent `cid`
        // violates the dedup index, its whole statement (counter included) rolls back, and the
        // original is read then: only a retry pays a second round trip. (Every message was
        // looked for first, a round trip more for each new one, to spare a retry the counter
        // row's lock.)
        let ts = now_ms();
        let dest = m.dest();
        let inserted = sqlx::query_scalar::<_, i64>(
            "WITH n AS (INSERT INTO threads (thread, last) VALUES ($1, 1) \
                        ON CONFLICT (thread) DO UPDATE SET last = threads.last + 1 RETURNING last) \
             INSERT INTO messages (thread, id, sender, from_uid, from_name, cid, content, dest, ts) \
             SELECT $1, n.last, $2, $3, $4, $5, $6, $7, $8 FROM n RETURNING id",
        )
        .bind(&m.thread)
        .bind(&m.sender)
        .bind(&m.from_uid)
        .bind(&m.from_name)
        .bind(&m.cid)
        .bind(&m.content)
        .bind(&dest)
        .bind(ts)
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(id) => Ok(Inserted::New(StoredMessage::stored(m, id, ts))),
            Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
                self.sent_before(&m).await?.map(Inserted::Duplicate).ok_or_else(|| e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn history(&self, thread: &str, before: Option<i64>, after: Option<i64>, limit: usize) -> Result<Vec<StoredMessage>> {
        let before = before.unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match after {
            Some(after) => {
                let sql = concat!("SELECT ", server_msg_cols!(), " FROM messages WHERE thread = $1 AND id > $2 AND id < $3 ORDER BY id ASC LIMIT $4");
                sqlx::query(sql).bind(thread).bind(after).bind(before).bind(limit).fetch_all(&self.pool).await?
            }
            None => {
                let sql = concat!("SELECT ", server_msg_cols!(), " FROM messages WHERE thread = $1 AND id < $2 ORDER BY id DESC LIMIT $3");
                let mut rows = sqlx::query(sql).bind(thread).bind(before).bind(limit).fetch_all(&self.pool).await?;
                rows.reverse();
                rows
            }
        };
        rows.iter().map(row_message).collect()
    }

    async fn mark_read(&self, thread: &str, reader: &str, id: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO read_marks (thread, reader, id) VALUES ($1, $2, $3)
             ON CONFLICT (thread, reader) DO UPDATE SET id = GREATEST(read_marks.id, excluded.id)",
        )
        .bind(thread)
        .bind(reader)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn lease(&self, name: &str, owner: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        let taken: Option<String> = sqlx::query_scalar(
            "INSERT INTO leases (name, owner, until) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
             WHERE leases.owner = excluded.owner OR leases.until < $4
             RETURNING owner",
        )
        .bind(name)
        .bind(owner)
        .bind(now_ms.saturating_add(ttl_ms))
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(taken.is_some())
    }

    async fn read_mark(&self, thread: &str, reader: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT id FROM read_marks WHERE thread = $1 AND reader = $2")
            .bind(thread)
            .bind(reader)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn unread(&self, thread: &str, reader: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE thread = $1 AND sender <> $2
             AND id > COALESCE((SELECT id FROM read_marks WHERE thread = $1 AND reader = $2), 0)",
        )
        .bind(thread)
        .bind(reader)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn open_conversation(&self, bid: &str, visitor_id: &str, visitor_name: &str) -> Result<(Conversation, bool)> {
        let fresh = Conversation {
            id: crate::keys::new_id(),
            bid: bid.into(),
            visitor_id: visitor_id.into(),
            visitor_name: visitor_name.into(),
            assigned: None,
            open: true,
            created: now_ms(),
        };
        // The partial unique index keeps one open conversation per visitor: whoever loses the
        // race inserts nothing and reads the winner's.
        let inserted = sqlx::query(
            "INSERT INTO conversations (id, bid, visitor_id, visitor_name, assigned, open, created) VALUES ($1, $2, $3, $4, NULL, TRUE, $5)
             ON CONFLICT (bid, visitor_id) WHERE open DO NOTHING",
        )
        .bind(&fresh.id)
        .bind(&fresh.bid)
        .bind(&fresh.visitor_id)
        .bind(&fresh.visitor_name)
        .bind(fresh.created)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok((fresh, true));
        }
        let sql = concat!("SELECT ", conv_cols!(), " FROM conversations WHERE bid = $1 AND visitor_id = $2 AND open");
        let row = sqlx::query(sql).bind(bid).bind(visitor_id).fetch_one(&self.pool).await?;
        Ok((row_conversation(&row)?, false))
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>> {
        let sql = concat!("SELECT ", conv_cols!(), " FROM conversations WHERE id = $1");
        sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?.as_ref().map(row_conversation).transpose()
    }

    async fn conversations(&self, bid: &str, after: Option<&str>, limit: usize) -> Result<Vec<Conversation>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The cursor's place in the order (a closed conversation keeps its row and place).
        let from: (i64, i64) = match after {
            Some(a) => sqlx::query_as("SELECT created, seq FROM conversations WHERE id = $1")
                .bind(a)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or((i64::MIN, i64::MIN)),
            None => (i64::MIN, i64::MIN),
        };
        let sql = concat!(
            "SELECT ",
            conv_cols!(),
            " FROM conversations WHERE bid = $1 AND open AND (created, seq) > ($2, $3) ORDER BY created, seq LIMIT $4"
        );
        let rows = sqlx::query(sql).bind(bid).bind(from.0).bind(from.1).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(row_conversation).collect()
    }

    /// Two round trips for the whole page: the page, then every thread's unread count and
    /// newest message in one query over the page's thread names.
    async fn conversation_summaries(&self, bid: &str, reader: &str, after: Option<&str>, limit: usize) -> Result<Vec<ConversationSummary>> {
        let page = self.conversations(bid, after, limit).await?;
        if page.is_empty() {
            return Ok(Vec::new());
        }
        let threads: Vec<String> = page.iter().map(|c| crate::keys::conversation_thread(&c.id)).collect();
        let rows = sqlx::query(SUMMARIES_SQL).bind(&threads).bind(reader).fetch_all(&self.pool).await?;
        let mut details = HashMap::with_capacity(rows.len());
        for r in &rows {
            // A thread without messages has NULL in every message column.
            let last = r.try_get::<Option<i64>, _>("id")?.map(|_| row_message(r)).transpose()?;
            details.insert(r.try_get("page_thread")?, (u64::try_from(r.try_get::<i64, _>("unread")?).unwrap_or(0), last));
        }
        Ok(ConversationSummary::of_page(page, details))
    }

    async fn assign(&self, id: &str, agent: &str, expected: Option<&str>) -> Result<bool> {
        // One conditional UPDATE is the compare-and-set; IS NOT DISTINCT FROM matches NULL.
        let n = sqlx::query("UPDATE conversations SET assigned = $1 WHERE id = $2 AND open AND assigned IS NOT DISTINCT FROM $3")
            .bind(agent)
            .bind(id)
            .bind(expected)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn close_conversation(&self, id: &str) -> Result<bool> {
        let n = sqlx::query("UPDATE conversations SET open = FALSE WHERE id = $1 AND open").bind(id).execute(&self.pool).await?.rows_affected();
        Ok(n == 1)
    }

    async fn load(&self, bid: &str) -> Result<HashMap<String, u64>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT assigned, COUNT(*) FROM conversations WHERE bid = $1 AND open AND assigned IS NOT NULL GROUP BY assigned")
                .bind(bid)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(a, n)| (a, n as u64)).collect())
    }

    async fn add_agent(&self, bid: &str, agent: &str, name: &str) -> Result<()> {
        // The same name again (every reconnect) updates nothing: no new row version, no WAL.
        sqlx::query(
            "INSERT INTO agents (bid, agent, name) VALUES ($1, $2, $3)
             ON CONFLICT (bid, agent) DO UPDATE SET name = excluded.name WHERE agents.name IS DISTINCT FROM excluded.name",
        )
        .bind(bid)
        .bind(agent)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn agent_name(&self, bid: &str, agent: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT name FROM agents WHERE bid = $1 AND agent = $2").bind(bid).bind(agent).fetch_optional(&self.pool).await?)
    }

    async fn next_turn(&self, bid: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("INSERT INTO turns (bid, n) VALUES ($1, 1) ON CONFLICT (bid) DO UPDATE SET n = turns.n + 1 RETURNING n")
            .bind(bid)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn delete_messages_before(&self, before_ms: i64, limit: usize) -> Result<u64> {
        let n = sqlx::query("DELETE FROM messages WHERE ctid IN (SELECT ctid FROM messages WHERE ts < $1 LIMIT $2)")
            .bind(before_ms)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n)
    }
}
