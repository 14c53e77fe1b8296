//! A business worker process: one link per gateway, each client's events in order (`clients`).
//!
//! The register's address list says which gateways exist; a supervisor task per gateway keeps
//! a link to it (reconnecting with backoff while the gateway is listed). Every link's events go
//! to one dispatcher (`clients::dispatch`), so callbacks for one client run in order and
//! different clients never wait for each other.

use crate::api::{inner_addresses, Api, Links};
use crate::clients::{dispatch, ClientEvent, Dispatch};
use crate::directory::Directory;
use crate::events::Events;
use crate::stats::Stats;
use bytes::Bytes;
use futures_util::StreamExt;
use gateway::protocol::{Command, PacketCodec};
use register::client::{discover_gateways, ClientConfig};
use register::stats::set;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Part of the worker key the gateways see (`<ip>:<name>:<index>`); keep it unique per host.
    pub name: String,
    pub index: u32,
    pub registers: Vec<String>,
    pub secret_key: String,
    pub max_packet: usize,
    /// First reconnect delay to a lost gateway; doubles up to `max_reconnect`.
    pub reconnect: Duration,
    pub max_reconnect: Duration,
    /// Ask the gateways for their directories and send to a uid or group only where it is held.
    pub directory: bool,
    /// Ask the gateways to keep one worker of the set active and this one standing by while
    /// another has run longer (`"standby":true`; gateway/src/router.rs says when and why).
    pub standby: bool,
    /// When this worker started (Unix ms): how the gateways tell which of a standby set has
    /// run longest, the same answer in every gateway whatever order the links came in.
    pub started_ms: u64,
    /// Counters for `/metrics`; shared with whoever serves them.
    pub stats: Arc<Stats>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: "BusinessWorker".into(),
            index: std::process::id(),
            registers: vec!["127.0.0.1:1236".into()],
            secret_key: String::new(),
            max_packet: gateway::protocol::DEFAULT_MAX_PACKET,
            reconnect: Duration::from_secs(1),
            max_reconnect: Duration::from_secs(10),
            directory: true,
            standby: false,
            started_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            stats: Arc::default(),
        }
    }
}

/// Where a worker is in its life. Stopping is a hand-over: `Draining` asks every gateway to
/// stop sending and to hold this worker's clients' events; `Finishing` tells them everything
/// taken is done, so the held events go to the other workers (nothing lost, nothing twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining,
    Finishing,
}

/// Counts work taken and not yet finished: events from the moment a link reads them until
/// their callback and session write are done, plus [`WorkGuard`]s held by the application.
#[derive(Debug, Default)]
pub struct Inflight(AtomicUsize);

impl Inflight {
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn done(&self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }

    pub(crate) fn idle(&self) -> bool {
        self.0.load(Ordering::SeqCst) == 0
    }
}

/// Keeps a worker from finishing its hand-over while the application still has work running
/// outside a callback (an upstream call answering later, say). See `Context::work_guard`.
pub struct WorkGuard(Arc<Inflight>);

impl WorkGuard {
    pub(crate) fn new(inflight: &Arc<Inflight>) -> WorkGuard {
        inflight.add();
        WorkGuard(inflight.clone())
    }
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        self.0.done();
    }
}

/// How long a stopping worker waits for gateways to acknowledge its drain (a PHP gateway
/// never does) and for its work to finish.
const DRAIN_ACK_WAIT: Duration = Duration::from_secs(5);
const FINISH_WAIT: Duration = Duration::from_secs(30);

