//! Presence: which agents of a bot are online, and telling the others when one comes or goes.
//!
//! Both are shaped for the login storm (every agent of a big bot logging in at once after an
//! outage): the obvious way — list the bot's sessions on every gateway for each login, push
//! one `login_push` per login to every agent — costs n listings of n sessions and n² frames.
//!
//! * [`Roster`] coalesces listings: a caller needs a list *taken after it asked* (after its own
//!   join, so two agents logging in at once always learn of each other), and every caller
//!   waiting while one listing runs shares the next one. A storm of n logins costs as many
//!   listings as fit in its duration, not n. Listings of different bots running at once are
//!   one query per gateway (`Lister`): a burst of n logins to n bots costs as many queries
//!   as fit in its duration too.
//! * [`Joins`] is an actor per gateway that confirms logins' joins, one query per round for
//!   every login waiting (see below for why a login waits).
//! * [`Announcer`] sends each bot's presence changes in order, from a task that runs only while
//!   the bot has changes waiting (an idle bot costs its map entry). Agents that asked
//!   for it at login (`"presence":"batch"`) get every change of a tick in one `presence_push`
//!   frame, and those that asked for `"presence":"compact"` the same as one `agents_push` of
//!   rows (`[id, name, 1|0]`, a quarter of the bytes: in a storm, the pushes are most of what
//!   every agent receives); the others get the contract's one `login_push`/`logout_push` per
//!   change. The first change after a quiet tick goes out at once, so a lone login is not
//!   delayed. [`Form`] is which of the three an agent asked for.
//! * A lone agent tells nobody. A login whose listing (taken once its join is confirmed) holds
//!   no other agent connection has nobody to tell: anyone joining later lists it. Its change
//!   waits in the bot's sender for that verdict ([`Audience`]) and is dropped on "nobody"; a
//!   tick holding other changes too goes out at once, as before, so a storm never waits for
//!   a listing. A logout whose listing holds nobody else is not sent either. Each change was
//!   three group sends (one per form): with them, a lone agent's connection cost the worker
//!   and the gateway a fifth more instructions (docs/BENCHMARKS.md, session 35), and a bot
//!   with one agent online is the usual case on a box of many small companies.
//!
//! Why the join is confirmed first: commands travel on the worker's link and queries on other
//! connections, so a listing can overtake the caller's own `join_group`. Once each agent's join
//! is known applied before its listing starts, of two agents logging in at once the later one
//! lists the earlier, and the earlier gets the later's push (sent after the later's join, so
//! after the earlier's join reached its gateway).

use crate::who::Who;
use business::{Api, ApiError, ClientId};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// How long changes gather before the next `presence_push` (after one was just sent).
const TICK: Duration = Duration::from_millis(25);
/// How long a login waits for its own join to be applied before listing anyway.
const JOIN_WAIT: Duration = Duration::from_secs(3);
/// Pause between two rounds of join confirmations on one gateway.
const ROUND: Duration = Duration::from_millis(2);

/// One agent connection found in a listing.
#[derive(Debug, Clone)]
pub struct Online {
    pub client: ClientId,
    pub id: String,
    pub name: String,
    /// When its token expires (None: agent auth is off).
    pub exp: Option<u64>,
}

/// How an agent is told of the bot's agents: its login answer's list and the pushes after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The contract's: `customer_list`, then one `login_push`/`logout_push` per change.
    Single,
    /// `customer_list`, then a tick's changes in one `presence_push` (each change as above).
    Batch,
    /// `agents` rows `[id, name, 1]`, then a tick's changes in one `agents_push` of rows
    /// (`1` came, `0` went). In a storm of n agents each receives n rows whatever the form;
    /// a row is a quarter of a change's bytes.
    Compact,
}

