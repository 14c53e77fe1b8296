//! What an application implements: GatewayWorker's `Events` callbacks, async.
//!
//! Each client's events run in order, one at a time, in a task of that client's own; different
//! clients run concurrently, so a slow callback delays only its own client.

use crate::api::{Api, Result};
use async_trait::async_trait;
use bytes::Bytes;
use gateway::protocol::php::{self, Key, Value};
use gateway::protocol::ClientId;
use std::any::Any;
use std::borrow::Cow;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::OnceLock;

#[async_trait]
pub trait Events: Send + Sync + 'static {
    /// Once, before any client event.
    async fn on_worker_start(&self, _api: &Api) {}
    /// A client's TCP connection was accepted (before its WebSocket handshake).
    async fn on_connect(&self, _ctx: &mut Context) {}
    /// The WebSocket handshake finished; `req` holds the request's path, headers and query.
    async fn on_websocket_connect(&self, _ctx: &mut Context, _req: &WebSocketRequest) {}
    /// A message from the client.
    async fn on_message(&self, ctx: &mut Context, message: Bytes);
    /// The client is gone; session changes made here are not written back (as in PHP).
    async fn on_close(&self, _ctx: &mut Context) {}
    /// Once, when the worker stops.
    async fn on_worker_stop(&self, _api: &Api) {}
}

/// The current client of a callback, and the API to answer it.
pub struct Context {
    pub client_id: ClientId,
    /// The end client's address as the gateway saw it (0.0.0.0 for IPv6 clients, as in PHP).
    pub client_addr: SocketAddr,
    /// The gateway's public port.
    pub gateway_port: u16,
    /// The link the event came over (`ClientEvent::gateway`): where `send` answers.
    pub(crate) gateway: SocketAddrV4,
    /// The client's session (PHP's `$_SESSION`) as the gateway keeps it, serialized. It is
    /// read with [`Context::session_fields`] (a few fields, nothing built) or
    /// [`Context::session`], and changed with [`Context::session_mut`]; written back to the
    /// gateway after the callback when it changed.
    pub(crate) raw: Bytes,
    /// `raw` unserialized, on first use: a chat message reads its sender's identity and rooms
    /// and never needs the rest (unserializing every session was ≈ 8 % of a room message's
    /// instructions in the worker, docs/BENCHMARKS.md).
    pub(crate) decoded: OnceLock<Option<php::Array>>,
    /// Where `raw`'s top-level fields are, found on the first read: an event that reads its
    /// session twice (a chat message: the identity, then the rooms) reads it once.
    pub(crate) index: OnceLock<Option<php::Index>>,
    /// The session as the callback found it, copied on its first change: an event that only
    /// reads its session (most of them: a chat message) is not cloned and compared.
    pub(crate) before: Option<Option<php::Array>>,
    pub api: Api,
    /// State this worker keeps for this client between its events (a rate limiter, say). It
    /// lives in the client's task, so it is lost when the client moves to another worker.
    pub local: Option<Box<dyn Any + Send + Sync>>,
    /// Set by [`Context::save_session`]: the bytes the gateway now holds.
    pub(crate) saved: Option<Bytes>,
    pub(crate) inflight: std::sync::Arc<crate::worker::Inflight>,
}

impl Context {
    /// The client id as text, as PHP applications use it.
    pub fn id(&self) -> String {
        self.client_id.to_string()
    }

    /// Sends to the current client (PHP's `sendToCurrentClient`).
    pub async fn send(&self, msg: impl Into<Bytes>) -> Result<()> {
        self.api.send_to_conn(self.gateway, self.client_id.conn, msg).await
    }

    /// Writes the session to the gateway now rather than after the callback, so that queries
    /// made later in this callback (by this or any worker) already see it. PHP's
    /// `Gateway::setSession` on the current client does the same.
    pub async fn save_session(&mut self) -> Result<()> {
        let bytes = crate::session::serialize(self.session());
        self.api.set_raw_session(&self.client_id, bytes.clone()).await?;
        self.saved = Some(bytes);
        // What is saved is the new baseline: only a change after this one is written back.
        self.before = None;
        Ok(())
    }

    /// Work the application continues outside this callback (a spawned task that answers the
    /// client later) holds this guard, so a stopping worker finishes it before handing over.
    pub fn work_guard(&self) -> crate::worker::WorkGuard {
        crate::worker::WorkGuard::new(&self.inflight)
    }

