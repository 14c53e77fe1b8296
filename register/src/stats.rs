//! What a register counts, for `/metrics` and `switchboard status`.

use std::sync::atomic::{AtomicU64, Ordering};

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
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, bool, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("gateways", "gateway addresses registered", false, g(&self.gateways)),
            ("workers", "workers subscribed to the address list", false, g(&self.workers)),
            ("errors_total", "peers refused", true, g(&self.errors)),
        ]
    }
}
