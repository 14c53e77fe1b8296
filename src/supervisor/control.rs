//! The master's control socket (`<run_dir>/switchboard.sock`): one JSON request per line, one
//! JSON answer per line. `stop`, `reload`, `status` and `connections` talk to it; only the
//! master's user can reach a Unix socket in its run directory.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Connections,
    Reload,
    Stop { graceful: bool },
}

/// Sends one request to a running master and returns its answer.
pub async fn ask(socket: &Path, req: &Request, timeout: Duration) -> anyhow::Result<serde_json::Value> {
    let stream = UnixStream::connect(socket).await.with_context(|| format!("switchboard is not running (no master at {})", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    let mut reader = BufReader::new(read);
    let mut answer = String::new();
    tokio::time::timeout(timeout, reader.read_line(&mut answer)).await.context("the master did not answer in time")??;
    anyhow::ensure!(!answer.is_empty(), "the master closed the connection without answering");
    Ok(serde_json::from_str(&answer)?)
}
