//! A WebSocket client written byte by byte, for what a library client will not send: frames
//! split anywhere, unmasked frames, reserved bits, bad UTF-8, a ping between fragments.

use super::WAIT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawWs {
    pub s: TcpStream,
}

/// A frame as a client sends it (masked unless `mask` is None): `head` is the first byte
/// (FIN, reserved bits, opcode).
pub fn frame(head: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let m = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![head];
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n < 65536 => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked frame (the usual case).
pub fn masked(head: u8, payload: &[u8]) -> Vec<u8> {
    frame(head, payload, Some([0x11, 0x22, 0x33, 0x44]))
}

impl RawWs {
    /// Connects to `ws://host:port`, upgrades, and returns the 101 response's head.
    pub async fn upgrade(url: &str, extra_headers: &str) -> (RawWs, String) {
        let addr = url.trim_start_matches("ws://").trim_end_matches('/');
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("upgrade");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tokio::time::timeout(WAIT, s.read_u8()).await.expect("response in time").expect("response head"));
        }
        (RawWs { s }, String::from_utf8_lossy(&head).into_owned())
    }

    /// Upgrades and reads the probe worker's hello (a text frame).
    pub async fn connect(url: &str) -> RawWs {
        let (mut ws, head) = RawWs::upgrade(url, "").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let (op, _) = ws.read().await;
        assert_eq!(op, 0x81, "the hello is one text frame");
        ws
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write");
    }

    /// One frame from the server: `(first byte, payload)`. Server frames are never masked.
    pub async fn read(&mut self) -> (u8, Vec<u8>) {
        tokio::time::timeout(WAIT, async {
            let mut head = [0u8; 2];
            self.s.read_exact(&mut head).await.expect("frame head");
            assert_eq!(head[1] & 0x80, 0, "a server frame is not masked");
            let mut len = (head[1] & 0x7f) as usize;
            if len == 126 {
                len = self.s.read_u16().await.expect("length") as usize;
            } else if len == 127 {
                len = self.s.read_u64().await.expect("length") as usize;
            }
            let mut payload = vec![0u8; len];
            self.s.read_exact(&mut payload).await.expect("payload");
            (head[0], payload)
        })
        .await
        .expect("a frame in time")
    }

    /// Reads frames until a close frame, and returns its code; then the server ends TCP.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let (head, payload) = self.read().await;
            if head & 0x0f == 0x8 {
                assert!(payload.len() >= 2, "the close frame carries a code");
                let mut rest = Vec::new();
                let n = tokio::time::timeout(WAIT, self.s.read_to_end(&mut rest)).await.expect("then the server closes TCP").unwrap_or(0);
                assert_eq!(n, 0, "nothing after the close frame");
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }
}
