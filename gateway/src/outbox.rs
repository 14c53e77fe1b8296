//! A client connection's queue of outgoing messages: bounded, many senders (the hub, the
//! connection's reader), one receiver (its task), and nothing allocated while it is empty.
//! It is also how the hub drops a connection at once ([`Outbox::shut`]: CMD_DESTROY, a slow
//! reader, a dead heartbeat): the task already waits on its queue, so a second signal (a
//! cancellation token, ≈ 130 bytes and a second wait registered on every turn) is not needed.
//!
//! Why not a crate's channel: tokio's mpsc allocates a block of 32 slots when it is made and keeps
//! a spare block once a burst passed 32, which massif showed as 3.7 KB of every idle connection
//! in rooms of 50 (docs/BENCHMARKS.md); flume and a plain `VecDeque` keep whatever capacity their
//! largest burst grew them to; futures' bounded channel needs `&mut` to `try_send`, which the
//! hub's shared tables do not give. Here the buffer is let go each time the receiver empties it,
//! so an idle connection's queue is one small shared header.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Why a message was not queued; it comes back to the caller.
#[derive(Debug)]
pub enum Refused<T> {
    /// `capacity` messages are already waiting: the client reads too slowly.
    Full(T),
    /// The receiver is gone (the connection is over).
    Closed(T),
}

struct State<T> {
    /// Boxed, and none at all once the connection is parked (`sleep_on`): inline, the deque's
    /// 32 bytes made every connection's header a 96-byte allocation; without it the header is
    /// 64 (docs/BENCHMARKS.md, session 24). An awake connection keeps the box between bursts,
    /// so a message allocates no more than before (the buffer, let go when emptied).
    #[allow(clippy::box_collection)]
    items: Option<Box<VecDeque<T>>>,
    senders: u32,
    receiver: bool,
    /// Shut by a sender: nothing more is taken or handed out.
    shut: bool,
    /// The receiver's task, while it waits. A waker under the queue's own lock, not tokio's
    /// `Notify`: a `Notify` wait is a 64-byte future, and the connection's task holds it across
    /// its main wait, which sized every connection's task a 128-byte step bigger.
    waiting: Option<Waker>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// A `u32` beside `heard`: the header then fits a 96-byte allocation, not 112.
    capacity: u32,
    /// The client was heard from (a heartbeat the gateway keeps): set by the connection, read
    /// and cleared by the hub's heartbeat tick. Here rather than in an `Arc` of its own, which
    /// was one more allocation and pointer for every connection.
    heard: AtomicBool,
    /// The client sent a message (any, heartbeats too): set by the connection, read by the
    /// hub's first-message deadline. In the header's padding: it costs nothing.
    spoke: AtomicBool,
}

impl<T> Shared<T> {
    /// Nothing that can panic runs under the lock, so a poisoned one holds a consistent queue.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes the receiver if it waits (outside the lock: `s` is consumed).
    fn wake(mut s: MutexGuard<'_, State<T>>) {
        let waker = s.waiting.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The sending side; clones share the queue.
pub struct Outbox<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving side.
pub struct OutboxRx<T> {
    shared: Arc<Shared<T>>,
}

/// A queue that holds at most `capacity` messages (at least one).
pub fn outbox<T>(capacity: usize) -> (Outbox<T>, OutboxRx<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: None, senders: 1, receiver: true, shut: false, waiting: None }),
        capacity: u32::try_from(capacity).unwrap_or(u32::MAX).max(1),
        heard: AtomicBool::new(false),
        spoke: AtomicBool::new(false),
    });
    (Outbox { shared: shared.clone() }, OutboxRx { shared })
}

