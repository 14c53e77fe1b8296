//! One process's share of the load: it opens connections `i` with `i % processes == index`,
//! sets them up for the workload (log in, join a room), says `ready`, waits for `go`, runs the
//! workload for its duration, drains, and returns a [`Partial`] the parent adds up.
//!
//! Every measured message's content is `"<sender> <seq> <sent µs since the epoch>"`: the clock
//! is the box's, so processes can be compared; the sender and sequence make the tally exact.

use super::tally::{content_of, parse_content, Tally};
use super::wire::{self, Incoming, Rx, Transport, Tx};
use super::{BenchArgs, Workload};
use anyhow::Context as _;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one process measured; the parent adds these up.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Partial {
    pub connections: u64,
    pub connect_failures: u64,
    pub setup_failures: u64,
    pub connect_secs: f64,
    pub sent: u64,
    pub acked: u64,
    pub expected: u64,
    pub received: u64,
    pub unique: u64,
    pub misdelivered: u64,
    pub closed_by_server: u64,
    pub close_reasons: BTreeMap<String, u64>,
    pub still_open: u64,
    pub first_send_us: u64,
    pub last_delivery_us: u64,
    /// Latencies (µs), hdrhistogram V2, base64.
    pub hist: String,
    pub logins_answered: u64,
    pub presence_complete: u64,
    pub presence_max_ms: f64,
    /// Login storm: agents named online, over every frame (n·(n−1) at the least), and the
    /// bytes of the frames naming them: what the storm costs, whatever the servers' speed.
    pub presence_entries: u64,
    pub presence_bytes: u64,
    pub cpu_secs: f64,
}

pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

pub fn new_hist() -> Histogram<u64> {
    // 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Members a message to connection `i`'s room reaches (the last room may be short).
pub fn members(i: usize, n: usize, room: usize) -> u64 {
    let r = i / room;
    (n.min((r + 1) * room) - r * room) as u64
}

/// Reads until a message with `"method":"<method>"` comes; false if the connection ends.
async fn await_method(rx: &mut Rx, method: &str) -> bool {
    let needle = format!("\"method\":\"{method}\"");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, rx.next()).await {
            Ok(Incoming::Text(t)) if t.contains(&needle) => return true,
            Ok(Incoming::Text(_)) => {}
            _ => return false,
        }
    }
}

/// The agent login: `login`, or for goim clients `auth` (op 7), which also joins `room`.
fn login_frame(args: &BenchArgs, i: usize, bid: &str, room: Option<&str>) -> anyhow::Result<String> {
    let id = format!("c{i}");
    let token = events::auth::mint(args.agent_secret.as_deref().unwrap_or(""), bid, &id, 3600)
        .context("the chat workloads log in as agents: give --agent-secret (or SWITCHBOARD_AGENT_SECRET)")?;
    Ok(match args.transport {
        Transport::Goim => {
            json!({"method": "auth", "mid": id, "room_id": room, "platform": "bench", "token": token, "presence": args.presence})
        }
        _ => json!({"method": "login", "bid": bid, "customer_id": id, "customer_name": id, "token": token, "presence": args.presence}),
    }
    .to_string())
}

/// What a frame tells a login storm's agent: whether it is the answer to its login (with the
/// agent list), and, to `each`, the agents it says are online (`customer_id`s of the answer's
/// list, of a `login_push`, or of the `login_push` changes in a `presence_push`; with
/// `"presence":"compact"` the rows of the answer's `agents` and of an `agents_push` that say
/// `1`, came). Scanned, not parsed: late login answers carry every agent (hundreds of
/// kilobytes each), and the storm's generator shares the box with the servers it measures.
fn presence_in(t: &str, mut each: impl FnMut(&str)) -> bool {
    let method = t.strip_prefix("{\"method\":\"").and_then(|r| r.split('"').next()).unwrap_or("");
    // A list comes after a few short fields: which one it is shows in the frame's head.
    let head = t.get(..1024).unwrap_or(t);
    let marker = match method {
        "login" | "auth" | "agents_push" => {
            if let Some(at) = head.find("\"agents\":[") {
                came_rows(&t[at + "\"agents\":[".len()..], each);
                return method != "agents_push";
            }
            "\"customer_id\":\""
        }
        "login_push" => "\"customer_id\":\"",
        "presence_push" => "\"method\":\"login_push\",\"customer_id\":\"",
        _ => return false,
    };
    for (at, m) in t.match_indices(marker) {
        if let Some(id) = t[at + m.len()..].split('"').next() {
            each(id);
        }
    }
    matches!(method, "login" | "auth") && head.contains("\"customer_list\":")
}

