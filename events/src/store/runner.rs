//! Who runs the SQLite store's jobs, and on which thread.
//!
//! rusqlite is blocking, so the store once handed every job to a thread of its own and took
//! the answer back: two thread wakeups a job whenever the worker was not already busy (2.7
//! voluntary context switches per room message at 100 000 deliveries/s, docs/BENCHMARKS.md,
//! session 29). Now the caller that finds the store idle takes the lead: it lets whatever else
//! is ready run first (`yield_now`: the events already read queue their jobs behind its own),
//! then runs the whole queue itself, on its own thread, in one transaction. Jobs that arrive
//! while a batch runs wait, and the store thread runs them, batch after batch, until the queue
//! is empty. Running each job alone at once was measured too, and was worse from 400 000/s up:
//! a commit per message costs more than the wakeups it saves.
//!
//! A caller never waits for another process on its own thread: when the file's write lock is
//! held elsewhere (the other worker, a checkpoint's RESTART), its batch goes back to the queue
//! for the store thread, which waits. Long jobs (retention's deletes) are only ever queued.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// A job runs against the writer and returns how to answer once the batch's fate is known
/// (`true`: committed).
pub(super) type Job<W> = Box<dyn FnOnce(&mut W) -> Answer + Send>;
pub(super) type Answer = Box<dyn FnOnce(bool) + Send>;

/// Runs one batch. A caller's own thread may not wait for the file's lock: the batch then
/// gives back the jobs it did not start, for the store thread.
pub(super) type RunBatch<W> = fn(&mut W, Vec<Job<W>>) -> Result<(), Vec<Job<W>>>;

/// Jobs run in one transaction at most (a bound on how long one batch holds the write lock).
const MAX_BATCH: usize = 256;

thread_local! {
    /// Set while this thread runs a batch for its own caller (see `inline`).
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// True while the current thread runs a caller's batch on that caller's thread: a lock held by
/// another process is then reported at once, not waited for (SQLite's busy handler asks).
pub(super) fn inline() -> bool {
    INLINE.with(Cell::get)
}

struct Queue<W> {
    pending: VecDeque<Job<W>>,
    /// A batch is running (a caller's or the store thread's). Jobs are pending only while one
    /// is: whoever runs takes them or hands them to the store thread.
    running: bool,
    /// The store thread is to run the queue until it is empty.
    handed: bool,
    /// The store is dropped: the thread ends once nothing runs.
    closed: bool,
}

struct Shared<W> {
    queue: Mutex<Queue<W>>,
    wake: Condvar,
    writer: Mutex<W>,
    run_batch: RunBatch<W>,
}

impl<W> Shared<W> {
    // Both locks guard state a panicking job leaves consistent (the queue's flags are reset by
    // `Lead`'s drop; the writer rolls back an interrupted transaction before its next batch).
    fn queue(&self) -> MutexGuard<'_, Queue<W>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, W> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The store is dropped.
#[derive(Debug)]
pub(super) struct Closed;

pub(super) struct Runner<W> {
    shared: Arc<Shared<W>>,
}

impl<W: Send + 'static> Runner<W> {
    /// Starts the store thread (`name`) around `writer`.
    pub(super) fn start(name: &str, writer: W, run_batch: RunBatch<W>) -> std::io::Result<Runner<W>> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { pending: VecDeque::new(), running: false, handed: false, closed: false }),
            wake: Condvar::new(),
            writer: Mutex::new(writer),
            run_batch,
        });
        let theirs = shared.clone();
        std::thread::Builder::new().name(name.into()).spawn(move || serve(&theirs))?;
        Ok(Runner { shared })
    }

    /// Queues `job`. When the store is idle and `may_run_here`, the caller is given the
    /// [`Lead`]: it runs the queue itself (`Lead::run`), after letting whatever else is ready
    /// queue behind it.
    pub(super) fn submit(&self, job: Job<W>, may_run_here: bool) -> Result<Option<Lead<'_, W>>, Closed> {
        let mut q = self.shared.queue();
        if q.closed {
            return Err(Closed);
        }
        q.pending.push_back(job);
        if q.running {
            return Ok(None);
        }
        q.running = true;
        if !may_run_here {
            q.handed = true;
            self.shared.wake.notify_one();
            return Ok(None);
        }
        Ok(Some(Lead(&self.shared)))
    }
}

impl<W> Drop for Runner<W> {
    fn drop(&mut self) {
        self.shared.queue().closed = true;
        self.shared.wake.notify_one();
    }
}

