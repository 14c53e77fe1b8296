//! The server side of RFC 6455 as a raw client sees it (the conformance set of issue #16): the
//! gateway frames WebSocket itself, so every rule a library would have kept is checked here, over
//! a real socket against a real gateway process.

mod common;

use common::raw_ws::{frame, masked, RawWs};
use common::*;
use serde_json::{json, Value};

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;
const MAX: usize = 100_000;

/// Sends a probe call (a `gateways` lookup tagged `tag`) as the given frames and returns the
/// answer's tag, answering nothing else; pongs seen on the way are returned too.
async fn answer(ws: &mut RawWs, frames: &[Vec<u8>]) -> (String, Vec<Vec<u8>>) {
    for f in frames {
        ws.send(f).await;
    }
    let mut pongs = Vec::new();
    loop {
        let (head, payload) = ws.read().await;
        assert_eq!(head & 0x70, 0, "no reserved bits in server frames");
        match head & 0x0f {
            PONG => pongs.push(payload),
            TEXT => {
                assert_eq!(head & FIN, FIN, "server messages are single frames");
                let v: Value = serde_json::from_slice(&payload).expect("JSON");
                if let Some(tag) = v["tag"].as_str() {
                    return (tag.to_string(), pongs);
                }
            }
            other => panic!("unexpected frame opcode {other}"),
        }
    }
}

fn call(tag: &str) -> Vec<u8> {
    json!({"call": "gateways", "args": [], "tag": tag}).to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_side_of_rfc_6455() {
    let small = small_cluster(210, &[], &["--max-message-size", &MAX.to_string()]).await;
    let url = small.gw.ws.clone();
    let mut good = RawWs::connect(&url).await;

    // Fragments make one message, a ping between them is answered at once with its payload,
    // and a character split across fragments is valid.
    let msg = call("t€");
    let euro = msg.windows(3).position(|w| w == "€".as_bytes()).expect("€ in the message");
    let frames = vec![masked(TEXT, &msg[..euro + 1]), masked(FIN | PING, b"p1"), masked(0, &msg[euro + 1..euro + 2]), masked(FIN, &msg[euro + 2..])];
    let (tag, pongs) = answer(&mut good, &frames).await;
    assert_eq!(tag, "t€");
    assert_eq!(pongs, vec![b"p1".to_vec()]);
    // A frame split across writes, byte by byte.
    let f = masked(FIN | TEXT, &call("split"));
    for b in &f {
        good.send(&[*b]).await;
    }
    assert_eq!(answer(&mut good, &[]).await.0, "split");

    // 16- and 64-bit lengths both ways: the tag comes back in the answer.
    for len in [300, 70_000] {
        let tag = "x".repeat(len);
        assert_eq!(answer(&mut good, &[masked(FIN | TEXT, &call(&tag))]).await.0, tag, "a {len}-byte tag");
    }
    // Binary frames carry messages too.
    assert_eq!(answer(&mut good, &[masked(FIN | BINARY, &call("bin"))]).await.0, "bin");

    // Each broken client is closed with the code RFC 6455 gives its fault.
    let too_big = vec![b'a'; MAX + 1];
    let half = vec![b'a'; MAX / 2 + 10];
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("an unmasked client frame", frame(FIN | TEXT, &call("u"), None), 1002),
        ("reserved bit 1 with no extension", masked(FIN | 0x40 | TEXT, &call("r")), 1002),
        ("reserved bit 3", masked(FIN | 0x10 | TEXT, &call("r")), 1002),
        ("a reserved data opcode", masked(FIN | 0x3, b"x"), 1002),
        ("a reserved control opcode", masked(FIN | 0xB, b"x"), 1002),
        ("a fragmented ping", masked(PING, b"x"), 1002),
        ("a ping of 126 bytes", masked(FIN | PING, &[0u8; 126]), 1002),
        ("a continuation with no message begun", masked(FIN, b"x"), 1002),
        ("a new message inside a fragmented one", [masked(TEXT, b"{"), masked(FIN | TEXT, b"}")].concat(), 1002),
        ("a close code that may not be sent", masked(FIN | CLOSE, &1005u16.to_be_bytes()), 1002),
        ("a one-byte close payload", masked(FIN | CLOSE, &[3]), 1002),
        ("invalid UTF-8", masked(FIN | TEXT, b"\xff\xfe"), 1007),
        ("invalid UTF-8 across fragments", [masked(TEXT, b"ab\xe2\x82"), masked(FIN, b"\x28")].concat(), 1007),
        ("a close reason that is not UTF-8", masked(FIN | CLOSE, &[0x03, 0xe8, 0xff]), 1007),
        ("a frame over the limit", masked(FIN | TEXT, &too_big), 1009),
        ("fragments adding up over the limit", [masked(BINARY, &half), masked(FIN, &half)].concat(), 1009),
    ];
    for (what, bytes, code) in cases {
        let mut bad = RawWs::connect(&url).await;
        bad.send(&bytes).await;
        assert_eq!(bad.expect_close().await, code, "{what}");
    }
    // A frame claiming 2^63 bytes is refused from its header.
    let mut bad = RawWs::connect(&url).await;
    let mut huge = vec![FIN | BINARY, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    bad.send(&huge).await;
    assert_eq!(bad.expect_close().await, 1009, "a 2^62-byte frame");

    // The close handshake (§5.5.1): the client's code comes back, then the server ends TCP;
    // an empty close is answered with 1000.
    let mut leaving = RawWs::connect(&url).await;
    leaving.send(&masked(FIN | CLOSE, &[&4001u16.to_be_bytes()[..], b"bye"].concat())).await;
    assert_eq!(leaving.expect_close().await, 4001);
    let mut leaving = RawWs::connect(&url).await;
    leaving.send(&masked(FIN | CLOSE, b"")).await;
    assert_eq!(leaving.expect_close().await, 1000);

    // Upgrades the server cannot take are answered in HTTP.
    let addr = url.trim_start_matches("ws://");
    for (req, status) in [
        (format!("GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\nSec-WebSocket-Version: 8\r\n\r\n"), "HTTP/1.1 426"),
        (format!("GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"), "HTTP/1.1 400"),
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut answer)).await.expect("answered and closed");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with(status), "{req:?} → {answer}");
        if status.ends_with("426") {
            assert!(answer.to_ascii_lowercase().contains("sec-websocket-version: 13"), "{answer}");
        }
    }

    // Nobody else noticed.
    assert_eq!(answer(&mut good, &[masked(FIN | TEXT, &call("still here"))]).await.0, "still here");
}

/// A client that stops reading while a burst far bigger than the socket's buffers is sent to it
/// gets all of it, in order, once it reads again: the connection must go back to its queue each
/// time the socket drains, not only when the client next sends something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pauses_reading_gets_the_whole_burst_after() {
    // The sender makes 300 calls as fast as they are answered: over the default message rate.
    let small = small_cluster(211, &[], &["--rate-limit", "0"]).await;
    let mut reader = Client::connect(&small.gw.ws).await;
    let mut sender = Client::connect(&small.gw.ws).await;
    let (n, size) = (300, 60_000);
    let body = "x".repeat(size);
    for i in 0..n {
        sender.call("send_to_client", json!([reader.id, format!("{i}:{body}")])).await;
    }
    for i in 0..n {
        match reader.raw_next(WAIT).await {
            Some(tokio_tungstenite::tungstenite::Message::Text(t)) => {
                assert!(t.starts_with(&format!("{i}:")) && t.len() == size + format!("{i}:").len(), "message {i} whole and in order")
            }
            other => panic!("message {i} of {n}: {other:?}"),
        }
    }
}
