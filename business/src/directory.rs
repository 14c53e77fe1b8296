//! The worker's side of routing by directory: which uids and groups each gateway holds, as the
//! gateways tell it (`gateway::directory`), so `send_to_uid` and `send_to_group` go only to the
//! gateways with a member instead of to every one (GatewayWorker#19).
//!
//! A gateway the worker has no complete snapshot of (a PHP gateway, which never sends one, or
//! one whose snapshot is still on its way) is sent everything, as before: the directory only
//! ever leaves out a gateway that said it has no member.

use gateway::protocol::directory::{Change, Delta};
use gateway::protocol::php::Key;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a bind or join waits for every worker to learn of it before going on anyway (the
/// gateway gives up on a stuck worker after 1 s, `gateway::directory::BARRIER_WAIT`).
pub const SETTLE_WAIT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Directory {
    gateways: Mutex<HashMap<SocketAddrV4, Held>>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next_token: AtomicU64,
}

#[derive(Default)]
struct Held {
    complete: bool,
    uids: HashSet<Key>,
    groups: HashSet<Key>,
}

impl Directory {
    /// Applies a gateway's DIRECTORY packet; the caller acknowledges `delta.seq` afterwards.
    pub fn apply(&self, gateway: SocketAddrV4, delta: Delta) {
        let mut all = self.gateways.lock().unwrap_or_else(|p| p.into_inner());
        let held = all.entry(gateway).or_default();
        if delta.reset {
            *held = Held::default();
        }
        held.complete |= delta.complete;
        for c in delta.changes {
            match c {
                Change::UidAdded(n) => held.uids.insert(Key::from_bytes(&n)),
                Change::UidRemoved(n) => held.uids.remove(&Key::from_bytes(&n)),
                Change::GroupAdded(n) => held.groups.insert(Key::from_bytes(&n)),
                Change::GroupRemoved(n) => held.groups.remove(&Key::from_bytes(&n)),
            };
        }
    }

    /// The link to a gateway ended: nothing is known of it until its next snapshot.
    pub fn forget(&self, gateway: SocketAddrV4) {
        self.gateways.lock().unwrap_or_else(|p| p.into_inner()).remove(&gateway);
    }

    /// Whether the gateway keeps this worker's directory (so barriers mean something there).
    pub fn knows(&self, gateway: SocketAddrV4) -> bool {
        self.gateways.lock().unwrap_or_else(|p| p.into_inner()).get(&gateway).is_some_and(|h| h.complete)
    }

    /// Of `gateways`, those a message to any of `uids` (or `groups`) must go to.
    pub fn route(&self, gateways: &[SocketAddrV4], uids: &[Key], groups: &[Key]) -> Vec<SocketAddrV4> {
        let all = self.gateways.lock().unwrap_or_else(|p| p.into_inner());
        gateways
            .iter()
            .filter(|g| match all.get(*g) {
                Some(h) if h.complete => uids.iter().any(|u| h.uids.contains(u)) || groups.iter().any(|g| h.groups.contains(g)),
                _ => true,
            })
            .copied()
            .collect()
    }

    /// A token for a DIRECTORY_BARRIER and the receiver its DIRECTORY_SETTLED will fire.
    pub fn barrier(&self) -> (u64, oneshot::Receiver<()>) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(token, tx);
        (token, rx)
    }

    pub fn settled(&self, token: u64) {
        if let Some(tx) = self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&token) {
            let _ = tx.send(());
        }
    }

    /// Gives up on a barrier that was never answered.
    pub fn abandon(&self, token: u64) {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Key {
        Key::from_bytes(s.as_bytes())
    }

    #[test]
    fn routes_only_to_gateways_known_to_hold_a_member_and_to_every_unknown_one() {
        let d = Directory::default();
        let gws: Vec<SocketAddrV4> = ["10.0.0.1:2900", "10.0.0.2:2900", "10.0.0.3:2900"].iter().map(|s| s.parse().expect("address")).collect();
        let (a, b) = (gws[0], gws[1]);
        d.apply(a, Delta { reset: true, complete: true, seq: 1, changes: vec![Change::UidAdded("7".into()), Change::GroupAdded("r".into())] });
        d.apply(b, Delta { reset: true, complete: true, seq: 1, changes: vec![] });
        assert_eq!(d.route(&gws, &[key("7")], &[]), [gws[0], gws[2]], "\"7\" and 7 are one key; php never said");
        assert_eq!(d.route(&gws, &[], &[key("r")]), [gws[0], gws[2]]);
        d.apply(b, Delta { seq: 2, changes: vec![Change::UidAdded("7".into())], ..Delta::default() });
        d.apply(a, Delta { seq: 2, changes: vec![Change::UidRemoved("7".into())], ..Delta::default() });
        assert_eq!(d.route(&gws, &[key("7")], &[]), [gws[1], gws[2]]);
        d.forget(b);
        assert_eq!(d.route(&gws, &[key("x")], &[]), [gws[1], gws[2]], "b forgotten: sent everything again");
        d.apply(b, Delta { reset: true, complete: false, seq: 3, changes: vec![] });
        assert!(!d.knows(b) && d.knows(a), "an incomplete snapshot is not routed by");
    }
}
