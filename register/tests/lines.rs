//! The register's JSON lines against the golden vectors (copied into the gateway's test data).

use register::protocol::{bad_request_reply, Line, LineError};
use serde_json::Value as J;

fn register_vectors() -> Vec<J> {
    let raw = include_str!("../../gateway/tests/data/gatewayworker-vectors.json");
    let v: J = serde_json::from_str(raw).expect("parse");
    v["vectors"].as_array().expect("list").iter().filter(|v| v["kind"] == "register_line").cloned().collect()
}

#[test]
fn lines_decode_and_encode_like_php() {
    let vs = register_vectors();
    assert!(vs.len() >= 16);
    for v in vs {
        let name = v["name"].as_str().unwrap_or("?");
        let wire = hex::decode(v["hex"].as_str().expect("hex")).expect("hex");
        let line = &wire[..wire.len() - 1];
        match Line::decode(line) {
            Ok(l @ Line::BroadcastAddresses(_)) if name.contains("duplicate") => {
                // PHP's object form is read; we always write the deduplicated list form.
                assert_eq!(l, Line::BroadcastAddresses(vec!["10.9.9.9:2300".into(), "10.9.9.9:2301".into()]));
            }
            Ok(l) => assert_eq!(l.encode().as_ref(), &wire[..], "{name}"),
            Err(LineError::BadRequest) if name.contains("quote") => {
                // A secret with a quote breaks PHP's concatenated JSON; we produce the same
                // bytes, and the register answers with the bad-request text.
                let secret = "p/é\"q";
                let rebuilt = if name.contains("gateway") {
                    Line::GatewayConnect { address: "127.0.0.1:2310".into(), secret_key: Some(secret.into()) }
                } else {
                    Line::WorkerConnect { secret_key: Some(secret.into()) }
                };
                assert_eq!(rebuilt.encode().as_ref(), &wire[..], "{name}");
            }
            Err(LineError::BadRequest) => {
                assert!(name.starts_with("register_bad_request_reply"), "{name}");
                let text = String::from_utf8_lossy(line);
                let inner = text
                    .strip_prefix("Bad request for Register service. Request info(IP:127.0.0.1, Request Buffer:")
                    .and_then(|r| r.strip_suffix("). See http://doc2.workerman.net/register-auth-timeout.html"))
                    .expect("template");
                assert_eq!(bad_request_reply("127.0.0.1", inner.as_bytes()).as_ref(), &wire[..]);
            }
            Err(LineError::UnknownEvent(e)) => assert!(name.contains("client_connect"), "{name}: {e}"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

#[test]
fn php_empty_events_are_bad_requests() {
    for l in [r#"{"event":""}"#, r#"{"event":"0"}"#, r#"{"event":0}"#, r#"{"event":null}"#, r#"{"event":[]}"#, "hello", "{}"] {
        assert_eq!(Line::decode(l.as_bytes()), Err(LineError::BadRequest), "{l}");
    }
    assert_eq!(Line::decode(b"{\"event\":\"ping\"}\r"), Ok(Line::Ping));
}
