//! Which business worker gets a client's events (spec §6, `routerBind` with least connections).
//!
//! A client sticks to the worker chosen at its first event, so its events arrive in order at
//! one worker; it moves only when that worker is gone. New clients go to the worker with the
//! fewest clients assigned by this gateway.
//!
//! Except while every linked worker asked to be a standby (`"standby":true` in its
//! CMD_WORKER_CONNECT, a Switchboard extension, with when its process started): then new
//! clients all go to the longest running of them, and the others take its clients only when it
//! goes. Every gateway sees the same start times, so they all pick the same worker whatever
//! order their links came up in (a restarted gateway, a link that dropped and came back).
//!
//! A chat worker asks for it when its store is one SQLite file: SQLite takes one writer at a
//! time, and two processes writing the same file wait for each other's lock and re-read the
//! pages each other's commits changed, which costs more CPU and latency than one process
//! (multi-threaded) doing all the writing (docs/BENCHMARKS.md, session 21). The standby keeps
//! its links, so a crash or a reload still moves the clients at once. A PHP worker never asks:
//! one PHP process is one thread, and a fleet of them must share the clients, so any worker
//! that did not ask brings back least connections for every new client.

use indexmap::IndexMap;

pub type LinkId = u64;

#[derive(Debug, Default)]
pub struct Router {
    /// Worker link → (clients currently assigned to it, its start if it asked to be a
    /// standby), in the order the workers linked.
    load: IndexMap<LinkId, (usize, Option<u64>)>,
}

impl Router {
    pub fn add_worker(&mut self, link: LinkId, standby: Option<u64>) {
        self.load.insert(link, (0, standby));
    }

    pub fn remove_worker(&mut self, link: LinkId) {
        self.load.shift_remove(&link);
    }

    pub fn has_workers(&self) -> bool {
        !self.load.is_empty()
    }

    pub fn is_worker(&self, link: LinkId) -> bool {
        self.load.contains_key(&link)
    }

    pub fn workers(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.load.keys().copied()
    }

    /// The worker for a client currently stuck to `current`: the same one while it lives,
    /// else the longest running if every worker is a standby (the first linked of equals), else
    /// the least loaded. `None` when no worker is connected.
    pub fn route(&mut self, current: Option<LinkId>) -> Option<LinkId> {
        if let Some(link) = current.filter(|l| self.load.contains_key(l)) {
            return Some(link);
        }
        let all_standby = self.load.values().all(|(_, standby)| standby.is_some());
        let (&link, (n, _)) = if all_standby {
            self.load.iter_mut().min_by_key(|(_, (_, started))| *started)?
        } else {
            self.load.iter_mut().min_by_key(|(_, (n, _))| *n)?
        };
        *n += 1;
        Some(link)
    }

    /// A client assigned to `link` went away.
    pub fn release(&mut self, link: LinkId) {
        if let Some((n, _)) = self.load.get_mut(&link) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_then_least_loaded_then_moves() {
        let mut r = Router::default();
        assert_eq!(r.route(None), None);
        r.add_worker(1, None);
        r.add_worker(2, None);
        let a = r.route(None);
        let b = r.route(None);
        assert_ne!(a, b);
        assert_eq!(r.route(a), a);
        r.remove_worker(a.expect("a"));
        assert_eq!(r.route(a), b, "moves to the survivor");
    }

    #[test]
    fn standbys_wait_while_the_longest_running_lives() {
        let mut r = Router::default();
        // Linked in another order than they started in (a gateway that restarted, say).
        r.add_worker(3, Some(2_000));
        r.add_worker(7, Some(1_000));
        r.add_worker(5, Some(3_000));
        assert!((0..10).all(|_| r.route(None) == Some(7)), "every new client to the longest running");
        r.remove_worker(7);
        assert_eq!(r.route(Some(7)), Some(3), "its clients move to the next longest running");
        assert_eq!(r.route(None), Some(3));
        r.add_worker(8, Some(4_000));
        assert_eq!(r.route(None), Some(3), "a restarted worker started last: it stands by");
        r.add_worker(9, Some(2_000));
        assert_eq!(r.route(None), Some(3), "of equals, the first linked");
    }

    #[test]
    fn a_worker_that_did_not_ask_brings_back_least_connections() {
        let mut r = Router::default();
        r.add_worker(1, Some(1_000));
        r.add_worker(2, None);
        let picks: Vec<_> = (0..4).map(|_| r.route(None)).collect();
        assert_eq!(picks.iter().filter(|p| **p == Some(1)).count(), 2, "shared: {picks:?}");
        r.remove_worker(2);
        assert!((0..3).all(|_| r.route(None) == Some(1)));
    }
}
