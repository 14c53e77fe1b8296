//! Which business worker gets a client's events (spec §6, `routerBind` with least connections).
//!
//! A client sticks to the worker chosen at its first event, so its events arrive in order at
//! one worker; it moves only when that worker is gone. New clients go to the worker with the
//! fewest clients assigned by this gateway.

use indexmap::IndexMap;

pub type LinkId = u64;

#[derive(Debug, Default)]
pub struct Router {
    /// Worker link → clients currently assigned to it.
    load: IndexMap<LinkId, usize>,
}

impl Router {
    pub fn add_worker(&mut self, link: LinkId) {
        self.load.insert(link, 0);
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
    /// else the least loaded. `None` when no worker is connected.
    pub fn route(&mut self, current: Option<LinkId>) -> Option<LinkId> {
        if let Some(link) = current.filter(|l| self.load.contains_key(l)) {
            return Some(link);
        }
        let (&link, n) = self.load.iter_mut().min_by_key(|(_, n)| **n)?;
        *n += 1;
        Some(link)
    }

    /// A client assigned to `link` went away.
    pub fn release(&mut self, link: LinkId) {
        if let Some(n) = self.load.get_mut(&link) {
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
        r.add_worker(1);
        r.add_worker(2);
        let a = r.route(None);
        let b = r.route(None);
        assert_ne!(a, b);
        assert_eq!(r.route(a), a);
        r.remove_worker(a.expect("a"));
        assert_eq!(r.route(a), b, "moves to the survivor");
    }
}
