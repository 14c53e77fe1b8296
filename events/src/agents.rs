//! Agents of a bot: `login` (verified token), the online list, and the pushes when an agent
//! comes or goes. An agent's connections are bound to uid = customer_id and join the group
//! named by the bot id, as the contract says.

use crate::presence::{self, Change, Snapshot};
use crate::protocol::{code, escape_html, id_field, now_secs};
use crate::who::Who;
use crate::{auth, Chat, Fail, Outcome};
use business::Context;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;
use tracing::info;

/// What a fresh agent login sees.
pub(crate) struct SignedIn {
    pub id: String,
    /// The display name as stored (HTML-escaped).
    pub name: String,
    /// The bot's agents online, listed after this login's join (so it is among them).
    pub online: Arc<Snapshot>,
    pub conversations: Value,
    pub timestamp: i64,
}

impl SignedIn {
    /// The `customer_list` of the login reply: the listing's own, shared with the other
    /// logins it served. The agent itself is in it unless its join was still not applied
    /// when the listing ran; then a list with it added is built for this login.
    pub fn customer_list(&self) -> Cow<'_, RawValue> {
        let agents = self.online.agents();
        if agents.iter().any(|(i, _)| *i == self.id) {
            return Cow::Borrowed(self.online.customer_list());
        }
        let with_me = agents.iter().map(|(i, n)| (i.as_str(), n.as_str())).chain([(self.id.as_str(), self.name.as_str())]);
        Cow::Owned(presence::customer_list(with_me))
    }
}

/// The login reply, written around the already serialized `customer_list`.
#[derive(Serialize)]
struct LoginReply<'a> {
    method: &'static str,
    customer_id: &'a str,
    customer_name: &'a str,
    timestamp: i64,
    customer_list: &'a RawValue,
    conversations: &'a Value,
}

/// The login's `presence` field: `"batch"` asks for `presence_push` frames.
pub(crate) fn presence_batch(req: &Map<String, Value>) -> Result<bool, Fail> {
    match req.get("presence") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::String(s)) if s == "batch" => Ok(true),
        Some(Value::String(s)) if s == "single" => Ok(false),
        Some(_) => Err(Fail::bad("presence must be \"batch\" or \"single\"")),
    }
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
        let batch = presence_batch(req)?;
        let s = self.sign_in(ctx, &bid, &id, &name, exp, batch).await?;
        let list = s.customer_list();
        let reply = LoginReply {
            method: "login",
            customer_id: &id,
            customer_name: &s.name,
            timestamp: s.timestamp,
            customer_list: &list,
            conversations: &s.conversations,
        };
        self.send_serialized(ctx, &reply).await;
        Ok(())
    }

    /// Makes this connection agent `id` of bot `bid` (identity already verified): session,
    /// uid, bot group, presence group, the store's agent list, and the presence change for the
    /// others. `batch` is the client's `"presence":"batch"` (see `presence`).
    pub(crate) async fn sign_in(&self, ctx: &mut Context, bid: &str, id: &str, name: &str, exp: Option<u64>, batch: bool) -> Result<SignedIn, Fail> {
        let name = escape_html(name);
        if let Who::Agent { bid: old_bid, .. } = Who::of(ctx) {
            if old_bid != bid {
                ctx.api.leave_group(&ctx.id(), &old_bid).await?;
            }
            for g in [presence::single_group(&old_bid), presence::batch_group(&old_bid)] {
                ctx.api.leave_group(&ctx.id(), &g).await?;
            }
        }
        let me = Who::Agent { bid: bid.to_string(), id: id.to_string(), name: name.clone() };
        me.store(ctx);
        crate::who::set_token_exp(ctx, exp);
        // Written before joining the group, so anyone listing the group sees who this is.
        ctx.save_session().await?;
        ctx.api.bind_uid(&ctx.id(), id).await?;
        ctx.api.join_group(&ctx.id(), bid).await?;
        let pushes = if batch { presence::batch_group(bid) } else { presence::single_group(bid) };
        ctx.api.join_group(&ctx.id(), &pushes).await?;
        self.store.add_agent(bid, id, &name).await?;
        // Joined (both groups: one link, in order) before listing: see `presence`.
        self.joins.joined(&ctx.api, ctx.client_id, &pushes).await;
        let online = self.roster.list(&ctx.api, bid).await?;
        let conversations = self.conversation_summaries(bid, id).await?;
        let timestamp = now_secs();
        let change = Change { method: "login_push", id: id.to_string(), name: name.clone(), timestamp, client: Some(ctx.client_id) };
        self.announcer.announce(&ctx.api, bid, change).await;
        info!(bid = %bid, agent = %id, client = %ctx.client_id, "agent logged in");
        Ok(SignedIn { id: id.to_string(), name, online, conversations: conversations.into(), timestamp })
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
        for g in [bid.clone(), presence::single_group(bid), presence::batch_group(bid)] {
            ctx.api.leave_group(&ctx.id(), &g).await?;
        }
        self.agent_gone(ctx, bid, id, name).await?;
        Err(Fail::denied(format!("agent token {why}: log in again")))
    }

    pub(crate) fn revoked(&self, bid: &str, id: &str) -> bool {
        self.config.revoked_agents.iter().any(|r| r.split_once(':') == Some((bid, id)))
    }

    /// An agent connection closed: tell the bot's agents if it was that agent's last one.
    pub(crate) async fn agent_gone(&self, ctx: &Context, bid: &str, id: &str, name: &str) -> Outcome {
        let online = self.roster.list(&ctx.api, bid).await?;
        if !online.has_agent_besides(id, ctx.client_id) {
            let change = Change { method: "logout_push", id: id.to_string(), name: name.to_string(), timestamp: now_secs(), client: None };
            self.announcer.announce(&ctx.api, bid, change).await;
            info!(bid = %bid, agent = %id, "agent logged out");
        }
        Ok(())
    }
}
