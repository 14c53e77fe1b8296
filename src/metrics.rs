//! Each process's `/metrics` (Prometheus text format) and, for gateways, `/connections` (JSON):
//! a few lines of HTTP over tokio, because a scrape endpoint needs nothing more.

use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a process exposes.
#[derive(Clone)]
pub enum Source {
    Register(Arc<register::stats::Stats>),
    Gateway(Arc<gateway::Stats>, gateway::Lister),
    Business(Arc<business::Stats>),
}

impl Source {
    fn role(&self) -> &'static str {
        match self {
            Source::Register(_) => "register",
            Source::Gateway(..) => "gateway",
            Source::Business(_) => "business",
        }
    }

    fn render(&self) -> String {
        let rows = match self {
            Source::Register(s) => s.snapshot(),
            Source::Gateway(s, _) => s.snapshot(),
            Source::Business(s) => s.snapshot(),
        };
        let role = self.role();
        let mut out = String::new();
        for (name, help, counter, value) in rows {
            let kind = if counter { "counter" } else { "gauge" };
            out.push_str(&format!(
                "# HELP switchboard_{name} {help}\n# TYPE switchboard_{name} {kind}\nswitchboard_{name}{{role=\"{role}\"}} {value}\n"
            ));
        }
        let (cpu, rss) = crate::supervisor::status::proc_usage(std::process::id());
        out.push_str(&format!(
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}\n"
        ));
        out
    }
}

/// Binds `addr` and serves in the background; returns the bound address (for port 0).
pub async fn serve(addr: SocketAddr, source: Source) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("metrics listener {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            let source = source.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while n < buf.len() {
                        let r = s.read(&mut buf[n..]).await.unwrap_or(0);
                        if r == 0 {
                            break;
                        }
                        n += r;
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                })
                .await;
                if read.is_err() {
                    return;
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let (status, kind, body) = match (path, &source) {
                    ("/metrics", _) => ("200 OK", "text/plain; version=0.0.4", source.render()),
                    ("/connections", Source::Gateway(_, lister)) => {
                        ("200 OK", "application/json", serde_json::to_string(&lister.connections().await).unwrap_or_default())
                    }
                    _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
                };
                let resp = format!("HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}

/// GETs `path` from a metrics endpoint (used by the master for `status` and `connections`).
pub async fn fetch(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await??;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).into_owned();
    Ok(text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// Reads `switchboard_<name>` values out of an exposition.
pub fn value(exposition: &str, name: &str) -> Option<u64> {
    exposition.lines().find_map(|l| {
        let rest = l.strip_prefix(&format!("switchboard_{name}{{"))?;
        rest.rsplit_once(' ')?.1.trim().parse().ok()
    })
}
