//! The master: `switchboard start` runs every role of this box as a child process and keeps
//! them running; `stop`, `reload`, `status` and `connections` talk to it over its control
//! socket. `slot` supervises one child, `control` is the socket protocol, `status` the table.

pub mod control;
pub mod slot;
pub mod status;

use crate::config::File;
use anyhow::{bail, Context as _};
use control::Request;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// What this box runs, from the config file (or the defaults: everything, one gateway, two
/// workers, files under `run/`).
pub struct Plan {
    pub roles: Vec<String>,
    pub gateways: usize,
    pub workers: usize,
    pub run_dir: PathBuf,
    /// The config file, made absolute so children find it whatever their working directory.
    pub config: Option<PathBuf>,
    pub metrics_ip: String,
}

impl Plan {
    pub fn new(file: &File, config: Option<&Path>) -> anyhow::Result<Plan> {
        let roles = file.roles.clone().unwrap_or_else(|| {
            let mut all = vec!["register".to_string(), "gateway".into(), "business".into()];
            // The LINE channel runs where one is configured.
            if !file.events.line.bots.is_empty() {
                all.push("line".into());
            }
            // The server API runs where it has a listener or webhooks to send.
            if !file.api.listen.is_empty() || !file.api.webhooks.is_empty() {
                all.push("api".into());
            }
            all
        });
        for r in &roles {
            if !matches!(r.as_str(), "register" | "gateway" | "business" | "line" | "api") {
                bail!("unknown role {r:?} in roles (register, gateway, business, line, api)");
            }
        }
        let config = match config {
            Some(p) => Some(std::fs::canonicalize(p).with_context(|| format!("config file {}", p.display()))?),
            None => None,
        };
        Ok(Plan {
            roles,
            gateways: file.gateways.unwrap_or(1).max(1),
            workers: file.workers(),
            run_dir: file.run_dir(),
            config,
            metrics_ip: file.metrics_ip.clone().unwrap_or_else(|| "127.0.0.1".into()),
        })
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("switchboard.sock")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.run_dir.join("switchboard.pid")
    }

    pub fn log_file(&self) -> PathBuf {
        self.run_dir.join("switchboard.log")
    }

    /// Every address this box's processes will listen on, with the config key that sets it.
    fn listeners(&self, file: &File) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.runs("register") {
            out.push(("the register ([register] listen)".to_string(), file.register.listen.clone()));
        }
        if self.runs("gateway") {
            let g = file.gateway.clone().unwrap_or_default();
            out.push(("the gateway's client port ([gateway] listen)".into(), g.listen.to_string()));
            for (what, addr) in [("text_listen", g.text_listen), ("goim_listen", g.goim_listen)] {
                if let Some(a) = addr {
                    out.push((format!("the gateway's {what} ([gateway] {what})"), a.to_string()));
                }
            }
            let ip = g.inner_listen.unwrap_or(std::net::IpAddr::V4(g.lan_ip));
            for i in 0..self.gateways {
                let port = g.inner_port as usize + i;
                out.push((format!("gateway#{i}'s inner port ([gateway] inner_port)"), std::net::SocketAddr::new(ip, port as u16).to_string()));
            }
        }
        if self.runs("line") {
            out.push(("the LINE webhook ([events.line] listen)".into(), file.events.line.listen.clone()));
        }
        if self.runs("api") && !file.api.listen.is_empty() {
            out.push(("the server API ([api] listen)".into(), file.api.listen.clone()));
        }
        out
    }

    /// Fails before anything starts when a port this box needs is taken, naming the role, the
    /// address and the key to change, instead of a child's bare "Address already in use".
    fn check_ports(&self, file: &File) -> anyhow::Result<()> {
        for (what, addr) in self.listeners(file) {
            if let Err(e) = std::net::TcpListener::bind(addr.as_str()) {
                let port = addr.rsplit(':').next().unwrap_or("");
                let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                    format!(
                        "something else listens there: another Switchboard (started from another directory: its `switchboard status` \
                         shows it) or another program (`ss -ltnp 'sport = :{port}'` names it). Stop it, or choose another port in switchboard.toml"
                    )
                } else {
                    "check the address in switchboard.toml".to_string()
                };
                bail!("{what} cannot listen on {addr}: {e}; {hint}");
            }
        }
        Ok(())
    }

    fn runs(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The child processes, in start order.
    fn specs(&self, file: &File, exe: &Path, env: &[(String, String)]) -> Vec<slot::Spec> {
        let base = |role: &str| {
            let mut a = Vec::new();
            if let Some(c) = &self.config {
                a.push("--config".to_string());
                a.push(c.display().to_string());
            }
            a.push("--metrics".into());
            a.push(format!("{}:0", self.metrics_ip));
            a.push(role.to_string());
            a
        };
        let spec = |role: &'static str, index: usize, args: Vec<String>| slot::Spec { role, index, exe: exe.to_path_buf(), args, env: env.to_vec() };
        let mut out = Vec::new();
        if self.runs("register") {
            out.push(spec("register", 0, base("register")));
        }
        if self.runs("gateway") {
            let first = file.gateway.as_ref().map_or(2300, |g| g.inner_port);
            for i in 0..self.gateways {
                let mut a = base("gateway");
                a.push("--inner-port".into());
                a.push((first as usize + i).to_string());
                out.push(spec("gateway", i, a));
            }
        }
        if self.runs("business") {
            for i in 0..self.workers {
                out.push(spec("business", i, base("business")));
            }
        }
        if self.runs("line") {
            // After the workers: its replies' senders and the workers share the store.
            out.push(spec("line", 0, base("line")));
        }
        if self.runs("api") {
            out.push(spec("api", 0, base("api")));
        }
        out
    }
}