impl<T> Outbox<T> {
    /// Queues `m` unless the queue is full or its receiver gone; never waits.
    pub fn try_send(&self, m: T) -> Result<(), Refused<T>> {
        let mut s = self.shared.lock();
        if !s.receiver || s.shut {
            return Err(Refused::Closed(m));
        }
        let capacity = self.shared.capacity as usize;
        let items = s.items.get_or_insert_default();
        if items.len() >= capacity {
            return Err(Refused::Full(m));
        }
        items.push_back(m);
        // A receiver that takes waits only after finding the queue empty, so only the message
        // that ends the emptiness needs to wake it; the rest of a burst is taken in the same
        // turn. (One that does not take waits for the shut alone.)
        if items.len() == 1 {
            Shared::wake(s);
        }
        Ok(())
    }

    /// Ends the connection now: what waits is dropped, the receiver's `recv` and `recv_if`
    /// give `None`, and later sends are refused. `false` when it already was.
    pub fn shut(&self) -> bool {
        let mut s = self.shared.lock();
        if s.shut {
            return false;
        }
        s.shut = true;
        s.items = None;
        Shared::wake(s);
        true
    }

    /// Whether the client ever sent a message.
    pub fn has_spoken(&self) -> bool {
        self.shared.spoke.load(Ordering::Relaxed)
    }

    /// Whether the client was heard from since the last call.
    pub fn take_heard(&self) -> bool {
        self.shared.heard.swap(false, Ordering::Relaxed)
    }

    pub fn is_shut(&self) -> bool {
        self.shared.lock().shut
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.shared.lock().items.as_ref().map_or(0, |i| i.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> std::fmt::Debug for Outbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Outbox({} of {} waiting)", self.len(), self.shared.capacity)
    }
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Outbox { shared: self.shared.clone() }
    }
}

impl<T> Drop for Outbox<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.senders -= 1;
        if s.senders == 0 {
            // A waiting receiver learns there will be nothing more.
            Shared::wake(s);
        }
    }
}

impl<T> OutboxRx<T> {
    /// Notes that the client was heard from (its task holds the receiving end, not a sender).
    pub fn hear(&self) {
        self.shared.heard.store(true, Ordering::Relaxed);
    }

    /// Notes that the client sent a message. Read first: the flag is written once, not on
    /// every message (the hub reads this line too).
    pub fn speak(&self) {
        if !self.shared.spoke.load(Ordering::Relaxed) {
            self.shared.spoke.store(true, Ordering::Relaxed);
        }
    }

    /// The next message; None once the queue is shut, or every sender is gone and the queue
    /// is empty.
    pub async fn recv(&self) -> Option<T> {
        self.recv_if(true).await
    }

    /// With `take`, as `recv`. Without, nothing is taken and it resolves (`None`) only once the
    /// queue is shut: a connection whose socket is full stops taking messages but must still
    /// end when the hub says so. One wait either way, so the connection's task holds one
    /// (a second future here cost every connection a 128-byte step of its task's size).
    pub async fn recv_if(&self, take: bool) -> Option<T> {
        poll_fn(|cx| self.poll_recv_if(cx, take)).await
    }

