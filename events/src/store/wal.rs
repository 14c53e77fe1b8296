//! When the SQLite store copies its WAL back into the database file.
//!
//! SQLite's default copies every 1 000 pages inside whichever commit crosses the mark. A chat
//! writes the same few pages (the tail of the messages table and its indexes) over and over, so
//! copying a second's commits at once writes each of them back once, with one fsync, instead of
//! ten times (profile and figures in docs/BENCHMARKS.md). The store thread runs it between two
//! batches, once a second after a write, or sooner after many commits.
//!
//! It is a RESTART, not a PASSIVE checkpoint: with two worker processes writing, PASSIVE never
//! finds the other one idle, never copies the last frames, and the WAL is never started over (it
//! grew by 12 MB a second under load). RESTART waits for the other writer's batch to end,
//! copies everything and makes the next commit start the WAL from its beginning; other processes
//! wait for that copy, a second's worth of pages. (Run from a thread and connection of its own,
//! it never found both writers idle either.)

use rusqlite::Connection;
use std::time::{Duration, Instant};

/// How often committed pages are copied back.
pub(super) const EVERY: Duration = Duration::from_secs(1);
/// After this many commits the copy runs whatever the clock says (a bound on the WAL under a
/// burst of big batches, such as a history import).
pub(super) const COMMITS: u32 = 1_000;

/// The store thread's checkpoint schedule.
pub(super) struct Checkpoint {
    /// When the oldest commit not yet copied was made (None: nothing to copy).
    since: Option<Instant>,
    commits: u32,
}

impl Checkpoint {
    pub(super) fn new() -> Checkpoint {
        Checkpoint { since: None, commits: 0 }
    }

    /// How long the store thread may wait for a job before a copy is due.
    pub(super) fn wait(&self) -> Duration {
        match self.since {
            Some(t) => EVERY.saturating_sub(t.elapsed()),
            // Nothing to copy: the wait is only for jobs (an hour stands for "until one comes").
            None => Duration::from_secs(3600),
        }
    }

    /// After each commit: copies if one is due.
    pub(super) fn committed(&mut self, conn: &Connection, wait_for_lock: fn(i32) -> bool) {
        self.commits += 1;
        let since = *self.since.get_or_insert_with(Instant::now);
        if self.commits >= COMMITS || since.elapsed() >= EVERY {
            self.run(conn, wait_for_lock);
        }
    }

    /// Copies now if anything was committed since the last copy. It waits for others only
    /// briefly: a long reader (an export with `switchboard copy`) holds an old snapshot, which
    /// RESTART would wait for with the connection's own busy handler (`wait_for_lock`, put back
    /// after) for 10 s, holding every chat write behind it. Blocked, it has still copied what
    /// it could, and it is tried again a second later.
    pub(super) fn run(&mut self, conn: &Connection, wait_for_lock: fn(i32) -> bool) {
        if self.since.take().is_none() {
            return;
        }
        self.commits = 0;
        let _ = conn.busy_handler(Some(wait_briefly));
        let blocked = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
        let _ = conn.busy_handler(Some(wait_for_lock));
        match blocked {
            Ok(0) => {}
            Ok(_) => {
                tracing::debug!("store: WAL checkpoint blocked by a reader; tried again in {EVERY:?}");
                self.since = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!("store: WAL checkpoint failed (tried again in {EVERY:?}): {e}");
                self.since = Some(Instant::now());
            }
        }
    }
}

/// Long enough for another worker's batch to end (20 ms).
fn wait_briefly(attempt: i32) -> bool {
    std::thread::sleep(Duration::from_micros(50));
    attempt < 400
}
