//! `switchboard`: one binary, every role. Each subcommand runs one role in the foreground.

mod bench;
mod config;
mod metrics;
mod supervisor;

use anyhow::Context as _;

/// jemalloc instead of glibc's malloc: every process of the split allocates per message and per
/// login (frames, sessions, JSON), and glibc's malloc and free were a sixth to a third of the
/// instructions. With jemalloc the workers take 11 % fewer per room message and 13 % fewer per
/// login, the gateway 10 % fewer per delivery (callgrind), for the same memory per idle
/// connection (docs/BENCHMARKS.md, session 14; mimalloc was faster still but held a third more
/// per connection). SQLite's own C allocations stay on glibc's: the crate's symbols are prefixed.
/// jemalloc's background thread is on (as Redis turns it on): jemalloc gives freed pages back to
/// the system only when it allocates or frees, so an idle gateway kept the pages its clients'
/// login burst freed for as long as it stayed idle (≈ 200 bytes of RSS per idle connection,
/// docs/BENCHMARKS.md); the thread returns them on jemalloc's schedule (10 s) instead.
/// Built without the `jemalloc` feature, the binary keeps glibc's, for heap profilers (massif).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "A GatewayWorker-compatible real-time gateway")]
struct Cli {
    /// TOML config file; flags override it, built-in defaults fill the rest.
    #[arg(long, short, global = true, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Shared secret for the inner ports and the register ('' = no check).
    #[arg(long, global = true, env = "SWITCHBOARD_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Register addresses (repeat or comma-separate), for gateways and workers.
    #[arg(long = "register", global = true, value_delimiter = ',')]
    registers: Vec<String>,
    /// Serve Prometheus metrics (and, on gateways, /connections) on this address.
    #[arg(long, global = true)]
    metrics: Option<SocketAddr>,
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Start every role of this box under a supervising master (config: switchboard.toml).
    Start {
        /// Run in the background: pid file, log file; returns once every process is ready.
        #[arg(short = 'd', long)]
        daemon: bool,
    },
    /// Stop the running system.
    Stop {
        /// Gracefully: gateways close clients with a goodbye, workers finish what they hold.
        #[arg(short = 'g', long)]
        graceful: bool,
    },
    /// Replace the business workers one at a time with fresh processes, losing nothing.
    Reload,
    /// One row per process: role, pid, address, uptime, memory, CPU, traffic, restarts.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The client connections of every gateway on this box.
    Connections {
        #[arg(long)]
        json: bool,
    },
    /// Run a register: tracks gateways and tells workers where they are.
    Register(RegisterArgs),
    /// Run a gateway: holds client WebSocket connections.
    Gateway(GatewayArgs),
    /// Run a business worker: runs the application's event callbacks.
    Business(BusinessArgs),
    /// Run the LINE channel: signed webhooks in, agents' replies out (config: [events.line]).
    Line(LineArgs),
    /// Run the server API: the Gateway API and the chat over HTTP/JSON (config: [api]).
    Api(ApiArgs),
    /// Make, list and revoke the server API's keys (kept, as hashes, in the keys file).
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Load-test a running system: the chat's client protocol over many WebSocket connections.
    Bench(bench::BenchArgs),
    /// Benchmark the server API: send_to_group over HTTP beside the same through Api::remote.
    BenchApi(bench::api::ApiBenchArgs),
    /// An HTTP upstream for `bench --workload proxy`: echoes each POST's body after a delay.
    BenchUpstream {
        #[arg(long, default_value = "127.0.0.1:8799")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 20)]
        delay_ms: u64,
    },
    /// Bring the chat store's schema up to this build's version (every worker also does this
    /// when it starts, under a lock, so this is for doing it before an upgrade, by hand).
    Migrate {
        /// The store (default [events] store).
        #[arg(long)]
        store: Option<String>,
    },
    /// Work on the chat's store itself.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Mint an agent token (HS256, signed with SWITCHBOARD_AGENT_SECRET, [events] agent_secret
    /// or the run directory's generated agent-secret).
    Token(TokenArgs),
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy an SQLite store (every table) into a PostgreSQL or MySQL database, then verify
    /// each table by row count and checksum. Safe to run again: rows already copied are
    /// skipped, so an interrupted copy is finished by running it once more.
    Copy {
        /// The SQLite store, e.g. sqlite:run/switchboard.db.
        #[arg(long)]
        from: String,
        /// The target, e.g. postgres://user@db-host/switchboard or mysql://user@db-host/switchboard.
        #[arg(long)]
        to: String,
    },
}

