//! Budgets per client address for what an anonymous stranger can make the chat keep: every
//! new conversation is stored and shown to every agent of the bot, so one address opening
//! thousands (by reconnecting with fresh visitor ids) would bury the agents' list.
//!
//! A token bucket per IPv4 address, kept in this worker process (each worker has its own, so
//! the budget per address is per worker); the table is bounded, and full buckets are the
//! first forgotten. Gateways report IPv6 clients as 0.0.0.0 (as GatewayWorker does), which
//! would put every IPv6 visitor in one bucket, so that address is not limited here: the
//! gateway's per-address connection limit still applies to them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Addresses remembered at most; beyond this, idle (refilled) buckets are dropped first.
const MAX_ADDRESSES: usize = 100_000;

pub struct PerIp {
    /// Tokens per second.
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl PerIp {
    /// `per_minute` new things per address, in bursts of as many; 0 = unlimited.
    pub fn per_minute(per_minute: f64) -> PerIp {
        PerIp { rate: per_minute / 60.0, burst: per_minute.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.rate <= 0.0 || ip.is_unspecified()
    }

    /// Takes one of `ip`'s budget if there is one left (checked and taken under one lock, so
    /// concurrent requests cannot both spend the last one).
    pub fn try_take(&self, ip: IpAddr) -> bool {
        if self.exempt(ip) {
            return true;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&ip) {
            buckets.retain(|_, (tokens, at)| self.refill(*tokens, *at) < self.burst);
            if buckets.len() >= MAX_ADDRESSES {
                // Every remembered address is busy: forget one rather than grow.
                if let Some(k) = buckets.keys().next().copied() {
                    buckets.remove(&k);
                }
            }
        }
        let now = Instant::now();
        let tokens = buckets.get(&ip).map_or(self.burst, |(t, at)| self.refill(*t, *at));
        if tokens < 1.0 {
            return false;
        }
        buckets.insert(ip, (tokens - 1.0, now));
        true
    }

    /// Returns one taken by `try_take` that was not used after all.
    pub fn give_back(&self, ip: IpAddr) {
        if self.exempt(ip) {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((tokens, _)) = buckets.get_mut(&ip) {
            *tokens = (*tokens + 1.0).min(self.burst);
        }
    }

    fn refill(&self, tokens: f64, at: Instant) -> f64 {
        (tokens + at.elapsed().as_secs_f64() * self.rate).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusal_per_address() {
        let p = PerIp::per_minute(3.0);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(p.try_take(a));
        }
        assert!(!p.try_take(a));
        p.give_back(a);
        assert!(p.try_take(a), "one given back can be taken again");
        assert!(p.try_take(b), "another address has its own budget");
        assert!(PerIp::per_minute(0.0).try_take(a), "0 = unlimited");
        assert!(p.try_take("0.0.0.0".parse().unwrap()), "IPv6 clients (0.0.0.0) are not lumped together");
    }
}