/// The ids of the rows (`["id","name",1|0]`) that say `1`, in a list from just after its `[`.
/// The bench's ids and names hold no quote or bracket, so an id ends at its first `"`, a row at
/// its first `]`, and the list where a row would start. One pass over the bytes: a storm's
/// frames hold tens of millions of rows, and the generator shares two cores with the servers.
fn came_rows(list: &str, mut each: impl FnMut(&str)) {
    let b = list.as_bytes();
    let mut at = 0;
    while b.get(at) == Some(&b'[') && b.get(at + 1) == Some(&b'"') {
        let id = at + 2;
        let Some(quote) = b[id..].iter().position(|&c| c == b'"').map(|q| id + q) else { return };
        let Some(end) = b[quote..].iter().position(|&c| c == b']').map(|e| quote + e) else { return };
        if b[..end].ends_with(b",1") {
            each(&list[id..quote]);
        }
        at = end + 1 + usize::from(b.get(end + 1) == Some(&b','));
    }
}

/// The method of the login's answer.
fn login_reply(args: &BenchArgs) -> &'static str {
    if args.transport == Transport::Goim {
        "auth"
    } else {
        "login"
    }
}

fn bid_of(args: &BenchArgs, i: usize) -> String {
    match args.workload {
        Workload::Login => "storm".into(),
        _ => format!("b{}", i / args.room_size),
    }
}

/// A connection ready for the workload, or why not (see `prepare`).
type Prepared = Result<(Tx, Rx), bool>;

/// Connects and prepares one connection; `Err(true)` when it could not connect, `Err(false)`
/// when its setup failed (both counted).
async fn prepare(args: &BenchArgs, i: usize) -> Prepared {
    let url = &args.urls[i % args.urls.len()];
    let source = (!args.sources.is_empty()).then(|| args.sources[i % args.sources.len()]);
    let (mut tx, mut rx) = match wire::connect(args.transport, url, source).await {
        Ok(c) => c.split(),
        Err(e) => {
            tracing::warn!("connection {i}: {e:#}");
            return Err(true);
        }
    };
    let ok = match args.workload {
        Workload::Room | Workload::Pairs => {
            // A goim client enters its room with its auth; the others join after logging in.
            let room = (args.workload == Workload::Room).then_some("r");
            let frame = match login_frame(args, i, &bid_of(args, i), room) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!("{e:#}");
                    return Err(false);
                }
            };
            tx.send(frame).await.is_ok()
                && await_method(&mut rx, login_reply(args)).await
                && (room.is_none() || args.transport == Transport::Goim || {
                    tx.send(r#"{"method":"join","room":"r"}"#.into()).await.is_ok() && await_method(&mut rx, "join").await
                })
        }
        // goim clients must authenticate before anything else, heartbeats included.
        Workload::Hold | Workload::Proxy if args.transport == Transport::Goim => match login_frame(args, i, &bid_of(args, i), None) {
            Ok(f) => tx.send(f).await.is_ok() && await_method(&mut rx, "auth").await,
            Err(e) => {
                tracing::error!("{e:#}");
                return Err(false);
            }
        },
        Workload::Hold | Workload::Login | Workload::Proxy => true,
    };
    if ok {
        Ok((tx, rx))
    } else {
        Err(false)
    }
}