impl Form {
    /// The login's (or goim `auth`'s) `presence` field.
    pub fn parse(field: Option<&Value>) -> Result<Form, &'static str> {
        match field {
            None | Some(Value::Null) => Ok(Form::Single),
            Some(Value::String(s)) if s == "single" => Ok(Form::Single),
            Some(Value::String(s)) if s == "batch" => Ok(Form::Batch),
            Some(Value::String(s)) if s == "compact" => Ok(Form::Compact),
            Some(_) => Err("presence must be \"single\", \"batch\" or \"compact\""),
        }
    }

    /// The group of the bot's agents that asked for this form: the announcer sends each its
    /// frames, and an agent logging in again leaves every one before joining its new form's.
    pub fn group(self, bid: &str) -> String {
        match self {
            Form::Single => crate::keys::presence_single_group(bid),
            Form::Batch => crate::keys::presence_batch_group(bid),
            Form::Compact => crate::keys::presence_compact_group(bid),
        }
    }

    pub const ALL: [Form; 3] = [Form::Single, Form::Batch, Form::Compact];
}

/// A listing of a bot's agent connections, and what is derived from it once.
#[derive(Debug)]
pub struct Snapshot {
    /// The ticket counter's value when the listing started.
    started: u64,
    pub connections: Vec<Online>,
    agents: OnceLock<Vec<(String, String)>>,
    customer_list: OnceLock<Box<RawValue>>,
    rows: OnceLock<Box<RawValue>>,
}

/// A `customer_list`: `[{"customer_id","customer_name","status":1}, ...]`.
/// Written straight from the names, not through a `Value` per agent: in a storm each listing
/// is thousands of agents.
pub fn customer_list<'a>(agents: impl Iterator<Item = (&'a str, &'a str)>) -> Box<RawValue> {
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        customer_id: &'a str,
        customer_name: &'a str,
        status: u8,
    }
    let list: Vec<Entry<'_>> = agents.map(|(customer_id, customer_name)| Entry { customer_id, customer_name, status: 1 }).collect();
    serde_json::value::to_raw_value(&list).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Compact rows: `[["a7","Ann",1], ...]`, 1 for online (a login's list, a came change), 0 for
/// gone.
pub fn rows<'a>(agents: impl Iterator<Item = (&'a str, &'a str, u8)>) -> Box<RawValue> {
    let list: Vec<(&str, &str, u8)> = agents.collect();
    serde_json::value::to_raw_value(&list).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

impl Snapshot {
    /// `(customer_id, customer_name)` of every agent online, each once, in listing order.
    pub fn agents(&self) -> &[(String, String)] {
        self.agents.get_or_init(|| {
            let mut seen = HashSet::new();
            self.connections.iter().filter(|o| seen.insert(o.id.as_str())).map(|o| (o.id.clone(), o.name.clone())).collect()
        })
    }

    /// The login reply's `customer_list`, serialized once for every login that shares it
    /// (in a storm, hundreds of kilobytes per login).
    pub fn customer_list(&self) -> &RawValue {
        self.customer_list.get_or_init(|| customer_list(self.agents().iter().map(|(i, n)| (i.as_str(), n.as_str()))))
    }

    /// The same agents as compact rows, for logins that asked for `"presence":"compact"`.
    pub fn rows(&self) -> &RawValue {
        self.rows.get_or_init(|| rows(self.agents().iter().map(|(i, n)| (i.as_str(), n.as_str(), 1))))
    }

    /// Whether agent `id` has a connection here other than `except`.
    pub fn has_agent_besides(&self, id: &str, except: ClientId) -> bool {
        self.connections.iter().any(|o| o.id == id && o.client != except)
    }

    /// Whether any agent connection here is not `except`: someone to tell of its change.
    pub fn has_anyone_besides(&self, except: ClientId) -> bool {
        self.connections.iter().any(|o| o.client != except)
    }
}

/// Coalesced listings of one bot's agents.
#[derive(Default)]
struct Listing {
    /// Held while a listing runs; holds the newest one while callers that may share it wait.
    last: tokio::sync::Mutex<Option<Arc<Snapshot>>>,
    /// Callers between asking and being answered. The last one out drops the listing: any
    /// later caller asks after it started, so it could never be shared again, and kept it held
    /// a bot's every agent and its login's `customer_list` for as long as the bot was quiet
    /// (a third of an idle worker's heap after a login burst; docs/BENCHMARKS.md).
    callers: AtomicUsize,
}

/// The entry of a bot (or gateway) in one of the actors' maps, made by `make` the first time.
/// The key is copied only then: every login and every presence change comes here.
fn get_or_make<K, Q, V>(map: &Mutex<HashMap<K, V>>, key: &Q, make: impl FnOnce() -> V) -> V
where
    K: Borrow<Q> + Eq + Hash,
    Q: ToOwned<Owned = K> + Eq + Hash + ?Sized,
    V: Clone,
{
    let mut map = locked(map);
    if let Some(v) = map.get(key) {
        return v.clone();
    }
    let v = make();
    map.insert(key.to_owned(), v.clone());
    v
}

/// A call of `Roster::list` from asking to answered (or given up), in `Listing::callers`.
struct Caller<'a>(&'a Listing);

