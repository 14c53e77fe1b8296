//! Routing by directory (GatewayWorker#19): a worker sends a uid's or a group's messages only to
//! the gateways that hold a member, as each gateway tells it, and a bind or join returns only
//! once every worker knows, so a send that follows it is never routed past the new member.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use gateway::protocol::{Command, PacketCodec};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Sums a counter over gateways' `/metrics`.
async fn sum(metrics: &[String], name: &str) -> u64 {
    let mut total = 0;
    for addr in metrics {
        total += metric(addr, name).await as u64;
    }
    total
}

/// `n` gateways and two probe workers (given `worker_extra`), with a uid held on gateway 0
/// (client x), a group on gateway 1 (client y), and a client z on the last gateway to call the
/// API from.
struct Held {
    _register: Proc,
    _gateways: Vec<Gw>,
    _workers: Vec<Proc>,
    metrics: Vec<String>,
    x: Client,
    y: Client,
    z: Client,
}

async fn held_over(net: u8, n: usize, worker_extra: &[&str]) -> Held {
    let reg_ip = format!("127.{net}.0.1");
    let reg = format!("{reg_ip}:{}", free_port(&reg_ip));
    let register = start_register(&format!("n{net}-register"), &reg, &[]);
    wait_listening(&reg).await;
    let mut metrics = Vec::new();
    let gws: Vec<Gw> = (0..n)
        .map(|i| {
            let ip = format!("127.{net}.0.{}", 10 + i);
            let m = format!("{ip}:{}", free_port(&ip));
            metrics.push(m.clone());
            start_gateway(&format!("n{net}-gateway-{i}"), &ip, &reg, &["--metrics", &m])
        })
        .collect();
    let workers: Vec<Proc> = (1..=2).map(|i| start_worker(&format!("n{net}-worker-{i}"), &reg, worker_extra)).collect();
    wait_ready(&gws.iter().collect::<Vec<_>>(), 2).await;

    let x = Client::connect(&gws[0].ws).await;
    let y = Client::connect(&gws[1].ws).await;
    let mut z = Client::connect(&gws[n - 1].ws).await;
    z.call("bind_uid", json!([x.id, "u1"])).await;
    z.call("join_group", json!([y.id, "g1"])).await;
    Held { _register: register, _gateways: gws, _workers: workers, metrics, x, y, z }
}

/// 20 sends to the uid and 20 to the group: the send commands the gateways received, and how
/// many of them reached nobody.
async fn sends_over(net: u8, n: usize, worker_extra: &[&str]) -> (u64, u64) {
    // Bound whole: a pattern with `..` would drop the processes at once.
    let mut held = held_over(net, n, worker_extra).await;
    let Held { metrics, x, y, z, .. } = &mut held;
    let (before, unused_before) = (sum(metrics, "sends_total").await, sum(metrics, "sends_unused_total").await);
    for k in 0..20 {
        z.call("send_to_uid", json!([["u1"], format!("to u1 {k}")])).await;
        z.call("send_to_group", json!([["g1"], format!("to g1 {k}")])).await;
    }
    for k in 0..20 {
        x.expect_text(&format!("to u1 {k}")).await;
        y.expect_text(&format!("to g1 {k}")).await;
    }
    (sum(metrics, "sends_total").await - before, sum(metrics, "sends_unused_total").await - unused_before)
}

/// Packets per send with 3 and 10 gateways, by the gateways' own count: one (the gateway with
/// the member) with the directory, every gateway without it (`--no-directory`, PHP's way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_reach_only_the_gateways_holding_a_member() {
    for (net, n) in [(183, 3), (184, 10)] {
        let (broadcast, wasted) = sends_over(net, n, &["--no-directory"]).await;
        assert_eq!((broadcast, wasted), (40 * n as u64, 40 * (n as u64 - 1)), "without the directory every gateway gets every send");
        let (routed, unused) = sends_over(net + 2, n, &[]).await;
        assert_eq!((routed, unused), (40, 0), "with it, only the gateway holding the uid or group");
        eprintln!("{n} gateways: {} packets per send to a uid or group without the directory, {} with it", broadcast / 40, routed / 40);
    }
}

/// A raw worker on the gateway's inner port, speaking the directory extension by hand.
struct RawWorker(Framed<TcpStream, PacketCodec>);

impl RawWorker {
    async fn connect(inner: &str, name: &str) -> RawWorker {
        let s = TcpStream::connect(inner).await.expect("inner port");
        let mut w = RawWorker(Framed::new(s, PacketCodec::default()));
        w.send(Command::WorkerConnect { worker_key: name.into(), secret_key: String::new(), directory: true, standby: None }).await;
        w
    }

    async fn send(&mut self, cmd: Command) {
        self.0.send(cmd.into_packet().to_bytes()).await.expect("send");
    }

