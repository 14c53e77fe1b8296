//! The chat's feed: what happened — a conversation opened, assigned or closed, a message in a
//! conversation, an agent coming online or going offline — for adapters that must not miss any
//! of it (the server API's webhooks). Nothing here knows who follows it.
//!
//! With `[events] feed` on, each is appended to the store before the action it records is
//! acknowledged, as a message of the `feed` thread: the store already gives such a thread
//! increasing ids, refuses a second copy of the same `cid` (so a retried action appends its
//! event once: the id of an event is derived from what it records), keeps a reader's mark (a
//! follower's cursor) and deletes what is older than `history_days`. A follower reads the
//! thread after its mark and moves the mark as it goes.

use crate::keys::conversation_thread;
use crate::store::{Conversation, NewMessage, Store, StoredMessage};
use crate::{Chat, Fail};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The thread the feed is kept in (no chat thread name is without a `:`).
pub const THREAD: &str = "feed";
const SENDER: &str = "feed";

/// One thing that happened, as followers get it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique, and the same when an action is retried: followers deduplicate by it.
    pub id: String,
    /// `conversation.created`, `conversation.assigned`, `conversation.closed`,
    /// `message.created`, `agent.online`, `agent.offline`.
    #[serde(rename = "type")]
    pub kind: String,
    pub bid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Unix milliseconds, when it was recorded.
    pub created_at: i64,
    pub data: Value,
}

/// Every kind of event, for followers that subscribe by kind.
pub const KINDS: [&str; 6] =
    ["conversation.created", "conversation.assigned", "conversation.closed", "message.created", "agent.online", "agent.offline"];

fn conversation_json(c: &Conversation) -> Value {
    json!({"conversation_id": c.id, "visitor_id": c.visitor_id, "visitor_name": c.visitor_name,
           "assigned": c.assigned, "open": c.open, "channel": c.channel()})
}

impl Chat {
    /// Appends an event when the feed is on. `what` gives its id and data, and runs only then:
    /// with the feed off (the default), a login built a random id and a conversation's message
    /// its whole JSON for nothing.
    async fn record(&self, kind: &str, bid: &str, conversation: Option<&str>, what: impl FnOnce() -> (String, Value)) -> Result<(), Fail> {
        if !self.config.feed {
            return Ok(());
        }
        let (id, data) = what();
        let event = Event {
            id: format!("{kind}:{id}"),
            kind: kind.into(),
            bid: bid.into(),
            conversation_id: conversation.map(str::to_string),
            created_at: crate::store::now_ms(),
            data,
        };
        let content = serde_json::to_string(&event).map_err(|e| Fail::bad(e.to_string()))?;
        let m = NewMessage {
            thread: THREAD.into(),
            sender: SENDER.into(),
            from_uid: String::new(),
            from_name: String::new(),
            cid: Some(event.id),
            content,
            to: Map::new(),
        };
        self.store.insert_message(m).await?;
        Ok(())
    }

    pub(crate) async fn record_opened(&self, c: &Conversation) -> Result<(), Fail> {
        self.record("conversation.created", &c.bid, Some(&c.id), || (c.id.clone(), json!({"conversation": conversation_json(c)}))).await
    }

    pub(crate) async fn record_assigned(&self, c: &Conversation) -> Result<(), Fail> {
        self.record("conversation.assigned", &c.bid, Some(&c.id), || {
            (format!("{}:{}", c.id, crate::keys::new_id()), json!({"conversation": conversation_json(c), "agent": c.assigned}))
        })
        .await
    }

    pub(crate) async fn record_closed(&self, c: &Conversation) -> Result<(), Fail> {
        self.record("conversation.closed", &c.bid, Some(&c.id), || {
            let closed = Conversation { open: false, ..c.clone() };
            (c.id.clone(), json!({"conversation": conversation_json(&closed)}))
        })
        .await
    }

    /// A message of conversation `c`, from a visitor, an agent or the bot.
    pub(crate) async fn record_message(&self, c: &Conversation, m: &StoredMessage, from: crate::service::Kind) -> Result<(), Fail> {
        self.record("message.created", &c.bid, Some(&c.id), || {
            let mut message = crate::protocol::message_json(m);
            if let Some(o) = message.as_object_mut() {
                o.remove("method");
            }
            let data = json!({"message": message, "sender_type": from.name(), "channel": c.channel()});
            (format!("{}:{}", conversation_thread(&c.id), m.id), data)
        })
        .await
    }

    /// An agent came online (its first connection in the bot) or went offline (its last).
    pub(crate) async fn record_agent(&self, bid: &str, agent: &str, name: &str, online: bool) -> Result<(), Fail> {
        let kind = if online { "agent.online" } else { "agent.offline" };
        self.record(kind, bid, None, || (crate::keys::new_id(), json!({"agent": agent, "name": name}))).await
    }
}

/// Up to `limit` events after feed position `after`, with their positions, oldest first.
/// An entry that does not read back is skipped with a log, never stops the followers.
pub async fn after(store: &dyn Store, after: i64, limit: usize) -> crate::store::Result<Vec<(i64, Event)>> {
    let page = store.history(THREAD, None, Some(after), limit).await?;
    Ok(page
        .into_iter()
        .filter_map(|m| match serde_json::from_str::<Event>(&m.content) {
            Ok(e) => Some((m.id, e)),
            Err(e) => {
                tracing::warn!(position = m.id, "feed entry not readable, skipped: {e}");
                None
            }
        })
        .collect())
}
