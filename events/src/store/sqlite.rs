//! The embedded store: one SQLite file in WAL mode, shared by every worker process on a box.
//!
//! rusqlite is blocking. Each process keeps one connection, run by whoever finds it idle
//! (`runner`): a caller, on its own thread, or the store thread for what queues meanwhile. Every
//! job waiting runs in one `BEGIN IMMEDIATE` transaction (group commit: one lock and one WAL
//! commit for a burst instead of one per message, which is what bounded the chat's throughput;
//! figures in docs/BENCHMARKS.md). Each job is atomic on its own (a job of several writes takes
//! a savepoint; one write statement is atomic by itself), and its answer leaves only once the
//! batch is committed, so nothing is acknowledged that a failed commit could lose. SQLite
//! serialises the batches of several processes. A thread of its own copies the WAL back into
//! the file meanwhile (`wal`).

use super::{now_ms, Conversation, ConversationSummary, Inserted, NewMessage, Result, Store, StoreError, StoredMessage};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;

type Job = super::runner::Job<Writer>;
type Answer = super::runner::Answer;

/// What runs the jobs (a caller or the store thread, `runner`): the connection, and each
/// thread's last message id as this connection last saw it, so that a message's id is not
/// looked up in the table every time.
///
/// The ids are good only while no other connection has written: they are forgotten when
/// `PRAGMA data_version` moves (another worker's or `switchboard copy`'s commit), when a batch
/// is rolled back, and when a job runs outside a batch's write lock. An id that is wrong anyway
/// (a write this connection made some other way) is caught by the table's primary key, and the
/// insert looks the id up again.
struct Writer {
    /// Told of each commit; dropped first, so it copies what is left while `conn` is open.
    checkpointer: super::wal::Checkpointer,
    conn: Connection,
    last_ids: HashMap<String, i64>,
    /// `data_version` when `last_ids` was last known good.
    version: Option<i64>,
}

/// Threads whose last id is kept (a bound on the map: past it, it starts again empty).
const LAST_IDS: usize = 100_000;

impl Writer {
    /// Called with the write lock held, before a batch's jobs: forgets the ids if another
    /// connection committed since the last batch.
    fn check_version(&mut self) {
        let now = self.conn.row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)).ok();
        if now.is_none() || now != self.version {
            self.last_ids.clear();
        }
        self.version = now;
    }

    fn forget(&mut self) {
        self.last_ids.clear();
        self.version = None;
    }

    /// The id the thread's next message gets.
    fn next_id(&mut self, thread: &str) -> rusqlite::Result<i64> {
        if let Some(last) = self.last_ids.get(thread) {
            return Ok(last + 1);
        }
        self.conn.row("SELECT COALESCE(MAX(id), 0) + 1 FROM messages WHERE thread = ?1", [thread], |r| r.get(0))
    }

    fn stored(&mut self, thread: &str, id: i64) {
        if self.version.is_none() {
            return;
        }
        if self.last_ids.len() >= LAST_IDS && !self.last_ids.contains_key(thread) {
            self.last_ids.clear();
        }
        self.last_ids.insert(thread.to_string(), id);
    }
}

/// Compiled statements kept per connection (see `Cached`).
const STATEMENT_CACHE: usize = 64;

pub struct SqliteStore {
    runner: super::runner::Runner<Writer>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    thread TEXT NOT NULL, id INTEGER NOT NULL, from_uid TEXT NOT NULL, from_name TEXT NOT NULL,
    cid TEXT, content TEXT NOT NULL, dest TEXT NOT NULL, ts INTEGER NOT NULL, sender TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (thread, id));
CREATE TABLE IF NOT EXISTS read_marks (thread TEXT NOT NULL, uid TEXT NOT NULL, id INTEGER NOT NULL,
    PRIMARY KEY (thread, uid));
CREATE TABLE IF NOT EXISTS conversations (id TEXT PRIMARY KEY, bid TEXT NOT NULL, visitor_id TEXT NOT NULL,
    visitor_name TEXT NOT NULL, assigned TEXT, open INTEGER NOT NULL, created INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS conversations_open ON conversations(bid, visitor_id) WHERE open = 1;
CREATE INDEX IF NOT EXISTS conversations_page ON conversations(bid, created) WHERE open = 1;
CREATE TABLE IF NOT EXISTS agents (bid TEXT NOT NULL, agent TEXT NOT NULL, name TEXT NOT NULL,
    PRIMARY KEY (bid, agent));
CREATE TABLE IF NOT EXISTS turns (bid TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS messages_ts ON messages(ts);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, until INTEGER NOT NULL);
-- The LINE channel's inbox, users and outgoing queue (`line_sqlite`).
CREATE TABLE IF NOT EXISTS line_inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
    bid TEXT NOT NULL, event TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS line_inbox_pending ON line_inbox(done, seq);
CREATE TABLE IF NOT EXISTS line_users (bid TEXT NOT NULL, user TEXT NOT NULL, name TEXT, name_at INTEGER NOT NULL DEFAULT 0,
    followed INTEGER NOT NULL DEFAULT 1, reply_token TEXT, token_at INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (bid, user));
CREATE TABLE IF NOT EXISTS line_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, bid TEXT NOT NULL, user TEXT NOT NULL,
    thread TEXT NOT NULL, msg_id INTEGER NOT NULL, state TEXT NOT NULL, due INTEGER NOT NULL,
    owner TEXT, lease INTEGER NOT NULL DEFAULT 0, error TEXT, item TEXT NOT NULL, UNIQUE (thread, msg_id));
