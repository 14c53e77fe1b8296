//! `switchboard store copy --from sqlite:… --to postgres://… | mysql://…`: moving a box's
//! history into the database a multi-server deployment shares.
//!
//! Every table is read from the SQLite file and written to the target in batches, each batch
//! one transaction of inserts that skip rows already there: a copy that stopped half-way is
//! run again and finishes, and a second full run changes nothing. The target's schema is made
//! (or migrated) first, by the target store's own `connect`. Each table is then verified: the
//! same number of rows and the same checksum (order-independent: the sum of a CRC-32 of every
//! row's canonical text) on both sides.

use super::{mysql::MySqlStore, postgres::PgStore, PoolConfig, Result, StoreError};
use rusqlite::Connection;
use std::path::Path;

/// One cell of a copied row.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    I(i64),
    S(String),
    N,
    B(bool),
    /// Bytes (MySQL's dedup hash, which only MySQL has).
    X(Vec<u8>),
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Cell::I(i) => i.to_string(),
            Cell::S(s) => s.clone(),
            Cell::N => "\u{0}".into(),
            Cell::B(b) => (*b as i64).to_string(),
            Cell::X(x) => hex::encode(x),
        }
    }
}

/// A table: its columns on the target (SQLite's names differ for two), how to read it from
/// SQLite in a stable order, and which cells are booleans.
struct Table {
    name: &'static str,
    columns: &'static [&'static str],
    select: &'static str,
    booleans: &'static [usize],
}

const TABLES: &[Table] = &[
    Table {
        name: "conversations",
        columns: &["id", "bid", "visitor_id", "visitor_name", "assigned", "open", "created"],
        select: "SELECT id, bid, visitor_id, visitor_name, assigned, open, created FROM conversations ORDER BY created, rowid",
        booleans: &[5],
    },
    Table {
        name: "messages",
        columns: &["thread", "id", "sender", "from_uid", "from_name", "cid", "content", "dest", "ts"],
        select: "SELECT thread, id, sender, from_uid, from_name, cid, content, dest, ts FROM messages ORDER BY thread, id",
        booleans: &[],
    },
    Table {
        name: "read_marks",
        columns: &["thread", "reader", "id"],
        select: "SELECT thread, uid, id FROM read_marks ORDER BY thread, uid",
        booleans: &[],
    },
    Table { name: "agents", columns: &["bid", "agent", "name"], select: "SELECT bid, agent, name FROM agents ORDER BY bid, agent", booleans: &[] },
    Table { name: "turns", columns: &["bid", "n"], select: "SELECT bid, n FROM turns ORDER BY bid", booleans: &[] },
    Table {
        name: "line_inbox",
        columns: &["seq", "event_id", "bid", "event", "done"],
        select: "SELECT seq, event_id, bid, event, done FROM line_inbox ORDER BY seq",
        booleans: &[4],
    },
    Table {
        name: "line_users",
        columns: &["bid", "line_user", "name", "name_at", "followed", "reply_token", "token_at"],
        select: "SELECT bid, user, name, name_at, followed, reply_token, token_at FROM line_users ORDER BY bid, user",
        booleans: &[4],
    },
    Table {
        name: "line_outbox",
        columns: &["id", "bid", "line_user", "thread", "msg_id", "state", "due", "owner", "lease", "error", "item"],
        select: "SELECT id, bid, user, thread, msg_id, state, due, owner, lease, error, item FROM line_outbox ORDER BY id",
        booleans: &[],
    },
];

/// Rows per transaction on the target.
const BATCH: usize = 500;

/// What one table's copy did.
#[derive(Debug)]
pub struct Copied {
    pub table: &'static str,
    pub rows: usize,
    pub checksum: u64,
}

enum Target {
    Pg(PgStore),
    My(MySqlStore),
}

