//! Keeping a worker's view of a client's session in step with the gateway's (spec §7).
//!
//! Every event carries the session bytes as the gateway had them when it queued the event. The
//! worker remembers a checksum of what it last saw or wrote; when an event arrives with other
//! bytes, someone else changed the session since, so the current value is fetched before the
//! callback runs. After the callback a changed session is written back with SET_SESSION and its
//! checksum becomes the new baseline. This is GatewayWorker's algorithm, so PHP and Rust workers
//! can serve the same clients.

use crate::api::Api;
use bytes::Bytes;
use gateway::protocol::php::{self, Key, Value};
use gateway::protocol::{ClientId, EventKind};
use tracing::warn;

#[derive(Debug, Default)]
pub struct SessionSync {
    /// Checksum of the session as this worker last knew the gateway to hold it.
    version: Option<u32>,
    /// Our own writes not yet seen in an event: the checksums of the sessions they replaced,
    /// and the latest value written. An event still carrying a replaced session was queued
    /// before our write reached the gateway, so our value is the current one; asking the
    /// gateway instead would race the write (it travels on the link, the query on another
    /// connection) and could return the old session.
    replaced: Vec<u32>,
    /// The latest value written, as the bytes sent: it is needed only when an event races our
    /// write, and kept serialized because it is kept for every client that has not spoken since
    /// (an idle agent after its login). Decoded, a chat session was ≈ 1 KB of maps and strings.
    /// A copy of its own, not a second handle on the `Bytes` sent: that handle made the sent
    /// buffer shared, an allocation more per idle client (and 16 bytes more here).
    written: Option<Box<[u8]>>,
}

/// A session's bytes as the callback sees them: `None` unless they are a PHP array.
pub(crate) fn decode(bytes: &[u8]) -> Option<php::Array> {
    match Value::unserialize(bytes) {
        Ok(Value::Array(a)) => Some(a),
        _ => None,
    }
}

impl SessionSync {
    /// The session the callback should see for an event carrying `ext`, as the gateway keeps
    /// it (serialized): the callback unserializes it only if it needs more than a few fields.
    pub async fn load(&mut self, api: &Api, id: &ClientId, kind: EventKind, ext: &Bytes) -> Bytes {
        let crc = crc32fast::hash(ext);
        match self.version {
            None => {
                self.version = Some(crc);
                ext.clone()
            }
            Some(v) if v == crc => {
                // The gateway has caught up with everything we wrote.
                self.replaced.clear();
                self.written = None;
                ext.clone()
            }
            Some(_) if self.replaced.contains(&crc) => self.written.as_deref().map(Bytes::copy_from_slice).unwrap_or_default(),
            Some(_) if kind == EventKind::Close => ext.clone(),
            Some(_) => {
                // Someone else changed it (another worker, an API client): ask the gateway.
                self.version = Some(crc);
                self.replaced.clear();
                self.written = None;
                match api.raw_session(id).await {
                    Ok(current) => current,
                    Err(e) => {
                        warn!(client = %id, "cannot fetch the current session, using the event's: {e}");
                        ext.clone()
                    }
                }
            }
        }
    }

    /// Records a write of these bytes (empty: no session).
    fn wrote(&mut self, bytes: &[u8]) {
        let crc = crc32fast::hash(bytes);
        if let Some(old) = self.version {
            if old != crc && !self.replaced.contains(&old) {
                self.replaced.push(old);
            }
        }
        self.version = Some(crc);
        self.written = Some(bytes.into());
    }

    /// The callback wrote the session itself (`Context::save_session`), as these bytes.
    pub fn saved(&mut self, bytes: &[u8]) {
        self.wrote(bytes);
    }

    /// Writes the session back when the callback changed it.
    pub async fn store(&mut self, api: &Api, id: &ClientId, kind: EventKind, before: Option<&php::Array>, after: Option<&php::Array>) {
        if kind == EventKind::Close || before == after {
            return;
        }
        let bytes = serialize(after);
        self.wrote(&bytes);
        if let Err(e) = api.set_raw_session(id, bytes).await {
            warn!(client = %id, "session not written back: {e}");
        }
    }
}

/// A session as the gateway keeps it: PHP-serialized, empty for none. Exactly as long as it
/// is: the worker keeps the last one it wrote per client, and the serializer's buffer has
/// grown by doubling.
pub fn serialize(session: Option<&php::Array>) -> Bytes {
    match session {
        Some(a) => Bytes::from(Value::Array(a.clone()).serialize().into_boxed_slice()),
        None => Bytes::new(),
    }
}

/// A PHP value as JSON (arrays with keys 0..n-1 become lists), for applications that speak
/// JSON to their clients.
pub fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
        Value::Str(s) => String::from_utf8_lossy(s).into_owned().into(),
        Value::Array(a) => {
            let is_list = a.keys().enumerate().all(|(i, k)| *k == Key::Int(i as i64));
            if is_list {
                a.values().map(to_json).collect::<Vec<_>>().into()
            } else {
                a.iter().map(|(k, v)| (String::from_utf8_lossy(&k.to_bytes()).into_owned(), to_json(v))).collect::<serde_json::Map<_, _>>().into()
            }
        }
    }
}

/// JSON as a PHP value (objects become arrays with PHP's key normalisation).
pub fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => n.as_i64().map(Value::Int).unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0))),
        serde_json::Value::String(s) => Value::Str(s.as_bytes().to_vec()),
        serde_json::Value::Array(a) => php::list(a.iter().map(from_json)),
        serde_json::Value::Object(o) => Value::Array(o.iter().map(|(k, v)| (Key::from_bytes(k.as_bytes()), from_json(v))).collect()),
    }
}
