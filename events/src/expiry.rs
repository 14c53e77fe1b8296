//! Agent tokens that run out while their agent says nothing: the connection gets the `logout`
//! frame and closes at the token's `exp`, as `check_token` does for an agent that acts.
//!
//! One queue per worker process, ordered by expiry, and one task sleeping until the earliest
//! entry. A sleeping task per login (what this replaces) cost a worker about 1.4 KB per
//! logged-in agent, and outlived its connection until the token's end: an agent reconnecting
//! every minute on a day-long token left a thousand of them (docs/BENCHMARKS.md, session 22).
//! An entry here is its client id and expiry, and goes when the connection closes.

use crate::protocol::now_secs;
use crate::who::Who;
use business::{Api, ClientId};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::warn;

#[derive(Default)]
pub struct Expiries {
    queue: Mutex<Queue>,
    /// Told when an entry comes before every other: the task's sleep is then too long.
    sooner: Notify,
}

#[derive(Default)]
struct Queue {
    /// (exp, client), earliest first.
    by_time: BTreeSet<(u64, ClientId)>,
    /// Each client's entry in `by_time`: one per connection, the latest login's.
    by_client: HashMap<ClientId, u64>,
}

impl Queue {
    fn remove(&mut self, client: ClientId) {
        if let Some(exp) = self.by_client.remove(&client) {
            self.by_time.remove(&(exp, client));
        }
    }

    /// Takes the entries due at `now` (Unix seconds): a token is valid while `exp > now`.
    fn due(&mut self, now: u64) -> Vec<(u64, ClientId)> {
        let first_client = ClientId { ip: std::net::Ipv4Addr::UNSPECIFIED, port: 0, conn: 0 };
        let later = self.by_time.split_off(&(now.saturating_add(1), first_client));
        let due = std::mem::replace(&mut self.by_time, later);
        for (_, client) in &due {
            self.by_client.remove(client);
        }
        due.into_iter().collect()
    }
}

impl Expiries {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Every holder leaves the queue consistent between statements: a panic elsewhere
        // while holding it leaves nothing half-done.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ends `client`'s agent session at `exp` (Unix seconds) unless it has logged in again
    /// with another token or closed by then. Replaces the connection's earlier entry.
    pub fn expire_at(&self, client: ClientId, exp: u64) {
        let mut q = self.queue();
        q.remove(client);
        q.by_client.insert(client, exp);
        q.by_time.insert((exp, client));
        let first = q.by_time.first() == Some(&(exp, client));
        drop(q);
        if first {
            self.sooner.notify_one();
        }
    }

    /// The connection closed: nothing to end.
    pub fn forget(&self, client: ClientId) {
        self.queue().remove(client);
    }

    /// The worker's expiry task: sleeps until the earliest entry is due, then ends every due
    /// connection whose session still holds that token.
    pub fn run(self: Arc<Self>, api: Api) {
        tokio::spawn(async move {
            loop {
                let now = now_secs().max(0) as u64;
                let (due, next) = {
                    let mut q = self.queue();
                    let due = q.due(now);
                    (due, q.by_time.first().map(|(exp, _)| *exp))
                };
                for (exp, client) in due {
                    // Each on its own: a storm of tokens minted together ends together, and one
                    // slow gateway must not hold up the rest.
                    tokio::spawn(end_if_still(api.clone(), client, exp));
                }
                let sleep = match next {
                    // Until the second `exp` names is over (whole seconds), a little after.
                    Some(exp) => Duration::from_millis(exp.saturating_mul(1000).saturating_sub(crate::store::now_ms().max(0) as u64) + 5),
                    None => Duration::from_secs(3600),
                };
                tokio::select! {
                    _ = tokio::time::sleep(sleep) => {}
                    _ = self.sooner.notified() => {}
                }
            }
        });
    }
}

/// Ends the agent on `client` if its session still carries the token that expired at `exp`:
/// a later login on the connection with a fresh token changed `token_exp`.
async fn end_if_still(api: Api, client: ClientId, exp: u64) {
    let session = match api.get_session(&client.to_string()).await {
        Ok(s) => s,
        Err(e) => return warn!(%client, "expiry check failed: {e}"),
    };
    if session.as_ref().and_then(crate::who::session_token_exp) != Some(exp) {
        return;
    }
    if let Who::Agent { bid, id, .. } = Who::from_session(session.as_ref()) {
        crate::agents::end_agent(&api, client, &bid, &id, "expired").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(conn: u32) -> ClientId {
        ClientId::new("127.0.0.1:2900".parse().expect("address"), conn)
    }

    #[test]
    fn due_takes_what_expired_and_keeps_the_rest() {
        let e = Expiries::default();
        e.expire_at(client(1), 100);
        e.expire_at(client(2), 101);
        e.expire_at(client(3), 99);
        let due = e.queue().due(100);
        assert_eq!(due, vec![(99, client(3)), (100, client(1))]);
        assert_eq!(e.queue().by_client.len(), 1);
        assert_eq!(e.queue().due(100), vec![]);
        assert_eq!(e.queue().due(101), vec![(101, client(2))]);
        let q = e.queue();
        assert!(q.by_client.is_empty() && q.by_time.is_empty());
    }

    #[test]
    fn a_new_token_replaces_the_entry_and_a_close_removes_it() {
        let e = Expiries::default();
        e.expire_at(client(1), 100);
        e.expire_at(client(1), 500);
        assert_eq!(e.queue().by_client.len(), 1);
        assert_eq!(e.queue().due(200), vec![]);
        e.expire_at(client(2), 100);
        e.forget(client(2));
        e.forget(client(7));
        assert_eq!(e.queue().by_time.len(), 1);
        assert_eq!(e.queue().due(500), vec![(500, client(1))]);
    }
}
