//! `[events.line]`: the LINE channel's settings. Channel secrets and access tokens may be left
//! out of the file and given as `SWITCHBOARD_LINE_SECRET_<BID>` / `SWITCHBOARD_LINE_TOKEN_<BID>`
//! (the bid upper-cased, anything not a letter or digit as `_`).

use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
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
    pub bots: Vec<Bot>,
}

/// One LINE official account, serving one bot id.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bot {
    pub bid: String,
    pub channel_secret: String,
    pub channel_access_token: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
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

fn env_name(kind: &str, bid: &str) -> String {
    let bid: String = bid.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("SWITCHBOARD_LINE_{kind}_{bid}")
}

impl Config {
    /// The bot's channel, its secret and token filled from the environment where the file has
    /// none. `None` for a bot with no LINE channel.
    pub fn bot(&self, bid: &str) -> Option<Bot> {
        let mut bot = self.bots.iter().find(|b| b.bid == bid)?.clone();
        if bot.channel_secret.is_empty() {
            bot.channel_secret = std::env::var(env_name("SECRET", bid)).unwrap_or_default();
        }
        if bot.channel_access_token.is_empty() {
            bot.channel_access_token = std::env::var(env_name("TOKEN", bid)).unwrap_or_default();
        }
        Some(bot)
    }

    pub fn public_url(&self) -> String {
        if self.public_url.is_empty() {
            format!("http://{}", self.listen)
        } else {
            self.public_url.trim_end_matches('/').to_string()
        }
    }

    pub fn reply_window_ms(&self) -> i64 {
        (self.reply_window * 1000.0) as i64
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout.max(0.1))
    }

    /// Delay before try number `attempts + 1`.
    pub fn backoff_ms(&self, attempts: u32) -> i64 {
        let d = self.retry_base * 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
        (d.min(self.retry_max) * 1000.0) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_the_environment_when_the_file_has_none() {
        let c = Config { bots: vec![Bot { bid: "shop-7".into(), ..Default::default() }], ..Default::default() };
        std::env::set_var("SWITCHBOARD_LINE_SECRET_SHOP_7", "s3cret");
        let bot = c.bot("shop-7").expect("configured");
        assert_eq!(bot.channel_secret, "s3cret");
        assert!(bot.channel_access_token.is_empty());
        assert!(c.bot("other").is_none());
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let c = Config { retry_base: 0.5, retry_max: 3.0, ..Default::default() };
        assert_eq!([1, 2, 3, 4, 9].map(|a| c.backoff_ms(a)), [500, 1000, 2000, 3000, 3000]);
    }
}