struct Handle {
    role: &'static str,
    tx: mpsc::Sender<slot::Cmd>,
}

/// A secret kept in the run directory: read if there, else generated once (32 random bytes,
/// hex) and written readable by this user only.
fn box_secret(plan: &Plan, name: &str, what: &str) -> anyhow::Result<String> {
    let path = plan.run_dir.join(name);
    if let Ok(s) = std::fs::read_to_string(&path) {
        if !s.trim().is_empty() {
            return Ok(s.trim().to_string());
        }
    }
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness for the {what}: {e}"))?;
    let secret = hex::encode(b);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(secret.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    info!(file = %path.display(), "generated the {what} for this box");
    Ok(secret)
}

/// The agent secret for this box: the environment's, the config's, or one generated once and
/// kept in the run directory, so `switchboard start` works with nothing set up.
fn agent_secret(plan: &Plan, file: &File) -> anyhow::Result<Option<String>> {
    if std::env::var_os("SWITCHBOARD_AGENT_SECRET").is_some() || !file.events.agent_secret.is_empty() || !plan.runs("business") {
        return Ok(None);
    }
    box_secret(plan, "agent-secret", "agent secret").map(Some)
}

/// Where the inner secret key generated for a box is kept (see `secret_key`).
pub const SECRET_KEY_FILE: &str = "secret-key";

/// The inner ports' and register's secret key when none is configured anywhere: generated
/// once by the box that runs the register (the one every other server connects to), kept in
/// the run directory and given to every role this `start` runs. Without it, anyone who can
/// reach the inner ports or the register (any local user or container) could register a fake
/// gateway or worker and read every session. `secret_key = ""` keeps GatewayWorker's "no check".
fn secret_key(plan: &Plan, file: &File) -> anyhow::Result<Option<String>> {
    let configured = std::env::var_os("SWITCHBOARD_SECRET_KEY").is_some()
        || file.secret_key.is_some()
        || file.register.secret_key.is_some()
        || file.business.secret_key.is_some()
        || file.gateway.as_ref().is_some_and(|g| !g.secret_key.is_empty());
    if configured {
        return Ok(None);
    }
    if !plan.runs("register") {
        warn!("no secret_key configured: this box's register must have none either; copy the register box's {}/{SECRET_KEY_FILE} into SWITCHBOARD_SECRET_KEY or secret_key", plan.run_dir.display());
        return Ok(None);
    }
    box_secret(plan, SECRET_KEY_FILE, "inner secret key").map(Some)
}

/// The run directory, private to this user (it holds the store, the log, the secrets and
/// the control socket); one made by an older version with wider rights is narrowed.
fn private_run_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("run directory {}", dir.display()))?;
    let mode = std::fs::metadata(dir).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o700);
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700)).with_context(|| format!("making {} private", dir.display()))?;
        info!(dir = %dir.display(), "run directory made private (was {mode:o})");
    }
    Ok(())
}

