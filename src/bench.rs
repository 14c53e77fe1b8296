//! `switchboard bench`: a small load generator for the core path.
//!
//! Every connection joins a room of `room_size` and sends `rate` messages per second to its room
//! through the probe application (client → gateway → worker → `send_to_group` → gateway → every
//! member). Each message carries its send time, so every receiver measures end-to-end latency.
//! It prints deliveries expected and received, deliveries per second and latency percentiles.

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Gateway WebSocket URLs; connections are spread over them.
    #[arg(long = "url", default_value = "ws://127.0.0.1:7272", value_delimiter = ',')]
    urls: Vec<String>,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Members per room.
    #[arg(long, default_value_t = 50)]
    room_size: usize,
    /// Messages per second each connection sends to its room.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// Seconds of measured sending.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    connect_failures: AtomicU64,
    /// Microseconds since the epoch of the last delivery.
    last_delivery: AtomicU64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0 && args.room_size > 0 && args.rate > 0.0, "connections, room size and rate must be positive");
    let epoch = Instant::now();
    let counters = Arc::new(Counters::default());
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?));
    let mut sockets = Vec::with_capacity(args.connections);
    let connect_start = Instant::now();
    for i in 0..args.connections {
        let url = &args.urls[i % args.urls.len()];
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => sockets.push(ws),
            Err(e) => {
                counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("connect {url}: {e}");
            }
        }
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();
    let n = sockets.len();
    // Join rooms and wait until every join is acknowledged before measuring.
    let mut joined = Vec::with_capacity(n);
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let room = format!("bench-{}", i / args.room_size);
        let mut client_id = String::new();
        while let Some(Ok(m)) = ws.next().await {
            let v: serde_json::Value = serde_json::from_str(m.to_text().unwrap_or("")).unwrap_or_default();
            if v["event"] == "hello" {
                client_id = v["client_id"].as_str().unwrap_or("").to_string();
                break;
            }
        }
        let join = json!({"call": "join_group", "args": [client_id, room], "tag": "join"});
        ws.send(Message::Text(join.to_string().into())).await.context("join")?;
        while let Some(Ok(m)) = ws.next().await {
            if m.to_text().unwrap_or("").contains("\"join\"") {
                break;
            }
        }
        joined.push((ws, room));
    }
    let members_of = |i: usize| -> u64 {
        let room = i / args.room_size;
        (n.min((room + 1) * args.room_size) - room * args.room_size) as u64
    };
    let expected = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    let measure_start = epoch.elapsed().as_micros() as u64;
    for (i, (ws, room)) in joined.into_iter().enumerate() {
        let (mut tx, mut rx) = ws.split();
        let counters = counters.clone();
        let hist = hist.clone();
        let expected = expected.clone();
        let members = members_of(i);
        let period = Duration::from_secs_f64(1.0 / args.rate);
        tasks.push(tokio::spawn(async move {
            // Spread the first sends over one period so connections do not fire in lockstep.
            let offset = period.mul_f64((i as f64 * 0.618_033_988_7) % 1.0);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            let mut seq = 0u64;
            let drain_until = stop_at + Duration::from_secs(3);
            loop {
                tokio::select! {
                    _ = tick.tick(), if Instant::now() < stop_at => {
                        seq += 1;
                        let payload = json!({"s": i, "n": seq, "t": epoch.elapsed().as_micros() as u64}).to_string();
                        let req = json!({"call": "send_to_group", "args": [[room], payload]});
                        if tx.send(Message::Text(req.to_string().into())).await.is_err() {
                            break;
                        }
                        counters.sent.fetch_add(1, Ordering::Relaxed);
                        expected.fetch_add(members, Ordering::Relaxed);
                    }
                    m = rx.next() => {
                        let Some(Ok(Message::Text(t))) = m else { if m.is_none() { break } else { continue } };
                        if let Some(at) = t.find("\"t\":") {
                            let sent: u64 = t[at + 4..].trim_end_matches('}').parse().unwrap_or(0);
                            let now = epoch.elapsed().as_micros() as u64;
                            counters.received.fetch_add(1, Ordering::Relaxed);
                            counters.last_delivery.fetch_max(now, Ordering::Relaxed);
                            if let Ok(mut h) = hist.lock() {
                                let _ = h.record(now.saturating_sub(sent).max(1));
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(drain_until.into()) => break,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let window = args.duration;
    let h = hist.lock().map_err(|_| anyhow::anyhow!("histogram lock"))?.clone();
    let sent = counters.sent.load(Ordering::Relaxed);
    let received = counters.received.load(Ordering::Relaxed);
    let expected = expected.load(Ordering::Relaxed);
    // From the first send to the last delivery: the window in which the load was carried.
    let carried_secs = (counters.last_delivery.load(Ordering::Relaxed).saturating_sub(measure_start) as f64 / 1e6).max(window);
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let summary = json!({
        "connections": n,
        "connect_failures": counters.connect_failures.load(Ordering::Relaxed),
        "connect_seconds": connect_secs,
        "room_size": args.room_size,
        "rate_per_connection": args.rate,
        "seconds": window,
        "messages_sent": sent,
        "deliveries_expected": expected,
        "deliveries_received": received,
        "deliveries_missing": expected.saturating_sub(received),
        "deliveries_per_second": received as f64 / carried_secs,
        "latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999), "max": h.max() as f64 / 1000.0},
    });
    if args.json {
        println!("{summary}");
    } else {
        println!("connections        {n} ({} failed, {connect_secs:.2}s to connect)", summary["connect_failures"]);
        println!("rooms              {} members, {} msg/s per connection, {window}s", args.room_size, args.rate);
        println!("messages sent      {sent}");
        println!("deliveries         {received} of {expected} expected");
        println!("deliveries/s       {:.0}", summary["deliveries_per_second"].as_f64().unwrap_or(0.0));
        println!("latency ms         p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}", ms(0.5), ms(0.99), ms(0.999), h.max() as f64 / 1000.0);
    }
    Ok(())
}
