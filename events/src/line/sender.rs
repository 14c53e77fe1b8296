//! The sender: takes agents' replies from the store's outgoing queue and delivers them to LINE.
//!
//! Per message: while the user's reply token is fresh, `reply` (free); otherwise, or when LINE
//! refuses the token, `push` with the message's own `X-Line-Retry-Key`, so a push retried after
//! a timeout or a crash is accepted once (a 409 says an earlier try got through). 429, 5xx and
//! timeouts back off exponentially; any other 4xx fails the message, and the agent sees why.
//!
//! A reply has no retry key, so before a reply call the item is marked `reply_tried`. If the
//! outcome is then unknown (a timeout, a 5xx, this process killed mid-call), the next try
//! repeats the reply with the same token: LINE takes it if the first never arrived, and refuses
//! a used token with 400, which, for a token still inside its window, means the first did
//! arrive. Past the window the outcome cannot be learned: the message is marked failed with
//! that reason rather than pushed a second time.

use super::client::Answer;
use super::Line;
use crate::store::line::{delivery, OutItem};
use crate::store::now_ms;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// Sleep between looks at an empty queue.
const IDLE: Duration = Duration::from_millis(200);

pub async fn run(line: Arc<Line>, quit: watch::Receiver<bool>) {
    // Whatever a previous life of this process held is due again now.
    if let Err(e) = line.chat.store.line_outbox_release(&line.owner).await {
        warn!("cannot take back the outgoing queue's leases: {e}");
    }
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..line.config.senders.max(1) {
        tasks.spawn(worker(line.clone(), quit.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn worker(line: Arc<Line>, mut quit: watch::Receiver<bool>) {
    let lease = (line.config.lease * 1000.0) as i64;
    while !*quit.borrow() {
        match line.chat.store.line_outbox_claim(&line.owner, now_ms(), lease).await {
            Ok(Some(item)) => {
                let id = item.id;
                if let Err(e) = send(&line, item).await {
                    // The lease runs out and the message is tried again.
                    warn!(item = id, "outgoing LINE message not settled: {e}");
                }
            }
            Ok(None) => {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE) => {}
                    _ = quit.changed() => {}
                }
            }
            Err(e) => {
                warn!("cannot read the outgoing queue: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// What became of one try.
enum Outcome {
    Sent(&'static str),
    Failed(String),
    Later(String),
}

async fn send(line: &Line, mut item: OutItem) -> Result<(), crate::store::StoreError> {
    let store = &line.chat.store;
    let outcome = match line.config.bot(&item.bid) {
        None => Outcome::Failed(format!("no LINE channel is configured for bot {}", item.bid)),
        Some(bot) => try_once(line, &mut item, &bot.channel_access_token).await?,
    };
    item.attempts += 1;
    let now = now_ms();
    match outcome {
        Outcome::Sent(how) => {
            info!(item = item.id, to = %item.to, how, "LINE message delivered");
            item.state = delivery::SENT.into();
            item.error = None;
        }
        Outcome::Failed(why) => {
            warn!(item = item.id, to = %item.to, "LINE message failed: {why}");
            item.state = delivery::FAILED.into();
            item.error = Some(why);
        }
        Outcome::Later(why) if now - item.created > (line.config.give_up_after * 1000.0) as i64 => {
            warn!(item = item.id, to = %item.to, "LINE message given up: {why}");
            item.state = delivery::FAILED.into();
            item.error = Some(format!("gave up after {} tries: {why}", item.attempts));
        }
        Outcome::Later(why) => {
            let wait = line.config.backoff_ms(item.attempts);
            info!(item = item.id, to = %item.to, wait_ms = wait, "LINE message will be retried: {why}");
            item.due = now + wait;
            item.error = Some(why);
        }
    }
    store.line_outbox_save(&item, true).await?;
    if item.state != delivery::QUEUED {
        let push = json!({"method": "delivery_push", "conversation_id": item.conversation_id, "id": item.msg_id.to_string(),
                          "delivery": item.state, "delivery_error": item.error});
        if let Err(e) = line.api.send_to_group(&[&crate::keys::bot_group(&item.bid)], push.to_string(), &[]).await {
            // The state is stored; agents see it in history and at their next conversation_list.
            warn!("delivery state not pushed to agents: {e}");
        }
    }
    Ok(())
}

async fn try_once(line: &Line, item: &mut OutItem, access: &str) -> Result<Outcome, crate::store::StoreError> {
    if let Some(token) = item.reply_token.clone() {
        let fresh = now_ms() - item.token_at < line.config.reply_window_ms();
        if fresh {
            let repeat = item.reply_tried;
            if !repeat {
                item.reply_tried = true;
                line.chat.store.line_outbox_save(item, false).await?;
            }
            match line.client.reply(access, &token, &item.text).await {
                Answer::Ok(..) | Answer::AlreadyAccepted => return Ok(Outcome::Sent("reply")),
                Answer::Refused(400, _) if repeat => return Ok(Outcome::Sent("reply (an earlier try used the token)")),
                Answer::Refused(status, why) => info!(item = item.id, status, "reply token refused, pushing instead: {why}"),
                Answer::Busy => {
                    // Certainly not taken: the next try is a first try again.
                    item.reply_tried = repeat;
                    return Ok(Outcome::Later("reply: 429 rate limited".into()));
                }
                Answer::Retry(why) => return Ok(Outcome::Later(format!("reply: {why}"))),
            }
        } else if item.reply_tried {
            return Ok(Outcome::Failed(
                "outcome unknown: a reply was cut off and its token has expired; send it again if the user did not get it".into(),
            ));
        }
        item.reply_token = None;
        item.reply_tried = false;
    }
    Ok(match line.client.push(access, &item.to, &item.text, &item.retry_key).await {
        Answer::Ok(..) => Outcome::Sent("push"),
        Answer::AlreadyAccepted => Outcome::Sent("push (an earlier try was accepted)"),
        Answer::Busy => Outcome::Later("push: 429 rate limited".into()),
        Answer::Retry(why) => Outcome::Later(format!("push: {why}")),
        Answer::Refused(status, why) => Outcome::Failed(format!("LINE refused the message ({status}): {why}")),
    })
}
