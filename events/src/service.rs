//! What a backend does to the chat without a client connection: post a message as an agent or
//! as the bot itself, assign or close a conversation, list who is online. The HTTP API
//! (`http-api`) is built on this; the client protocol's `say`, `claim`, `transfer` and `close`
//! share the same steps, so a message posted either way is stored, deduplicated, delivered and
//! (to a LINE user) queued identically.
//!
//! Nothing here checks who the caller is: the caller has done that (a client's session, an API
//! key's scope). Everything here does check that what it is given belongs to the bot named.

use crate::keys::{agent_uid, bot_group, key, private_thread, room_group, visitor_uid};
use crate::messages::Target;
use crate::protocol::{message_json, MessageFrame};
use crate::store::{Conversation, Inserted, NewMessage, StoredMessage};
use crate::{Chat, Fail};
use business::Api;
use serde_json::{json, Map, Value};

/// Who a message is from, as stored (the dedup identity) and as clients see it.
#[derive(Debug, Clone)]
pub struct Author {
    /// Scoped by bot: `keys::agent_uid`, `keys::visitor_uid` or `bot_sender`.
    pub sender: String,
    pub from_uid: String,
    pub from_name: String,
    pub kind: Kind,
}

/// Which side a message is from: a visitor's goes to its agent; an agent's or the bot's to
/// the visitor and every agent of the bot (and, to a LINE user, through the outgoing queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Visitor,
    Agent,
    Bot,
}

impl Kind {
    /// As the feed names it (`sender_type`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Visitor => "visitor",
            Kind::Agent => "agent",
            Kind::Bot => "bot",
        }
    }
}

impl Author {
    /// Agent `id` of bot `bid`, named `name`.
    pub fn agent(bid: &str, id: &str, name: &str) -> Author {
        Author { sender: agent_uid(bid, id), from_uid: id.to_string(), from_name: name.to_string(), kind: Kind::Agent }
    }

    /// Visitor `id` of bot `bid`, named `name`.
    pub fn visitor(bid: &str, id: &str, name: &str) -> Author {
        let who = crate::who::Who::visitor(bid, id);
        Author { sender: visitor_uid(bid, id), from_uid: who.from_uid().unwrap_or_default(), from_name: name.to_string(), kind: Kind::Visitor }
    }

    /// The bot itself (an auto-reply from a company's backend): shown as `from_uid` `bot`
    /// with `"bot": true`, so no agent id can pass for it.
    pub fn bot(bid: &str, name: &str) -> Author {
        Author { sender: bot_sender(bid), from_uid: "bot".into(), from_name: name.to_string(), kind: Kind::Bot }
    }
}

/// The sender identity of the bot's own messages: a kind no agent or visitor uid has.
pub fn bot_sender(bid: &str) -> String {
    key("b", &[bid])
}

/// A message as `post` left it: stored (or found stored under the same cid), and, for a LINE
/// user, the state of its delivery there.
#[derive(Debug, Clone)]
pub struct Posted {
    pub message: StoredMessage,
    /// False when the cid was seen: the original is returned and delivered to nobody again.
    pub fresh: bool,
    pub delivery: Option<String>,
}

impl Chat {
    /// Stores `content` from `author` in `target` and delivers it; a visitor's first message
    /// assigns an agent first. The caller has checked that `author` may post there.
    pub async fn post(&self, api: &Api, target: &Target, author: &Author, content: String, cid: Option<String>) -> Result<Posted, Fail> {
        if content.is_empty() {
            return Err(Fail::bad("content is empty"));
        }
        if content.chars().count() > self.config.max_content {
            return Err(Fail::bad(format!("content is longer than {} characters", self.config.max_content)));
        }
        let mut target = target.clone();
        match &mut target {
            Target::Conversation(c) if !c.open => return Err(Fail::denied("the conversation is closed")),
            Target::Conversation(c) if author.kind == Kind::Visitor => *c = self.auto_assign(api, c.clone()).await?,
            _ => {}
        }
        let (thread, mut to) = thread_and_fields(&target, author);
        if author.kind == Kind::Bot {
            to.insert("bot".into(), true.into());
        }
        let new = NewMessage {
            thread,
            sender: author.sender.clone(),
            from_uid: author.from_uid.clone(),
            from_name: author.from_name.clone(),
            cid,
            content,
            to,
        };
        let (message, fresh) = match self.store.insert_message(new).await? {
            Inserted::New(m) => (m, true),
            Inserted::Duplicate(m) => (m, false),
        };
        if let Target::Conversation(c) = &target {
            // Again for a duplicate: the first try may have stopped before it got here, and
            // the event's id makes a second record of it a no-op.
            self.record_message(c, &message, author.kind).await?;
        }
        // A reply to a LINE user is queued for the sender (again, if an earlier post stopped
        // between storing and queueing).
        let delivery = match &target {
            Target::Conversation(c) if author.kind != Kind::Visitor && crate::keys::line_user(&c.visitor_id).is_some() => {
                Some(self.queue_for_line(c, &message).await?)
            }
            _ => None,
        };
        if fresh {
            let frame = MessageFrame::new(&message, delivery.as_deref()).text().map_err(Fail::internal)?;
            match &target {
                Target::Conversation(c) => self.deliver_in_conversation(api, c, author.kind == Kind::Visitor, frame).await?,
                Target::Room { bid, room } => api.send_to_group(&[&room_group(bid, room)], frame, &[]).await?,
                Target::Private { bid, to } => api.send_to_uid(&[&agent_uid(bid, to), &author.sender], frame).await?,
            }
        }
        Ok(Posted { message, fresh, delivery })
    }

