//! `switchboard bench-api`: what one backend gets from the server API. `send_to_group` from one
//! HTTP client with keep-alive, one request after the other, beside the same sends through
//! `Api::remote` (what PHP's GatewayClient does) in the same run: requests per second and
//! latency percentiles of each.

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct ApiBenchArgs {
    /// The server API's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8700")]
    pub api: String,
    /// A key for every bot (the Gateway API needs one).
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub key: String,
    /// Sends each way.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// The group sent to (its members get every send).
    #[arg(long, default_value = "bench-api")]
    pub group: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One way's figures.
fn figures(h: &Histogram<u64>, elapsed: Duration, failures: usize) -> serde_json::Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({"requests": h.len(), "failures": failures, "per_second": h.len() as f64 / elapsed.as_secs_f64().max(1e-9),
           "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1000.0})
}

pub async fn run(args: ApiBenchArgs, registers: Vec<String>, secret_key: String) -> anyhow::Result<()> {
    anyhow::ensure!(args.requests > 0, "requests must be positive");
    let http = reqwest::Client::builder().pool_max_idle_per_host(1).build().context("HTTP client")?;
    let url = format!("{}/api/call", args.api.trim_end_matches('/'));
    let body = json!({"method": "send_to_group", "groups": [args.group], "message": "{\"method\":\"bench\"}"}).to_string();
    let api = business::Api::remote(registers, secret_key);
    let new_histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram");

    // Warm both paths: the keep-alive connection, the remote API's pooled gateway links.
    for _ in 0..20 {
        http.post(&url).bearer_auth(&args.key).header("content-type", "application/json").body(body.clone()).send().await.context("the API")?;
        api.send_to_group(&[&args.group], "{\"method\":\"bench\"}", &[]).await.context("Api::remote")?;
    }

    let (mut h, mut failures) = (new_histogram()?, 0);
    let started = Instant::now();
    for _ in 0..args.requests {
        let t = Instant::now();
        let r = http.post(&url).bearer_auth(&args.key).header("content-type", "application/json").body(body.clone()).send().await;
        match r {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                h.record(t.elapsed().as_micros().max(1) as u64)?;
            }
            _ => failures += 1,
        }
    }
    let over_http = figures(&h, started.elapsed(), failures);

    let (mut h, mut failures) = (new_histogram()?, 0);
    let started = Instant::now();
    for _ in 0..args.requests {
        let t = Instant::now();
        match api.send_to_group(&[&args.group], "{\"method\":\"bench\"}", &[]).await {
            Ok(()) => h.record(t.elapsed().as_micros().max(1) as u64)?,
            Err(_) => failures += 1,
        }
    }
    let remote = figures(&h, started.elapsed(), failures);

    let out = json!({"workload": "api-send-to-group", "http": over_http, "remote": remote});
    if args.json {
        println!("{out}");
    } else {
        for (way, f) in [("server API (HTTP, keep-alive)", &out["http"]), ("Api::remote (inner protocol)", &out["remote"])] {
            println!(
                "{way:<32} {:>6} sends  {:>8.0}/s  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  failures {}",
                f["requests"],
                f["per_second"].as_f64().unwrap_or(0.0),
                f["p50_ms"].as_f64().unwrap_or(0.0),
                f["p99_ms"].as_f64().unwrap_or(0.0),
                f["max_ms"].as_f64().unwrap_or(0.0),
                f["failures"]
            );
        }
    }
    Ok(())
}
