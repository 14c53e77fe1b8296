//! What a register counts, for `/metrics` and `switchboard status`; and the two helpers every
//! role's counters use (plain atomics, so the actor that counts never waits for a reader).

use std::sync::atomic::{AtomicU64, Ordering};

/// One exposed value: `(name, help, is_counter, value)`.
pub type Sample = (&'static str, &'static str, bool, u64);

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn set(gauge: &AtomicU64, v: usize) {
    gauge.store(v as u64, Ordering::Relaxed);
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Distinct gateway addresses registered now.
    pub gateways: AtomicU64,
    /// Workers (and API clients) listening for address lists now.
    pub workers: AtomicU64,
    /// Peers refused: bad lines, wrong keys, timeouts.
    pub errors: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> Vec<Sample> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("gateways", "gateway addresses registered", false, g(&self.gateways)),
            ("workers", "workers subscribed to the address list", false, g(&self.workers)),
            ("errors_total", "peers refused", true, g(&self.errors)),
        ]
    }
}