    /// This worker's state for this client, created with `T::default()` on first use.
    pub fn local_mut<T: Default + Send + Sync + 'static>(&mut self) -> &mut T {
        let fresh = !matches!(&self.local, Some(b) if b.is::<T>());
        if fresh {
            self.local = Some(Box::new(T::default()));
        }
        self.local.as_mut().and_then(|b| b.downcast_mut::<T>()).expect("just stored a T")
    }

    /// The session as the gateway holds it (or as this callback changed it), if any.
    pub fn session(&self) -> Option<&php::Array> {
        self.decoded.get_or_init(|| crate::session::decode(&self.raw)).as_ref()
    }

    /// Top-level strings and integers of the session under `keys`, read without unserializing
    /// the rest (`php::fields`; arrays and other values are `Field::Other`, a missing key or
    /// no session `None`): what an event that only needs its client's identity reads.
    pub fn session_fields<const N: usize>(&self, keys: [&str; N]) -> [Option<php::Field<'_>>; N] {
        match self.decoded.get() {
            Some(session) => keys.map(|k| {
                session.as_ref()?.get(&Key::from_bytes(k.as_bytes())).map(|v| match v {
                    Value::Str(b) => php::Field::Str(b),
                    Value::Int(i) => php::Field::Int(*i),
                    _ => php::Field::Other,
                })
            }),
            None => match self.index() {
                Some(index) => index.fields(&self.raw, keys),
                None => [None; N],
            },
        }
    }

    /// `raw`'s index (`None`: no session, or one that does not unserialize to an array).
    fn index(&self) -> Option<&php::Index> {
        self.index.get_or_init(|| php::Index::of(&self.raw)).as_ref()
    }

    /// One top-level value of the session (an array, say), unserializing only that value
    /// until the session is unserialized whole.
    pub fn session_value(&self, key: &str) -> Option<Cow<'_, Value>> {
        match self.decoded.get() {
            Some(session) => session.as_ref()?.get(&Key::from_bytes(key.as_bytes())).map(Cow::Borrowed),
            None => Value::unserialize(self.index()?.raw(&self.raw, key)?).ok().map(Cow::Owned),
        }
    }

    /// Whether the top-level array under `key` holds the string `item` (a room in the
    /// client's list of rooms), read without building the array until the session is
    /// unserialized whole.
    pub fn session_list_has(&self, key: &str, item: &[u8]) -> bool {
        match self.decoded.get() {
            Some(session) => match session.as_ref().and_then(|s| s.get(&Key::from_bytes(key.as_bytes()))) {
                Some(Value::Array(a)) => a.values().any(|v| matches!(v, Value::Str(b) if b == item)),
                _ => false,
            },
            None => self.index().and_then(|index| index.raw(&self.raw, key)).is_some_and(|list| php::array_has_str(list, item)),
        }
    }

    /// The session to change, created empty on first use.
    pub fn session_mut(&mut self) -> &mut php::Array {
        self.decoded_mut().get_or_insert_with(php::Array::new)
    }

    /// The session to change, only if the client has one.
    pub fn existing_session_mut(&mut self) -> Option<&mut php::Array> {
        self.session()?;
        self.decoded_mut().as_mut()
    }

    /// The unserialized session, to change: the session as it was before its first change is
    /// kept, to tell afterwards whether it changed.
    fn decoded_mut(&mut self) -> &mut Option<php::Array> {
        if self.before.is_none() {
            self.before = Some(self.session().cloned());
        }
        self.session();
        self.decoded.get_mut().expect("unserialized just above")
    }

    /// A session value as text.
    pub fn session_str(&self, key: &str) -> Option<String> {
        match self.session()?.get(&Key::from_bytes(key.as_bytes()))? {
            Value::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }
}

/// The upgrade request as workerman presents it: `$_GET`, `$_SERVER` and `$_COOKIE`, read from
/// the event's body only when first asked. Most applications never ask (the chat does not),
/// and reading every connection's request cost a worker ≈ 25 000 instructions a connection
/// (docs/BENCHMARKS.md, session 27).
#[derive(Debug, Clone, Default)]
pub struct WebSocketRequest {
    body: Bytes,
    parts: OnceLock<Parts>,
}

#[derive(Debug, Clone, Default)]
struct Parts {
    get: php::Array,
    server: php::Array,
    cookie: php::Array,
}

