//! `[events] store_read`: the reads that may lag a little — history, conversation lists,
//! unread counts — served by a PostgreSQL or MySQL/MariaDB replica, so the primary keeps its
//! capacity for writes, assignment and everything that must see its own write.
//!
//! Read-your-writes: each client connection keeps a [`Mark`], the primary's replication
//! position taken after its last write (or at its first read on this worker, which covers
//! whatever it wrote before it came here). A read goes to the replica only when the replica
//! has applied everything up to the mark; otherwise to the primary. So a client never misses
//! its own message, while other clients' newest messages may show up on a lagging replica a
//! moment later (they are delivered live anyway). Positions:
//! - PostgreSQL: the WAL location, `pg_current_wal_lsn()` on the primary against
//!   `pg_last_wal_replay_lsn()` on the replica;
//! - MariaDB: the GTID position, per replication domain (`@@gtid_binlog_pos` against the
//!   replica's `@@gtid_current_pos`); the primary needs its binary log on, as replication does;
//! - MySQL: the executed GTID set (`@@GLOBAL.gtid_executed`, `GTID_SUBSET` on the replica),
//!   which needs `gtid_mode = ON`.
//!
//! The replica's last known position is kept, and asked again only when a mark is beyond it,
//! so most reads cost no extra query. A replica that fails is left alone for a few seconds
//! (reads go to the primary meanwhile), so an outage costs latency, never answers.

use super::{mysql::MySqlStore, postgres::PgStore, PoolConfig, Result, Store, StoreError};
use sqlx::{MySqlPool, PgPool};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long reads stay on the primary after the replica failed.
const REST: Duration = Duration::from_secs(5);

/// A replication position on the primary, which a replica has reached or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// PostgreSQL: a WAL location.
    Lsn(u64),
    /// MariaDB: the last sequence number applied in each replication domain.
    Domains(BTreeMap<u32, u64>),
    /// MySQL: an executed GTID set, as the server writes it.
    GtidSet(String),
}

/// PostgreSQL's text form of a WAL location, `16/B374D848`.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// MariaDB's GTID position, `domain-server-seq` per domain, comma-separated (empty: none).
pub fn parse_domains(s: &str) -> Option<BTreeMap<u32, u64>> {
    let mut out = BTreeMap::new();
    for gtid in s.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        let mut parts = gtid.split('-');
        let (domain, _server, seq) = (parts.next()?.parse().ok()?, parts.next()?, parts.next()?.parse().ok()?);
        if parts.next().is_some() {
            return None;
        }
        out.insert(domain, seq);
    }
    Some(out)
}

/// Whether position `have` includes everything in `want` (MariaDB: per domain).
fn domains_cover(have: &BTreeMap<u32, u64>, want: &BTreeMap<u32, u64>) -> bool {
    want.iter().all(|(d, seq)| have.get(d).is_some_and(|h| h >= seq))
}

/// One client connection's read-your-writes mark, kept by the worker between its events.
#[derive(Debug, Default)]
pub struct Mark {
    /// The primary's position this client's reads must see.
    at: Option<Position>,
    /// The client did something that may have written since `at` was taken.
    wrote: bool,
}

impl Mark {
    /// Called before any request that may write: the next read takes a fresh position.
    pub fn wrote(&mut self) {
        self.wrote = true;
    }
}

/// How positions are read on each side.
enum Follow {
    Postgres { primary: PgPool, replica: PgPool, seen: AtomicU64 },
    MariaDb { primary: MySqlPool, replica: MySqlPool, seen: Mutex<BTreeMap<u32, u64>> },
    MySql { primary: MySqlPool, replica: MySqlPool },
}

