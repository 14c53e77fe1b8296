//! What a business worker counts, for `/metrics` and `switchboard status`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    /// Gateways linked now.
    pub gateways: AtomicU64,
    /// Clients with a task on this worker now.
    pub clients: AtomicU64,
    /// Client events handled.
    pub events: AtomicU64,
    /// Gateway API calls that failed.
    pub errors: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> Vec<register::stats::Sample> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("gateways", "gateways linked", false, g(&self.gateways)),
            ("clients", "clients served by this worker", false, g(&self.clients)),
            ("events_total", "client events handled", true, g(&self.events)),
            ("errors_total", "failed Gateway API calls", true, g(&self.errors)),
        ]
    }
}