/// Runs a worker until `stop` resolves, hands its clients over, then calls `on_worker_stop`.
pub async fn run<E: Events>(config: WorkerConfig, app: Arc<E>, stop: impl std::future::Future<Output = ()>) {
    let links: Arc<Links> = Arc::new(Links::default());
    let inflight = Arc::new(Inflight::default());
    let directory = Arc::new(Directory::default());
    let api = Api::for_worker(links.clone(), directory.clone(), config.secret_key.clone());
    app.on_worker_start(&api).await;
    let (events_tx, events_rx) = mpsc::channel::<Dispatch>(65_536);
    tokio::spawn(dispatch(events_rx, app.clone(), api.clone(), inflight.clone(), config.stats.clone()));

    let mut gateways = discover_gateways(ClientConfig::new(config.registers.clone(), config.secret_key.clone()));
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<SocketAddrV4>();
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<SocketAddrV4>();
    let mut supervised = HashSet::<SocketAddrV4>::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut list_seen = false;
    let mut announced = false;
    let mut ready_check = tokio::time::interval(Duration::from_millis(100));
    info!(name = %config.name, index = config.index, "business worker started");
    tokio::pin!(stop);
    // The register's list, parsed when it changes (not on every turn: an address left out is
    // logged once a change).
    let mut listed = Vec::new();
    let mut list_changed = true;
    loop {
        if std::mem::take(&mut list_changed) {
            let list = gateways.borrow_and_update().clone();
            list_seen |= list.is_some();
            listed = inner_addresses(&list.unwrap_or_default());
        }
        for &addr in &listed {
            if supervised.insert(addr) {
                let link = Link {
                    addr,
                    config: config.clone(),
                    links: links.clone(),
                    directory: directory.clone(),
                    events: events_tx.clone(),
                    listed: gateways.clone(),
                    done: done_tx.clone(),
                    phase: phase_rx.clone(),
                    acks: ack_tx.clone(),
                    inflight: inflight.clone(),
                };
                tasks.spawn(link.supervise());
            }
        }
        tokio::select! {
            changed = gateways.changed() => {
                if changed.is_err() {
                    break;
                }
                list_changed = true;
            }
            Some(addr) = done_rx.recv() => { supervised.remove(&addr); }
            _ = ready_check.tick(), if !announced => {
                if list_seen && listed.iter().all(|g| links.load().contains_key(g)) {
                    announced = true;
                    crate::ready::announce(&json_ready(&config, listed.len()));
                }
            }
            _ = &mut stop => break,
        }
    }

    // The hand-over (see `Phase`).
    let linked: HashSet<SocketAddrV4> = links.load().keys().copied().collect();
    info!(gateways = linked.len(), "business worker stopping: draining");
    let _ = phase_tx.send(Phase::Draining);
    let mut acked = HashSet::new();
    let deadline = tokio::time::Instant::now() + DRAIN_ACK_WAIT;
    while !linked.is_subset(&acked) {
        match tokio::time::timeout_at(deadline, ack_rx.recv()).await {
            Ok(Some(addr)) => {
                acked.insert(addr);
            }
            _ => {
                warn!(missing = ?linked.difference(&acked).collect::<Vec<_>>(), "gateways did not acknowledge the drain");
                break;
            }
        }
    }
    let deadline = tokio::time::Instant::now() + FINISH_WAIT;
    while !inflight.idle() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !inflight.idle() {
        warn!("stopping with work still in flight after {FINISH_WAIT:?}");
    }
    let _ = phase_tx.send(Phase::Finishing);
    let _ = tokio::time::timeout(DRAIN_ACK_WAIT, async { while tasks.join_next().await.is_some() {} }).await;
    info!("business worker stopped");
    app.on_worker_stop(&api).await;
}

fn json_ready(config: &WorkerConfig, gateways: usize) -> String {
    format!("{{\"role\":\"business\",\"name\":\"{}\",\"index\":{},\"gateways\":{gateways}}}", config.name, config.index)
}

/// Keeps one gateway link alive.
struct Link {
    /// The gateway's inner address as the register lists it; given to every event read over
    /// this link (`ClientEvent::gateway`).
    addr: SocketAddrV4,
    config: WorkerConfig,
    links: Arc<Links>,
    directory: Arc<Directory>,
    events: mpsc::Sender<Dispatch>,
    listed: watch::Receiver<Option<Vec<String>>>,
    done: mpsc::UnboundedSender<SocketAddrV4>,
    phase: watch::Receiver<Phase>,
    acks: mpsc::UnboundedSender<SocketAddrV4>,
    inflight: Arc<Inflight>,
}

impl Link {
    async fn supervise(mut self) {
        let mut delay = self.config.reconnect;
        loop {
            if *self.phase.borrow() != Phase::Running {
                return;
            }
            match TcpStream::connect(self.addr).await {
                Ok(stream) => {
                    delay = self.config.reconnect;
                    info!(gateway = %self.addr, "connected to gateway");
                    if self.serve(stream).await {
                        return;
                    }
                    warn!(gateway = %self.addr, "lost gateway");
                }
                Err(e) => debug!(gateway = %self.addr, "cannot connect to gateway: {e}"),
            }
            // Like PHP, a gateway is retried only while the register still lists it.
            if !self.listed.borrow().as_ref().is_some_and(|l| l.iter().any(|a| a.parse() == Ok(self.addr))) {
                let _ = self.done.send(self.addr);
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.config.max_reconnect);
        }
    }

