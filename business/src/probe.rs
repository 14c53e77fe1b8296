//! The probe: a diagnostic application that exposes the whole Gateway API to its clients.
//!
//! A client sends `{"call":"<api method>","args":[...],"tag":<anything>}` and gets
//! `{"tag":...,"ok":<result>}` or `{"tag":...,"error":"..."}`. The integration tests drive every
//! API method through it, over real sockets, as an application would use them. It gives every
//! client full power over every other client, so it is for tests and diagnostics only: the CLI
//! logs a loud warning when it is chosen.

use crate::api::{Api, ApiError};
use crate::events::{Context, Events, WebSocketRequest};
use crate::session::{from_json, to_json};
use async_trait::async_trait;
use bytes::Bytes;
use gateway::protocol::php::{Key, Value};
use gateway::protocol::ClientId;
use serde_json::{json, Value as J};
use std::collections::BTreeMap;

/// Identifies the worker process in replies, so tests can see which worker answered.
pub struct Probe {
    pub worker: String,
}

fn s(args: &[J], i: usize) -> String {
    match args.get(i) {
        Some(J::String(x)) => x.clone(),
        Some(J::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn list(args: &[J], i: usize) -> Vec<String> {
    match args.get(i) {
        Some(J::Array(a)) => a.iter().map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string())).collect(),
        Some(J::String(x)) => vec![x.clone()],
        _ => Vec::new(),
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn ids(v: Vec<ClientId>) -> J {
    v.into_iter().map(|c| c.to_string()).collect::<Vec<_>>().into()
}

fn sessions(m: BTreeMap<ClientId, Option<gateway::protocol::php::Array>>) -> J {
    m.into_iter().map(|(k, v)| (k.to_string(), v.map_or(J::Null, |a| to_json(&Value::Array(a))))).collect::<serde_json::Map<_, _>>().into()
}

fn array_arg(args: &[J], i: usize) -> gateway::protocol::php::Array {
    match args.get(i).map(from_json) {
        Some(Value::Array(a)) => a,
        _ => gateway::protocol::php::Array::new(),
    }
}

async fn call(api: &Api, ctx: &mut Context, method: &str, a: &[J]) -> Result<J, ApiError> {
    Ok(match method {
        "whoami" => json!({"client_id": ctx.id(), "session": ctx.session().map(|s| to_json(&Value::Array(s.clone())))}),
        "gateways" => api.gateways().await?.iter().map(ToString::to_string).collect::<Vec<_>>().into(),
        "sleep" => {
            let ms = a.first().and_then(J::as_u64).unwrap_or(0).min(10_000);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            J::Null
        }
        "session_put" => {
            ctx.session_mut().insert(Key::from_bytes(s(a, 0).as_bytes()), from_json(a.get(1).unwrap_or(&J::Null)));
            J::Null
        }
        "send_to_client" => api.send_to_client(&s(a, 0), s(a, 1)).await.map(|_| J::Null)?,
        "send_to_all" => api.send_to_all(s(a, 0)).await.map(|_| J::Null)?,
        "send_to_clients" => api.send_to_clients(&refs(&list(a, 0)), s(a, 1)).await.map(|_| J::Null)?,
        "send_to_all_except" => api.send_to_all_except(&refs(&list(a, 0)), s(a, 1)).await.map(|_| J::Null)?,
        "send_to_uid" => api.send_to_uid(&refs(&list(a, 0)), s(a, 1)).await.map(|_| J::Null)?,
        "send_to_group" => api.send_to_group(&refs(&list(a, 0)), s(a, 1), &refs(&list(a, 2))).await.map(|_| J::Null)?,
        "close_client" => {
            let msg = a.get(1).and_then(|m| m.as_str()).map(|m| Bytes::copy_from_slice(m.as_bytes()));
            api.close_client(&s(a, 0), msg).await.map(|_| J::Null)?
        }
        "destroy_client" => api.destroy_client(&s(a, 0)).await.map(|_| J::Null)?,
        "bind_uid" => api.bind_uid(&s(a, 0), &s(a, 1)).await.map(|_| J::Null)?,
        "unbind_uid" => api.unbind_uid(&s(a, 0), &s(a, 1)).await.map(|_| J::Null)?,
        "join_group" => api.join_group(&s(a, 0), &s(a, 1)).await.map(|_| J::Null)?,
        "leave_group" => api.leave_group(&s(a, 0), &s(a, 1)).await.map(|_| J::Null)?,
        "ungroup" => api.ungroup(&s(a, 0)).await.map(|_| J::Null)?,
        "is_online" => api.is_online(&s(a, 0)).await?.into(),
        "is_uid_online" => api.is_uid_online(&s(a, 0)).await?.into(),
        "get_client_id_by_uid" => ids(api.get_client_id_by_uid(&s(a, 0)).await?),
        "get_uid_by_client_id" => api.get_uid_by_client_id(&s(a, 0)).await?.into(),
        "get_client_count_by_group" => api.get_client_count_by_group(&s(a, 0)).await?.into(),
        "get_all_client_count" => api.get_all_client_count().await?.into(),
        "get_client_id_list_by_group" => ids(api.get_client_id_list_by_group(&s(a, 0)).await?),
        "get_all_client_id_list" => ids(api.get_all_client_id_list().await?),
        "get_client_sessions_by_group" => sessions(api.get_client_sessions_by_group(&s(a, 0)).await?),
        "get_all_client_sessions" => sessions(api.get_all_client_sessions().await?),
        "get_uid_list_by_group" => api.get_uid_list_by_group(&s(a, 0)).await?.into(),
        "get_uid_count_by_group" => api.get_uid_count_by_group(&s(a, 0)).await?.into(),
        "get_all_uid_list" => api.get_all_uid_list().await?.into(),
        "get_all_uid_count" => api.get_all_uid_count().await?.into(),
        "get_all_group_id_list" => api.get_all_group_id_list().await?.into(),
        "get_session" => api.get_session(&s(a, 0)).await?.map_or(J::Null, |s| to_json(&Value::Array(s))),
        "set_session" => api.set_session(&s(a, 0), &array_arg(a, 1)).await.map(|_| J::Null)?,
        "update_session" => api.update_session(&s(a, 0), &array_arg(a, 1)).await.map(|_| J::Null)?,
        "batch_get_client_id_by_uid" => {
            api.batch_get_client_id_by_uid(&refs(&list(a, 0))).await?.into_iter().map(|(k, v)| (k, ids(v))).collect::<serde_json::Map<_, _>>().into()
        }
        "batch_get_client_count_by_group" => serde_json::to_value(api.batch_get_client_count_by_group(&refs(&list(a, 0))).await?).unwrap_or(J::Null),
        other => return Ok(json!({"unknown_call": other})),
    })
}

#[async_trait]
impl Events for Probe {
    async fn on_connect(&self, ctx: &mut Context) {
        let hello = json!({"event": "hello", "client_id": ctx.id(), "worker": self.worker});
        let _ = ctx.send(hello.to_string()).await;
    }

    async fn on_websocket_connect(&self, ctx: &mut Context, req: &WebSocketRequest) {
        // Stored in the session so the tests can see both the request and the write-back.
        let path = req.path();
        ctx.session_mut().insert(Key::Str(b"path".to_vec()), Value::Str(path.into_bytes()));
    }

    async fn on_message(&self, ctx: &mut Context, message: Bytes) {
        let Ok(req) = serde_json::from_slice::<J>(&message) else {
            let _ = ctx.send(json!({"error": "not JSON", "worker": self.worker}).to_string()).await;
            return;
        };
        let tag = req.get("tag").cloned().unwrap_or(J::Null);
        let method = req.get("call").and_then(J::as_str).unwrap_or("").to_string();
        let args = req.get("args").and_then(J::as_array).cloned().unwrap_or_default();
        let api = ctx.api.clone();
        let reply = match call(&api, ctx, &method, &args).await {
            Ok(v) => json!({"tag": tag, "ok": v, "worker": self.worker}),
            Err(e) => json!({"tag": tag, "error": e.to_string(), "worker": self.worker}),
        };
        let _ = ctx.send(reply.to_string()).await;
    }
}