fn read_sqlite(path: &Path, t: &Table) -> Result<Vec<Vec<Cell>>> {
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut st = c.prepare(t.select)?;
    let rows = st.query_map([], |r| {
        let mut row = Vec::with_capacity(t.columns.len());
        for i in 0..t.columns.len() {
            let cell = match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => Cell::N,
                rusqlite::types::ValueRef::Integer(v) if t.booleans.contains(&i) => Cell::B(v != 0),
                rusqlite::types::ValueRef::Integer(v) => Cell::I(v),
                rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => Cell::S(String::from_utf8_lossy(b).into_owned()),
                rusqlite::types::ValueRef::Real(f) => Cell::I(f as i64),
            };
            row.push(cell);
        }
        Ok(row)
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Order-independent: the sum of every row's CRC-32 (and the count, kept beside it).
fn checksum(rows: &[Vec<Cell>]) -> u64 {
    rows.iter()
        .map(|r| {
            let text: Vec<String> = r.iter().map(Cell::text).collect();
            u64::from(crc32fast::hash(text.join("\u{1f}").as_bytes()))
        })
        .fold(0u64, u64::wrapping_add)
}

/// MySQL's extra columns: the dedup hash of a message, the open visitor of a conversation.
fn mysql_extra(table: &str, row: &[Cell]) -> Vec<(&'static str, Cell)> {
    let s = |i: usize| match row.get(i) {
        Some(Cell::S(s)) => s.clone(),
        _ => String::new(),
    };
    match table {
        "messages" => {
            let dedup = match row.get(5) {
                Some(Cell::S(cid)) => Cell::X(super::mysql::dedup_key(&s(0), &s(2), cid)),
                _ => Cell::N,
            };
            vec![("dedup", dedup)]
        }
        "conversations" => vec![("open_visitor", if row.get(5) == Some(&Cell::B(true)) { Cell::S(s(2)) } else { Cell::N })],
        _ => Vec::new(),
    }
}

async fn write(target: &Target, t: &Table, rows: &[Vec<Cell>]) -> Result<()> {
    for batch in rows.chunks(BATCH) {
        match target {
            Target::Pg(pg) => {
                let marks: Vec<String> = (1..=t.columns.len()).map(|i| format!("${i}")).collect();
                let sql = format!("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING", t.name, t.columns.join(", "), marks.join(", "));
                let mut tx = pg.pool.begin().await?;
                for row in batch {
                    let mut q = sqlx::query(&sql);
                    for cell in row {
                        q = match cell {
                            Cell::I(i) => q.bind(*i),
                            Cell::S(s) => q.bind(s.clone()),
                            Cell::N => q.bind(None::<String>),
                            Cell::B(b) => q.bind(*b),
                            Cell::X(x) => q.bind(x.clone()),
                        };
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            Target::My(my) => {
                let mut tx = my.pool.begin().await?;
                for row in batch {
                    let extra = mysql_extra(t.name, row);
                    let mut columns: Vec<&str> = t.columns.to_vec();
                    columns.extend(extra.iter().map(|(c, _)| *c));
                    let sql = format!("INSERT IGNORE INTO {} ({}) VALUES ({})", t.name, columns.join(", "), vec!["?"; columns.len()].join(", "));
                    let mut q = sqlx::query(&sql);
                    for cell in row.iter().chain(extra.iter().map(|(_, c)| c)) {
                        q = match cell {
                            Cell::I(i) => q.bind(*i),
                            Cell::S(s) => q.bind(s.clone()),
                            Cell::X(x) => q.bind(x.clone()),
                            Cell::N => q.bind(None::<String>),
                            Cell::B(b) => q.bind(*b),
                        };
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
        }
    }
    Ok(())
}

/// The table as the target now holds it, in the canonical cells.
async fn read_target(target: &Target, t: &Table) -> Result<Vec<Vec<Cell>>> {
    use sqlx::{Column, Row, TypeInfo, ValueRef};
    let sql = format!("SELECT {} FROM {}", t.columns.join(", "), t.name);
    let mut out = Vec::new();
    macro_rules! collect {
        ($rows:expr) => {
            for r in $rows {
                let mut row = Vec::with_capacity(t.columns.len());
                for (i, col) in r.columns().iter().enumerate() {
                    let raw = r.try_get_raw(i)?;
                    let cell = if raw.is_null() {
                        Cell::N
                    } else if t.booleans.contains(&i) {
                        Cell::B(r.try_get_unchecked::<bool, _>(i)?)
                    } else if matches!(col.type_info().name(), "INT8" | "BIGINT" | "INT4" | "INT") {
                        Cell::I(r.try_get_unchecked::<i64, _>(i)?)
                    } else {
                        Cell::S(r.try_get_unchecked::<String, _>(i)?)
                    };
                    row.push(cell);
                }
                out.push(row);
            }
        };
    }
    match target {
        Target::Pg(pg) => collect!(sqlx::query(&sql).fetch_all(&pg.pool).await?),
        Target::My(my) => collect!(sqlx::query(&sql).fetch_all(&my.pool).await?),
    }
    Ok(out)
}

/// Copies `from` (an SQLite store) into `to` (PostgreSQL or MySQL), then verifies each table.
/// `progress` hears one line per table.
pub async fn copy(from: &str, to: &str, pool: PoolConfig, mut progress: impl FnMut(String)) -> Result<Vec<Copied>> {
    let path =
        from.strip_prefix("sqlite:").ok_or_else(|| StoreError::Corrupt(format!("copy reads an SQLite store (sqlite:<path>), not {from:?}")))?;
    let path = Path::new(path);
    if !path.exists() {
        return Err(StoreError::Corrupt(format!("{} does not exist", path.display())));
    }
    // Opening it as a store brings an old file up to the current schema first.
    drop(super::sqlite::SqliteStore::open(path)?);
    let target = match to.split_once("://").map(|(s, _)| s) {
        Some("postgres" | "postgresql") => Target::Pg(PgStore::connect(to, pool).await?),
        Some("mysql" | "mariadb") => Target::My(MySqlStore::connect(&to.replacen("mariadb://", "mysql://", 1), pool).await?),
        _ => return Err(StoreError::Corrupt("copy writes to a postgres:// or mysql:// store".into())),
    };
    let mut report = Vec::new();
    for t in TABLES {
        let rows = read_sqlite(path, t)?;
        write(&target, t, &rows).await?;
        let there = read_target(&target, t).await?;
        let (ours, theirs) = (checksum(&rows), checksum(&there));
        if there.len() != rows.len() || ours != theirs {
            return Err(StoreError::Corrupt(format!(
                "{}: {} rows (checksum {ours:016x}) in the SQLite file, {} (checksum {theirs:016x}) in the target after the copy: \
                 the target held other rows in this table before; copy into an empty database",
                t.name,
                rows.len(),
                there.len()
            )));
        }
        progress(format!("{:<14} {:>8} rows  checksum {ours:016x}  verified", t.name, rows.len()));
        report.push(Copied { table: t.name, rows: rows.len(), checksum: ours });
    }
    // What the copied rows imply: each thread's next message id, and the sequences behind the
    // copied serial ids (PostgreSQL does not move them for explicit values).
    match &target {
        Target::Pg(pg) => {
            sqlx::query("INSERT INTO threads (thread, last) SELECT thread, MAX(id) FROM messages GROUP BY thread ON CONFLICT (thread) DO UPDATE SET last = GREATEST(threads.last, excluded.last)")
                .execute(&pg.pool)
                .await?;
            for (table, col) in [("line_inbox", "seq"), ("line_outbox", "id")] {
                sqlx::query(&format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{col}'), GREATEST((SELECT COALESCE(MAX({col}), 0) FROM {table}), 1))"
                ))
                .execute(&pg.pool)
                .await?;
            }
        }
        Target::My(my) => {
            sqlx::query("INSERT INTO threads (thread, last) SELECT thread, MAX(id) FROM messages GROUP BY thread ON DUPLICATE KEY UPDATE last = GREATEST(last, VALUES(last))")
                .execute(&my.pool)
                .await?;
        }
    }
    Ok(report)
}
