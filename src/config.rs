//! The TOML config file: one optional section per role, plus shared keys. Every key has a
//! default, command-line flags override the file, and the secret key can come from the
//! environment (`SWITCHBOARD_SECRET_KEY`) so it never has to be written down.

use anyhow::Context as _;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct File {
    /// The roles `switchboard start` runs on this box (default: all three).
    pub roles: Option<Vec<String>>,
    /// Gateway processes `start` runs (default 1); their inner ports follow `[gateway] inner_port`.
    pub gateways: Option<usize>,
    /// Business worker processes `start` runs (default: see [`File::workers`]).
    pub workers: Option<usize>,
    /// Runtime threads in each gateway process (default: one per core).
    pub gateway_threads: Option<usize>,
    /// Runtime threads in each business worker process (default 1: see [`File::threads`]).
    pub worker_threads: Option<usize>,
    /// The address `start`'s children serve their metrics on (port chosen by each; default
    /// 127.0.0.1). On a real server, the LAN address your Prometheus scrapes.
    pub metrics_ip: Option<String>,
    /// Where `start` keeps its pid file, log, control socket and the SQLite store (default `run`).
    pub run_dir: Option<String>,
    /// Shared by every role unless a section sets its own.
    pub secret_key: Option<String>,
    /// Register addresses, shared by gateways and workers unless a section sets its own.
    pub registers: Option<Vec<String>>,
    pub register: RegisterSection,
    pub gateway: Option<gateway::Config>,
    pub business: BusinessSection,
    pub events: events::Config,
    /// The server API (HTTP/JSON), off unless `listen` is set.
    pub api: http_api::Config,
}

/// Which kind of process is asking [`File::threads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessRole {
    Gateway,
    Worker,
    /// The master, the register, the tools: the runtime's default.
    Other,
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
    /// Route send_to_uid/send_to_group by the gateways' directories (false: to every gateway).
    pub directory: bool,
    /// Ask the gateways to send every client to one worker of the box while it lives, the
    /// others standing by (default: true when the chat's store is SQLite, whose file takes one
    /// writer at a time; false otherwise, where the workers share the clients).
    pub standby: Option<bool>,
}

impl BusinessSection {
    /// Whether a worker running `app` on `store` asks the gateways to stand it by
    /// (`standby`, else the chat on a store that takes one writer at a time: SQLite). Read by
    /// the worker for its CMD_WORKER_CONNECT and by `start` for how many workers to run.
    pub fn standby(&self, app: &str, store: &str) -> bool {
        self.standby.unwrap_or_else(|| app == "chat" && events::store::one_writer(store))
    }
}

impl Default for BusinessSection {
    fn default() -> Self {
        BusinessSection {
            name: "BusinessWorker".into(),
            index: None,
            registers: None,
            secret_key: None,
            app: "chat".into(),
            directory: true,
            standby: None,
        }
    }
}

impl File {
    /// The run directory (default `run`).
    pub fn run_dir(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(self.run_dir.clone().unwrap_or_else(|| "run".into()))
    }

    /// The API keys file: `[api] keys_file`, or `api-keys.json` in the run directory.
    pub fn api_keys_file(&self) -> std::path::PathBuf {
        if self.api.keys_file.is_empty() {
            self.run_dir().join("api-keys.json")
        } else {
            std::path::PathBuf::from(&self.api.keys_file)
        }
    }

    /// Business worker processes `start` runs: `workers`, else two where one serves and the
    /// other stands by (the SQLite store, or `[business] standby = true`) or where the
    /// application is not the chat (`probe`, for diagnostics), and one per core, at least two,
    /// where the chat's workers share the clients: each runs one thread, so it is Workerman's
    /// `count`.
    pub fn workers(&self) -> usize {
        let business = &self.business;
        let shared = business.app == "chat" && !business.standby(&business.app, &self.events.store);
        let cores = || std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        self.workers.unwrap_or_else(|| if shared { cores() } else { 2 }).max(1)
    }

    /// How many runtime threads a process of this role runs; `None` is one per core.
    ///
    /// A worker runs one by default, as a Workerman process does. Its work per event is short
    /// and mostly in order (an event, its store write, its sends); on a second thread each
    /// wakeup also woke a parked sibling to look for work it seldom found, and the two traded
    /// the store's queue and the link's writer. With one thread a room message cost the
    /// workers 51–55 µs of CPU at 100 000 deliveries/s against 70–89 µs with two
    /// (docs/BENCHMARKS.md, session 30). Where one worker serves every client (SQLite) and
    /// needs more than a core, `worker_threads` raises it.
    pub fn threads(&self, role: ProcessRole) -> Option<usize> {
        match role {
            ProcessRole::Gateway => self.gateway_threads,
            ProcessRole::Worker => Some(self.worker_threads.unwrap_or(1)),
            ProcessRole::Other => None,
        }
        .map(|n| n.max(1))
    }

    /// Reads `path`, or `switchboard.toml` in the current directory when no path is given and
    /// that file exists, or else the built-in defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<File> {
        let default = Path::new("switchboard.toml");
        let path = match path {
            Some(p) => p,
            None if default.exists() => default,
            None => return Ok(File::default()),
        };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// `load`, then what the chat would refuse when its workers start, refused here instead:
    /// by `start` before anything runs, and by `reload` before a single worker is replaced.
    /// (`status` and `stop` use plain `load`, so a box whose config was broken can still be
    /// looked at and stopped.)
    pub fn load_checked(path: Option<&Path>) -> anyhow::Result<File> {
        let file = File::load(path)?;
        let name = path.map_or_else(|| "the config".to_string(), |p| p.display().to_string());
        file.events.assignment().map_err(anyhow::Error::msg).with_context(|| format!("checking {name}"))?;
        file.events.check_revoked().map_err(anyhow::Error::msg).with_context(|| format!("checking {name}"))?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(toml: &str) -> File {
        toml::from_str(toml).expect("config")
    }

    #[test]
    fn workers_default_to_one_serving_and_one_standing_by_or_one_per_core() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        assert_eq!(file("").workers(), 2, "SQLite: one serves, one stands by");
        assert_eq!(file("[events]\nstore = \"redis://127.0.0.1/\"").workers(), cores, "a shared store: one per core");
        assert_eq!(file("[business]\nstandby = true\n[events]\nstore = \"redis://127.0.0.1/\"").workers(), 2);
        assert_eq!(file("[business]\nstandby = false").workers(), cores);
        assert_eq!(file("workers = 5").workers(), 5);
    }

    #[test]
    fn a_worker_runs_one_thread_and_a_gateway_one_per_core_unless_set() {
        assert_eq!(file("").threads(ProcessRole::Worker), Some(1));
        assert_eq!(file("").threads(ProcessRole::Gateway), None);
        assert_eq!(file("").threads(ProcessRole::Other), None);
        let set = file("gateway_threads = 3\nworker_threads = 0");
        assert_eq!(set.threads(ProcessRole::Gateway), Some(3));
        assert_eq!(set.threads(ProcessRole::Worker), Some(1), "0 is read as 1");
    }
}
