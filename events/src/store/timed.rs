//! A store that times every call into `store_seconds{op}`: wraps whichever backend is
//! configured, so no backend measures itself and every one is measured the same way.

use super::line::{InboxEvent, LineStore, LineUser, OutItem};
use super::{Conversation, ConversationSummary, Inserted, NewMessage, Result, Store, StoredMessage};
use crate::metrics::Metrics;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Instant;

pub struct Timed {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl Timed {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Timed {
        Timed { inner, metrics }
    }
}

#[async_trait]
impl Store for Timed {
    async fn insert_message(&self, m: NewMessage) -> Result<Inserted> {
        let started = Instant::now();
        let r = self.inner.insert_message(m).await;
        self.metrics.store_op("insert_message", started);
        r
    }

    async fn history(&self, thread: &str, before: Option<i64>, after: Option<i64>, limit: usize) -> Result<Vec<StoredMessage>> {
        let started = Instant::now();
        let r = self.inner.history(thread, before, after, limit).await;
        self.metrics.store_op("history", started);
        r
    }

    async fn mark_read(&self, thread: &str, reader: &str, id: i64) -> Result<()> {
        let started = Instant::now();
        let r = self.inner.mark_read(thread, reader, id).await;
        self.metrics.store_op("mark_read", started);
        r
    }

    async fn lease(&self, name: &str, owner: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        let started = Instant::now();
        let r = self.inner.lease(name, owner, now_ms, ttl_ms).await;
        self.metrics.store_op("lease", started);
        r
    }

    async fn read_mark(&self, thread: &str, reader: &str) -> Result<Option<i64>> {
        let started = Instant::now();
        let r = self.inner.read_mark(thread, reader).await;
        self.metrics.store_op("read_mark", started);
        r
    }

    async fn unread(&self, thread: &str, reader: &str) -> Result<u64> {
        let started = Instant::now();
        let r = self.inner.unread(thread, reader).await;
        self.metrics.store_op("unread", started);
        r
    }

    async fn open_conversation(&self, bid: &str, visitor_id: &str, visitor_name: &str) -> Result<(Conversation, bool)> {
        let started = Instant::now();
        let r = self.inner.open_conversation(bid, visitor_id, visitor_name).await;
        self.metrics.store_op("open_conversation", started);
        r
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>> {
        let started = Instant::now();
        let r = self.inner.conversation(id).await;
        self.metrics.store_op("conversation", started);
        r
    }

    async fn conversations(&self, bid: &str, after: Option<&str>, limit: usize) -> Result<Vec<Conversation>> {
        let started = Instant::now();
        let r = self.inner.conversations(bid, after, limit).await;
        self.metrics.store_op("conversations", started);
        r
    }

    async fn conversation_summaries(&self, bid: &str, reader: &str, after: Option<&str>, limit: usize) -> Result<Vec<ConversationSummary>> {
        let started = Instant::now();
        let r = self.inner.conversation_summaries(bid, reader, after, limit).await;
        self.metrics.store_op("conversation_summaries", started);
        r
    }

    async fn assign(&self, id: &str, agent: &str, expected: Option<&str>) -> Result<bool> {
        let started = Instant::now();
        let r = self.inner.assign(id, agent, expected).await;
        self.metrics.store_op("assign", started);
        r
    }

    async fn close_conversation(&self, id: &str) -> Result<bool> {
        let started = Instant::now();
        let r = self.inner.close_conversation(id).await;
        self.metrics.store_op("close_conversation", started);
        r
    }

    async fn load(&self, bid: &str) -> Result<std::collections::HashMap<String, u64>> {
        let started = Instant::now();
        let r = self.inner.load(bid).await;
        self.metrics.store_op("load", started);
        r
    }

    async fn add_agent(&self, bid: &str, agent: &str, name: &str) -> Result<()> {
        let started = Instant::now();
        let r = self.inner.add_agent(bid, agent, name).await;
        self.metrics.store_op("add_agent", started);
        r
    }

    async fn agent_name(&self, bid: &str, agent: &str) -> Result<Option<String>> {
        let started = Instant::now();
        let r = self.inner.agent_name(bid, agent).await;
        self.metrics.store_op("agent_name", started);
        r
    }

    async fn next_turn(&self, bid: &str) -> Result<u64> {
        let started = Instant::now();
        let r = self.inner.next_turn(bid).await;
        self.metrics.store_op("next_turn", started);
        r
    }

    async fn delete_messages_before(&self, before_ms: i64, limit: usize) -> Result<u64> {
        let started = Instant::now();
        let r = self.inner.delete_messages_before(before_ms, limit).await;
        self.metrics.store_op("delete_messages_before", started);
        r
    }
}

#[async_trait]
impl LineStore for Timed {
    async fn line_inbox_put(&self, events: Vec<InboxEvent>) -> Result<usize> {
        let started = Instant::now();
        let r = self.inner.line_inbox_put(events).await;
        self.metrics.store_op("line_inbox_put", started);
        r
    }

