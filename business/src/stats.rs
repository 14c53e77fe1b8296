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
    /// From reading an event off a gateway link to its callback starting: time spent queued
    /// in this worker behind the client's earlier events and the other clients'.
    pub event_wait: register::stats::Seconds,
    /// How long callbacks run (the application's work, session write-back included).
    pub callback: register::stats::Seconds,
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

    pub fn distributions(&self) -> Vec<register::stats::Distribution> {
        vec![
            ("event_wait_seconds", "from an event read off a gateway link to its callback starting", self.event_wait.histogram()),
            ("callback_seconds", "callback run time, session write-back included", self.callback.histogram()),
        ]
    }
}
