//! The client JSON protocol's vocabulary: error codes, id coercion, escaping, message frames.

use crate::request::Request;
use crate::store::StoredMessage;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};

/// Error codes kept from the original deployment (see docs/protocol.md).
pub mod code {
    pub const MISSING_METHOD: &str = "10001";
    pub const LOGIN_FIELDS: &str = "10002";
    pub const NO_UPSTREAM: &str = "10003";
    pub const NOT_AUTHORISED: &str = "10004";
    pub const BAD_INPUT: &str = "10005";
}

/// `{"method":…,"code":…,"msg":…}`; `method` is left out when unknown.
pub fn error(method: Option<&str>, code: &str, msg: &str) -> String {
    let mut v = json!({"code": code, "msg": msg});
    if let Some(m) = method {
        v["method"] = m.into();
    }
    v.to_string()
}

/// An id field: strings and numbers are both accepted, strings come back.
pub fn id_field(req: &Request, key: &str) -> Result<Option<String>, String> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > 128 => Err(format!("{key} is too long")),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(_) => Err(format!("{key} must be a string or an integer")),
    }
}

/// A text field that must be a string when present.
pub fn text_field(req: &Request, key: &str) -> Result<Option<String>, String> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

/// HTML-escapes a display name, so no page can be tricked into running it.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#039;"),
            c => out.push(c),
        }
    }
    out
}

/// The one message shape every client sees, as a value (for lists: history, sync).
pub fn message_json(m: &StoredMessage) -> Value {
    // Serializing into a `Value` cannot fail: every key is a string.
    serde_json::to_value(MessageFrame::new(m, None)).unwrap_or_default()
}

/// A message as every client sees it: `{"method":"say","id":…,"from_uid":…,"from_name":…,
/// "content":…,"timestamp":…[,"cid":…]` then its addressing fields (`room`, `conversation_id`,
/// `to_uid`, `bot`) `[,"delivery":…]}`. Written straight to JSON text: a room message is
/// framed once per message on the worker's hot path, where building a `Value` map and then
/// printing it was a sixth of the worker's instructions per message.
pub struct MessageFrame<'a> {
    message: &'a StoredMessage,
    delivery: Option<&'a str>,
}

/// A frame's length beside its texts and addressing fields: its keys, quotes, id and timestamp.
const FRAME_OVERHEAD: usize = 128;

/// The message's own fields: an addressing field of the same name is left out, so a stored
/// `dest` can never stand in for the sender or the id.
const OWN_FIELDS: [&str; 8] = ["method", "id", "from_uid", "from_name", "content", "timestamp", "cid", "delivery"];

impl<'a> MessageFrame<'a> {
    /// `message`, with the state of its delivery to a LINE user where it has one.
    pub fn new(message: &'a StoredMessage, delivery: Option<&'a str>) -> MessageFrame<'a> {
        MessageFrame { message, delivery }
    }

    /// The frame as JSON text, written into a buffer sized for it (serde_json's own starts at
    /// 128 bytes and grew two or three times per frame). Only a map key that is not a string
    /// fails, and a frame has none.
    pub fn text(&self) -> serde_json::Result<String> {
        let m = self.message;
        let text_len = m.content.len() + m.from_uid.len() + m.from_name.len() + m.cid.as_deref().map_or(0, str::len);
        let mut out = Vec::with_capacity(FRAME_OVERHEAD + text_len + 64 * m.to.len());
        serde_json::to_writer(&mut out, self)?;
        // serde_json writes only valid UTF-8.
        String::from_utf8(out).map_err(serde::ser::Error::custom)
    }
}

impl Serialize for MessageFrame<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.message;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("method", "say")?;
        map.serialize_entry("id", &Decimal(m.id))?;
        map.serialize_entry("from_uid", &m.from_uid)?;
        map.serialize_entry("from_name", &m.from_name)?;
        map.serialize_entry("content", &m.content)?;
        map.serialize_entry("timestamp", &m.timestamp)?;
        if let Some(cid) = &m.cid {
            map.serialize_entry("cid", cid)?;
        }
        for (k, v) in m.to.iter().filter(|(k, _)| !OWN_FIELDS.contains(&k.as_str())) {
            map.serialize_entry(k, v)?;
        }
        if let Some(d) = self.delivery {
            map.serialize_entry("delivery", d)?;
        }
        map.end()
    }
}

