//! Each client's events, one at a time and in order, and what the worker keeps between them.
//!
//! The dispatcher queues every event on its client's [`Slot`]; a task runs only while a slot has
//! events waiting, and hands the kept state back to the slot when the queue is empty. An idle
//! client costs its slot and nothing else. A task and a channel for every client, whether it
//! spoke or not, cost a worker about 9.6 KB per idle client (docs/BENCHMARKS.md).

use crate::api::Api;
use crate::events::{Context, Events, WebSocketRequest};
use crate::session::SessionSync;
use crate::stats::Stats;
use crate::worker::Inflight;
use bytes::Bytes;
use futures_util::FutureExt;
use gateway::protocol::{Body, ClientId, EventKind, Origin};
use register::stats::{inc, set};
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::error;

/// One client event on its way to the client's callbacks.
pub(crate) struct ClientEvent {
    pub(crate) kind: EventKind,
    pub(crate) origin: Origin,
    pub(crate) session: Bytes,
    pub(crate) body: Body,
    /// The link it came over, by the gateway's address as the worker's links know it: where
    /// an answer to the client goes, found without printing the client id's address.
    pub(crate) gateway: SocketAddrV4,
    /// When the link read it (for `event_wait_seconds`).
    pub(crate) read_at: Instant,
}

/// What the links hand the dispatcher, in the order they read it.
pub(crate) enum Dispatch {
    Event(ClientEvent),
    /// The link to the gateway at this inner address ended: its clients are gone with it
    /// (a gateway that dies sends no close events), so their session state goes too.
    /// A restarted gateway may hand their client_ids to new connections (PHP's does), which
    /// must not inherit anything.
    GatewayLost(SocketAddrV4),
}

/// What the worker keeps for a client between its events.
#[derive(Default)]
struct Kept {
    sync: SessionSync,
    /// The application's own per-connection state (`Context::local_mut`).
    local: Option<Box<dyn Any + Send + Sync>>,
}

/// A client as the dispatcher holds it.
#[derive(Default)]
struct Slot {
    waiting: VecDeque<ClientEvent>,
    /// A task is taking `waiting` in order; it holds `kept` until it ends.
    busy: bool,
    kept: Kept,
}

/// Only queue moves happen under the lock, never a callback, so a poisoned lock (impossible
/// short of an allocation failure) holds nothing half-done.
fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Routes each client's events to its slot, starting a task when the slot was idle.
pub(crate) async fn dispatch<E: Events>(mut rx: mpsc::Receiver<Dispatch>, app: Arc<E>, api: Api, inflight: Arc<Inflight>, stats: Arc<Stats>) {
    let mut clients: HashMap<ClientId, Arc<Mutex<Slot>>> = HashMap::new();
    while let Some(next) = rx.recv().await {
        let ev = match next {
            Dispatch::Event(ev) => ev,
            Dispatch::GatewayLost(gateway) => {
                // A running task still finishes the events it was given; its state goes with it.
                clients.retain(|id, _| id.gateway() != gateway);
                set(&stats.clients, clients.len());
                continue;
            }
        };
        let id = ev.origin.client_id();
        let close = ev.kind == EventKind::Close;
        if ev.kind == EventKind::Connect {
            // A connect is a new connection, even under an id seen before: fresh state.
            clients.remove(&id);
        }
        let slot = clients.entry(id).or_default();
        let start = {
            let mut s = lock(slot);
            s.waiting.push_back(ev);
            !std::mem::replace(&mut s.busy, true)
        };
        if start {
            tokio::spawn(run(id, slot.clone(), app.clone(), api.clone(), inflight.clone(), stats.clone()));
        }
        if close {
            clients.remove(&id);
        }
        set(&stats.clients, clients.len());
        inc(&stats.events);
    }
}

/// Takes a client's waiting events in order, then gives its state back to the slot.
async fn run<E: Events>(id: ClientId, slot: Arc<Mutex<Slot>>, app: Arc<E>, api: Api, inflight: Arc<Inflight>, stats: Arc<Stats>) {
    let mut kept = std::mem::take(&mut lock(&slot).kept);
    loop {
        let ev = {
            let mut s = lock(&slot);
            match s.waiting.pop_front() {
                Some(ev) => ev,
                None => {
                    // An idle client keeps no queue: its buffer goes until the next event.
                    s.waiting = VecDeque::new();
                    s.kept = kept;
                    s.busy = false;
                    return;
                }
            }
        };
        let kind = ev.kind;
        // A panicking callback is the application's bug: it costs this event and the client's
        // kept state, not the client's later events or the worker.
        if AssertUnwindSafe(handle(id, ev, &mut kept, &*app, &api, &inflight, &stats)).catch_unwind().await.is_err() {
            error!(client_id = %id, ?kind, "the application's callback panicked: this client's kept state is reset");
            kept = Kept::default();
        }
        inflight.done();
    }
}