CREATE INDEX IF NOT EXISTS line_outbox_queued ON line_outbox(state, id);
";

/// What `PRAGMA user_version` says once `migrate` has run: 2 = senders scoped by bot.
const SCHEMA_VERSION: i64 = 2;

/// Brings a database written by an older Switchboard up to `SCHEMA_VERSION`, once, whichever
/// of the box's workers gets there first (the IMMEDIATE transaction makes the others wait,
/// then find it done).
///
/// Version 2: a re-sent `cid` is recognised per thread and per bot-scoped sender, no longer
/// per bare `from_uid` across every bot (where an agent of one bot reusing another's id, or a
/// `cid` reused in a second conversation, was answered with the other message and lost). Old
/// messages and read marks get the sender identity their `from_uid` had within their bot.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let has_sender = tx.prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'sender'")?.exists([])?;
    if !has_sender {
        tx.execute_batch("ALTER TABLE messages ADD COLUMN sender TEXT NOT NULL DEFAULT ''")?;
    }
    let bot_of = |tx: &rusqlite::Transaction<'_>, thread: &str| -> Result<Option<String>> {
        if let Some(conv) = thread.strip_prefix("c:") {
            return Ok(tx.query_row("SELECT bid FROM conversations WHERE id = ?1", [conv], |r| r.get(0)).optional()?);
        }
        Ok(super::legacy_thread_bot(thread).map(str::to_string))
    };
    let old: Vec<(i64, String, String)> = tx
        .prepare("SELECT rowid, thread, from_uid FROM messages WHERE sender = ''")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut migrated = 0usize;
    for (rowid, thread, from_uid) in &old {
        let bid = bot_of(&tx, thread)?.unwrap_or_default();
        tx.execute("UPDATE messages SET sender = ?1 WHERE rowid = ?2", params![super::legacy_sender(&bid, from_uid), rowid])?;
        migrated += 1;
    }
    let marks: Vec<(String, String)> =
        tx.prepare("SELECT thread, uid FROM read_marks")?.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    for (thread, uid) in &marks {
        let bid = bot_of(&tx, thread)?.unwrap_or_default();
        tx.execute(
            "UPDATE OR REPLACE read_marks SET uid = ?1 WHERE thread = ?2 AND uid = ?3",
            params![super::legacy_sender(&bid, uid), thread, uid],
        )?;
    }
    tx.execute_batch(&format!(
        "DROP INDEX IF EXISTS messages_cid;
         CREATE UNIQUE INDEX IF NOT EXISTS messages_dedup ON messages(thread, sender, cid) WHERE cid IS NOT NULL;
         PRAGMA user_version = {SCHEMA_VERSION};"
    ))?;
    tx.commit()?;
    if migrated > 0 || !marks.is_empty() {
        tracing::info!(messages = migrated, read_marks = marks.len(), "store migrated: senders scoped by bot");
    }
    Ok(())
}

fn row_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let dest: String = r.get(6)?;
    Ok(StoredMessage {
        sender: r.get(8)?,
        thread: r.get(0)?,
        id: r.get(1)?,
        from_uid: r.get(2)?,
        from_name: r.get(3)?,
        cid: r.get(4)?,
        content: r.get(5)?,
        to: serde_json::from_str(&dest).unwrap_or_default(),
        timestamp: r.get(7)?,
    })
}

fn row_conversation(r: &rusqlite::Row<'_>) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: r.get(0)?,
        bid: r.get(1)?,
        visitor_id: r.get(2)?,
        visitor_name: r.get(3)?,
        assigned: r.get(4)?,
        open: r.get::<_, i64>(5)? == 1,
        created: r.get(6)?,
    })
}

