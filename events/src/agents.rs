//! Agents of a bot: `login` (verified token), the online list, and the pushes when an agent
//! comes or goes. An agent's connections are bound to its bot-scoped uid and join its bot's
//! group (`keys`: the contract's uid = customer_id and group = bid, made safe between bots).

use crate::keys;
use crate::presence::{self, Change, Form, Snapshot};
use crate::protocol::{code, escape_html, id_field, now_secs};
use crate::request::Request;
use crate::who::Who;
use crate::{auth, Chat, Fail, Outcome};
use business::{Api, ClientId, Context};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;
use tracing::{info, warn};

/// The frame an agent gets when its token stops counting, just before its connection closes.
fn ended_frame(why: &str) -> String {
    crate::protocol::error(Some("logout"), code::NOT_AUTHORISED, &format!("agent token {why}: log in again"))
}

/// Whether a token expiring at `exp` (Unix seconds) is still valid now.
fn valid_now(exp: Option<u64>) -> bool {
    exp.is_none_or(|e| e > now_secs() as u64)
}

/// What a fresh agent login sees.
pub(crate) struct SignedIn {
    pub id: String,
    /// The display name as stored (HTML-escaped).
    pub name: String,
    /// The bot's agents online, listed after this login's join (so it is among them).
    pub online: Arc<Snapshot>,
    pub conversations: Value,
    /// More open conversations than the answer carries: page on with `conversation_list`.
    pub conversations_more: bool,
    pub timestamp: i64,
}

impl SignedIn {
    /// The agents online for the login reply, in the form the agent asked for: the listing's
    /// own, shared with the other logins it served. The agent itself is in it unless its join
    /// was still not applied when the listing ran; then a list with it added is built for
    /// this login.
    pub fn listing(&self, form: Form) -> Listed<'_> {
        let agents = self.online.agents();
        let me = agents.iter().any(|(i, _)| *i == self.id);
        let compact = form == Form::Compact;
        let list = match (compact, me) {
            (true, true) => Cow::Borrowed(self.online.rows()),
            (false, true) => Cow::Borrowed(self.online.customer_list()),
            (_, false) => {
                let with_me = agents.iter().map(|(i, n)| (i.as_str(), n.as_str())).chain([(self.id.as_str(), self.name.as_str())]);
                Cow::Owned(if compact { presence::rows(with_me.map(|(i, n)| (i, n, 1))) } else { presence::customer_list(with_me) })
            }
        };
        Listed { compact, list }
    }
}

/// The agents online in a login reply: `customer_list` (the contract's), or for an agent that
/// asked for `"presence":"compact"`, `agents` rows.
pub(crate) struct Listed<'a> {
    compact: bool,
    list: Cow<'a, RawValue>,
}

impl Listed<'_> {
    pub fn customer_list(&self) -> Option<&RawValue> {
        (!self.compact).then_some(&*self.list)
    }
    pub fn agents(&self) -> Option<&RawValue> {
        self.compact.then_some(&*self.list)
    }
}

/// The login reply, written around the already serialized `customer_list`.
#[derive(Serialize)]
struct LoginReply<'a> {
    method: &'static str,
    customer_id: &'a str,
    customer_name: &'a str,
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_list: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agents: Option<&'a RawValue>,
    conversations: &'a Value,
    conversations_more: bool,
}

/// The login's `presence` field: how this agent is told of the others (`presence::Form`).
pub(crate) fn presence_form(req: &Request) -> Result<Form, Fail> {
    Form::parse(req.get("presence")).map_err(Fail::bad)
}

impl Chat {
    pub(crate) async fn login(&self, ctx: &mut Context, req: &Request) -> Outcome {
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
        self.one_identity(ctx, &Who::agent(&bid, &id))?;
        if self.revoked(&bid, &id) {
            return Err(Fail::denied("agent token revoked"));
        }
        let mut exp = None;
        if self.config.agent_auth {
            let token = req.get("token").and_then(Value::as_str).unwrap_or("");
            let claims = auth::verify(&self.config.agent_secret, token, &bid, &id).map_err(|e| Fail::denied(format!("agent token refused: {e}")))?;
            exp = Some(claims.exp);
        }
        let form = presence_form(req)?;
        let s = self.sign_in(ctx, &bid, &id, &name, exp, form).await?;
        let list = s.listing(form);
        let reply = LoginReply {
            method: "login",
            customer_id: &id,
            customer_name: &s.name,
            timestamp: s.timestamp,
            customer_list: list.customer_list(),
            agents: list.agents(),
            conversations: &s.conversations,
            conversations_more: s.conversations_more,
        };
        self.send_serialized(ctx, &reply).await;
        Ok(())
    }