fn text(a: &php::Array, key: &str) -> Option<String> {
    match a.get(&Key::from_bytes(key.as_bytes()))? {
        Value::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

impl WebSocketRequest {
    /// Keeps the serialized `{get, server, cookie}` body of CMD_ON_WEBSOCKET_CONNECT.
    pub fn from_body(body: Bytes) -> WebSocketRequest {
        WebSocketRequest { body, parts: OnceLock::new() }
    }

    fn parts(&self) -> &Parts {
        self.parts.get_or_init(|| {
            let Ok(Value::Array(top)) = Value::unserialize(&self.body) else { return Parts::default() };
            let part = |k: &str| match top.get(&Key::Str(k.as_bytes().to_vec())) {
                Some(Value::Array(a)) => a.clone(),
                _ => php::Array::new(),
            };
            Parts { get: part("get"), server: part("server"), cookie: part("cookie") }
        })
    }

    /// `$_GET`: the query's parameters.
    pub fn get(&self) -> &php::Array {
        &self.parts().get
    }

    /// `$_SERVER`: the request line and headers (`HTTP_*`), as workerman fills it.
    pub fn server(&self) -> &php::Array {
        &self.parts().server
    }

    /// `$_COOKIE`.
    pub fn cookies(&self) -> &php::Array {
        &self.parts().cookie
    }

    /// The request path without its query.
    pub fn path(&self) -> String {
        let uri = text(self.server(), "REQUEST_URI").unwrap_or_else(|| "/".into());
        uri.split('?').next().unwrap_or("/").to_string()
    }

    /// A request header by its HTTP name (`User-Agent`, `Origin`, ...).
    pub fn header(&self, name: &str) -> Option<String> {
        text(self.server(), &format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_")))
    }

    /// A query parameter.
    pub fn query(&self, name: &str) -> Option<String> {
        text(self.get(), name)
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        text(self.cookies(), name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Links;
    use php::Field;
    use std::sync::Arc;

    fn context(raw: &'static [u8]) -> Context {
        Context {
            client_id: "7f0000010b5400000001".parse().expect("a client id"),
            client_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            gateway_port: 0,
            gateway: "127.0.0.1:2900".parse().expect("address"),
            raw: Bytes::from_static(raw),
            decoded: OnceLock::new(),
            index: OnceLock::new(),
            before: None,
            api: Api::for_worker(Arc::new(Links::default()), Arc::default(), String::new()),
            local: None,
            saved: None,
            inflight: Arc::default(),
        }
    }

    /// The request is read when first asked, and answers what workerman's arrays hold; a body
    /// that does not read answers as an empty request.
    #[test]
    fn the_upgrade_request_reads_its_body_when_asked() {
        let body = br#"a:3:{s:3:"get";a:1:{s:3:"tag";s:2:"t1";}s:6:"server";a:2:{s:11:"REQUEST_URI";s:9:"/chat?x=1";s:11:"HTTP_ORIGIN";s:17:"https://a.example";}s:6:"cookie";a:1:{s:3:"sid";i:42;}}"#;
        let req = WebSocketRequest::from_body(Bytes::from_static(body));
        assert!(req.parts.get().is_none(), "nothing read before it is asked");
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.header("Origin").as_deref(), Some("https://a.example"));
        assert_eq!(req.query("tag").as_deref(), Some("t1"));
        assert_eq!(req.cookie("sid").as_deref(), Some("42"));
        let bad = WebSocketRequest::from_body(Bytes::from_static(b"a:1:{"));
        assert_eq!(bad.path(), "/");
        assert!(bad.get().is_empty() && bad.server().is_empty() && bad.cookies().is_empty());
    }

    /// A few fields or one value are read without unserializing the session, and answer as the
    /// unserialized session does, before and after a change.
    #[test]
    fn fields_read_as_the_unserialized_session_answers() {
        let raw = br#"a:4:{s:4:"role";s:5:"agent";s:2:"id";i:7;s:5:"rooms";a:1:{i:0;s:2:"r1";}s:1:"f";d:1.5;}"#;
        let (lazy, eager) = (context(raw), context(raw));
        assert!(eager.session().is_some());
        let rooms = Value::Array([(Key::Int(0), Value::Str(b"r1".to_vec()))].into_iter().collect());
        for ctx in [&lazy, &eager] {
            let found = ctx.session_fields(["role", "id", "rooms", "f", "none"]);
            assert_eq!(found, [Some(Field::Str(b"agent")), Some(Field::Int(7)), Some(Field::Other), Some(Field::Other), None]);
            assert_eq!(ctx.session_value("rooms").as_deref(), Some(&rooms));
            assert_eq!(ctx.session_value("id").as_deref(), Some(&Value::Int(7)));
            assert!(ctx.session_value("none").is_none());
            assert!(ctx.session_list_has("rooms", b"r1"));
            assert!(!ctx.session_list_has("rooms", b"r2") && !ctx.session_list_has("role", b"agent") && !ctx.session_list_has("none", b"r1"));
        }
        assert!(lazy.decoded.get().is_none(), "reading fields unserialized the session");
        let mut changed = context(raw);
        changed.session_mut().insert(Key::from_bytes(b"role"), Value::Str(b"visitor".to_vec()));
        assert_eq!(changed.session_fields(["role"]), [Some(Field::Str(b"visitor"))]);
        changed.session_mut().insert(Key::from_bytes(b"rooms"), php::list([Value::Str(b"r2".to_vec())]));
        assert!(changed.session_list_has("rooms", b"r2") && !changed.session_list_has("rooms", b"r1"));
        assert_eq!(changed.before, Some(eager.session().cloned()), "the session before the change is kept");
        for raw in [&b""[..], b"i:5;", b"a:1:{"] {
            let none = context(raw);
            assert_eq!(none.session_fields(["role"]), [None]);
            assert!(none.session_value("role").is_none() && none.session().is_none());
            assert!(!none.session_list_has("rooms", b"r1"));
        }
    }
}
