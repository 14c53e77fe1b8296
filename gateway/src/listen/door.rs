//! The door every client connection passes at accept, before the gateway spends anything on
//! it (no task, no buffer, no handshake permit): how many connections one address holds, and
//! how many of those are still in their handshake.
//!
//! Why here and not in the hub: the hub admits a connection only once its request head has
//! been read, and reading it needs a handshake permit. Counted there, an address that opens
//! silent TCP connections takes every permit first, and clients from everywhere else are
//! refused for as long as it keeps reopening. Counted at the door, an address gets at most
//! its share of the permits, and the global ones stay for everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Why the door refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The address already holds `max_connections_per_ip` connections.
    TooManyFromIp,
    /// The address already has its share of connections in their handshake.
    TooManyPendingFromIp,
    /// Every handshake permit is taken.
    TooManyPending,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Refused::TooManyFromIp => "too many connections from this address",
            Refused::TooManyPendingFromIp => "too many handshakes in progress from this address",
            Refused::TooManyPending => "too many connections in their handshake",
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Count {
    open: usize,
    pending: usize,
}

/// One pointer, so the entry every connection holds for its life stays small.
#[derive(Clone)]
pub struct Door(Arc<Inner>);

struct Inner {
    counts: Mutex<HashMap<IpAddr, Count>>,
    /// 0 = no limit.
    max_open: usize,
    /// 0 = no per-address share.
    max_pending: usize,
    permits: Arc<Semaphore>,
}

impl Door {
    pub fn new(max_open: usize, max_pending: usize, permits: Arc<Semaphore>) -> Door {
        Door(Arc::new(Inner { counts: Default::default(), max_open, max_pending, permits }))
    }

    /// Lets a new connection from `ip` in, in its handshake; the address's limits are checked
    /// before a global permit is taken.
    pub fn enter(&self, ip: IpAddr) -> Result<Entry, Refused> {
        let d = &self.0;
        let mut counts = d.counts.lock().unwrap_or_else(|p| p.into_inner());
        let c = counts.get(&ip).copied().unwrap_or_default();
        if d.max_open > 0 && c.open >= d.max_open {
            return Err(Refused::TooManyFromIp);
        }
        if d.max_pending > 0 && c.pending >= d.max_pending {
            return Err(Refused::TooManyPendingFromIp);
        }
        // Taken for good here and given back by hand (`give_back`) when the handshake ends: a
        // permit guard would be 16 more bytes in every connection's entry, kept for its life.
        d.permits.try_acquire().map_err(|_| Refused::TooManyPending)?.forget();
        let c = counts.entry(ip).or_default();
        c.open += 1;
        c.pending += 1;
        Ok(Entry { door: self.clone(), ip, pending: true })
    }

    fn give_back(&self) {
        self.0.permits.add_permits(1);
    }

    fn leave(&self, ip: IpAddr, pending: bool) {
        if pending {
            self.give_back();
        }
        let mut counts = self.0.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = counts.get_mut(&ip) {
            c.open = c.open.saturating_sub(1);
            if pending {
                c.pending = c.pending.saturating_sub(1);
            }
            if c.open == 0 {
                counts.remove(&ip);
            }
        }
    }

    fn handshake_over(&self, ip: IpAddr) {
        self.give_back();
        let mut counts = self.0.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = counts.get_mut(&ip) {
            c.pending = c.pending.saturating_sub(1);
        }
    }
}

/// One connection inside: counted for its address while it lives. Its task holds it for the
/// connection's whole life, so it is kept to 32 bytes (no permit guard).
pub struct Entry {
    door: Door,
    ip: IpAddr,
    /// Still in its handshake: it holds a permit and counts among its address's handshakes.
    pending: bool,
}

impl Entry {
    /// The handshake is over: its permit and its place in the address's share go back.
    pub fn handshake_done(&mut self) {
        if std::mem::take(&mut self.pending) {
            self.door.handshake_over(self.ip);
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.door.leave(self.ip, self.pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_its_share_and_no_more() {
        let door = Door::new(4, 2, Arc::new(Semaphore::new(3)));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut a1 = door.enter(a).expect("first");
        let _a2 = door.enter(a).expect("second");
        assert_eq!(door.enter(a).err(), Some(Refused::TooManyPendingFromIp));
        let _b1 = door.enter(b).expect("another address still gets a permit");
        assert_eq!(door.enter(b).err(), Some(Refused::TooManyPending), "three permits in all");
        a1.handshake_done();
        let _a3 = door.enter(a).expect("a finished handshake frees a place");
        let _a4 = door.enter(a).err();
        drop(a1);
        assert_eq!(door.0.counts.lock().unwrap().get(&a).map(|c| c.open), Some(2));
        // Every permit comes back, whether its handshake ended or its connection did.
        drop((_a2, _a3, _b1));
        assert_eq!(door.0.permits.available_permits(), 3, "all given back");
        assert!(door.0.counts.lock().unwrap().is_empty(), "no address counted");
    }
}
