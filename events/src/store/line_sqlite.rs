//! [`LineStore`] on the SQLite file. The outgoing queue is one table: an item's JSON plus the
//! columns the claim query needs; the claim is a single `UPDATE … RETURNING`, so two senders
//! (even in two processes) never take the same message.

use super::line::{InboxEvent, LineStore, LineUser, OutItem};
use super::sqlite::{Cached, SqliteStore};
use super::Result;
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use std::collections::HashMap;

#[async_trait]
impl LineStore for SqliteStore {
    async fn line_inbox_put(&self, events: Vec<InboxEvent>) -> Result<usize> {
        self.run(move |c| {
            let tx = c.savepoint()?;
            let mut n = 0;
            for e in &events {
                n += tx.exec(
                    "INSERT INTO line_inbox (event_id, bid, event) VALUES (?1, ?2, ?3) ON CONFLICT(event_id) DO NOTHING",
                    params![e.event_id, e.bid, e.event],
                )?;
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    async fn line_inbox_pending(&self, limit: usize) -> Result<Vec<(i64, InboxEvent)>> {
        self.run(move |c| {
            let mut st = c.prepare_cached("SELECT seq, event_id, bid, event FROM line_inbox WHERE done = 0 ORDER BY seq LIMIT ?1")?;
            let rows = st.query_map([limit as i64], |r| Ok((r.get(0)?, InboxEvent { event_id: r.get(1)?, bid: r.get(2)?, event: r.get(3)? })))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn line_inbox_done(&self, seq: i64) -> Result<()> {
        self.run(move |c| {
            c.exec("UPDATE line_inbox SET done = 1 WHERE seq = ?1", [seq])?;
            Ok(())
        })
        .await
    }

    async fn line_user(&self, bid: &str, user: &str) -> Result<Option<LineUser>> {
        let (bid, user) = (bid.to_string(), user.to_string());
        self.run(move |c| {
            Ok(c.row("SELECT name, name_at, followed FROM line_users WHERE bid = ?1 AND user = ?2", params![bid, user], |r| {
                Ok(LineUser { name: r.get(0)?, name_at: r.get(1)?, followed: r.get::<_, i64>(2)? == 1 })
            })
            .optional()?)
        })
        .await
    }

    async fn line_user_name(&self, bid: &str, user: &str, name: &str) -> Result<()> {
        let (bid, user, name) = (bid.to_string(), user.to_string(), name.to_string());
        self.run(move |c| {
            c.exec(
                "INSERT INTO line_users (bid, user, name, name_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(bid, user) DO UPDATE SET name = excluded.name, name_at = excluded.name_at",
                params![bid, user, name, super::now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn line_user_followed(&self, bid: &str, user: &str, followed: bool) -> Result<()> {
        let (bid, user) = (bid.to_string(), user.to_string());
        self.run(move |c| {
            c.exec(
                "INSERT INTO line_users (bid, user, followed) VALUES (?1, ?2, ?3)
                 ON CONFLICT(bid, user) DO UPDATE SET followed = excluded.followed",
                params![bid, user, followed as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn line_reply_token_put(&self, bid: &str, user: &str, token: &str, at: i64) -> Result<()> {
        let (bid, user, token) = (bid.to_string(), user.to_string(), token.to_string());
        self.run(move |c| {
            // Events can be processed out of order after a redelivery: keep the newest token.
            c.exec(
                "INSERT INTO line_users (bid, user, reply_token, token_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(bid, user) DO UPDATE SET reply_token = excluded.reply_token, token_at = excluded.token_at
                 WHERE excluded.token_at >= line_users.token_at",
                params![bid, user, token, at],
            )?;
            Ok(())
        })
        .await
    }

    async fn line_reply_token_take(&self, bid: &str, user: &str, fresh_since: i64) -> Result<Option<(String, i64)>> {
        let (bid, user) = (bid.to_string(), user.to_string());
        self.run(move |c| {
            let tx = c.savepoint()?;
            let found: Option<(Option<String>, i64)> = tx
                .query_row("SELECT reply_token, token_at FROM line_users WHERE bid = ?1 AND user = ?2", params![bid, user], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((Some(token), at)) = found else { return Ok(None) };
            tx.exec("UPDATE line_users SET reply_token = NULL WHERE bid = ?1 AND user = ?2", params![bid, user])?;
            tx.commit()?;
            Ok((at >= fresh_since).then_some((token, at)))
        })
        .await
    }

    async fn line_outbox_push(&self, item: OutItem) -> Result<OutItem> {
        self.run(move |c| {
            let tx = c.savepoint()?;
            let old: Option<String> = tx
                .query_row("SELECT item FROM line_outbox WHERE thread = ?1 AND msg_id = ?2", params![item.thread, item.msg_id], |r| r.get(0))
                .optional()?;
            if let Some(old) = old {
                return OutItem::from_json(&old);
            }
            tx.exec(
                "INSERT INTO line_outbox (bid, user, thread, msg_id, state, due, item) VALUES (?1, ?2, ?3, ?4, ?5, ?6, '')",
                params![item.bid, item.to, item.thread, item.msg_id, item.state, item.due],
            )?;
            let stored = OutItem { id: tx.last_insert_rowid(), ..item };
            tx.exec("UPDATE line_outbox SET item = ?1 WHERE id = ?2", params![stored.to_json(), stored.id])?;
            tx.commit()?;
            Ok(stored)
        })
        .await
    }

    async fn line_outbox_claim(&self, owner: &str, now: i64, lease_ms: i64) -> Result<Option<OutItem>> {
        let owner = owner.to_string();
        self.run(move |c| {
            let raw: Option<String> = c
                .query_row(
                    "UPDATE line_outbox SET owner = ?1, lease = ?2 WHERE id = (
                       SELECT o.id FROM line_outbox o WHERE o.state = 'queued' AND o.due <= ?3 AND o.lease <= ?3
                       AND NOT EXISTS (SELECT 1 FROM line_outbox p WHERE p.state = 'queued' AND p.bid = o.bid
                                       AND p.user = o.user AND p.id < o.id)
                       ORDER BY o.id LIMIT 1)
                     RETURNING item",
                    params![owner, now + lease_ms, now],
                    |r| r.get(0),
                )
                .optional()?;
            raw.map(|r| OutItem::from_json(&r)).transpose()
        })
        .await
    }

    async fn line_outbox_release(&self, owner: &str) -> Result<()> {
        let owner = owner.to_string();
        self.run(move |c| {
            c.exec("UPDATE line_outbox SET lease = 0, owner = NULL WHERE owner = ?1 AND state = 'queued'", [owner])?;
            Ok(())
        })
        .await
    }

    async fn line_outbox_save(&self, item: &OutItem, release: bool) -> Result<()> {
        let item = item.clone();
        self.run(move |c| {
            c.exec(
                "UPDATE line_outbox SET state = ?1, due = ?2, error = ?3, item = ?4,
                 lease = CASE WHEN ?6 THEN 0 ELSE lease END, owner = CASE WHEN ?6 THEN NULL ELSE owner END WHERE id = ?5",
                params![item.state, item.due, item.error, item.to_json(), item.id, release],
            )?;
            Ok(())
        })
        .await
    }

    async fn line_deliveries(&self, thread: &str, ids: &[i64]) -> Result<HashMap<i64, (String, Option<String>)>> {
        let (thread, ids) = (thread.to_string(), ids.to_vec());
        self.run(move |c| {
            let mut out = HashMap::new();
            let mut st = c.prepare_cached("SELECT state, error FROM line_outbox WHERE thread = ?1 AND msg_id = ?2")?;
            for id in ids {
                if let Some(found) = st.query_row(params![thread, id], |r| Ok((r.get(0)?, r.get(1)?))).optional()? {
                    out.insert(id, found);
                }
            }
            Ok(out)
        })
        .await
    }
}
