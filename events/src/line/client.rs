//! The LINE Messaging API calls Switchboard makes, each answer sorted into what the caller must
//! do next: done, retry later (429, 5xx, timeouts, no connection), or give up (other 4xx).

use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// How a call went, as the sender and the inbound processor act on it.
#[derive(Debug)]
pub enum Answer {
    Ok(Bytes, Option<String>),
    /// 409 on a push with a retry key LINE has already accepted: an earlier try got through.
    AlreadyAccepted,
    /// 429: LINE did not take it; try again later.
    Busy,
    /// Worth trying again later; LINE may or may not have taken it (a timeout, a 5xx).
    Retry(String),
    /// LINE refused for good (status, LINE's message).
    Refused(u16, String),
}

pub struct LineApi {
    http: reqwest::Client,
    /// Where push and reply calls are timed.
    metrics: Arc<crate::metrics::Metrics>,
    api_base: String,
    data_base: String,
}

impl LineApi {
    pub fn new(api_base: &str, data_base: &str, timeout: Duration, metrics: Arc<crate::metrics::Metrics>) -> Result<LineApi, String> {
        let http = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(LineApi { http, metrics, api_base: api_base.trim_end_matches('/').into(), data_base: data_base.trim_end_matches('/').into() })
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Answer::Retry("timed out".into()),
            Err(e) => return Answer::Retry(format!("no answer: {e}")),
        };
        let status = resp.status().as_u16();
        let kind = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => return Answer::Retry("timed out reading the answer".into()),
            Err(e) => return Answer::Retry(format!("answer cut off: {e}")),
        };
        match status {
            200..=299 => Answer::Ok(body, kind),
            409 => Answer::AlreadyAccepted,
            429 => Answer::Busy,
            500..=599 => Answer::Retry(format!("{status} from LINE")),
            _ => {
                let msg = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
                Answer::Refused(status, msg)
            }
        }
    }

    /// `POST /v2/bot/message/reply`: free, once per token; LINE refuses a retry key here.
    pub async fn reply(&self, access_token: &str, reply_token: &str, text: &str) -> Answer {
        let body = json!({"replyToken": reply_token, "messages": [{"type": "text", "text": text}]});
        let started = std::time::Instant::now();
        let answer = self.call(self.http.post(format!("{}/v2/bot/message/reply", self.api_base)).bearer_auth(access_token).json(&body)).await;
        self.metrics.line_send.observe_since(started);
        answer
    }

    /// `POST /v2/bot/message/push` with `X-Line-Retry-Key`, the same key on every try.
    pub async fn push(&self, access_token: &str, to: &str, text: &str, retry_key: &str) -> Answer {
        let body = json!({"to": to, "messages": [{"type": "text", "text": text}]});
        let req = self
            .http
            .post(format!("{}/v2/bot/message/push", self.api_base))
            .bearer_auth(access_token)
            .header("X-Line-Retry-Key", retry_key)
            .json(&body);
        let started = std::time::Instant::now();
        let answer = self.call(req).await;
        self.metrics.line_send.observe_since(started);
        answer
    }

    /// The user's display name from `GET /v2/bot/profile/<user>`.
    pub async fn display_name(&self, access_token: &str, user: &str) -> Result<String, String> {
        match self.call(self.http.get(format!("{}/v2/bot/profile/{user}", self.api_base)).bearer_auth(access_token)).await {
            Answer::Ok(body, _) => serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("displayName").and_then(Value::as_str).map(str::to_string))
                .ok_or_else(|| "profile without displayName".into()),
            other => Err(format!("{other:?}")),
        }
    }

    /// The bytes of an image (or other content) a user sent.
    pub async fn content(&self, access_token: &str, message_id: &str) -> Answer {
        self.call(self.http.get(format!("{}/v2/bot/message/{message_id}/content", self.data_base)).bearer_auth(access_token)).await
    }
}