/// The columns `row_message` reads, in its order (a macro so that SQL built from it is a
/// constant, not a string formatted on every call).
macro_rules! msg_cols {
    () => {
        "thread, id, from_uid, from_name, cid, content, dest, ts, sender"
    };
}
/// A message already stored under this (thread, sender, cid): the re-sent one's answer.
const DUPLICATE_SQL: &str = concat!("SELECT ", msg_cols!(), " FROM messages WHERE thread = ?1 AND sender = ?2 AND cid = ?3");
/// A conversation by id: every message of a conversation reads it (`conversation_for`).
const CONVERSATION_SQL: &str = concat!("SELECT ", conv_cols!(), " FROM conversations WHERE id = ?1");
/// A visitor's open conversation with a bot.
const OPEN_CONVERSATION_SQL: &str = concat!("SELECT ", conv_cols!(), " FROM conversations WHERE bid = ?1 AND visitor_id = ?2 AND open = 1");
/// A bot's open conversations after a cursor (`Store::conversations`), read in order from the
/// `conversations_page` index: without it SQLite sorted every open conversation of the bot
/// into a temporary B-tree at every agent's login, to return the first page.
const CONVERSATIONS_SQL: &str = concat!(
    "SELECT ",
    conv_cols!(),
    " FROM conversations WHERE bid = ?1 AND open = 1 AND (created, rowid) > (?2, ?3) ORDER BY created ASC, rowid ASC LIMIT ?4"
);
/// A thread's newest messages, newest first.
const NEWEST_SQL: &str = concat!("SELECT ", msg_cols!(), " FROM messages WHERE thread = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3");
/// A thread's messages after `id`, oldest first.
const AFTER_SQL: &str = concat!("SELECT ", msg_cols!(), " FROM messages WHERE thread = ?1 AND id > ?2 AND id < ?3 ORDER BY id ASC LIMIT ?4");
const UNREAD_SQL: &str = "SELECT COUNT(*) FROM messages WHERE thread = ?1 AND sender != ?2
     AND id > COALESCE((SELECT id FROM read_marks WHERE thread = ?1 AND uid = ?2), 0)";

/// `Store::history` on a connection.
fn history(c: &Connection, thread: &str, before: Option<i64>, after: Option<i64>, limit: usize) -> rusqlite::Result<Vec<StoredMessage>> {
    let before = before.unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    if let Some(after) = after {
        let mut st = c.prepare_cached(AFTER_SQL)?;
        let rows = st.query_map(params![thread, after, before, limit], row_message)?;
        return rows.collect();
    }
    let mut st = c.prepare_cached(NEWEST_SQL)?;
    let rows = st.query_map(params![thread, before, limit], row_message)?;
    let mut v = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    v.reverse();
    Ok(v)
}

/// `Store::unread` on a connection.
fn unread(c: &Connection, thread: &str, uid: &str) -> rusqlite::Result<u64> {
    let n: i64 = c.row(UNREAD_SQL, params![thread, uid], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// `Store::conversations` on a connection.
fn conversations(c: &Connection, bid: &str, after: Option<&str>, limit: usize) -> rusqlite::Result<Vec<Conversation>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // The cursor's place in the order (closed conversations keep their row).
    let from: (i64, i64) = match after {
        Some(a) => c
            .row("SELECT created, rowid FROM conversations WHERE id = ?1", [a], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or((i64::MIN, i64::MIN)),
        None => (i64::MIN, i64::MIN),
    };
    let mut st = c.prepare_cached(CONVERSATIONS_SQL)?;
    let rows = st.query_map(params![bid, from.0, from.1, limit], row_conversation)?;
    rows.collect()
}

impl SqliteStore {
    /// Opens (creating if needed) the database file.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Corrupt(format!("{}: {e}", dir.display())))?;
        }
        // Every customer's history is in this file: readable by this user only. SQLite gives
        // the -wal and -shm files the database file's own permissions.
        {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::Corrupt(format!("{}: {e}", path.display()))),
            }
        }
        // Through `vfs`: a commit's WAL frames in one write.
        let mut conn = super::vfs::open(path, rusqlite::OpenFlags::default())?;
        // Several worker processes write the same file: wait for each other's locks, polling
        // every fraction of a millisecond (SQLite's own busy_timeout sleeps up to 100 ms at a
        // time, which showed as latency spikes with two workers; docs/BENCHMARKS.md).
        conn.busy_handler(Some(wait_for_lock))?;
        // The query planner's stability guarantee: a cached statement keeps its plan whatever
        // values it is run with. Without it SQLite compiled some of ours again on every call
        // (the bot's open conversations, which every agent's login lists: 40 % of the store
        // thread in a login storm), to re-check a partial index against the new values.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        // Every statement the store runs stays compiled (the chat's and LINE's, about 40;
        // rusqlite keeps 16 by default and would evict and compile them again in turn).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Switching to WAL can report "locked" at once, without waiting, while another process
        // is doing the same; retry for a while instead of failing the worker's start.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let setup = conn
                .pragma_update(None, "journal_mode", "WAL")
                .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
                .and_then(|_| conn.execute_batch(SCHEMA))
                .map_err(StoreError::from)
                .and_then(|_| migrate(&mut conn));
            match setup {
                Ok(()) => break,
                Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                    if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
        // The checkpoint thread copies on `wal`'s schedule, not the commit that crosses a mark.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = super::wal::Checkpointer::start(path)?;
        let writer = Writer { checkpointer, conn, last_ids: HashMap::new(), version: None };
        let runner = super::runner::Runner::start("sqlite-store", writer, run_batch)
            .map_err(|e| StoreError::Corrupt(format!("cannot start the store thread: {e}")))?;
        Ok(SqliteStore { runner })
    }

    /// Runs `f` against the store's connection (on this thread when the store is idle, else on
    /// the store thread); work that must be atomic uses `c.savepoint()`.
    pub(super) async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static) -> Result<T> {
        self.run_writer(true, move |w| f(&mut w.conn)).await
    }

    /// `run` for a job long enough to hold a runtime thread up (retention's deletes): always on
    /// the store thread.
    async fn run_queued<T: Send + 'static>(&self, f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static) -> Result<T> {
        self.run_writer(false, move |w| f(&mut w.conn)).await
    }

    /// `run` with the thread's last ids at hand (`insert_message`).
    async fn run_writer<T: Send + 'static>(&self, may_run_here: bool, f: impl FnOnce(&mut Writer) -> Result<T> + Send + 'static) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |w| {
            let result = f(w);
            Box::new(move |committed| {
                let _ = tx.send(if committed { result } else { Err(StoreError::Corrupt("the store's commit failed".into())) });
            })
        });
        if let Some(lead) = self.runner.submit(job, may_run_here).map_err(|_| StoreError::Gone)? {
            // The events already read run first and queue their jobs behind this one: one
            // commit for them all, here, with no thread woken. Run here, the answer is in.
            tokio::task::yield_now().await;
            lead.run();
        }
        rx.await.map_err(|_| StoreError::Gone)?
    }
}

