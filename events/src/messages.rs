//! `say` in its three forms (conversation, room, private), and `history` / `read` on any of
//! them. A message is stored before it is delivered or acknowledged; a re-sent `cid` gets the
//! original acknowledgement and is not delivered again.

use crate::keys::{agent_uid, conversation_thread, private_thread, room_thread, visitor_uid};
use crate::protocol::{id_field, message_json, text_field, SayAck};
use crate::request::Request;
use crate::service::Author;
use crate::who::{in_room, Who};
use crate::{Chat, Fail, Outcome};
use business::Context;
use serde_json::{json, Value};

/// Where a message goes, after the caller's rights were checked.
#[derive(Debug, Clone)]
pub enum Target {
    Conversation(crate::store::Conversation),
    Room { bid: String, room: String },
    Private { bid: String, to: String },
}

impl Chat {
    /// Resolves `conversation_id` / `room` / `with_uid`|`to_uid` to a target the caller may use.
    pub(crate) async fn target(&self, who: &Who, req: &Request, peer_key: &str) -> Result<Target, Fail> {
        let conversation = id_field(req, "conversation_id")?;
        let room = id_field(req, "room")?;
        let peer = id_field(req, peer_key)?;
        match who {
            Who::Nobody => Err(Fail::denied("log in first")),
            Who::Visitor { conversation: own, .. } => {
                if room.is_some() || peer.is_some() {
                    return Err(Fail::denied("visitors can only talk in their own conversation"));
                }
                let id = conversation.unwrap_or_else(|| own.clone());
                Ok(Target::Conversation(self.conversation_for(who, &id).await?))
            }
            Who::Agent { bid, .. } => {
                if let Some(id) = conversation {
                    return Ok(Target::Conversation(self.conversation_for(who, &id).await?));
                }
                if let Some(room) = room {
                    return Ok(Target::Room { bid: bid.clone(), room });
                }
                if let Some(to) = peer {
                    if self.store.agent_name(bid, &to).await?.is_none() {
                        return Err(Fail::denied("no such agent in this bot"));
                    }
                    return Ok(Target::Private { bid: bid.clone(), to });
                }
                Err(Fail::bad(format!("one of conversation_id, room or {peer_key} is required")))
            }
        }
    }

    /// The thread `t` names for the caller `who`, and the field and value clients know it by.
    pub(crate) fn thread_of(&self, t: &Target, who: &Who) -> (String, &'static str, String) {
        let me = match who {
            Who::Agent { id, .. } => id.as_str(),
            _ => "",
        };
        match t {
            Target::Conversation(c) => (conversation_thread(&c.id), "conversation_id", c.id.clone()),
            Target::Room { bid, room } => (room_thread(bid, room), "room", room.clone()),
            Target::Private { bid, to } => (private_thread(bid, me, to), "to_uid", to.clone()),
        }
    }

    pub(crate) async fn say(&self, ctx: &mut Context, who: &Who, req: &Request) -> Outcome {
        let content = text_field(req, "content")?.ok_or_else(|| Fail::bad("content is required"))?;
        let cid = id_field(req, "cid")?;
        let target = self.target(who, req, "to_uid").await?;
        if let Target::Room { room, .. } = &target {
            if !in_room(ctx, room) {
                return Err(Fail::denied("join the room first"));
            }
        }
        let author = match who {
            Who::Agent { bid, id, name } => Author::agent(bid, id, name),
            Who::Visitor { bid, id, name, .. } => Author::visitor(bid, id, name),
            Who::Nobody => return Err(Fail::denied("log in first")),
        };
        let posted = self.post(&ctx.api, &target, &author, content, cid).await?;
        self.send_serialized(ctx, &SayAck::new(&posted.message, posted.delivery.as_deref())).await;
        Ok(())
    }

    /// `typing` in a conversation: the other side sees `typing_push` (nothing is stored).
    pub(crate) async fn typing(&self, ctx: &mut Context, who: &Who, req: &Request) -> Outcome {
        let Target::Conversation(c) = self.target(who, req, "to_uid").await? else {
            return Err(Fail::bad("typing is for conversations"));
        };
        let push = json!({"method": "typing_push", "conversation_id": c.id, "from_uid": who.from_uid(), "from_name": who.name()}).to_string();
        match (who, &c.assigned) {
            (Who::Visitor { .. }, Some(agent)) => ctx.api.send_to_uid(&[&agent_uid(&c.bid, agent)], push).await?,
            (Who::Visitor { .. }, None) => ctx.api.send_to_group(&[&crate::keys::bot_group(&c.bid)], push, &[]).await?,
            _ => ctx.api.send_to_uid(&[&visitor_uid(&c.bid, &c.visitor_id)], push).await?,
        }
        Ok(())
    }

    /// `limit`, `default` when absent, between 1 and `history_limit`.
    pub(crate) fn limit_field(&self, req: &Request, default: usize) -> Result<usize, Fail> {
        let limit = match req.get("limit") {
            None | Some(Value::Null) => default,
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| Fail::bad("limit must be a positive integer"))? as usize,
            Some(_) => return Err(Fail::bad("limit must be a number")),
        };
        Ok(limit.clamp(1, self.config.history_limit))
    }

    pub(crate) fn int_field(req: &Request, key: &str) -> Result<Option<i64>, Fail> {
        match id_field(req, key)? {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| Fail::bad(format!("{key} must be a message id"))),
        }
    }

    pub(crate) async fn history(&self, ctx: &mut Context, who: &Who, req: &Request) -> Outcome {
        let target = self.target(who, req, "with_uid").await?;
        let (thread, key, value) = self.thread_of(&target, who);
        let key = if key == "to_uid" { "with_uid" } else { key };
        let limit = self.limit_field(req, 50)?;
        let before = Self::int_field(req, "before_id")?;
        let after = Self::int_field(req, "after_id")?;
        let t = &thread;
        let messages = self.lagging(ctx, |s| async move { Ok(s.history(t, before, after, limit).await?) }).await?;
        let mut list: Vec<Value> = messages.iter().map(message_json).collect();
        if let Target::Conversation(c) = &target {
            self.with_deliveries(c, &thread, &mut list).await?;
        }
        self.reply(ctx, json!({"method": "history", key: value, "messages": list})).await;
        Ok(())
    }

    pub(crate) async fn read(&self, ctx: &mut Context, who: &Who, req: &Request) -> Outcome {
        let reply = self.mark_read(who, req, "read").await?;
        self.reply(ctx, reply).await;
        Ok(())
    }

    /// Moves the caller's read mark on the thread `req` names; the answer (named `method`)
    /// carries the id and the unread count left.
    pub(crate) async fn mark_read(&self, who: &Who, req: &Request, method: &str) -> Result<Value, Fail> {
        let target = self.target(who, req, "with_uid").await?;
        let me = who.uid().unwrap_or_default();
        let (thread, key, value) = self.thread_of(&target, who);
        let key = if key == "to_uid" { "with_uid" } else { key };
        let id = Self::int_field(req, "id")?.ok_or_else(|| Fail::bad("id is required"))?;
        self.store.mark_read(&thread, &me, id).await?;
        let unread = self.store.unread(&thread, &me).await?;
        Ok(json!({"method": method, key: value, "id": id.to_string(), "unread": unread}))
    }
}
