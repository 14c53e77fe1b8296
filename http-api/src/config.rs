//! `[api]` in switchboard.toml: where the server API listens and the keys it accepts.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The API's own listener, e.g. `127.0.0.1:8700` ('' = off, the default). `switchboard
    /// start` runs the API process when this is set.
    pub listen: String,
    /// Keys written in the config (more come from `SWITCHBOARD_API_KEYS` and from the keys
    /// file `switchboard api-key` manages).
    pub keys: Vec<KeyConfig>,
    /// The keys file (default `<run_dir>/api-keys.json`): keys made by `switchboard api-key
    /// new`, stored as hashes. Re-read when it changes, so a revocation takes effect at once.
    pub keys_file: String,
    /// Requests (batch commands count one each) per second a key may make, in bursts of
    /// `rate_burst`; a key's own `rate_limit` overrides it. 0 = unlimited.
    pub rate_limit: f64,
    pub rate_burst: u32,
    /// Largest request body in bytes; larger ones are refused with 413 before being read.
    pub max_body: usize,
    /// Most commands in one `/api/batch` request.
    pub max_batch: usize,
    /// The bot's display name on messages posted as the bot (`from_name`), unless a request
    /// gives one.
    pub bot_name: String,
    /// PEM files: the API speaks HTTPS (rustls), as the client port does with the gateway's.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Webhooks out (`[[api.webhooks]]`), sent by the api process (see `webhooks`).
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: String::new(),
            keys: Vec::new(),
            keys_file: String::new(),
            rate_limit: 100.0,
            rate_burst: 200,
            max_body: 256 * 1024,
            max_batch: 100,
            bot_name: "Bot".into(),
            tls_cert: None,
            tls_key: None,
            webhooks: Vec::new(),
        }
    }
}

/// One key: the secret itself (`key`) or, so the config need not hold it, its SHA-256 in hex
/// (`sha256`, as `switchboard api-key new` prints it); which bots it reaches (`"*"`: every bot,
/// and the raw Gateway API); whether it may write.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyConfig {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    pub bots: Vec<String>,
    pub write: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_burst: Option<u32>,
}
