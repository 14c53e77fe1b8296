//! Visitors and their conversations: `visitor_login` (create or resume), assignment of an agent
//! (automatic on the first message, or `claim` / `transfer`), `close`, and the agents' list.

use crate::config::Assignment;
use crate::keys::{agent_uid, bot_group, conversation_thread, visitor_uid};
use crate::protocol::{escape_html, id_field, message_json, text_field};
use crate::request::Request;
use crate::store::{Conversation, ConversationSummary, Store};
use crate::who::Who;
use crate::{Chat, Fail, Outcome};
use business::{Api, Context};
use serde_json::{json, Value};
use tracing::info;

pub(crate) fn push_of(conv: &Conversation) -> Value {
    json!({"method": "conversation_push", "conversation_id": conv.id, "visitor_id": conv.visitor_id,
           "visitor_name": conv.visitor_name, "assigned": conv.assigned, "open": conv.open})
}

impl Chat {
    pub(crate) async fn visitor_login(&self, ctx: &mut Context, req: &Request) -> Outcome {
        let bid = id_field(req, "bid")?.ok_or_else(|| Fail::bad("bid is required"))?;
        let visitor_id = match (id_field(req, "visitor_id")?, Who::of(ctx)) {
            // LINE users' ids are not secrets: nobody may open their conversations from a page.
            (Some(v), _) if crate::keys::line_user(&v).is_some() => return Err(Fail::denied("visitor ids starting with line: are reserved")),
            (Some(v), _) => v,
            // Asked again on a visitor's connection: the same visitor.
            (None, Who::Visitor { id, .. }) => id,
            (None, _) => crate::keys::new_id(),
        };
        self.one_identity(ctx, &Who::visitor(&bid, &visitor_id))?;
        let name = match text_field(req, "name")? {
            Some(n) if !n.trim().is_empty() => n.trim().chars().take(64).collect(),
            _ => format!("Visitor {}", visitor_id.chars().take(6).collect::<String>()),
        };
        let name = escape_html(&name);
        let ip = ctx.client_addr.ip();
        // Taken before the store call (it may create one), given back when it only resumed.
        if !self.new_conversations.try_take(ip) {
            info!(client = %ctx.client_id, %ip, "visitor_login refused: too many new conversations from this address");
            return Err(Fail::bad("too many new conversations from your address: try again in a minute"));
        }
        let opened = self.store.open_conversation(&bid, &visitor_id, &name).await;
        if !matches!(opened, Ok((_, true))) {
            self.new_conversations.give_back(ip);
        }
        let (conv, _) = opened?;
        // On every login, not only the one that opened it: that one may have stopped before
        // recording it, and the event's id makes a second record a no-op.
        self.record_opened(&conv).await?;
        let me = Who::Visitor { bid: bid.clone(), id: visitor_id.clone(), name, conversation: conv.id.clone() };
        me.store(ctx);
        ctx.save_session().await?;
        ctx.api.bind_uid(&ctx.id(), &visitor_uid(&bid, &visitor_id)).await?;
        let history = self.store.history(&conversation_thread(&conv.id), None, None, 50).await?;
        let assigned = self.agent_info(&bid, conv.assigned.as_deref()).await?;
        self.reply(
            ctx,
            json!({"method": "visitor_login", "visitor_id": visitor_id, "conversation_id": conv.id,
                   "history": history.iter().map(message_json).collect::<Vec<_>>(), "assigned": assigned}),
        )
        .await;
        ctx.api.send_to_group(&[&bot_group(&bid)], push_of(&conv).to_string(), &[]).await?;
        Ok(())
    }

    async fn agent_info(&self, bid: &str, agent: Option<&str>) -> Result<Value, Fail> {
        let Some(agent) = agent else { return Ok(Value::Null) };
        let name = self.store.agent_name(bid, agent).await?.unwrap_or_default();
        Ok(json!({"customer_id": agent, "customer_name": name}))
    }

