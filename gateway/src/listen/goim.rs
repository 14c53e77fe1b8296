//! goim packets as chat clients: the same JSON the WebSocket clients send and get, carried in
//! `protocol::goim` packets, over raw TCP or inside binary WebSocket frames.
//!
//! Requests become the chat's own methods, so workers see an ordinary client:
//! op 2 → `{"method":"heartbeat"}`, op 4 → its body unchanged, op 7 → the body with
//! `"method":"auth"`, op 14 → `"sync"`, op 16 → `"ack"`. Each request but op 4 waits for the
//! worker's answer of the same method, which goes out as the reply op with the request's
//! sequence number (op 3's body is the `online` count as an int32); everything else is pushed
//! as op 5. An auth answer carrying an error `code` is sent, then the connection is closed.

use super::tcp::Wire;
use crate::protocol::goim::{op, GoimCodec, Packet};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use tokio_tungstenite::tungstenite::Message;

/// Requests that may wait for their answers at once; more is a client that does not read.
const MAX_PENDING: usize = 64;

/// A request waiting for the worker's answer.
#[derive(Debug)]
struct Pending {
    method: &'static str,
    reply_op: i32,
    seq: i32,
    ver: i16,
}

/// One connection's goim state, held by its one task: whether it authenticated, and the
/// requests waiting for their answers. The queue is boxed and exists only while a request
/// waits, so an idle agent holds 16 bytes here and no allocation (an `Arc` of a lock and a
/// queue was 64 bytes of every goim connection for its life; docs/BENCHMARKS.md, session 23).
pub struct Goim {
    max_packet: u32,
    authed: bool,
    // Boxed on purpose: 8 bytes in every connection's task, where the queue itself is 32.
    #[allow(clippy::box_collection)]
    pending: Option<Box<VecDeque<Pending>>>,
}

impl Goim {
    pub fn new(max_packet: usize) -> Goim {
        Goim { max_packet: u32::try_from(max_packet).unwrap_or(u32::MAX), authed: false, pending: None }
    }

    /// The largest packet taken, in bytes.
    pub fn max_packet(&self) -> usize {
        self.max_packet as usize
    }

    /// Requests waiting for their answers.
    fn waiting(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.len())
    }

    /// Turns one client packet into the JSON message the hub forwards.
    pub fn request(&mut self, p: Packet) -> Result<Bytes, String> {
        if p.op != op::AUTH && !self.authed {
            return Err(format!("operation {} before auth (op 7)", p.op));
        }
        let (method, reply_op) = match p.op {
            op::HEARTBEAT => ("heartbeat", op::HEARTBEAT_REPLY),
            op::SEND => {
                // Checked here so a bad body closes this connection, as any bad packet does.
                if !is_json_object(&p.body) {
                    return Err("op 4 body is not a JSON object".into());
                }
                return Ok(p.body);
            }
            op::AUTH => ("auth", op::AUTH_REPLY),
            op::SYNC => ("sync", op::SYNC_REPLY),
            op::ACK => ("ack", op::ACK_REPLY),
            other => return Err(format!("unknown operation {other}")),
        };
        let mut body = if p.op == op::HEARTBEAT && p.body.is_empty() {
            Map::new()
        } else {
            match serde_json::from_slice::<Value>(&p.body) {
                Ok(Value::Object(m)) => m,
                _ => return Err(format!("op {} body is not a JSON object", p.op)),
            }
        };
        body.insert("method".into(), method.into());
        if self.waiting() >= MAX_PENDING {
            return Err(format!("more than {MAX_PENDING} requests unanswered"));
        }
        self.pending.get_or_insert_default().push_back(Pending { method, reply_op, seq: p.seq, ver: p.ver });
        if p.op == op::AUTH {
            self.authed = true;
        }
        Ok(Bytes::from(Value::Object(body).to_string()))
    }

    /// The packet for one message from the hub; `true` when the connection closes after it.
    pub fn response(&mut self, msg: &Message) -> Result<(Packet, bool), String> {
        let payload = super::client::payload(msg)?;
        let push = || Ok((Packet::new(op::PUSH, 0, payload.clone()), false));
        let Some(pending) = self.pending.as_mut() else { return push() };
        #[derive(Deserialize)]
        struct Head {
            method: Option<String>,
            code: Option<serde::de::IgnoredAny>,
            online: Option<i64>,
        }
        let Ok(head) = serde_json::from_slice::<Head>(&payload) else { return push() };
        let Some(i) = head.method.as_deref().and_then(|m| pending.iter().position(|p| p.method == m)) else { return push() };
        let Some(req) = pending.remove(i) else { return push() };
        // Answered all: the queue goes, so an idle agent keeps none (its auth's grew one of
        // four slots, 128 bytes of every goim connection for its life; massif).
        if pending.is_empty() {
            self.pending = None;
        }
        let body = if req.reply_op == op::HEARTBEAT_REPLY {
            let online = head.online.unwrap_or(0).clamp(0, i32::MAX as i64) as i32;
            Bytes::copy_from_slice(&online.to_be_bytes())
        } else {
            payload
        };
        let refused_auth = req.reply_op == op::AUTH_REPLY && head.code.is_some();
        Ok((Packet { ver: req.ver, op: req.reply_op, seq: req.seq, body }, refused_auth))
    }
}

