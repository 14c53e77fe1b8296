//! HTTP onto commands. Each handler is registered once, with utoipa-axum, for both routing and
//! the OpenAPI 3.1 document served at `GET /api/openapi.json`, so the document describes the
//! handlers as they are.

use crate::chat::{AgentsView, AssignedView, ClosedView, ConversationsPage, MessagesPage, PostedView};
use crate::command::{Channel, Command};
use crate::fail::{Body, ErrorBody, Fail, PathParams, Query};
use crate::text::{Content, DisplayName, Filter, Id, Limit, MessageId};
use crate::State;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::{header, request::Parts};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type S = Arc<State>;

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard server API", description = "The Gateway API and the chat over HTTP/JSON; see docs/api.md."),
    modifiers(&Bearer),
    security(("api_key" = []))
)]
struct Doc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme("api_key", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("API key").build()));
    }
}

/// The router and its OpenAPI document.
pub fn router(state: S) -> (axum::Router, utoipa::openapi::OpenApi) {
    let max_body = state.config.max_body;
    let state_limits = (state.chat.config.max_content, state.config.max_batch);
    let (router, doc) = OpenApiRouter::with_openapi(Doc::openapi())
        .routes(routes!(call))
        .routes(routes!(batch))
        .routes(routes!(list_conversations))
        .routes(routes!(history, post_to_conversation))
        .routes(routes!(post_to_room))
        .routes(routes!(assign))
        .routes(routes!(close_conversation))
        .routes(routes!(agents_online))
        .with_state(state)
        .split_for_parts();
    let json = Arc::new(fit(&doc, &state_limits).to_string());
    let router = router
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let json = json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], json.as_ref().clone()) }
            }),
        )
        .fallback(|| async { Fail::not_found("no such endpoint: see GET /api/openapi.json") })
        .layer(DefaultBodyLimit::max(max_body));
    (router, doc)
}

/// The generated document, with what the types cannot say: the limits this server was
/// configured with, and that a command takes no fields but its own (serde refuses others;
/// utoipa does not say so for an enum's variants).
fn fit(doc: &utoipa::openapi::OpenApi, (max_content, max_batch): &(usize, usize)) -> Value {
    let mut v = serde_json::to_value(doc).unwrap_or_default();
    let schemas = &mut v["components"]["schemas"];
    if let Some(variants) = schemas["Command"]["oneOf"].as_array_mut() {
        for variant in variants {
            variant["additionalProperties"] = false.into();
        }
    }
    schemas["Content"]["pattern"] = format!("^[\\s\\S]{{1,{max_content}}}$").into();
    schemas["Batch"]["properties"]["commands"]["maxItems"] = (*max_batch).into();
    v
}

/// The caller, by its API key, with one request taken from its rate limit.
pub struct Caller(pub crate::keys::Key);