/// What one connection saw.
#[derive(Default)]
struct ConnResult {
    sent: u64,
    acked: u64,
    expected: u64,
    tally: Tally,
    misdelivered: u64,
    close: Option<String>,
    first_send_us: u64,
    last_delivery_us: u64,
    login_answered: bool,
    presence_us: Option<u64>,
    presence_entries: u64,
    presence_bytes: u64,
}

/// Latencies gathered per connection and added to the shared histogram in batches.
struct Lat<'a> {
    buf: Vec<u64>,
    hist: &'a Mutex<Histogram<u64>>,
}

impl Lat<'_> {
    fn add(&mut self, us: u64) {
        self.buf.push(us.max(1));
        if self.buf.len() >= 512 {
            self.flush();
        }
    }
    fn flush(&mut self) {
        if let Ok(mut h) = self.hist.lock() {
            for v in self.buf.drain(..) {
                h.saturating_record(v);
            }
        }
    }
}

/// When the run ends: `drain` seconds after sending stopped during which nothing arrived on any
/// of this process's connections (a message still on its way is late, not lost), or at
/// `give_up` at the latest.
#[derive(Clone)]
struct End {
    stop_at: Instant,
    quiet: Duration,
    give_up: Instant,
    /// The last delivery on any connection of this process, µs since the epoch.
    last_delivery: Arc<AtomicU64>,
}

impl End {
    fn reached(&self) -> bool {
        let now = Instant::now();
        if now < self.stop_at + self.quiet {
            return false;
        }
        let quiet_us = self.quiet.as_micros() as u64;
        now >= self.give_up || now_us().saturating_sub(self.last_delivery.load(Ordering::Relaxed)) >= quiet_us
    }
}

