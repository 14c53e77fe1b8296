//! Who a connection is, as its session records it: an agent of a bot, a visitor of a bot, or
//! nobody yet. The session lives on the gateway, so every worker sees the same identity.

use business::php::{self, Key, Value};
use business::Context;
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Nobody,
    Agent { bid: String, id: String, name: String },
    Visitor { bid: String, id: String, name: String, conversation: String },
}

fn get(s: &php::Array, k: &str) -> Option<String> {
    match s.get(&Key::from_bytes(k.as_bytes()))? {
        Value::Str(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A session field as text: a string (invalid UTF-8 replaced) or an integer, as `get` reads it.
fn field_text(f: Option<php::Field<'_>>) -> Option<Cow<'_, str>> {
    match f? {
        php::Field::Str(b) => Some(String::from_utf8_lossy(b)),
        php::Field::Int(i) => Some(Cow::Owned(i.to_string())),
        php::Field::Other => None,
    }
}

/// The session fields an identity and its agent token's expiry are read from, in `and_exp`'s
/// order.
const IDENTITY_AND_EXP: [&str; 6] = ["role", "bid", "id", "name", "conversation_id", "token_exp"];

/// `token_exp` as `session_token_exp` reads it.
fn exp_field(f: Option<php::Field<'_>>) -> Option<u64> {
    match f? {
        php::Field::Int(i) => u64::try_from(i).ok(),
        _ => None,
    }
}

fn put(s: &mut php::Array, k: &str, v: &str) {
    s.insert(Key::Str(k.as_bytes().to_vec()), Value::Str(v.as_bytes().to_vec()));
}

/// The `from_uid` clients see for a visitor (agents are shown by their customer_id).
pub fn visitor_from_uid(visitor_id: &str) -> String {
    format!("v:{visitor_id}")
}

impl Who {
    /// The connection's identity, read from its session without unserializing the rest.
    pub fn of(ctx: &Context) -> Who {
        Who::with_token_exp(ctx).0
    }

    /// The identity and its agent token's expiry (`token_exp`), read together: every event
    /// checks both.
    pub fn with_token_exp(ctx: &Context) -> (Who, Option<u64>) {
        Who::and_exp(ctx.session_fields(IDENTITY_AND_EXP))
    }

    /// The identity and token expiry in the fields `IDENTITY_AND_EXP` names, as
    /// `from_session` and `session_token_exp` read them from the unserialized session.
    fn and_exp([role, bid, id, name, conversation, exp]: [Option<php::Field<'_>>; 6]) -> (Who, Option<u64>) {
        let exp = exp_field(exp);
        let text = |f| field_text(f).map(Cow::into_owned);
        // The role decides before anything is copied: a listing reads every member's session.
        let role = match role {
            Some(php::Field::Str(b"agent")) => "agent",
            Some(php::Field::Str(b"visitor")) => "visitor",
            _ => return (Who::Nobody, exp),
        };
        (Who::from_fields(Some(role), text(bid), text(id), text(name), || text(conversation)), exp)
    }

    pub fn from_session(session: Option<&php::Array>) -> Who {
        let Some(s) = session else { return Who::Nobody };
        Who::from_fields(get(s, "role").as_deref(), get(s, "bid"), get(s, "id"), get(s, "name"), || get(s, "conversation_id"))
    }

    /// The identity in a serialized session, and its agent token's expiry, read without
    /// unserializing the whole session (`php::fields`): what listing a room's members or a
    /// bot's agents needs of each of them. The same answer as `from_session` on the
    /// unserialized session.
    pub fn from_session_bytes(session: &[u8]) -> (Who, Option<u64>) {
        php::fields(session, IDENTITY_AND_EXP).map_or((Who::Nobody, None), Who::and_exp)
    }

    /// An agent's id and name in a serialized session, borrowed from it where they are valid
    /// UTF-8: what `from_session_bytes` says of an agent (its bot aside), copying nothing. A
    /// room's listing reads every member's session.
    pub fn agent_in(session: &[u8]) -> Option<(Cow<'_, str>, Cow<'_, str>)> {
        let [role, bid, id, name] = php::fields(session, ["role", "bid", "id", "name"])?;
        if !matches!(role, Some(php::Field::Str(b"agent"))) {
            return None;
        }
        // An agent without a bot is nobody, as in `from_fields`.
        field_text(bid)?;
        Some((field_text(id)?, field_text(name).unwrap_or_default()))
    }

    fn from_fields(
        role: Option<&str>,
        bid: Option<String>,
        id: Option<String>,
        name: Option<String>,
        conversation: impl FnOnce() -> Option<String>,
    ) -> Who {
        let (Some(role), Some(bid), Some(id)) = (role, bid, id) else { return Who::Nobody };
        let name = name.unwrap_or_default();
        match role {
            "agent" => Who::Agent { bid, id, name },
            "visitor" => Who::Visitor { bid, id, name, conversation: conversation().unwrap_or_default() },
            _ => Who::Nobody,
        }
    }

    /// Records this identity in the session (replacing any other).
    pub fn store(&self, ctx: &mut Context) {
        let s = ctx.session_mut();
        for k in ["role", "bid", "id", "name", "conversation_id"] {
            s.shift_remove(&Key::Str(k.as_bytes().to_vec()));
        }
        match self {
            Who::Nobody => {}
            Who::Agent { bid, id, name } => {
                put(s, "role", "agent");
                put(s, "bid", bid);
                put(s, "id", id);
                put(s, "name", name);
            }
            Who::Visitor { bid, id, name, conversation } => {
                put(s, "role", "visitor");
                put(s, "bid", bid);
                put(s, "id", id);
                put(s, "name", name);
                put(s, "conversation_id", conversation);
            }
        }
    }

    /// The uid this identity's connections are bound to: scoped by bot (`keys`), and the
    /// sender identity messages are deduplicated and read marks kept by.
    pub fn uid(&self) -> Option<String> {
        match self {
            Who::Nobody => None,
            Who::Agent { bid, id, .. } => Some(crate::keys::agent_uid(bid, id)),
            Who::Visitor { bid, id, .. } => Some(crate::keys::visitor_uid(bid, id)),
        }
    }

    /// The `from_uid` clients see: an agent's customer_id, `v:<visitor_id>` for a visitor
    /// (within one bot, as every client only sees its own bot).
    pub fn from_uid(&self) -> Option<String> {
        match self {
            Who::Nobody => None,
            Who::Agent { id, .. } => Some(id.clone()),
            Who::Visitor { id, .. } => Some(visitor_from_uid(id)),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Who::Nobody => "",
            Who::Agent { name, .. } | Who::Visitor { name, .. } => name,
        }
    }
}

/// The rooms a connection has joined (kept in its session).
pub fn rooms(ctx: &Context) -> Vec<String> {
    match ctx.session_value("rooms").as_deref() {
        Some(Value::Array(a)) => {
            a.values().filter_map(|v| if let Value::Str(b) = v { Some(String::from_utf8_lossy(b).into_owned()) } else { None }).collect()
        }
        _ => Vec::new(),
    }
}

/// Whether the connection has joined `room`: what every room message checks, read without
/// copying the list.
pub fn in_room(ctx: &Context, room: &str) -> bool {
    ctx.session_list_has("rooms", room.as_bytes())
}

pub fn set_rooms(ctx: &mut Context, rooms: &[String]) {
    let list = php::list(rooms.iter().map(|r| Value::Str(r.as_bytes().to_vec())));
    ctx.session_mut().insert(Key::Str(b"rooms".to_vec()), list);
}

/// `token_exp` of a session read from a gateway (listings, sweeps).
pub fn session_token_exp(s: &php::Array) -> Option<u64> {
    match s.get(&Key::Str(b"token_exp".to_vec()))? {
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

impl Who {
    /// Agent `id` of bot `bid`, as far as identity goes (the name is not part of it).
    pub fn agent(bid: &str, id: &str) -> Who {
        Who::Agent { bid: bid.to_string(), id: id.to_string(), name: String::new() }
    }

    /// Visitor `id` of bot `bid`, as far as identity goes.
    pub fn visitor(bid: &str, id: &str) -> Who {
        Who::Visitor { bid: bid.to_string(), id: id.to_string(), name: String::new(), conversation: String::new() }
    }

    /// Whether `other` is this same identity (a visitor's display name may change).
    pub fn same_identity(&self, other: &Who) -> bool {
        match (self, other) {
            (Who::Agent { bid: b1, id: i1, .. }, Who::Agent { bid: b2, id: i2, .. }) => b1 == b2 && i1 == i2,
            (Who::Visitor { bid: b1, id: i1, .. }, Who::Visitor { bid: b2, id: i2, .. }) => b1 == b2 && i1 == i2,
            _ => false,
        }
    }
}

pub fn set_token_exp(ctx: &mut Context, exp: Option<u64>) {
    let key = Key::Str(b"token_exp".to_vec());
    match exp {
        Some(e) => {
            ctx.session_mut().insert(key, Value::Int(e.min(i64::MAX as u64) as i64));
        }
        None => {
            if let Some(s) = ctx.existing_session_mut() {
                s.shift_remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(entries: &[(&str, Value)]) -> php::Array {
        entries.iter().map(|(k, v)| (Key::from_bytes(k.as_bytes()), v.clone())).collect()
    }

    /// Listing members reads identities from serialized sessions without unserializing them;
    /// it must see what the worker's own callbacks see.
    #[test]
    fn identity_from_bytes_is_identity_from_the_session() {
        let s = |b: &str| Value::Str(b.as_bytes().to_vec());
        let sessions = [
            session(&[("role", s("agent")), ("bid", s("b1")), ("id", s("a1")), ("name", s("Ann")), ("token_exp", Value::Int(99))]),
            session(&[("role", s("visitor")), ("bid", s("b1")), ("id", Value::Int(42)), ("conversation_id", s("c9"))]),
            session(&[("role", s("agent")), ("bid", s("b1"))]),
            session(&[("role", s("admin")), ("bid", s("b1")), ("id", s("x"))]),
            session(&[("rooms", Value::Array(session(&[("0", s("r1"))]))), ("role", s("agent")), ("bid", s("b2")), ("id", s("é"))]),
            session(&[("role", Value::Null), ("bid", s("b1")), ("id", s("x")), ("token_exp", s("99"))]),
            session(&[("role", Value::Int(1)), ("bid", s("b1")), ("id", s("x")), ("token_exp", Value::Int(7))]),
            session(&[("role", s("Agent")), ("bid", s("b1")), ("id", s("x"))]),
            session(&[]),
        ];
        for a in sessions {
            let bytes = Value::Array(a.clone()).serialize();
            assert_eq!(Who::from_session_bytes(&bytes), (Who::from_session(Some(&a)), session_token_exp(&a)), "{a:?}");
            let agent = match Who::from_session(Some(&a)) {
                Who::Agent { id, name, .. } => Some((id, name)),
                _ => None,
            };
            assert_eq!(Who::agent_in(&bytes).map(|(i, n)| (i.into_owned(), n.into_owned())), agent, "{a:?}");
        }
        assert_eq!(Who::from_session_bytes(b""), (Who::Nobody, None));
        assert_eq!(Who::agent_in(b"a:1:{s:4:\"role\";"), None);
        assert_eq!(Who::from_session_bytes(b"a:1:{s:4:\"role\";"), (Who::Nobody, None));
    }
}
