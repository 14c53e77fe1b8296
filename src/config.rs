//! The TOML config file: one optional section per role, plus shared keys. Every key has a
//! default, command-line flags override the file, and the secret key can come from the
//! environment (`SWITCHBOARD_SECRET_KEY`) so it never has to be written down.

use anyhow::Context as _;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct File {
    /// Shared by every role unless a section sets its own.
    pub secret_key: Option<String>,
    /// Register addresses, shared by gateways and workers unless a section sets its own.
    pub registers: Option<Vec<String>>,
    pub register: RegisterSection,
    pub gateway: Option<gateway::Config>,
    pub business: BusinessSection,
    pub events: events::Config,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegisterSection {
    pub listen: String,
    pub secret_key: Option<String>,
    pub auth_timeout: f64,
    pub peer_timeout: f64,
}

impl Default for RegisterSection {
    fn default() -> Self {
        RegisterSection { listen: "127.0.0.1:1236".into(), secret_key: None, auth_timeout: 10.0, peer_timeout: 80.0 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusinessSection {
    pub name: String,
    pub index: Option<u32>,
    pub registers: Option<Vec<String>>,
    pub secret_key: Option<String>,
    pub app: String,
}

impl Default for BusinessSection {
    fn default() -> Self {
        BusinessSection {
            name: "BusinessWorker".into(),
            index: None,
            registers: None,
            secret_key: None,
            app: "chat".into(),
        }
    }
}

impl File {
    pub fn load(path: Option<&Path>) -> anyhow::Result<File> {
        let Some(path) = path else { return Ok(File::default()) };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}
