//! The chat commands, run on `events::Chat` (the same store and Gateway API the workers use),
//! and what they answer, typed for the OpenAPI document.

use crate::command::{Channel, Command};
use crate::fail::Fail;
use crate::text::{Content, DisplayName, Id, Limit};
use crate::State;
use events::keys::conversation_thread;
use events::messages::Target;
use events::service::Author;
use events::store::Conversation;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConversationView {
    pub conversation_id: String,
    pub visitor_id: String,
    pub visitor_name: String,
    pub assigned: Option<String>,
    pub open: bool,
    /// Unix milliseconds.
    pub created: i64,
    pub channel: Channel,
    pub last_message: Option<MessageView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConversationsPage {
    pub conversations: Vec<ConversationView>,
    /// Whether to ask again with `after` = `next`.
    pub more: bool,
    pub next: Option<String>,
}

/// A message as clients see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    pub from_uid: String,
    pub from_name: String,
    pub content: String,
    /// Unix milliseconds.
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_uid: Option<String>,
    /// Posted as the bot itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot: Option<bool>,
    /// To a LINE user: `queued`, `sent` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_error: Option<String>,
    /// `line` for a LINE user's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub sticker: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessagesPage {
    pub conversation_id: String,
    pub messages: Vec<MessageView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PostedView {
    pub id: String,
    pub timestamp: i64,
    /// True when this `cid` was posted before: the original is returned, delivered to nobody
    /// again.
    pub duplicate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AssignedView {
    pub conversation_id: String,
    /// False when `expected` no longer held it (or it already was this agent's).
    pub ok: bool,
    pub assigned: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClosedView {
    pub conversation_id: String,
    /// False when it was closed already.
    pub ok: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    pub customer_id: String,
    pub customer_name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentsView {
    pub agents: Vec<AgentView>,
}

fn page(limit: Option<Limit>) -> usize {
    limit.map_or(50, |l| l.0 as usize)
}

fn view(v: Value) -> Result<MessageView, Fail> {
    serde_json::from_value(v).map_err(|e| Fail::unavailable(format!("a stored message did not read back: {e}")))
}

fn channel_of(c: &Conversation) -> Channel {
    match c.channel() {
        "line" => Channel::Line,
        _ => Channel::Web,
    }
}

/// Runs one chat command; its answer as JSON.
pub async fn run(s: &State, cmd: Command) -> Result<Value, Fail> {
    let json = |v: Result<_, serde_json::Error>| v.map_err(|e| Fail::unavailable(e.to_string()));
    match cmd {
        Command::ListConversations { bid, after, limit, assigned, channel } => {
            json(serde_json::to_value(conversations(s, &bid, after.as_deref(), limit, assigned.as_deref(), channel).await?))
        }
        Command::History { bid, conversation_id, before_id, after_id, limit } => {
            let conv = s.chat.conversation_of_bot(&bid, &conversation_id).await?;
            let stored = s
                .chat
                .store
                .history(&conversation_thread(&conv.id), before_id.map(|m| m.0), after_id.map(|m| m.0), page(limit))
                .await
                .map_err(events::Fail::from)?;
            let messages = s.chat.messages_json(&conv, &stored).await?.into_iter().map(view).collect::<Result<_, _>>()?;
            json(serde_json::to_value(MessagesPage { conversation_id: conv.id, messages }))
        }
        Command::PostMessage { bid, conversation_id, agent, name, content, cid } => {
            let target = Target::Conversation(s.chat.conversation_of_bot(&bid, &conversation_id).await?);
            post(s, &bid, target, agent, name, content, cid).await
        }
        Command::PostToRoom { bid, room, agent, name, content, cid } => {
            let target = Target::Room { bid: bid.to_string(), room: room.into() };
            post(s, &bid, target, agent, name, content, cid).await
        }
        Command::Assign { bid, conversation_id, agent, expected } => {
            let conv = s.chat.conversation_of_bot(&bid, &conversation_id).await?;
            let (ok, now) = s.chat.assign(&s.api, conv, &agent, expected.as_deref()).await?;
            json(serde_json::to_value(AssignedView { conversation_id: now.id, ok, assigned: now.assigned }))
        }
        Command::CloseConversation { bid, conversation_id } => {
            let conv = s.chat.conversation_of_bot(&bid, &conversation_id).await?;
            let ok = s.chat.close_conversation(&s.api, &conv).await?;
            json(serde_json::to_value(ClosedView { conversation_id: conv.id, ok }))
        }
        Command::AgentsOnline { bid } => {
            let agents = s.chat.agents_online(&s.api, &bid).await?;
            let agents = agents.into_iter().map(|(customer_id, customer_name)| AgentView { customer_id, customer_name }).collect();
            json(serde_json::to_value(AgentsView { agents }))
        }
        other => Err(Fail::bad(format!("{} is not a chat command", other.method()))),
    }
}

/// Posts as agent `agent` of bot `bid` (one the bot has seen), or as the bot.
async fn post(
    s: &State,
    bid: &str,
    target: Target,
    agent: Option<Id>,
    name: Option<DisplayName>,
    content: Content,
    cid: Option<Id>,
) -> Result<Value, Fail> {
    let name = name.map(String::from);
    let author = match agent {
        Some(a) => {
            let known = s.chat.store.agent_name(bid, &a).await.map_err(events::Fail::from)?;
            let Some(known) = known else { return Err(Fail::not_found("no such agent in this bot")) };
            Author::agent(bid, &a, name.as_deref().unwrap_or(&known))
        }
        None => Author::bot(bid, name.as_deref().unwrap_or(&s.config.bot_name)),
    };
    let author = Author { from_name: events::protocol::escape_html(&author.from_name), ..author };
    let posted = s.chat.post(&s.api, &target, &author, content.into(), cid.map(String::from)).await?;
    let m = &posted.message;
    serde_json::to_value(PostedView { id: m.id.to_string(), timestamp: m.timestamp, duplicate: !posted.fresh, delivery: posted.delivery })
        .map_err(|e| Fail::unavailable(e.to_string()))
}

/// How many stored conversations one filtered listing reads at most, per conversation asked
/// for: a filter that matches little ends the page early (`more` with `next`) rather than
/// reading the whole bot.
const SCAN_FACTOR: usize = 10;

async fn conversations(
    s: &State,
    bid: &str,
    after: Option<&str>,
    limit: Option<Limit>,
    assigned: Option<&str>,
    channel: Option<Channel>,
) -> Result<ConversationsPage, Fail> {
    let limit = page(limit);
    let mut cursor = after.map(str::to_string);
    let mut out = Vec::new();
    let mut scanned = 0;
    let more = loop {
        let batch = s.chat.store.conversations(bid, cursor.as_deref(), limit + 1).await.map_err(events::Fail::from)?;
        let exhausted = batch.len() <= limit;
        let mut stopped_early = false;
        for c in batch.into_iter().take(limit) {
            scanned += 1;
            cursor = Some(c.id.clone());
            let keep = assigned.is_none_or(|a| c.assigned.as_deref().unwrap_or("") == a) && channel.is_none_or(|ch| channel_of(&c) == ch);
            if keep {
                out.push(c);
                if out.len() == limit {
                    stopped_early = true;
                    break;
                }
            }
            if scanned >= limit * SCAN_FACTOR {
                stopped_early = true;
                break;
            }
        }
        if stopped_early {
            // More when anything is left after the cursor.
            let rest = s.chat.store.conversations(bid, cursor.as_deref(), 1).await.map_err(events::Fail::from)?;
            break !rest.is_empty();
        }
        if exhausted {
            break false;
        }
    };
    let mut conversations = Vec::new();
    for c in out {
        let last = s.chat.store.history(&conversation_thread(&c.id), None, None, 1).await.map_err(events::Fail::from)?;
        let last = s.chat.messages_json(&c, &last).await?.into_iter().next().map(view).transpose()?;
        conversations.push(ConversationView {
            channel: channel_of(&c),
            conversation_id: c.id,
            visitor_id: c.visitor_id,
            visitor_name: c.visitor_name,
            assigned: c.assigned,
            open: c.open,
            created: c.created,
            last_message: last,
        });
    }
    Ok(ConversationsPage { conversations, more, next: if more { cursor } else { None } })
}