    /// Makes this connection agent `id` of bot `bid` (identity already verified): session,
    /// uid, bot group, presence group, the store's agent list, and the presence change for the
    /// others. `form` is how the client asked to hear of the others (see `presence`).
    pub(crate) async fn sign_in(&self, ctx: &mut Context, bid: &str, id: &str, name: &str, exp: Option<u64>, form: Form) -> Result<SignedIn, Fail> {
        let name = escape_html(name);
        if let Who::Agent { .. } = Who::of(ctx) {
            // Logging in again as the same agent (`one_identity`), with a fresh token: the
            // presence form it asks for may differ from last time.
            for g in Form::ALL.map(|f| f.group(bid)) {
                ctx.api.leave_group(&ctx.id(), &g).await?;
            }
        }
        let me = Who::Agent { bid: bid.to_string(), id: id.to_string(), name: name.clone() };
        me.store(ctx);
        crate::who::set_token_exp(ctx, exp);
        // Written before joining the group, so anyone listing the group sees who this is.
        ctx.save_session().await?;
        let pushes = form.group(bid);
        // One wait for every worker to know where this agent is (the gateways' directory).
        ctx.api.bind_and_join(&ctx.id(), Some(&keys::agent_uid(bid, id)), &[&keys::bot_group(bid), &pushes]).await?;
        self.store.add_agent(bid, id, &name).await?;
        // Joined (both groups: one link, in order) before listing: see `presence`.
        let confirmed = self.joins.joined(&ctx.api, ctx.client_id, &pushes).await;
        // Announced once joined, not after listing: an agent joining between this one's join
        // and its announcement is told of it twice (in its list and by the push), and in a
        // storm a listing waits long (docs/BENCHMARKS.md, session 18). A lone login's change
        // waits for the listing's verdict in the bot's sender (`presence`, "A lone agent").
        let timestamp = now_secs();
        let (verdict, audience) = presence::audience();
        let change =
            Change { method: "login_push", id: id.to_string(), name: name.clone(), timestamp, client: Some(ctx.client_id), audience: Some(audience) };
        self.announcer.announce(&ctx.api, bid, change).await;
        let online = self.roster.list(&ctx.api, bid).await?;
        verdict.give(!confirmed || online.has_anyone_besides(ctx.client_id));
        if !online.has_agent_besides(id, ctx.client_id) {
            self.record_agent(bid, id, &name, true).await?;
        }
        let page = self.config.conversation_page.max(1);
        let (conversations, conversations_more) =
            self.lagging(ctx, |s| async move { self.conversation_summaries(s.as_ref(), bid, id, None, page).await }).await?;
        if let Some(exp) = exp {
            self.expiries.expire_at(ctx.client_id, exp);
        }
        info!(bid = %bid, agent = %id, client = %ctx.client_id, "agent logged in");
        Ok(SignedIn { id: id.to_string(), name, online, conversations: conversations.into(), conversations_more, timestamp })
    }

    /// A connection is one identity for its life: an agent cannot also become a visitor (and
    /// so a second party to conversations it may read), a visitor cannot log in as an agent,
    /// and neither can turn into another agent or visitor. Logging in again as the same one
    /// (a fresh token, a resumed conversation) is fine.
    pub(crate) fn one_identity(&self, ctx: &Context, wanted: &Who) -> Outcome {
        let now = Who::of(ctx);
        if now == Who::Nobody || now.same_identity(wanted) {
            return Ok(());
        }
        let what = match now {
            Who::Agent { .. } => "an agent",
            _ => "a visitor",
        };
        Err(Fail::denied(format!("this connection is already {what}: one identity per connection, open another")))
    }

