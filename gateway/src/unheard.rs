//! The first-message deadline: a client that sends nothing within `first_message_timeout` of
//! being admitted is closed with 1008.
//!
//! The hub keeps it as one queue, not a timer in every connection's task: a boxed tokio `Sleep`
//! was ≈ 90 bytes of every connection that had not spoken yet, and a timer-wheel entry. The
//! timeout is the same for every client, so the order they were admitted in is the order their
//! deadlines fall in, and only the queue's front is ever due.

use crate::tables::ConnId;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often the hub looks at the queue's front: a silent client is closed within this much
/// after its deadline.
pub const TICK: Duration = Duration::from_millis(250);

/// Clients admitted and not yet past their deadline, oldest first.
pub struct Unheard {
    /// `None`: no deadline (`first_message_timeout = 0`).
    timeout: Option<Duration>,
    /// What the deadlines count from: 16 bytes a client rather than an `Instant`'s 24.
    epoch: Instant,
    /// Each client and its deadline in milliseconds after `epoch`.
    queue: VecDeque<(ConnId, u64)>,
}

impl Unheard {
    pub fn new(timeout: Option<Duration>) -> Unheard {
        Unheard { timeout, epoch: Instant::now(), queue: VecDeque::new() }
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Starts `conn`'s deadline, admitted at `now`.
    pub fn admitted(&mut self, conn: ConnId, now: Instant) {
        if let Some(t) = self.timeout {
            self.queue.push_back((conn, self.millis(now + t)));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The clients whose deadline has passed at `now`, oldest first, taken off the queue.
    /// Whether each spoke in time, or is gone, is for the caller to check.
    pub fn due(&mut self, now: Instant) -> Vec<ConnId> {
        let now = self.millis(now);
        let mut due = Vec::new();
        while let Some(&(conn, at)) = self.queue.front() {
            if at > now {
                break;
            }
            due.push(conn);
            self.queue.pop_front();
        }
        // A burst of connections grew it; an idle gateway should not keep that.
        if self.queue.capacity() > 1024 && self.queue.len() < self.queue.capacity() / 4 {
            self.queue.shrink_to(self.queue.len() * 2);
        }
        due
    }

    fn millis(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_fall_due_in_the_order_they_were_admitted_and_only_once() {
        let mut u = Unheard::new(Some(Duration::from_secs(60)));
        let t0 = Instant::now();
        u.admitted(7, t0);
        u.admitted(3, t0 + Duration::from_secs(1));
        u.admitted(9, t0 + Duration::from_secs(2));
        assert!(u.due(t0 + Duration::from_secs(59)).is_empty(), "nobody before 60 s");
        assert_eq!(u.due(t0 + Duration::from_millis(61_500)), [7, 3]);
        assert_eq!(u.due(t0 + Duration::from_secs(61)), [] as [ConnId; 0], "taken once");
        assert_eq!(u.due(t0 + Duration::from_secs(3600)), [9]);
        assert!(u.is_empty());
    }

    #[test]
    fn no_timeout_keeps_nothing() {
        let mut u = Unheard::new(None);
        u.admitted(1, Instant::now());
        assert!(u.is_empty());
    }

    #[test]
    fn the_queue_lets_a_burst_go() {
        let mut u = Unheard::new(Some(Duration::from_secs(1)));
        let t0 = Instant::now();
        for c in 0..10_000 {
            u.admitted(c, t0);
        }
        assert_eq!(u.due(t0 + Duration::from_secs(2)).len(), 10_000);
        assert!(u.queue.capacity() <= 1024, "kept {} slots", u.queue.capacity());
    }
}