    async fn line_inbox_pending(&self, limit: usize) -> Result<Vec<(i64, InboxEvent)>> {
        let started = Instant::now();
        let r = self.inner.line_inbox_pending(limit).await;
        self.metrics.store_op("line_inbox_pending", started);
        r
    }

    async fn line_inbox_done(&self, seq: i64) -> Result<()> {
        let started = Instant::now();
        let r = self.inner.line_inbox_done(seq).await;
        self.metrics.store_op("line_inbox_done", started);
        r
    }

    async fn line_user(&self, bid: &str, user: &str) -> Result<Option<LineUser>> {
        let started = Instant::now();
        let r = self.inner.line_user(bid, user).await;
        self.metrics.store_op("line_user", started);
        r
    }

    async fn line_user_name(&self, bid: &str, user: &str, name: &str) -> Result<()> {
        let started = Instant::now();
        let r = self.inner.line_user_name(bid, user, name).await;
        self.metrics.store_op("line_user_name", started);
        r
    }

    async fn line_user_followed(&self, bid: &str, user: &str, followed: bool) -> Result<()> {
        let started = Instant::now();
        let r = self.inner.line_user_followed(bid, user, followed).await;
        self.metrics.store_op("line_user_followed", started);
        r
    }

    async fn line_reply_token_put(&self, bid: &str, user: &str, token: &str, at: i64) -> Result<()> {
        let started = Instant::now();
        let r = self.inner.line_reply_token_put(bid, user, token, at).await;
        self.metrics.store_op("line_reply_token_put", started);
        r
    }

    async fn line_reply_token_take(&self, bid: &str, user: &str, fresh_since: i64) -> Result<Option<(String, i64)>> {
        let started = Instant::now();
        let r = self.inner.line_reply_token_take(bid, user, fresh_since).await;
        self.metrics.store_op("line_reply_token_take", started);
        r
    }

    async fn line_outbox_push(&self, item: OutItem) -> Result<OutItem> {
        let started = Instant::now();
        let r = self.inner.line_outbox_push(item).await;
        self.metrics.store_op("line_outbox_push", started);
        r
    }

    async fn line_outbox_claim(&self, owner: &str, now: i64, lease_ms: i64) -> Result<Option<OutItem>> {
        let started = Instant::now();
        let r = self.inner.line_outbox_claim(owner, now, lease_ms).await;
        self.metrics.store_op("line_outbox_claim", started);
        r
    }

    async fn line_outbox_release(&self, owner: &str) -> Result<()> {
        let started = Instant::now();
        let r = self.inner.line_outbox_release(owner).await;
        self.metrics.store_op("line_outbox_release", started);
        r
    }

    async fn line_outbox_save(&self, item: &OutItem, release: bool) -> Result<()> {
        let started = Instant::now();
        let r = self.inner.line_outbox_save(item, release).await;
        self.metrics.store_op("line_outbox_save", started);
        r
    }

    async fn line_deliveries(&self, thread: &str, ids: &[i64]) -> Result<std::collections::HashMap<i64, (String, Option<String>)>> {
        let started = Instant::now();
        let r = self.inner.line_deliveries(thread, ids).await;
        self.metrics.store_op("line_deliveries", started);
        r
    }
}