impl Follow {
    /// The primary's position now: after a write has committed, it includes that write.
    async fn primary(&self) -> Result<Position> {
        match self {
            Follow::Postgres { primary, .. } => {
                let s: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text").fetch_one(primary).await?;
                parse_lsn(&s).map(Position::Lsn).ok_or_else(|| StoreError::Sql(format!("unexpected WAL location {s:?}")))
            }
            Follow::MariaDb { primary, .. } => {
                let s: String = sqlx::query_scalar("SELECT CAST(@@gtid_binlog_pos AS CHAR)").fetch_one(primary).await?;
                parse_domains(&s).map(Position::Domains).ok_or_else(|| StoreError::Sql(format!("unexpected GTID position {s:?}")))
            }
            Follow::MySql { primary, .. } => {
                let s: String = sqlx::query_scalar("SELECT CAST(@@GLOBAL.gtid_executed AS CHAR)").fetch_one(primary).await?;
                Ok(Position::GtidSet(s))
            }
        }
    }

    /// Whether the replica has applied everything up to `at`.
    async fn replica_has(&self, at: &Position) -> Result<bool> {
        match (self, at) {
            (Follow::Postgres { replica, seen, .. }, Position::Lsn(want)) => {
                if seen.load(Ordering::Relaxed) >= *want {
                    return Ok(true);
                }
                // A replica promoted to primary has no replay position: its own counts.
                let s: String =
                    sqlx::query_scalar("SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text")
                        .fetch_one(replica)
                        .await?;
                let have = parse_lsn(&s).ok_or_else(|| StoreError::Sql(format!("unexpected WAL location {s:?}")))?;
                seen.fetch_max(have, Ordering::Relaxed);
                Ok(have >= *want)
            }
            (Follow::MariaDb { replica, seen, .. }, Position::Domains(want)) => {
                if seen.lock().is_ok_and(|s| domains_cover(&s, want)) {
                    return Ok(true);
                }
                let s: String = sqlx::query_scalar("SELECT CAST(@@gtid_current_pos AS CHAR)").fetch_one(replica).await?;
                let have = parse_domains(&s).ok_or_else(|| StoreError::Sql(format!("unexpected GTID position {s:?}")))?;
                let covered = domains_cover(&have, want);
                if let Ok(mut s) = seen.lock() {
                    for (d, seq) in have {
                        let e = s.entry(d).or_insert(seq);
                        *e = (*e).max(seq);
                    }
                }
                Ok(covered)
            }
            (Follow::MySql { replica, .. }, Position::GtidSet(want)) => {
                let has: i64 = sqlx::query_scalar("SELECT GTID_SUBSET(?, @@GLOBAL.gtid_executed)").bind(want).fetch_one(replica).await?;
                Ok(has == 1)
            }
            _ => Err(StoreError::Corrupt("a replication position of another kind of database".into())),
        }
    }
}

/// The replica and what decides whether a read may use it.
pub struct Reads {
    store: Arc<dyn Store>,
    follow: Follow,
    /// After a replica failure, reads stay on the primary until then.
    resting_until: Mutex<Option<Instant>>,
    shown: String,
}