    /// Assigns conversation `conv` to agent `to` of its bot: only if it is held by `expected`
    /// when that is given, else whoever holds it now (an admin's override). Tells the bot's
    /// agents and the visitor. Returns whether it was done and the conversation as it now is.
    pub async fn assign(&self, api: &Api, conv: Conversation, to: &str, expected: Option<&str>) -> Result<(bool, Conversation), Fail> {
        if self.store.agent_name(&conv.bid, to).await?.is_none() {
            return Err(Fail::denied("no such agent in this bot"));
        }
        match expected {
            Some(e) => self.assign_if(api, conv, to, Some(e)).await,
            None => {
                // Compared against the holder read now, so a transfer that lands in between
                // is not silently overwritten.
                let holder = self.store.conversation(&conv.id).await?.and_then(|c| c.assigned);
                self.assign_if(api, conv, to, holder.as_deref()).await
            }
        }
    }

    /// The store's compare-and-set (`expected` `None`: only while unassigned), then the
    /// announcement when it took.
    pub(crate) async fn assign_if(&self, api: &Api, conv: Conversation, to: &str, expected: Option<&str>) -> Result<(bool, Conversation), Fail> {
        let id = conv.id.clone();
        let ok = self.store.assign(&id, to, expected).await?;
        let now = self.store.conversation(&id).await?.unwrap_or(conv);
        if ok {
            self.record_assigned(&now).await?;
            self.announce_assignment(api, &now).await?;
        }
        Ok((ok, now))
    }

    /// Closes conversation `conv`; tells the bot's agents and the visitor. False if it was
    /// closed already.
    pub async fn close_conversation(&self, api: &Api, conv: &Conversation) -> Result<bool, Fail> {
        let ok = self.store.close_conversation(&conv.id).await?;
        if ok {
            self.record_closed(conv).await?;
            let push = json!({"method": "close_push", "conversation_id": conv.id, "visitor_id": conv.visitor_id}).to_string();
            api.send_to_group(&[&bot_group(&conv.bid)], push.clone(), &[]).await?;
            api.send_to_uid(&[&visitor_uid(&conv.bid, &conv.visitor_id)], push).await?;
        }
        Ok(ok)
    }

    /// Conversation `id` if it belongs to bot `bid`; "no such conversation" otherwise, so a
    /// caller of another bot learns nothing about it.
    pub async fn conversation_of_bot(&self, bid: &str, id: &str) -> Result<Conversation, Fail> {
        match self.store.conversation(id).await? {
            Some(c) if c.bid == bid => Ok(c),
            _ => Err(Fail::not_found("no such conversation")),
        }
    }

    /// The agents of bot `bid` online now (a valid token, not revoked), with their names.
    pub async fn agents_online(&self, api: &Api, bid: &str) -> Result<Vec<(String, String)>, Fail> {
        let listing = self.roster.list(api, bid).await?;
        let valid = self.valid_agents(bid, &listing);
        let mut out = Vec::new();
        for id in valid {
            let name = listing.connections.iter().find(|o| o.id == id).map(|o| o.name.clone()).unwrap_or_default();
            out.push((id.to_string(), name));
        }
        Ok(out)
    }

    /// A stored message as clients see it, with its LINE delivery state where it has one.
    pub async fn messages_json(&self, conv: &Conversation, messages: &[StoredMessage]) -> Result<Vec<Value>, Fail> {
        let mut list: Vec<Value> = messages.iter().map(message_json).collect();
        if let Some(first) = messages.first() {
            self.with_deliveries(conv, &first.thread, &mut list).await?;
        }
        Ok(list)
    }
}

/// The thread `t` names for `author`, and the addressing field clients know it by.
fn thread_and_fields(t: &Target, author: &Author) -> (String, Map<String, Value>) {
    let mut to = Map::new();
    let thread = match t {
        Target::Conversation(c) => {
            to.insert("conversation_id".into(), c.id.clone().into());
            crate::keys::conversation_thread(&c.id)
        }
        Target::Room { bid, room } => {
            to.insert("room".into(), room.clone().into());
            crate::keys::room_thread(bid, room)
        }
        Target::Private { bid, to: peer } => {
            to.insert("to_uid".into(), peer.clone().into());
            private_thread(bid, &author.from_uid, peer)
        }
    };
    (thread, to)
}
