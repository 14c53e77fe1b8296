//! One supervised child process: an actor that owns the process, restarts it with backoff when
//! it dies, replaces it on reload (new one ready first, then the old one hands over and exits)
//! and stops it on request.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

/// What to run in a slot.
#[derive(Debug, Clone)]
pub struct Spec {
    pub role: &'static str,
    pub index: usize,
    pub exe: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// What a child reported on its stdout.
#[derive(Debug, Clone, Default)]
pub struct Reported {
    pub metrics: Option<String>,
    pub ready: Option<serde_json::Value>,
}

/// A slot as `status` sees it.
#[derive(Debug, Clone)]
pub struct Info {
    pub role: &'static str,
    pub index: usize,
    pub pid: u32,
    pub uptime: Duration,
    pub restarts: u32,
    pub reported: Reported,
}

pub enum Cmd {
    Info(oneshot::Sender<Info>),
    /// Start a new process from `Spec`, wait until it is ready, then stop the old one.
    Replace(Spec, oneshot::Sender<Result<(), String>>),
    /// SIGTERM, then SIGKILL after `limit`.
    Stop(Duration, oneshot::Sender<()>),
}

struct Proc {
    child: Child,
    pid: u32,
    started: Instant,
    reported: watch::Receiver<Reported>,
}

/// How long a new process may take to report ready.
pub const READY_WAIT: Duration = Duration::from_secs(30);

fn spawn(spec: &Spec) -> Result<Proc, String> {
    let mut cmd = Command::new(&spec.exe);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(business::ready::ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {} {}: {e}", spec.exe.display(), spec.args.join(" ")))?;
    let pid = child.id().unwrap_or(0);
    let (tx, rx) = watch::channel(Reported::default());
    if let Some(out) = child.stdout.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.strip_prefix("metrics ") {
                    tx.send_modify(|r| r.metrics = Some(addr.trim().to_string()));
                } else if let Some(json) = line.strip_prefix("ready ") {
                    let v = serde_json::from_str(json).unwrap_or(serde_json::Value::Null);
                    tx.send_modify(|r| r.ready = Some(v));
                }
            }
        });
    }
    Ok(Proc { child, pid, started: Instant::now(), reported: rx })
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status();
}

/// Stops a process politely, then firmly.
async fn stop(p: &mut Proc, limit: Duration) {
    signal(p.pid, "TERM");
    if tokio::time::timeout(limit, p.child.wait()).await.is_err() {
        warn!(pid = p.pid, "did not stop within {limit:?}: killing it");
        let _ = p.child.kill().await;
    }
}

/// Waits until the process reports ready; `Err` with the reason when it exits first.
async fn wait_ready(p: &mut Proc) -> Result<(), String> {
    let mut rx = p.reported.clone();
    let ready = async {
        loop {
            if rx.borrow_and_update().ready.is_some() {
                return;
            }
            if rx.changed().await.is_err() {
                // stdout closed without a ready line; let the exit status tell why.
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ready => Ok(()),
        status = p.child.wait() => Err(format!("exited before it was ready ({})", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()))),
        _ = tokio::time::sleep(READY_WAIT) => Err(format!("not ready within {READY_WAIT:?}")),
    }
}

/// Runs the slot. `first` learns whether the first process came up.
pub async fn run(mut spec: Spec, mut rx: mpsc::Receiver<Cmd>, first: oneshot::Sender<Result<(), String>>) {
    let who = format!("{}#{}", spec.role, spec.index);
    let mut proc = match spawn(&spec) {
        Ok(p) => p,
        Err(e) => {
            let _ = first.send(Err(e));
            return;
        }
    };
    let up = wait_ready(&mut proc).await;
    let failed = up.is_err();
    let _ = first.send(up);
    if failed {
        return;
    }
    info!(slot = %who, pid = proc.pid, "ready");
    let mut restarts = 0u32;
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::select! {
            status = proc.child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                if proc.started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                restarts += 1;
                warn!(slot = %who, pid = proc.pid, %status, restart = restarts, "child died; restarting in {backoff:?}");
                // Keep answering while waiting out the backoff.
                let deadline = tokio::time::Instant::now() + backoff;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        cmd = rx.recv() => match cmd {
                            Some(Cmd::Stop(_, reply)) => { let _ = reply.send(()); return; }
                            Some(Cmd::Info(reply)) => { let _ = reply.send(info(&spec, &proc, restarts)); }
                            Some(Cmd::Replace(new, reply)) => { spec = new; let _ = reply.send(Ok(())); }
                            None => return,
                        }
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                match spawn(&spec) {
                    Ok(p) => {
                        proc = p;
                        info!(slot = %who, pid = proc.pid, "restarted");
                    }
                    Err(e) => warn!(slot = %who, "restart failed: {e}"),
                }
            }
            cmd = rx.recv() => match cmd {
                Some(Cmd::Info(reply)) => { let _ = reply.send(info(&spec, &proc, restarts)); }
                Some(Cmd::Replace(new, reply)) => {
                    let result = match spawn(&new) {
                        Ok(mut fresh) => match wait_ready(&mut fresh).await {
                            Ok(()) => {
                                info!(slot = %who, old = proc.pid, new = fresh.pid, "replacement ready; the old process hands over");
                                let mut old = std::mem::replace(&mut proc, fresh);
                                stop(&mut old, Duration::from_secs(45)).await;
                                spec = new;
                                Ok(())
                            }
                            Err(e) => {
                                let _ = fresh.child.kill().await;
                                Err(format!("{who}: the new process {e}; the old one keeps running"))
                            }
                        },
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(result);
                }
                Some(Cmd::Stop(limit, reply)) => {
                    stop(&mut proc, limit).await;
                    let _ = reply.send(());
                    return;
                }
                None => {
                    stop(&mut proc, Duration::from_secs(5)).await;
                    return;
                }
            }
        }
    }
}

fn info(spec: &Spec, p: &Proc, restarts: u32) -> Info {
    Info { role: spec.role, index: spec.index, pid: p.pid, uptime: p.started.elapsed(), restarts, reported: p.reported.borrow().clone() }
}