#[derive(Args)]
struct RegisterArgs {
    /// Address to listen on (default 127.0.0.1:1236).
    #[arg(long)]
    listen: Option<String>,
}

#[derive(Args)]
struct GatewayArgs {
    /// Client WebSocket listener (default 0.0.0.0:7272).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Listener for text clients, one JSON message per line over TCP (default: off).
    #[arg(long)]
    text_listen: Option<SocketAddr>,
    /// Listener for goim binary-packet clients over TCP (default: off).
    #[arg(long)]
    goim_listen: Option<SocketAddr>,
    /// LAN IPv4 address workers reach this gateway on; it is encoded in every client_id (default 127.0.0.1).
    #[arg(long)]
    lan_ip: Option<Ipv4Addr>,
    /// Inner port for workers and API clients (default 2300); distinct per gateway process.
    #[arg(long)]
    inner_port: Option<u16>,
    /// Listen address for the inner port when it differs from --lan-ip (Docker/NAT).
    #[arg(long)]
    inner_listen: Option<IpAddr>,
    /// Client heartbeat period in seconds; 0 disables (default 25).
    #[arg(long)]
    ping_interval: Option<f64>,
    /// Silent heartbeat periods before a client is closed; 0 = never (default 2).
    #[arg(long)]
    ping_not_response_limit: Option<u32>,
    /// Text sent to idle clients at each heartbeat (default: nothing).
    #[arg(long)]
    ping_data: Option<String>,
    /// Client messages the gateway keeps as heartbeats instead of passing them to a worker, as
    /// a JSON list; '[]' passes every message on, as GatewayWorker does (default
    /// '["beat", "{\"method\":\"beat\"}"]').
    #[arg(long)]
    heartbeat_messages: Option<String>,
    /// Largest client message in bytes; larger ones are refused with close code 1009 (default 1 MiB).
    #[arg(long)]
    max_message_size: Option<usize>,
    /// Messages queued per client before it counts as a slow reader and is closed (default 1024).
    #[arg(long)]
    client_queue: Option<usize>,
    /// Messages per second one client may send before it is closed with 1008; 0 = no limit (default 100).
    #[arg(long)]
    rate_limit: Option<f64>,
    /// Client connections one IP may hold; 0 = no limit (default 1000).
    #[arg(long)]
    max_connections_per_ip: Option<usize>,
    /// Seconds a text or goim client may have nothing to do before its connection is parked
    /// without a task; 0 = never (default 2).
    #[arg(long)]
    park_after: Option<f64>,
}

#[derive(Args)]
struct LineArgs {
    /// Webhook listener (default [events.line] listen, 127.0.0.1:8790).
    #[arg(long)]
    listen: Option<String>,
    /// The chat's store, shared with the workers (default [events] store).
    #[arg(long)]
    store: Option<String>,
}

