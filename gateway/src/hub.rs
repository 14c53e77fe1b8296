//! The hub: the one actor that owns a gateway's state.
//!
//! Client connections and inner links are tasks of their own; they report to the hub over one
//! channel and the hub answers through each one's outbound queue. Keeping every table in a
//! single task means a command sees a consistent picture (a `send_to_group` after a
//! `join_group` on the same link always reaches the new member) without a lock anywhere.

use crate::config::{secs, Config};
use crate::directory::Publisher;
use crate::outbox::{Outbox, Refused};
use crate::peer::Peer;
use crate::protocol::{encode_reply, AllTarget, Body, Command, EventKind, Message, Origin};
use crate::router::{LinkId, Router};
use crate::stats::Stats;
use crate::tables::{id_key, Client, ConnId, IdMap, Tables};
use crate::unheard::{self, Unheard};
use bytes::Bytes;
use register::stats::{inc, set};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// What the hub asks a client's writer to do.
#[derive(Debug, Clone)]
pub enum Out {
    Send(WsMessage),
    /// CMD_KICK: send the message if any, then close cleanly.
    Kick(Option<WsMessage>),
    /// Close with a WebSocket close code and reason.
    Close(CloseFrame),
}

/// The hub's handle on one client connection.
#[derive(Debug)]
pub struct ClientHandle {
    /// Its queue; shut to drop the connection at once (CMD_DESTROY, slow reader, dead heartbeat).
    pub out: Outbox<Out>,
    /// Compact (`peer` says why): with it the row is 112 bytes, not 120 in a 128-byte block.
    pub addr: Peer,
    /// The worker this client's events go to (sticky).
    pub worker: Option<LinkId>,
    /// Heartbeat counter (spec §10): -1 after any data from the client.
    pub silent_ticks: i32,
    /// When it connected, in seconds after the hub started: a row is kept for every
    /// connection, and an `Instant` is twice the size.
    pub since: u32,
}

/// One row of `switchboard connections`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionInfo {
    pub client_id: String,
    pub remote: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub age_secs: u64,
}

/// The hub's handle on one inner connection (a worker or an API client).
#[derive(Debug)]
struct LinkHandle {
    out: mpsc::Sender<Bytes>,
    kill: CancellationToken,
    peer: SocketAddr,
    worker_key: Option<String>,
}

/// The hub's answer to a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted(ConnId),
    /// No business worker is connected to take its events.
    NoWorker,
    /// Its IP already holds `max_connections_per_ip` connections.
    TooManyFromIp,
}

/// Everything that reaches the hub.
#[derive(Debug)]
pub enum HubMsg {
    /// A client TCP connection was accepted; the reply is its connection id, or `None` when no
    /// worker is connected to take its events.
    Accept {
        addr: SocketAddr,
        out: Outbox<Out>,
        reply: oneshot::Sender<Admission>,
    },
    /// The WebSocket handshake finished; `body` is the serialized `{get, server, cookie}`.
    Handshake {
        conn: ConnId,
        body: Bytes,
    },
    /// A data frame from a client.
    Data {
        conn: ConnId,
        data: Bytes,
    },
    /// A client connection ended.
    Gone {
        conn: ConnId,
    },
    LinkUp {
        link: LinkId,
        peer: SocketAddr,
        out: mpsc::Sender<Bytes>,
        kill: CancellationToken,
    },
    /// An authorized command from an inner link.
    Command {
        link: LinkId,
        cmd: Command,
    },
    LinkGone {
        link: LinkId,
    },
    /// Lists the client connections.
    Connections {
        reply: oneshot::Sender<Vec<ConnectionInfo>>,
    },
    /// The gateway is stopping: close every client with 1001 "going away".
    Goodbye,
}

/// A client event held while the client's worker drains (see `HubMsg` WorkerDrain handling).
#[derive(Debug)]
struct Held {
    conn: ConnId,
    kind: EventKind,
    body: Body,
    /// The session and address when the event arrived, used if the client is gone by the time
    /// the event is released (its ON_CLOSE, typically).
    session: Bytes,
    addr: SocketAddr,
}

