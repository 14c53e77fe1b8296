//! The customer-service chat: the application business workers run by default.
//!
//! Agents (客服) of a bot log in with a signed token and see each other (`agents`); visitors
//! open a conversation with a bot and are assigned an agent (`visitors`); agents also talk in
//! rooms (`rooms`) and privately. Every message is stored before it is acknowledged and can be
//! paged back (`messages`, `store`). LINE users reach the same agents through `line`, app
//! clients speaking goim packets through `goim`. The wire format is in `protocol` (a request as
//! read, in `request`) and docs/protocol.md. Every uid, group and thread name is made by `keys`,
//! scoped by bot; `flood` budgets what anonymous visitors can open.

pub mod agents;
pub mod auth;
pub mod config;
pub mod expiry;
pub mod feed;
pub mod flood;
pub mod goim;
pub mod keys;
pub mod line;
pub mod messages;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod proxy;
pub mod request;
pub mod retention;
pub mod rooms;
pub mod service;
pub mod store;
pub mod visitors;
pub mod web;
pub mod who;

use crate::request::{NotARequest, Request};
use async_trait::async_trait;
use business::{Api, ApiError, Context, Events};
use bytes::Bytes;
use config::Assignment;
use protocol::code;
use serde_json::Value;
use std::sync::Arc;
use store::{Store, StoreError};
use tracing::{info, warn};
use who::Who;

pub use config::Config;

/// Why a request failed: sent to the client as `{"method","code","msg"}`.
#[derive(Debug)]
pub struct Fail {
    pub code: &'static str,
    pub msg: String,
}

impl Fail {
    pub fn bad(msg: impl Into<String>) -> Fail {
        Fail { code: code::BAD_INPUT, msg: msg.into() }
    }

    pub fn denied(msg: impl Into<String>) -> Fail {
        Fail { code: code::NOT_AUTHORISED, msg: msg.into() }
    }

    /// The server could not do what it should always be able to (a frame it could not
    /// serialize): logged here, told to the client as `500`.
    pub fn internal(e: impl std::fmt::Display) -> Fail {
        tracing::error!("internal failure: {e}");
        Fail { code: "500", msg: "internal error".into() }
    }

    /// Refused because it does not exist for this caller. Only the server API's paths make
    /// it (clients are told `denied`, as they always were), like `500` below.
    pub fn not_found(msg: impl Into<String>) -> Fail {
        Fail { code: "404", msg: msg.into() }
    }
}

impl From<String> for Fail {
    fn from(msg: String) -> Fail {
        Fail::bad(msg)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        warn!("store failure: {e}");
        // Said plainly, so a client (and the agent at it) knows to send it again; the message
        // was not acknowledged, and a resend with the same cid is never stored twice.
        Fail { code: "500", msg: "the chat's store is unavailable: not saved, try again".into() }
    }
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Fail {
        warn!("gateway API failure: {e}");
        Fail { code: "500", msg: "internal error".into() }
    }
}

pub type Outcome = Result<(), Fail>;

/// The application, shared by every client task of a worker.
pub struct Chat {
    /// Timed: every call is measured into `metrics`.
    pub store: Arc<dyn Store>,
    pub metrics: Arc<metrics::Metrics>,
    /// `store_read`: the replica for reads that may lag (see `lagging`).
    reads: Option<store::replica::Reads>,
    pub config: Config,
    pub assignment: Assignment,
    upstream: Option<Arc<proxy::Upstream>>,
    roster: presence::Roster,
    announcer: presence::Announcer,
    joins: presence::Joins,
    /// Agent connections to end when their token runs out (its task starts with the worker).
    expiries: Arc<expiry::Expiries>,
    new_conversations: flood::PerIp,
}

