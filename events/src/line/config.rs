//! What the LINE channel does with its settings (`[events.line]`, `config::Line`, read with
//! the rest of the file). Channel secrets and access tokens may be left out of the file and
//! given as `SWITCHBOARD_LINE_SECRET_<BID>` / `SWITCHBOARD_LINE_TOKEN_<BID>` (the bid
//! upper-cased, anything not a letter or digit as `_`).

use std::time::Duration;

pub use crate::config::{Line as Config, LineBot as Bot};

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
