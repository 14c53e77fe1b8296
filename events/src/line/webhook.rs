//! The HTTP side of the channel: LINE's webhook calls and the images users sent.
//!
//! A webhook is answered only after its events are in the store (so a 200 means nothing can be
//! lost), and before they are processed (so LINE never waits on our gateways or its own API).
//! A bad or missing signature is a 401, logged with the bot and the body's size, never the body.

use super::signature;
use super::Line;
use crate::store::line::InboxEvent;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tracing::{info, warn};

pub fn router(line: Arc<Line>) -> Router {
    let limit = line.config.max_body;
    Router::new()
        .route("/line/{bid}/webhook", post(webhook))
        .route("/line/media/{name}", get(media))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(line)
}

async fn webhook(State(line): State<Arc<Line>>, Path(bid): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(bot) = line.config.bot(&bid) else {
        warn!(bid = %bid, "webhook for a bot with no LINE channel configured");
        return (StatusCode::NOT_FOUND, "no such bot").into_response();
    };
    if bot.channel_secret.is_empty() {
        warn!(bid = %bid, "webhook refused: the bot's channel secret is not set");
        return (StatusCode::UNAUTHORIZED, "channel secret not configured").into_response();
    }
    let sig = headers.get("x-line-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !signature::verify(&bot.channel_secret, &body, sig) {
        warn!(bid = %bid, bytes = body.len(), signed = !sig.is_empty(), "webhook refused: bad or missing X-Line-Signature");
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let events = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => match v.get("events").and_then(Value::as_array) {
            Some(list) => list.clone(),
            None => {
                warn!(bid = %bid, "signed webhook without an events list");
                return (StatusCode::BAD_REQUEST, "no events").into_response();
            }
        },
        Err(e) => {
            warn!(bid = %bid, "signed webhook that is not JSON: {e}");
            return (StatusCode::BAD_REQUEST, "not JSON").into_response();
        }
    };
    if events.is_empty() {
        // LINE's console sends an empty list to check the URL.
        return StatusCode::OK.into_response();
    }
    let items: Vec<InboxEvent> = events
        .iter()
        .map(|e| {
            let event = e.to_string();
            let event_id = match e.get("webhookEventId").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => id.to_string(),
                // LINE always sends one; without it, the event itself names it.
                _ => format!("sha256:{}", hex::encode(Sha256::digest(event.as_bytes()))),
            };
            InboxEvent { event_id, bid: bid.clone(), event }
        })
        .collect();
    let n = items.len();
    match line.chat.store.line_inbox_put(items).await {
        Ok(new) => {
            info!(bid = %bid, events = n, new, "webhook stored");
            line.wake.notify_one();
            StatusCode::OK.into_response()
        }
        Err(e) => {
            warn!(bid = %bid, "webhook not stored, LINE will be asked to retry: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
        }
    }
}

/// Media names are made here (random hex plus an extension), so anything else is refused.
fn media_name_ok(name: &str) -> bool {
    name.len() <= 64 && !name.starts_with('.') && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
}

async fn media(State(line): State<Arc<Line>>, Path(name): Path<String>) -> Response {
    if !media_name_ok(&name) {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    let path = std::path::Path::new(&line.config.media_dir).join(&name);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let kind = match name.rsplit('.').next() {
                Some("jpg") => "image/jpeg",
                Some("png") => "image/png",
                Some("gif") => "image/gif",
                _ => "application/octet-stream",
            };
            ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "private, max-age=86400")], bytes).into_response()
        }
        Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