    /// Serves one connection. True when the link ended because the worker finished.
    async fn serve(&mut self, stream: TcpStream) -> bool {
        register::keepalive(&stream);
        let (read, write) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(100_000);
        let hello = Command::WorkerConnect {
            worker_key: format!("{}:{}", self.config.name, self.config.index),
            secret_key: self.config.secret_key.clone(),
            directory: self.config.directory,
            standby: self.config.standby.then_some(self.config.started_ms),
        }
        .into_packet()
        .to_bytes();
        // The authentication is the first packet on the link, before any API command.
        if tx.send(hello).await.is_err() {
            return false;
        }
        self.publish(Some(tx.clone()));
        let mut writer = tokio::spawn(async move { gateway::inner::write_queue(write, &mut rx).await });
        let mut packets = FramedRead::new(read, PacketCodec { max_len: self.config.max_packet });
        let mut drain_sent = false;
        // A DIRECTORY applied but not yet acknowledged (more packets were already read).
        let mut unacked: Option<u64> = None;
        let finished = loop {
            let phase = *self.phase.borrow_and_update();
            if phase == Phase::Draining && !drain_sent {
                drain_sent = true;
                let _ = tx.send(Command::WorkerDrain.into_packet().to_bytes()).await;
            }
            if phase == Phase::Finishing {
                let _ = tx.send(Command::WorkerDone.into_packet().to_bytes()).await;
                break true;
            }
            tokio::select! {
                changed = self.phase.changed() => if changed.is_err() { break false },
                next = packets.next() => {
                    let packet = match next {
                        Some(Ok(p)) => p,
                        Some(Err(e)) => {
                            warn!(gateway = %self.addr, "bad data from gateway, reconnecting: {e}");
                            break false;
                        }
                        None => break false,
                    };
                    match Command::from_packet(packet) {
                        Ok(Command::Event { kind, origin, session, body }) => {
                            self.inflight.add();
                            let gateway = self.addr;
                            if self.events.send(Dispatch::Event(ClientEvent { kind, origin, session, body, gateway, read_at: Instant::now() })).await.is_err() {
                                self.inflight.done();
                                break false;
                            }
                        }
                        Ok(Command::WorkerDrained) => {
                            let _ = self.acks.send(self.addr);
                        }
                        Ok(Command::Directory(delta)) => {
                            // Applied before it is acknowledged: the gateway's barriers rely on it.
                            // With more already read, one acknowledgement after the last will do.
                            let seq = delta.seq;
                            self.directory.apply(self.addr, delta);
                            if packets.read_buffer().is_empty() {
                                let _ = tx.send(Command::DirectoryAck { seq }.into_packet().to_bytes()).await;
                                unacked = None;
                            } else {
                                unacked = Some(seq);
                            }
                        }
                        Ok(Command::DirectorySettled { token }) => self.directory.settled(token),
                        Ok(Command::Ping) => {}
                        Ok(other) => warn!(gateway = %self.addr, "unexpected command from gateway ignored: {other:?}"),
                        Err(e) => warn!(gateway = %self.addr, "undecodable packet from gateway ignored: {e}"),
                    }
                    if packets.read_buffer().is_empty() {
                        if let Some(seq) = unacked.take() {
                            let _ = tx.send(Command::DirectoryAck { seq }.into_packet().to_bytes()).await;
                        }
                    }
                }
            }
        };
        self.publish(None);
        self.directory.forget(self.addr);
        let _ = self.events.send(Dispatch::GatewayLost(self.addr)).await;
        drop(tx);
        if finished {
            // Let everything queued (the last session writes, then WORKER_DONE) reach the gateway.
            let _ = tokio::time::timeout(DRAIN_ACK_WAIT, &mut writer).await;
        }
        writer.abort();
        finished
    }

    /// Adds or removes this link in the table the API sends through.
    fn publish(&self, tx: Option<mpsc::Sender<Bytes>>) {
        self.links.rcu(|m| {
            let mut m = HashMap::clone(m);
            match &tx {
                Some(tx) => m.insert(self.addr, tx.clone()),
                None => m.remove(&self.addr),
            };
            m
        });
        set(&self.config.stats.gateways, self.links.load().len());
    }
}