    /// `recv_if` as a poll, for a task that waits on its queue and its socket in one poll of its
    /// own. The waker is left under the same lock the senders take, so a message or a shut
    /// that comes after the check is never missed.
    pub fn poll_recv_if(&self, cx: &mut Context<'_>, take: bool) -> Poll<Option<T>> {
        let mut s = self.shared.lock();
        if s.shut {
            return Poll::Ready(None);
        }
        if take {
            if let Some(m) = pop(&mut s) {
                return Poll::Ready(Some(m));
            }
            if s.senders == 0 {
                return Poll::Ready(None);
            }
        }
        match &mut s.waiting {
            Some(w) if w.will_wake(cx.waker()) => {}
            waiting => *waiting = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub fn is_shut(&self) -> bool {
        self.shared.lock().shut
    }

    /// Leaves `waker` to be woken by the next message, the shut or the last sender's end, for a
    /// connection with no task (`listen::parking`); false, and nothing left, when one of them
    /// is already here. The queue's box goes meanwhile.
    pub fn sleep_on(&self, waker: Waker) -> bool {
        let mut s = self.shared.lock();
        if s.shut || s.senders == 0 || s.items.as_ref().is_some_and(|i| !i.is_empty()) {
            return false;
        }
        s.items = None;
        s.waiting = Some(waker);
        true
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut s = self.shared.lock();
        if s.shut {
            return None;
        }
        pop(&mut s)
    }
}

/// Takes the front message, and lets the buffer go when that empties the queue.
#[inline]
fn pop<T>(s: &mut State<T>) -> Option<T> {
    let items = s.items.as_mut()?;
    let m = items.pop_front();
    if m.is_some() && items.is_empty() {
        **items = VecDeque::new();
    }
    m
}

impl<T> Drop for OutboxRx<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.receiver = false;
        // What was queued for a connection that is over goes now, not with the last sender.
        s.items = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn bounded_in_order_and_closed_both_ways() {
        let (tx, mut rx) = outbox(2);
        tx.try_send(1).expect("room");
        tx.clone().try_send(2).expect("room");
        assert!(matches!(tx.try_send(3), Err(Refused::Full(3))));
        assert_eq!(tx.len(), 2);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
        // A receiver waiting is woken by a send from another task.
        let tx2 = tx.clone();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx2.try_send(4).expect("room");
        });
        assert_eq!(rx.recv().await, Some(4));
        late.await.expect("sender task");
        // Every sender gone: what is queued is still read, then None.
        tx.try_send(5).expect("room");
        drop(tx);
        assert_eq!(rx.recv().await, Some(5));
        assert_eq!(rx.recv().await, None);
        // The receiver gone: sends are refused as closed.
        let (tx, rx) = outbox::<u8>(2);
        drop(rx);
        assert!(matches!(tx.try_send(1), Err(Refused::Closed(1))));
    }

    #[tokio::test]
    async fn a_shut_queue_ends_its_receiver_at_once() {
        let (tx, mut rx) = outbox(8);
        tx.try_send(1).expect("room");
        assert!(tx.shut(), "shut now");
        assert!(!tx.clone().shut(), "only once");
        // What waited is dropped, not delivered; later sends are refused.
        assert_eq!(rx.try_recv(), None);
        assert_eq!(rx.recv().await, None);
        assert!(matches!(tx.try_send(2), Err(Refused::Closed(2))));
        assert!(rx.is_shut() && tx.is_shut());
        assert_eq!(rx.recv_if(false).await, None);
        // A receiver waiting, taking or not, is woken by a shut from another task; one not
        // taking lets messages wait, for when it takes again.
        for take in [true, false] {
            let (tx, rx) = outbox::<u8>(8);
            let tx2 = tx.clone();
            let shut = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx2.shut();
            });
            if !take {
                tx.try_send(1).expect("room");
                assert_eq!(tokio::time::timeout(Duration::from_millis(5), rx.recv_if(false)).await.ok(), None, "not taken");
                assert_eq!(tx.len(), 1);
            }
            assert_eq!(rx.recv_if(take).await, None);
            shut.await.expect("shutting task");
        }
    }

    #[test]
    fn an_emptied_queue_holds_no_buffer() {
        let (tx, mut rx) = outbox(100);
        for i in 0..40 {
            tx.try_send(i).expect("room");
        }
        assert!(tx.shared.lock().items.as_ref().is_some_and(|i| i.capacity() >= 40));
        while rx.try_recv().is_some() {}
        assert!(tx.shared.lock().items.as_ref().is_some_and(|i| i.capacity() == 0));
        // Parked, it keeps no deque at all; a message brings one back.
        assert!(rx.sleep_on(std::task::Waker::noop().clone()));
        assert!(tx.shared.lock().items.is_none());
        tx.try_send(1).expect("room");
        assert_eq!(rx.try_recv(), Some(1));
    }
}
