//! Adds up the processes' partials, with the servers' CPU and memory, into one summary: JSON
//! for scripts, a few lines for people.

use super::load::{new_hist, Partial};
use super::procstat::{Server, Usage};
use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

pub fn encode_hist(h: &Histogram<u64>) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    V2Serializer::new().serialize(h, &mut buf).map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
    Ok(STANDARD.encode(buf))
}

fn decode_hist(s: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = STANDARD.decode(s).context("histogram base64")?;
    Deserializer::new().deserialize(&mut bytes.as_slice()).map_err(|e| anyhow::anyhow!("histogram: {e:?}"))
}

/// Server usage at three moments: before connecting, once connected (idle), after the run.
pub struct ServerSamples {
    pub servers: Vec<Server>,
    pub before: Vec<Usage>,
    pub connected: Vec<Usage>,
    /// When the measured window (`--duration` after the start) ends: before the load
    /// generator's connections close, whose teardown is not the servers' steady state.
    pub window_end: Vec<Usage>,
    pub after: Vec<Usage>,
}

pub fn summarize(args: &super::BenchArgs, parts: &[Partial], s: &ServerSamples, window_secs: f64) -> anyhow::Result<Value> {
    let end = if s.window_end.len() == s.connected.len() { &s.window_end } else { &s.after };
    let mut h = new_hist();
    let sum = |f: fn(&Partial) -> u64| parts.iter().map(f).sum::<u64>();
    for p in parts {
        h.add(decode_hist(&p.hist)?).map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
    }
    let mut reasons = serde_json::Map::new();
    for p in parts {
        for (k, v) in &p.close_reasons {
            let cur = reasons.get(k).and_then(Value::as_u64).unwrap_or(0);
            reasons.insert(k.clone(), (cur + v).into());
        }
    }
    let (expected, received, unique) = (sum(|p| p.expected), sum(|p| p.received), sum(|p| p.unique));
    let first = parts.iter().map(|p| p.first_send_us).filter(|t| *t > 0).min().unwrap_or(0);
    let last = parts.iter().map(|p| p.last_delivery_us).max().unwrap_or(0);
    // From the first send to the last delivery, at least the sending window.
    let carried = if first > 0 && last > first { ((last - first) as f64 / 1e6).max(window_secs) } else { window_secs };
    let ms = |q: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1000.0 };
    let connections = sum(|p| p.connections);
    let mut servers = Vec::new();
    for (i, srv) in s.servers.iter().enumerate() {
        let (b, c, a) = (s.before[i], s.connected[i], s.after[i]);
        servers.push(json!({"role": srv.role, "pid": srv.pid,
            "cpu_secs_run": a.cpu_secs - c.cpu_secs, "cpu_secs_setup": c.cpu_secs - b.cpu_secs,
            "rss_mib_before": b.rss_bytes as f64 / 1048576.0, "rss_mib_connected": c.rss_bytes as f64 / 1048576.0,
            "rss_mib_after": a.rss_bytes as f64 / 1048576.0}));
    }
    let by_role = |role: &str, f: &dyn Fn(usize) -> f64| s.servers.iter().enumerate().filter(|(_, x)| x.role == role).map(|(i, _)| f(i)).sum::<f64>();
    let gw_rss_growth = by_role("gateway", &|i| s.connected[i].rss_bytes as f64 - s.before[i].rss_bytes as f64);
    let server_cpu = s.servers.iter().enumerate().map(|(i, _)| s.after[i].cpu_secs - s.connected[i].cpu_secs).sum::<f64>();
    Ok(json!({
        "workload": format!("{:?}", args.workload).to_lowercase(),
        "transport": format!("{:?}", args.transport).to_lowercase(),
        "connections": connections,
        "connect_failures": sum(|p| p.connect_failures),
        "setup_failures": sum(|p| p.setup_failures),
        "connect_seconds": parts.iter().map(|p| p.connect_secs).fold(0.0, f64::max),
        "processes": parts.len(),
        "sources": args.sources.len().max(1),
        "room_size": args.room_size,
        "rate_per_connection": args.rate,
        "offered_msgs_per_second": if matches!(args.workload, super::Workload::Hold | super::Workload::Login) { 0.0 } else { connections as f64 * args.rate },
        "seconds": window_secs,
        "messages_sent": sum(|p| p.sent),
        "messages_acked": sum(|p| p.acked),
        "deliveries_expected": expected,
        "deliveries_received": received,
        "lost": expected.saturating_sub(unique),
        "duplicated": received - unique,
        "misdelivered": sum(|p| p.misdelivered),
        "deliveries_per_second": unique as f64 / carried,
        "latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999), "max": h.max() as f64 / 1000.0, "samples": h.len()},
        "closed_by_server": sum(|p| p.closed_by_server),
        "close_reasons": reasons,
        "still_open": sum(|p| p.still_open),
        "logins_answered": sum(|p| p.logins_answered),
        "presence_complete": sum(|p| p.presence_complete),
        "presence_max_ms": parts.iter().map(|p| p.presence_max_ms).fold(0.0, f64::max),
        "presence_entries": sum(|p| p.presence_entries),
        "presence_bytes": sum(|p| p.presence_bytes),
        "servers": servers,
        "server_cpu_secs_run": server_cpu,
        "gateway_rss_bytes_per_connection": if connections > 0 { gw_rss_growth / connections as f64 } else { 0.0 },
        "gateway_cpu_percent_of_one_core": 100.0 * by_role("gateway", &|i| end[i].cpu_secs - s.connected[i].cpu_secs) / window_secs.max(0.001),
        "load_generator_cpu_secs": parts.iter().map(|p| p.cpu_secs).sum::<f64>(),
    }))
}

