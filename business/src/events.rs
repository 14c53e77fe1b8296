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
use std::net::SocketAddr;

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
    /// The client's session (PHP's `$_SESSION`), read with [`Context::session`] and changed
    /// with [`Context::session_mut`]: written back to the gateway after the callback when it
    /// changed.
    pub(crate) session: Option<php::Array>,
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
        self.api.send_to_client_id(&self.client_id, msg).await
    }

    /// Writes the session to the gateway now rather than after the callback, so that queries
    /// made later in this callback (by this or any worker) already see it. PHP's
    /// `Gateway::setSession` on the current client does the same.
    pub async fn save_session(&mut self) -> Result<()> {
        let bytes = crate::session::serialize(&self.session);
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
        self.session.as_ref()
    }

    /// The session to change, created empty on first use.
    pub fn session_mut(&mut self) -> &mut php::Array {
        self.touch();
        self.session.get_or_insert_with(php::Array::new)
    }

    /// The session to change, only if the client has one.
    pub fn existing_session_mut(&mut self) -> Option<&mut php::Array> {
        self.session.as_ref()?;
        self.touch();
        self.session.as_mut()
    }

    /// Keeps the session as it was before its first change, to tell afterwards whether it
    /// changed.
    fn touch(&mut self) {
        if self.before.is_none() {
            self.before = Some(self.session.clone());
        }
    }

    /// A session value as text.
    pub fn session_str(&self, key: &str) -> Option<String> {
        match self.session.as_ref()?.get(&Key::from_bytes(key.as_bytes()))? {
            Value::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }
}

/// The upgrade request as workerman presents it: `$_GET`, `$_SERVER` and `$_COOKIE`.
#[derive(Debug, Clone, Default)]
pub struct WebSocketRequest {
    pub get: php::Array,
    pub server: php::Array,
    pub cookie: php::Array,
}

fn text(a: &php::Array, key: &str) -> Option<String> {
    match a.get(&Key::from_bytes(key.as_bytes()))? {
        Value::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

impl WebSocketRequest {
    /// Reads the serialized `{get, server, cookie}` body of CMD_ON_WEBSOCKET_CONNECT.
    pub fn from_body(body: &[u8]) -> WebSocketRequest {
        let Ok(Value::Array(top)) = Value::unserialize(body) else { return WebSocketRequest::default() };
        let part = |k: &str| match top.get(&Key::Str(k.as_bytes().to_vec())) {
            Some(Value::Array(a)) => a.clone(),
            _ => php::Array::new(),
        };
        WebSocketRequest { get: part("get"), server: part("server"), cookie: part("cookie") }
    }

    /// The request path without its query.
    pub fn path(&self) -> String {
        let uri = text(&self.server, "REQUEST_URI").unwrap_or_else(|| "/".into());
        uri.split('?').next().unwrap_or("/").to_string()
    }

    /// A request header by its HTTP name (`User-Agent`, `Origin`, ...).
    pub fn header(&self, name: &str) -> Option<String> {
        text(&self.server, &format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_")))
    }

    /// A query parameter.
    pub fn query(&self, name: &str) -> Option<String> {
        text(&self.get, name)
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        text(&self.cookie, name)
    }
}
