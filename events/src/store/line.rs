//! What the LINE channel keeps in the store: the webhook inbox (events stored before LINE gets
//! its 200, processed after, each `webhookEventId` once), the LINE users of each bot (cached
//! display name, follow state, the latest single-use reply token), and the outgoing queue
//! (agents' replies waiting for the sender, with acknowledgement by lease: a sender that dies
//! holding a message loses nothing, the message becomes due again).
//!
//! Both backends implement [`LineStore`]; the suite in `events/tests/store.rs` runs on both.

use super::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One webhook event, as LINE signed it (`event` is the event's JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct InboxEvent {
    pub event_id: String,
    pub bid: String,
    pub event: String,
}

/// A LINE user of a bot, as far as the store knows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LineUser {
    pub name: Option<String>,
    /// When the name was fetched from the profile endpoint (ms), so it can be refreshed.
    pub name_at: i64,
    pub followed: bool,
}

/// Delivery states shown on an agent's message to a LINE user.
pub mod delivery {
    pub const QUEUED: &str = "queued";
    pub const SENT: &str = "sent";
    pub const FAILED: &str = "failed";
}

/// An agent's reply on its way to LINE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutItem {
    /// Given by the store on push.
    pub id: i64,
    pub bid: String,
    /// The LINE user id (`U…`).
    pub to: String,
    pub conversation_id: String,
    /// The stored chat message this delivers: `(thread, msg_id)` is unique in the queue.
    pub thread: String,
    pub msg_id: i64,
    pub text: String,
    /// The user's reply token, taken for this message while it was fresh (`token_at`, ms).
    pub reply_token: Option<String>,
    pub token_at: i64,
    /// A reply call was made and its outcome is unknown (a timeout, a 5xx, a crash).
    pub reply_tried: bool,
    /// Sent as `X-Line-Retry-Key` on every push of this message, so LINE accepts it once.
    pub retry_key: String,
    /// `queued`, `sent` or `failed` (see [`delivery`]).
    pub state: String,
    pub attempts: u32,
    /// Not before this time (ms): backoff after a 429, a 5xx or a timeout.
    pub due: i64,
    /// When it was queued (ms): a reply undeliverable for `give_up_after` is marked failed.
    pub created: i64,
    /// Why it failed, for the agent.
    pub error: Option<String>,
}

impl OutItem {
    /// An item as the SQL and Redis stores keep it: its JSON.
    pub(super) fn from_json(raw: &str) -> Result<OutItem> {
        serde_json::from_str(raw).map_err(|e| super::StoreError::Corrupt(format!("outbox item: {e}")))
    }

    pub(super) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[async_trait]
pub trait LineStore: Send + Sync {
    /// Stores webhook events unless their `event_id` was stored before; how many were new.
    async fn line_inbox_put(&self, events: Vec<InboxEvent>) -> Result<usize>;
    /// Up to `limit` events not yet processed, oldest first, with their sequence numbers.
    async fn line_inbox_pending(&self, limit: usize) -> Result<Vec<(i64, InboxEvent)>>;
    /// Marks an event processed.
    async fn line_inbox_done(&self, seq: i64) -> Result<()>;

    async fn line_user(&self, bid: &str, user: &str) -> Result<Option<LineUser>>;
    /// Records the display name fetched from the profile endpoint.
    async fn line_user_name(&self, bid: &str, user: &str, name: &str) -> Result<()>;
    async fn line_user_followed(&self, bid: &str, user: &str, followed: bool) -> Result<()>;
    /// Keeps the newest reply token of a user (`at`: when the event happened, ms).
    async fn line_reply_token_put(&self, bid: &str, user: &str, token: &str, at: i64) -> Result<()>;
    /// Takes the user's reply token if it is from `fresh_since` (ms) or later: it is gone
    /// afterwards, since LINE accepts each token once.
    async fn line_reply_token_take(&self, bid: &str, user: &str, fresh_since: i64) -> Result<Option<(String, i64)>>;

    /// Queues a reply; a second push for the same `(thread, msg_id)` changes nothing. Returns
    /// the queued item (the earlier one for a repeat).
    async fn line_outbox_push(&self, item: OutItem) -> Result<OutItem>;
    /// The next message the sender may try now, leased to `owner` until `now + lease_ms`. A
    /// user's messages go out in order: only the oldest queued message of a user is offered,
    /// and not while another sender holds it.
    async fn line_outbox_claim(&self, owner: &str, now: i64, lease_ms: i64) -> Result<Option<OutItem>>;
    /// Ends `owner`'s leases (a restarted sender takes back what its previous life held).
    async fn line_outbox_release(&self, owner: &str) -> Result<()>;
    /// Writes back an item's state. With `release`, the lease ends: a `queued` item becomes
    /// claimable at `due`; without, the sender keeps it (a note before a risky call).
    async fn line_outbox_save(&self, item: &OutItem, release: bool) -> Result<()>;
    /// Delivery state of messages of a thread: `msg_id → (state, error)`.
    async fn line_deliveries(&self, thread: &str, ids: &[i64]) -> Result<std::collections::HashMap<i64, (String, Option<String>)>>;
}
