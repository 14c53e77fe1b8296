//! Plain HTTP on the client port: a GET that is not a WebSocket upgrade is answered from the
//! web assets (the visitor widget, the agent console), so the pages live at the same address
//! the browser then opens its WebSocket to. The request head is read here first and, for an
//! upgrade, handed to the WebSocket listener to judge.

use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Looks up an asset by path: `(content type, body)`.
pub type Assets = Arc<dyn Fn(&str) -> Option<(&'static str, Bytes)> + Send + Sync>;

/// Largest request head accepted (the WebSocket handshake included).
const MAX_HEAD: usize = 16 * 1024;

/// What the first request on a connection is.
pub enum Head {
    /// A WebSocket upgrade (or anything the handshake should judge): replay these bytes.
    Upgrade(Bytes),
    /// A plain GET for `path`.
    Get(String),
    /// A request to the HTTP long-polling fallback (`/poll...`).
    Poll(super::poll::Request),
    /// Not HTTP, too long, or the peer left.
    Bad(&'static str),
}

/// Reads until the end of the request head.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Head {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Head::Bad("connection closed before the request head"),
            Ok(_) => {}
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let upgrade = req
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("upgrade") && String::from_utf8_lossy(h.value).to_ascii_lowercase().contains("websocket"));
                let path = req.path.unwrap_or("/");
                if !upgrade && (path == "/poll" || path.starts_with("/poll?") || path.starts_with("/poll/")) {
                    return match super::poll::Request::parse(&req) {
                        Ok(mut r) => {
                            r.body = buf.split_off(n);
                            Head::Poll(r)
                        }
                        Err(why) => Head::Bad(why),
                    };
                }
                if upgrade || req.method != Some("GET") {
                    return Head::Upgrade(buf.freeze());
                }
                return Head::Get(req.path.unwrap_or("/").to_string());
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => return Head::Bad("request head too long"),
            Err(_) => return Head::Bad("not HTTP"),
        }
    }
}

/// Answers a plain GET and closes.
pub async fn respond<S: AsyncWrite + Unpin>(mut stream: S, path: &str, assets: Option<&Assets>) {
    let path = path.split('?').next().unwrap_or("/");
    let found = assets.and_then(|a| a(path));
    let (status, kind, body) = match found {
        Some((kind, body)) => ("200 OK", kind, body),
        None => ("404 Not Found", "text/plain; charset=utf-8", Bytes::from_static(b"not found\n")),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\ncache-control: no-cache\r\n\
         x-content-type-options: nosniff\r\nreferrer-policy: no-referrer\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}