impl Chat {
    /// Builds the app from its config; the store is opened here so a bad path fails at start.
    pub async fn new(mut config: Config) -> Result<Chat, String> {
        if config.agent_secret.is_empty() {
            config.agent_secret = std::env::var("SWITCHBOARD_AGENT_SECRET").unwrap_or_default();
        }
        let assignment = config.assignment()?;
        config.check_revoked()?;
        let store = store::open(&config).await?;
        let metrics = Arc::new(metrics::Metrics::default());
        let store: Arc<dyn Store> = Arc::new(store::timed::Timed::new(store, metrics.clone()));
        let reads = store::replica::Reads::open(&config, |s| Arc::new(store::timed::Timed::new(s, metrics.clone()))).await?;
        let upstream = proxy::Upstream::new(&config, metrics.clone())?.map(Arc::new);
        let new_conversations = flood::PerIp::per_minute(config.visitor_conversations_per_minute);
        Ok(Chat {
            store,
            metrics,
            reads,
            config,
            assignment,
            upstream,
            roster: Default::default(),
            announcer: Default::default(),
            joins: Default::default(),
            expiries: Default::default(),
            new_conversations,
        })
    }

    /// Sends a reply built as a struct (one that embeds already serialized JSON, or a frame of
    /// `protocol` written without building a `Value`).
    pub async fn send_serialized<T: serde::Serialize>(&self, ctx: &Context, reply: &T) {
        match serde_json::to_string(reply) {
            Ok(frame) => {
                if let Err(e) = ctx.send(frame).await {
                    warn!(client = %ctx.client_id, "reply not sent: {e}");
                }
            }
            Err(e) => warn!(client = %ctx.client_id, "reply not serialized: {e}"),
        }
    }

    pub async fn reply(&self, ctx: &Context, v: Value) {
        if let Err(e) = ctx.send(v.to_string()).await {
            warn!(client = %ctx.client_id, "reply not sent: {e}");
        }
    }

    async fn dispatch(&self, ctx: &mut Context, method: &str, req: &Request, raw: &Bytes) -> Outcome {
        let (who, exp) = Who::with_token_exp(ctx);
        if method != "login" && method != "auth" {
            self.check_token(ctx, &who, exp).await?;
        }
        match method {
            "login" => self.login(ctx, req).await,
            "visitor_login" => self.visitor_login(ctx, req).await,
            "auth" => self.auth(ctx, req).await,
            "heartbeat" => self.heartbeat(ctx, &who).await,
            "sync" => self.sync(ctx, &who, req).await,
            "ack" => self.ack(ctx, &who, req).await,
            "say" => self.say(ctx, &who, req).await,
            "history" => self.history(ctx, &who, req).await,
            "read" => self.read(ctx, &who, req).await,
            "join" => self.join(ctx, &who, req).await,
            "leave" => self.leave(ctx, &who, req).await,
            "conversation_list" => self.conversation_list(ctx, &who, req).await,
            "typing" => self.typing(ctx, &who, req).await,
            "claim" => self.claim(ctx, &who, req).await,
            "transfer" => self.transfer(ctx, &who, req).await,
            "close" => self.close(ctx, &who, req).await,
            _ => match &self.upstream {
                Some(up) if is_method_name(method) => {
                    up.forward(ctx, method, raw.clone());
                    Ok(())
                }
                Some(_) => Err(Fail::bad("method names are letters, digits, '_' and '-'")),
                None => Err(Fail { code: code::NO_UPSTREAM, msg: format!("unknown method {method}") }),
            },
        }
    }
}