impl<'a> Caller<'a> {
    fn new(listing: &'a Listing) -> Caller<'a> {
        listing.callers.fetch_add(1, Ordering::SeqCst);
        Caller(listing)
    }
}

impl Drop for Caller<'_> {
    /// The last caller out drops the listing. It has let the listing's lock go by now (or
    /// never had it); if another caller holds it meanwhile, that one is counted, and drops it.
    fn drop(&mut self) {
        if self.0.callers.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Ok(mut last) = self.0.last.try_lock() {
                *last = None;
            }
        }
    }
}

/// Listings of every bot's agents (see the module doc).
#[derive(Default)]
pub struct Roster {
    tickets: AtomicU64,
    bots: Mutex<HashMap<String, Arc<Listing>>>,
    lister: Lister,
}

impl Roster {
    /// Agent connections of bot `bid`, listed after this call began.
    pub async fn list(&self, api: &Api, bid: &str) -> Result<Arc<Snapshot>, ApiError> {
        let listing = get_or_make(&self.bots, bid, Arc::default);
        // Counted before the ticket is taken: a listing that could answer this call starts
        // after both, so it is not dropped before this call has had it.
        let _caller = Caller::new(&listing);
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst);
        let mut last = listing.last.lock().await;
        self.answer(api, bid, ticket, &mut last).await
    }

    /// With the bot's listing held: the newest one if it started after `ticket`, else a new one.
    async fn answer(&self, api: &Api, bid: &str, ticket: u64, last: &mut Option<Arc<Snapshot>>) -> Result<Arc<Snapshot>, ApiError> {
        if let Some(s) = last.as_ref().filter(|s| s.started > ticket) {
            return Ok(s.clone());
        }
        let started = self.tickets.fetch_add(1, Ordering::SeqCst);
        let connections = self.lister.list(api, bid).await?;
        let snapshot = Arc::new(Snapshot { started, connections, agents: OnceLock::new(), customer_list: OnceLock::new(), rows: OnceLock::new() });
        *last = Some(snapshot.clone());
        Ok(snapshot)
    }
}

/// Bots listed in one round at most: the rest wait for the next. A round's reply holds every
/// agent connection of its bots.
const ROUND_BOTS: usize = 256;

/// Agent connections of a bot, or why they could not be listed (shared by a round's bots).
type Listed = Result<Vec<Online>, Arc<ApiError>>;

/// A bot's listing waiting for its round.
struct Ask {
    bid: String,
    answer: oneshot::Sender<Listed>,
}

/// The listings that bots start at the same time, taken together: an actor per worker that
/// lists, in rounds, every bot whose listing started since the last round began, with one
/// query per gateway. Why: in a burst of logins to many bots (a box of many companies after a
/// restart) each listing was a query round trip of its own, a fifth of a login's CPU in the
/// worker and more in the gateway. A bot has one listing running at a time (`Roster`), so a
/// storm of one bot's logins is a round of one bot each time, as before.
#[derive(Default)]
struct Lister {
    asks: Mutex<Option<mpsc::UnboundedSender<Ask>>>,
}

impl Lister {
    /// Agent connections of bot `bid`, listed after this call began: a round starts after
    /// every ask it answers was made.
    async fn list(&self, api: &Api, bid: &str) -> Result<Vec<Online>, ApiError> {
        let (answer, answered) = oneshot::channel();
        {
            let mut asks = locked(&self.asks);
            let tx = asks.get_or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(list_loop(api.clone(), rx));
                tx
            });
            // Not sent: the actor is gone, and so is `answer` (seen below).
            let _ = tx.send(Ask { bid: bid.to_string(), answer });
        }
        match answered.await {
            Ok(listed) => listed.map_err(ApiError::Shared),
            Err(_) => {
                // The actor ends only with the runtime: the next call starts another, and this
                // one lists alone.
                *locked(&self.asks) = None;
                Ok(round(api, &[bid]).await?.remove(bid).unwrap_or_default())
            }
        }
    }
}

