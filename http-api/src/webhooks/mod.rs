//! Webhooks out: each `[[api.webhooks]]` follows the chat's feed (`events::feed`) and POSTs
//! every event it subscribes to, signed (`sign`), one at a time and in the feed's order, so the
//! order within a conversation is kept. An event is retried with exponential backoff and
//! jitter on 5xx, 408, 429, timeouts and refused connections, and given up (logged) after
//! `give_up_after`; the follower's position is kept in the store and moved only once an event
//! was delivered or given up, so a restart or a crash delivers nothing less (and an event at
//! most once more: receivers deduplicate by `Switchboard-Event-Id`).

pub mod follow;
pub mod sign;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique: the store keeps this webhook's position under it.
    pub name: String,
    pub url: String,
    /// The event types sent (default: all; see `events::feed::KINDS`).
    pub events: Vec<String>,
    /// Only these bots' events (default: every bot).
    pub bots: Vec<String>,
    /// The signing secret, or `SWITCHBOARD_WEBHOOK_SECRET_<NAME>` (the name upper-cased, other
    /// characters as `_`). Required: an unsigned webhook could be forged by anyone.
    pub secret: String,
    /// Seconds before a delivery counts as failed (and is retried).
    pub timeout: f64,
    /// The first retry's delay in seconds; each retry doubles it, up to `retry_max`.
    pub retry_base: f64,
    pub retry_max: f64,
    /// Seconds after an event happened when it is given up, with a log.
    pub give_up_after: f64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            name: String::new(),
            url: String::new(),
            events: Vec::new(),
            bots: Vec::new(),
            secret: String::new(),
            timeout: 5.0,
            retry_base: 0.5,
            retry_max: 60.0,
            give_up_after: 86_400.0,
        }
    }
}

impl WebhookConfig {
    /// The environment variable that may hold this webhook's secret.
    pub fn secret_env(&self) -> String {
        let upper: String = self.name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        format!("SWITCHBOARD_WEBHOOK_SECRET_{upper}")
    }

    /// Fills the secret from the environment and refuses what cannot work.
    pub fn checked(mut self) -> Result<WebhookConfig, String> {
        let name = self.name.clone();
        if name.is_empty() {
            return Err("[[api.webhooks]]: every webhook needs a name (its position in the feed is kept under it)".into());
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!("webhook {name:?}: url must be http:// or https://"));
        }
        if let Some(bad) = self.events.iter().find(|e| !events::feed::KINDS.contains(&e.as_str())) {
            return Err(format!("webhook {name:?}: unknown event {bad:?} (known: {})", events::feed::KINDS.join(", ")));
        }
        if self.secret.is_empty() {
            self.secret = std::env::var(self.secret_env()).unwrap_or_default();
        }
        if self.secret.len() < 16 {
            return Err(format!("webhook {name:?}: set a secret of 16 characters or more (secret, or {})", self.secret_env()));
        }
        for (what, v) in
            [("timeout", self.timeout), ("retry_base", self.retry_base), ("retry_max", self.retry_max), ("give_up_after", self.give_up_after)]
        {
            if !(v > 0.0 && v.is_finite()) {
                return Err(format!("webhook {name:?}: {what} must be a positive number of seconds"));
            }
        }
        Ok(self)
    }

    /// Whether this webhook wants `e`.
    pub fn wants(&self, e: &events::feed::Event) -> bool {
        (self.events.is_empty() || self.events.contains(&e.kind)) && (self.bots.is_empty() || self.bots.contains(&e.bid))
    }
}
