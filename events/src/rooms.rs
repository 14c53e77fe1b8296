//! Rooms: agents of a bot join and leave named rooms and see who is in them. A room is a
//! gateway group named by `keys::room_group`, so rooms of different bots never meet.

use crate::keys::room_group;
use crate::protocol::{id_field, now_secs};
use crate::request::Request;
use crate::who::{rooms, set_rooms, Who};
use crate::{Chat, Fail, Outcome};
use business::Context;
use serde_json::json;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;

/// A room member in a join's answer.
#[derive(serde::Serialize)]
struct Member<'a> {
    uid: Cow<'a, str>,
    name: Cow<'a, str>,
}

/// The answer to `join`, written around the already serialized members.
#[derive(serde::Serialize)]
struct JoinReply<'a> {
    method: &'static str,
    room: &'a str,
    members: &'a RawValue,
}

impl Chat {
    fn room_of(&self, who: &Who, req: &Request) -> Result<(String, String, String, String), Fail> {
        let Who::Agent { bid, id, name } = who else { return Err(Fail::denied("rooms are for agents")) };
        let room = id_field(req, "room")?.ok_or_else(|| Fail::bad("room is required"))?;
        if room.chars().count() > 64 {
            return Err(Fail::bad("room names are at most 64 characters"));
        }
        Ok((bid.clone(), id.clone(), name.clone(), room))
    }

    pub(crate) async fn join(&self, ctx: &mut Context, who: &Who, req: &Request) -> Outcome {
        let (bid, me, name, room) = self.room_of(who, req)?;
        let members = self.enter_room(ctx, &bid, &me, &name, &room).await?;
        self.send_serialized(ctx, &JoinReply { method: "join", room: &room, members: &members }).await;
        Ok(())
    }

    /// Joins agent `me` to a room of its bot and tells the members; returns who is in it,
    /// serialized (`[{"uid":..,"name":..}]`, each agent once): read from the members' sessions
    /// as they are, nothing copied but the answer.
    pub(crate) async fn enter_room(&self, ctx: &mut Context, bid: &str, me: &str, name: &str, room: &str) -> Result<Box<RawValue>, Fail> {
        let group = room_group(bid, room);
        let mut joined = rooms(ctx);
        if !joined.iter().any(|r| r == room) {
            joined.push(room.to_string());
            set_rooms(ctx, &joined);
            ctx.save_session().await?;
        }
        ctx.api.join_group(&ctx.id(), &group).await?;
        let sessions = ctx.api.get_client_session_bytes_by_group(&group).await?;
        let mut seen = HashSet::new();
        let mut members: Vec<Member<'_>> = sessions
            .values()
            .filter_map(|s| Who::agent_in(s))
            .filter(|(id, _)| seen.insert(id.clone()))
            .map(|(uid, name)| Member { uid, name })
            .collect();
        if !seen.contains(me) {
            members.push(Member { uid: Cow::Borrowed(me), name: Cow::Borrowed(name) });
        }
        let members = serde_json::value::to_raw_value(&members).map_err(Fail::internal)?;
        let push = json!({"method": "join_push", "room": room, "uid": me, "name": name, "timestamp": now_secs()});
        ctx.api.send_to_group(&[&group], push.to_string(), &[&ctx.id()]).await?;
        Ok(members)
    }

    pub(crate) async fn leave(&self, ctx: &mut Context, who: &Who, req: &Request) -> Outcome {
        let (bid, me, name, room) = self.room_of(who, req)?;
        let group = room_group(&bid, &room);
        let mut joined = rooms(ctx);
        joined.retain(|r| *r != room);
        set_rooms(ctx, &joined);
        ctx.save_session().await?;
        ctx.api.leave_group(&ctx.id(), &group).await?;
        self.reply(ctx, json!({"method": "leave", "room": room})).await;
        let push = json!({"method": "leave_push", "room": room, "uid": me, "name": name, "timestamp": now_secs()});
        ctx.api.send_to_group(&[&group], push.to_string(), &[]).await?;
        Ok(())
    }
}