/// A caller's turn to run the queue on its own thread. Dropped unrun (its future cancelled) or
/// once run, whatever is still queued goes to the store thread; otherwise the store is idle
/// again.
pub(super) struct Lead<'a, W>(&'a Shared<W>);

impl<W> Lead<'_, W> {
    /// Runs one batch of what is queued, the caller's own job first among them.
    pub(super) fn run(self) {
        let batch: Vec<Job<W>> = {
            let mut q = self.0.queue();
            let n = q.pending.len().min(MAX_BATCH);
            q.pending.drain(..n).collect()
        };
        INLINE.with(|i| i.set(true));
        let ran = (self.0.run_batch)(&mut self.0.writer(), batch);
        if let Err(left) = ran {
            let mut q = self.0.queue();
            for job in left.into_iter().rev() {
                q.pending.push_front(job);
            }
        }
    }
}

impl<W> Drop for Lead<'_, W> {
    fn drop(&mut self) {
        INLINE.with(|i| i.set(false));
        let mut q = self.0.queue();
        if q.pending.is_empty() {
            q.running = false;
        } else {
            q.handed = true;
            self.0.wake.notify_one();
        }
    }
}

/// The store thread: asleep until handed the queue, then runs it in batches until it is empty.
fn serve<W>(shared: &Shared<W>) {
    let mut q = shared.queue();
    loop {
        if q.handed {
            let n = q.pending.len().min(MAX_BATCH);
            if n == 0 {
                q.handed = false;
                q.running = false;
                continue;
            }
            let batch: Vec<Job<W>> = q.pending.drain(..n).collect();
            drop(q);
            // Off a caller's thread a batch waits for the lock: it gives nothing back.
            let _ = (shared.run_batch)(&mut shared.writer(), batch);
            q = shared.queue();
            continue;
        }
        if q.closed && !q.running {
            return;
        }
        q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    /// A writer that records which thread ran each batch and how large it was.
    #[derive(Default)]
    struct Log {
        batches: Vec<(String, usize)>,
        /// Batches run inline give their jobs back while this is positive (a lock held elsewhere).
        busy: usize,
    }

    fn run_batch(w: &mut Log, batch: Vec<Job<Log>>) -> Result<(), Vec<Job<Log>>> {
        if inline() && w.busy > 0 {
            w.busy -= 1;
            return Err(batch);
        }
        let name = std::thread::current().name().unwrap_or("").to_string();
        w.batches.push((name, batch.len()));
        let answers: Vec<Answer> = batch.into_iter().map(|job| job(w)).collect();
        for a in answers {
            a(true);
        }
        Ok(())
    }

    fn job(done: &mpsc::Sender<usize>, n: usize) -> Job<Log> {
        let done = done.clone();
        Box::new(move |_| Box::new(move |ok| assert!(ok && done.send(n).is_ok())))
    }

    fn batches(r: &Runner<Log>) -> Vec<(String, usize)> {
        r.shared.writer().batches.clone()
    }

    fn here() -> String {
        std::thread::current().name().unwrap_or("").to_string()
    }

    /// What a caller does: run the queue itself when given the lead.
    fn submit_here(r: &Runner<Log>, job: Job<Log>) {
        if let Some(lead) = r.submit(job, true).expect("submit") {
            lead.run();
        }
    }

    /// Waits for the store thread to find the queue empty (it answers a batch's jobs before it
    /// looks at the queue again).
    fn wait_idle(r: &Runner<Log>) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while r.shared.queue().running {
            assert!(std::time::Instant::now() < deadline, "the store thread never went idle");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn store_thread(n: usize) -> (String, usize) {
        ("store-test".to_string(), n)
    }

    #[test]
    fn an_idle_store_runs_the_job_on_the_callers_thread() {
        let r = Runner::start("store-test", Log::default(), run_batch).expect("start");
        let (tx, rx) = mpsc::channel();
        submit_here(&r, job(&tx, 1));
        assert_eq!(rx.try_recv().ok(), Some(1), "answered before submit returned");
        assert_eq!(batches(&r), vec![(here(), 1)]);
    }

    /// Jobs queued between the lead's submit and its run share its batch (one commit).
    #[test]
    fn jobs_queued_before_the_lead_runs_join_its_batch() {
        let r = Runner::start("store-test", Log::default(), run_batch).expect("start");
        let (tx, rx) = mpsc::channel();
        let lead = r.submit(job(&tx, 1), true).expect("submit").expect("the lead");
        for n in 2..=4 {
            assert!(r.submit(job(&tx, n), true).expect("submit").is_none(), "one lead at a time");
        }
        lead.run();
        let got: Vec<usize> = rx.try_iter().collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert_eq!(batches(&r), vec![(here(), 4)]);
    }

    /// A caller whose future is dropped before its turn: its job still runs, on the store thread.
    #[test]
    fn a_lead_dropped_unrun_hands_the_queue_to_the_store_thread() {
        let r = Runner::start("store-test", Log::default(), run_batch).expect("start");
        let (tx, rx) = mpsc::channel();
        drop(r.submit(job(&tx, 1), true).expect("submit"));
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).ok(), Some(1));
        assert_eq!(batches(&r), vec![store_thread(1)]);
        wait_idle(&r);
        submit_here(&r, job(&tx, 2));
        assert_eq!(rx.try_recv().ok(), Some(2), "idle again");
    }

    #[test]
    fn a_job_that_may_not_run_here_goes_to_the_store_thread() {
        let r = Runner::start("store-test", Log::default(), run_batch).expect("start");
        let (tx, rx) = mpsc::channel();
        assert!(r.submit(job(&tx, 1), false).expect("submit").is_none());
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).ok(), Some(1));
        assert_eq!(batches(&r), vec![store_thread(1)]);
    }

    /// Jobs that arrive while a caller runs its batch wait, and go to the store thread together.
    #[test]
    fn jobs_queued_during_a_callers_batch_run_on_the_store_thread_as_one_batch() {
        let r = Arc::new(Runner::start("store-test", Log::default(), run_batch).expect("start"));
        let (tx, rx) = mpsc::channel();
        let (r2, tx2) = (r.clone(), tx.clone());
        let first: Job<Log> = Box::new(move |_| {
            // Submitted from another thread while this batch holds the store.
            std::thread::spawn(move || {
                for n in 2..=6 {
                    submit_here(&r2, job(&tx2, n));
                }
            })
            .join()
            .expect("join");
            Box::new(move |_| assert!(tx.send(1).is_ok()))
        });
        submit_here(&r, first);
        let got: Vec<usize> = (0..6).filter_map(|_| rx.recv_timeout(Duration::from_secs(10)).ok()).collect();
        assert_eq!(got, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(batches(&r), vec![(here(), 1), store_thread(5)]);
    }

    /// The file's lock held elsewhere: the caller does not wait, the store thread does.
    #[test]
    fn a_lock_held_elsewhere_sends_the_callers_batch_to_the_store_thread() {
        let r = Runner::start("store-test", Log { busy: 1, ..Log::default() }, run_batch).expect("start");
        let (tx, rx) = mpsc::channel();
        submit_here(&r, job(&tx, 1));
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).ok(), Some(1));
        assert_eq!(batches(&r), vec![store_thread(1)]);
        // And the next caller finds the store idle again.
        wait_idle(&r);
        submit_here(&r, job(&tx, 2));
        assert_eq!(rx.try_recv().ok(), Some(2));
    }

    #[test]
    fn a_job_that_panics_leaves_the_store_usable() {
        let r = Runner::start("store-test", Log::default(), run_batch).expect("start");
        let boom: Job<Log> = Box::new(|_| panic!("a job's bug"));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| submit_here(&r, boom)));
        assert!(caught.is_err());
        assert!(!inline(), "the thread is no longer marked as running a batch");
        let (tx, rx) = mpsc::channel();
        submit_here(&r, job(&tx, 1));
        assert_eq!(rx.try_recv().ok(), Some(1));
    }

    #[test]
    fn jobs_queued_when_the_store_is_dropped_still_run() {
        let r = Runner::start("store-test", Log::default(), run_batch).expect("start");
        let (tx, rx) = mpsc::channel();
        let count = Arc::new(AtomicUsize::new(0));
        for n in 0..3 {
            let count = count.clone();
            let tx = tx.clone();
            let job: Job<Log> = Box::new(move |_| {
                Box::new(move |_| {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = tx.send(n);
                })
            });
            assert!(r.submit(job, false).expect("submit").is_none());
        }
        drop(r);
        let got: Vec<usize> = (0..3).filter_map(|_| rx.recv_timeout(Duration::from_secs(10)).ok()).collect();
        assert_eq!(got, vec![0, 1, 2]);
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }
}