impl FromRequestParts<S> for Caller {
    type Rejection = Fail;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Fail> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        state.authenticate(header, 1).map(Caller)
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CallAnswer {
    /// What the command answers: `null` for those that only act.
    pub result: Value,
}

/// Run one command.
#[utoipa::path(post, path = "/api/call", request_body = Command,
    responses((status = 200, body = CallAnswer), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn call(axum::extract::State(s): axum::extract::State<S>, Caller(key): Caller, Body(cmd): Body<Command>) -> Result<Json<CallAnswer>, Fail> {
    Ok(Json(CallAnswer { result: s.run(&key, cmd).await? }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Run in order, each on its own: one refused does not stop the rest. At most `[api]
    /// max_batch` (100).
    #[schema(min_items = 1, max_items = 100)]
    pub commands: Vec<Command>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchAnswer {
    pub results: Vec<BatchResult>,
}

/// One command's outcome: `ok` with `result`, or `error` with the status it would have had.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResult {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::fail::ErrorDetail>,
}

/// Run several commands in one request, answered one by one. Each counts against the key's
/// rate limit.
#[utoipa::path(post, path = "/api/batch", request_body = Batch,
    responses((status = 200, body = BatchAnswer), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn batch(axum::extract::State(s): axum::extract::State<S>, Caller(key): Caller, Body(b): Body<Batch>) -> Result<Json<BatchAnswer>, Fail> {
    if b.commands.is_empty() || b.commands.len() > s.config.max_batch {
        return Err(Fail::bad(format!("a batch holds 1 to {} commands", s.config.max_batch)));
    }
    for (i, cmd) in b.commands.iter().enumerate() {
        cmd.lists_fit().map_err(|f| Fail::bad(format!("command {i}: {}", f.message)))?;
    }
    // The first was taken by `Caller`.
    s.limits.take(&key, b.commands.len() as u32 - 1)?;
    let mut results = Vec::with_capacity(b.commands.len());
    for cmd in b.commands {
        results.push(match s.run(&key, cmd).await {
            Ok(v) => BatchResult { ok: true, result: Some(v), status: None, error: None },
            Err(f) => BatchResult { ok: false, result: None, status: Some(f.status.as_u16()), error: Some(f.body().error) },
        });
    }
    Ok(Json(BatchAnswer { results }))
}

async fn typed<T: serde::de::DeserializeOwned>(s: &State, key: &crate::keys::Key, cmd: Command) -> Result<Json<T>, Fail> {
    let v = s.run(key, cmd).await?;
    serde_json::from_value(v).map(Json).map_err(|e| Fail::unavailable(format!("answer did not read back: {e}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BotPath {
    bid: Id,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ConversationPath {
    bid: Id,
    conversation_id: Id,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RoomPath {
    bid: Id,
    room: Id,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConversationQuery {
    /// The last conversation id of the previous page.
    after: Option<Id>,
    /// 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Only those assigned to this agent (empty: only unassigned ones).
    assigned: Option<Filter>,
    channel: Option<Channel>,
}

/// A page of a bot's open conversations.
#[utoipa::path(get, path = "/api/bots/{bid}/conversations", params(BotPath, ConversationQuery),
    responses((status = 200, body = ConversationsPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn list_conversations(
    axum::extract::State(s): axum::extract::State<S>,
    Caller(key): Caller,
    PathParams(BotPath { bid }): PathParams<BotPath>,
    Query(q): Query<ConversationQuery>,
) -> Result<Json<ConversationsPage>, Fail> {
    let limit = q.limit.map(|n| Limit::try_from(serde_json::Number::from(n))).transpose().map_err(Fail::bad)?;
    typed(&s, &key, Command::ListConversations { bid, after: q.after, limit, assigned: q.assigned, channel: q.channel }).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    #[param(minimum = 0)]
    before_id: Option<i64>,
    #[param(minimum = 0)]
    after_id: Option<i64>,
    /// 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A page of a conversation's messages, oldest first.
#[utoipa::path(get, path = "/api/bots/{bid}/conversations/{conversation_id}/messages",
    params(ConversationPath, HistoryQuery),
    responses((status = 200, body = MessagesPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn history(
    axum::extract::State(s): axum::extract::State<S>,
    Caller(key): Caller,
    PathParams(ConversationPath { bid, conversation_id }): PathParams<ConversationPath>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<MessagesPage>, Fail> {
    let id = |n: Option<i64>| n.map(|n| MessageId::try_from(serde_json::Number::from(n))).transpose().map_err(Fail::bad);
    let limit = q.limit.map(|n| Limit::try_from(serde_json::Number::from(n))).transpose().map_err(Fail::bad)?;
    typed(&s, &key, Command::History { bid, conversation_id, before_id: id(q.before_id)?, after_id: id(q.after_id)?, limit }).await
}

/// A message to post: as agent `agent`, or as the bot when none is named.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    content: Content,
    #[serde(default)]
    cid: Option<Id>,
    #[serde(default)]
    agent: Option<Id>,
    #[serde(default)]
    name: Option<DisplayName>,
}

/// Post a message into a conversation.
#[utoipa::path(post, path = "/api/bots/{bid}/conversations/{conversation_id}/messages",
    params(ConversationPath), request_body = NewMessage,
    responses((status = 200, body = PostedView), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn post_to_conversation(
    axum::extract::State(s): axum::extract::State<S>,
    Caller(key): Caller,
    PathParams(ConversationPath { bid, conversation_id }): PathParams<ConversationPath>,
    Body(m): Body<NewMessage>,
) -> Result<Json<PostedView>, Fail> {
    let cmd = Command::PostMessage { bid, conversation_id, agent: m.agent, name: m.name, content: m.content, cid: m.cid };
    typed(&s, &key, cmd).await
}

/// Post a message into a room.
#[utoipa::path(post, path = "/api/bots/{bid}/rooms/{room}/messages",
    params(RoomPath), request_body = NewMessage,
    responses((status = 200, body = PostedView), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn post_to_room(
    axum::extract::State(s): axum::extract::State<S>,
    Caller(key): Caller,
    PathParams(RoomPath { bid, room }): PathParams<RoomPath>,
    Body(m): Body<NewMessage>,
) -> Result<Json<PostedView>, Fail> {
    let cmd = Command::PostToRoom { bid, room, agent: m.agent, name: m.name, content: m.content, cid: m.cid };
    typed(&s, &key, cmd).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    agent: Id,
    /// Only if this agent holds it now (a transfer that must not overtake another).
    #[serde(default)]
    expected: Option<Id>,
}

/// Assign (or transfer) a conversation to an agent.
#[utoipa::path(post, path = "/api/bots/{bid}/conversations/{conversation_id}/assign",
    params(ConversationPath), request_body = AssignRequest,
    responses((status = 200, body = AssignedView), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn assign(
    axum::extract::State(s): axum::extract::State<S>,
    Caller(key): Caller,
    PathParams(ConversationPath { bid, conversation_id }): PathParams<ConversationPath>,
    Body(a): Body<AssignRequest>,
) -> Result<Json<AssignedView>, Fail> {
    typed(&s, &key, Command::Assign { bid, conversation_id, agent: a.agent, expected: a.expected }).await
}

/// Close a conversation.
#[utoipa::path(post, path = "/api/bots/{bid}/conversations/{conversation_id}/close",
    params(ConversationPath),
    responses((status = 200, body = ClosedView), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn close_conversation(
    axum::extract::State(s): axum::extract::State<S>,
    Caller(key): Caller,
    PathParams(ConversationPath { bid, conversation_id }): PathParams<ConversationPath>,
) -> Result<Json<ClosedView>, Fail> {
    typed(&s, &key, Command::CloseConversation { bid, conversation_id }).await
}

/// The bot's agents online now.
#[utoipa::path(get, path = "/api/bots/{bid}/agents/online", params(BotPath),
    responses((status = 200, body = AgentsView), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn agents_online(
    axum::extract::State(s): axum::extract::State<S>,
    Caller(key): Caller,
    PathParams(BotPath { bid }): PathParams<BotPath>,
) -> Result<Json<AgentsView>, Fail> {
    typed(&s, &key, Command::AgentsOnline { bid }).await
}