#[derive(Args)]
struct ApiArgs {
    /// Listener (default [api] listen).
    #[arg(long)]
    listen: Option<String>,
    /// The chat's store, shared with the workers (default [events] store).
    #[arg(long)]
    store: Option<String>,
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Make a key and print it (once: only its SHA-256 is kept).
    New {
        /// A bot the key reaches (repeat for several); '*' for every bot and the raw Gateway API.
        #[arg(long = "bot", required = true)]
        bots: Vec<String>,
        /// Let the key write (send, post, assign, close); without it, read only.
        #[arg(long)]
        write: bool,
        /// What the key is for, shown by `list` and in the API's logs.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// The keys in the keys file (never the keys themselves).
    List,
    /// Revoke a key by its id (or the key itself); the API stops taking it within a second.
    Revoke { id: String },
}

#[derive(Args)]
struct TokenArgs {
    /// The bot id the agent belongs to.
    #[arg(long)]
    bid: String,
    /// The agent's customer_id.
    #[arg(long)]
    agent: String,
    /// Validity in seconds (default one day).
    #[arg(long, default_value_t = 86_400)]
    ttl: u64,
}

#[derive(Args)]
struct BusinessArgs {
    /// Worker name, part of the key gateways know it by (default BusinessWorker).
    #[arg(long)]
    name: Option<String>,
    /// Worker index within its name (default: the process id, unique per host).
    #[arg(long)]
    index: Option<u32>,
    /// The application to run: `chat` (the customer-service chat, default) or `probe`, which
    /// exposes the raw Gateway API to clients (tests and diagnostics only).
    #[arg(long)]
    app: Option<String>,
    /// The chat's store: `sqlite:<path>` (default sqlite:run/switchboard.db).
    #[arg(long)]
    store: Option<String>,
    /// Send to every gateway, as PHP workers do, instead of only to those holding the uid or
    /// group (`[business] directory = false`).
    #[arg(long)]
    no_directory: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut cli = cli;
    if cli.config.is_none() && std::path::Path::new("switchboard.toml").exists() {
        cli.config = Some(PathBuf::from("switchboard.toml"));
    }
    let file = config::File::load(cli.config.as_deref())?;
    let role = match cli.role {
        Role::Gateway(_) => config::ProcessRole::Gateway,
        Role::Business(_) => config::ProcessRole::Worker,
        _ => config::ProcessRole::Other,
    };
    let mut builder = match file.threads(role) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder.enable_all().build().context("starting the runtime")?;
    runtime.block_on(run(cli, file))
}

/// Serves `/metrics` when asked to, and tells a supervising master where.
async fn serve_metrics(addr: Option<SocketAddr>, source: metrics::Source) -> anyhow::Result<()> {
    if let Some(addr) = addr {
        let bound = metrics::serve(addr, source).await?;
        business::ready::line(&format!("metrics {bound}"));
    }
    Ok(())
}

/// `switchboard api-key new | list | revoke`.
fn api_key(file: &config::File, cmd: ApiKeyCommand) -> anyhow::Result<()> {
    use http_api::keys::KeysFile;
    let path = file.api_keys_file();
    let mut keys = KeysFile::read(&path).map_err(anyhow::Error::msg)?;
    match cmd {
        ApiKeyCommand::New { bots, write, name } => {
            let (key, stored) = keys.new_key(&name, bots, write).map_err(anyhow::Error::msg)?;
            let id = stored.id.clone();
            keys.write(&path).map_err(anyhow::Error::msg)?;
            eprintln!(
                "key {id} made ({}); it is shown once, only its hash is kept in {}:",
                if write { "read and write" } else { "read only" },
                path.display()
            );
            println!("{key}");
        }
        ApiKeyCommand::List => {
            println!("{:<14} {:<20} {:<20} {:<6} {:<8} created", "id", "name", "bots", "write", "state");
            for k in &keys.keys {
                let state = if k.revoked { "revoked" } else { "active" };
                println!("{:<14} {:<20} {:<20} {:<6} {:<8} {}", k.id, k.config.name, k.config.bots.join(","), k.config.write, state, k.created);
            }
        }
        ApiKeyCommand::Revoke { id } => {
            if !keys.revoke(&id) {
                anyhow::bail!("no key {id:?} in {} (`switchboard api-key list` shows them)", path.display());
            }
            keys.write(&path).map_err(anyhow::Error::msg)?;
            println!("revoked; the API stops taking it within a second");
        }
    }
    Ok(())
}

/// Tells a supervising master this process is ready (nothing when run by hand).
pub fn ready_line(details_json: &str) {
    business::ready::announce(details_json);
}

/// Resolves when SIGINT or SIGTERM arrives.
fn stop_signal() -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!(signal = sig, "stopping");
            let _ = tx.send(());
        }
    });
    Ok(rx)
}