/// A worker handing over: it gets no new events; its clients' events wait here until it says
/// it is done (or goes away, or takes longer than `DRAIN_LIMIT`).
#[derive(Debug)]
struct Draining {
    since: Instant,
    held: Vec<Held>,
}

/// How long a draining worker may take before its clients' events go elsewhere anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

pub struct Hub {
    stats: Arc<Stats>,
    per_ip: HashMap<std::net::IpAddr, usize>,
    max_per_ip: usize,
    tables: Tables<ClientHandle>,
    draining: IdMap<LinkId, Draining>,
    links: IdMap<LinkId, LinkHandle>,
    workers_by_key: HashMap<String, LinkId>,
    router: Router,
    local_ip: u32,
    local_port: u16,
    public_port: u16,
    ping_limit: u32,
    ping_data: Option<WsMessage>,
    /// What workers that asked are told of the uids and groups held here.
    directory: Publisher,
    /// What a client's `since` counts from.
    started: Instant,
    /// Clients admitted that may not have spoken yet, for the first-message deadline.
    unheard: Unheard,
}

/// Hub messages handled before the directory's changes are announced.
const BATCH: usize = 256;

/// Where this process's connection ids start: the wall clock in milliseconds (mod 2^32).
///
/// Workerman counts from 1 in every process, so a gateway restarted at the same address hands
/// its first clients the very client_ids its predecessor's clients had. Anything that still
/// holds such an id (a worker's per-client state, an application that stored it, a message
/// on its way) then reaches a stranger. Starting from the clock, a restarted gateway's ids lie
/// beyond every id its predecessor gave unless that one averaged more than 1 000 new
/// connections a second over its whole life; the format (8 hex digits) is unchanged.
fn first_connection_id() -> ConnId {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    ms as ConnId
}

impl Hub {
    pub fn new(config: &Config, public_port: u16, stats: Arc<Stats>) -> Hub {
        Hub {
            stats,
            per_ip: HashMap::new(),
            max_per_ip: config.max_connections_per_ip,
            tables: Tables::starting_after(first_connection_id()),
            draining: IdMap::default(),
            links: IdMap::default(),
            workers_by_key: HashMap::new(),
            router: Router::default(),
            local_ip: u32::from(config.lan_ip),
            local_port: config.inner_port,
            public_port,
            ping_limit: config.ping_not_response_limit,
            ping_data: (!config.ping_data.is_empty()).then(|| WsMessage::Text(config.ping_data.clone().into())),
            directory: Publisher::default(),
            started: Instant::now(),
            unheard: Unheard::new(secs(config.first_message_timeout)),
        }
    }

