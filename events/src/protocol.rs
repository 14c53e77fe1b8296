//! The client JSON protocol's vocabulary: error codes, id coercion, escaping, message frames.

use crate::store::StoredMessage;
use serde_json::{json, Map, Value};

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
pub fn id_field(req: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
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
pub fn text_field(req: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
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

/// The one message shape every client sees.
pub fn message_json(m: &StoredMessage) -> Value {
    let mut v = json!({
        "method": "say",
        "id": m.id.to_string(),
        "from_uid": m.from_uid,
        "from_name": m.from_name,
        "content": m.content,
        "timestamp": m.timestamp,
    });
    if let Some(cid) = &m.cid {
        v["cid"] = cid.clone().into();
    }
    for (k, val) in &m.to {
        v[k] = val.clone();
    }
    v
}

pub fn now_secs() -> i64 {
    crate::store::now_ms() / 1000
}

/// The fuzz target for client frames (`fuzz/`): every field reader on any JSON object.
pub fn fuzz_request(data: &[u8]) {
    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(data) {
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