/// A method name safe to put into the upstream URL.
fn is_method_name(m: &str) -> bool {
    m.len() <= 64 && m.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// What the worker keeps per connection between its events (see `Context::local_mut`).
#[derive(Default)]
struct Local {
    bucket: Bucket,
    /// Read-your-writes with `store_read`.
    mark: store::replica::Mark,
}

/// Methods that never write to the store: a client's mark stays where it is.
const READ_ONLY: [&str; 5] = ["history", "conversation_list", "sync", "heartbeat", "typing"];

/// A token bucket per connection.
#[derive(Default)]
struct Bucket {
    tokens: f64,
    at: Option<std::time::Instant>,
    refused_in_a_row: u32,
}

/// Refusals in a row after which an abusive connection is closed.
const ABUSE_CLOSE: u32 = 100;

#[async_trait]
impl Events for Chat {
    async fn on_worker_start(&self, api: &Api) {
        // Said by the processes that take logins, not by `switchboard line`, which shares `Chat`.
        if !self.config.agent_auth {
            warn!("AGENT AUTHENTICATION IS DISABLED: anyone can log in as any agent (development only)");
        } else if self.config.agent_secret.is_empty() {
            warn!("no agent secret configured (SWITCHBOARD_AGENT_SECRET): every agent login will be refused");
        }
        self.expiries.clone().run(api.clone());
        self.sweep_agents(api);
        retention::spawn(self.store.clone(), self.config.history_days);
        info!(store = %store::redacted(&self.config.store), assignment = ?self.assignment, "chat application ready");
    }

    async fn on_message(&self, ctx: &mut Context, message: Bytes) {
        if message.trim_ascii() == b"beat" {
            return;
        }
        if self.config.rate_limit > 0.0 {
            let (rate, burst) = (self.config.rate_limit, self.config.rate_burst.max(1.0));
            let b = &mut ctx.local_mut::<Local>().bucket;
            let now = std::time::Instant::now();
            b.tokens = match b.at {
                None => burst,
                Some(at) => (b.tokens + now.duration_since(at).as_secs_f64() * rate).min(burst),
            };
            b.at = Some(now);
            if b.tokens < 1.0 {
                b.refused_in_a_row += 1;
                let n = b.refused_in_a_row;
                if n == 1 {
                    info!(client = %ctx.client_id, "rate limit hit");
                }
                if n >= ABUSE_CLOSE {
                    warn!(client = %ctx.client_id, "closing a connection that keeps flooding");
                    let bye = protocol::error(None, code::BAD_INPUT, "rate limit: closing");
                    let _ = ctx.api.close_client(&ctx.id(), Some(Bytes::from(bye))).await;
                } else {
                    self.reply(ctx, serde_json::from_str(&protocol::error(None, code::BAD_INPUT, "rate limit")).unwrap_or_default()).await;
                }
                return;
            }
            b.tokens -= 1.0;
            b.refused_in_a_row = 0;
        }
        let req = match Request::parse(&message) {
            Ok(req) => req,
            Err(NotARequest::NotAnObject) => return self.send_error(ctx, None, Fail::bad("expected a JSON object")).await,
            Err(NotARequest::NotJson) => return self.send_error(ctx, None, Fail::bad("not JSON")).await,
        };
        let method = match req.get("method") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            None | Some(Value::Null) => return self.send_error(ctx, None, Fail { code: code::MISSING_METHOD, msg: "missing method".into() }).await,
            Some(_) => return self.send_error(ctx, None, Fail::bad("method must be a string")).await,
        };
        if method == "beat" {
            return;
        }
        if self.reads.is_some() && !READ_ONLY.contains(&method.as_str()) {
            ctx.local_mut::<Local>().mark.wrote();
        }
        if let Err(f) = self.dispatch(ctx, &method, &req, &message).await {
            self.send_error(ctx, Some(&method), f).await;
        }
    }

    async fn on_close(&self, ctx: &mut Context) {
        self.expiries.forget(ctx.client_id);
        if let Who::Agent { bid, id, name } = Who::of(ctx) {
            if let Err(f) = self.agent_gone(ctx, &bid, &id, &name).await {
                warn!(client = %ctx.client_id, "logout handling failed: {}", f.msg);
            }
        }
    }
}

impl Chat {
    /// Runs `read` — one that may lag: history, conversation lists, unread counts — on the
    /// `store_read` replica when it has everything this client wrote, else on the primary. A
    /// store failure on the replica is retried on the primary.
    pub(crate) async fn lagging<T, F, Fut>(&self, ctx: &mut Context, read: F) -> Result<T, Fail>
    where
        F: Fn(Arc<dyn Store>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Fail>>,
    {
        if let Some(reads) = &self.reads {
            if let Some(replica) = reads.pick(&mut ctx.local_mut::<Local>().mark).await {
                match read(replica).await {
                    Err(f) if f.code == "500" => reads.failed(&store::StoreError::Sql(f.msg)),
                    done => {
                        self.metrics.lagging_read("replica");
                        return done;
                    }
                }
            }
            self.metrics.lagging_read("primary");
        }
        read(self.store.clone()).await
    }

    async fn send_error(&self, ctx: &Context, method: Option<&str>, f: Fail) {
        info!(client = %ctx.client_id, method = method.unwrap_or(""), code = f.code, "refused: {}", f.msg);
        let v: Value = serde_json::from_str(&protocol::error(method, f.code, &f.msg)).unwrap_or_default();
        self.reply(ctx, v).await;
    }
}