    /// Runs the actor until every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<HubMsg>, config: Config) {
        let period = secs(config.ping_interval).map(|i| if self.ping_limit > 0 { i / 2 } else { i });
        let mut heartbeat = period.map(tokio::time::interval);
        let mut worker_ping = tokio::time::interval(secs(config.worker_ping_interval).unwrap_or(Duration::from_secs(25)));
        let ping_packet = Command::Ping.into_packet().to_bytes();
        let mut drain_check = tokio::time::interval(Duration::from_secs(1));
        let mut barrier_check = tokio::time::interval(Duration::from_millis(100));
        let mut unheard_check = tokio::time::interval(unheard::TICK);
        unheard_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => {
                        self.handle(m);
                        // Whatever else is queued, then one announcement for the lot: under
                        // load (a login storm) workers get and acknowledge fewer packets.
                        for _ in 0..BATCH {
                            match rx.try_recv() {
                                Ok(m) => self.handle(m),
                                Err(_) => break,
                            }
                        }
                        self.publish();
                    }
                    None => return,
                },
                _ = barrier_check.tick(), if self.directory.has_barriers() => self.settle(),
                _ = unheard_check.tick(), if !self.unheard.is_empty() => self.close_unheard(),
                _ = async { heartbeat.as_mut().expect("guarded").tick().await }, if heartbeat.is_some() => self.heartbeat(),
                _ = drain_check.tick(), if !self.draining.is_empty() => {
                    let late: Vec<LinkId> =
                        self.draining.iter().filter(|(_, d)| d.since.elapsed() > DRAIN_LIMIT).map(|(l, _)| *l).collect();
                    for link in late {
                        warn!(link, "worker did not finish draining within {DRAIN_LIMIT:?}; releasing its clients");
                        self.release(link);
                    }
                }
                _ = worker_ping.tick() => {
                    for link in self.router.workers() {
                        if let Some(l) = self.links.get(&link) {
                            let _ = l.out.try_send(ping_packet.clone());
                        }
                    }
                }
            }
        }
    }

    fn handle(&mut self, msg: HubMsg) {
        match msg {
            HubMsg::Accept { addr, out, reply } => {
                if !self.router.has_workers() {
                    let _ = reply.send(Admission::NoWorker);
                    return;
                }
                let held = self.per_ip.get(&addr.ip()).copied().unwrap_or(0);
                if self.max_per_ip > 0 && held >= self.max_per_ip {
                    inc(&self.stats.limited);
                    let _ = reply.send(Admission::TooManyFromIp);
                    return;
                }
                let conn = self.tables.add(ClientHandle { out, addr: addr.into(), worker: None, silent_ticks: -1, since: self.secs() });
                *self.per_ip.entry(addr.ip()).or_default() += 1;
                set(&self.stats.clients, self.tables.len());
                if reply.send(Admission::Admitted(conn)).is_ok() {
                    self.unheard.admitted(conn, Instant::now());
                    self.forward_to_worker(conn, EventKind::Connect, Body::text(Bytes::new()));
                } else {
                    self.drop_client(conn);
                }
            }
            HubMsg::Handshake { conn, body } => {
                self.forward_to_worker(conn, EventKind::WebSocketConnect, Body { data: body, serialized: true });
            }
            HubMsg::Data { conn, data } => {
                inc(&self.stats.messages_in);
                if let Some(c) = self.tables.get_mut(conn) {
                    c.handle.silent_ticks = -1;
                }
                self.forward_to_worker(conn, EventKind::Message, Body::text(data));
            }
            HubMsg::Gone { conn } => {
                // ON_CLOSE carries the last session, so it is built before the client goes.
                self.forward_to_worker(conn, EventKind::Close, Body::text(Bytes::new()));
                self.drop_client(conn);
            }
            HubMsg::LinkUp { link, peer, out, kill } => {
                self.links.insert(link, LinkHandle { out, kill, peer, worker_key: None });
            }
            HubMsg::Command { link, cmd } => {
                // Only while some worker keeps a directory: no key is built for a bind otherwise.
                let touched = match &cmd {
                    _ if !self.directory.has_subscribers() => None,
                    Command::BindUid { uid, .. } => Some((true, crate::protocol::php::Key::from_bytes(uid))),
                    Command::JoinGroup { group, .. } => Some((false, crate::protocol::php::Key::from_bytes(group))),
                    _ => None,
                };
                self.execute(link, cmd);
                if let Some((uid, key)) = touched {
                    let (held, announced) = self.tables.held(uid, &key);
                    self.directory.touch(link, announced, held);
                }
            }
            HubMsg::Connections { reply } => {
                let mut rows = Vec::with_capacity(self.tables.len());
                let (ip, port) = (std::net::Ipv4Addr::from(self.local_ip), self.local_port);
                for conn in self.tables.in_order() {
                    let Some(c) = self.tables.get(conn) else { continue };
                    rows.push(ConnectionInfo {
                        client_id: crate::protocol::ClientId { ip, port, conn }.to_string(),
                        remote: c.handle.addr.to_string(),
                        uid: c.uid.as_ref().map(|u| String::from_utf8_lossy(u).into_owned()),
                        groups: c.groups.names().map(|g| String::from_utf8_lossy(g).into_owned()).collect(),
                        age_secs: u64::from(self.secs().saturating_sub(c.handle.since)),
                    });
                }
                let _ = reply.send(rows);
            }
            HubMsg::Goodbye => {
                info!(clients = self.tables.len(), "gateway stopping: closing every client with 1001");
                for (_, c) in self.tables.clients() {
                    if c.handle.out.try_send(Out::Close(close(1001, "gateway stopping"))).is_err() {
                        c.handle.out.shut();
                    }
                }
            }
            HubMsg::LinkGone { link } => {
                if let Some(l) = self.links.remove(&link) {
                    if let Some(key) = l.worker_key {
                        info!(worker = %key, "business worker disconnected");
                        if self.workers_by_key.get(&key) == Some(&link) {
                            self.workers_by_key.remove(&key);
                        }
                    }
                }
                self.router.remove_worker(link);
                set(&self.stats.workers, self.router.workers().count());
                self.release(link);
                self.directory.unsubscribe(link);
                self.tables.record_changes(self.directory.recording());
                self.settle();
            }
        }
    }

    /// Tells every subscribed worker what the messages just handled changed.
    fn publish(&mut self) {
        let Some(packet) = self.directory.announce(self.tables.take_changes()) else { return };
        let subscribers: Vec<LinkId> = self.directory.subscribers().collect();
        for link in subscribers {
            let Some(l) = self.links.get(&link) else { continue };
            if let Err(e) = l.out.try_send(packet.clone()) {
                // A worker that missed a change would route by a wrong directory: it reconnects
                // and starts again from a snapshot.
                warn!(link, "directory change not queued for a worker ({}): closing its link", full_or_closed(&e));
                l.kill.cancel();
                self.directory.unsubscribe(link);
            }
        }
        self.tables.record_changes(self.directory.recording());
    }

    /// Answers the barriers every subscriber has caught up with (or waited on for too long).
    fn settle(&mut self) {
        for (link, answer, laggards) in self.directory.settle() {
            if !laggards.is_empty() {
                warn!(
                    link,
                    ?laggards,
                    "directory barrier answered after {:?}: these workers have not applied every change",
                    crate::directory::BARRIER_WAIT
                );
            }
            if let Some(l) = self.links.get(&link) {
                let _ = l.out.try_send(answer);
            }
        }
    }

    /// Forgets a client in every table.
    fn drop_client(&mut self, conn: ConnId) {
        if let Some(c) = self.tables.remove(conn) {
            if let Some(w) = c.handle.worker {
                self.router.release(w);
            }
            let ip = c.handle.addr.ip();
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
        set(&self.stats.clients, self.tables.len());
    }

    /// Sends a client event to the client's worker, choosing one if needed; holds it while
    /// that worker drains.
    fn forward_to_worker(&mut self, conn: ConnId, kind: EventKind, body: Body) {
        let Some(client) = self.tables.get(conn) else { return };
        if let Some(d) = client.handle.worker.and_then(|w| self.draining.get_mut(&w)) {
            d.held.push(Held { conn, kind, body, session: Bytes::copy_from_slice(&client.session), addr: client.handle.addr.into() });
            return;
        }
        self.send_event(conn, kind, body, None);
    }

    /// Hands a drained (or vanished) worker's held events to other workers, in order, with
    /// the sessions as they are now.
    fn release(&mut self, link: LinkId) {
        let Some(d) = self.draining.remove(&link) else { return };
        if !d.held.is_empty() {
            info!(link, events = d.held.len(), "releasing events held for a draining worker");
        }
        for h in d.held {
            self.send_event(h.conn, h.kind, h.body, Some((h.session, h.addr)));
        }
    }

    /// Builds the event packet and queues it on the routed worker's link. `gone` supplies the
    /// session and address when the client has already left the tables.
    fn send_event(&mut self, conn: ConnId, kind: EventKind, body: Body, gone: Option<(Bytes, SocketAddr)>) {
        if let Some(c) = self.tables.get(conn) {
            // A copy: the row keeps its session as a plain boxed slice (tables.rs says why).
            let (session, addr, current) = (Bytes::copy_from_slice(&c.session), c.handle.addr.into(), c.handle.worker);
            let Some(link) = self.router.route(current) else {
                if kind != EventKind::Close {
                    warn!(conn, "no business worker connected: closing the client (1013)");
                    inc(&self.stats.errors);
                    let _ = c.handle.out.try_send(Out::Close(close(1013, "no business worker available")));
                }
                return;
            };
            if let Some(c) = self.tables.get_mut(conn) {
                c.handle.worker = Some(link);
            }
            self.queue_event(link, conn, kind, body, session, addr);
        } else if let Some((session, addr)) = gone {
            if let Some(link) = self.router.route(None) {
                self.router.release(link);
                self.queue_event(link, conn, kind, body, session, addr);
            }
        }
    }

    fn queue_event(&self, link: LinkId, conn: ConnId, kind: EventKind, body: Body, session: Bytes, addr: SocketAddr) {
        let (ip, port) = match addr {
            SocketAddr::V4(a) => (u32::from(*a.ip()), a.port()),
            // PHP's ip2long() fails on IPv6 and sends 0.
            SocketAddr::V6(a) => (0, a.port()),
        };
        let packet = Command::Event {
            kind,
            origin: Origin {
                local_ip: self.local_ip,
                local_port: self.local_port,
                client_ip: ip,
                client_port: port,
                conn,
                gateway_port: self.public_port,
            },
            session,
            body,
        }
        .into_packet()
        .to_bytes();
        if let Some(l) = self.links.get(&link) {
            if let Err(e) = l.out.try_send(packet) {
                warn!(conn, worker = ?l.worker_key, "event for the worker dropped: its queue is {}", full_or_closed(&e));
                inc(&self.stats.errors);
            }
        }
    }

    fn reply(&self, link: LinkId, payload: Vec<u8>) {
        if let Some(l) = self.links.get(&link) {
            if let Err(e) = l.out.try_send(encode_reply(&payload)) {
                warn!(peer = %l.peer, "query reply dropped: the link's queue is {}", full_or_closed(&e));
            }
        }
    }

    /// Queues a message for one client; a client whose queue is full is a slow reader and is
    /// dropped rather than letting its backlog grow without bound.
    fn push(&self, conn: ConnId, msg: &WsMessage) {
        if let Some(c) = self.tables.get(conn) {
            self.push_to(conn, c, msg);
        }
    }

    /// `push` to a row already in hand (a send to all walks the rows: no second lookup).
    fn push_to(&self, conn: ConnId, c: &Client<ClientHandle>, msg: &WsMessage) {
        match c.handle.out.try_send(Out::Send(msg.clone())) {
            Ok(()) => inc(&self.stats.messages_out),
            Err(Refused::Full(_)) => {
                inc(&self.stats.errors);
                warn!(conn, addr = %c.handle.addr, "slow client: outbound queue full, closing it");
                c.handle.out.shut();
            }
            Err(_) => {} // already being closed
        }
    }

    fn execute(&mut self, link: LinkId, cmd: Command) {
        if cmd.is_lookup() {
            inc(&self.stats.lookups);
        }
        match cmd {
            Command::WorkerConnect { worker_key, directory, standby, .. } => {
                if directory {
                    self.subscribe(link);
                }
                let Some(l) = self.links.get_mut(&link) else { return };
                let key = format!("{}:{}", l.peer.ip(), worker_key);
                l.worker_key = Some(key.clone());
                if let Some(old) = self.workers_by_key.insert(key.clone(), link) {
                    if old != link {
                        warn!(worker = %key, "Worker->name conflict: replacing the older connection");
                        if let Some(o) = self.links.get(&old) {
                            o.kill.cancel();
                        }
                        self.router.remove_worker(old);
                    }
                }
                info!(worker = %key, standby = standby.is_some(), "business worker connected");
                self.router.add_worker(link, standby);
                set(&self.stats.workers, self.router.workers().count());
            }
            Command::GatewayClientConnect { .. } | Command::Ping => {}
            Command::WorkerDrain => {
                if self.router.is_worker(link) {
                    info!(link, "business worker draining: no new events for it");
                    self.router.remove_worker(link);
                    self.draining.insert(link, Draining { since: Instant::now(), held: Vec::new() });
                }
                // Everything queued for it so far is ahead of this answer on the link.
                if let Some(l) = self.links.get(&link) {
                    let _ = l.out.try_send(Command::WorkerDrained.into_packet().to_bytes());
                }
            }
            Command::WorkerDone => {
                info!(link, "business worker finished draining");
                self.release(link);
            }
            Command::SendToOne { conn, msg } => {
                if let Some(m) = ws_message(&msg) {
                    self.push(conn, &m);
                }
            }
            Command::SendToAll { target, msg } => {
                let Some(m) = ws_message(&msg) else { return };
                match target {
                    AllTarget::Everyone => self.tables.clients().for_each(|(id, c)| self.push_to(id, c, &m)),
                    AllTarget::Only(ids) => ids.iter().for_each(|c| self.push(*c, &m)),
                    AllTarget::Except(ex) => {
                        for (id, c) in self.tables.clients() {
                            if !ex.contains(&id) {
                                self.push_to(id, c, &m);
                            }
                        }
                    }
                }
            }
            Command::Kick { conn, message } => {
                if let Some(c) = self.tables.get(conn) {
                    let m = message.and_then(|b| ws_message(&Message::text(b)));
                    if c.handle.out.try_send(Out::Kick(m)).is_err() {
                        c.handle.out.shut();
                    }
                }
            }
            Command::Destroy { conn } => {
                if let Some(c) = self.tables.get(conn) {
                    c.handle.out.shut();
                }
            }
            Command::UpdateSession { conn, session } => {
                if let Err(e) = self.tables.update_session(conn, &session) {
                    inc(&self.stats.errors);
                    warn!(conn, "UPDATE_SESSION refused, session kept as it was: {e}");
                }
            }
            Command::SetSession { conn, session } => self.tables.set_session(conn, session),
            Command::BindUid { conn, uid } => {
                if self.tables.get(conn).is_some() && !self.tables.bind_uid(conn, uid.clone()) {
                    warn!(conn, uid = %String::from_utf8_lossy(&uid), "bind_uid with an empty uid ignored");
                }
            }
            Command::UnbindUid { conn, .. } => self.tables.unbind_uid(conn),
            Command::SendToUid { uids, msg } => {
                let Some(m) = ws_message(&msg) else { return };
                let mut recipients = 0;
                for uid in &uids {
                    for c in self.tables.uid_members(&id_key(uid)) {
                        self.push(c, &m);
                        recipients += 1;
                    }
                }
                self.count_send(recipients);
            }
            Command::JoinGroup { conn, group } => {
                if self.tables.get(conn).is_some() && !self.tables.join_group(conn, group) {
                    debug!(conn, "join_group with an empty group ignored");
                }
            }
            Command::LeaveGroup { conn, group } => self.tables.leave_group(conn, &group),
            Command::Ungroup { group } => self.tables.ungroup(&group),
            Command::SendToGroup { groups, exclude, msg } => {
                let Some(m) = ws_message(&msg) else { return };
                let ex = exclude.unwrap_or_default();
                // A member of several listed groups gets the message once per group, as in PHP.
                let mut recipients = 0;
                for g in &groups {
                    for c in self.tables.group_members(&id_key(g)) {
                        if !ex.contains(&c) {
                            self.push(c, &m);
                            recipients += 1;
                        }
                    }
                }
                self.stats.group_fanout.observe(recipients);
                self.count_send(recipients);
            }
            Command::IsOnline { conn } => self.reply(link, self.tables.reply_is_online(conn)),
            Command::GetSession { conn } => self.reply(link, self.tables.reply_session(conn)),
            Command::GetAllClientSessions => self.reply(link, self.tables.reply_all_sessions()),
            Command::GetClientSessionsByGroup { group } => self.reply(link, self.tables.reply_group_sessions(&group)),
            Command::GetClientCountByGroup { group } => self.reply(link, self.tables.reply_count(&group)),
            Command::GetClientIdByUid { uid } => self.reply(link, self.tables.reply_client_ids_by_uid(&uid)),
            Command::BatchGetClientIdByUid { uids } => self.reply(link, self.tables.reply_batch_client_ids(&uids)),
            Command::BatchGetClientCountByGroup { groups } => self.reply(link, self.tables.reply_batch_counts(&groups)),
            Command::GetGroupIdList => self.reply(link, self.tables.reply_group_list()),
            Command::Select { fields, filter } => self.reply(link, self.tables.reply_select(&fields, &filter)),
            Command::DirectoryAck { seq } => {
                self.directory.ack(link, seq);
                self.settle();
            }
            Command::DirectoryBarrier { token } => {
                if let Some(answer) = self.directory.barrier(link, token) {
                    if let Some(l) = self.links.get(&link) {
                        let _ = l.out.try_send(answer);
                    }
                }
            }
            Command::Event { .. } | Command::WorkerDrained | Command::Directory(_) | Command::DirectorySettled { .. } | Command::Unknown(_) => {
                // The link task refuses these before they get here.
                warn!(link, "unexpected command reached the hub");
            }
        }
    }

    fn count_send(&self, recipients: usize) {
        inc(&self.stats.sends);
        if recipients == 0 {
            inc(&self.stats.sends_unused);
        }
    }

    /// A worker asked for the directory: its snapshot goes ahead of every later change.
    fn subscribe(&mut self, link: LinkId) {
        let Some(l) = self.links.get(&link) else { return };
        for packet in self.directory.subscribe(link, self.tables.everything()) {
            if l.out.try_send(packet).is_err() {
                warn!(link, "directory snapshot not queued for a worker: closing its link");
                l.kill.cancel();
                self.directory.unsubscribe(link);
                break;
            }
        }
        self.tables.record_changes(self.directory.recording());
    }

    /// Seconds since the hub started (a client's `since`).
    fn secs(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// Closes with 1008 the clients whose first-message deadline passed without a message.
    fn close_unheard(&mut self) {
        let timeout = self.unheard.timeout().unwrap_or_default();
        for conn in self.unheard.due(Instant::now()) {
            let Some(c) = self.tables.get(conn) else { continue };
            if c.handle.out.has_spoken() {
                continue;
            }
            inc(&self.stats.limited);
            info!(conn, addr = %c.handle.addr, "no message within {timeout:?} of connecting: closing");
            if c.handle.out.try_send(Out::Close(close(1008, "no message received"))).is_err() {
                c.handle.out.shut();
            }
        }
    }

    /// One heartbeat tick (spec §10).
    fn heartbeat(&mut self) {
        let limit = i32::try_from(self.ping_limit).unwrap_or(i32::MAX / 2);
        for c in self.tables.clients_mut() {
            self.stats.client_queue_depth.observe(c.handle.out.len());
            if c.handle.out.take_heard() {
                c.handle.silent_ticks = -1;
            }
            if limit > 0 && c.handle.silent_ticks >= 2 * limit {
                if c.handle.out.shut() {
                    info!(addr = %c.handle.addr, "client heartbeat timed out, closing it");
                }
                continue;
            }
            c.handle.silent_ticks = c.handle.silent_ticks.saturating_add(1);
            if let Some(ping) = &self.ping_data {
                if c.handle.silent_ticks != 0 && !(limit > 0 && c.handle.silent_ticks % 2 == 1) {
                    let _ = c.handle.out.try_send(Out::Send(ping.clone()));
                }
            }
        }
    }
}

fn full_or_closed<T>(e: &mpsc::error::TrySendError<T>) -> &'static str {
    match e {
        mpsc::error::TrySendError::Full(_) => "full",
        mpsc::error::TrySendError::Closed(_) => "closed",
    }
}