async fn drive(args: Arc<BenchArgs>, i: usize, conn: (Tx, Rx), hist: Arc<Mutex<Histogram<u64>>>, end: End) -> ConnResult {
    let stop_at = end.stop_at;
    // No timer of its own before the end can come (15000 connections polling every 100 ms
    // cost the load generator more than their messages).
    let check = tokio::time::sleep_until((stop_at + end.quiet).into());
    tokio::pin!(check);
    let mut noted_us = 0u64;
    let n = args.connections;
    let mut r = ConnResult::default();
    let (mut tx, mut rx) = conn;
    let mut lat = Lat { buf: Vec::new(), hist: &hist };
    let sends = matches!(args.workload, Workload::Room | Workload::Pairs | Workload::Proxy);
    let period = match args.workload {
        Workload::Hold => Duration::from_secs_f64(args.beat.max(0.1)),
        _ => Duration::from_secs_f64(1.0 / args.rate.max(0.001)),
    };
    // Spread the first sends over one period so connections do not fire in lockstep.
    let offset = period.mul_f64((i as f64 * 0.618_033_988_7) % 1.0);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    // A late tick is made up at once, so the offered rate is the rate asked for even when the
    // box is busy (Delay would let every late tick push the next one back).
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let my_room = i / args.room_size;
    let partner = i ^ 1;
    let mut seq = 0u64;
    let mut known = vec![0u64; if args.workload == Workload::Login { n.div_ceil(64) } else { 0 }];
    let mut known_count = 0usize;
    let mut login_sent_us = 0u64;
    if args.workload == Workload::Login {
        match login_frame(&args, i, "storm", None) {
            Ok(f) => {
                login_sent_us = now_us();
                if tx.send(f).await.is_err() {
                    r.close = Some("send failed".into());
                    return r;
                }
            }
            Err(e) => {
                tracing::error!("{e:#}");
                return r;
            }
        }
    }
    let mark = |cid: &str, known: &mut Vec<u64>, count: &mut usize| {
        if let Some(k) = cid.strip_prefix('c').and_then(|s| s.parse::<usize>().ok()).filter(|k| *k < n) {
            if known[k / 64] & (1 << (k % 64)) == 0 {
                known[k / 64] |= 1 << (k % 64);
                *count += 1;
            }
        }
    };
    loop {
        tokio::select! {
            _ = tick.tick(), if Instant::now() < stop_at && (sends || args.workload == Workload::Hold) => {
                let frame = match args.workload {
                    Workload::Hold => "beat".to_string(),
                    Workload::Room => {
                        seq += 1;
                        r.expected += members(i, n, args.room_size);
                        json!({"method": "say", "room": "r", "content": format!("{i} {seq} {}", now_us())}).to_string()
                    }
                    Workload::Pairs => {
                        seq += 1;
                        // The partner's connections and the sender's own.
                        r.expected += if partner < n { 2 } else { 1 };
                        json!({"method": "say", "to_uid": format!("c{partner}"), "content": format!("{i} {seq} {}", now_us())}).to_string()
                    }
                    _ => {
                        seq += 1;
                        r.expected += 1;
                        json!({"method": "bench_echo", "content": format!("{i} {seq} {}", now_us())}).to_string()
                    }
                };
                if r.first_send_us == 0 {
                    r.first_send_us = now_us();
                }
                if tx.send(frame).await.is_err() {
                    r.close.get_or_insert_with(|| "send failed".into());
                    break;
                }
                if sends {
                    r.sent += 1;
                }
            }
            m = rx.next() => {
                let t = match m {
                    Incoming::Text(t) => t,
                    Incoming::Closed(why) => {
                        r.close.get_or_insert(why);
                        break;
                    }
                };
                let now = now_us();
                if t.starts_with("{\"method\":\"say_ack\"") {
                    r.acked += 1;
                } else if args.workload == Workload::Login {
                    let mut named = 0u64;
                    let answer = presence_in(&t, |id| {
                        named += 1;
                        mark(id, &mut known, &mut known_count);
                    });
                    if named > 0 {
                        r.presence_entries += named;
                        r.presence_bytes += t.len() as u64;
                    }
                    if answer && !r.login_answered {
                        r.login_answered = true;
                        lat.add(now.saturating_sub(login_sent_us));
                    }
                    if known_count == n && r.presence_us.is_none() {
                        r.presence_us = Some(now.saturating_sub(login_sent_us));
                    }
                } else if let Some((sender, s, at)) = content_of(&t).and_then(parse_content) {
                    r.tally.record(sender, s);
                    r.last_delivery_us = now;
                    if now.saturating_sub(noted_us) > 10_000 {
                        noted_us = now;
                        end.last_delivery.fetch_max(now, Ordering::Relaxed);
                    }
                    lat.add(now.saturating_sub(at));
                    let wrong = match args.workload {
                        Workload::Room => sender as usize / args.room_size != my_room,
                        Workload::Pairs => sender as usize != i && sender as usize != partner,
                        _ => sender as usize != i,
                    };
                    if wrong {
                        r.misdelivered += 1;
                    }
                }
            }
            _ = &mut check => {
                if end.reached() {
                    break;
                }
                check.as_mut().reset((Instant::now() + Duration::from_millis(100)).into());
            }
        }
    }
    lat.flush();
    r
}

