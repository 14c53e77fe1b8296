//! `switchboard bench`: the load generator. It speaks the client protocol over real WebSocket,
//! text or goim connections (`wire`) to a running system (the chat application), and reports exactly what was
//! delivered, lost and duplicated, latency percentiles, and the servers' CPU and memory.
//!
//! `load` is one process's share of the connections (spread over source addresses so loopback
//! ports never run out); with `--processes P` the parent starts P copies of itself (each under
//! the 20000-files-per-process cap), starts them together, and adds up their partials
//! (`report`). `tally` keeps the exact delivery accounting, `procstat` reads /proc, and
//! `upstream` is the HTTP upstream the proxy workload calls.

pub mod api;
mod load;
mod procstat;
mod report;
mod tally;
pub mod upstream;
mod wire;

use anyhow::Context as _;
use std::net::IpAddr;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Agents log in, join rooms of `room_size` and each says `rate` messages/s to its room.
    Room,
    /// Agents in pairs; each says `rate` messages/s to its partner (`to_uid`).
    Pairs,
    /// Idle connections sending only a heartbeat every `beat` seconds.
    Hold,
    /// Every connection logs in as an agent of one bot at the same instant.
    Login,
    /// Each connection calls a proxied method `rate` times/s (start `bench-upstream` first).
    Proxy,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Gateway addresses (ws://ip:port, or ip:port of a text or goim listener); connections
    /// are spread over them.
    #[arg(long = "url", default_value = "ws://127.0.0.1:7272", value_delimiter = ',')]
    pub urls: Vec<String>,
    /// How the connections talk to the gateway.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: wire::Transport,
    #[arg(long, value_enum, default_value = "room")]
    pub workload: Workload,
    /// Connections to open, over every process.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Members per room (and per bot, so logins stay local to a room).
    #[arg(long, default_value_t = 50)]
    pub room_size: usize,
    /// Messages per second each connection sends.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Seconds of measured sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// After the last send, the run ends once nothing arrived for this many seconds: what is
    /// still missing then is lost (a slow delivery is only late).
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// Seconds after the last send when the run ends anyway.
    #[arg(long, default_value_t = 60.0)]
    pub drain_max: f64,
    /// How the agents ask for presence changes at login: `compact` (rows, one `agents_push`
    /// per tick; what the console asks for), `batch` (one `presence_push` per tick) or `single`
    /// (the contract's one `login_push` per agent).
    #[arg(long, default_value = "compact", value_parser = ["compact", "batch", "single"])]
    pub presence: String,
    /// Heartbeat period of the hold workload, in seconds.
    #[arg(long, default_value_t = 20.0)]
    pub beat: f64,
    /// Local addresses to connect from, round-robin (e.g. 127.0.0.2,127.0.0.3).
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<IpAddr>,
    /// Load generator processes (each holds connections/processes of them).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Handshakes (and logins) in flight per process while connecting.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// The chat's agent secret, to mint agent tokens for the chat workloads.
    #[arg(long, env = "SWITCHBOARD_AGENT_SECRET", hide_env_values = true)]
    pub agent_secret: Option<String>,
    /// Server processes to measure, as role:pid (e.g. from `switchboard status --json`).
    #[arg(long = "server", value_delimiter = ',')]
    pub servers: Vec<procstat::Server>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Internal: run as child number N of a multi-process run.
    #[arg(long, hide = true)]
    pub child: Option<usize>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.connections > 0 && args.room_size > 0 && args.rate > 0.0 && args.processes > 0,
        "connections, room size, rate and processes must be positive"
    );
    if matches!(args.workload, Workload::Room | Workload::Pairs | Workload::Login) || args.transport == wire::Transport::Goim {
        anyhow::ensure!(
            args.agent_secret.as_deref().is_some_and(|s| !s.is_empty()),
            "this workload logs in as agents: give --agent-secret (or SWITCHBOARD_AGENT_SECRET), the system's agent secret"
        );
    }
    let args = Arc::new(args);
    if let Some(k) = args.child {
        return child(args, k).await;
    }
    let before = procstat::sample(&args.servers);
    let connected = Arc::new(std::sync::Mutex::new(Vec::new()));
    let window_end = Arc::new(std::sync::Mutex::new(Vec::new()));
    let parts = if args.processes == 1 {
        let (servers, c, end, duration) = (args.servers.clone(), connected.clone(), window_end.clone(), args.duration);
        let ready = move || {
            if let Ok(mut c) = c.lock() {
                *c = procstat::sample(&servers);
            }
            sample_window_end(servers, duration, end);
        };
        vec![load::share(args.clone(), 0, 1, ready, async {}).await?]
    } else {
        let (parts, c) = children(&args, window_end.clone()).await?;
        if let Ok(mut slot) = connected.lock() {
            *slot = c;
        }
        parts
    };
    let after = procstat::sample(&args.servers);
    let connected = connected.lock().map(|c| c.clone()).unwrap_or_default();
    let window_end = window_end.lock().map(|c| c.clone()).unwrap_or_default();
    let samples = report::ServerSamples { servers: args.servers.clone(), before, connected, window_end, after };
    let summary = report::summarize(&args, &parts, &samples, args.duration)?;
    if args.json {
        println!("{summary}");
    } else {
        report::print_table(&summary);
    }
    Ok(())
}