pub fn print_table(v: &Value) {
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let u = |k: &str| v[k].as_u64().unwrap_or(0);
    println!("workload           {}", v["workload"].as_str().unwrap_or(""));
    println!(
        "connections        {} ({} failed to connect, {} to set up; {:.1}s; {} processes, {} source addresses)",
        u("connections"),
        u("connect_failures"),
        u("setup_failures"),
        f("connect_seconds"),
        u("processes"),
        u("sources")
    );
    println!(
        "offered            {:.0} msg/s ({} per connection, rooms of {}) for {:.0}s",
        f("offered_msgs_per_second"),
        f("rate_per_connection"),
        u("room_size"),
        f("seconds")
    );
    println!("messages           {} sent, {} acknowledged", u("messages_sent"), u("messages_acked"));
    println!(
        "deliveries         {} received of {} expected: lost {}, duplicated {}, misdelivered {}",
        u("deliveries_received"),
        u("deliveries_expected"),
        u("lost"),
        u("duplicated"),
        u("misdelivered")
    );
    println!("deliveries/s       {:.0}", f("deliveries_per_second"));
    let l = &v["latency_ms"];
    let g = |k: &str| l[k].as_f64().unwrap_or(0.0);
    println!("latency ms         p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}", g("p50"), g("p99"), g("p999"), g("max"));
    println!("connections at end {} open, {} closed by the server {}", u("still_open"), u("closed_by_server"), v["close_reasons"]);
    if u("logins_answered") > 0 {
        println!(
            "logins             {} answered, {} saw every agent (slowest {:.0} ms); {} agents named online in {:.1} MB",
            u("logins_answered"),
            u("presence_complete"),
            f("presence_max_ms"),
            u("presence_entries"),
            u("presence_bytes") as f64 / 1e6
        );
    }
    for s in v["servers"].as_array().into_iter().flatten() {
        println!(
            "server {:<9} pid {:<7} cpu {:.2}s run ({:.2}s setup)  rss {:.1} → {:.1} → {:.1} MiB",
            s["role"].as_str().unwrap_or(""),
            s["pid"],
            s["cpu_secs_run"].as_f64().unwrap_or(0.0),
            s["cpu_secs_setup"].as_f64().unwrap_or(0.0),
            s["rss_mib_before"].as_f64().unwrap_or(0.0),
            s["rss_mib_connected"].as_f64().unwrap_or(0.0),
            s["rss_mib_after"].as_f64().unwrap_or(0.0)
        );
    }
    if v["servers"].as_array().is_some_and(|a| !a.is_empty()) {
        println!(
            "gateway memory     {:.0} bytes per connection; gateway CPU {:.1}% of one core",
            f("gateway_rss_bytes_per_connection"),
            f("gateway_cpu_percent_of_one_core")
        );
    }
    println!("load generator     {:.2} CPU s", f("load_generator_cpu_secs"));
}