/// A JSON object, in UTF-8. Skipping a value (`IgnoredAny`) does not check the UTF-8 inside
/// strings, so that is checked first (found by fuzzing: `fuzz/regressions/goim_packets/`).
fn is_json_object(body: &[u8]) -> bool {
    std::str::from_utf8(body).is_ok()
        && body.trim_ascii_start().first() == Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

impl Wire for Goim {
    type Codec = GoimCodec;
    type Frame = Packet;
    type Error = crate::protocol::goim::CodecError;
    const NAME: &'static str = "goim";

    fn connection(&self) -> Self {
        Goim { max_packet: self.max_packet, authed: false, pending: None }
    }

    fn decoder(&self) -> GoimCodec {
        GoimCodec { max: self.max_packet() }
    }

    fn inbound(&mut self, p: Packet) -> Result<Bytes, String> {
        self.request(p)
    }

    fn outbound(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<bool, String> {
        let (packet, close) = self.response(msg)?;
        packet.encode(dst);
        Ok(close)
    }

    fn answered(&self) -> bool {
        self.pending.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Message {
        Message::Text(s.to_string().into())
    }

    #[test]
    fn auth_first_then_replies_match_their_requests() {
        let mut g = Goim::new(1 << 20);
        assert!(g.request(Packet::new(op::SEND, 1, &b"{}"[..])).is_err(), "nothing before auth");
        let auth = g.request(Packet::new(op::AUTH, 5, &br#"{"mid":"a1","token":"t"}"#[..])).expect("auth");
        let v: Value = serde_json::from_slice(&auth).expect("json");
        assert_eq!(v["method"], "auth");
        assert_eq!(v["mid"], "a1");
        g.request(Packet::new(op::HEARTBEAT, 6, Bytes::new())).expect("heartbeat");
        // A push that arrives while requests wait is still a push.
        let (p, close) = g.response(&text(r#"{"method":"say","content":"hi"}"#)).expect("push");
        assert_eq!((p.op, p.seq, close), (op::PUSH, 0, false));
        let (p, _) = g.response(&text(r#"{"method":"heartbeat","online":3}"#)).expect("beat");
        assert_eq!((p.op, p.seq, &p.body[..]), (op::HEARTBEAT_REPLY, 6, &3i32.to_be_bytes()[..]));
        let (p, close) = g.response(&text(r#"{"method":"auth","mid":"a1"}"#)).expect("auth reply");
        assert_eq!((p.op, p.seq, close), (op::AUTH_REPLY, 5, false));
        assert!(g.pending.is_none(), "nothing kept once all are answered");
    }

    #[test]
    fn refused_auth_closes_after_its_reply() {
        let mut g = Goim::new(1 << 20);
        g.request(Packet::new(op::AUTH, 1, &b"{}"[..])).expect("auth");
        let (p, close) = g.response(&text(r#"{"method":"auth","code":"10004","msg":"no"}"#)).expect("reply");
        assert_eq!((p.op, close), (op::AUTH_REPLY, true));
    }

    #[test]
    fn bad_packets_are_refused() {
        let mut g = Goim::new(1 << 20);
        assert!(g.request(Packet::new(op::AUTH, 1, &b"not json"[..])).is_err());
        g.request(Packet::new(op::AUTH, 1, &b"{}"[..])).expect("auth");
        assert!(g.request(Packet::new(op::SEND, 2, &b"[1,2]"[..])).is_err());
        assert!(g.request(Packet::new(op::SEND, 2, &b"{\"a\":"[..])).is_err());
        assert!(g.request(Packet::new(op::SEND, 2, &b"{\"a\":\"\x94\"}"[..])).is_err(), "invalid UTF-8 in a string");
        assert!(g.request(Packet::new(99, 2, &b"{}"[..])).is_err());
        for i in 0..MAX_PENDING - 1 {
            g.request(Packet::new(op::HEARTBEAT, i as i32, Bytes::new())).expect("room for it");
        }
        assert!(g.request(Packet::new(op::HEARTBEAT, 0, Bytes::new())).is_err(), "a client that never reads is cut off");
    }
}