    /// Every agent action re-checks the token: an expired one (`exp`, its session's
    /// `token_exp`) or a revoked one gets the `logout` frame and its connection is closed, as
    /// the expiry timer would have done.
    pub(crate) async fn check_token(&self, ctx: &mut Context, who: &Who, exp: Option<u64>) -> Outcome {
        let Who::Agent { bid, id, .. } = who else { return Ok(()) };
        let revoked = self.revoked(bid, id);
        if !revoked && valid_now(exp) {
            return Ok(());
        }
        let why = if revoked { "revoked" } else { "expired" };
        end_agent(&ctx.api, ctx.client_id, bid, id, why).await;
        Err(Fail::denied(format!("agent token {why}: log in again")))
    }

    pub(crate) fn revoked(&self, bid: &str, id: &str) -> bool {
        revoked(&self.config.revoked_agents, bid, id)
    }

    /// The bot's agents that may be given work now: online, token valid, not revoked; each
    /// once, in listing order.
    pub(crate) fn valid_agents<'a>(&self, bid: &str, listing: &'a Snapshot) -> Vec<&'a str> {
        let mut seen = std::collections::HashSet::new();
        listing
            .connections
            .iter()
            .filter(|o| valid_now(o.exp) && !self.revoked(bid, &o.id))
            .filter(|o| seen.insert(o.id.as_str()))
            .map(|o| o.id.as_str())
            .collect()
    }

    /// At a worker's start (every `reload` starts new ones with the config as it is now),
    /// once the gateways are known: agents revoked meanwhile are ended, and every agent
    /// session gets its expiry timer here too, since timers die with the worker that set them.
    pub(crate) fn sweep_agents(&self, api: &Api) {
        let (api, revoked_list, expiries) = (api.clone(), self.config.revoked_agents.clone(), self.expiries.clone());
        tokio::spawn(async move {
            for _ in 0..600 {
                if api.gateways().await.is_ok_and(|g| !g.is_empty()) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            let sessions = match api.get_all_client_sessions().await {
                Ok(s) => s,
                Err(e) => return warn!("agent sweep: cannot list sessions: {e}"),
            };
            for (client, s) in sessions {
                if let Who::Agent { bid, id, .. } = Who::from_session(s.as_ref()) {
                    if revoked(&revoked_list, &bid, &id) {
                        end_agent(&api, client, &bid, &id, "revoked").await;
                    } else if let Some(exp) = s.as_ref().and_then(crate::who::session_token_exp) {
                        expiries.expire_at(client, exp);
                    }
                }
            }
        });
    }

    /// An agent connection closed: tell the bot's agents if it was that agent's last one.
    pub(crate) async fn agent_gone(&self, ctx: &Context, bid: &str, id: &str, name: &str) -> Outcome {
        let online = self.roster.list(&ctx.api, bid).await?;
        if !online.has_agent_besides(id, ctx.client_id) {
            self.record_agent(bid, id, name, false).await?;
            // Listed after this connection left: whoever listed it since is listed here.
            if online.has_anyone_besides(ctx.client_id) {
                let change =
                    Change { method: "logout_push", id: id.to_string(), name: name.to_string(), timestamp: now_secs(), client: None, audience: None };
                self.announcer.announce(&ctx.api, bid, change).await;
            }
            info!(bid = %bid, agent = %id, "agent logged out");
        }
        Ok(())
    }
}

/// Ends an agent's session whose token stopped counting: the `logout` frame, then the
/// connection closes, which takes it out of its uid, bot, presence and room groups on the
/// gateway at once; `on_close` tells the bot's other agents.
pub(crate) async fn end_agent(api: &Api, client: ClientId, bid: &str, id: &str, why: &str) {
    info!(bid = %bid, agent = %id, %client, "agent token {why}: closing the agent's connection");
    if let Err(e) = api.close_client(&client.to_string(), Some(bytes::Bytes::from(ended_frame(why)))).await {
        warn!(%client, "could not close an agent whose token {why}: {e}");
    }
}

/// Whether the agent is in the configured list of revoked agents (entries as `keys::agent_ref`).
fn revoked(list: &[String], bid: &str, id: &str) -> bool {
    list.contains(&crate::keys::agent_ref(bid, id))
}
