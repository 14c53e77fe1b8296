//! The chat application's settings (`[events]` in switchboard.toml), its LINE channel's among
//! them: plain values every part of the chat reads, so this module imports none of them.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HS256 secret agent tokens are signed with (or `SWITCHBOARD_AGENT_SECRET`).
    pub agent_secret: String,
    /// Development only: accept agent logins without a token. Logged loudly.
    pub agent_auth: bool,
    /// Agents whose tokens no longer count, as `"<bid>:<customer_id>"` (a `:` inside an id
    /// written `%3A`, a `%` as `%25`): their logins are refused and their open sessions are
    /// ended when a worker starts with the list. Takes effect on `reload`.
    pub revoked_agents: Vec<String>,
    /// `sqlite:<path>` (default `sqlite:run/switchboard.db`), a `postgres://user@host/db` or
    /// `mysql://user@host/db` URL (MariaDB too), or a `redis://` URL.
    pub store: String,
    /// A replica of `store` (PostgreSQL or MySQL/MariaDB, same kind) for history, conversation
    /// lists and unread counts; each client still reads its own writes ('' = none).
    pub store_read: String,
    /// Connections each worker keeps to a PostgreSQL or MySQL store at most.
    pub store_pool: u32,
    /// Seconds to wait for a free pooled connection (and to connect) before a store call fails.
    pub store_timeout: f64,
    /// Messages older than this many days are deleted (fractions allowed); 0 keeps everything.
    pub history_days: f64,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub redis_prefix: String,
    /// `least-busy`, `round-robin` or `none`.
    pub assignment: String,
    /// Longest `content` accepted, in characters.
    pub max_content: usize,
    /// Messages per second a connection may send (burst: `rate_burst`); 0 = unlimited.
    pub rate_limit: f64,
    pub rate_burst: f64,
    /// Most messages one `history` call returns.
    pub history_limit: usize,
    /// New conversations one client address may open per minute (per worker process), in
    /// bursts of as many; 0 = unlimited. See `flood`.
    pub visitor_conversations_per_minute: f64,
    /// Conversations in an agent's login answer and in one `conversation_list` page.
    pub conversation_page: usize,
    /// Where methods that are not built in go: a URL with `{method}` in it ('' = nowhere).
    pub upstream_url: String,
    /// Sent to the upstream as `?token=` and `Authorization: Bearer` (or `SWITCHBOARD_UPSTREAM_TOKEN`).
    pub upstream_token: String,
    /// Seconds before an upstream call counts as failed (answered with 504).
    pub upstream_timeout: f64,
    /// Upstream calls in flight per worker; more wait (up to the timeout).
    pub upstream_concurrency: usize,
    /// Record what happens (conversations, messages, agents' presence) in the store's feed
    /// (`feed`) before acknowledging it, for the server API's webhooks. `switchboard` turns
    /// it on by itself when `[[api.webhooks]]` are configured.
    pub feed: bool,
    /// The LINE channel (`switchboard line`).
    pub line: Line,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            agent_secret: String::new(),
            agent_auth: true,
            revoked_agents: Vec::new(),
            store: "sqlite:run/switchboard.db".into(),
            store_read: String::new(),
            store_pool: 10,
            store_timeout: 5.0,
            history_days: 0.0,
            redis_prefix: "switchboard:".into(),
            assignment: "least-busy".into(),
            max_content: 4000,
            rate_limit: 20.0,
            rate_burst: 40.0,
            history_limit: 100,
            visitor_conversations_per_minute: 30.0,
            conversation_page: 100,
            upstream_url: String::new(),
            upstream_token: String::new(),
            upstream_timeout: 5.0,
            upstream_concurrency: 64,
            feed: false,
            line: Default::default(),
        }
    }
}

/// `[events.line]`: the LINE channel's settings (`switchboard line`). What they mean in use, and
/// where secrets left out of the file come from, is in `line::config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Line {
    /// Where `switchboard line` listens for webhooks (`POST /line/<bid>/webhook`) and serves
    /// the images users sent (`GET /line/media/<name>`).
    pub listen: String,
    /// How agents' browsers reach this listener, for image links ('' = `http://<listen>`).
    pub public_url: String,
    /// LINE's API and data hosts; tests and staging point them at a local server.
    pub api_base: String,
    pub data_base: String,
    /// Where fetched images are kept.
    pub media_dir: String,
    /// Seconds a reply token is used after the user's message; later replies are pushed.
    pub reply_window: f64,
    /// Seconds before a LINE API call counts as timed out (and is retried).
    pub timeout: f64,
    /// First retry delay in seconds after a 429, a 5xx or a timeout; doubles up to `retry_max`.
    pub retry_base: f64,
    pub retry_max: f64,
    /// Seconds after which a reply that still cannot be delivered is marked failed.
    pub give_up_after: f64,
    /// Seconds a sender holds a message before another sender may take it (a sender that died
    /// mid-call); a restarted sender takes back its own at once.
    pub lease: f64,
    /// Messages sent concurrently (to different users; one user's messages stay in order).
    pub senders: usize,
    /// Largest webhook body accepted, in bytes.
    pub max_body: usize,
    pub bots: Vec<LineBot>,
}

/// One LINE official account, serving one bot id (`[[events.line.bots]]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LineBot {
    pub bid: String,
    pub channel_secret: String,
    pub channel_access_token: String,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            listen: "127.0.0.1:8790".into(),
            public_url: String::new(),
            api_base: "https://api.line.me".into(),
            data_base: "https://api-data.line.me".into(),
            media_dir: "run/line-media".into(),
            reply_window: 30.0,
            timeout: 10.0,
            retry_base: 1.0,
            retry_max: 300.0,
            give_up_after: 86_400.0,
            lease: 60.0,
            senders: 4,
            max_body: 1 << 20,
            bots: Vec::new(),
        }
    }
}

/// How a conversation's first visitor message picks an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    LeastBusy,
    RoundRobin,
    None,
}

impl Config {
    /// Refuses a `revoked_agents` entry that does not name exactly one agent.
    pub fn check_revoked(&self) -> Result<(), String> {
        for entry in &self.revoked_agents {
            crate::keys::check_agent_ref(entry).map_err(|e| format!("[events] revoked_agents: {e}"))?;
        }
        Ok(())
    }

    pub fn assignment(&self) -> Result<Assignment, String> {
        match self.assignment.as_str() {
            "least-busy" => Ok(Assignment::LeastBusy),
            "round-robin" => Ok(Assignment::RoundRobin),
            "none" => Ok(Assignment::None),
            other => Err(format!("unknown assignment policy {other:?} (least-busy, round-robin, none)")),
        }
    }
}
