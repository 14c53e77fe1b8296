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

use prometheus_client::metrics::histogram::exponential_buckets;
pub use prometheus_client::metrics::histogram::Histogram;

/// One exposed distribution: `(name, help, histogram)`. The histogram is a handle: clones
/// observe into the same buckets.
pub type Distribution = (&'static str, &'static str, Histogram);

/// A distribution of durations, in seconds: buckets from 50 µs doubling to about 13 s, wide
/// enough for a callback on a quiet box and a store under a storm alike.
#[derive(Debug, Clone)]
pub struct Seconds(Histogram);

impl Default for Seconds {
    fn default() -> Self {
        Seconds(Histogram::new(exponential_buckets(0.000_05, 2.0, 19)))
    }
}

impl Seconds {
    pub fn observe_since(&self, start: std::time::Instant) {
        self.0.observe(start.elapsed().as_secs_f64());
    }

    pub fn histogram(&self) -> Histogram {
        self.0.clone()
    }
}

/// A distribution of counts (recipients, queued messages): buckets 1, 4, 16, … 262 144.
#[derive(Debug, Clone)]
pub struct Sizes(Histogram);

impl Default for Sizes {
    fn default() -> Self {
        Sizes(Histogram::new(exponential_buckets(1.0, 4.0, 10)))
    }
}

impl Sizes {
    pub fn observe(&self, n: usize) {
        self.0.observe(n as f64);
    }

    pub fn histogram(&self) -> Histogram {
        self.0.clone()
    }
}