/// Samples the servers when the measured window ends, `duration` seconds from now.
fn sample_window_end(servers: Vec<procstat::Server>, duration: f64, slot: Arc<std::sync::Mutex<Vec<procstat::Usage>>>) {
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs_f64(duration)).await;
        let usage = procstat::sample(&servers);
        if let Ok(mut s) = slot.lock() {
            *s = usage;
        }
    });
}

/// A child: its share, `ready` on stdout, `go` on stdin, then `result <json>`.
async fn child(args: Arc<BenchArgs>, k: usize) -> anyhow::Result<()> {
    let go = async {
        let mut line = String::new();
        let _ = BufReader::new(tokio::io::stdin()).read_line(&mut line).await;
    };
    let partial = load::share(args.clone(), k, args.processes, || println!("ready"), go).await?;
    println!("result {}", serde_json::to_string(&partial)?);
    Ok(())
}

/// Starts the children, waits until all are set up, samples the servers, starts them together.
async fn children(
    args: &BenchArgs,
    window_end: Arc<std::sync::Mutex<Vec<procstat::Usage>>>,
) -> anyhow::Result<(Vec<load::Partial>, Vec<procstat::Usage>)> {
    let exe = std::env::current_exe().context("own executable")?;
    let own_args: Vec<String> = std::env::args().skip(1).collect();
    let mut kids = Vec::new();
    for k in 0..args.processes {
        let mut child = tokio::process::Command::new(&exe)
            .args(&own_args)
            .args(["--child", &k.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting a load generator process")?;
        let stdout = BufReader::new(child.stdout.take().context("child stdout")?).lines();
        let stdin = child.stdin.take().context("child stdin")?;
        kids.push((child, stdout, stdin));
    }
    for (_, out, _) in kids.iter_mut() {
        loop {
            match out.next_line().await? {
                Some(l) if l == "ready" => break,
                Some(_) => {}
                None => anyhow::bail!("a load generator process exited before it was ready"),
            }
        }
    }
    let connected = procstat::sample(&args.servers);
    for (_, _, stdin) in kids.iter_mut() {
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
    }
    sample_window_end(args.servers.clone(), args.duration, window_end);
    let mut parts = Vec::new();
    for (mut child, mut out, _) in kids {
        let mut got = None;
        while let Some(l) = out.next_line().await? {
            if let Some(json) = l.strip_prefix("result ") {
                got = Some(serde_json::from_str(json).context("a child's result")?);
            }
        }
        let _ = child.wait().await;
        parts.push(got.context("a load generator process ended without a result")?);
    }
    Ok((parts, connected))
}