    /// A conversation of the caller's bot (agents) or the caller's own (visitors).
    pub(crate) async fn conversation_for(&self, who: &Who, id: &str) -> Result<Conversation, Fail> {
        let conv = self.store.conversation(id).await?.ok_or_else(|| Fail::denied("no such conversation"))?;
        match who {
            Who::Agent { bid, .. } if *bid == conv.bid => Ok(conv),
            Who::Visitor { conversation, .. } if *conversation == conv.id => Ok(conv),
            _ => Err(Fail::denied("not your conversation")),
        }
    }

    /// Picks an agent for an unassigned conversation, per the configured policy; the store's
    /// compare-and-set decides if two workers race. Returns the conversation as it now is.
    pub(crate) async fn auto_assign(&self, api: &Api, conv: Conversation) -> Result<Conversation, Fail> {
        if conv.assigned.is_some() || self.assignment == Assignment::None {
            return Ok(conv);
        }
        let listing = self.roster.list(api, &conv.bid).await?;
        // Only agents whose token is valid now: an expired or revoked one may still be
        // connected for the moment before its timer closes it.
        let online = self.valid_agents(&conv.bid, &listing);
        if online.is_empty() {
            return Ok(conv);
        }
        let pick = match self.assignment {
            Assignment::RoundRobin => {
                let n = self.store.next_turn(&conv.bid).await?;
                online[(n as usize) % online.len()].to_string()
            }
            _ => {
                let load = self.store.load(&conv.bid).await?;
                online.iter().min_by_key(|id| load.get(**id).copied().unwrap_or(0)).map(|id| id.to_string()).unwrap_or_default()
            }
        };
        if self.store.assign(&conv.id, &pick, None).await? {
            info!(conversation = %conv.id, agent = %pick, "conversation assigned");
            let now = Conversation { assigned: Some(pick), ..conv };
            self.record_assigned(&now).await?;
            self.announce_assignment(api, &now).await?;
            return Ok(now);
        }
        // Another worker assigned it first: use theirs.
        Ok(self.store.conversation(&conv.id).await?.unwrap_or(conv))
    }

    pub(crate) async fn announce_assignment(&self, api: &Api, conv: &Conversation) -> Outcome {
        let info = self.agent_info(&conv.bid, conv.assigned.as_deref()).await?;
        let push = json!({"method": "assign_push", "conversation_id": conv.id, "visitor_id": conv.visitor_id, "assigned": info});
        api.send_to_group(&[&bot_group(&conv.bid)], push.to_string(), &[]).await?;
        api.send_to_uid(&[&visitor_uid(&conv.bid, &conv.visitor_id)], push.to_string()).await?;
        Ok(())
    }

    /// Delivers a stored conversation message: a visitor's reaches its agent (every agent of
    /// the bot while unassigned); an agent's reaches the visitor and every agent.
    pub(crate) async fn deliver_in_conversation(&self, api: &Api, conv: &Conversation, from_visitor: bool, frame: String) -> Outcome {
        let visitor = visitor_uid(&conv.bid, &conv.visitor_id);
        match (&conv.assigned, from_visitor) {
            (Some(agent), true) => api.send_to_uid(&[&visitor, &agent_uid(&conv.bid, agent)], frame).await?,
            _ => {
                api.send_to_uid(&[&visitor], frame.clone()).await?;
                api.send_to_group(&[&bot_group(&conv.bid)], frame, &[]).await?;
            }
        }
        Ok(())
    }

