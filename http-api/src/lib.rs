//! Switchboard's server API: any backend (Java, Go, Node, PHP-FPM, …) reaches clients and
//! the chat over HTTP/JSON, on a listener of its own (`[api] listen`).
//!
//! An adapter around the core: it depends on `business` (the Gateway API, remote, as PHP's
//! GatewayClient is) and on `events` (the chat's `service`), and nothing depends on it.
//! `command` is every operation as one typed command (its strings and numbers checked as they
//! are decoded, `text`); `gateway` and `chat` run them; `routes` maps HTTP onto them and
//! generates the OpenAPI document; `keys` and `limit` decide who may call and how often;
//! `fail` is how every refusal reads; `tls` the HTTPS listener. `webhooks` follows the chat's
//! feed (`events::feed`) and POSTs what happened to the backends that asked.

pub mod chat;
pub mod command;
pub mod config;
pub mod fail;
pub mod gateway;
pub mod keys;
pub mod limit;
pub mod routes;
pub mod text;
pub mod tls;
pub mod webhooks;

pub use config::Config;

use business::Api;
use command::Command;
use events::Chat;
use fail::Fail;
use keys::{Key, Keyring, Refusal};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

/// What every request handler shares.
pub struct State {
    pub chat: Arc<Chat>,
    pub api: Api,
    pub config: Config,
    keys: RwLock<Arc<Keyring>>,
    /// When the keys file was read (its mtime and length), to know when to read it again.
    keys_stamp: std::sync::Mutex<Option<(SystemTime, u64)>>,
    keys_file: PathBuf,
    env_keys: Option<String>,
    pub limits: limit::Limits,
}

impl State {
    /// `keys_file` is `[api] keys_file` resolved (the run directory's `api-keys.json` by
    /// default); `env_keys` is `SWITCHBOARD_API_KEYS`.
    pub fn new(chat: Arc<Chat>, api: Api, config: Config, keys_file: PathBuf, env_keys: Option<String>) -> Result<Arc<State>, String> {
        let keys_stamp = std::sync::Mutex::new(file_stamp(&keys_file));
        let ring = Keyring::load(&config, env_keys.as_deref(), &keys_file)?;
        if ring.is_empty() {
            warn!(file = %keys_file.display(), "no API keys: every request will be refused until one is made (switchboard api-key new --bot <bid>)");
        }
        let limits = limit::Limits::new(config.rate_limit, config.rate_burst);
        Ok(Arc::new(State { chat, api, config, keys: RwLock::new(Arc::new(ring)), keys_stamp, keys_file, env_keys, limits }))
    }

    fn keyring(&self) -> Arc<Keyring> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the keys if the keys file changed since they were read. A file that no
    /// longer parses keeps the keys as they were (and says so): a typo must not open or close
    /// the API.
    fn refresh(&self) {
        let now = file_stamp(&self.keys_file);
        if now == *self.keys_stamp.lock().unwrap_or_else(|p| p.into_inner()) {
            return;
        }
        match Keyring::load(&self.config, self.env_keys.as_deref(), &self.keys_file) {
            Ok(ring) => {
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
                info!(file = %self.keys_file.display(), "API keys re-read");
            }
            Err(e) => warn!("API keys file not re-read, keeping the keys as they were: {e}"),
        }
        *self.keys_stamp.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    /// Looks at the keys file every second, so a revocation takes effect within one without a
    /// restart (a new key works at once: an unknown key makes `authenticate` look first).
    pub async fn watch_keys(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.refresh();
        }
    }

    /// The key an `Authorization: Bearer …` header presents, after its rate limit took
    /// `cost` requests.
    pub fn authenticate(&self, header: Option<&str>, cost: u32) -> Result<Key, Fail> {
        // The scheme's name is case-insensitive (RFC 9110); the key is not.
        let token = header.and_then(|h| h.split_once(' ')).filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, t)| t.trim());
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(Fail::unauthorized("send Authorization: Bearer <API key>"));
        };
        let mut ring = self.keyring();
        if ring.check(token).is_none() {
            // Perhaps made a moment ago by `api-key new`: one stat of the file to know.
            self.refresh();
            ring = self.keyring();
        }
        let Some(key) = ring.check(token) else {
            return Err(Fail::unauthorized("unknown or revoked API key"));
        };
        self.limits.take(key, cost)?;
        Ok(key.clone())
    }

    /// Whether `key` may run `cmd`.
    pub fn authorize(&self, key: &Key, cmd: &Command) -> Result<(), Fail> {
        let (bid, write) = cmd.needs();
        key.scope.allows(bid, write).map_err(|r| match (r, bid) {
            (Refusal::Bot, None) => Fail::forbidden("the Gateway API needs a key for every bot (bots = [\"*\"])"),
            (Refusal::Bot, Some(b)) => Fail::forbidden(format!("this key does not reach bot {b:?}")),
            (Refusal::ReadOnly, _) => Fail::forbidden("this key is read-only"),
        })
    }

    /// Runs a command `key` may run.
    pub async fn run(&self, key: &Key, cmd: Command) -> Result<serde_json::Value, Fail> {
        self.authorize(key, &cmd)?;
        let method = cmd.method();
        let r = match cmd.needs().0 {
            None => gateway::run(&self.api, cmd).await,
            Some(_) => chat::run(self, cmd).await,
        };
        match &r {
            Ok(_) => tracing::debug!(key = %key.name, %method, "done"),
            Err(f) => info!(key = %key.name, %method, code = f.code, "refused: {}", f.message),
        }
        r
    }
}

fn file_stamp(p: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Starts a follower per webhook (checked first: a name, a URL, a secret); they stop when
/// `stop` turns true.
pub fn spawn_webhooks(
    hooks: &[webhooks::WebhookConfig],
    store: Arc<dyn events::store::Store>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let hooks = hooks.iter().cloned().map(webhooks::WebhookConfig::checked).collect::<Result<Vec<_>, _>>()?;
    let mut names = std::collections::HashSet::new();
    if let Some(twice) = hooks.iter().find(|h| !names.insert(h.name.clone())) {
        return Err(format!("two webhooks are named {:?}: each keeps its position under its name", twice.name));
    }
    let http = reqwest::Client::builder().build().map_err(|e| format!("HTTP client: {e}"))?;
    Ok(hooks.into_iter().map(|h| tokio::spawn(webhooks::follow::run(h, store.clone(), http.clone(), stop.clone()))).collect())
}

/// Serves the API on `listener` (with TLS when `[api] tls_cert` and `tls_key` are set) until
/// `stop`.
pub async fn serve(
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = match (&state.config.tls_cert, &state.config.tls_key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some(::gateway::server::tls_from_pem(c, k).map_err(std::io::Error::other)?),
        _ => return Err(std::io::Error::other("[api]: set both tls_cert and tls_key")),
    };
    let watcher = tokio::spawn(state.clone().watch_keys());
    let (router, _) = routes::router(state);
    let r = match tls {
        Some(acceptor) => axum::serve(tls::TlsListener::new(listener, acceptor)?, router).with_graceful_shutdown(stop).await,
        None => axum::serve(listener, router).with_graceful_shutdown(stop).await,
    };
    watcher.abort();
    r
}
