//! The store in MySQL or MariaDB (`store = "mysql://user:password@host/db"`), where the PHP
//! systems Switchboard replaces keep their chat history.
//!
//! The same design as `postgres`, in MySQL's terms: every key column compares bytes
//! (`utf8mb4_bin`: agent `Ann` is not agent `ann`, whatever the server's default collation);
//! sessions run at READ COMMITTED, so a statement sees what committed before it; a message's
//! id comes from the thread's counter row, whose lock orders that thread's writers; "one open
//! conversation per visitor" is a unique key on a column that is NULL once closed (MySQL has no
//! partial indexes); a re-sent `cid` is found by a unique hash of (thread, sender, cid) (the
//! three together are too long for an index). Payload columns (`TEXT`) keep a text collation,
//! as they are never compared and a binary one would make them BLOBs to the driver. Migrations
//! run under `GET_LOCK`.

use super::{now_ms, Conversation, ConversationSummary, Inserted, NewMessage, Result, Store, StoreError, StoredMessage};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{Executor, Row};
use std::collections::HashMap;

/// One step per version, each a list of statements (MySQL runs DDL one statement at a time
/// and commits it at once: a step is written to be re-run safely after a crash mid-way).
const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE IF NOT EXISTS messages (thread VARCHAR(700) NOT NULL, id BIGINT NOT NULL, sender VARCHAR(700) NOT NULL,
        from_uid TEXT COLLATE utf8mb4_general_ci NOT NULL, from_name TEXT COLLATE utf8mb4_general_ci NOT NULL, cid TEXT COLLATE utf8mb4_general_ci, dedup BINARY(32) NULL, content MEDIUMTEXT COLLATE utf8mb4_general_ci NOT NULL,
        dest TEXT COLLATE utf8mb4_general_ci NOT NULL, ts BIGINT NOT NULL, PRIMARY KEY (thread, id), UNIQUE KEY messages_dedup (dedup))
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS threads (thread VARCHAR(700) NOT NULL PRIMARY KEY, last BIGINT NOT NULL)
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS read_marks (thread VARCHAR(500) NOT NULL, reader VARCHAR(250) NOT NULL, id BIGINT NOT NULL,
        PRIMARY KEY (thread, reader)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS conversations (seq BIGINT NOT NULL AUTO_INCREMENT UNIQUE, id VARCHAR(64) NOT NULL PRIMARY KEY,
        bid VARCHAR(200) NOT NULL, visitor_id VARCHAR(300) NOT NULL, visitor_name TEXT COLLATE utf8mb4_general_ci NOT NULL, assigned VARCHAR(300) NULL,
        open BOOLEAN NOT NULL, open_visitor VARCHAR(300) NULL, created BIGINT NOT NULL,
        UNIQUE KEY conversations_open (bid, open_visitor), KEY conversations_page (bid, open, created, seq))
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS agents (bid VARCHAR(200) NOT NULL, agent VARCHAR(300) NOT NULL, name TEXT COLLATE utf8mb4_general_ci NOT NULL,
        PRIMARY KEY (bid, agent)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS turns (bid VARCHAR(200) NOT NULL PRIMARY KEY, n BIGINT NOT NULL)
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS line_inbox (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, event_id VARCHAR(200) NOT NULL UNIQUE,
        bid VARCHAR(200) NOT NULL, event MEDIUMTEXT COLLATE utf8mb4_general_ci NOT NULL, done BOOLEAN NOT NULL DEFAULT FALSE, KEY line_inbox_pending (done, seq))
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS line_users (bid VARCHAR(200) NOT NULL, line_user VARCHAR(200) NOT NULL, name TEXT COLLATE utf8mb4_general_ci NULL,
        name_at BIGINT NOT NULL DEFAULT 0, followed BOOLEAN NOT NULL DEFAULT TRUE, reply_token TEXT COLLATE utf8mb4_general_ci NULL,
        token_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (bid, line_user)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS line_outbox (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, bid VARCHAR(200) NOT NULL,
        line_user VARCHAR(200) NOT NULL, thread VARCHAR(600) NOT NULL, msg_id BIGINT NOT NULL, state VARCHAR(16) NOT NULL,
        due BIGINT NOT NULL, owner VARCHAR(200) NULL, lease BIGINT NOT NULL DEFAULT 0, error TEXT COLLATE utf8mb4_general_ci NULL, item MEDIUMTEXT COLLATE utf8mb4_general_ci NOT NULL,
        UNIQUE KEY line_outbox_msg (thread, msg_id), KEY line_outbox_queued (state, id))
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
], &[
    // Retention deletes by age.
    "ALTER TABLE messages ADD INDEX messages_ts (ts)",
], &[
    "CREATE TABLE IF NOT EXISTS leases (name VARCHAR(200) NOT NULL PRIMARY KEY, owner VARCHAR(200) NOT NULL, until BIGINT NOT NULL)
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
]];

/// The name migrations lock under (`GET_LOCK`), per database.
const MIGRATION_LOCK: &str = "switchboard_migrate";

pub struct MySqlStore {
    /// The pool, for tools that run their own SQL (tests, `store copy`).
    pub pool: MySqlPool,
}

/// The unique key of a re-sendable message: the three parts, length-prefixed so no two
/// different triples hash the same bytes.
pub(super) fn dedup_key(thread: &str, sender: &str, cid: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    for part in [thread, sender, cid] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().to_vec()
}

impl MySqlStore {
    /// Connects, then brings the schema up to this build's version (or refuses a newer one).
    pub async fn connect(url: &str, pool: super::PoolConfig) -> Result<MySqlStore> {
        let store = MySqlStore::reach(url, pool).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating: a replica (`store_read`) is read-only and follows the
    /// primary's schema.
    pub async fn reach(url: &str, pool: super::PoolConfig) -> Result<MySqlStore> {
        // One plain connection first, so a wrong address, password or database name fails
        // with the server's own words rather than the pool's "timed out".
        let first = tokio::time::timeout(pool.acquire_timeout, <sqlx::MySqlConnection as sqlx::Connection>::connect(url))
            .await
            .map_err(|_| StoreError::Sql(format!("no answer within {:?}", pool.acquire_timeout)))??;
        let _ = sqlx::Connection::close(first).await;
        let pool = MySqlPoolOptions::new()
            .max_connections(pool.max_connections.max(1))
            .acquire_timeout(pool.acquire_timeout)
            .after_connect(|c, _| {
                Box::pin(async move {
                    c.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await?;
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        Ok(MySqlStore { pool })
    }

    /// The message this sender already stored under `m`'s `cid` in `m`'s thread.
    async fn sent_before(&self, m: &NewMessage) -> Result<Option<StoredMessage>> {
        let Some(cid) = &m.cid else { return Ok(None) };
        let sql = concat!("SELECT ", server_msg_cols!(), " FROM messages WHERE dedup = ?");
        let key = dedup_key(&m.thread, &m.sender, cid);
        sqlx::query(sql).bind(key).fetch_optional(&self.pool).await?.as_ref().map(row_message).transpose()
    }

    /// The schema version the database is at (0: empty).
    pub async fn version(&self) -> Result<i64> {
        let exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'switchboard_schema'",
        )
        .fetch_one(&self.pool)
        .await?;
        if exists == 0 {
            return Ok(0);
        }
        Ok(sqlx::query_scalar("SELECT version FROM switchboard_schema").fetch_optional(&self.pool).await?.unwrap_or(0))
    }

    /// Applies the missing migrations while holding `GET_LOCK` on one connection: workers
    /// starting together wait for the first and then find nothing to do.
    pub async fn migrate(&self) -> Result<()> {
        let mut c = self.pool.acquire().await?;
        let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 60)").bind(MIGRATION_LOCK).fetch_one(&mut *c).await?;
        if got != Some(1) {
            return Err(StoreError::Corrupt("another worker held the migration lock for 60 s".into()));
        }
        let outcome = async {
            sqlx::query("CREATE TABLE IF NOT EXISTS switchboard_schema (version BIGINT NOT NULL) ENGINE=InnoDB").execute(&mut *c).await?;
            let at: i64 = sqlx::query_scalar("SELECT version FROM switchboard_schema").fetch_optional(&mut *c).await?.unwrap_or(0);
            let known = MIGRATIONS.len() as i64;
            if at > known {
                return Err(StoreError::Corrupt(format!(
                    "the database's schema is version {at}, newer than this Switchboard knows ({known}): upgrade Switchboard"
                )));
            }
            for (i, step) in MIGRATIONS.iter().enumerate().skip(at as usize) {
                for statement in *step {
                    match sqlx::query(statement).execute(&mut *c).await {
                        // An index made before a crash cut the step short: already done.
                        Err(sqlx::Error::Database(e)) if e.message().contains("Duplicate key name") => {}
                        other => {
                            other?;
                        }
                    }
                }
                sqlx::query("DELETE FROM switchboard_schema").execute(&mut *c).await?;
                sqlx::query("INSERT INTO switchboard_schema (version) VALUES (?)").bind(i as i64 + 1).execute(&mut *c).await?;
                tracing::info!(version = i + 1, "store migrated");
            }
            Ok(())
        }
        .await;
        let _ = sqlx::query("SELECT RELEASE_LOCK(?)").bind(MIGRATION_LOCK).execute(&mut *c).await;
        outcome
    }
}

// Key columns compare bytes (`utf8mb4_bin`), which the driver reports as VARBINARY; their
// bytes are UTF-8 all the same, so text columns are read without the driver's type check.

fn row_message(r: &MySqlRow) -> Result<StoredMessage> {
    let dest: String = r.try_get_unchecked("dest")?;
    Ok(StoredMessage {
        thread: r.try_get_unchecked("thread")?,
        id: r.try_get("id")?,
        sender: r.try_get_unchecked("sender")?,
        from_uid: r.try_get_unchecked("from_uid")?,
        from_name: r.try_get_unchecked("from_name")?,
        cid: r.try_get_unchecked("cid")?,
        content: r.try_get_unchecked("content")?,
        to: serde_json::from_str(&dest).unwrap_or_default(),
        timestamp: r.try_get("ts")?,
    })
}

fn row_conversation(r: &MySqlRow) -> Result<Conversation> {
    Ok(Conversation {
        id: r.try_get_unchecked("id")?,
        bid: r.try_get_unchecked("bid")?,
        visitor_id: r.try_get_unchecked("visitor_id")?,
        visitor_name: r.try_get_unchecked("visitor_name")?,
        assigned: r.try_get_unchecked("assigned")?,
        open: r.try_get("open")?,
        created: r.try_get("created")?,
    })
}

#[async_trait]
impl Store for MySqlStore {
    async fn insert_message(&self, m: NewMessage) -> Result<Inserted> {
        // As in `postgres`: the counter and the message in one short transaction, and a
        // re-sent `cid` (it hits the dedup key) rolled back and answered with the original,
        // read only then. `LAST_INSERT_ID(expr)` hands the counter's new value back in the
        // upsert's own answer, so no read is needed under the lock.
        let dedup = m.cid.as_deref().map(|cid| dedup_key(&m.thread, &m.sender, cid));
        let ts = now_ms();
        let dest = m.dest();
        let mut tx = self.pool.begin().await?;
        let counted =
            sqlx::query("INSERT INTO threads (thread, last) VALUES (?, LAST_INSERT_ID(1)) ON DUPLICATE KEY UPDATE last = LAST_INSERT_ID(last + 1)")
                .bind(&m.thread)
                .execute(&mut *tx)
                .await?;
        let id = i64::try_from(counted.last_insert_id()).map_err(|_| StoreError::Corrupt("a thread counter beyond i64".into()))?;
        let inserted = sqlx::query(
            "INSERT INTO messages (thread, id, sender, from_uid, from_name, cid, dedup, content, dest, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&m.thread)
        .bind(id)
        .bind(&m.sender)
        .bind(&m.from_uid)
        .bind(&m.from_name)
        .bind(&m.cid)
        .bind(&dedup)
        .bind(&m.content)
        .bind(&dest)
        .bind(ts)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {
                tx.commit().await?;
                Ok(Inserted::New(StoredMessage::stored(m, id, ts)))
            }
            // Rolled back at once (a dropped transaction keeps the counter's lock until its
            // connection is next used): the counter does not move for a duplicate.
            Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
                tx.rollback().await?;
                self.sent_before(&m).await?.map(Inserted::Duplicate).ok_or_else(|| e.into())
            }
            Err(e) => {
                tx.rollback().await?;
                Err(e.into())
            }
        }
    }

    async fn history(&self, thread: &str, before: Option<i64>, after: Option<i64>, limit: usize) -> Result<Vec<StoredMessage>> {
        let before = before.unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match after {
            Some(after) => {
                let sql = concat!("SELECT ", server_msg_cols!(), " FROM messages WHERE thread = ? AND id > ? AND id < ? ORDER BY id ASC LIMIT ?");
                sqlx::query(sql).bind(thread).bind(after).bind(before).bind(limit).fetch_all(&self.pool).await?
            }
            None => {
                let sql = concat!("SELECT ", server_msg_cols!(), " FROM messages WHERE thread = ? AND id < ? ORDER BY id DESC LIMIT ?");
                let mut rows = sqlx::query(sql).bind(thread).bind(before).bind(limit).fetch_all(&self.pool).await?;
                rows.reverse();
                rows
            }
        };
        rows.iter().map(row_message).collect()
    }

    async fn mark_read(&self, thread: &str, reader: &str, id: i64) -> Result<()> {
        sqlx::query("INSERT INTO read_marks (thread, reader, id) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE id = GREATEST(id, VALUES(id))")
            .bind(thread)
            .bind(reader)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn lease(&self, name: &str, owner: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        // One statement, so two takers cannot both win; the row then says who holds it.
        sqlx::query(
            "INSERT INTO leases (name, owner, until) VALUES (?, ?, ?)
             ON DUPLICATE KEY UPDATE owner = IF(owner = VALUES(owner) OR until < ?, VALUES(owner), owner),
                                     until = IF(owner = VALUES(owner), VALUES(until), until)",
        )
        .bind(name)
        .bind(owner)
        .bind(now_ms.saturating_add(ttl_ms))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        let mine: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM leases WHERE name = ? AND owner = ?").bind(name).bind(owner).fetch_one(&self.pool).await?;
        Ok(mine == 1)
    }

    async fn read_mark(&self, thread: &str, reader: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT id FROM read_marks WHERE thread = ? AND reader = ?")
            .bind(thread)
            .bind(reader)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn unread(&self, thread: &str, reader: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE thread = ? AND sender <> ?
             AND id > COALESCE((SELECT id FROM read_marks WHERE thread = ? AND reader = ?), 0)",
        )
        .bind(thread)
        .bind(reader)
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
        // `open_visitor` is the visitor while open, NULL once closed: the unique key keeps one
        // open conversation per visitor, and whoever loses the race inserts nothing.
        let inserted = sqlx::query(
            "INSERT IGNORE INTO conversations (id, bid, visitor_id, visitor_name, assigned, open, open_visitor, created)
             VALUES (?, ?, ?, ?, NULL, TRUE, ?, ?)",
        )
        .bind(&fresh.id)
        .bind(&fresh.bid)
        .bind(&fresh.visitor_id)
        .bind(&fresh.visitor_name)
        .bind(&fresh.visitor_id)
        .bind(fresh.created)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok((fresh, true));
        }
        let sql = concat!("SELECT ", conv_cols!(), " FROM conversations WHERE bid = ? AND open_visitor = ?");
        let row = sqlx::query(sql).bind(bid).bind(visitor_id).fetch_one(&self.pool).await?;
        Ok((row_conversation(&row)?, false))
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>> {
        let sql = concat!("SELECT ", conv_cols!(), " FROM conversations WHERE id = ?");
        sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?.as_ref().map(row_conversation).transpose()
    }

    async fn conversations(&self, bid: &str, after: Option<&str>, limit: usize) -> Result<Vec<Conversation>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let from: (i64, i64) = match after {
            Some(a) => sqlx::query_as("SELECT created, seq FROM conversations WHERE id = ?")
                .bind(a)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or((i64::MIN, i64::MIN)),
            None => (i64::MIN, i64::MIN),
        };
        let sql = concat!(
            "SELECT ",
            conv_cols!(),
            " FROM conversations WHERE bid = ? AND open AND (created > ? OR (created = ? AND seq > ?))
             ORDER BY created, seq LIMIT ?"
        );
        let rows = sqlx::query(sql).bind(bid).bind(from.0).bind(from.0).bind(from.1).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(row_conversation).collect()
    }

    /// Two round trips for the whole page: the page, then every thread's unread count and
    /// newest message in one query over the page's thread names (a derived table of them:
    /// MariaDB has no LATERAL and no array parameter).
    async fn conversation_summaries(&self, bid: &str, reader: &str, after: Option<&str>, limit: usize) -> Result<Vec<ConversationSummary>> {
        let page = self.conversations(bid, after, limit).await?;
        if page.is_empty() {
            return Ok(Vec::new());
        }
        // The table's collation, so that the thread names compare as the keys they are.
        let one = "SELECT CONVERT(? USING utf8mb4) COLLATE utf8mb4_bin AS thread";
        let threads = vec![one; page.len()].join(" UNION ALL ");
        let sql = format!(
            "SELECT t.thread AS page_thread,
                (SELECT COUNT(*) FROM messages c WHERE c.thread = t.thread AND c.sender <> ?
                   AND c.id > COALESCE((SELECT r.id FROM read_marks r WHERE r.thread = t.thread AND r.reader = ?), 0)) AS unread,
                m.thread, m.id, m.sender, m.from_uid, m.from_name, m.cid, m.content, m.dest, m.ts
             FROM ({threads}) t
             LEFT JOIN messages m ON m.thread = t.thread AND m.id = (SELECT MAX(x.id) FROM messages x WHERE x.thread = t.thread)"
        );
        let mut query = sqlx::query(&sql).bind(reader).bind(reader);
        for c in &page {
            query = query.bind(crate::keys::conversation_thread(&c.id));
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut details = HashMap::with_capacity(rows.len());
        for r in &rows {
            // A thread without messages has NULL in every message column.
            let last = r.try_get::<Option<i64>, _>("id")?.map(|_| row_message(r)).transpose()?;
            details.insert(r.try_get_unchecked("page_thread")?, (u64::try_from(r.try_get::<i64, _>("unread")?).unwrap_or(0), last));
        }
        Ok(ConversationSummary::of_page(page, details))
    }

    async fn assign(&self, id: &str, agent: &str, expected: Option<&str>) -> Result<bool> {
        // `<=>` is MySQL's NULL-safe equality; one UPDATE is the compare-and-set.
        let n = sqlx::query("UPDATE conversations SET assigned = ? WHERE id = ? AND open AND assigned <=> ?")
            .bind(agent)
            .bind(id)
            .bind(expected)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn close_conversation(&self, id: &str) -> Result<bool> {
        let n = sqlx::query("UPDATE conversations SET open = FALSE, open_visitor = NULL WHERE id = ? AND open")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn load(&self, bid: &str) -> Result<HashMap<String, u64>> {
        let rows = sqlx::query("SELECT assigned, COUNT(*) AS n FROM conversations WHERE bid = ? AND open AND assigned IS NOT NULL GROUP BY assigned")
            .bind(bid)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get_unchecked::<String, _>("assigned")?, r.try_get::<i64, _>("n")? as u64))).collect()
    }

    async fn add_agent(&self, bid: &str, agent: &str, name: &str) -> Result<()> {
        sqlx::query("INSERT INTO agents (bid, agent, name) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE name = VALUES(name)")
            .bind(bid)
            .bind(agent)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn agent_name(&self, bid: &str, agent: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT name FROM agents WHERE bid = ? AND agent = ?").bind(bid).bind(agent).fetch_optional(&self.pool).await?)
    }

    async fn next_turn(&self, bid: &str) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO turns (bid, n) VALUES (?, 1) ON DUPLICATE KEY UPDATE n = n + 1").bind(bid).execute(&mut *tx).await?;
        let n: i64 = sqlx::query_scalar("SELECT n FROM turns WHERE bid = ?").bind(bid).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(n as u64)
    }

    async fn delete_messages_before(&self, before_ms: i64, limit: usize) -> Result<u64> {
        let n = sqlx::query("DELETE FROM messages WHERE ts < ? ORDER BY ts LIMIT ?")
            .bind(before_ms)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n)
    }
}
