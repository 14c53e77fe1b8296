//! Every name the chat builds from ids it was given — gateway uids and groups, store threads,
//! the sender identity messages are deduplicated by — is made here, in one canonical encoding:
//! a kind, then each id escaped (`%` → `%25`, `:` → `%3A`), joined by `:`.
//!
//! Why: bots are tenants, and the ids inside them (bot ids, agent ids, room names, visitor ids)
//! are chosen by whoever calls `login` or `visitor_login`. Joined as they are, bot `1` room
//! `2:x` and bot `1:2` room `x` name the same group, and agent `shared` of bot 10 and agent
//! `shared` of bot 20 the same uid. Escaped, no id can contain the separator, so two different
//! (kind, ids) tuples never make the same name. Ids without `:` or `%` read as before.

use std::borrow::Cow;

/// A new unguessable id: conversations, visitors, feed events, stored images. 96 random bits
/// as 24 hex digits.
pub fn new_id() -> String {
    let mut b = [0u8; 12];
    // getrandom only fails on exotic platforms; a clock-derived id is still unique enough.
    if getrandom::fill(&mut b).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        b.copy_from_slice(&nanos.to_be_bytes()[4..]);
    }
    hex::encode(b)
}

/// One id, made safe to place between separators.
pub fn escape(id: &str) -> Cow<'_, str> {
    if !id.contains([':', '%']) {
        return Cow::Borrowed(id);
    }
    let mut out = String::with_capacity(id.len() + 8);
    for c in id.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `kind:part1:part2…`, each part escaped.
pub fn key(kind: &str, parts: &[&str]) -> String {
    let mut out = String::with_capacity(kind.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    out.push_str(kind);
    for p in parts {
        out.push(':');
        out.push_str(&escape(p));
    }
    out
}

/// The uid an agent's connections are bound to, and the sender identity of its messages.
pub fn agent_uid(bid: &str, agent: &str) -> String {
    key("a", &[bid, agent])
}

/// The uid a visitor's connections are bound to, and the sender identity of its messages.
pub fn visitor_uid(bid: &str, visitor: &str) -> String {
    key("v", &[bid, visitor])
}

/// The group of every agent connection of a bot.
pub fn bot_group(bid: &str) -> String {
    key("bot", &[bid])
}

/// A room of a bot.
pub fn room_group(bid: &str, room: &str) -> String {
    key("room", &[bid, room])
}

/// The agents of a bot that get one frame per presence change (the contract's).
pub fn presence_single_group(bid: &str) -> String {
    key("presence", &[bid])
}

/// The agents of a bot that get a tick's presence changes in one `presence_push`.
pub fn presence_batch_group(bid: &str) -> String {
    key("presence+", &[bid])
}

/// The agents of a bot that get a tick's presence changes as one `agents_push` of rows.
pub fn presence_compact_group(bid: &str) -> String {
    key("presence#", &[bid])
}

/// The thread a conversation's messages are stored under (conversation ids are the store's
/// own, unique across bots).
pub fn conversation_thread(id: &str) -> String {
    key("c", &[id])
}

/// The thread of a room's messages.
pub fn room_thread(bid: &str, room: &str) -> String {
    key("r", &[bid, room])
}

/// The thread of a private conversation between two agents of a bot (order-independent). The
/// pair is a JSON array after the bot, as it always was: the last part needs no escaping.
pub fn private_thread(bid: &str, a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("{}:{}", key("d", &[bid]), serde_json::json!([x, y]))
}

/// The prefix of LINE users' visitor ids, `line:<LINE user id>`: no web visitor may take one.
/// Here, with the other names, so the chat knows a LINE conversation without importing the
/// LINE adapter.
pub const LINE_VISITOR_PREFIX: &str = "line:";

/// The LINE user behind a visitor id, if it is one.
pub fn line_user(visitor_id: &str) -> Option<&str> {
    visitor_id.strip_prefix(LINE_VISITOR_PREFIX)
}

/// How the config names one agent of one bot (`revoked_agents`): `<bid>:<agent>`, each escaped
/// as above, so bot `1` agent `2:x` (`1:2%3Ax`) and bot `1:2` agent `x` (`1%3A2:x`) differ.
pub fn agent_ref(bid: &str, agent: &str) -> String {
    format!("{}:{}", escape(bid), escape(agent))
}

/// Checks that `entry` names exactly one agent: one unescaped `:`. An entry like `1:2:x`
/// could mean two agents, and a revocation must not silently miss the one meant.
pub fn check_agent_ref(entry: &str) -> Result<(), String> {
    match entry.matches(':').count() {
        1 if !entry.starts_with(':') && !entry.ends_with(':') => Ok(()),
        _ => Err(format!(
            "{entry:?} must be \"<bid>:<agent>\" with one ':'; write a ':' inside an id as %3A and a '%' as %25 \
             (bot 1, agent 2:x is \"1:2%3Ax\"; bot 1:2, agent x is \"1%3A2:x\")"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_id_is_24_hex_digits_and_never_the_same() {
        let (a, b) = (new_id(), new_id());
        assert!(a.len() == 24 && a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn ids_cannot_collide_through_the_separator() {
        assert_ne!(room_group("1", "2:x"), room_group("1:2", "x"));
        assert_ne!(bot_group("room:7:r"), room_group("7", "r"));
        assert_ne!(agent_uid("10", "shared"), agent_uid("20", "shared"));
        assert_ne!(agent_uid("1", "v"), visitor_uid("1", "v"));
        assert_ne!(key("k", &["a%3Ab"]), key("k", &["a:b"]));
        assert_eq!(room_thread("1", "lobby"), "r:1:lobby");
        assert_eq!(escape("50%:x"), "50%25%3Ax");
    }

    #[test]
    fn a_config_entry_names_one_agent() {
        assert_eq!(agent_ref("1", "2:x"), "1:2%3Ax");
        assert_eq!(agent_ref("1:2", "x"), "1%3A2:x");
        assert_eq!(agent_ref("10", "b7"), "10:b7");
        assert!(check_agent_ref("10:b7").is_ok());
        assert!(check_agent_ref("1:2%3Ax").is_ok());
        for bad in ["1:2:x", "b7", ":b7", "10:", ""] {
            assert!(check_agent_ref(bad).is_err(), "{bad}");
        }
    }
}