/// One event: the session brought up to date, the callback, the session written back.
async fn handle<E: Events>(id: ClientId, ev: ClientEvent, kept: &mut Kept, app: &E, api: &Api, inflight: &Arc<Inflight>, stats: &Stats) {
    let started = Instant::now();
    stats.event_wait.observe_since(ev.read_at);
    let raw = kept.sync.load(api, &id, ev.kind, &ev.session).await;
    let mut ctx = Context {
        client_id: id,
        client_addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ev.origin.client_ip), ev.origin.client_port)),
        gateway_port: ev.origin.gateway_port,
        gateway: ev.gateway,
        raw,
        decoded: OnceLock::new(),
        index: OnceLock::new(),
        before: None,
        api: api.clone(),
        local: kept.local.take(),
        saved: None,
        inflight: inflight.clone(),
    };
    match ev.kind {
        EventKind::Connect => app.on_connect(&mut ctx).await,
        EventKind::WebSocketConnect => {
            let req = WebSocketRequest::from_body(ev.body.data);
            app.on_websocket_connect(&mut ctx, &req).await
        }
        EventKind::Message => app.on_message(&mut ctx, ev.body.data).await,
        EventKind::Close => app.on_close(&mut ctx).await,
    }
    if let Some(bytes) = ctx.saved.take() {
        kept.sync.saved(&bytes);
    }
    // Untouched since it was loaded (or saved): nothing to write back.
    if let Some(before) = ctx.before.take() {
        kept.sync.store(api, &id, ev.kind, before.as_ref(), ctx.session()).await;
    }
    stats.callback.observe_since(started);
    kept.local = ctx.local.take();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Links;
    use gateway::protocol::php::{Key, Value};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Records the `who` each message finds in the session; `login` writes one.
    #[derive(Default)]
    struct Who(Mutex<Vec<Option<String>>>);

    #[async_trait::async_trait]
    impl Events for Who {
        async fn on_message(&self, ctx: &mut Context, message: Bytes) {
            self.0.lock().expect("lock").push(ctx.session_str("who"));
            if message.as_ref() == b"login" {
                ctx.session_mut().insert(Key::from_bytes(b"who"), Value::Str(b"agent a1".to_vec()));
            }
            if message.as_ref() == b"rename" {
                ctx.session_mut().insert(Key::from_bytes(b"who"), Value::Str(b"agent a2".to_vec()));
            }
            if message.as_ref() == b"panic" {
                panic!("an application bug");
            }
        }
    }

    const GATEWAY: SocketAddrV4 = SocketAddrV4::new(std::net::Ipv4Addr::new(127, 0, 0, 9), 2900);

    fn event(kind: EventKind, conn: u32, body: &'static [u8]) -> Dispatch {
        let origin = Origin { local_ip: u32::from(*GATEWAY.ip()), local_port: GATEWAY.port(), conn, ..Origin::default() };
        // The gateway holds no session for a new connection, and never got our write (no link).
        Dispatch::Event(ClientEvent { kind, origin, session: Bytes::new(), body: Body::text(body), gateway: GATEWAY, read_at: Instant::now() })
    }

    /// What each message saw, the events sent all at once.
    async fn seen_after(events: Vec<Dispatch>) -> Vec<Option<String>> {
        seen(events, false).await
    }

    /// With `paced`, each event waits until the one before is done and its task has ended.
    async fn seen(events: Vec<Dispatch>, paced: bool) -> Vec<Option<String>> {
        seen_over(Arc::new(Links::default()), events, paced).await
    }

    /// The same with the worker's links to gateways given.
    async fn seen_over(links: Arc<Links>, events: Vec<Dispatch>, paced: bool) -> Vec<Option<String>> {
        let app = Arc::new(Who::default());
        let api = Api::for_worker(links, Arc::default(), String::new());
        let (tx, rx) = mpsc::channel(64);
        let inflight = Arc::new(Inflight::default());
        let task = tokio::spawn(dispatch(rx, app.clone(), api, inflight.clone(), Arc::default()));
        for ev in events {
            if matches!(ev, Dispatch::Event(_)) {
                inflight.add();
            }
            tx.send(ev).await.expect("dispatcher alive");
            while paced && !inflight.idle() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if paced {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        drop(tx);
        task.await.expect("dispatcher ends");
        while !inflight.idle() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seen = app.0.lock().expect("lock").clone();
        seen
    }

    /// A restarted gateway (PHP's counts from 1 again) gives a new connection the id an agent
    /// had: the new one must not be the agent, whichever way the worker learns of it.
    #[tokio::test]
    async fn a_reused_client_id_starts_with_nothing() {
        let agent = Some("agent a1".to_string());
        // Same connection: the identity written by login is seen by the next message.
        let same =
            seen_after(vec![event(EventKind::Connect, 1, b""), event(EventKind::Message, 1, b"login"), event(EventKind::Message, 1, b"next")]).await;
        assert_eq!(same, [None, agent.clone()]);
        // The gateway's link was lost, then a new connection came with the same id; its
        // connect went to another worker, so this one sees only the message.
        let lost =
            seen_after(vec![event(EventKind::Message, 1, b"login"), Dispatch::GatewayLost(GATEWAY), event(EventKind::Message, 1, b"who am i")]).await;
        assert_eq!(lost, [None, None]);
        // A connect under a known id is a new connection.
        let reconnect =
            seen_after(vec![event(EventKind::Message, 1, b"login"), event(EventKind::Connect, 1, b""), event(EventKind::Message, 1, b"who am i")])
                .await;
        assert_eq!(reconnect, [None, None]);
    }

    /// A session is written back (SET_SESSION) only when the callback changed it: not when it
    /// only read it, nor when it set a value the session already had.
    #[tokio::test]
    async fn only_a_changed_session_is_written_back() {
        let (tx, mut rx) = mpsc::channel(64);
        let links = Arc::new(Links::default());
        links.store(Arc::new(HashMap::from([(GATEWAY, tx)])));
        let agent = |n: &str| Some(format!("agent {n}"));
        let events = ["login", "next", "login", "rename", "next"].map(|m| event(EventKind::Message, 1, m.as_bytes())).into();
        let seen = seen_over(links, events, true).await;
        assert_eq!(seen, [None, agent("a1"), agent("a1"), agent("a1"), agent("a2")]);
        let mut written = Vec::new();
        while let Ok(packet) = rx.try_recv() {
            let mut buf = bytes::BytesMut::from(&packet[..]);
            let packet = gateway::protocol::Packet::decode(&mut buf, usize::MAX).expect("a packet").expect("whole");
            if let Ok(gateway::protocol::Command::SetSession { session, .. }) = gateway::protocol::Command::from_packet(packet) {
                written.push(Value::unserialize(&session).expect("PHP-serialized"));
            }
        }
        let who = |n: &str| Value::Array([(Key::from_bytes(b"who"), Value::Str(format!("agent {n}").into_bytes()))].into_iter().collect());
        assert_eq!(written, [who("a1"), who("a2")], "the login and the rename, nothing else");
    }

    /// An idle client has no task: the next event's task finds what the last one kept. A
    /// panicking callback costs its event and the kept state, not the client's later events.
    #[tokio::test]
    async fn kept_state_outlives_each_task_and_a_panic() {
        let agent = Some("agent a1".to_string());
        let paced =
            seen(vec![event(EventKind::Message, 1, b"login"), event(EventKind::Message, 1, b"next"), event(EventKind::Message, 1, b"again")], true)
                .await;
        assert_eq!(paced, [None, agent.clone(), agent.clone()]);
        let panicked =
            seen(vec![event(EventKind::Message, 1, b"login"), event(EventKind::Message, 1, b"panic"), event(EventKind::Message, 1, b"after")], true)
                .await;
        // The panicking event saw the login (it records before panicking); the event after it
        // still runs, without the worker's copy of the session (there is no gateway here to
        // hold the written one).
        assert_eq!(panicked, [None, agent.clone(), None]);
        let burst =
            seen(vec![event(EventKind::Message, 1, b"panic"), event(EventKind::Message, 1, b"login"), event(EventKind::Message, 1, b"next")], false)
                .await;
        assert_eq!(burst, [None, None, agent]);
    }
}
