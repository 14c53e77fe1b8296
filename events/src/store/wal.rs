//! When and how the SQLite store copies its WAL back into the database file.
//!
//! SQLite's default copies every 1 000 pages inside whichever commit crosses the mark. A chat
//! writes the same few pages (the tail of the messages table and its indexes) over and over, so
//! copying a second's commits at once writes each of them back once, with one fsync, instead of
//! ten times (profile and figures in docs/BENCHMARKS.md).
//!
//! The copy runs in a thread of its own, on a connection of its own, in two steps:
//!
//! * a PASSIVE checkpoint copies everything committed so far and fsyncs the file while every
//!   writer goes on writing. This is the long part (tens of milliseconds on a VM's disk, most of
//!   it the fsyncs); run between two batches, as it once was, every message
//!   arriving meanwhile waited for it: the store's slowest answers (docs/BENCHMARKS.md).
//! * a RESTART then copies the few pages committed during the first step and makes the next
//!   commit start the WAL from its beginning. It holds writers back (in every process) while it
//!   runs, but only for those few pages. PASSIVE alone is not enough: with two worker
//!   processes writing, it never finds both idle, never copies the last frames, and the WAL is
//!   never started over (it grew by 12 MB a second under load).
//!
//! Every worker process runs one; when two are due at once, the second finds the checkpoint
//! lock taken, skips its turn, and tries again a second later.

use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often committed pages are copied back.
pub(super) const EVERY: Duration = Duration::from_secs(1);
/// After this many commits the copy runs whatever the clock says (a bound on the WAL under a
/// burst of big batches, such as a history import).
pub(super) const COMMITS: u32 = 1_000;

/// What the writer (`sqlite::Writer`, whichever thread runs it) tells the checkpoint thread.
#[derive(Default)]
struct Due {
    /// When the oldest commit not yet copied was made (None: nothing to copy).
    since: Option<Instant>,
    commits: u32,
    /// The store is closing: copy what is left and end.
    closed: bool,
}

#[derive(Default)]
struct Shared {
    due: Mutex<Due>,
    wake: Condvar,
}

impl Shared {
    fn due(&self) -> MutexGuard<'_, Due> {
        // The lock guards counters only; one poisoned by a panic still holds usable ones.
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer's handle on its checkpoint thread. Dropping it copies what is left and
/// waits for the thread to end.
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a second connection to `path` (already in WAL mode) and starts the thread.
    pub(super) fn start(path: &Path) -> super::Result<Checkpointer> {
        let conn = super::vfs::open(path, rusqlite::OpenFlags::default())?;
        conn.busy_handler(Some(wait_briefly))?;
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&conn, &theirs))
            .map_err(|e| super::StoreError::Corrupt(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer { shared, thread: Some(thread) })
    }

    /// After each commit. Wakes the thread only for the first commit since the last copy and
    /// when the commits reach `COMMITS`: not a system call per batch.
    pub(super) fn committed(&self) {
        let mut due = self.shared.due();
        due.commits += 1;
        if due.since.is_none() {
            due.since = Some(Instant::now());
            self.shared.wake.notify_one();
        } else if due.commits == COMMITS {
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.due().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The checkpoint thread: sleeps until a commit, then until the copy is due, then copies.
fn run(conn: &Connection, shared: &Shared) {
    loop {
        let mut due = shared.due();
        loop {
            let wait = match due.since {
                _ if due.closed => break,
                Some(_) if due.commits >= COMMITS => break,
                Some(t) if t.elapsed() >= EVERY => break,
                Some(t) => EVERY - t.elapsed(),
                // Nothing to copy: asleep until a commit says otherwise.
                None => Duration::MAX,
            };
            due = if wait == Duration::MAX {
                shared.wake.wait(due).unwrap_or_else(|p| p.into_inner())
            } else {
                shared.wake.wait_timeout(due, wait).unwrap_or_else(|p| p.into_inner()).0
            };
        }
        let closed = due.closed;
        let pending = due.since.take().is_some();
        due.commits = 0;
        drop(due);
        if pending && !copy(conn) {
            // Tried again a second later, whether or not anything is committed meanwhile.
            shared.due().since.get_or_insert_with(Instant::now);
        }
        if closed {
            return;
        }
    }
}

/// Copies the WAL back and starts it over; `false` if something stopped it short (another
/// process's checkpoint running, or a reader holding an old snapshot: an export with
/// `switchboard copy`, which RESTART gives up on after `wait_briefly` rather than hold every
/// chat write behind it).
fn copy(conn: &Connection) -> bool {
    let checkpoint = |mode: &str| conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get::<_, i64>(0));
    // 1: busy. PASSIVE is only ever busy with another process's checkpoint running.
    let copied = checkpoint("PASSIVE").and_then(|busy| if busy == 0 { checkpoint("RESTART") } else { Ok(busy) });
    match copied {
        Ok(0) => true,
        Ok(_) => {
            tracing::debug!("store: WAL checkpoint blocked by another; tried again in {EVERY:?}");
            false
        }
        Err(e) => {
            tracing::warn!("store: WAL checkpoint failed (tried again in {EVERY:?}): {e}");
            false
        }
    }
}

/// Long enough for another worker's batch to end (20 ms).
fn wait_briefly(attempt: i32) -> bool {
    std::thread::sleep(Duration::from_micros(50));
    attempt < 400
}
