//! The server API as tests meet it: a chat system (`ChatSystem`) with `switchboard api` beside
//! it, its keys given through `SWITCHBOARD_API_KEYS`, and a small HTTP client.

use super::*;

pub const AGENT_SECRET: &str = "api-test-agent-secret";
/// Every bot, read and write: the raw Gateway API.
pub const OPS: &str = "ops-key-0123456789abcdef-every-bot";
/// Bot 1, read and write.
pub const BOT1: &str = "bot1-key-0123456789abcdef-write";
/// Bot 1, read only.
pub const BOT1_READ: &str = "bot1-key-0123456789abcdef-read";
/// Bot 2, read and write.
pub const BOT2: &str = "bot2-key-0123456789abcdef-write";
/// Bot 1, two requests at once, then one every 10 s.
pub const SLOW: &str = "slow-key-0123456789abcdef-write";

pub struct ApiSystem {
    pub api: Proc,
    /// `http://ip:port`.
    pub base: String,
    pub sys: ChatSystem,
    pub http: reqwest::Client,
}

impl ApiSystem {
    /// A chat system on 127.`net`.0.x and its API on 127.`net`.0.6; `api_toml` is added to
    /// `[api]`.
    pub async fn start(net: u8, api_toml: &str) -> ApiSystem {
        let sys = chat_system_with(net, "", AGENT_SECRET).await;
        let ip = format!("127.{net}.0.6");
        let listen = format!("{ip}:{}", free_port(&ip));
        let keys_file = sys.dir.0.join("api-keys.json");
        let mut config = std::fs::read_to_string(&sys.config).expect("config");
        config.push_str(&format!("\n[api]\nlisten = \"{listen}\"\nkeys_file = \"{}\"\n{api_toml}\n", keys_file.display()));
        std::fs::write(&sys.config, config).expect("config");
        let keys = json!([
            {"name": "ops", "key": OPS, "bots": ["*"], "write": true},
            {"name": "bot1", "key": BOT1, "bots": ["1"], "write": true},
            {"name": "bot1-read", "key": BOT1_READ, "bots": ["1"], "write": false},
            {"name": "bot2", "key": BOT2, "bots": ["2"], "write": true},
            {"name": "slow", "key": SLOW, "bots": ["1"], "write": true, "rate_limit": 0.1, "rate_burst": 2},
        ])
        .to_string();
        let cfg = sys.config.display().to_string();
        let api = Proc::start_env(
            &format!("n{net}-api"),
            &["--config", &cfg, "api", "--register", &sys.reg],
            &[("SWITCHBOARD_API_KEYS", &keys), ("SWITCHBOARD_AGENT_SECRET", AGENT_SECRET)],
        );
        wait_listening(&listen).await;
        ApiSystem { api, base: format!("http://{listen}"), sys, http: reqwest::Client::new() }
    }

    /// `GET path` with `key`: the status and the JSON body (every answer has one).
    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(key).send().await.expect("GET");
        answer(r).await
    }

    /// `POST path` with `key` and a JSON body.
    pub async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.base)).bearer_auth(key).json(&body).send().await.expect("POST");
        answer(r).await
    }

    /// One command through `/api/call`, which must succeed: its `result`.
    pub async fn call(&self, key: &str, cmd: Value) -> Value {
        let (status, body) = self.post(key, "/api/call", cmd.clone()).await;
        assert_eq!(status, 200, "{cmd} answered {body}");
        body["result"].clone()
    }

    /// The ws:// URL of gateway a.
    pub fn ws(&self) -> String {
        self.sys.a.ws.clone()
    }
}

pub async fn answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("status {status}: body is not JSON: {text:?}"));
    (status, body)
}