/// Runs the master in the foreground until it is told to stop.
pub async fn master(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let file = File::load_checked(config_path.as_deref())?;
    let plan = Plan::new(&file, config_path.as_deref())?;
    private_run_dir(&plan.run_dir)?;
    let socket = plan.socket();
    if control::ask(&socket, &Request::Status, Duration::from_secs(2)).await.is_ok() {
        bail!(
            "switchboard is already running from this directory (control socket {}): `switchboard status` shows it, `switchboard stop` stops it",
            socket.display()
        );
    }
    plan.check_ports(&file)?;
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).with_context(|| format!("control socket {}", socket.display()))?;
    std::fs::write(plan.pid_file(), std::process::id().to_string()).context("pid file")?;
    let exe = std::env::current_exe().context("locating the switchboard binary")?;
    let mut env = Vec::new();
    if let Some(secret) = agent_secret(&plan, &file)? {
        env.push(("SWITCHBOARD_AGENT_SECRET".to_string(), secret));
    }
    if let Some(key) = secret_key(&plan, &file)? {
        env.push(("SWITCHBOARD_SECRET_KEY".to_string(), key));
    }

    let mut handles: Vec<Handle> = Vec::new();
    let mut failure = None;
    for spec in plan.specs(&file, &exe, &env) {
        let (tx, rx) = mpsc::channel(16);
        let (first_tx, first_rx) = oneshot::channel();
        let role = spec.role;
        let who = format!("{}#{}", spec.role, spec.index);
        tokio::spawn(slot::run(spec, rx, first_tx));
        handles.push(Handle { role, tx });
        match first_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure = Some(format!("{who} {e}"));
                break;
            }
            Err(_) => {
                failure = Some(format!("{who} did not start"));
                break;
            }
        }
    }
    if let Some(reason) = failure {
        stop_all(&handles, false).await;
        cleanup(&plan);
        bail!("start failed: {reason}");
    }
    info!(processes = handles.len(), socket = %socket.display(), "switchboard started");
    for note in start_notes(&plan, &file) {
        println!("{note}");
    }
    crate::ready_line(&json!({"role": "master", "processes": handles.len()}).to_string());

    let (req_tx, mut req_rx) = mpsc::channel::<(Request, oneshot::Sender<Value>)>(16);
    tokio::spawn(accept_control(listener, req_tx.clone()));
    spawn_signals(req_tx)?;
    let handles = Arc::new(handles);
    let reloading = Arc::new(AtomicBool::new(false));
    let graceful = loop {
        let Some((req, reply)) = req_rx.recv().await else { break false };
        match req {
            Request::Status => {
                let rows = rows(&handles).await;
                let _ = reply.send(json!({"ok": true, "rows": rows}));
            }
            Request::Connections => {
                let _ = reply.send(json!({"ok": true, "connections": connections(&handles).await}));
            }
            Request::Reload => {
                if reloading.swap(true, Ordering::SeqCst) {
                    let _ = reply.send(json!({"ok": false, "error": "a reload is already running"}));
                    continue;
                }
                let (handles, reloading, config_path, exe, env) = (handles.clone(), reloading.clone(), config_path.clone(), exe.clone(), env.clone());
                tokio::spawn(async move {
                    let result = reload(&handles, config_path.as_deref(), &exe, &env).await;
                    reloading.store(false, Ordering::SeqCst);
                    let _ = reply.send(match result {
                        Ok(n) => json!({"ok": true, "replaced": n}),
                        Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
                    });
                });
            }
            Request::Stop { graceful } => {
                let _ = reply.send(json!({"ok": true}));
                break graceful;
            }
        }
    };
    info!(graceful, "switchboard stopping");
    stop_all(&handles, graceful).await;
    cleanup(&plan);
    info!("switchboard stopped");
    Ok(())
}