/// SQLite's busy handler: `true` = try again. About 10 s in all, as the old busy_timeout; never
/// on a caller's own thread, whose batch goes to the store thread instead (`runner`).
fn wait_for_lock(attempt: i32) -> bool {
    if super::runner::inline() {
        return false;
    }
    let pause = if attempt < 200 { Duration::from_micros(50) } else { Duration::from_micros(500) };
    if attempt > 20_000 {
        return false;
    }
    std::thread::sleep(pause);
    true
}

/// One transaction around every job of the batch; the answers go after the commit. On a
/// caller's own thread, a transaction that cannot begin at once gives the jobs back.
fn run_batch(w: &mut Writer, batch: Vec<Job>) -> std::result::Result<(), Vec<Job>> {
    if !w.conn.is_autocommit() {
        // A batch interrupted by a panicking job left its transaction open.
        tracing::error!("store: rolling back an interrupted batch's transaction");
        let _ = w.conn.execute_batch("ROLLBACK");
        w.forget();
    }
    // BEGIN IMMEDIATE waits (`wait_for_lock`) for other processes' batches. Both statements
    // are cached: parsing them again for every batch showed in the profile.
    if let Err(e) = w.conn.exec("BEGIN IMMEDIATE", []) {
        if super::runner::inline() {
            return Err(batch);
        }
        tracing::warn!("store: cannot begin a transaction: {e}");
        // Each job then runs in autocommit mode (a job's savepoint, where it takes one, is its
        // own transaction; a single write statement is atomic by itself), where another
        // process may write between two jobs: no id is kept (until a batch checks the version).
        w.forget();
        for job in batch {
            job(w)(true);
        }
        w.checkpointer.committed();
        return Ok(());
    }
    w.check_version();
    let answers: Vec<Answer> = batch.into_iter().map(|job| job(w)).collect();
    let committed = match w.conn.exec("COMMIT", []) {
        Ok(_) => true,
        Err(e) => {
            tracing::error!("store: commit of {} jobs failed, refusing them: {e}", answers.len());
            let _ = w.conn.execute_batch("ROLLBACK");
            w.forget();
            false
        }
    };
    w.checkpointer.committed();
    for answer in answers {
        answer(committed);
    }
    Ok(())
}