async fn list_loop(api: Api, mut asks: mpsc::UnboundedReceiver<Ask>) {
    while let Some(first) = asks.recv().await {
        let mut waiting: HashMap<String, Vec<oneshot::Sender<Listed>>> = HashMap::new();
        waiting.entry(first.bid).or_default().push(first.answer);
        while waiting.len() < ROUND_BOTS {
            let Ok(a) = asks.try_recv() else { break };
            waiting.entry(a.bid).or_default().push(a.answer);
        }
        let bids: Vec<&str> = waiting.keys().map(String::as_str).collect();
        match round(&api, &bids).await {
            Ok(mut found) => {
                for (bid, answers) in waiting {
                    let connections = found.remove(&bid).unwrap_or_default();
                    for a in answers {
                        let _ = a.send(Ok(connections.clone()));
                    }
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for a in waiting.into_values().flatten() {
                    let _ = a.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One round: the agent connections of each of `bids`, with one query per gateway.
async fn round(api: &Api, bids: &[&str]) -> Result<HashMap<String, Vec<Online>>, ApiError> {
    let groups: Vec<String> = bids.iter().map(|b| crate::keys::bot_group(b)).collect();
    Ok(listed(bids, &api.group_members(&groups).await?))
}

/// Each bot's agent connections among a round's members: a connection counts for bot `b` only
/// if it is in `b`'s group and its session says it is an agent of `b` (a member of another
/// bot's group, or a session of another bot, is never listed as `b`'s).
fn listed(bids: &[&str], members: &BTreeMap<ClientId, business::Member>) -> HashMap<String, Vec<Online>> {
    let mut out: HashMap<String, (String, Vec<Online>)> = bids.iter().map(|b| (b.to_string(), (crate::keys::bot_group(b), Vec::new()))).collect();
    for (client, m) in members {
        let (Who::Agent { bid, id, name }, exp) = Who::from_session_bytes(&m.session) else { continue };
        let Some((group, connections)) = out.get_mut(&bid) else { continue };
        if m.in_group(group) {
            connections.push(Online { client: *client, id, name, exp });
        }
    }
    out.into_iter().map(|(bid, (_, connections))| (bid, connections)).collect()
}

/// A login waiting for its join to show on its gateway.
struct JoinWait {
    conn: u32,
    group: String,
    since: tokio::time::Instant,
    /// `true`: the gateway has it in the group.
    done: oneshot::Sender<bool>,
}

/// One actor per gateway confirming joins (see the module doc): every round asks the gateway
/// once about every connection still waiting, so a storm of logins costs a query per round,
/// not per login.
#[derive(Default)]
pub struct Joins {
    gateways: Mutex<HashMap<SocketAddrV4, mpsc::UnboundedSender<JoinWait>>>,
}

impl Joins {
    /// Returns once `client`'s gateway has it in `group` (`true`), or after `JOIN_WAIT` or
    /// when that cannot be known (`false`, logged).
    pub async fn joined(&self, api: &Api, client: ClientId, group: &str) -> bool {
        let (done, wait) = oneshot::channel();
        let w = JoinWait { conn: client.conn, group: group.to_string(), since: tokio::time::Instant::now(), done };
        let tx = get_or_make(&self.gateways, &client.gateway(), || {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(confirm_loop(api.clone(), client.gateway(), rx));
            tx
        });
        // The actor says why it gave up; only its absence is reported here.
        let answer = if tx.send(w).is_ok() { wait.await.ok() } else { None };
        if answer.is_none() {
            warn!(client = %client, "join confirmation unavailable: listing anyway");
        }
        answer.unwrap_or(false)
    }
}

async fn confirm_loop(api: Api, gateway: SocketAddrV4, mut rx: mpsc::UnboundedReceiver<JoinWait>) {
    let mut waiting: Vec<JoinWait> = Vec::new();
    loop {
        if waiting.is_empty() {
            match rx.recv().await {
                Some(w) => waiting.push(w),
                None => return,
            }
        }
        while let Ok(w) = rx.try_recv() {
            waiting.push(w);
        }
        let conns: Vec<u32> = waiting.iter().map(|w| w.conn).collect();
        match api.groups_of(gateway, &conns).await {
            Ok(groups) => {
                let mut still = Vec::new();
                for w in waiting.drain(..) {
                    let applied = groups.get(&w.conn).is_some_and(|gs| gs.contains(&w.group));
                    if !applied && w.since.elapsed() < JOIN_WAIT {
                        still.push(w);
                        continue;
                    }
                    if !applied {
                        warn!(gateway = %gateway, conn = w.conn, group = %w.group, "join not applied after {JOIN_WAIT:?}: listing anyway");
                    }
                    let _ = w.done.send(applied);
                }
                waiting = still;
            }
            Err(e) => {
                warn!(gateway = %gateway, "cannot confirm joins ({e}): listing anyway");
                for w in waiting.drain(..) {
                    let _ = w.done.send(false);
                }
            }
        }
        if !waiting.is_empty() {
            tokio::time::sleep(ROUND).await;
        }
    }
}

/// A presence change, as the contract's push names it.
#[derive(Debug)]
pub struct Change {
    /// `login_push` or `logout_push`.
    pub method: &'static str,
    pub id: String,
    pub name: String,
    pub timestamp: i64,
    /// The connection that caused it, which its own single push skips.
    pub client: Option<ClientId>,
    /// Whether anyone is there to hear of it, once known (a login's; see the module doc).
    pub audience: Option<Audience>,
}

/// Whether a login has anyone to tell, given once its listing is in ([`audience`]).
#[derive(Debug)]
pub struct Audience(oneshot::Receiver<bool>);

/// The login's side of its [`Audience`].
pub struct Verdict(oneshot::Sender<bool>);

/// A verdict to give and the audience that waits for it.
pub fn audience() -> (Verdict, Audience) {
    let (tx, rx) = oneshot::channel();
    (Verdict(tx), Audience(rx))
}

impl Verdict {
    /// `anyone`: the login's listing holds another agent connection, or its join was not
    /// confirmed (so the listing proves nothing).
    pub fn give(self, anyone: bool) {
        let _ = self.0.send(anyone);
    }
}

impl Audience {
    /// A login that ended before its verdict (a failed listing) is told as it always was.
    async fn anyone(self) -> bool {
        self.0.await.unwrap_or(true)
    }
}

/// A change as the agents that asked for single pushes get it, and as each of a
/// `presence_push`'s `changes` (serialized from the change, no `Value` built per change).
#[derive(serde::Serialize)]
struct Pushed<'a> {
    method: &'a str,
    customer_id: &'a str,
    customer_name: &'a str,
    timestamp: i64,
}

/// A tick's changes for the agents that asked for `"presence":"batch"`.
#[derive(serde::Serialize)]
struct PresencePush<'a> {
    method: &'static str,
    changes: Vec<Pushed<'a>>,
}

impl Change {
    fn pushed(&self) -> Pushed<'_> {
        Pushed { method: self.method, customer_id: &self.id, customer_name: &self.name, timestamp: self.timestamp }
    }

    /// The change as a compact row: `1` came, `0` went.
    fn row(&self) -> (&str, &str, u8) {
        (&self.id, &self.name, u8::from(self.method == "login_push"))
    }
}

/// A tick's changes for the agents that asked for `"presence":"compact"`.
fn agents_push(changes: &VecDeque<Change>) -> String {
    #[derive(serde::Serialize)]
    struct AgentsPush<'a> {
        method: &'static str,
        timestamp: i64,
        agents: &'a RawValue,
    }
    let timestamp = changes.iter().map(|c| c.timestamp).max().unwrap_or_default();
    let agents = rows(changes.iter().map(Change::row));
    serde_json::to_string(&AgentsPush { method: "agents_push", timestamp, agents: &agents }).unwrap_or_default()
}

/// Changes waiting per bot; past it, `announce` waits for the sender to take them. Each
/// change comes from a client's login or logout, so the queue is short but for a storm.
const QUEUE: usize = 4096;

/// A bot's presence changes on their way out, and whether a sender is taking them.
#[derive(Default)]
struct Pending {
    changes: VecDeque<Change>,
    /// A sender task is running: it alone takes `changes`, so they go out in order.
    sending: bool,
}

impl Pending {
    /// Queues `change`; `Ok(true)` when no sender runs and the caller must start one, `Err`
    /// (the change back) when the queue is full.
    fn push(&mut self, change: Change) -> Result<bool, Change> {
        if self.changes.len() >= QUEUE {
            return Err(change);
        }
        self.changes.push_back(change);
        Ok(!std::mem::replace(&mut self.sending, true))
    }

    /// The sender's turn: every change queued, or `None`, and the sender ends. An idle bot
    /// keeps no sender and no queue: a task and the channel blocks a login burst grew to,
    /// kept for every bot, were ≈ 7 KB per bot (≈ 150 B per client with bots of 50).
    fn take(&mut self) -> Option<VecDeque<Change>> {
        if self.changes.is_empty() {
            self.sending = false;
            return None;
        }
        Some(std::mem::take(&mut self.changes))
    }
}

/// The actors' maps and a bot's queue are only ever changed whole under their lock (never
/// across an await), so a poisoned one holds nothing half-done.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A sender per bot with changes waiting (see the module doc).
#[derive(Default)]
pub struct Announcer {
    bots: Mutex<HashMap<String, Arc<Mutex<Pending>>>>,
}

impl Announcer {
    /// Queues a change for bot `bid`'s agents; waits only while the bot's queue is full.
    pub async fn announce(&self, api: &Api, bid: &str, mut change: Change) {
        let bot = get_or_make(&self.bots, bid, Arc::default);
        loop {
            let pushed = locked(&bot).push(change);
            match pushed {
                Ok(start) => {
                    if start {
                        tokio::spawn(announce_loop(api.clone(), bid.to_string(), bot));
                    }
                    return;
                }
                Err(back) => {
                    change = back;
                    tokio::time::sleep(TICK).await;
                }
            }
        }
    }
}

async fn announce_loop(api: Api, bid: String, bot: Arc<Mutex<Pending>>) {
    let [single, batch, compact] = Form::ALL.map(|f| f.group(&bid));
    loop {
        let Some(mut changes) = locked(&bot).take() else { return };
        if let Some(audience) = lone_audience(&mut changes) {
            if !audience.anyone().await {
                continue;
            }
        }
        for c in &changes {
            let skip = c.client.map(|id| id.to_string());
            let frame = serde_json::to_string(&c.pushed()).unwrap_or_default();
            if let Err(e) = api.send_to_group(&[&single], frame, skip.as_deref().as_slice()).await {
                warn!(bid = %bid, "presence push not sent: {e}");
            }
        }
        let push = PresencePush { method: "presence_push", changes: changes.iter().map(Change::pushed).collect() };
        let frame = serde_json::to_string(&push).unwrap_or_default();
        drop(push);
        let rows = agents_push(&changes);
        let skip = only_news_for(&changes).map(|id| id.to_string());
        drop(changes);
        for (group, frame) in [(&batch, frame), (&compact, rows)] {
            if let Err(e) = api.send_to_group(&[group], frame, skip.as_deref().as_slice()).await {
                warn!(bid = %bid, "presence push not sent: {e}");
            }
        }
        // What comes in meanwhile goes out together in the next frame.
        tokio::time::sleep(TICK).await;
    }
}

/// A tick of one login waits for its verdict; in a tick of several (a storm) each change is
/// news to the others, and nothing waits.
fn lone_audience(changes: &mut VecDeque<Change>) -> Option<Audience> {
    match changes.make_contiguous() {
        [only] => only.audience.take(),
        _ => None,
    }
}

/// The connection a tick's frame would tell nothing new: every change in it is that
/// connection's own (a lone login, the usual case outside a storm), which its login's answer
/// already lists. Skipping it saves a frame per login; the single push skips it too.
fn only_news_for(changes: &VecDeque<Change>) -> Option<ClientId> {
    let first = changes.front()?.client?;
    changes.iter().all(|c| c.client == Some(first)).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A listing is kept while a caller that may share it waits, and dropped with the last:
    /// held on, it kept a bot's every agent in an idle worker's memory.
    #[tokio::test]
    async fn the_last_caller_out_drops_the_listing() {
        let listing = Listing::default();
        let first = Caller::new(&listing);
        let waiting = Caller::new(&listing);
        *listing.last.lock().await = Some(Arc::new(Snapshot {
            started: 1,
            connections: Vec::new(),
            agents: OnceLock::new(),
            customer_list: OnceLock::new(),
            rows: OnceLock::new(),
        }));
        drop(first);
        assert!(listing.last.lock().await.is_some(), "a caller still waits: kept for it");
        drop(waiting);
        assert!(listing.last.lock().await.is_none(), "nobody left to share it: dropped");
    }

    /// A round lists several bots at once: each bot gets only connections that are in its
    /// group and whose session says they are its agents. A visitor, an agent of a bot not in
    /// the round, or an agent of one bot found in another's group is nobody's.
    #[test]
    fn a_round_gives_each_bot_its_own_agents_only() {
        let session = |bid: &str, id: &str| {
            format!(r#"a:4:{{s:4:"role";s:5:"agent";s:3:"bid";s:{}:"{bid}";s:2:"id";s:{}:"{id}";s:4:"name";s:1:"N";}}"#, bid.len(), id.len())
        };
        let groups = |gs: &[&str]| {
            let items: String = gs.iter().map(|g| format!(r#"s:{n}:"{g}";s:{n}:"{g}";"#, n = g.len())).collect();
            format!("a:{}:{{{items}}}", gs.len())
        };
        let gw: std::net::SocketAddrV4 = "127.0.0.1:2900".parse().expect("addr");
        let member = |conn: u32, s: String, g: String| (ClientId::new(gw, conn), business::Member::new(s.into_bytes().into(), g.into_bytes().into()));
        let (a, b) = (crate::keys::bot_group("A"), crate::keys::bot_group("B"));
        let members: BTreeMap<ClientId, business::Member> = [
            member(1, session("A", "a1"), groups(&[&a])),
            member(2, session("B", "b1"), groups(&[&b])),
            member(3, session("A", "sneak"), groups(&[&b])),
            member(4, session("C", "c1"), groups(&[&a, &b])),
            member(5, r#"a:1:{s:4:"role";s:7:"visitor";}"#.to_string(), groups(&[&a])),
            member(6, session("A", "a2"), String::new()),
        ]
        .into_iter()
        .collect();
        let found = listed(&["A", "B"], &members);
        let ids = |bid: &str| found[bid].iter().map(|o| (o.client.conn, o.id.clone())).collect::<Vec<_>>();
        assert_eq!(ids("A"), vec![(1, "a1".to_string())]);
        assert_eq!(ids("B"), vec![(2, "b1".to_string())]);
        assert_eq!(found.len(), 2, "only the round's bots");
    }

    /// The single push and each of a batch's changes, byte for byte as clients have read them.
    #[test]
    fn a_change_is_written_as_it_always_was() {
        let c = Change { method: "logout_push", id: "a\"7".into(), name: "Ann".into(), timestamp: 9, client: None, audience: None };
        let single = serde_json::to_string(&c.pushed()).expect("single");
        assert_eq!(single, r#"{"method":"logout_push","customer_id":"a\"7","customer_name":"Ann","timestamp":9}"#);
        let batch = serde_json::to_string(&PresencePush { method: "presence_push", changes: vec![c.pushed()] }).expect("batch");
        assert_eq!(batch, format!(r#"{{"method":"presence_push","changes":[{single}]}}"#));
    }

    fn change(id: &str) -> Change {
        Change { method: "login_push", id: id.into(), name: id.into(), timestamp: 0, client: None, audience: None }
    }

    fn ids(changes: Option<VecDeque<Change>>) -> Vec<String> {
        changes.map(|c| c.into_iter().map(|c| c.id).collect()).unwrap_or_default()
    }

    /// A tick's frame skips the one connection it would only tell of itself; a tick with
    /// anyone else's change, or a change with no connection (a logout), goes to everyone.
    #[test]
    fn a_tick_of_only_its_own_login_skips_that_connection() {
        let at = |id: &str, conn: u32| Change { client: Some(ClientId::new("127.0.0.1:2300".parse().expect("addr"), conn)), ..change(id) };
        let own: VecDeque<Change> = [at("a", 1)].into();
        assert_eq!(only_news_for(&own).map(|c| c.conn), Some(1));
        let again: VecDeque<Change> = [at("a", 1), at("a", 1)].into();
        assert_eq!(only_news_for(&again).map(|c| c.conn), Some(1), "the same connection twice is still only its own news");
        let two: VecDeque<Change> = [at("a", 1), at("b", 2)].into();
        assert_eq!(only_news_for(&two), None, "each is news to the other");
        let other_tab: VecDeque<Change> = [at("a", 1), at("a", 2)].into();
        assert_eq!(only_news_for(&other_tab), None, "the same agent's other connection learns of this one");
        let gone: VecDeque<Change> = [change("a")].into();
        assert_eq!(only_news_for(&gone), None);
        assert_eq!(only_news_for(&VecDeque::new()), None);
    }

    /// A tick of one login waits for that login's verdict; a tick of several never waits (in
    /// a storm each is news to the others), and a change without an audience (a logout, whose
    /// listing came first) goes out.
    #[tokio::test]
    async fn only_a_lone_login_waits_for_its_verdict() {
        let heard = |anyone: Option<bool>| {
            let (verdict, audience) = audience();
            if let Some(a) = anyone {
                verdict.give(a);
            }
            Change { audience: Some(audience), ..change("a") }
        };
        let mut alone: VecDeque<Change> = [heard(Some(false))].into();
        let a = lone_audience(&mut alone).expect("a lone login waits");
        assert!(!a.anyone().await, "nobody else online: nothing to send");
        let mut seen: VecDeque<Change> = [heard(Some(true))].into();
        assert!(lone_audience(&mut seen).expect("waits").anyone().await);
        let mut failed: VecDeque<Change> = [heard(None)].into();
        assert!(lone_audience(&mut failed).expect("waits").anyone().await, "no verdict (the login failed): sent as always");
        let mut storm: VecDeque<Change> = [heard(Some(false)), heard(Some(false))].into();
        assert!(lone_audience(&mut storm).is_none(), "several changes: each is news to the other");
        let mut logout: VecDeque<Change> = [change("a")].into();
        assert!(lone_audience(&mut logout).is_none());
    }

    /// One sender at a time per bot, taking changes in the order they came; once the queue is
    /// empty it ends and the bot keeps nothing allocated, and the next change starts another.
    #[test]
    fn a_bot_has_one_sender_while_changes_wait_and_none_after() {
        let mut bot = Pending::default();
        assert_eq!(bot.push(change("a")).ok(), Some(true), "no sender yet: start one");
        assert_eq!(bot.push(change("b")).ok(), Some(false), "one is starting: no second");
        assert_eq!(ids(bot.take()), ["a", "b"]);
        assert_eq!(bot.push(change("c")).ok(), Some(false), "the sender is between two turns");
        assert_eq!(ids(bot.take()), ["c"]);
        assert!(bot.take().is_none(), "nothing left: the sender ends");
        assert_eq!(bot.changes.capacity(), 0, "an idle bot holds no queue");
        assert_eq!(bot.push(change("d")).ok(), Some(true), "the next change starts a sender again");
        for n in 1..QUEUE {
            assert!(bot.push(change(&n.to_string())).is_ok());
        }
        assert!(bot.push(change("over")).is_err(), "full: the caller waits");
    }

    #[test]
    fn customer_list_is_the_contracts_shape() {
        let list = customer_list([("a1", "Ann \"A\""), ("b2", "<b>")].into_iter());
        let expected = json!([
            {"customer_id": "a1", "customer_name": "Ann \"A\"", "status": 1},
            {"customer_id": "b2", "customer_name": "<b>", "status": 1},
        ]);
        assert_eq!(list.get(), expected.to_string(), "the same bytes, keys in this order");
        assert_eq!(customer_list(std::iter::empty()).get(), "[]");
    }
}