/// Runs this process's share; `ready` is called once every connection is set up, and the
/// workload starts when `go` resolves.
pub async fn share<R, G>(args: Arc<BenchArgs>, index: usize, processes: usize, ready: R, go: G) -> anyhow::Result<Partial>
where
    R: FnOnce(),
    G: std::future::Future<Output = ()>,
{
    let mine: Vec<usize> = (0..args.connections).filter(|i| i % processes == index).collect();
    let started = Instant::now();
    let prepared: Vec<(usize, Prepared)> = futures_util::stream::iter(mine)
        .map(|i| {
            let args = args.clone();
            async move { (i, prepare(&args, i).await) }
        })
        .buffer_unordered(args.connect_concurrency.max(1))
        .collect()
        .await;
    let mut p = Partial { connect_secs: started.elapsed().as_secs_f64(), ..Default::default() };
    let mut conns = Vec::new();
    for (i, r) in prepared {
        match r {
            Ok(ws) => conns.push((i, ws)),
            Err(true) => p.connect_failures += 1,
            Err(false) => p.setup_failures += 1,
        }
    }
    p.connections = conns.len() as u64;
    ready();
    go.await;
    let hist = Arc::new(Mutex::new(new_hist()));
    let stop_at = Instant::now() + Duration::from_secs_f64(args.duration);
    let end = End {
        stop_at,
        quiet: Duration::from_secs_f64(args.drain),
        give_up: stop_at + Duration::from_secs_f64(args.drain.max(args.drain_max)),
        last_delivery: Arc::new(AtomicU64::new(0)),
    };
    let tasks: Vec<_> = conns.into_iter().map(|(i, ws)| tokio::spawn(drive(args.clone(), i, ws, hist.clone(), end.clone()))).collect();
    let mut presence_max = 0u64;
    for t in tasks {
        let r = t.await.context("connection task")?;
        p.sent += r.sent;
        p.acked += r.acked;
        p.expected += r.expected;
        p.received += r.tally.received;
        p.unique += r.tally.unique;
        p.misdelivered += r.misdelivered;
        match r.close {
            Some(reason) => {
                p.closed_by_server += 1;
                *p.close_reasons.entry(reason).or_default() += 1;
            }
            None => p.still_open += 1,
        }
        if r.first_send_us > 0 && (p.first_send_us == 0 || r.first_send_us < p.first_send_us) {
            p.first_send_us = r.first_send_us;
        }
        p.last_delivery_us = p.last_delivery_us.max(r.last_delivery_us);
        p.logins_answered += r.login_answered as u64;
        p.presence_entries += r.presence_entries;
        p.presence_bytes += r.presence_bytes;
        if let Some(us) = r.presence_us {
            p.presence_complete += 1;
            presence_max = presence_max.max(us);
        }
    }
    p.presence_max_ms = presence_max as f64 / 1000.0;
    let h = hist.lock().map_err(|_| anyhow::anyhow!("histogram lock"))?.clone();
    p.hist = super::report::encode_hist(&h)?;
    p.cpu_secs = super::procstat::own().cpu_secs;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::presence_in;

    /// The storm's scan finds the same agents in every form the server sends them.
    #[test]
    fn every_presence_form_names_who_is_online() {
        let forms = [
            (
                r#"{"method":"login","customer_id":"c1","customer_name":"c1","timestamp":1,"customer_list":[{"customer_id":"c0","customer_name":"c0","status":1},{"customer_id":"c1","customer_name":"c1","status":1}],"conversations":[]}"#,
                true,
                vec!["c1", "c0", "c1"],
            ),
            (
                r#"{"method":"login","customer_id":"c1","customer_name":"c1","timestamp":1,"agents":[["c0","c0",1],["c1","c1",1]],"conversations":[]}"#,
                true,
                vec!["c0", "c1"],
            ),
            (r#"{"method":"login","customer_id":"c1","customer_name":"c1","timestamp":1,"agents":[],"conversations":[["x"]]}"#, true, vec![]),
            (r#"{"method":"agents_push","timestamp":1,"agents":[["c2","c2",1],["c3","c3",0],["c4","c4",1]]}"#, false, vec!["c2", "c4"]),
            (r#"{"method":"agents_push","timestamp":1,"agents":[["c6","",1],["c7","c7",11],["c8","c8",0]]}"#, false, vec!["c6"]),
            (
                r#"{"method":"presence_push","changes":[{"method":"login_push","customer_id":"c2","customer_name":"c2","timestamp":1},{"method":"logout_push","customer_id":"c3","customer_name":"c3","timestamp":1}]}"#,
                false,
                vec!["c2"],
            ),
            (r#"{"method":"login_push","customer_id":"c5","customer_name":"c5","timestamp":1}"#, false, vec!["c5"]),
        ];
        for (frame, answer, ids) in forms {
            let mut named = Vec::new();
            assert_eq!(presence_in(frame, |id| named.push(id.to_string())), answer, "{frame}");
            assert_eq!(named, ids, "{frame}");
        }
    }
}