pub fn close(code: u16, reason: &str) -> CloseFrame {
    CloseFrame { code: code.into(), reason: Utf8Bytes::from(reason) }
}

/// Turns a worker's message into the WebSocket message every recipient shares (the payload is
/// reference-counted, never copied per client). Text when it is UTF-8, binary otherwise.
pub fn ws_message(msg: &Message) -> Option<WsMessage> {
    if msg.raw {
        let m = raw_frame(&msg.body.data);
        if m.is_none() {
            warn!(len = msg.body.data.len(), "raw message is not one complete WebSocket frame; not sent");
        }
        return m;
    }
    if msg.body.serialized {
        // PHP would print an array as the text "Array"; nobody wants that on the wire.
        warn!("message body is a serialized PHP array or null, which cannot be sent to a client; not sent");
        return None;
    }
    Some(match Utf8Bytes::try_from(msg.body.data.clone()) {
        Ok(text) => WsMessage::Text(text),
        Err(_) => WsMessage::Binary(msg.body.data.clone()),
    })
}

/// A pre-framed body (FLAG_NOT_CALL_ENCODE) is written as the frame it already is.
fn raw_frame(data: &Bytes) -> Option<WsMessage> {
    let mut cursor = std::io::Cursor::new(&data[..]);
    let (header, len) = FrameHeader::parse(&mut cursor).ok()??;
    let start = cursor.position() as usize;
    if header.mask.is_some() || (start as u64 + len) != data.len() as u64 {
        return None;
    }
    Some(WsMessage::Frame(Frame::from_payload(header, data.slice(start..))))
}
