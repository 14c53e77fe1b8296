//! [`LineStore`] in MySQL/MariaDB: the same tables as on PostgreSQL. MySQL cannot update a
//! table from a subquery on itself, so the claim is a short transaction: pick the next
//! message with `FOR UPDATE SKIP LOCKED` (MariaDB 10.6+, MySQL 8), lease it, read it back.

use super::line::{InboxEvent, LineStore, LineUser, OutItem};
use super::mysql::MySqlStore;
use super::Result;
use async_trait::async_trait;
use sqlx::Row;
use std::collections::HashMap;

#[async_trait]
impl LineStore for MySqlStore {
    async fn line_inbox_put(&self, events: Vec<InboxEvent>) -> Result<usize> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for e in &events {
            n += sqlx::query("INSERT IGNORE INTO line_inbox (event_id, bid, event) VALUES (?, ?, ?)")
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
        let rows = sqlx::query("SELECT seq, event_id, bid, event FROM line_inbox WHERE NOT done ORDER BY seq LIMIT ?")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        // Key columns are binary-collated: read as text without the driver's type check.
        rows.iter()
            .map(|r| {
                let event = InboxEvent { event_id: r.try_get_unchecked("event_id")?, bid: r.try_get_unchecked("bid")?, event: r.try_get("event")? };
                Ok((r.try_get("seq")?, event))
            })
            .collect()
    }

    async fn line_inbox_done(&self, seq: i64) -> Result<()> {
        sqlx::query("UPDATE line_inbox SET done = TRUE WHERE seq = ?").bind(seq).execute(&self.pool).await?;
        Ok(())
    }

    async fn line_user(&self, bid: &str, user: &str) -> Result<Option<LineUser>> {
        let row: Option<(Option<String>, i64, bool)> =
            sqlx::query_as("SELECT name, name_at, followed FROM line_users WHERE bid = ? AND line_user = ?")
                .bind(bid)
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(name, name_at, followed)| LineUser { name, name_at, followed }))
    }

    async fn line_user_name(&self, bid: &str, user: &str, name: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO line_users (bid, line_user, name, name_at) VALUES (?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE name = VALUES(name), name_at = VALUES(name_at)",
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
        sqlx::query("INSERT INTO line_users (bid, line_user, followed) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE followed = VALUES(followed)")
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
            "INSERT INTO line_users (bid, line_user, reply_token, token_at) VALUES (?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE reply_token = IF(VALUES(token_at) >= token_at, VALUES(reply_token), reply_token),
                                     token_at = GREATEST(token_at, VALUES(token_at))",
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
        let mut tx = self.pool.begin().await?;
        let row: Option<(Option<String>, i64)> =
            sqlx::query_as("SELECT reply_token, token_at FROM line_users WHERE bid = ? AND line_user = ? FOR UPDATE")
                .bind(bid)
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((Some(token), at)) = row else {
            // Ended here, not when the connection is next used: the row lock goes now.
            tx.rollback().await?;
            return Ok(None);
        };
        sqlx::query("UPDATE line_users SET reply_token = NULL WHERE bid = ? AND line_user = ?").bind(bid).bind(user).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok((at >= fresh_since).then_some((token, at)))
    }

    async fn line_outbox_push(&self, item: OutItem) -> Result<OutItem> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("INSERT IGNORE INTO line_outbox (bid, line_user, thread, msg_id, state, due, item) VALUES (?, ?, ?, ?, ?, ?, '')")
            .bind(&item.bid)
            .bind(&item.to)
            .bind(&item.thread)
            .bind(item.msg_id)
            .bind(&item.state)
            .bind(item.due)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            let old: String = sqlx::query_scalar("SELECT item FROM line_outbox WHERE thread = ? AND msg_id = ?")
                .bind(&item.thread)
                .bind(item.msg_id)
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            return OutItem::from_json(&old);
        }
        let stored = OutItem { id: done.last_insert_id() as i64, ..item };
        sqlx::query("UPDATE line_outbox SET item = ? WHERE id = ?").bind(stored.to_json()).bind(stored.id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn line_outbox_claim(&self, owner: &str, now: i64, lease_ms: i64) -> Result<Option<OutItem>> {
        let mut tx = self.pool.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT o.id FROM line_outbox o WHERE o.state = 'queued' AND o.due <= ? AND o.lease <= ?
             AND NOT EXISTS (SELECT 1 FROM line_outbox p WHERE p.state = 'queued' AND p.bid = o.bid
                             AND p.line_user = o.line_user AND p.id < o.id)
             ORDER BY o.id LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            // Ended here, not when the connection is next used: SKIP LOCKED must not skip rows
            // an idle connection still has locked.
            tx.rollback().await?;
            return Ok(None);
        };
        sqlx::query("UPDATE line_outbox SET owner = ?, lease = ? WHERE id = ?").bind(owner).bind(now + lease_ms).bind(id).execute(&mut *tx).await?;
        let raw: String = sqlx::query_scalar("SELECT item FROM line_outbox WHERE id = ?").bind(id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        OutItem::from_json(&raw).map(Some)
    }

    async fn line_outbox_release(&self, owner: &str) -> Result<()> {
        sqlx::query("UPDATE line_outbox SET lease = 0, owner = NULL WHERE owner = ? AND state = 'queued'").bind(owner).execute(&self.pool).await?;
        Ok(())
    }

    async fn line_outbox_save(&self, item: &OutItem, release: bool) -> Result<()> {
        sqlx::query(
            "UPDATE line_outbox SET state = ?, due = ?, error = ?, item = ?,
             lease = IF(?, 0, lease), owner = IF(?, NULL, owner) WHERE id = ?",
        )
        .bind(&item.state)
        .bind(item.due)
        .bind(&item.error)
        .bind(item.to_json())
        .bind(release)
        .bind(release)
        .bind(item.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn line_deliveries(&self, thread: &str, ids: &[i64]) -> Result<HashMap<i64, (String, Option<String>)>> {
        let mut out = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let marks = vec!["?"; ids.len()].join(", ");
        let sql = format!("SELECT msg_id, state, error FROM line_outbox WHERE thread = ? AND msg_id IN ({marks})");
        let mut q = sqlx::query(&sql).bind(thread);
        for id in ids {
            q = q.bind(id);
        }
        for r in q.fetch_all(&self.pool).await? {
            out.insert(r.try_get::<i64, _>("msg_id")?, (r.try_get_unchecked("state")?, r.try_get("error")?));
        }
        Ok(out)
    }
}
