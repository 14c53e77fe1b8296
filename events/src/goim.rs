//! What goim-style app clients need beyond the JSON protocol. The gateway turns their packets
//! into these methods (op 7 `auth`, op 2 `heartbeat`, op 14 `sync`, op 16 `ack`) and the
//! answers back into reply packets, so here they are ordinary methods any client may call.
//!
//! A goim user is an agent of a bot: `mid` is its customer_id, `shop_id` (the merchant) its bot
//! id, `token` the same signed agent token a `login` takes, and `room_id` the room it enters.
//! A one-to-one chat between two mids is the private thread of the pair (`messages::private_thread`,
//! ordered), so app and browser clients share one history and one set of read marks.

use crate::keys::room_group;
use crate::messages::Target;
use crate::protocol::{id_field, message_json, text_field};
use crate::request::Request;
use crate::who::Who;
use crate::{auth, Chat, Fail, Outcome};
use business::php::{Key, Value as Php};
use business::Context;
use serde_json::{json, Value};

/// The session key holding the room a goim client authenticated into (its heartbeat counts it).
const HOME_ROOM: &[u8] = b"goim_room";

/// The answer to op 7, written around the login's already serialized list of agents.
#[derive(serde::Serialize)]
struct AuthReply<'a> {
    method: &'static str,
    mid: &'a str,
    shop_id: &'a str,
    name: &'a str,
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_list: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agents: Option<&'a serde_json::value::RawValue>,
    conversations: &'a Value,
    conversations_more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<&'a serde_json::value::RawValue>,
}

impl Chat {
    pub(crate) async fn auth(&self, ctx: &mut Context, req: &Request) -> Outcome {
        let mid = id_field(req, "mid")?.ok_or_else(|| Fail::bad("mid is required"))?;
        let shop = id_field(req, "shop_id")?;
        let room = id_field(req, "room_id")?;
        if room.as_ref().is_some_and(|r| r.chars().count() > 64) {
            return Err(Fail::bad("room names are at most 64 characters"));
        }
        let name = text_field(req, "name")?.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| mid.clone());
        if name.chars().count() > 64 {
            return Err(Fail::bad("name is longer than 64 characters"));
        }
        let token = req.get("token").and_then(Value::as_str).unwrap_or("");
        let (bid, exp) = if self.config.agent_auth {
            // The token says which bot; a shop_id, when given, must be the same one.
            let claims = auth::verify_any_bot(&self.config.agent_secret, token, &mid).map_err(|e| Fail::denied(format!("token refused: {e}")))?;
            if shop.as_ref().is_some_and(|s| *s != claims.bid) {
                return Err(Fail::denied("the token is for another shop"));
            }
            (claims.bid, Some(claims.exp))
        } else {
            (shop.ok_or_else(|| Fail::bad("shop_id is required"))?, None)
        };
        self.one_identity(ctx, &Who::agent(&bid, &mid))?;
        if self.revoked(&bid, &mid) {
            return Err(Fail::denied("agent token revoked"));
        }
        let form = crate::agents::presence_form(req)?;
        let signed = self.sign_in(ctx, &bid, &mid, &name, exp, form).await?;
        let mut members = None;
        if let Some(room) = &room {
            members = Some(self.enter_room(ctx, &bid, &mid, &signed.name, room).await?);
            ctx.session_mut().insert(Key::Str(HOME_ROOM.to_vec()), Php::Str(room.as_bytes().to_vec()));
            ctx.save_session().await?;
        }
        let list = signed.listing(form);
        let reply = AuthReply {
            method: "auth",
            mid: &mid,
            shop_id: &bid,
            name: &signed.name,
            timestamp: signed.timestamp,
            customer_list: list.customer_list(),
            agents: list.agents(),
            conversations: &signed.conversations,
            conversations_more: signed.conversations_more,
            room_id: room.as_deref(),
            members: members.as_deref(),
        };
        self.send_serialized(ctx, &reply).await;
        Ok(())
    }

    /// The answer is how many connections are in the caller's room, on every gateway.
    pub(crate) async fn heartbeat(&self, ctx: &mut Context, who: &Who) -> Outcome {
        let room = match ctx.session().and_then(|s| s.get(&Key::Str(HOME_ROOM.to_vec()))) {
            Some(Php::Str(r)) => Some(String::from_utf8_lossy(r).into_owned()),
            _ => None,
        };
        let online = match (who, room) {
            (Who::Agent { bid, .. }, Some(room)) => ctx.api.get_client_count_by_group(&room_group(bid, &room)).await?,
            _ => 0,
        };
        self.reply(ctx, json!({"method": "heartbeat", "online": online})).await;
        Ok(())
    }

    /// Messages after `id` (exactly the ones a reconnecting client missed, oldest first, at
    /// most `limit`; `more` says whether to ask again from the last one); without `id`, the
    /// newest `limit`.
    pub(crate) async fn sync(&self, ctx: &mut Context, who: &Who, req: &Request) -> Outcome {
        let target = self.target(who, req, "with_uid").await?;
        let me = who.uid().unwrap_or_default();
        let (thread, key, value) = self.thread_of(&target, who);
        let key = if key == "to_uid" { "with_uid" } else { key };
        let limit = self.limit_field(req, self.config.history_limit)?;
        let since = Self::int_field(req, "id")?;
        let (t, me) = (&thread, &me);
        let (mut messages, unread) =
            self.lagging(ctx, |s| async move { Ok((s.history(t, None, since, limit + 1).await?, s.unread(t, me).await?)) }).await?;
        let more = messages.len() > limit;
        if more {
            // Oldest first after `since`: the extra one is the newest; without `since`, the oldest.
            if since.is_some() {
                messages.truncate(limit);
            } else {
                messages.remove(0);
            }
        }
        let mut list: Vec<Value> = messages.iter().map(message_json).collect();
        if let Target::Conversation(c) = &target {
            self.with_deliveries(c, &thread, &mut list).await?;
        }
        self.reply(ctx, json!({"method": "sync", key: value, "messages": list, "more": more, "unread": unread})).await;
        Ok(())
    }

    pub(crate) async fn ack(&self, ctx: &mut Context, who: &Who, req: &Request) -> Outcome {
        let reply = self.mark_read(who, req, "ack").await?;
        self.reply(ctx, reply).await;
        Ok(())
    }
}
