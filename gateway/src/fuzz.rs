//! The bodies of the fuzz targets (`fuzz/`), kept here so the regression tests run exactly the
//! same checks on every input a fuzzer ever found (`fuzz/regressions/<target>/`). Each must
//! never panic, whatever the bytes.

use crate::protocol::php::{self, Value};
use crate::protocol::websocket_connect;
use crate::protocol::{Command, Packet};
use bytes::BytesMut;

/// Inner packets: frame, decode to a command; a decoded command re-encodes to a packet that
/// decodes to the same command.
pub fn inner_packets(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(p)) = Packet::decode(&mut buf, 1 << 20) {
        if let Ok(cmd) = Command::from_packet(p) {
            let again = cmd.clone().into_packet().to_bytes();
            let mut b = BytesMut::from(&again[..]);
            let decoded = Packet::decode(&mut b, usize::MAX).ok().flatten().map(Command::from_packet);
            if let Some(Ok(c2)) = decoded {
                assert_eq!(c2, cmd, "re-encoding changed the command");
            }
        }
    }
}

/// Register lines.
pub fn register_line(data: &[u8]) {
    let _ = register::Line::decode(data);
}

/// PHP serialize: what parses re-serializes to something that parses to the same value;
/// `php::fields` and a `php::Index` answer as unserialize then a lookup, and each slice an
/// index gives unserializes to the value looked up; `php::array_has_str` finds what a search
/// of the unserialized values finds; the session merge never panics on any pair.
pub fn session(data: &[u8]) {
    if let Ok(v) = Value::unserialize(data) {
        let again = Value::unserialize(&v.serialize()).expect("our own output parses");
        if !format!("{v:?}").contains("NaN") {
            assert_eq!(again, v);
        }
    }
    let keys = ["role", "id", "0", "-1"];
    let found = php::fields(data, keys);
    match Value::unserialize(data) {
        Ok(Value::Array(a)) => {
            let found = found.expect("fields refused what unserialize took");
            for (f, k) in found.iter().zip(keys) {
                match (f, a.get(&php::Key::from_bytes(k.as_bytes()))) {
                    (None, None) => {}
                    (Some(php::Field::Str(s)), Some(Value::Str(t))) => assert_eq!(*s, t.as_slice()),
                    (Some(php::Field::Int(i)), Some(Value::Int(j))) => assert_eq!(i, j),
                    (Some(php::Field::Other), Some(v)) => assert!(!matches!(v, Value::Str(_) | Value::Int(_)), "fields skipped {v:?}"),
                    (f, v) => panic!("fields found {f:?} where unserialize has {v:?}"),
                }
            }
            let index = php::Index::of(data).expect("an index refused what unserialize took");
            for k in keys {
                let value = index.raw(data, k).map(|r| Value::unserialize(r).expect("a field's bytes are one value"));
                if !format!("{value:?}").contains("NaN") {
                    assert_eq!(value.as_ref(), a.get(&php::Key::from_bytes(k.as_bytes())), "an index's raw field under {k}");
                }
            }
        }
        _ => {
            assert!(found.is_none(), "fields took what unserialize refused");
            assert!(php::Index::of(data).is_none(), "an index took what unserialize refused");
        }
    }
    // An index reads as `fields` does; `array_has_str` as a search of the unserialized values
    // (for the first string value found, and one unlikely to be there).
    if let Some(index) = php::Index::of(data) {
        assert_eq!(Some(index.fields(data, keys)), found, "an index's fields");
    }
    if let Ok(Value::Array(a)) = Value::unserialize(data) {
        let first = a.values().find_map(|v| if let Value::Str(s) = v { Some(s.clone()) } else { None });
        for item in first.iter().map(Vec::as_slice).chain([&b"\xff-none"[..]]) {
            let has = a.values().any(|v| matches!(v, Value::Str(s) if s == item));
            assert_eq!(php::array_has_str(data, item), has, "array_has_str {item:?}");
        }
    } else {
        assert!(!php::array_has_str(data, b""), "array_has_str in what unserialize refused");
    }
    let mid = data.len() / 2;
    let _ = php::merge_session(&data[..mid], &data[mid..]);
}

/// What a client controls in its upgrade request: the query string and the cookies.
pub fn query_string(data: &[u8]) {
    let _ = websocket_connect::parse_str(data);
    let _ = websocket_connect::urldecode(data);
}

/// goim packets from a client: framing, the request each becomes (JSON the hub forwards), and
/// the wrapping of arbitrary worker messages as replies or pushes.
pub fn goim_packets(data: &[u8]) {
    use crate::listen::goim::Goim;
    use crate::protocol::goim::{self, op};
    let mut g = Goim::new(1 << 20);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(p)) = goim::Packet::decode(&mut buf, 1 << 20) {
        let body = p.body.clone();
        if let Ok(json) = g.request(p) {
            assert!(serde_json::from_slice::<serde_json::Value>(&json).is_ok(), "a forwarded request is JSON");
        }
        // Whatever a worker answers, it becomes one packet (a reply or a push).
        let text = String::from_utf8_lossy(&body).into_owned();
        if let Ok((packet, _)) = g.response(&tokio_tungstenite::tungstenite::Message::Text(text.into())) {
            assert!(matches!(packet.op, op::PUSH | op::AUTH_REPLY | op::HEARTBEAT_REPLY | op::SYNC_REPLY | op::ACK_REPLY));
        }
    }
}

/// WebSocket frames from a client, cut at every place the first byte says: the same messages or
/// the same fault whether the bytes come at once or in pieces, none over the limit, every text
/// message valid UTF-8, and every fault a close code RFC 6455 allows.
pub fn websocket_frames(data: &[u8]) {
    use crate::protocol::websocket::{Decoder, Incoming};
    const MAX: usize = 4096;
    let run = |step: usize| {
        let mut d = Decoder::new(MAX);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in data.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(m)) => out.push(Ok(m)),
                    Ok(None) => break,
                    Err(f) => {
                        out.push(Err(f));
                        return out;
                    }
                }
            }
        }
        out
    };
    let whole = run(data.len());
    let pieces = run(data.first().map_or(1, |b| *b as usize % 7 + 1));
    assert_eq!(whole, pieces, "the messages depend on how the bytes were cut");
    for m in &whole {
        match m {
            Ok(Incoming::Text(t)) => assert!(t.len() <= MAX && std::str::from_utf8(t).is_ok()),
            Ok(Incoming::Binary(b)) => assert!(b.len() <= MAX),
            Ok(Incoming::Ping(p)) => assert!(p.len() <= 125),
            Ok(_) => {}
            Err(f) => assert!(matches!(f.close().0, 1002 | 1007 | 1009)),
        }
    }
}
