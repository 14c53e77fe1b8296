//! [`LineStore`] in PostgreSQL: the same tables as on SQLite. The claim is one
//! `UPDATE … RETURNING` whose inner SELECT skips rows another sender has locked, so two
//! senders (in two processes or on two servers) never take the same message, and a user's
//! messages still go out oldest first.

use super::line::{InboxEvent, LineStore, LineUser, OutItem};
use super::postgres::PgStore;
use super::Result;
use async_trait::async_trait;
use sqlx::Row;
use std::collections::HashMap;

#[async_trait]
impl LineStore for PgStore {
    async fn line_inbox_put(&self, events: Vec<InboxEvent>) -> Result<usize> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for e in &events {
            n += sqlx::query("INSERT INTO line_inbox (event_id, bid, event) VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING")
                .bind(&e.event_id)
                .bind(&e.bid)
                .bind(&e.event)
                .execute(&mut *tx)
                .await?
                .rows_affected() as usize;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn line_inbox_pending(&self, limit: usize) -> Result<Vec<(i64, InboxEvent)>> {
        let rows: Vec<(i64, String, String, String)> =
            sqlx::query_as("SELECT seq, event_id, bid, event FROM line_inbox WHERE NOT done ORDER BY seq LIMIT $1")
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(seq, event_id, bid, event)| (seq, InboxEvent { event_id, bid, event })).collect())
    }

    async fn line_inbox_done(&self, seq: i64) -> Result<()> {
        sqlx::query("UPDATE line_inbox SET done = TRUE WHERE seq = $1").bind(seq).execute(&self.pool).await?;
        Ok(())
    }

    async fn line_user(&self, bid: &str, user: &str) -> Result<Option<LineUser>> {
        let row: Option<(Option<String>, i64, bool)> =
            sqlx::query_as("SELECT name, name_at, followed FROM line_users WHERE bid = $1 AND line_user = $2")
                .bind(bid)
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(name, name_at, followed)| LineUser { name, name_at, followed }))
    }

    async fn line_user_name(&self, bid: &str, user: &str, name: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO line_users (bid, line_user, name, name_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (bid, line_user) DO UPDATE SET name = excluded.name, name_at = excluded.name_at",
        )
        .bind(bid)
        .bind(user)
        .bind(name)
        .bind(super::now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn line_user_followed(&self, bid: &str, user: &str, followed: bool) -> Result<()> {
        sqlx::query(
            "INSERT INTO line_users (bid, line_user, followed) VALUES ($1, $2, $3)
             ON CONFLICT (bid, line_user) DO UPDATE SET followed = excluded.followed",
        )
        .bind(bid)
        .bind(user)
        .bind(followed)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn line_reply_token_put(&self, bid: &str, user: &str, token: &str, at: i64) -> Result<()> {
        // Events can be processed out of order after a redelivery: keep the newest token.
        sqlx::query(
            "INSERT INTO line_users (bid, line_user, reply_token, token_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (bid, line_user) DO UPDATE SET reply_token = excluded.reply_token, token_at = excluded.token_at
             WHERE excluded.token_at >= line_users.token_at",
        )
        .bind(bid)
        .bind(user)
        .bind(token)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn line_reply_token_take(&self, bid: &str, user: &str, fresh_since: i64) -> Result<Option<(String, i64)>> {
        // Taken in one statement: the old values come back from the row as it was locked.
        let row: Option<(Option<String>, i64)> = sqlx::query_as(
            "UPDATE line_users u SET reply_token = NULL FROM (SELECT bid, line_user, reply_token, token_at FROM line_users
               WHERE bid = $1 AND line_user = $2 FOR UPDATE) old
             WHERE u.bid = old.bid AND u.line_user = old.line_user RETURNING old.reply_token, old.token_at",
        )
        .bind(bid)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        let Some((Some(token), at)) = row else { return Ok(None) };
        Ok((at >= fresh_since).then_some((token, at)))
    }

    async fn line_outbox_push(&self, item: OutItem) -> Result<OutItem> {
        let mut tx = self.pool.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO line_outbox (bid, line_user, thread, msg_id, state, due, item) VALUES ($1, $2, $3, $4, $5, $6, '')
             ON CONFLICT (thread, msg_id) DO NOTHING RETURNING id",
        )
        .bind(&item.bid)
        .bind(&item.to)
        .bind(&item.thread)
        .bind(item.msg_id)
        .bind(&item.state)
        .bind(item.due)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            let old: String = sqlx::query_scalar("SELECT item FROM line_outbox WHERE thread = $1 AND msg_id = $2")
                .bind(&item.thread)
                .bind(item.msg_id)
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            return OutItem::from_json(&old);
        };
        let stored = OutItem { id, ..item };
        sqlx::query("UPDATE line_outbox SET item = $1 WHERE id = $2").bind(stored.to_json()).bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn line_outbox_claim(&self, owner: &str, now: i64, lease_ms: i64) -> Result<Option<OutItem>> {
        let raw: Option<String> = sqlx::query_scalar(
            "UPDATE line_outbox SET owner = $1, lease = $2 WHERE id = (
               SELECT o.id FROM line_outbox o WHERE o.state = 'queued' AND o.due <= $3 AND o.lease <= $3
               AND NOT EXISTS (SELECT 1 FROM line_outbox p WHERE p.state = 'queued' AND p.bid = o.bid
                               AND p.line_user = o.line_user AND p.id < o.id)
               ORDER BY o.id LIMIT 1 FOR UPDATE SKIP LOCKED)
             AND lease <= $3
             RETURNING item",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        raw.map(|r| OutItem::from_json(&r)).transpose()
    }

    async fn line_outbox_release(&self, owner: &str) -> Result<()> {
        sqlx::query("UPDATE line_outbox SET lease = 0, owner = NULL WHERE owner = $1 AND state = 'queued'").bind(owner).execute(&self.pool).await?;
        Ok(())
    }

    async fn line_outbox_save(&self, item: &OutItem, release: bool) -> Result<()> {
        sqlx::query(
            "UPDATE line_outbox SET state = $1, due = $2, error = $3, item = $4,
             lease = CASE WHEN $6 THEN 0 ELSE lease END, owner = CASE WHEN $6 THEN NULL ELSE owner END WHERE id = $5",
        )
        .bind(&item.state)
        .bind(item.due)
        .bind(&item.error)
        .bind(item.to_json())
        .bind(item.id)
        .bind(release)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn line_deliveries(&self, thread: &str, ids: &[i64]) -> Result<HashMap<i64, (String, Option<String>)>> {
        let rows = sqlx::query("SELECT msg_id, state, error FROM line_outbox WHERE thread = $1 AND msg_id = ANY($2)")
            .bind(thread)
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        let mut out = HashMap::new();
        for r in rows {
            out.insert(r.try_get::<i64, _>("msg_id")?, (r.try_get("state")?, r.try_get("error")?));
        }
        Ok(out)
    }
}
