//! A fake LINE Messaging API: a real HTTP server on loopback that records every call, checks
//! the bearer token, remembers retry keys and reply tokens as LINE does, and can be told to
//! answer 429, 4xx, 5xx or too late. Used by tests/line.rs and the browser test.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const CHANNEL_SECRET: &str = "line-channel-secret";
pub const ACCESS_TOKEN: &str = "line-access-token";
/// A real 1×1 PNG (LINE green), served as an image's content.
pub const PNG: &[u8] = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90\x77\x53\xde\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\x60\x3b\x1e\x0a\x00\x01\xf9\x01\x23\x2a\x4c\xa8\x96\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";

/// What the fake answers the next reply/push call with, before its normal behaviour.
#[derive(Clone, Debug)]
pub enum Forced {
    Status(u16, &'static str),
    /// Takes the message, then answers too late for the sender's timeout.
    AcceptAndHang,
}

#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub auth: String,
    pub retry_key: Option<String>,
    pub body: Value,
}

#[derive(Default)]
pub struct Fake {
    pub calls: Mutex<Vec<Call>>,
    /// Messages LINE took for delivery: (user, text, how).
    pub delivered: Mutex<Vec<(String, String, &'static str)>>,
    /// Reply token → (user, used).
    pub tokens: Mutex<HashMap<String, (String, bool)>>,
    pub keys: Mutex<HashSet<String>>,
    pub forced: Mutex<VecDeque<Forced>>,
    /// Time taken to answer an accepted call (the message is taken first).
    pub delay: Mutex<Duration>,
}

impl Fake {
    pub fn delivered_texts(&self, user: &str) -> Vec<String> {
        self.delivered.lock().unwrap().iter().filter(|(u, _, _)| u == user).map(|(_, t, _)| t.clone()).collect()
    }

    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls.lock().unwrap().iter().filter(|c| c.path == path).cloned().collect()
    }
}

pub fn text_of(body: &Value) -> String {
    body["messages"][0]["text"].as_str().unwrap_or("").to_string()
}

async fn answer(fake: &Fake, path: &str, headers: &HeaderMap, body: Value) -> Response {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    let auth = h("authorization").unwrap_or_default();
    let retry_key = h("x-line-retry-key");
    fake.calls.lock().unwrap().push(Call { path: path.into(), auth: auth.clone(), retry_key: retry_key.clone(), body: body.clone() });
    if auth != format!("Bearer {ACCESS_TOKEN}") {
        return (StatusCode::UNAUTHORIZED, Json(json!({"message": "Authentication failed"}))).into_response();
    }
    let forced = fake.forced.lock().unwrap().pop_front();
    let mut hang = false;
    match forced {
        Some(Forced::Status(s, msg)) => {
            return (StatusCode::from_u16(s).unwrap(), Json(json!({"message": msg}))).into_response();
        }
        Some(Forced::AcceptAndHang) => hang = true,
        None => {}
    }
    let accepted = if path.ends_with("/reply") {
        if retry_key.is_some() {
            return (StatusCode::BAD_REQUEST, Json(json!({"message": "The retry key cannot be used with this API"}))).into_response();
        }
        let token = body["replyToken"].as_str().unwrap_or("").to_string();
        let mut tokens = fake.tokens.lock().unwrap();
        match tokens.get_mut(&token) {
            Some((user, used)) if !*used => {
                *used = true;
                fake.delivered.lock().unwrap().push((user.clone(), text_of(&body), "reply"));
                true
            }
            _ => false,
        }
    } else {
        let key = retry_key.unwrap_or_default();
        if !key.is_empty() && !fake.keys.lock().unwrap().insert(key) {
            return (StatusCode::CONFLICT, Json(json!({"message": "The retry key is already accepted"}))).into_response();
        }
        fake.delivered.lock().unwrap().push((body["to"].as_str().unwrap_or("").into(), text_of(&body), "push"));
        true
    };
    if !accepted {
        return (StatusCode::BAD_REQUEST, Json(json!({"message": "Invalid reply token"}))).into_response();
    }
    let delay = *fake.delay.lock().unwrap();
    tokio::time::sleep(if hang { Duration::from_secs(5) } else { delay }).await;
    (StatusCode::OK, Json(json!({}))).into_response()
}

pub async fn start_fake_line(ip: &str) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route(
            "/v2/bot/message/reply",
            post(|State(f): State<Arc<Fake>>, h: HeaderMap, Json(b): Json<Value>| async move { answer(&f, "/v2/bot/message/reply", &h, b).await }),
        )
        .route(
            "/v2/bot/message/push",
            post(|State(f): State<Arc<Fake>>, h: HeaderMap, Json(b): Json<Value>| async move { answer(&f, "/v2/bot/message/push", &h, b).await }),
        )
        .route(
            "/v2/bot/profile/{user}",
            get(|Path(user): Path<String>| async move {
                // Users named …html… have markup in their name, to check it is escaped.
                let name = if user.contains("html") { format!("Name <{user}>") } else { "Yuki Tanaka".to_string() };
                Json(json!({"userId": user, "displayName": name}))
            }),
        )
        .route(
            "/v2/bot/message/{id}/content",
            get(|Path(id): Path<String>| async move {
                if id == "404404" {
                    return (StatusCode::NOT_FOUND, "gone").into_response();
                }
                ([("content-type", "image/png")], PNG).into_response()
            }),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind fake LINE");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, url)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

/// A LINE webhook event of `kind` from `user`, with `extra` fields.
pub fn event(id: &str, user: &str, kind: &str, extra: Value) -> Value {
    let mut e = json!({"type": kind, "mode": "active", "timestamp": now_ms(), "webhookEventId": id,
                       "deliveryContext": {"isRedelivery": false}, "source": {"type": "user", "userId": user}});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            e[k] = v;
        }
    }
    e
}

/// A text message event whose reply token the fake will accept.
pub fn text_event(fake: &Fake, id: &str, user: &str, msg_id: &str, text: &str) -> Value {
    let reply_token = format!("rt-{id}");
    fake.tokens.lock().unwrap().insert(reply_token.clone(), (user.to_string(), false));
    event(id, user, "message", json!({"replyToken": reply_token, "message": {"id": msg_id, "type": "text", "text": text, "quoteToken": "q"}}))
}

/// POSTs a webhook signed with `secret` (`None`: no signature header); the status.
pub async fn post_webhook(url: &str, events: &[Value], secret: Option<&str>) -> u16 {
    let body = json!({"destination": "U0000000000000000000000000000000f", "events": events}).to_string();
    let mut req = reqwest::Client::new().post(url).header("content-type", "application/json");
    if let Some(s) = secret {
        req = req.header("x-line-signature", events::line::signature::sign(s, body.as_bytes()));
    }
    req.body(body).send().await.expect("webhook call").status().as_u16()
}
