//! The workers' side of the outgoing queue: an agent's `say` in a LINE user's conversation is
//! stored as a chat message and queued here for the sender, taking the user's reply token
//! while it is fresh (replies are free; pushes count against the quota).

use super::line_user;
use crate::store::line::{delivery, OutItem};
use crate::store::{now_ms, Conversation, StoredMessage};
use crate::{Chat, Fail};

impl Chat {
    /// Queues `msg` for the LINE user of `conv`; returns its delivery state. A repeat (the same
    /// `cid` sent again after a lost acknowledgement) queues nothing new, but does queue a
    /// message whose first `say` stopped between storing and queueing.
    pub(crate) async fn queue_for_line(&self, conv: &Conversation, msg: &StoredMessage) -> Result<String, Fail> {
        let Some(user) = line_user(&conv.visitor_id) else { return Err(Fail::bad("not a LINE conversation")) };
        if let Some((state, _)) = self.store.line_deliveries(&msg.thread, &[msg.id]).await?.remove(&msg.id) {
            return Ok(state);
        }
        let now = now_ms();
        let token = self.store.line_reply_token_take(&conv.bid, user, now - self.config.line.reply_window_ms()).await?;
        let (reply_token, token_at) = match token {
            Some((t, at)) => (Some(t), at),
            None => (None, 0),
        };
        let item = OutItem {
            id: 0,
            bid: conv.bid.clone(),
            to: user.to_string(),
            conversation_id: conv.id.clone(),
            thread: msg.thread.clone(),
            msg_id: msg.id,
            text: msg.content.clone(),
            reply_token,
            token_at,
            reply_tried: false,
            retry_key: uuid::Uuid::new_v4().to_string(),
            state: delivery::QUEUED.into(),
            attempts: 0,
            due: now,
            created: now,
            error: None,
        };
        Ok(self.store.line_outbox_push(item).await?.state)
    }

    /// Adds `delivery` (and `delivery_error`) to the messages of a LINE conversation.
    pub(crate) async fn with_deliveries(&self, conv: &Conversation, thread: &str, list: &mut [serde_json::Value]) -> Result<(), Fail> {
        if line_user(&conv.visitor_id).is_none() {
            return Ok(());
        }
        let ids: Vec<i64> = list.iter().filter_map(|m| m.get("id").and_then(|v| v.as_str()).and_then(|s| s.parse().ok())).collect();
        let found = self.store.line_deliveries(thread, &ids).await?;
        for m in list.iter_mut() {
            let id = m.get("id").and_then(|v| v.as_str()).and_then(|s| s.parse::<i64>().ok());
            if let Some((state, error)) = id.and_then(|id| found.get(&id)) {
                m["delivery"] = state.clone().into();
                if let Some(e) = error {
                    m["delivery_error"] = e.clone().into();
                }
            }
        }
        Ok(())
    }
}