    /// The next command other than a ping or a client event, within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Command> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let p = tokio::time::timeout_at(deadline, self.0.next()).await.ok()??.expect("packet");
            match Command::from_packet(p).expect("command") {
                Command::Ping | Command::Event { .. } => continue,
                c => return Some(c),
            }
        }
    }

    /// The next DIRECTORY, acknowledged unless `ack` is false; its sequence number.
    async fn directory(&mut self, ack: bool) -> u64 {
        match self.next(WAIT).await {
            Some(Command::Directory(d)) => {
                if ack {
                    self.send(Command::DirectoryAck { seq: d.seq }).await;
                }
                d.seq
            }
            other => panic!("expected a DIRECTORY, got {other:?}"),
        }
    }
}

/// The barrier itself: a bind's DIRECTORY_SETTLED waits until every subscribed worker has
/// acknowledged the change, and for a worker that never does, 1 s at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_settles_only_once_every_worker_knows() {
    let reg_ip = "127.187.0.1";
    let reg = format!("{reg_ip}:{}", free_port(reg_ip));
    let _register = start_register("n187-register", &reg, &[]);
    wait_listening(&reg).await;
    let gw = start_gateway("n187-gateway", "127.187.0.2", &reg, &[]);
    wait_listening(&gw.inner).await;
    let mut w1 = RawWorker::connect(&gw.inner, "one:1").await;
    let mut w2 = RawWorker::connect(&gw.inner, "two:1").await;
    w1.directory(true).await;
    w2.directory(true).await;

    // A client (its events go to w1 or w2; the hub takes it once a worker is linked).
    let (mut ws, _) = tokio_tungstenite::connect_async(&gw.ws).await.expect("client");
    let conn = {
        let mut found = None;
        for w in [&mut w1.0, &mut w2.0] {
            if let Ok(Some(Ok(p))) = tokio::time::timeout(Duration::from_millis(500), w.next()).await {
                if let Ok(Command::Event { origin, .. }) = Command::from_packet(p) {
                    found = Some(origin.conn);
                }
            }
        }
        found.expect("the client's connect event reached a worker")
    };

    w1.send(Command::BindUid { conn, uid: "u".into() }).await;
    w1.send(Command::DirectoryBarrier { token: 5 }).await;
    w1.directory(true).await;
    let seq = w2.directory(false).await;
    assert!(w1.next(Duration::from_millis(400)).await.is_none(), "settled although w2 has not applied the bind");
    w2.send(Command::DirectoryAck { seq }).await;
    assert_eq!(w1.next(WAIT).await, Some(Command::DirectorySettled { token: 5 }));

    // w2 stops acknowledging: a barrier is answered anyway, after about a second.
    w1.send(Command::JoinGroup { conn, group: "g".into() }).await;
    w1.send(Command::DirectoryBarrier { token: 6 }).await;
    let started = Instant::now();
    w1.directory(true).await;
    w2.directory(false).await;
    assert_eq!(w1.next(WAIT).await, Some(Command::DirectorySettled { token: 6 }));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(3), "answered after {waited:?}");
    let _ = ws.close(None).await;
}

/// Lookups by uid or group go where a send to them would: with the directory, one gateway per
/// lookup (the one holding the name), with the right answers; without it, every gateway. A goim
/// heartbeat's room count and a join's member list are such lookups. A count of every client
/// (`""`) still asks every gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_ask_only_the_gateways_holding_the_name() {
    for (net, extra, per_lookup) in [(205, &["--no-directory"][..], 3), (206, &[][..], 1)] {
        let mut held = held_over(net, 3, extra).await;
        let Held { metrics, x, y, z, .. } = &mut held;
        let before = sum(metrics, "lookups_total").await;
        for _ in 0..5 {
            assert_eq!(z.call("get_client_id_by_uid", json!(["u1"])).await, json!([x.id]));
            assert_eq!(z.call("is_uid_online", json!(["u1"])).await, json!(true));
            assert_eq!(z.call("get_client_count_by_group", json!(["g1"])).await, json!(1));
            assert_eq!(z.call("get_uid_list_by_group", json!(["g1"])).await, json!([]));
            let sessions = z.call("get_client_sessions_by_group", json!(["g1"])).await;
            assert!(sessions.get(&y.id).is_some(), "y's session listed: {sessions}");
            assert_eq!(z.call("batch_get_client_count_by_group", json!([["g1"]])).await, json!({"g1": 1}));
        }
        let lookups = sum(metrics, "lookups_total").await - before;
        assert_eq!(lookups, 30 * per_lookup, "6 lookups, 5 times, {per_lookup} gateway(s) each");
        assert_eq!(z.call("get_client_count_by_group", json!([""])).await, json!(3), "every client, on every gateway");
        assert_eq!(z.call("get_client_count_by_group", json!(["nobody"])).await, json!(0));
    }
}