fn cleanup(plan: &Plan) {
    let _ = std::fs::remove_file(plan.socket());
    let _ = std::fs::remove_file(plan.pid_file());
}

/// Graceful: gateways say goodbye first (their clients' last events reach the workers), then
/// workers finish what they hold, then the register. Otherwise everything at once.
async fn stop_all(handles: &[Handle], graceful: bool) {
    async fn stop_group(handles: &[&Handle], limit: Duration) {
        let mut waits = Vec::new();
        for h in handles {
            let (tx, rx) = oneshot::channel();
            if h.tx.send(slot::Cmd::Stop(limit, tx)).await.is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = w.await;
        }
    }
    let of = |role: &str| handles.iter().filter(|h| h.role == role).collect::<Vec<_>>();
    if graceful {
        stop_group(&of("gateway"), Duration::from_secs(15)).await;
        stop_group(&of("business"), Duration::from_secs(45)).await;
        stop_group(&of("register"), Duration::from_secs(5)).await;
    } else {
        stop_group(&handles.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;
    }
}

/// Replaces every business worker, one at a time, from the binary and config as they are now.
async fn reload(handles: &[Handle], config_path: Option<&Path>, exe: &Path, env: &[(String, String)]) -> anyhow::Result<usize> {
    let file = File::load_checked(config_path).context("re-reading the config")?;
    let plan = Plan::new(&file, config_path)?;
    let fresh: Vec<slot::Spec> = plan.specs(&file, exe, env).into_iter().filter(|s| s.role == "business").collect();
    let workers: Vec<&Handle> = handles.iter().filter(|h| h.role == "business").collect();
    info!(workers = workers.len(), "reload: replacing business workers one at a time");
    let mut n = 0;
    for (h, spec) in workers.iter().zip(fresh) {
        let (tx, rx) = oneshot::channel();
        h.tx.send(slot::Cmd::Replace(spec, tx)).await.map_err(|_| anyhow::anyhow!("a worker slot is gone"))?;
        rx.await.map_err(|_| anyhow::anyhow!("a worker slot is gone"))?.map_err(|e| anyhow::anyhow!(e))?;
        n += 1;
    }
    info!(replaced = n, "reload done");
    Ok(n)
}

async fn infos(handles: &[Handle]) -> Vec<slot::Info> {
    let mut out = Vec::new();
    for h in handles {
        let (tx, rx) = oneshot::channel();
        if h.tx.send(slot::Cmd::Info(tx)).await.is_ok() {
            if let Ok(i) = rx.await {
                out.push(i);
            }
        }
    }
    out
}

async fn rows(handles: &[Handle]) -> Vec<status::Row> {
    let mut rows = Vec::new();
    for i in infos(handles).await {
        let (cpu, rss) = status::proc_usage(i.pid);
        let metrics = match &i.reported.metrics {
            Some(addr) => crate::metrics::fetch(addr, "/metrics").await.unwrap_or_default(),
            None => String::new(),
        };
        let m = |name: &str| crate::metrics::value(&metrics, name);
        let ready = i.reported.ready.clone().unwrap_or(Value::Null);
        let text = |k: &str| ready.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (address, connections, messages_in, messages_out) = match i.role {
            "register" => (text("address"), m("gateways").zip(m("workers")).map(|(a, b)| a + b), None, None),
            "gateway" => {
                // The text and goim listeners, when on, by port (they share the client port's host).
                let side: String = [("text", text("text")), ("goim", text("goim"))]
                    .iter()
                    .filter(|(_, a)| !a.is_empty())
                    .map(|(k, a)| format!(", {k} :{}", a.rsplit(':').next().unwrap_or("")))
                    .collect();
                (format!("{} (inner {}{side})", text("address"), text("inner")), m("clients"), m("messages_in_total"), m("messages_out_total"))
            }
            "line" => (format!("{} (webhooks)", text("address")), None, None, None),
            "api" => (format!("{} (server API)", text("address")), None, None, None),
            _ => (format!("{} gateways", m("gateways").unwrap_or(0)), m("clients"), m("events_total"), None),
        };
        rows.push(status::Row {
            role: i.role.to_string(),
            index: i.index,
            pid: i.pid,
            address,
            ready: i.reported.ready.is_some(),
            uptime_secs: i.uptime.as_secs(),
            rss_bytes: rss,
            cpu_secs: cpu,
            connections,
            messages_in,
            messages_out,
            errors: m("errors_total"),
            restarts: i.restarts,
            metrics: i.reported.metrics.clone(),
        });
    }
    rows
}

async fn connections(handles: &[Handle]) -> Vec<Value> {
    let mut out = Vec::new();
    for i in infos(handles).await.into_iter().filter(|i| i.role == "gateway") {
        let Some(addr) = &i.reported.metrics else { continue };
        if let Ok(body) = crate::metrics::fetch(addr, "/connections").await {
            if let Ok(Value::Array(list)) = serde_json::from_str::<Value>(&body) {
                out.extend(list);
            }
        }
    }
    out
}

async fn accept_control(listener: UnixListener, to_master: mpsc::Sender<(Request, oneshot::Sender<Value>)>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let to_master = to_master.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let answer = match serde_json::from_str::<Request>(&line) {
                Ok(req) => {
                    let (tx, rx) = oneshot::channel();
                    if to_master.send((req, tx)).await.is_err() {
                        return;
                    }
                    rx.await.unwrap_or(json!({"ok": false, "error": "the master is stopping"}))
                }
                Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
            };
            let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
        });
    }
}

