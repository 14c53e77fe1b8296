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
    keys: String,
}

fn start_api(name: &str, sys: &ChatSystem, keys: &str) -> Proc {
    let cfg = sys.config.display().to_string();
    Proc::start_env(
        name,
        &["--config", &cfg, "api", "--register", &sys.reg],
        &[("SWITCHBOARD_API_KEYS", keys), ("SWITCHBOARD_AGENT_SECRET", AGENT_SECRET)],
    )
}

impl ApiSystem {
    /// A chat system on 127.`net`.0.x and its API on 127.`net`.0.6; `api_toml` is added to
    /// `[api]`.
    pub async fn start(net: u8, api_toml: &str) -> ApiSystem {
        ApiSystem::start_with(net, "", api_toml).await
    }

    /// `start`, the workers also given `events_toml` in `[events]`.
    pub async fn start_with(net: u8, events_toml: &str, api_toml: &str) -> ApiSystem {
        let sys = chat_system_with(net, events_toml, AGENT_SECRET).await;
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
        let api = start_api(&format!("n{net}-api"), &sys, &keys);
        wait_listening(&listen).await;
        ApiSystem { api, base: format!("http://{listen}"), sys, http: reqwest::Client::new(), keys }
    }

    /// Stops the API process (SIGTERM, as `stop` does) and starts it again.
    pub async fn restart_api(&mut self, name: &str) {
        self.api.signal("TERM");
        assert!(self.api.wait_exit(Duration::from_secs(10)).is_some(), "the API process stops on SIGTERM");
        self.api = start_api(name, &self.sys, &self.keys);
        wait_listening(self.base.trim_start_matches("http://")).await;
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

/// How the webhook receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    /// 500 to everything.
    Failing,
    /// Answers after `[api.webhooks] timeout`, too late.
    Slow,
    /// 422 to everything: a refusal retrying cannot change.
    Refusing,
}

/// One delivery the receiver took (answered 2xx), its signature checked.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub event: Value,
}

/// A real HTTP receiver for webhooks, started by the test: it checks every signature (a bad
/// one is a test failure), answers as `mode` says, and keeps what it took 2xx for.
pub struct Receiver {
    pub url: String,
    pub mode: std::sync::Arc<std::sync::Mutex<Mode>>,
    pub taken: std::sync::Arc<std::sync::Mutex<Vec<Delivery>>>,
    /// Requests refused or left unanswered on purpose.
    pub refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Deliveries whose signature or id header was wrong (must stay 0).
    pub bad: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    pub async fn start(ip: &str, secret: &'static str) -> Receiver {
        use axum::http::{HeaderMap, StatusCode};
        use std::sync::{atomic::AtomicUsize, atomic::Ordering, Arc, Mutex};
        let mode = Arc::new(Mutex::new(Mode::Ok));
        let taken = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let bad = Arc::new(AtomicUsize::new(0));
        let (m, t, r, b) = (mode.clone(), taken.clone(), refused.clone(), bad.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (m, t, r, b) = (m.clone(), t.clone(), r.clone(), b.clone());
                async move {
                    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let signed = ::http_api::webhooks::sign::verify(secret, &h("switchboard-signature"), &body);
                    if !signed || h("switchboard-event-id") != event["id"].as_str().unwrap_or("") {
                        // Counted, and checked by the test: a panic here would only fail a request.
                        b.fetch_add(1, Ordering::SeqCst);
                        return StatusCode::UNAUTHORIZED;
                    }
                    let mode = *m.lock().expect("mode");
                    match mode {
                        Mode::Failing => {
                            r.fetch_add(1, Ordering::SeqCst);
                            StatusCode::INTERNAL_SERVER_ERROR
                        }
                        Mode::Refusing => {
                            r.fetch_add(1, Ordering::SeqCst);
                            StatusCode::UNPROCESSABLE_ENTITY
                        }
                        Mode::Slow => {
                            r.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            StatusCode::OK
                        }
                        Mode::Ok => {
                            t.lock().expect("taken").push(Delivery { id: h("switchboard-event-id"), event });
                            StatusCode::NO_CONTENT
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind the receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, mode, taken, refused, bad }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    pub fn taken(&self) -> Vec<Delivery> {
        self.taken.lock().expect("taken").clone()
    }

    /// Waits until every event of `want` was taken (and a little more, for any extra copy),
    /// then checks each was signed and came once: what was taken, in order.
    pub async fn all_once(&self, want: &[String]) -> Vec<Delivery> {
        eventually("every event arrives", || async {
            let got: std::collections::HashSet<String> = self.taken().into_iter().map(|d| d.id).collect();
            want.iter().all(|w| got.contains(w))
        })
        .await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(self.bad.load(std::sync::atomic::Ordering::SeqCst), 0, "every delivery was signed, its id in the header");
        let taken = self.taken();
        let mut seen = std::collections::HashSet::new();
        let twice: Vec<&String> = taken.iter().map(|d| &d.id).filter(|id| !seen.insert(*id)).collect();
        assert!(twice.is_empty(), "delivered twice: {twice:?}");
        taken
    }
}

/// The ids of conversation `conv`'s messages among `taken`, in the order they arrived.
pub fn message_ids(taken: &[Delivery], conv: &str) -> Vec<i64> {
    taken
        .iter()
        .filter(|d| d.event["conversation_id"] == conv && d.event["type"] == "message.created")
        .filter_map(|d| d.event["data"]["message"]["id"].as_str().and_then(|i| i.parse().ok()))
        .collect()
}
