//! What a gateway counts, for `/metrics` and `switchboard status`. Plain atomics: the hub
//! updates them as it works and readers never block it.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    /// Client connections open now.
    pub clients: AtomicU64,
    /// Of those, idle ones parked without a task (`listen::parking`).
    pub parked: AtomicU64,
    /// Business workers linked now.
    pub workers: AtomicU64,
    /// Data frames received from clients.
    pub messages_in: AtomicU64,
    /// Messages queued to clients.
    pub messages_out: AtomicU64,
    /// Refused or failed things: bad inner peers, slow clients, dropped events, refused updates.
    pub errors: AtomicU64,
    /// Limits hit: per-IP connections, pending handshakes, silent newcomers, floods, origins.
    pub limited: AtomicU64,
    /// send_to_uid / send_to_group commands received from workers and API clients…
    pub sends: AtomicU64,
    /// …and those of them that reached nobody here (a worker without a directory sends to
    /// every gateway; with one, only to those holding a member).
    pub sends_unused: AtomicU64,
    /// Lookups by uid or group received (counts, client ids, sessions, a select by name): a
    /// worker with a directory asks only the gateways that may hold the name, one without it
    /// asks every gateway.
    pub lookups: AtomicU64,
    /// Recipients of each message sent to groups: how far one worker call fans out.
    pub group_fanout: register::stats::Sizes,
    /// Each client's outbound queue, sampled at every heartbeat tick: a slow reader shows as
    /// a tail here before `client_queue` cuts it off.
    pub client_queue_depth: register::stats::Sizes,
}

impl Stats {
    /// `(name, help, is_counter, value)` for exposition.
    pub fn snapshot(&self) -> Vec<register::stats::Sample> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("clients", "client connections open", false, g(&self.clients)),
            ("clients_parked", "idle client connections parked without a task", false, g(&self.parked)),
            ("workers", "business workers linked", false, g(&self.workers)),
            ("messages_in_total", "data frames received from clients", true, g(&self.messages_in)),
            ("messages_out_total", "messages queued to clients", true, g(&self.messages_out)),
            ("errors_total", "refused input and failures", true, g(&self.errors)),
            ("limits_total", "connections refused or closed by a limit", true, g(&self.limited)),
            ("sends_total", "send_to_uid and send_to_group commands received", true, g(&self.sends)),
            ("sends_unused_total", "send_to_uid and send_to_group commands that reached nobody here", true, g(&self.sends_unused)),
            ("lookups_total", "lookups by uid or group received (counts, client ids, sessions, select by name)", true, g(&self.lookups)),
        ]
    }

    pub fn distributions(&self) -> Vec<register::stats::Distribution> {
        vec![
            ("group_fanout", "recipients of each message sent to groups", self.group_fanout.histogram()),
            (
                "client_queue_depth",
                "messages waiting in each client's outbound queue, sampled every heartbeat tick",
                self.client_queue_depth.histogram(),
            ),
        ]
    }
}
