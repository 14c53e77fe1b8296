//! A business worker process: one link per gateway, one task per client.
//!
//! The register's address list says which gateways exist; a supervisor task per gateway keeps
//! a link to it (reconnecting with backoff while the gateway is listed). Every link's events go
//! to one dispatcher, which hands each client's events to that client's own task, so callbacks
//! for one client run in order and different clients never wait for each other.

use crate::api::{Api, Links};
use crate::events::{Context, Events, WebSocketRequest};
use crate::session::SessionSync;
use bytes::Bytes;
use futures_util::StreamExt;
use gateway::protocol::{Body, ClientId, Command, EventKind, Origin, PacketCodec};
use register::client::{discover_gateways, ClientConfig};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;
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
        }
    }
}

/// One client event on its way to the client's task.
struct ClientEvent {
    kind: EventKind,
    origin: Origin,
    session: Bytes,
    body: Body,
}

/// Runs a worker until `stop` resolves; then calls `on_worker_stop`.
pub async fn run<E: Events>(config: WorkerConfig, app: Arc<E>, stop: impl std::future::Future<Output = ()>) {
    let links: Arc<Links> = Arc::new(Links::default());
    let api = Api::for_worker(links.clone(), config.secret_key.clone());
    app.on_worker_start(&api).await;
    let (events_tx, events_rx) = mpsc::channel::<ClientEvent>(65_536);
    tokio::spawn(dispatch(events_rx, app.clone(), api.clone()));

    let mut gateways = discover_gateways(ClientConfig::new(config.registers.clone(), config.secret_key.clone()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut supervised = HashSet::<String>::new();
    info!(name = %config.name, index = config.index, "business worker started");
    tokio::pin!(stop);
    loop {
        let list = gateways.borrow_and_update().clone();
        for addr in list {
            if supervised.insert(addr.clone()) {
                let link = Link {
                    addr,
                    config: config.clone(),
                    links: links.clone(),
                    events: events_tx.clone(),
                    listed: gateways.clone(),
                    done: done_tx.clone(),
                };
                tokio::spawn(link.supervise());
            }
        }
        tokio::select! {
            changed = gateways.changed() => if changed.is_err() { break },
            Some(addr) = done_rx.recv() => { supervised.remove(&addr); }
            _ = &mut stop => break,
        }
    }
    info!("business worker stopping");
    app.on_worker_stop(&api).await;
}

/// Keeps one gateway link alive.
struct Link {
    addr: String,
    config: WorkerConfig,
    links: Arc<Links>,
    events: mpsc::Sender<ClientEvent>,
    listed: watch::Receiver<Vec<String>>,
    done: mpsc::UnboundedSender<String>,
}

impl Link {
    async fn supervise(self) {
        let mut delay = self.config.reconnect;
        loop {
            match TcpStream::connect(&self.addr).await {
                Ok(stream) => {
                    delay = self.config.reconnect;
                    info!(gateway = %self.addr, "connected to gateway");
                    self.serve(stream).await;
                    warn!(gateway = %self.addr, "lost gateway");
                }
                Err(e) => debug!(gateway = %self.addr, "cannot connect to gateway: {e}"),
            }
            // Like PHP, a gateway is retried only while the register still lists it.
            if !self.listed.borrow().contains(&self.addr) {
                let _ = self.done.send(self.addr.clone());
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.config.max_reconnect);
        }
    }

    async fn serve(&self, stream: TcpStream) {
        register::keepalive(&stream);
        let (read, write) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(100_000);
        let hello = Command::WorkerConnect {
            worker_key: format!("{}:{}", self.config.name, self.config.index),
            secret_key: self.config.secret_key.clone(),
        }
        .into_packet()
        .to_bytes();
        // The authentication is the first packet on the link, before any API command.
        if tx.send(hello).await.is_err() {
            return;
        }
        self.links.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(self.addr.clone(), tx.clone());
            m
        });
        drop(tx);
        let writer = tokio::spawn(async move { gateway::inner::write_queue(write, &mut rx).await });
        let mut packets = FramedRead::new(read, PacketCodec { max_len: self.config.max_packet });
        while let Some(next) = packets.next().await {
            let packet = match next {
                Ok(p) => p,
                Err(e) => {
                    warn!(gateway = %self.addr, "bad data from gateway, reconnecting: {e}");
                    break;
                }
            };
            match Command::from_packet(packet) {
                Ok(Command::Event { kind, origin, session, body }) => {
                    if self.events.send(ClientEvent { kind, origin, session, body }).await.is_err() {
                        break;
                    }
                }
                Ok(Command::Ping) => {}
                Ok(other) => warn!(gateway = %self.addr, "unexpected command from gateway ignored: {other:?}"),
                Err(e) => warn!(gateway = %self.addr, "undecodable packet from gateway ignored: {e}"),
            }
        }
        self.links.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(&self.addr);
            m
        });
        writer.abort();
    }
}

/// Routes each client's events to that client's task, starting one on first sight.
async fn dispatch<E: Events>(mut rx: mpsc::Receiver<ClientEvent>, app: Arc<E>, api: Api) {
    let mut clients: HashMap<ClientId, mpsc::UnboundedSender<ClientEvent>> = HashMap::new();
    while let Some(ev) = rx.recv().await {
        let id = ev.origin.client_id();
        let close = ev.kind == EventKind::Close;
        let ev = match clients.get(&id) {
            Some(tx) => match tx.send(ev) {
                Ok(()) => None,
                Err(mpsc::error::SendError(ev)) => Some(ev), // its task ended (a panicking callback)
            },
            None => Some(ev),
        };
        if let Some(ev) = ev {
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = tx.send(ev);
            tokio::spawn(client_task(id, rx, app.clone(), api.clone()));
            clients.insert(id, tx);
        }
        if close {
            clients.remove(&id);
        }
    }
}

async fn client_task<E: Events>(id: ClientId, mut rx: mpsc::UnboundedReceiver<ClientEvent>, app: Arc<E>, api: Api) {
    let mut sync = SessionSync::default();
    let mut local = None;
    while let Some(ev) = rx.recv().await {
        let session = sync.load(&api, &id, ev.kind, &ev.session).await;
        let mut before = session.clone();
        let mut ctx = Context {
            client_id: id,
            client_addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ev.origin.client_ip), ev.origin.client_port)),
            gateway_port: ev.origin.gateway_port,
            session,
            api: api.clone(),
            local: local.take(),
            saved: None,
        };
        match ev.kind {
            EventKind::Connect => app.on_connect(&mut ctx).await,
            EventKind::WebSocketConnect => {
                let req = WebSocketRequest::from_body(&ev.body.data);
                app.on_websocket_connect(&mut ctx, &req).await
            }
            EventKind::Message => app.on_message(&mut ctx, ev.body.data).await,
            EventKind::Close => app.on_close(&mut ctx).await,
        }
        if let Some((saved, crc)) = ctx.saved.take() {
            before = saved;
            sync.saved(crc);
        }
        sync.store(&api, &id, ev.kind, &before, &ctx.session).await;
        local = ctx.local.take();
        if ev.kind == EventKind::Close {
            return;
        }
    }
}
