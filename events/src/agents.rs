//! Agents of a bot: `login` (verified token), the online list, and the pushes when an agent
//! comes or goes. An agent's connections are bound to uid = customer_id and join the group
//! named by the bot id, as the contract says.

use crate::protocol::{code, escape_html, id_field, now_secs};
use crate::who::Who;
use crate::{auth, Chat, Fail, Outcome};
use business::Context;
use serde_json::{json, Map, Value};
use tracing::info;

/// What a fresh agent login sees.
pub(crate) struct SignedIn {
    /// The display name as stored (HTML-escaped).
    pub name: String,
    pub customer_list: Vec<Value>,
    pub conversations: Value,
    pub timestamp: i64,
}

impl Chat {
    pub(crate) async fn login(&self, ctx: &mut Context, req: &Map<String, Value>) -> Outcome {
        let missing = || Fail { code: code::LOGIN_FIELDS, msg: "bid, customer_id and customer_name are required".into() };
        let bid = id_field(req, "bid")?.ok_or_else(missing)?;
        let id = id_field(req, "customer_id")?.ok_or_else(missing)?;
        let name = match req.get("customer_name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(Value::Number(n)) => n.to_string(),
            None | Some(Value::Null) | Some(Value::String(_)) => return Err(missing()),
            Some(_) => return Err(Fail::bad("customer_name must be a string")),
        };
        if name.chars().count() > 64 {
            return Err(Fail::bad("customer_name is longer than 64 characters"));
        }
        if self.revoked(&bid, &id) {
            return Err(Fail::denied("agent token revoked"));
        }
        let mut exp = None;
        if self.config.agent_auth {
            let token = req.get("token").and_then(Value::as_str).unwrap_or("");
            let claims = auth::verify(&self.config.agent_secret, token, &bid, &id)
                .map_err(|e| Fail::denied(format!("agent token refused: {e}")))?;
            exp = Some(claims.exp);
        }
        let s = self.sign_in(ctx, &bid, &id, &name, exp).await?;
        self.reply(
            ctx,
            json!({"method": "login", "customer_id": id, "customer_name": s.name, "timestamp": s.timestamp,
                   "customer_list": s.customer_list, "conversations": s.conversations}),
        )
        .await;
        Ok(())
    }

    /// Makes this connection agent `id` of bot `bid` (identity already verified): session,
    /// uid, bot group, the store's agent list, and `login_push` to the others.
    pub(crate) async fn sign_in(&self, ctx: &mut Context, bid: &str, id: &str, name: &str, exp: Option<u64>) -> Result<SignedIn, Fail> {
        let name = escape_html(name);
        if let Who::Agent { bid: old_bid, .. } = Who::of(ctx) {
            if old_bid != bid {
                ctx.api.leave_group(&ctx.id(), &old_bid).await?;
            }
        }
        let me = Who::Agent { bid: bid.to_string(), id: id.to_string(), name: name.clone() };
        me.store(ctx);
        crate::who::set_token_exp(ctx, exp);
        // Written before joining the group, so anyone listing the group sees who this is.
        ctx.save_session().await?;
        ctx.api.bind_uid(&ctx.id(), id).await?;
        ctx.api.join_group(&ctx.id(), bid).await?;
        self.store.add_agent(bid, id, &name).await?;
        let mut online = self.online_agents(&ctx.api, bid).await?;
        // Our own join may still be in flight to the gateway.
        if !online.iter().any(|(i, _)| i == id) {
            online.push((id.to_string(), name.clone()));
        }
        let customer_list: Vec<Value> =
            online.iter().map(|(i, n)| json!({"customer_id": i, "customer_name": n, "status": 1})).collect();
        let conversations = self.conversation_summaries(bid, id).await?;
        let timestamp = now_secs();
        let push = json!({"method": "login_push", "customer_id": id, "customer_name": name, "timestamp": timestamp});
        ctx.api.send_to_group(&[bid], push.to_string(), &[&ctx.id()]).await?;
        info!(bid = %bid, agent = %id, client = %ctx.client_id, "agent logged in");
        Ok(SignedIn { name, customer_list, conversations: conversations.into(), timestamp })
    }

    /// Every agent action re-checks the token's expiry: an expired token ends the agent's
    /// session on this connection (it is no longer bound, grouped or named), which then needs
    /// a fresh `login`.
    pub(crate) async fn check_token(&self, ctx: &mut Context, who: &Who) -> Outcome {
        let Who::Agent { bid, id, name } = who else { return Ok(()) };
        let revoked = self.revoked(bid, id);
        let expired = crate::who::token_exp(ctx).is_some_and(|exp| exp <= crate::protocol::now_secs() as u64);
        if !revoked && !expired {
            return Ok(());
        }
        let why = if revoked { "revoked" } else { "expired" };
        info!(bid = %bid, agent = %id, client = %ctx.client_id, "agent token {why}: ending the agent session");
        Who::Nobody.store(ctx);
        crate::who::set_token_exp(ctx, None);
        ctx.save_session().await?;
        ctx.api.unbind_uid(&ctx.id(), id).await?;
        ctx.api.leave_group(&ctx.id(), bid).await?;
        self.agent_gone(ctx, bid, id, name).await?;
        Err(Fail::denied(format!("agent token {why}: log in again")))
    }

    pub(crate) fn revoked(&self, bid: &str, id: &str) -> bool {
        self.config.revoked_agents.iter().any(|r| r.split_once(':') == Some((bid, id)))
    }

    /// An agent connection closed: tell the bot's agents if it was that agent's last one.
    pub(crate) async fn agent_gone(&self, ctx: &Context, bid: &str, id: &str, name: &str) -> Outcome {
        let still_here = self.online_agents_except(&ctx.api, bid, Some(ctx.client_id)).await?.iter().any(|(i, _)| i == id);
        if !still_here {
            let push = json!({"method": "logout_push", "customer_id": id, "customer_name": name, "timestamp": now_secs()});
            ctx.api.send_to_group(&[bid], push.to_string(), &[]).await?;
            info!(bid = %bid, agent = %id, "agent logged out");
        }
        Ok(())
    }
}