/// `say_ack`: the sender's message is stored (`id`, `timestamp`), under its `cid` when it
/// gave one, and for a LINE user how its delivery stands.
#[derive(serde::Serialize)]
pub struct SayAck<'a> {
    method: &'static str,
    id: Decimal,
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<&'a str>,
}

impl<'a> SayAck<'a> {
    pub fn new(m: &'a StoredMessage, delivery: Option<&'a str>) -> SayAck<'a> {
        SayAck { method: "say_ack", id: Decimal(m.id), timestamp: m.timestamp, cid: m.cid.as_deref(), delivery }
    }
}

/// A message id as clients see it: a string of digits (ids outgrow a JavaScript number).
struct Decimal(i64);

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

pub fn now_secs() -> i64 {
    crate::store::now_ms() / 1000
}

/// The fuzz target for client frames (`fuzz/`): every field reader on any JSON object.
pub fn fuzz_request(data: &[u8]) {
    if let Ok(m) = Request::parse(data) {
        for key in ["bid", "customer_id", "visitor_id", "room", "conversation_id", "cid", "to_uid", "with_uid", "before_id", "after_id"] {
            let _ = id_field(&m, key);
        }
        for key in ["content", "name", "customer_name", "method"] {
            if let Ok(Some(t)) = text_field(&m, key) {
                let _ = escape_html(&t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(cid: Option<&str>, to: Value) -> StoredMessage {
        StoredMessage {
            id: 42,
            thread: "r:b1:lobby".into(),
            sender: "a:b1:a7".into(),
            from_uid: "a7".into(),
            from_name: "Ann \"the\" <agent>".into(),
            cid: cid.map(Into::into),
            content: "hi\nthere é".into(),
            to: match to {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
            timestamp: 1_700_000_000_123,
        }
    }

    /// The bytes clients have always been sent (the order is the protocol's: the message's
    /// own fields, then where it went, then its delivery), escapes included.
    #[test]
    fn a_message_frame_is_the_protocols_bytes() {
        let m = stored(Some("c-1"), json!({"room": "lobby"}));
        assert_eq!(
            MessageFrame::new(&m, None).text().expect("text"),
            r#"{"method":"say","id":"42","from_uid":"a7","from_name":"Ann \"the\" <agent>","content":"hi\nthere é","timestamp":1700000000123,"cid":"c-1","room":"lobby"}"#
        );
        let m = stored(None, json!({"conversation_id": "c9", "bot": true}));
        assert_eq!(
            MessageFrame::new(&m, Some("queued")).text().expect("text"),
            r#"{"method":"say","id":"42","from_uid":"a7","from_name":"Ann \"the\" <agent>","content":"hi\nthere é","timestamp":1700000000123,"conversation_id":"c9","bot":true,"delivery":"queued"}"#
        );
        // The value form (lists) is the same object, in the same order.
        assert_eq!(message_json(&m).to_string(), MessageFrame::new(&m, None).text().expect("text"));
    }

    /// A stored addressing field never stands in for one of the message's own.
    #[test]
    fn an_addressing_field_cannot_replace_the_senders() {
        let m = stored(None, json!({"to_uid": "a8", "from_uid": "boss", "id": "1"}));
        let v: Value = serde_json::from_str(&MessageFrame::new(&m, None).text().expect("text")).expect("json");
        assert_eq!((v["from_uid"].as_str(), v["id"].as_str(), v["to_uid"].as_str()), (Some("a7"), Some("42"), Some("a8")));
    }

    #[test]
    fn a_say_ack_is_the_protocols_bytes() {
        let m = stored(Some("c-1"), json!({"room": "lobby"}));
        let text = serde_json::to_string(&SayAck::new(&m, None)).expect("text");
        assert_eq!(text, r#"{"method":"say_ack","id":"42","timestamp":1700000000123,"cid":"c-1"}"#);
        let m = stored(None, json!({}));
        let text = serde_json::to_string(&SayAck::new(&m, Some("sent"))).expect("text");
        assert_eq!(text, r#"{"method":"say_ack","id":"42","timestamp":1700000000123,"delivery":"sent"}"#);
    }
}