/// SIGINT/SIGTERM stop, SIGQUIT stops gracefully, SIGUSR1 reloads — the same requests the
/// control socket takes.
fn spawn_signals(to_master: mpsc::Sender<(Request, oneshot::Sender<Value>)>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGQUIT, SIGUSR1]).context("signal handlers")?;
    std::thread::spawn(move || {
        for sig in signals.forever() {
            let req = match sig {
                SIGUSR1 => Request::Reload,
                SIGQUIT => Request::Stop { graceful: true },
                _ => Request::Stop { graceful: false },
            };
            info!(signal = sig, "signal received");
            let (tx, _rx) = oneshot::channel();
            if to_master.blocking_send((req, tx)).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// `start -d`: starts the master in the background (its output to the log file) and returns
/// once every child is ready, or fails with the reason from the log.
pub async fn daemonize(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;
    let file = File::load_checked(config_path.as_deref())?;
    let plan = Plan::new(&file, config_path.as_deref())?;
    private_run_dir(&plan.run_dir)?;
    if control::ask(&plan.socket(), &Request::Status, Duration::from_secs(2)).await.is_ok() {
        bail!(
            "switchboard is already running from this directory (control socket {}): `switchboard status` shows it, `switchboard stop` stops it",
            plan.socket().display()
        );
    }
    // Here too, so `-d` says it at once, before a master is started.
    plan.check_ports(&file)?;
    let log_path = plan.log_file();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("log file {}", log_path.display()))?;
    let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(c) = &plan.config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("start")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C in this terminal must not reach it.
        .process_group(0);
    let mut child = cmd.spawn().context("starting the master")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let ours = text.get(offset as usize..).unwrap_or("");
            // The errors the master and its children reported (a child's reason comes first),
            // without backtraces; else the last lines logged.
            let errors: Vec<&str> = ours.lines().filter(|l| l.starts_with("Error: ")).collect();
            let tail = if errors.is_empty() {
                ours.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
            } else {
                errors.join("\n")
            };
            bail!("switchboard did not start ({status}); from {}:\n{tail}", log_path.display());
        }
        if let Ok(v) = control::ask(&plan.socket(), &Request::Status, Duration::from_secs(5)).await {
            let rows: Vec<status::Row> = serde_json::from_value(v["rows"].clone()).unwrap_or_default();
            if !rows.is_empty() && rows.iter().all(|r| r.ready) {
                print!("{}", status::table(&rows));
                for note in start_notes(&plan, &file) {
                    println!("{note}");
                }
                println!("switchboard started (pid {}, log {}). Stop it with: switchboard stop", child.id(), log_path.display());
                return Ok(());
            }
        }
        if std::time::Instant::now() > deadline {
            bail!("switchboard is not ready after 90 s; see {}", log_path.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The client side of `stop`, `reload`, `status` and `connections`.
pub async fn command(config_path: Option<PathBuf>, req: Request, json_out: bool) -> anyhow::Result<()> {
    let file = File::load(config_path.as_deref())?;
    let plan = Plan::new(&file, config_path.as_deref())?;
    let socket = plan.socket();
    let wait = match req {
        Request::Reload => Duration::from_secs(600),
        _ => Duration::from_secs(30),
    };
    let answer = control::ask(&socket, &req, wait).await?;
    if answer["ok"] != true {
        bail!("{}", answer["error"].as_str().unwrap_or("the master refused"));
    }
    match req {
        Request::Status if json_out => println!("{}", serde_json::to_string_pretty(&answer["rows"])?),
        Request::Status => {
            let rows: Vec<status::Row> = serde_json::from_value(answer["rows"].clone())?;
            print!("{}", status::table(&rows));
        }
        Request::Connections if json_out => println!("{}", serde_json::to_string_pretty(&answer["connections"])?),
        Request::Connections => {
            let list = answer["connections"].as_array().cloned().unwrap_or_default();
            println!("{:<22}  {:<22}  {:<16}  {:<24}  AGE", "CLIENT_ID", "REMOTE", "UID", "GROUPS");
            for c in &list {
                let groups: Vec<&str> = c["groups"].as_array().map(|g| g.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                println!(
                    "{:<22}  {:<22}  {:<16}  {:<24}  {}s",
                    c["client_id"].as_str().unwrap_or(""),
                    c["remote"].as_str().unwrap_or(""),
                    c["uid"].as_str().unwrap_or("-"),
                    groups.join(","),
                    c["age_secs"]
                );
            }
            println!("{} connections", list.len());
        }
        Request::Reload => println!("reloaded: {} business workers replaced", answer["replaced"]),
        Request::Stop { .. } => {
            // Wait for the master to finish stopping (its socket goes away).
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            while socket.exists() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if socket.exists() {
                warn!("the master is still stopping after 90 s");
            }
            println!("switchboard stopped");
        }
    }
    Ok(())
}

/// What `start` tells the operator once the box is ready: where to go next, and this box's
/// defaults (docs/security.md).
fn start_notes(plan: &Plan, file: &File) -> Vec<String> {
    let mut notes = Vec::new();
    let gateway = file.gateway.clone().unwrap_or_default();
    if plan.runs("gateway") && gateway.web {
        // 0.0.0.0 listens everywhere; a browser on this box reaches it on loopback.
        let mut at = gateway.listen;
        if at.ip().is_unspecified() {
            at.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let scheme = if gateway.tls_cert.is_some() { "https" } else { "http" };
        notes.push(format!("visitor widget demo: {scheme}://{at}/demo.html    agent console: {scheme}://{at}/console/"));
    }
    if plan.runs("business") {
        let config = plan.config.as_ref().map(|c| format!("--config {} ", c.display())).unwrap_or_default();
        notes.push(format!("an agent token for the console: switchboard {config}token --bid 1 --agent a1"));
        if file.events.store.starts_with("sqlite:") {
            notes.push(format!("chat history: {}", file.events.store.trim_start_matches("sqlite:")));
        }
    }
    notes.push(format!("log: {}    processes and metrics: switchboard status    stop: switchboard stop", plan.log_file().display()));
    let key = plan.run_dir.join(SECRET_KEY_FILE);
    if plan.runs("register") && key.exists() {
        notes.push(format!(
            "inner secret key: {} (other servers joining this register need it: SWITCHBOARD_SECRET_KEY=$(cat {}) or secret_key in their config)",
            key.display(),
            key.display()
        ));
    }
    let open = file.gateway.as_ref().is_none_or(|g| g.allowed_origins.is_empty());
    if plan.runs("gateway") && open {
        notes.push("any web origin may open WebSockets and long polls here (demo default): set [gateway] allowed_origins for production".into());
    }
    notes
}