async fn run(cli: Cli, file: config::File) -> anyhow::Result<()> {
    let shared_secret = cli.secret_key.clone().or(file.secret_key.clone());
    let shared_registers = if cli.registers.is_empty() { file.registers.clone() } else { Some(cli.registers.clone()) };
    let metrics = cli.metrics;
    match cli.role {
        Role::Start { daemon: true } => supervisor::daemonize(cli.config).await?,
        Role::Start { daemon: false } => supervisor::master(cli.config).await?,
        Role::Stop { graceful } => supervisor::command(cli.config, supervisor::control::Request::Stop { graceful }, false).await?,
        Role::Reload => supervisor::command(cli.config, supervisor::control::Request::Reload, false).await?,
        Role::Status { json } => supervisor::command(cli.config, supervisor::control::Request::Status, json).await?,
        Role::Connections { json } => supervisor::command(cli.config, supervisor::control::Request::Connections, json).await?,
        Role::Bench(args) => bench::run(args).await?,
        Role::BenchApi(args) => {
            let registers = shared_registers.unwrap_or_else(|| vec!["127.0.0.1:1236".into()]);
            let secret = cli.secret_key.clone().or(file.secret_key.clone()).unwrap_or_default();
            bench::api::run(args, registers, secret).await?
        }
        Role::BenchUpstream { listen, delay_ms } => bench::upstream::serve(listen, Duration::from_millis(delay_ms)).await?,
        Role::Store(StoreCommand::Copy { from, to }) => {
            let pool = events::store::PoolConfig { max_connections: 2, acquire_timeout: std::time::Duration::from_secs(10) };
            let copied =
                events::store::copy::copy(&from, &to, pool, |line| println!("{line}")).await.map_err(|e| anyhow::anyhow!("store copy: {e}"))?;
            let rows: usize = copied.iter().map(|c| c.rows).sum();
            println!("copied and verified {rows} rows in {} tables; point [events] store at the new database", copied.len());
        }
        Role::Migrate { store } => {
            let mut config = file.events;
            if let Some(s) = store {
                config.store = s;
            }
            println!("{}", events::store::migrate(&config).await.map_err(|e| anyhow::anyhow!(e))?);
        }
        Role::Token(args) => {
            let mut secret = file.events.agent_secret.clone();
            if secret.is_empty() {
                secret = std::env::var("SWITCHBOARD_AGENT_SECRET").unwrap_or_default();
            }
            if secret.is_empty() {
                // The one `start` generated for this box, if it did.
                let run_dir = file.run_dir();
                secret = std::fs::read_to_string(run_dir.join("agent-secret")).map(|s| s.trim().to_string()).unwrap_or_default();
            }
            let token = events::auth::mint(&secret, &args.bid, &args.agent, args.ttl).context(
                "set SWITCHBOARD_AGENT_SECRET (or [events] agent_secret) first, or run `switchboard start` here once to generate run/agent-secret",
            )?;
            println!("{token}");
        }
        Role::ApiKey(cmd) => api_key(&file, cmd)?,
        Role::Api(args) => {
            let stop = stop_signal()?;
            let mut events_config = file.events.clone();
            if let Some(s) = args.store {
                events_config.store = s;
            }
            // Messages posted here are recorded for the webhooks as the workers' are.
            events_config.feed |= !file.api.webhooks.is_empty();
            let mut api_config = file.api.clone();
            if let Some(l) = args.listen {
                api_config.listen = l;
            }
            if api_config.listen.is_empty() && api_config.webhooks.is_empty() {
                anyhow::bail!("nothing to run: set [api] listen (e.g. \"127.0.0.1:8700\") or pass --listen, or configure [[api.webhooks]]");
            }
            let registers = shared_registers.or(file.business.registers.clone()).unwrap_or_else(|| vec!["127.0.0.1:1236".into()]);
            let secret = cli.secret_key.or(file.business.secret_key.clone()).or(file.secret_key.clone()).unwrap_or_default();
            let chat = Arc::new(events::Chat::new(events_config).await.map_err(|e| anyhow::anyhow!(e))?);
            serve_metrics(metrics, metrics::Source::Chat("api", chat.metrics.clone())).await?;
            let (quit, quitting) = tokio::sync::watch::channel(false);
            let followers = http_api::spawn_webhooks(&api_config.webhooks, chat.store.clone(), quitting.clone()).map_err(anyhow::Error::msg)?;
            let mut address = String::new();
            let server = if api_config.listen.is_empty() {
                None
            } else {
                let env_keys = std::env::var("SWITCHBOARD_API_KEYS").ok();
                let listen = api_config.listen.clone();
                let state = http_api::State::new(chat, business::Api::remote(registers, secret), api_config, file.api_keys_file(), env_keys)
                    .map_err(|e| anyhow::anyhow!(e))?;
                let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("API listener {listen}"))?;
                address = listener.local_addr().map(|a| a.to_string()).unwrap_or(listen);
                tracing::info!(%address, "server API listening: see GET /api/openapi.json");
                let mut q = quitting.clone();
                Some(tokio::spawn(http_api::serve(state, listener, async move {
                    let _ = q.wait_for(|v| *v).await;
                })))
            };
            ready_line(&serde_json::json!({"role": "api", "address": address, "webhooks": followers.len()}).to_string());
            let _ = stop.await;
            let _ = quit.send(true);
            if let Some(server) = server {
                server.await.context("API server task")??;
            }
            for f in followers {
                let _ = f.await;
            }
        }
        Role::Register(args) => {
            let stop = stop_signal()?;
            let section = file.register;
            let listen = args.listen.unwrap_or(section.listen);
            let config = register::Config {
                listen: listen.parse().with_context(|| format!("register listen address {listen:?}"))?,
                secret_key: cli.secret_key.or(section.secret_key).or(file.secret_key).unwrap_or_default(),
                auth_timeout: Duration::from_secs_f64(section.auth_timeout),
                peer_timeout: Duration::from_secs_f64(section.peer_timeout),
                stats: Default::default(),
            };
            let listener = gateway::server::bind(config.listen, false)?;
            serve_metrics(metrics, metrics::Source::Register(config.stats.clone())).await?;
            ready_line(&serde_json::json!({"role": "register", "address": config.listen.to_string()}).to_string());
            tokio::select! {
                r = register::serve(listener, config) => r.context("register")?,
                _ = stop => {}
            }
        }
        Role::Gateway(args) => {
            let stop = stop_signal()?;
            let mut c = file.gateway.unwrap_or_default();
            if let Some(s) = shared_secret {
                c.secret_key = s;
            }
            if let Some(r) = shared_registers {
                c.registers = r;
            }
            macro_rules! set { ($($f:ident),*) => { $(if let Some(v) = args.$f { c.$f = v; })* } }
            set!(
                listen,
                lan_ip,
                inner_port,
                ping_interval,
                ping_not_response_limit,
                ping_data,
                max_message_size,
                client_queue,
                rate_limit,
                max_connections_per_ip,
                park_after
            );
            if args.inner_listen.is_some() {
                c.inner_listen = args.inner_listen;
            }
            if let Some(list) = &args.heartbeat_messages {
                c.heartbeat_messages = serde_json::from_str(list).context("--heartbeat-messages: a JSON list of strings")?;
            }
            if args.text_listen.is_some() {
                c.text_listen = args.text_listen;
            }
            if args.goim_listen.is_some() {
                c.goim_listen = args.goim_listen;
            }
            let assets: Option<gateway::listen::web::Assets> = if c.web { Some(Arc::new(|path: &str| events::web::asset(path))) } else { None };
            let mut running = gateway::start_with(c, assets).await?;
            serve_metrics(metrics, metrics::Source::Gateway(running.stats.clone(), running.lister())).await?;
            ready_line(
                &serde_json::json!({"role": "gateway", "address": running.public.to_string(), "inner": running.inner,
                                    "text": running.text.map(|a| a.to_string()), "goim": running.goim.map(|a| a.to_string())})
                .to_string(),
            );
            tokio::select! {
                _ = running.wait() => {}
                _ = stop => running.shutdown(Duration::from_secs(5)).await,
            }
        }
        Role::Line(args) => {
            let stop = stop_signal()?;
            let mut events_config = file.events;
            events_config.feed |= !file.api.webhooks.is_empty();
            if let Some(l) = args.listen {
                events_config.line.listen = l;
            }
            if let Some(s) = args.store {
                events_config.store = s;
            }
            let registers = shared_registers.or(file.business.registers).unwrap_or_else(|| vec!["127.0.0.1:1236".into()]);
            let secret = cli.secret_key.or(file.business.secret_key).or(file.secret_key).unwrap_or_default();
            let chat = Arc::new(events::Chat::new(events_config).await.map_err(|e| anyhow::anyhow!(e))?);
            serve_metrics(metrics, metrics::Source::Chat("line", chat.metrics.clone())).await?;
            let line = events::line::Line::new(chat, business::Api::remote(registers, secret)).map_err(|e| anyhow::anyhow!(e))?;
            let listen = line.config.listen.clone();
            let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("LINE webhook listener {listen}"))?;
            let address = listener.local_addr().map(|a| a.to_string()).unwrap_or(listen);
            tracing::info!(%address, "LINE channel listening: POST /line/<bid>/webhook");
            ready_line(&serde_json::json!({"role": "line", "address": address}).to_string());
            line.serve(listener, async {
                let _ = stop.await;
            })
            .await?;
        }
        Role::Business(args) => {
            let stop = stop_signal()?;
            let section = file.business;
            let app = args.app.unwrap_or_else(|| section.app.clone());
            let store = args.store.unwrap_or_else(|| file.events.store.clone());
            let mut c = business::WorkerConfig {
                standby: section.standby(&app, &store),
                name: args.name.unwrap_or(section.name),
                registers: cli.registers.clone(),
                secret_key: cli.secret_key.or(section.secret_key).or(file.secret_key).unwrap_or_default(),
                directory: section.directory && !args.no_directory,
                ..Default::default()
            };
            if let Some(i) = args.index.or(section.index) {
                c.index = i;
            }
            if c.registers.is_empty() {
                c.registers = section.registers.or(file.registers).unwrap_or_else(|| vec!["127.0.0.1:1236".into()]);
            }
            let stop = async {
                let _ = stop.await;
            };
            match app.as_str() {
                "probe" => {
                    tracing::warn!(
                        "running the probe application: every client can drive the whole Gateway API; use it for tests and diagnostics only"
                    );
                    serve_metrics(metrics, metrics::Source::Business(c.stats.clone(), None)).await?;
                    let probe = business::probe::Probe { worker: format!("{}:{}", c.name, c.index) };
                    business::run(c, Arc::new(probe), stop).await;
                }
                "chat" => {
                    let mut events_config = file.events;
                    // Webhooks follow the feed the workers record.
                    events_config.feed |= !file.api.webhooks.is_empty();
                    events_config.store = store;
                    let chat = events::Chat::new(events_config).await.map_err(|e| anyhow::anyhow!(e))?;
                    serve_metrics(metrics, metrics::Source::Business(c.stats.clone(), Some(chat.metrics.clone()))).await?;
                    business::run(c, Arc::new(chat), stop).await;
                }
                other => anyhow::bail!("unknown application {other:?} (known: chat, probe)"),
            }
        }
    }
    Ok(())
}
