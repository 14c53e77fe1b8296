//! Stored webhook events become chat: a LINE user is a visitor of the bot (`line:<user id>`),
//! each message a visitor message in that user's open conversation, so assignment, history,
//! unread counts, claim, transfer and close work as for a web visitor.
//!
//! Events are processed oldest first. Each message is stored with `cid = line:<message id>`,
//! so an event processed twice (a crash between storing the message and marking the event
//! done) is not delivered twice. An event that fails for a passing reason (the gateways or
//! LINE's content endpoint unreachable) stays in the inbox and is tried again.

use super::client::Answer;
use super::{Line, VISITOR_PREFIX};
use crate::keys::{bot_group, conversation_thread, visitor_uid};
use crate::protocol::{escape_html, message_json};
use crate::store::{now_ms, Conversation, Inserted, NewMessage};
use crate::visitors::push_of;
use crate::who::visitor_from_uid;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How long a cached display name is trusted before the profile is asked again.
const NAME_TTL_MS: i64 = 24 * 3600 * 1000;

/// Why an event was not processed.
enum Skip {
    /// Try again later.
    Later(String),
    /// Never processable (logged and dropped from the inbox).
    Never(String),
}

impl From<crate::Fail> for Skip {
    fn from(f: crate::Fail) -> Skip {
        Skip::Later(f.msg)
    }
}

impl From<crate::store::StoreError> for Skip {
    fn from(e: crate::store::StoreError) -> Skip {
        Skip::Later(format!("store: {e}"))
    }
}

pub async fn run(line: Arc<Line>, mut quit: watch::Receiver<bool>) {
    let mut delay = Duration::from_millis(200);
    loop {
        if *quit.borrow() {
            return;
        }
        let mut stalled = false;
        match line.chat.store.line_inbox_pending(100).await {
            Ok(batch) => {
                for (seq, ev) in batch {
                    match handle(&line, &ev.bid, &ev.event).await {
                        Ok(()) => {}
                        Err(Skip::Never(why)) => warn!(bid = %ev.bid, event = %ev.event_id, "webhook event dropped: {why}"),
                        Err(Skip::Later(why)) => {
                            warn!(bid = %ev.bid, event = %ev.event_id, "webhook event kept for a retry: {why}");
                            stalled = true;
                            break;
                        }
                    }
                    if let Err(e) = line.chat.store.line_inbox_done(seq).await {
                        warn!("cannot mark a webhook event done: {e}");
                        stalled = true;
                        break;
                    }
                }
            }
            Err(e) => {
                warn!("cannot read the webhook inbox: {e}");
                stalled = true;
            }
        }
        delay = if stalled { (delay * 2).min(Duration::from_secs(10)) } else { Duration::from_millis(200) };
        let wait = if stalled { delay } else { Duration::from_secs(1) };
        tokio::select! {
            _ = line.wake.notified(), if !stalled => {}
            _ = tokio::time::sleep(wait) => {}
            _ = quit.changed() => {}
        }
    }
}

/// A LINE id used in URLs and keys: letters and digits only.
fn line_id(v: Option<&Value>) -> Option<String> {
    let s = v?.as_str()?;
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| s.to_string())
}

async fn handle(line: &Line, bid: &str, raw: &str) -> Result<(), Skip> {
    let ev: Value = serde_json::from_str(raw).map_err(|e| Skip::Never(format!("not JSON: {e}")))?;
    let kind = ev.get("type").and_then(Value::as_str).unwrap_or("");
    let source = ev.get("source").cloned().unwrap_or_default();
    if source.get("type").and_then(Value::as_str) != Some("user") {
        info!(bid, kind, "LINE event from a group or room: not a customer conversation, ignored");
        return Ok(());
    }
    let user = line_id(source.get("userId")).ok_or_else(|| Skip::Never("no valid source.userId".into()))?;
    let event_id = ev.get("webhookEventId").and_then(Value::as_str).unwrap_or("").to_string();
    let at = ev.get("timestamp").and_then(Value::as_i64).filter(|t| *t > 0 && *t <= now_ms()).unwrap_or_else(now_ms);
    let store = &line.chat.store;
    if let Some(token) = ev.get("replyToken").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        store.line_reply_token_put(bid, &user, token, at).await?;
    }
    let (content, mut extra, cid) = match kind {
        "message" => {
            let m = ev.get("message").cloned().unwrap_or_default();
            let id = line_id(m.get("id")).ok_or_else(|| Skip::Never("message without a valid id".into()))?;
            let (content, extra) = message_content(line, bid, &id, &m).await?;
            (content, extra, format!("line:{id}"))
        }
        "follow" | "unfollow" => {
            let followed = kind == "follow";
            store.line_user_followed(bid, &user, followed).await?;
            let text = if followed { "followed the account" } else { "unfollowed (blocked) the account" };
            let mut extra = Map::new();
            extra.insert("line_event".into(), kind.into());
            (text.to_string(), extra, format!("line-event:{event_id}"))
        }
        other => {
            info!(bid, kind = other, "LINE event kind not handled, ignored");
            return Ok(());
        }
    };
    let name = display_name(line, bid, &user).await;
    let (conv, _) = store.open_conversation(bid, &format!("{VISITOR_PREFIX}{user}"), &name).await?;
    // Each time (a no-op after the first): the try that opened it may have stopped before this.
    line.chat.record_opened(&conv).await?;
    extra.insert("conversation_id".into(), conv.id.clone().into());
    extra.insert("channel".into(), "line".into());
    let msg = NewMessage {
        thread: conversation_thread(&conv.id),
        sender: visitor_uid(&conv.bid, &conv.visitor_id),
        from_uid: visitor_from_uid(&conv.visitor_id),
        from_name: conv.visitor_name.clone(),
        cid: Some(cid),
        content,
        to: extra,
    };
    let stored = match store.insert_message(msg).await? {
        Inserted::New(m) => m,
        Inserted::Duplicate(m) => {
            // Stored by an earlier try that stopped before it was marked done: deliver again
            // (clients drop a message id they have shown).
            info!(bid, user = %user, "LINE message already stored, delivering it again");
            m
        }
    };
    line.chat.record_message(&conv, &stored, crate::service::Kind::Visitor).await?;
    deliver(line, conv, &stored).await
}