/// Statements through the connection's statement cache: compiled once, not on every call
/// (`Connection::execute` and `query_row` compile their SQL each time; an agent login's
/// upsert compiling was 4 % of a worker's CPU in a burst of logins, `perf`, session 22).
pub(super) trait Cached {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_message(&self, m: NewMessage) -> Result<Inserted> {
        // A cid the sender already used in this thread is refused by the dedup index (ON
        // CONFLICT DO NOTHING: no row changes), so only a duplicate pays for reading the
        // original; a new message is not looked for first. (The id could be computed in the
        // INSERT too, but SQLite then copies the SELECT into a temporary table, as it reads the
        // table it writes: more instructions than the separate read.) No savepoint: the INSERT
        // is one statement, atomic by itself, and the batch's write lock keeps another writer
        // out between reading the thread's last id and inserting.
        self.run_writer(true, move |w| {
            let ts = now_ms();
            let dest = m.dest();
            // The thread's next id, inserted under it; `None` when the row was refused.
            let insert = |w: &mut Writer| -> Result<Option<i64>> {
                let id = w.next_id(&m.thread)?;
                let inserted = w.conn.exec(
                    "INSERT INTO messages (thread, id, from_uid, from_name, cid, content, dest, ts, sender)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
                    params![m.thread, id, m.from_uid, m.from_name, m.cid, m.content, dest, ts, m.sender],
                )?;
                if inserted != 1 {
                    return Ok(None);
                }
                w.stored(&m.thread, id);
                Ok(Some(id))
            };
            let mut id = insert(w)?;
            if id.is_none() {
                // Refused by the dedup index (a cid this sender already used here: the
                // original answers), or by the primary key if the kept id was out of date.
                if let Some(cid) = m.cid.as_deref() {
                    if let Some(old) = w.conn.row(DUPLICATE_SQL, params![m.thread, m.sender, cid], row_message).optional()? {
                        return Ok(Inserted::Duplicate(old));
                    }
                }
                w.last_ids.remove(&m.thread);
                id = insert(w)?;
            }
            match id {
                Some(id) => Ok(Inserted::New(StoredMessage::stored(m, id, ts))),
                None => Err(StoreError::Corrupt(format!("a message in {} was refused, and no earlier one has its cid", m.thread))),
            }
        })
        .await
    }

    async fn history(&self, thread: &str, before: Option<i64>, after: Option<i64>, limit: usize) -> Result<Vec<StoredMessage>> {
        let thread = thread.to_string();
        self.run(move |c| Ok(history(c, &thread, before, after, limit)?)).await
    }

    async fn mark_read(&self, thread: &str, uid: &str, id: i64) -> Result<()> {
        let (thread, uid) = (thread.to_string(), uid.to_string());
        self.run(move |c| {
            c.exec(
                "INSERT INTO read_marks (thread, uid, id) VALUES (?1, ?2, ?3)
                 ON CONFLICT(thread, uid) DO UPDATE SET id = MAX(id, excluded.id)",
                params![thread, uid, id],
            )?;
            Ok(())
        })
        .await
    }

