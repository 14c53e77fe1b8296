//! What the chat measures for `/metrics`: store operations by name, upstream calls and LINE
//! sends. One `Metrics` per process, shared by everything that observes into it; the binary
//! registers it with the process's registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use register::stats::Seconds;
use std::time::Instant;

type ByOp = Family<[(&'static str, &'static str); 1], Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    Seconds::default().histogram()
}

#[derive(Debug)]
pub struct Metrics {
    /// Each store call, labelled `op` (`insert_message`, `history`, `assign`, …).
    store: ByOp,
    /// Reads that may lag, labelled `on` (`replica` or `primary`), when `store_read` is set.
    reads: Family<[(&'static str, &'static str); 1], Counter>,
    /// Calls to the upstream HTTP service (`[events] upstream_url`), answered or not.
    pub upstream: Seconds,
    /// Calls to LINE's push and reply endpoints, answered or not.
    pub line_send: Seconds,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            store: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
            reads: Family::default(),
            upstream: Seconds::default(),
            line_send: Seconds::default(),
        }
    }
}

impl Metrics {
    pub fn store_op(&self, op: &'static str, started: Instant) {
        self.store.get_or_create(&[("op", op)]).observe(started.elapsed().as_secs_f64());
    }

    pub fn lagging_read(&self, on: &'static str) {
        self.reads.get_or_create(&[("on", on)]).inc();
    }

    /// Adds these metrics to `registry` (names get the registry's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("store_seconds", "store operations, by op", self.store.clone());
        registry.register("store_reads", "reads that may lag, by where they were served (store_read)", self.reads.clone());
        registry.register("upstream_seconds", "calls to the upstream HTTP service", self.upstream.histogram());
        registry.register("line_send_seconds", "calls to LINE's push and reply endpoints", self.line_send.histogram());
    }
}