impl Reads {
    /// Opens `[events] store_read` when set: the same kind of database as `store`, reached
    /// without migrating (the primary's schema arrives by replication). `wrap` is applied to
    /// the replica's store (the caller times its calls like the primary's).
    pub async fn open(config: &crate::Config, wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>) -> std::result::Result<Option<Reads>, String> {
        if config.store_read.is_empty() {
            return Ok(None);
        }
        let shown = super::redacted(&config.store_read);
        let scheme = |url: &str| url.split_once(':').map(|(s, _)| s.to_string()).unwrap_or_default();
        let fail = |e: StoreError| format!("store_read {shown}: {e}");
        // A dead replica should cost a read little: its reads are retried on the primary.
        let pool = PoolConfig { acquire_timeout: Duration::from_secs_f64(config.store_timeout.clamp(0.1, 1.0)), ..PoolConfig::from_config(config) };
        let positions = PoolConfig { max_connections: 2, ..PoolConfig::from_config(config) };
        let (store, follow): (Arc<dyn Store>, Follow) = match (scheme(&config.store).as_str(), scheme(&config.store_read).as_str()) {
            ("postgres" | "postgresql", "postgres" | "postgresql") => {
                let replica = PgStore::reach(&config.store_read, pool).await.map_err(fail)?;
                let primary = PgStore::reach(&config.store, positions).await.map_err(|e| format!("store {}: {e}", super::redacted(&config.store)))?;
                let follow = Follow::Postgres { primary: primary.pool, replica: replica.pool.clone(), seen: AtomicU64::new(0) };
                (Arc::new(replica), follow)
            }
            ("mysql" | "mariadb", "mysql" | "mariadb") => {
                let replica = MySqlStore::reach(&super::mysql_url(&config.store_read), pool).await.map_err(fail)?;
                let primary = MySqlStore::reach(&super::mysql_url(&config.store), positions)
                    .await
                    .map_err(|e| format!("store {}: {e}", super::redacted(&config.store)))?;
                let version: String = sqlx::query_scalar("SELECT VERSION()").fetch_one(&primary.pool).await.map_err(|e| fail(e.into()))?;
                let follow = if version.contains("MariaDB") {
                    Follow::MariaDb { primary: primary.pool, replica: replica.pool.clone(), seen: Mutex::new(BTreeMap::new()) }
                } else {
                    Follow::MySql { primary: primary.pool, replica: replica.pool.clone() }
                };
                (Arc::new(replica), follow)
            }
            (primary, _) => {
                return Err(format!(
                    "store_read {shown}: a replica must be the same kind of database as the store ({primary}:), PostgreSQL or MySQL/MariaDB"
                ))
            }
        };
        // Refused at start rather than at every read: a primary that cannot say where it is
        // (MariaDB without a binary log, MySQL without GTIDs) gives no read-your-writes.
        match follow.primary().await.map_err(fail)? {
            Position::Domains(d) if d.is_empty() => {
                return Err(format!("store_read {shown}: the primary has no GTID position: turn on its binary log (log_bin), as replication needs"))
            }
            Position::GtidSet(s) if s.trim().is_empty() => {
                return Err(format!("store_read {shown}: the primary has no executed GTIDs: set gtid_mode = ON (and enforce_gtid_consistency)"))
            }
            _ => {}
        }
        info!(replica = %shown, "reads that may lag go to the replica when it has each client's own writes");
        Ok(Some(Reads { store: wrap(store), follow, resting_until: Mutex::new(None), shown }))
    }

    /// The replica, when the client with `mark` may read from it now; `None`: the primary.
    pub async fn pick(&self, mark: &mut Mark) -> Option<Arc<dyn Store>> {
        if self.resting_until.lock().is_ok_and(|r| r.is_some_and(|until| Instant::now() < until)) {
            return None;
        }
        if mark.at.is_none() || mark.wrote {
            match self.follow.primary().await {
                Ok(p) => *mark = Mark { at: Some(p), wrote: false },
                // The primary is what will answer; its failure is that read's to report.
                Err(_) => return None,
            }
        }
        let at = mark.at.as_ref()?;
        match self.follow.replica_has(at).await {
            Ok(true) => Some(self.store.clone()),
            Ok(false) => None,
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    /// A read on the replica failed: reads go to the primary for a while.
    pub fn failed(&self, e: &StoreError) {
        if let Ok(mut r) = self.resting_until.lock() {
            if r.is_none_or(|until| Instant::now() >= until) {
                warn!(replica = %self.shown, "the replica failed, reading from the primary for {REST:?}: {e}");
            }
            *r = Some(Instant::now() + REST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_and_compare() {
        assert_eq!(parse_lsn("0/3000000"), Some(0x3000000));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("nonsense"), None);
        let want = parse_domains("0-1-5,2-9-7").expect("parses");
        assert!(domains_cover(&parse_domains("0-1-5, 2-3-8").expect("parses"), &want));
        assert!(!domains_cover(&parse_domains("0-1-4,2-9-7").expect("parses"), &want), "domain 0 behind");
        assert!(!domains_cover(&parse_domains("0-1-9").expect("parses"), &want), "domain 2 missing");
        assert_eq!(parse_domains(""), Some(BTreeMap::new()));
        assert_eq!(parse_domains("0-1"), None);
        assert_eq!(parse_domains("0-1-2-3"), None);
    }
}