/// Agents learn of the conversation (on its first message) and get the message, assigning an
/// agent the way a web visitor's first message does.
async fn deliver(line: &Line, conv: Conversation, stored: &crate::store::StoredMessage) -> Result<(), Skip> {
    let (chat, api) = (&line.chat, &line.api);
    if stored.id == 1 {
        api.send_to_group(&[&bot_group(&conv.bid)], push_of(&conv).to_string(), &[]).await.map_err(|e| Skip::Later(e.to_string()))?;
    }
    let conv = chat.auto_assign(api, conv).await?;
    chat.deliver_in_conversation(api, &conv, true, message_json(stored).to_string()).await?;
    Ok(())
}

/// What agents see of a LINE message: its text, or a placeholder plus `sticker` / `image`.
async fn message_content(line: &Line, bid: &str, id: &str, m: &Value) -> Result<(String, Map<String, Value>), Skip> {
    let mut extra = Map::new();
    let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let content = match m.get("type").and_then(Value::as_str).unwrap_or("") {
        "text" => s("text"),
        "sticker" => {
            let sticker = s("stickerId");
            let url = if sticker.bytes().all(|b| b.is_ascii_digit()) && !sticker.is_empty() {
                format!("https://stickershop.line-scdn.net/stickershop/v1/sticker/{sticker}/android/sticker.png")
            } else {
                String::new()
            };
            extra.insert("sticker".into(), json!({"package_id": s("packageId"), "sticker_id": sticker, "url": url}));
            let words =
                m.get("keywords").and_then(Value::as_array).map(|k| k.iter().filter_map(Value::as_str).take(3).collect::<Vec<_>>().join(", "));
            match words.filter(|w| !w.is_empty()) {
                Some(w) => format!("[sticker: {w}]"),
                None => "[sticker]".into(),
            }
        }
        "image" => {
            let provider = m.get("contentProvider").cloned().unwrap_or_default();
            let url = if provider.get("type").and_then(Value::as_str) == Some("external") {
                provider.get("originalContentUrl").and_then(Value::as_str).filter(|u| u.starts_with("https://")).map(str::to_string)
            } else {
                fetch_image(line, bid, id).await?
            };
            match url {
                Some(u) => {
                    extra.insert("image".into(), u.into());
                    "[image]".into()
                }
                None => "[image no longer available]".into(),
            }
        }
        other => format!("[{} message]", escape_html(other)),
    };
    Ok((content, extra))
}

/// Fetches an image's bytes and keeps them under a random name; its URL, or `None` when LINE
/// no longer has it.
async fn fetch_image(line: &Line, bid: &str, id: &str) -> Result<Option<String>, Skip> {
    let token = line.config.bot(bid).map(|b| b.channel_access_token).unwrap_or_default();
    match line.client.content(&token, id).await {
        Answer::Ok(bytes, kind) => {
            let ext = match kind.as_deref().unwrap_or("") {
                k if k.starts_with("image/png") => "png",
                k if k.starts_with("image/gif") => "gif",
                _ => "jpg",
            };
            let name = format!("{}.{ext}", crate::keys::new_id());
            let path = std::path::Path::new(&line.config.media_dir).join(&name);
            tokio::fs::write(&path, &bytes).await.map_err(|e| Skip::Later(format!("writing {}: {e}", path.display())))?;
            Ok(Some(format!("{}/line/media/{name}", line.config.public_url())))
        }
        Answer::Busy => Err(Skip::Later("image content: 429 rate limited".into())),
        Answer::Retry(why) => Err(Skip::Later(format!("image content: {why}"))),
        Answer::AlreadyAccepted | Answer::Refused(..) => {
            warn!(bid, message = id, "LINE has no content for this image");
            Ok(None)
        }
    }
}

/// The user's display name: cached for a day, fetched from the profile endpoint otherwise,
/// a neutral name when LINE will not say.
async fn display_name(line: &Line, bid: &str, user: &str) -> String {
    let store = &line.chat.store;
    let cached = store.line_user(bid, user).await.ok().flatten().and_then(|u| u.name.map(|n| (n, u.name_at)));
    if let Some((name, at)) = &cached {
        if now_ms() - at < NAME_TTL_MS {
            return name.clone();
        }
    }
    let token = line.config.bot(bid).map(|b| b.channel_access_token).unwrap_or_default();
    match line.client.display_name(&token, user).await {
        Ok(name) => {
            let name: String = escape_html(name.trim()).chars().take(64).collect();
            if let Err(e) = store.line_user_name(bid, user, &name).await {
                warn!("cannot cache a LINE display name: {e}");
            }
            name
        }
        Err(e) => {
            warn!(bid, user, "LINE profile not available: {e}");
            cached.map(|(n, _)| n).unwrap_or_else(|| format!("LINE user {}", &user[user.len().saturating_sub(6)..]))
        }
    }
}
