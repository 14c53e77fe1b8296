//! The Gateway API: everything application code can ask of the gateways, typed and async.
//!
//! Inside a worker, commands travel on the worker's persistent links; outside one
//! ([`Api::remote`]) the gateway list comes from the register, as in PHP's GatewayClient.
//! Queries always use pooled query connections (see `query`). Each method says which inner
//! command it sends; semantics follow spec §12.

use crate::directory::{Directory, SETTLE_WAIT};
use crate::query::{Pool, QueryError};
use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use gateway::protocol::php::{self, Key, Value};
use gateway::protocol::{AllTarget, ClientId, Command, Id, InvalidClientId, Message, SelectWhere};
use register::client::{fetch_gateways, ClientConfig, LookupError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The persistent links of a worker, by gateway inner address.
pub type Links = ArcSwap<HashMap<SocketAddrV4, mpsc::Sender<Bytes>>>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    ClientId(#[from] InvalidClientId),
    #[error("not connected to gateway {0}")]
    NoGateway(SocketAddrV4),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("gateway {0} sent a reply that is not PHP-serialized data")]
    BadReply(SocketAddrV4),
    #[error("a {0} must not be empty (or \"0\")")]
    Empty(&'static str),
    /// One failure answered to every caller that shared the call (a roster round).
    #[error(transparent)]
    Shared(Arc<ApiError>),
}

pub type Result<T> = std::result::Result<T, ApiError>;

enum Mode {
    /// Inside a worker: its links, and what each gateway said it holds.
    Worker(Arc<Links>, Arc<Directory>),
    Remote {
        register: ClientConfig,
        cache: Mutex<Option<Listed>>,
    },
}

/// A register's list as a remote API last fetched it: the text, to parse (and log what is
/// left out) only when it changes, not on every fetch; and the addresses taken from it.
struct Listed {
    at: Instant,
    text: Vec<String>,
    addresses: Vec<SocketAddrV4>,
}

struct Inner {
    mode: Mode,
    pool: Pool,
}

/// A cheap, clonable handle on the Gateway API.
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

/// How long a remote API trusts a gateway list from the register (PHP caches ~1 s).
const ADDRESS_CACHE: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer `query_all` waits for a gateway once another has answered: replies of the
/// same query from gateways on one network come within milliseconds of each other.
const STRAGGLER: Duration = Duration::from_secs(1);

fn ids<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<Id> {
    names.into_iter().map(Id::from).collect()
}

fn not_empty(name: &str, what: &'static str) -> Result<()> {
    if name.is_empty() || name == "0" {
        Err(ApiError::Empty(what))
    } else {
        Ok(())
    }
}

fn parse(addr: SocketAddrV4, payload: &[u8]) -> Result<Value> {
    Value::unserialize(payload).map_err(|_| ApiError::BadReply(addr))
}

fn int_of(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Bool(b) => *b as i64,
        Value::Str(s) => std::str::from_utf8(s).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
        _ => 0,
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn key_text(k: &Key) -> String {
    String::from_utf8_lossy(&k.to_bytes()).into_owned()
}

/// Groups client ids by the gateway that holds them: gateway address → connection ids.
fn by_gateway(client_ids: &[&str]) -> Result<BTreeMap<SocketAddrV4, Vec<u32>>> {
    let mut out: BTreeMap<SocketAddrV4, Vec<u32>> = BTreeMap::new();
    for c in client_ids {
        let id: ClientId = c.parse()?;
        out.entry(id.gateway()).or_default().push(id.conn);
    }
    Ok(out)
}

/// The gateways' inner addresses in a register's list. A client id holds its gateway's
/// address in 4 bytes and a port (GatewayWorker's format), so only an IPv4 address and port
/// can be reached by one: any other (a host name, IPv6) is left out, and logged.
pub(crate) fn inner_addresses(list: &[String]) -> Vec<SocketAddrV4> {
    list.iter()
        .filter_map(|a| match a.parse() {
            Ok(addr) => Some(addr),
            Err(e) => {
                tracing::warn!(gateway = %a, "a gateway registered an inner address that is not IPv4:port, left out: {e}");
                None
            }
        })
        .collect()
}

/// One gateway's reply of sessions keyed by connection id, each session a slice of the reply
/// (empty where it is not a string), read without building the array (`php::int_keyed`).
fn session_bytes(gateway: SocketAddrV4, payload: Bytes) -> Result<Vec<(ClientId, Bytes)>> {
    let Some(rows) = php::int_keyed(&payload) else {
        // Not an array: a valid value of another kind lists nothing, as `by_conn` has it.
        return parse(gateway, &payload).map(|_| Vec::new());
    };
    let sessions = rows.into_iter().map(|(c, s)| match s {
        php::Field::Str(b) => (c, payload.slice_ref(b)),
        _ => (c, Bytes::new()),
    });
    Ok(client_ids(gateway, sessions))
}

/// A connection [`Api::group_members`] found: its session as the gateway keeps it and the
/// groups it was found in, slices of the reply (nothing built; a storm lists thousands).
#[derive(Debug, Clone)]
pub struct Member {
    /// Empty where the gateway has none.
    pub session: Bytes,
    groups: Groups,
}

#[derive(Debug, Clone)]
enum Groups {
    /// A select's `groups`: the serialized array of every group it is in.
    Listed(Bytes),
    /// The one group listed (CMD_GET_CLIENT_SESSIONS_BY_GROUP lists its members alone).
    Only(Bytes),
}

impl Member {
    /// A member as a select row gives it: `groups` is the serialized array of its groups.
    pub fn new(session: Bytes, groups: Bytes) -> Member {
        Member { session, groups: Groups::Listed(groups) }
    }

    /// Whether the connection was in `group` when the gateway answered.
    pub fn in_group(&self, group: &str) -> bool {
        match &self.groups {
            Groups::Listed(raw) => php::array_has_str(raw, group.as_bytes()),
            Groups::Only(g) => g == group.as_bytes(),
        }
    }
}

/// One gateway's reply to a select of `groups` and `session`, read as [`session_bytes`] reads
/// its listing: rows keyed by connection id, fields sliced out of the reply.
fn members(gateway: SocketAddrV4, payload: Bytes) -> Result<Vec<(ClientId, Member)>> {
    let Some(rows) = php::int_keyed_raw(&payload) else {
        return parse(gateway, &payload).map(|_| Vec::new());
    };
    let read = |row: &[u8]| {
        let index = php::Index::of(row)?;
        let session = match index.fields(row, ["session"]) {
            [Some(php::Field::Str(b))] => payload.slice_ref(b),
            _ => Bytes::new(),
        };
        Some(Member::new(session, index.raw(row, "groups").map_or_else(Bytes::new, |g| payload.slice_ref(g))))
    };
    // A row that is not an array is no connection a select could give: left out, as a key
    // that is no connection id is.
    Ok(client_ids(gateway, rows.into_iter().filter_map(|(c, row)| Some((c, read(row)?)))))
}

/// Reads one gateway's reply keyed by connection id into client ids.
fn by_conn(gateway: SocketAddrV4, v: Value) -> Vec<(ClientId, Value)> {
    let Value::Array(rows) = v else { return Vec::new() };
    client_ids(gateway, rows.into_iter().filter_map(|(k, v)| if let Key::Int(c) = k { Some((c, v)) } else { None }))
}

/// Rows keyed by a connection id of `gateway` as rows keyed by client id (a key that is no
/// connection id is left out).
fn client_ids<T>(gateway: SocketAddrV4, rows: impl Iterator<Item = (i64, T)>) -> Vec<(ClientId, T)> {
    rows.filter_map(|(c, v)| Some((ClientId::new(gateway, u32::try_from(c).ok()?), v))).collect()
}

impl Api {
    pub(crate) fn for_worker(links: Arc<Links>, directory: Arc<Directory>, secret_key: String) -> Api {
        Api { inner: Arc::new(Inner { mode: Mode::Worker(links, directory), pool: Pool::new(secret_key, TIMEOUT) }) }
    }

    /// The API from outside a worker: gateways are looked up in the registers.
    pub fn remote(registers: Vec<String>, secret_key: String) -> Api {
        let register = ClientConfig::new(registers, secret_key.clone());
        Api { inner: Arc::new(Inner { mode: Mode::Remote { register, cache: Mutex::new(None) }, pool: Pool::new(secret_key, TIMEOUT) }) }
    }

    /// The gateway inner addresses this API talks to.
    pub async fn gateways(&self) -> Result<Vec<SocketAddrV4>> {
        match &self.inner.mode {
            Mode::Worker(links, _) => Ok(links.load().keys().copied().collect()),
            Mode::Remote { register, cache } => {
                if let Some(fresh) =
                    cache.lock().ok().and_then(|c| c.as_ref().filter(|l| l.at.elapsed() < ADDRESS_CACHE).map(|l| l.addresses.clone()))
                {
                    return Ok(fresh);
                }
                let text = fetch_gateways(register, Duration::from_secs(3)).await?;
                let Ok(mut c) = cache.lock() else { return Ok(inner_addresses(&text)) };
                let addresses = match c.as_ref() {
                    Some(last) if last.text == text => last.addresses.clone(),
                    _ => inner_addresses(&text),
                };
                *c = Some(Listed { at: Instant::now(), text, addresses: addresses.clone() });
                Ok(addresses)
            }
        }
    }

    /// Inside a worker, a client on a gateway the worker has no link to is offline (as in PHP);
    /// outside one, every gateway is worth asking.
    fn linked(&self, gateway: SocketAddrV4) -> bool {
        match &self.inner.mode {
            Mode::Worker(links, _) => links.load().contains_key(&gateway),
            Mode::Remote { .. } => true,
        }
    }

    async fn send(&self, gateway: SocketAddrV4, cmd: Command) -> Result<()> {
        let packet = cmd.into_packet().to_bytes();
        self.send_bytes(gateway, packet).await
    }

    async fn send_bytes(&self, gateway: SocketAddrV4, packet: Bytes) -> Result<()> {
        match &self.inner.mode {
            Mode::Worker(links, _) => {
                let tx = links.load().get(&gateway).cloned().ok_or(ApiError::NoGateway(gateway))?;
                tx.send(packet).await.map_err(|_| ApiError::NoGateway(gateway))
            }
            Mode::Remote { .. } => Ok(self.inner.pool.command(gateway, packet).await?),
        }
    }

    /// The same packet to every gateway, encoded once.
    async fn broadcast(&self, cmd: Command) -> Result<()> {
        self.send_to_each(&self.gateways().await?, cmd).await
    }

    /// The same packet to each of `gateways`, encoded once, sent side by side.
    async fn send_to_each(&self, gateways: &[SocketAddrV4], cmd: Command) -> Result<()> {
        let packet = cmd.into_packet().to_bytes();
        join_all(gateways.iter().map(|g| self.send_bytes(*g, packet.clone()))).await.into_iter().collect()
    }

    /// The gateways a message to `uids` or `groups` must reach: inside a worker, those whose
    /// directory has a member (and every gateway without one); outside, every gateway.
    async fn routed(&self, uids: &[Id], groups: &[Id]) -> Result<Vec<SocketAddrV4>> {
        let gateways = self.gateways().await?;
        match &self.inner.mode {
            // One gateway: nothing to leave out (and so nothing for a bind to wait for).
            Mode::Worker(..) if gateways.len() < 2 => Ok(gateways),
            Mode::Worker(_, directory) => {
                let keys = |ids: &[Id]| ids.iter().map(gateway::tables::id_key).collect::<Vec<_>>();
                Ok(directory.route(&gateways, &keys(uids), &keys(groups)))
            }
            Mode::Remote { .. } => Ok(gateways),
        }
    }

    /// Sends binds and joins to `gateway` and, where it keeps a directory, a DIRECTORY_BARRIER
    /// in the same write (so nothing from another task comes between them), then waits for its
    /// DIRECTORY_SETTLED: every worker then knows where these uids and groups are, so whatever
    /// this worker does next, and whatever that leads any worker to send, is routed there.
    async fn bind_settled(&self, gateway: SocketAddrV4, cmds: Vec<Command>) -> Result<()> {
        let mut packet = bytes::BytesMut::new();
        for c in cmds {
            packet.extend_from_slice(&c.into_packet().to_bytes());
        }
        let barrier = match &self.inner.mode {
            Mode::Worker(links, directory) if links.load().len() > 1 && directory.knows(gateway) => Some(directory),
            _ => None,
        };
        let Some(directory) = barrier else { return self.send_bytes(gateway, packet.freeze()).await };
        let (token, settled) = directory.barrier();
        packet.extend_from_slice(&Command::DirectoryBarrier { token }.into_packet().to_bytes());
        if let Err(e) = self.send_bytes(gateway, packet.freeze()).await {
            directory.abandon(token);
            return Err(e);
        }
        if tokio::time::timeout(SETTLE_WAIT, settled).await.is_err() {
            directory.abandon(token);
            tracing::warn!(%gateway, "no DIRECTORY_SETTLED within {SETTLE_WAIT:?}; going on");
        }
        Ok(())
    }

    async fn query(&self, gateway: SocketAddrV4, cmd: Command) -> Result<Value> {
        let payload = self.inner.pool.query(gateway, cmd.into_packet().to_bytes()).await?;
        parse(gateway, &payload)
    }

    /// Asks every gateway at once and collects `(gateway, reply)` ([`Self::query_each`]).
    async fn query_all(&self, cmd: Command) -> Result<Vec<(SocketAddrV4, Value)>> {
        self.query_on(&self.gateways().await?, cmd).await
    }

    /// One query to each of `gateways`, each reply parsed.
    async fn query_on(&self, gateways: &[SocketAddrV4], cmd: Command) -> Result<Vec<(SocketAddrV4, Value)>> {
        self.query_each(gateways, cmd, |g, payload| parse(g, &payload)).await
    }

    /// The gateways a lookup by uids or groups asks: those that may hold one of them
    /// ([`Self::routed`], the same gateways a send to them reaches). A gateway holding none
    /// answers nothing, and asking every gateway made a goim heartbeat's room count (and every
    /// room's member list at a join) one query per gateway of the cluster. A name PHP calls
    /// empty is never held, and `""` counts every client: those go to every gateway.
    async fn lookup_targets(&self, uids: &[Id], groups: &[Id]) -> Result<Vec<SocketAddrV4>> {
        let empty = |ids: &[Id]| ids.iter().any(|i| matches!(i, Id::Int(0)) || matches!(i, Id::Str(s) if gateway::tables::php_empty(s.as_bytes())));
        if empty(uids) || empty(groups) {
            return self.gateways().await;
        }
        self.routed(uids, groups).await
    }

    /// A lookup by uids or groups, asked of [`Self::lookup_targets`].
    async fn query_routed(&self, uids: &[Id], groups: &[Id], cmd: Command) -> Result<Vec<(SocketAddrV4, Value)>> {
        self.query_on(&self.lookup_targets(uids, groups).await?, cmd).await
    }

    /// One query to each of `gateways`, encoded once, side by side, each reply read by `read`
    /// (a reply it refuses fails the call). An unreachable gateway is left out, as a gateway
    /// without a link is (its clients cannot be reached either), rather than holding up the
    /// answer: one that has not answered [`STRAGGLER`] after the others have is given up on and
    /// rests (`query::REST`). Any other failure fails the whole call.
    async fn query_each<T>(
        &self,
        gateways: &[SocketAddrV4],
        cmd: Command,
        read: impl Fn(SocketAddrV4, Bytes) -> Result<T>,
    ) -> Result<Vec<(SocketAddrV4, T)>> {
        let packet = cmd.into_packet().to_bytes();
        let mut pending: FuturesUnordered<_> = gateways
            .iter()
            .map(|g| {
                let packet = packet.clone();
                async move { (*g, self.inner.pool.query(*g, packet).await) }
            })
            .collect();
        let (mut out, mut settled, mut deadline) = (Vec::new(), HashSet::new(), None);
        loop {
            let next = match deadline {
                Some(at) => match tokio::time::timeout_at(at, pending.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => pending.next().await,
            };
            let Some((g, reply)) = next else { break };
            settled.insert(g);
            match reply {
                Ok(payload) => {
                    out.push((g, read(g, payload)?));
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + STRAGGLER);
                }
                Err(e) if e.unreachable() => tracing::debug!("left out of a query to every gateway: {e}"),
                Err(e) => return Err(e.into()),
            }
        }
        for g in gateways.iter().filter(|g| !settled.contains(g)) {
            self.inner.pool.rest(*g);
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- sending

    /// CMD_SEND_TO_ONE.
    pub async fn send_to_client(&self, client_id: &str, msg: impl Into<Bytes>) -> Result<()> {
        self.send_to_client_id(&client_id.parse()?, msg).await
    }

    /// [`Self::send_to_client`] by a parsed id.
    pub async fn send_to_client_id(&self, id: &ClientId, msg: impl Into<Bytes>) -> Result<()> {
        self.send_to_conn(id.gateway(), id.conn, msg).await
    }

    /// To connection `conn` of the gateway linked as `gateway`: a worker answering its current
    /// client knows the link the event came over (printing the client id's address to find it
    /// was ≈ 2 000 instructions, 2.5 % of a room message in the worker, docs/BENCHMARKS.md).
    pub(crate) async fn send_to_conn(&self, gateway: SocketAddrV4, conn: u32, msg: impl Into<Bytes>) -> Result<()> {
        self.send(gateway, Command::SendToOne { conn, msg: Message::text(msg) }).await
    }

    /// CMD_SEND_TO_ALL to every client.
    pub async fn send_to_all(&self, msg: impl Into<Bytes>) -> Result<()> {
        self.broadcast(Command::SendToAll { target: AllTarget::Everyone, msg: Message::text(msg) }).await
    }

    /// CMD_SEND_TO_ALL to the listed clients only, one packet per gateway.
    pub async fn send_to_clients(&self, client_ids: &[&str], msg: impl Into<Bytes>) -> Result<()> {
        let msg = Message::text(msg);
        for (g, conns) in by_gateway(client_ids)? {
            self.send(g, Command::SendToAll { target: AllTarget::Only(conns), msg: msg.clone() }).await?;
        }
        Ok(())
    }

    /// CMD_SEND_TO_ALL to everyone except the listed clients.
    pub async fn send_to_all_except(&self, exclude: &[&str], msg: impl Into<Bytes>) -> Result<()> {
        let msg = Message::text(msg);
        let mut per_gateway = by_gateway(exclude)?;
        for g in self.gateways().await? {
            let target = match per_gateway.remove(&g) {
                Some(conns) => AllTarget::Except(conns),
                None => AllTarget::Everyone,
            };
            self.send(g, Command::SendToAll { target, msg: msg.clone() }).await?;
        }
        Ok(())
    }

    /// CMD_SEND_TO_UID to every gateway that holds one of the uids (every gateway outside a
    /// worker, or without a directory): every connection bound to any of them.
    pub async fn send_to_uid(&self, uids: &[&str], msg: impl Into<Bytes>) -> Result<()> {
        let uids = ids(uids.iter().copied());
        let gateways = self.routed(&uids, &[]).await?;
        self.send_to_each(&gateways, Command::SendToUid { uids, msg: Message::text(msg) }).await
    }

    /// CMD_SEND_TO_GROUP to every gateway that holds a member (every gateway outside a worker,
    /// or without a directory), optionally excluding some clients.
    pub async fn send_to_group(&self, groups: &[&str], msg: impl Into<Bytes>, exclude: &[&str]) -> Result<()> {
        if groups.is_empty() {
            return Err(ApiError::Empty("group list"));
        }
        let msg = Message::text(msg);
        let groups = ids(groups.iter().copied());
        let gateways = self.routed(&[], &groups).await?;
        if exclude.is_empty() {
            return self.send_to_each(&gateways, Command::SendToGroup { groups, exclude: None, msg }).await;
        }
        let mut per_gateway = by_gateway(exclude)?;
        for g in gateways {
            let exclude = per_gateway.remove(&g);
            self.send(g, Command::SendToGroup { groups: groups.clone(), exclude, msg: msg.clone() }).await?;
        }
        Ok(())
    }

    /// CMD_KICK: sends `msg` if given, then closes the client.
    pub async fn close_client(&self, client_id: &str, msg: Option<Bytes>) -> Result<()> {
        let id: ClientId = client_id.parse()?;
        self.send(id.gateway(), Command::Kick { conn: id.conn, message: msg }).await
    }

    /// CMD_DESTROY: closes the client at once, dropping anything still queued for it.
    pub async fn destroy_client(&self, client_id: &str) -> Result<()> {
        let id: ClientId = client_id.parse()?;
        self.send(id.gateway(), Command::Destroy { conn: id.conn }).await
    }

    // ---------------------------------------------------------------- uids and groups

    /// CMD_BIND_UID. Where the gateway keeps a directory, returns once every worker knows the
    /// gateway holds `uid` (one round trip more), so no later send to it misses this connection.
    pub async fn bind_uid(&self, client_id: &str, uid: &str) -> Result<()> {
        not_empty(uid, "uid")?;
        let id: ClientId = client_id.parse()?;
        self.bind_settled(id.gateway(), vec![Command::BindUid { conn: id.conn, uid: Bytes::copy_from_slice(uid.as_bytes()) }]).await
    }

    /// CMD_BIND_UID (when `uid` is given) and CMD_JOIN_GROUP for each group, in this order, with
    /// one wait for every worker to know instead of one per command (see `bind_uid`).
    pub async fn bind_and_join(&self, client_id: &str, uid: Option<&str>, groups: &[&str]) -> Result<()> {
        let id: ClientId = client_id.parse()?;
        let mut cmds = Vec::with_capacity(groups.len() + 1);
        if let Some(uid) = uid {
            not_empty(uid, "uid")?;
            cmds.push(Command::BindUid { conn: id.conn, uid: Bytes::copy_from_slice(uid.as_bytes()) });
        }
        for g in groups {
            not_empty(g, "group")?;
            cmds.push(Command::JoinGroup { conn: id.conn, group: Bytes::copy_from_slice(g.as_bytes()) });
        }
        self.bind_settled(id.gateway(), cmds).await
    }

    /// CMD_UNBIND_UID.
    pub async fn unbind_uid(&self, client_id: &str, uid: &str) -> Result<()> {
        let id: ClientId = client_id.parse()?;
        self.send(id.gateway(), Command::UnbindUid { conn: id.conn, uid: Bytes::copy_from_slice(uid.as_bytes()) }).await
    }

    /// CMD_JOIN_GROUP. Returns once every worker knows, as `bind_uid` does.
    pub async fn join_group(&self, client_id: &str, group: &str) -> Result<()> {
        not_empty(group, "group")?;
        let id: ClientId = client_id.parse()?;
        self.bind_settled(id.gateway(), vec![Command::JoinGroup { conn: id.conn, group: Bytes::copy_from_slice(group.as_bytes()) }]).await
    }

    /// CMD_LEAVE_GROUP.
    pub async fn leave_group(&self, client_id: &str, group: &str) -> Result<()> {
        not_empty(group, "group")?;
        let id: ClientId = client_id.parse()?;
        self.send(id.gateway(), Command::LeaveGroup { conn: id.conn, group: Bytes::copy_from_slice(group.as_bytes()) }).await
    }

    /// CMD_UNGROUP on every gateway: the group is dissolved, members stay connected.
    pub async fn ungroup(&self, group: &str) -> Result<()> {
        not_empty(group, "group")?;
        self.broadcast(Command::Ungroup { group: Bytes::copy_from_slice(group.as_bytes()) }).await
    }

    // ---------------------------------------------------------------- queries

    /// CMD_IS_ONLINE on the client's gateway. A gateway that cannot be reached counts as offline.
    pub async fn is_online(&self, client_id: &str) -> Result<bool> {
        let id: ClientId = client_id.parse()?;
        let g = id.gateway();
        if !self.linked(g) {
            return Ok(false);
        }
        match self.query(g, Command::IsOnline { conn: id.conn }).await {
            Ok(v) => Ok(int_of(&v) == 1),
            // A gateway that cannot be reached holds no client that can be.
            Err(ApiError::Query(e)) if e.unreachable() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The groups of some connections of one gateway, as it has them now (CMD_SELECT on that
    /// gateway only); a connection it does not hold is absent.
    ///
    /// Commands travel on the worker's link and queries on pooled connections, so a query
    /// can overtake a `join_group` sent just before it; asking this until the group shows is
    /// how a caller knows its join has been applied before it lists the group.
    pub async fn groups_of(&self, gateway: SocketAddrV4, conns: &[u32]) -> Result<HashMap<u32, Vec<String>>> {
        let filter = SelectWhere { connection_ids: Some(conns.to_vec()), ..SelectWhere::default() };
        let cmd = Command::Select { fields: vec!["groups".to_string()], filter };
        let reply = self.query(gateway, cmd).await?;
        let mut out = HashMap::new();
        for (id, row) in by_conn(gateway, reply) {
            let groups = row.as_array().and_then(|r| r.get(&Key::Str(b"groups".to_vec()))).and_then(Value::as_array);
            out.insert(id.conn, groups.into_iter().flatten().filter_map(|(_, g)| text_of(g)).collect());
        }
        Ok(out)
    }

    /// CMD_GET_CLIENT_ID_BY_UID on every gateway that may hold it.
    pub async fn get_client_id_by_uid(&self, uid: &str) -> Result<Vec<ClientId>> {
        let cmd = Command::GetClientIdByUid { uid: Bytes::copy_from_slice(uid.as_bytes()) };
        let replies = self.query_routed(&[Id::from(uid)], &[], cmd).await?;
        let mut out = Vec::new();
        for (addr, v) in replies {
            for (_, c) in v.as_array().into_iter().flatten() {
                if let Ok(conn) = u32::try_from(int_of(c)) {
                    out.push(ClientId::new(addr, conn));
                }
            }
        }
        Ok(out)
    }

    pub async fn is_uid_online(&self, uid: &str) -> Result<bool> {
        Ok(!self.get_client_id_by_uid(uid).await?.is_empty())
    }

    /// CMD_SELECT with `where connection_id`, asked of the client's gateway only.
    pub async fn get_uid_by_client_id(&self, client_id: &str) -> Result<Option<String>> {
        let id: ClientId = client_id.parse()?;
        let filter = SelectWhere { connection_ids: Some(vec![id.conn]), ..SelectWhere::default() };
        let v = self.query(id.gateway(), Command::Select { fields: vec!["uid".into()], filter }).await?;
        Ok(v.as_array()
            .and_then(|rows| rows.get(&Key::Int(id.conn as i64)))
            .and_then(|row| row.as_array())
            .and_then(|row| row.get(&Key::Str(b"uid".to_vec())))
            .and_then(text_of))
    }

    /// CMD_GET_CLIENT_COUNT_BY_GROUP summed over the gateways that may hold it; `""` counts
    /// every client, on every gateway.
    pub async fn get_client_count_by_group(&self, group: &str) -> Result<usize> {
        let cmd = Command::GetClientCountByGroup { group: Bytes::copy_from_slice(group.as_bytes()) };
        let replies = self.query_routed(&[], &[Id::from(group)], cmd).await?;
        Ok(replies.iter().map(|(_, v)| int_of(v).max(0) as usize).sum())
    }

    pub async fn get_all_client_count(&self) -> Result<usize> {
        self.get_client_count_by_group("").await
    }

    async fn select(&self, fields: &[&str], filter: SelectWhere) -> Result<Vec<(ClientId, php::Array)>> {
        // By groups or uids alone, only where they may be; by connection ids, or everyone,
        // everywhere.
        let gateways = if filter.by_name() {
            self.lookup_targets(filter.uids.as_deref().unwrap_or_default(), filter.groups.as_deref().unwrap_or_default()).await?
        } else {
            self.gateways().await?
        };
        let cmd = Command::Select { fields: fields.iter().map(|f| f.to_string()).collect(), filter };
        let replies = self.query_on(&gateways, cmd).await?;
        let mut out = Vec::new();
        for (g, v) in replies {
            for (id, row) in by_conn(g, v) {
                if let Value::Array(a) = row {
                    out.push((id, a));
                }
            }
        }
        Ok(out)
    }

    fn group_filter(group: &str) -> SelectWhere {
        SelectWhere { groups: Some(vec![Id::from(group)]), ..SelectWhere::default() }
    }

    /// Client ids in a group (CMD_SELECT `where groups`).
    pub async fn get_client_id_list_by_group(&self, group: &str) -> Result<Vec<ClientId>> {
        Ok(self.select(&["uid"], Self::group_filter(group)).await?.into_iter().map(|(id, _)| id).collect())
    }

    pub async fn get_all_client_id_list(&self) -> Result<Vec<ClientId>> {
        Ok(self.select(&["uid"], SelectWhere::default()).await?.into_iter().map(|(id, _)| id).collect())
    }

    fn uids_of(rows: Vec<(ClientId, php::Array)>) -> Vec<String> {
        let mut uids: Vec<String> = rows.into_iter().filter_map(|(_, row)| row.get(&Key::Str(b"uid".to_vec())).and_then(text_of)).collect();
        uids.sort();
        uids.dedup();
        uids
    }

    /// Distinct uids bound in a group.
    pub async fn get_uid_list_by_group(&self, group: &str) -> Result<Vec<String>> {
        Ok(Self::uids_of(self.select(&["uid"], Self::group_filter(group)).await?))
    }

    pub async fn get_uid_count_by_group(&self, group: &str) -> Result<usize> {
        Ok(self.get_uid_list_by_group(group).await?.len())
    }

    pub async fn get_all_uid_list(&self) -> Result<Vec<String>> {
        Ok(Self::uids_of(self.select(&["uid"], SelectWhere::default()).await?))
    }

    pub async fn get_all_uid_count(&self) -> Result<usize> {
        Ok(self.get_all_uid_list().await?.len())
    }

    /// CMD_GET_GROUP_ID_LIST on every gateway, merged.
    pub async fn get_all_group_id_list(&self) -> Result<Vec<String>> {
        let mut groups: Vec<String> = self
            .query_all(Command::GetGroupIdList)
            .await?
            .iter()
            .flat_map(|(_, v)| v.as_array().into_iter().flatten().filter_map(|(_, g)| text_of(g)).collect::<Vec<_>>())
            .collect();
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    fn sessions_of(replies: Vec<(SocketAddrV4, Value)>) -> BTreeMap<ClientId, Option<php::Array>> {
        let mut out = BTreeMap::new();
        for (g, v) in replies {
            for (id, s) in by_conn(g, v) {
                let session = match s {
                    Value::Str(bytes) => match Value::unserialize(&bytes) {
                        Ok(Value::Array(a)) => Some(a),
                        _ => None,
                    },
                    _ => None,
                };
                out.insert(id, session);
            }
        }
        out
    }

    /// CMD_GET_CLIENT_SESSIONS_BY_GROUP on every gateway that may hold it.
    pub async fn get_client_sessions_by_group(&self, group: &str) -> Result<BTreeMap<ClientId, Option<php::Array>>> {
        let cmd = Command::GetClientSessionsByGroup { group: Bytes::copy_from_slice(group.as_bytes()) };
        Ok(Self::sessions_of(self.query_routed(&[], &[Id::from(group)], cmd).await?))
    }

    /// CMD_GET_CLIENT_SESSIONS_BY_GROUP on every gateway that may hold it, each session
    /// serialized as the gateway keeps it (empty: none). For a caller that reads a few fields of each with
    /// `php::fields`: unserializing every member's whole session was most of what a join to a
    /// room, or an agent's login, cost the worker.
    ///
    /// The sessions are slices of the gateways' replies, not copies (a storm of joins lists a
    /// room's members at every join), so one kept keeps its whole reply: copy what is kept.
    pub async fn get_client_session_bytes_by_group(&self, group: &str) -> Result<BTreeMap<ClientId, Bytes>> {
        self.sessions_by_group(group, |session| session).await
    }

    /// CMD_GET_CLIENT_SESSIONS_BY_GROUP on every gateway that may hold `group`, each member's
    /// session made into what the caller keeps as it is read (no second map to convert).
    async fn sessions_by_group<T>(&self, group: &str, keep: impl Fn(Bytes) -> T) -> Result<BTreeMap<ClientId, T>> {
        let cmd = Command::GetClientSessionsByGroup { group: Bytes::copy_from_slice(group.as_bytes()) };
        let mut out = BTreeMap::new();
        let gateways = self.lookup_targets(&[], &[Id::from(group)]).await?;
        for (_, rows) in self.query_each(&gateways, cmd, session_bytes).await? {
            // In reply order, a later row for the same client replacing an earlier one, as
            // unserialize would have it.
            out.extend(rows.into_iter().map(|(c, session)| (c, keep(session))));
        }
        Ok(out)
    }

    /// The members of `groups`, each with its session, from every gateway that may hold one of
    /// them: several groups in one query per gateway (the roster lists every bot with a login
    /// waiting at once), each member with the groups it is in, so a caller can tell whose it
    /// is. Several groups are a CMD_SELECT of `groups` and `session`; a single one is
    /// CMD_GET_CLIENT_SESSIONS_BY_GROUP, whose reply is the sessions alone (half a select's
    /// bytes, and a storm of one bot's logins lists thousands at each round). Rows are keyed as
    /// `get_client_session_bytes_by_group` keys them and are slices of the replies as its
    /// sessions are: copy what is kept.
    pub async fn group_members(&self, groups: &[String]) -> Result<BTreeMap<ClientId, Member>> {
        for g in groups {
            not_empty(g, "group")?;
        }
        if let [one] = groups {
            let only = Bytes::copy_from_slice(one.as_bytes());
            return self.sessions_by_group(one, |session| Member { session, groups: Groups::Only(only.clone()) }).await;
        }
        let ids = ids(groups.iter().map(String::as_str));
        let filter = SelectWhere { groups: Some(ids.clone()), ..SelectWhere::default() };
        let cmd = Command::Select { fields: vec!["groups".to_string(), "session".to_string()], filter };
        let gateways = self.lookup_targets(&[], &ids).await?;
        let mut out = BTreeMap::new();
        for (_, rows) in self.query_each(&gateways, cmd, members).await? {
            out.extend(rows);
        }
        Ok(out)
    }

    /// CMD_GET_ALL_CLIENT_SESSIONS on every gateway.
    pub async fn get_all_client_sessions(&self) -> Result<BTreeMap<ClientId, Option<php::Array>>> {
        Ok(Self::sessions_of(self.query_all(Command::GetAllClientSessions).await?))
    }

    /// CMD_GET_SESSION_BY_CLIENT_ID: `None` for an unknown client, an empty array for a client
    /// without a session.
    pub async fn get_session(&self, client_id: &str) -> Result<Option<php::Array>> {
        let id: ClientId = client_id.parse()?;
        let payload = self.raw_session(&id).await?;
        Ok(match Value::unserialize(&payload) {
            Ok(Value::Array(a)) => Some(a),
            _ => None,
        })
    }

    /// The session bytes as the gateway stores them.
    pub(crate) async fn raw_session(&self, id: &ClientId) -> Result<Bytes> {
        let g = id.gateway();
        if !self.linked(g) {
            return Ok(Bytes::from_static(b"N;"));
        }
        Ok(self.inner.pool.query(g, Command::GetSession { conn: id.conn }.into_packet().to_bytes()).await?)
    }

    /// CMD_SET_SESSION: replaces the session.
    pub async fn set_session(&self, client_id: &str, session: &php::Array) -> Result<()> {
        let id: ClientId = client_id.parse()?;
        self.set_raw_session(&id, Bytes::from(Value::Array(session.clone()).serialize())).await
    }

    pub(crate) async fn set_raw_session(&self, id: &ClientId, bytes: Bytes) -> Result<()> {
        self.send(id.gateway(), Command::SetSession { conn: id.conn, session: bytes }).await
    }

    /// CMD_UPDATE_SESSION: merges into the session (PHP's `array_replace_recursive`).
    pub async fn update_session(&self, client_id: &str, update: &php::Array) -> Result<()> {
        let id: ClientId = client_id.parse()?;
        let bytes = Bytes::from(Value::Array(update.clone()).serialize());
        self.send(id.gateway(), Command::UpdateSession { conn: id.conn, session: bytes }).await
    }

    /// Every uid's client ids in one round (CMD_BATCH_GET_CLIENT_ID_BY_UID).
    pub async fn batch_get_client_id_by_uid(&self, uids: &[&str]) -> Result<BTreeMap<String, Vec<ClientId>>> {
        let names = ids(uids.iter().copied());
        let gateways = self.lookup_targets(&names, &[]).await?;
        let replies = self.query_on(&gateways, Command::BatchGetClientIdByUid { uids: names }).await?;
        let mut out: BTreeMap<String, Vec<ClientId>> = uids.iter().map(|u| (u.to_string(), Vec::new())).collect();
        for (addr, v) in replies {
            for (k, list) in v.as_array().into_iter().flatten() {
                let entry = out.entry(key_text(k)).or_default();
                for (_, c) in list.as_array().into_iter().flatten() {
                    if let Ok(conn) = u32::try_from(int_of(c)) {
                        entry.push(ClientId::new(addr, conn));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Counts for several groups in one round (CMD_BATCH_GET_CLIENT_COUNT_BY_GROUP).
    pub async fn batch_get_client_count_by_group(&self, groups: &[&str]) -> Result<BTreeMap<String, usize>> {
        let names = ids(groups.iter().copied());
        let gateways = self.lookup_targets(&[], &names).await?;
        let replies = self.query_on(&gateways, Command::BatchGetClientCountByGroup { groups: names }).await?;
        let mut out: BTreeMap<String, usize> = groups.iter().map(|g| (g.to_string(), 0)).collect();
        for (_, v) in replies {
            for (k, n) in v.as_array().into_iter().flatten() {
                *out.entry(key_text(k)).or_default() += int_of(n).max(0) as usize;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ipv4_inner_addresses_are_taken_from_a_register_list() {
        let list = ["127.0.0.1:2900", "gw.local:2900", "[::1]:2900", "10.0.0.7:2901", "10.0.0.7"].map(String::from);
        let want: Vec<SocketAddrV4> = ["127.0.0.1:2900", "10.0.0.7:2901"].iter().map(|a| a.parse().expect("address")).collect();
        assert_eq!(inner_addresses(&list), want);
    }

    #[test]
    fn client_ids_are_grouped_by_their_gateway() {
        let a: SocketAddrV4 = "10.0.0.1:2900".parse().expect("address");
        let b: SocketAddrV4 = "10.0.0.2:2900".parse().expect("address");
        let ids = [ClientId::new(a, 1), ClientId::new(b, 2), ClientId::new(a, 3)].map(|c| c.to_string());
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(by_gateway(&refs).expect("valid ids"), BTreeMap::from([(a, vec![1, 3]), (b, vec![2])]));
        assert!(by_gateway(&["not a client id"]).is_err());
    }
}