    fn agent_of<'a>(&self, who: &'a Who) -> Result<(&'a str, &'a str), Fail> {
        match who {
            Who::Agent { bid, id, .. } => Ok((bid, id)),
            _ => Err(Fail::denied("agents only")),
        }
    }

    pub(crate) async fn claim(&self, ctx: &mut Context, who: &Who, req: &Request) -> Outcome {
        let (_, me) = self.agent_of(who)?;
        let id = id_field(req, "conversation_id")?.ok_or_else(|| Fail::bad("conversation_id is required"))?;
        let conv = self.conversation_for(who, &id).await?;
        self.reassign(ctx, "claim", conv, me, None).await
    }

    /// The compare-and-set behind `claim` and `transfer`: assigns `to` if the conversation is
    /// held by `expected`, tells the bot's agents and the visitor, and answers with the holder.
    async fn reassign(&self, ctx: &mut Context, method: &str, conv: Conversation, to: &str, expected: Option<&str>) -> Outcome {
        let id = conv.id.clone();
        let (ok, now) = self.assign_if(&ctx.api, conv, to, expected).await?;
        self.reply(ctx, json!({"method": method, "conversation_id": id, "ok": ok, "assigned": now.assigned})).await;
        Ok(())
    }

    pub(crate) async fn transfer(&self, ctx: &mut Context, who: &Who, req: &Request) -> Outcome {
        let (bid, me) = self.agent_of(who)?;
        let id = id_field(req, "conversation_id")?.ok_or_else(|| Fail::bad("conversation_id is required"))?;
        let to = id_field(req, "to")?.ok_or_else(|| Fail::bad("to (a customer_id) is required"))?;
        let conv = self.conversation_for(who, &id).await?;
        if self.store.agent_name(bid, &to).await?.is_none() {
            return Err(Fail::denied("no such agent in this bot"));
        }
        // Only the agent who holds the conversation hands it over.
        self.reassign(ctx, "transfer", conv, &to, Some(me)).await
    }

    pub(crate) async fn close(&self, ctx: &mut Context, who: &Who, req: &Request) -> Outcome {
        self.agent_of(who)?;
        let id = id_field(req, "conversation_id")?.ok_or_else(|| Fail::bad("conversation_id is required"))?;
        let conv = self.conversation_for(who, &id).await?;
        let ok = self.close_conversation(&ctx.api, &conv).await?;
        self.reply(ctx, json!({"method": "close", "conversation_id": id, "ok": ok})).await;
        Ok(())
    }

    /// A page of a bot's open conversations (oldest first, after conversation `after`) as one
    /// agent sees them: waiting / mine / others, unread counts and the last message; `true`
    /// when there are more. Paged because each costs store reads and bytes in the answer.
    /// Read from `s`, the primary or a replica (see `lagging`).
    pub(crate) async fn conversation_summaries(
        &self,
        s: &dyn Store,
        bid: &str,
        me: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Value>, bool), Fail> {
        // One more than the page, to tell whether there are more (its summary is the price).
        let mut page = s.conversation_summaries(bid, &agent_uid(bid, me), after, limit.saturating_add(1)).await?;
        let more = page.len() > limit;
        page.truncate(limit);
        let mut out = Vec::new();
        for ConversationSummary { conversation: c, unread, last } in page {
            let last = last.as_ref().map(message_json);
            let state = match c.assigned.as_deref() {
                None => "waiting",
                Some(a) if a == me => "mine",
                Some(_) => "others",
            };
            let mut summary = json!({"conversation_id": c.id, "visitor_id": c.visitor_id, "visitor_name": c.visitor_name,
                            "assigned": c.assigned, "state": state, "unread": unread, "last_message": last});
            if let Some(user) = crate::keys::line_user(&c.visitor_id) {
                let followed = s.line_user(&c.bid, user).await?.is_none_or(|u| u.followed);
                summary["channel"] = "line".into();
                summary["followed"] = followed.into();
            }
            out.push(summary);
        }
        Ok((out, more))
    }

    /// `{"method":"conversation_list","after":"<conversation_id>","limit":n}`: a page of the
    /// bot's open conversations; `more` says whether to ask again after the last one.
    pub(crate) async fn conversation_list(&self, ctx: &mut Context, who: &Who, req: &Request) -> Outcome {
        let (bid, me) = self.agent_of(who)?;
        let after = id_field(req, "after")?;
        let page = self.config.conversation_page.max(1);
        let limit = match req.get("limit") {
            None | Some(Value::Null) => page,
            Some(v) => v.as_u64().ok_or_else(|| Fail::bad("limit must be a positive integer"))?.clamp(1, page as u64) as usize,
        };
        let after = after.as_deref();
        let (list, more) = self.lagging(ctx, |s| async move { self.conversation_summaries(s.as_ref(), bid, me, after, limit).await }).await?;
        self.reply(ctx, json!({"method": "conversation_list", "conversations": list, "more": more})).await;
        Ok(())
    }
}