    async fn lease(&self, name: &str, owner: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.run(move |c| {
            let changed = c.exec(
                "INSERT INTO leases (name, owner, until) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, until = excluded.until
                 WHERE leases.owner = excluded.owner OR leases.until < ?4",
                params![name, owner, now_ms.saturating_add(ttl_ms), now_ms],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn read_mark(&self, thread: &str, uid: &str) -> Result<Option<i64>> {
        let (thread, uid) = (thread.to_string(), uid.to_string());
        self.run(move |c| {
            let mut st = c.prepare_cached("SELECT id FROM read_marks WHERE thread = ?1 AND uid = ?2")?;
            let mut rows = st.query(params![thread, uid])?;
            Ok(match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            })
        })
        .await
    }

    async fn unread(&self, thread: &str, uid: &str) -> Result<u64> {
        let (thread, uid) = (thread.to_string(), uid.to_string());
        self.run(move |c| Ok(unread(c, &thread, &uid)?)).await
    }

    async fn open_conversation(&self, bid: &str, visitor_id: &str, visitor_name: &str) -> Result<(Conversation, bool)> {
        let (bid, visitor_id, visitor_name) = (bid.to_string(), visitor_id.to_string(), visitor_name.to_string());
        self.run(move |c| {
            let tx = c.savepoint()?;
            if let Some(conv) = tx.row(OPEN_CONVERSATION_SQL, params![bid, visitor_id], row_conversation).optional()? {
                return Ok((conv, false));
            }
            let conv = Conversation { id: crate::keys::new_id(), bid, visitor_id, visitor_name, assigned: None, open: true, created: now_ms() };
            tx.exec(
                "INSERT INTO conversations (id, bid, visitor_id, visitor_name, assigned, open, created) VALUES (?1, ?2, ?3, ?4, NULL, 1, ?5)",
                params![conv.id, conv.bid, conv.visitor_id, conv.visitor_name, conv.created],
            )?;
            tx.commit()?;
            Ok((conv, true))
        })
        .await
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>> {
        let id = id.to_string();
        self.run(move |c| Ok(c.row(CONVERSATION_SQL, [id], row_conversation).optional()?)).await
    }

    async fn conversations(&self, bid: &str, after: Option<&str>, limit: usize) -> Result<Vec<Conversation>> {
        let (bid, after) = (bid.to_string(), after.map(str::to_string));
        self.run(move |c| Ok(conversations(c, &bid, after.as_deref(), limit)?)).await
    }

    /// The page and every conversation's count and newest message in one job: one transaction,
    /// where asked in turn it was a job (and a transaction) per question.
    async fn conversation_summaries(&self, bid: &str, reader: &str, after: Option<&str>, limit: usize) -> Result<Vec<ConversationSummary>> {
        let (bid, reader, after) = (bid.to_string(), reader.to_string(), after.map(str::to_string));
        self.run(move |c| {
            let page = conversations(c, &bid, after.as_deref(), limit)?;
            let mut out = Vec::with_capacity(page.len());
            for conversation in page {
                let thread = crate::keys::conversation_thread(&conversation.id);
                let unread = unread(c, &thread, &reader)?;
                let last = history(c, &thread, None, None, 1)?.pop();
                out.push(ConversationSummary { conversation, unread, last });
            }
            Ok(out)
        })
        .await
    }

    async fn assign(&self, id: &str, agent: &str, expected: Option<&str>) -> Result<bool> {
        let (id, agent, expected) = (id.to_string(), agent.to_string(), expected.map(str::to_string));
        self.run(move |c| {
            // `IS` compares NULL as a value, so "unassigned" is matched too; the single UPDATE is
            // the compare-and-set.
            let n = c.exec("UPDATE conversations SET assigned = ?1 WHERE id = ?2 AND open = 1 AND assigned IS ?3", params![agent, id, expected])?;
            Ok(n == 1)
        })
        .await
    }

    async fn close_conversation(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.run(move |c| Ok(c.exec("UPDATE conversations SET open = 0 WHERE id = ?1 AND open = 1", [id])? == 1)).await
    }

    async fn load(&self, bid: &str) -> Result<HashMap<String, u64>> {
        let bid = bid.to_string();
        self.run(move |c| {
            let mut st = c.prepare_cached(
                "SELECT assigned, COUNT(*) FROM conversations WHERE bid = ?1 AND open = 1 AND assigned IS NOT NULL GROUP BY assigned",
            )?;
            let rows = st.query_map([bid], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<rusqlite::Result<HashMap<_, _>>>()?)
        })
        .await
    }

    async fn add_agent(&self, bid: &str, agent: &str, name: &str) -> Result<()> {
        let (bid, agent, name) = (bid.to_string(), agent.to_string(), name.to_string());
        self.run(move |c| {
            // An agent logging in again under the same name changes nothing, so nothing is
            // written: every reconnect of every agent comes here.
            c.exec(
                "INSERT INTO agents (bid, agent, name) VALUES (?1, ?2, ?3)
                 ON CONFLICT(bid, agent) DO UPDATE SET name = excluded.name WHERE name IS NOT excluded.name",
                params![bid, agent, name],
            )?;
            Ok(())
        })
        .await
    }

    async fn agent_name(&self, bid: &str, agent: &str) -> Result<Option<String>> {
        let (bid, agent) = (bid.to_string(), agent.to_string());
        self.run(move |c| Ok(c.row("SELECT name FROM agents WHERE bid = ?1 AND agent = ?2", params![bid, agent], |r| r.get(0)).optional()?)).await
    }

    async fn next_turn(&self, bid: &str) -> Result<u64> {
        let bid = bid.to_string();
        self.run(move |c| {
            let n: i64 =
                c.row("INSERT INTO turns (bid, n) VALUES (?1, 1) ON CONFLICT(bid) DO UPDATE SET n = n + 1 RETURNING n", [bid], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn delete_messages_before(&self, before_ms: i64, limit: usize) -> Result<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run_queued(move |c| {
            let n = c.exec("DELETE FROM messages WHERE rowid IN (SELECT rowid FROM messages WHERE ts < ?1 LIMIT ?2)", params![before_ms, limit])?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;
    use std::sync::Arc;
    use std::time::Instant;

    /// Every agent's login lists its bot's open conversations; a perf profile of a login storm
    /// showed that statement compiled again on every call, 40 % of the store thread's time.
    #[tokio::test]
    async fn a_cached_statement_is_not_compiled_again_for_new_values() {
        let path = std::env::temp_dir().join(format!("switchboard-reprepare-{}.db", std::process::id()));
        let store = SqliteStore::open(&path).expect("open");
        for i in 0..20 {
            store.conversations(&format!("b{i}"), None, 50).await.expect("list");
        }
        let recompiled = store.run(|c| Ok(c.prepare_cached(CONVERSATIONS_SQL)?.get_status(StatementStatus::RePrepare))).await.expect("status");
        remove_db(&path);
        assert_eq!(recompiled, 0, "compiled again {recompiled} times in 20 calls");
    }

    /// The reads every agent login makes walk an index in the order they answer in: none
    /// sorts what it found into a temporary B-tree (a bot's every open conversation, sorted
    /// at each login to return the first page, before `conversations_page`). The plan is
    /// SQLite's own account of how it will run the statement.
    #[tokio::test]
    async fn a_login_s_reads_sort_nothing() {
        let path = std::env::temp_dir().join(format!("switchboard-plans-{}.db", std::process::id()));
        let store = SqliteStore::open(&path).expect("open");
        let plans = store
            .run(|c| {
                let mut plans = Vec::new();
                for sql in [CONVERSATIONS_SQL, NEWEST_SQL, AFTER_SQL, UNREAD_SQL] {
                    let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let unbound = rusqlite::params_from_iter(vec![rusqlite::types::Null; st.parameter_count()]);
                    let steps = st.query_map(unbound, |r| r.get::<_, String>(3))?.collect::<rusqlite::Result<Vec<_>>>()?;
                    plans.push((sql, steps.join("; ")));
                }
                Ok(plans)
            })
            .await
            .expect("plans");
        remove_db(&path);
        for (sql, plan) in plans {
            assert!(!plan.contains("TEMP B-TREE"), "{sql}\nsorts: {plan}");
            assert!(!plan.contains("SCAN"), "{sql}\nscans a whole table: {plan}");
        }
    }

    /// A login under an unchanged name updates no row (SQLite then writes no page for it); a
    /// new name does.
    #[tokio::test]
    async fn an_agent_logging_in_again_as_it_was_writes_nothing() {
        let path = std::env::temp_dir().join(format!("switchboard-relogin-{}.db", std::process::id()));
        let store = SqliteStore::open(&path).expect("open");
        let changes = || store.run(|c| Ok(c.total_changes()));
        store.add_agent("b", "alice", "Alice").await.expect("first login");
        let before = changes().await.expect("changes");
        store.add_agent("b", "alice", "Alice").await.expect("again");
        let unchanged = changes().await.expect("changes") - before;
        store.add_agent("b", "alice", "Alice Liddell").await.expect("renamed");
        let renamed = changes().await.expect("changes") - before;
        let name = store.agent_name("b", "alice").await.expect("name");
        remove_db(&path);
        assert_eq!((unchanged, renamed), (0, 1), "rows changed by the same name, then by a new one");
        assert_eq!(name.as_deref(), Some("Alice Liddell"));
    }

    fn message(thread: &str, n: usize) -> NewMessage {
        NewMessage {
            thread: thread.into(),
            sender: "a:b1:u1".into(),
            from_uid: "u1".into(),
            from_name: "n".into(),
            cid: Some(format!("c{n}")),
            content: "x".repeat(100),
            to: serde_json::Map::new(),
        }
    }

    fn remove_db(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    /// The id a thread's next message gets, as the writer keeps it.
    async fn kept_id(store: &SqliteStore, thread: &'static str) -> Option<i64> {
        store.run_writer(true, move |w| Ok(w.last_ids.get(thread).copied())).await.expect("kept id")
    }

    /// Two workers of a box write one thread in turn: each must see the other's messages
    /// before numbering its own (the kept last id is forgotten when the other commits), and
    /// the thread's ids run 1, 2, 3... with no gap and no refusal.
    #[tokio::test]
    async fn a_thread_written_by_two_processes_in_turn_keeps_consecutive_ids() {
        let path = std::env::temp_dir().join(format!("switchboard-ids-{}.db", std::process::id()));
        let (a, b) = (SqliteStore::open(&path).expect("open"), SqliteStore::open(&path).expect("open"));
        let mut ids = Vec::new();
        for n in 0..20 {
            let store = if n % 2 == 0 { &a } else { &b };
            match store.insert_message(message("t", n)).await.expect("insert") {
                Inserted::New(m) => ids.push(m.id),
                Inserted::Duplicate(m) => panic!("message {n} taken for a duplicate of {}", m.id),
            }
            let other = if n % 2 == 0 { &b } else { &a };
            assert_eq!(kept_id(other, "t").await, None, "after message {n}, the other process still numbers from its own last id");
        }
        assert_eq!(kept_id(&b, "t").await, Some(20), "the writer keeps its own last id");
        drop((a, b));
        remove_db(&path);
        assert_eq!(ids, (1..=20).collect::<Vec<i64>>());
    }

    /// A row the kept id does not know of (written on the same connection some other way):
    /// the primary key refuses the kept id, and the next one is looked up instead.
    #[tokio::test]
    async fn an_id_taken_behind_the_kept_one_is_looked_up_again() {
        let path = std::env::temp_dir().join(format!("switchboard-stale-{}.db", std::process::id()));
        let store = SqliteStore::open(&path).expect("open");
        store.insert_message(message("t", 0)).await.expect("insert");
        store
            .run(|c| {
                c.execute("INSERT INTO messages (thread, id, from_uid, from_name, content, dest, ts) VALUES ('t', 2, 'u', 'n', 'x', '{}', 0)", [])?;
                Ok(())
            })
            .await
            .expect("a row behind the store's back");
        let third = store.insert_message(message("t", 1)).await.expect("insert");
        let again = store.insert_message(message("t", 1)).await.expect("the same cid again");
        drop(store);
        remove_db(&path);
        assert!(matches!(third, Inserted::New(ref m) if m.id == 3), "got {third:?}");
        assert!(matches!(again, Inserted::Duplicate(ref m) if m.id == 3), "got {again:?}");
    }

    /// An export reading the live file (`switchboard copy`) holds an old snapshot, which a
    /// RESTART checkpoint waits for, holding writers back; it must give up quickly and let
    /// the chat write, not stall it for the busy handler's 10 s.
    #[tokio::test]
    async fn a_long_reader_does_not_stall_writes() {
        let path = std::env::temp_dir().join(format!("switchboard-reader-{}.db", std::process::id()));
        let store = SqliteStore::open(&path).expect("open");
        store.insert_message(message("t", 0)).await.expect("insert");
        let reader = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        let _: i64 = reader.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).expect("read");
        store.insert_message(message("t", 1)).await.expect("insert");
        // Meanwhile a checkpoint falls due and runs while the reader holds its snapshot.
        tokio::time::sleep(crate::store::wal::EVERY + Duration::from_millis(100)).await;
        let started = Instant::now();
        store.insert_message(message("t", 2)).await.expect("insert");
        store.insert_message(message("t", 3)).await.expect("insert");
        let waited = started.elapsed();
        drop(reader);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        assert!(waited < Duration::from_secs(3), "a write waited {waited:?} behind a checkpoint blocked by a reader");
    }

    /// An idle store runs a caller's write on the caller's thread; a write lock held by another
    /// process must then send the write to the store thread to wait, not hold the caller's
    /// thread (the runtime's) for the busy handler's 10 s. One runtime thread here: while the
    /// write waits, the test's own timer still fires.
    #[tokio::test(flavor = "current_thread")]
    async fn a_lock_held_elsewhere_is_waited_for_on_the_store_thread_not_the_callers() {
        let path = std::env::temp_dir().join(format!("switchboard-inline-{}.db", std::process::id()));
        let store = Arc::new(SqliteStore::open(&path).expect("open"));
        let other = Connection::open(&path).expect("other");
        other.execute_batch("BEGIN IMMEDIATE").expect("the other's write lock");
        let started = Instant::now();
        let insert = tokio::spawn({
            let store = store.clone();
            async move { store.insert_message(message("t", 0)).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let slept = started.elapsed();
        let waiting = !insert.is_finished();
        other.execute_batch("COMMIT").expect("commit");
        let inserted = insert.await.expect("task");
        remove_db(&path);
        assert!(slept < Duration::from_secs(2), "the caller's thread was held {slept:?} by another's lock");
        assert!(waiting, "the write went through although the lock was held");
        assert!(matches!(inserted, Ok(Inserted::New(_))), "{inserted:?}");
    }

    /// Two workers of a box write one file and both checkpoint it. A checkpoint that waits for
    /// nobody (PASSIVE) never found the other writer idle, so the WAL was never started over
    /// and grew by every page ever written (12 MB a second under load); the checkpoint must
    /// bring it back to the start while both keep writing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_while_two_processes_write() {
        let path = std::env::temp_dir().join(format!("switchboard-wal-{}.db", std::process::id()));
        let (a, b) = (Arc::new(SqliteStore::open(&path).expect("open")), Arc::new(SqliteStore::open(&path).expect("open")));
        let commits = 8 * crate::store::wal::COMMITS as usize;
        let write = |store: Arc<SqliteStore>, thread: &'static str| {
            tokio::spawn(async move {
                for n in 0..commits {
                    store.insert_message(message(thread, n)).await.expect("insert");
                }
            })
        };
        let (wa, wb) = (write(a.clone(), "t:a"), write(b.clone(), "t:b"));
        wa.await.expect("writer a");
        wb.await.expect("writer b");
        // The pages the WAL holds since it last started over: the second column of a
        // checkpoint's answer, once no other checkpoint is running (its first column is then 0).
        // (Not the file's size: that is the most the WAL ever held, and a box loaded enough to
        // keep both checkpoint threads off the cores for a while grows it past the bound below
        // although every checkpoint after starts it over; CI failed that way once.)
        let mut since_start = None;
        let reader = Connection::open(&path).expect("a connection of the test's own");
        for _ in 0..200 {
            let (busy, log): (i64, i64) = reader.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?))).expect("checkpoint");
            if busy == 0 {
                since_start = Some(log);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop((reader, a, b));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let frames = since_start.expect("a checkpoint ran within 10 s");
        // Every commit appends at least one page (about four here): never started over, the
        // WAL would hold at least 2 × `commits` of them. Started over, it holds what both wrote
        // since the last checkpoint (about 2 × crate::store::wal::COMMITS commits' pages).
        assert!(frames < 2 * commits as i64, "the WAL holds {frames} pages after {} commits: it was not started over", 2 * commits);
    }
}
