//! The server side of WebSocket (RFC 6455): the upgrade answer, client frames in, server frames
//! out. Written here rather than taken whole from tungstenite so that an idle connection keeps no
//! buffer: tungstenite's stream holds a read buffer and a write buffer that keeps the capacity of
//! its largest burst for the connection's life (docs/BENCHMARKS.md, issue #16). A frame header is
//! still read by tungstenite's `FrameHeader` (and a forwarded raw frame's written by it), close
//! codes judged by its `CloseCode`; a server frame's few header bytes are written here. What
//! lives here is the message layer: masking, fragments, control frames, limits.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io::Cursor;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Why a handshake is refused: the HTTP answer the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: not a WebSocket upgrade RFC 6455 §4.2.1 accepts.
    BadRequest(&'static str),
    /// 426: a WebSocket version other than 13 (the answer names 13, §4.4).
    Version,
}

impl Refusal {
    /// The whole HTTP response, closing the connection.
    pub fn response(&self) -> Vec<u8> {
        match self {
            Refusal::BadRequest(why) => format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{why}\n",
                why.len() + 1
            )
            .into_bytes(),
            Refusal::Version => {
                b"HTTP/1.1 426 Upgrade Required\r\nsec-websocket-version: 13\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
            }
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadRequest(why) => why,
            Refusal::Version => "unsupported WebSocket version",
        }
    }
}

/// Checks a parsed request head is an upgrade this server accepts and returns its key.
pub fn upgrade_key<'h>(req: &httparse::Request<'h, '_>) -> Result<&'h [u8], Refusal> {
    if req.method != Some("GET") {
        return Err(Refusal::BadRequest("a WebSocket upgrade is a GET"));
    }
    if req.version != Some(1) {
        return Err(Refusal::BadRequest("a WebSocket upgrade needs HTTP/1.1"));
    }
    let header = |name: &'static str| header_values(req, name);
    let has_token = |name: &'static str, token: &str| {
        header(name).flat_map(|v| v.split(|c| *c == b',')).any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    if !has_token("upgrade", "websocket") {
        return Err(Refusal::BadRequest("no `Upgrade: websocket` header"));
    }
    if !has_token("connection", "upgrade") {
        return Err(Refusal::BadRequest("no `Connection: Upgrade` header"));
    }
    if !header("sec-websocket-version").any(|v| v.trim_ascii() == b"13") {
        return Err(Refusal::Version);
    }
    match header("sec-websocket-key").next().map(<[u8]>::trim_ascii) {
        Some(key) if !key.is_empty() => Ok(key),
        _ => Err(Refusal::BadRequest("no Sec-WebSocket-Key header")),
    }
}

/// The values of every header called `name` (any case), in arrival order.
pub fn header_values<'h, 'r>(req: &'r httparse::Request<'h, '_>, name: &'static str) -> impl Iterator<Item = &'h [u8]> + 'r {
    req.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

/// The 101 answer to an upgrade with `key`, naming `subprotocol` when one was chosen.
pub fn accept_response(key: &[u8], subprotocol: Option<&str>) -> Vec<u8> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    let mut r = format!("HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: {accept}\r\n");
    if let Some(p) = subprotocol {
        r.push_str(&format!("sec-websocket-protocol: {p}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// A client broke the protocol: the connection closes with `code()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("message of {0} bytes or more is over the limit")]
    TooBig(u64),
    #[error("invalid UTF-8 in a text message or close reason")]
    Utf8,
}

impl Fault {
    /// The close code (RFC 6455 §7.4.1) and the reason the client reads.
    pub fn close(&self) -> (u16, &'static str) {
        match self {
            Fault::Protocol(_) => (1002, "protocol error"),
            Fault::TooBig(_) => (1009, "message too big"),
            Fault::Utf8 => (1007, "invalid UTF-8 in a text frame"),
        }
    }
}

/// What a client sent, a whole message at a time.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    Close(Option<CloseFrame>),
}

/// A data message whose first fragments arrived.
#[derive(Debug)]
struct Partial {
    text: bool,
    data: BytesMut,
    /// How much of a text message's `data` is known to be valid UTF-8 so far.
    checked: usize,
}

/// Reads client frames into messages. Holds nothing between messages but the limit (a
/// fragmented message in progress is boxed: it lives in every connection's task otherwise).
#[derive(Debug)]
pub struct Decoder {
    max: usize,
    partial: Option<Box<Partial>>,
}

impl Decoder {
    /// A decoder refusing messages (and frames) over `max` bytes.
    pub fn new(max: usize) -> Decoder {
        Decoder { max, partial: None }
    }

    /// The next whole message in `buf`, taking its bytes out; `Ok(None)` when more bytes are
    /// needed. A frame's length is checked before its payload is waited for, so a client
    /// cannot make the server hold more than the limit; nothing is reserved for a length a
    /// client claims, the buffer grows only with bytes that arrive.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, Fault> {
        loop {
            let mut cursor = Cursor::new(&buf[..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(_) => return Err(Fault::Protocol("bad frame header")),
            };
            let start = cursor.position() as usize;
            check(&header, len)?;
            // A 64-bit length may be anything up to 2^64 - 1: added with care, it is only reported.
            let so_far = self.partial.as_ref().map_or(0, |p| p.data.len() as u64);
            let total = so_far.saturating_add(len);
            if total > self.max as u64 {
                return Err(Fault::TooBig(total));
            }
            let len = len as usize; // ≤ max, a usize
            if buf.len() < start + len {
                return Ok(None);
            }
            buf.advance(start);
            let mut payload = buf.split_to(len);
            if let Some(mask) = header.mask {
                unmask(&mut payload, mask);
            }
            match header.opcode {
                OpCode::Control(Control::Close) => return close_frame(payload.freeze()).map(|f| Some(Incoming::Close(f))),
                OpCode::Control(Control::Ping) => return Ok(Some(Incoming::Ping(payload.freeze()))),
                OpCode::Control(Control::Pong) => return Ok(Some(Incoming::Pong)),
                OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => return Err(Fault::Protocol("reserved opcode")),
                OpCode::Data(Data::Continue) => {
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(Fault::Protocol("a continuation frame with no message begun"));
                    };
                    partial.data.extend_from_slice(&payload);
                    if partial.text {
                        partial.checked = utf8_prefix(&partial.data, partial.checked)?;
                    }
                    if header.is_final {
                        let Some(p) = self.partial.take() else { return Ok(None) };
                        let Partial { text, data, .. } = *p;
                        return whole(text, data.freeze()).map(Some);
                    }
                }
                OpCode::Data(kind) => {
                    if self.partial.is_some() {
                        return Err(Fault::Protocol("a new message inside a fragmented one"));
                    }
                    let text = kind == Data::Text;
                    if header.is_final {
                        return whole(text, payload.freeze()).map(Some);
                    }
                    let checked = if text { utf8_prefix(&payload, 0)? } else { 0 };
                    self.partial = Some(Box::new(Partial { text, data: payload, checked }));
                }
            }
        }
    }
}

/// RFC 6455 §5.2, §5.5: what no client frame may be.
fn check(header: &FrameHeader, len: u64) -> Result<(), Fault> {
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(Fault::Protocol("reserved bits set (no extension was agreed)"));
    }
    if header.mask.is_none() {
        return Err(Fault::Protocol("an unmasked client frame"));
    }
    if let OpCode::Control(_) = header.opcode {
        if !header.is_final {
            return Err(Fault::Protocol("a fragmented control frame"));
        }
        if len > 125 {
            return Err(Fault::Protocol("a control frame over 125 bytes"));
        }
    }
    Ok(())
}

fn whole(text: bool, data: Bytes) -> Result<Incoming, Fault> {
    if !text {
        return Ok(Incoming::Binary(data));
    }
    std::str::from_utf8(&data).map_err(|_| Fault::Utf8)?;
    Ok(Incoming::Text(data))
}

/// How much of `data` is valid UTF-8, given the first `from` bytes are: an error only when the
/// bytes cannot become valid, so a character split across fragments is waited for.
fn utf8_prefix(data: &[u8], from: usize) -> Result<usize, Fault> {
    match std::str::from_utf8(&data[from..]) {
        Ok(_) => Ok(data.len()),
        Err(e) if e.error_len().is_none() => Ok(from + e.valid_up_to()),
        Err(_) => Err(Fault::Utf8),
    }
}

/// A close frame's payload: empty, or a code that may be sent (§7.4) and a UTF-8 reason.
fn close_frame(payload: Bytes) -> Result<Option<CloseFrame>, Fault> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(Fault::Protocol("a close frame with a one-byte payload")),
        _ => {
            let code = CloseCode::from(u16::from_be_bytes([payload[0], payload[1]]));
            if !code.is_allowed() {
                return Err(Fault::Protocol("a close code that may not be sent"));
            }
            let reason = Utf8Bytes::try_from(payload.slice(2..)).map_err(|_| Fault::Utf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends `msg` as one unmasked server frame.
pub fn encode(msg: &Message, dst: &mut BytesMut) {
    match msg {
        Message::Text(t) => frame(dst, OpCode::Data(Data::Text), t.as_bytes()),
        Message::Binary(b) => frame(dst, OpCode::Data(Data::Binary), b),
        Message::Ping(p) => frame(dst, OpCode::Control(Control::Ping), p),
        Message::Pong(p) => frame(dst, OpCode::Control(Control::Pong), p),
        Message::Close(None) => frame(dst, OpCode::Control(Control::Close), b""),
        Message::Close(Some(c)) => {
            // A control frame's payload is at most 125 bytes: a longer reason is cut at a
            // character boundary.
            let mut reason = c.reason.as_str();
            while reason.len() > 123 {
                let mut end = 123;
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                reason = &reason[..end];
            }
            let mut payload = Vec::with_capacity(2 + reason.len());
            payload.extend_from_slice(&u16::from(c.code).to_be_bytes());
            payload.extend_from_slice(reason.as_bytes());
            frame(dst, OpCode::Control(Control::Close), &payload);
        }
        Message::Frame(f) => raw(f, dst),
    }
}

/// A whole server frame: FIN, no reserved bits, unmasked, the length in its shortest form
/// (RFC 6455 §5.2). Written by hand, not through `FrameHeader::format`'s `io::Write`: this runs
/// once per member for every group message, where framing (this and the buffer's growth) was a
/// quarter of the gateway's instructions per delivery.
fn frame(dst: &mut BytesMut, opcode: OpCode, payload: &[u8]) {
    let len = payload.len();
    dst.reserve(10 + len);
    dst.put_u8(0x80 | u8::from(opcode));
    if len < 126 {
        dst.put_u8(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        dst.put_u8(126);
        dst.put_u16(short);
    } else {
        dst.put_u8(127);
        dst.put_u64(len as u64);
    }
    dst.extend_from_slice(payload);
}

/// A pre-framed message (FLAG_NOT_CALL_ENCODE) goes out as the frame it is.
fn raw(f: &Frame, dst: &mut BytesMut) {
    raw_header(f.header(), f.payload(), dst);
}

fn raw_header(header: &FrameHeader, payload: &[u8], dst: &mut BytesMut) {
    dst.reserve(header.len(payload.len() as u64) + payload.len());
    // Writing into memory cannot fail.
    let _ = header.format(payload.len() as u64, &mut dst.writer());
    dst.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame, masked unless `mask` is None; `bits` is the first byte's reserved bits
    /// and opcode. The header is written by tungstenite's own writer, a check on the reader here
    /// that shares nothing with it.
    fn client_frame(fin: bool, bits: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let header = FrameHeader {
            is_final: fin,
            rsv1: bits & 0x40 != 0,
            rsv2: bits & 0x20 != 0,
            rsv3: bits & 0x10 != 0,
            opcode: OpCode::from(bits & 0x0f),
            mask,
        };
        let mut out = Vec::new();
        header.format(payload.len() as u64, &mut out).expect("a header written into memory");
        let mut body = payload.to_vec();
        if let Some(k) = mask {
            unmask(&mut body, k);
        }
        out.extend_from_slice(&body);
        out
    }

    const K: Option<[u8; 4]> = Some([1, 2, 3, 4]);

    fn decode_all(max: usize, bytes: &[u8]) -> Vec<Result<Incoming, Fault>> {
        let mut d = Decoder::new(max);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf) {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    #[test]
    fn fragments_join_and_control_frames_pass_between_them() {
        let mut bytes = client_frame(false, 1, "hé".as_bytes(), K);
        bytes.extend(client_frame(true, 9, b"p", K));
        bytes.extend(client_frame(false, 0, b"llo ", K));
        bytes.extend(client_frame(true, 0, b"world", K));
        let got = decode_all(1024, &bytes);
        assert_eq!(got, vec![Ok(Incoming::Ping(Bytes::from_static(b"p"))), Ok(Incoming::Text(Bytes::from("héllo world")))]);
    }

    #[test]
    fn a_frame_arriving_a_byte_at_a_time_is_one_message() {
        let bytes = client_frame(true, 2, &[7u8; 300], K);
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = d.decode(&mut buf).expect("no fault");
            assert_eq!(got.is_some(), i == bytes.len() - 1);
        }
    }

    #[test]
    fn utf8_split_across_fragments_is_valid_and_bad_utf8_is_1007() {
        let euro = "€".as_bytes();
        let mut bytes = client_frame(false, 1, &euro[..1], K);
        bytes.extend(client_frame(true, 0, &euro[1..], K));
        assert_eq!(decode_all(64, &bytes), vec![Ok(Incoming::Text(Bytes::from("€")))]);
        // Invalid in a later fragment, with the message not finished: refused at once.
        let mut bytes = client_frame(false, 1, &euro[..2], K);
        bytes.extend(client_frame(false, 0, b"\xff", K));
        assert_eq!(decode_all(64, &bytes), vec![Err(Fault::Utf8)]);
        // A character cut off by the final fragment.
        let mut bytes = client_frame(false, 1, b"a", K);
        bytes.extend(client_frame(true, 0, &euro[..2], K));
        assert_eq!(decode_all(64, &bytes), vec![Err(Fault::Utf8)]);
        assert_eq!(decode_all(64, &client_frame(true, 1, b"\xff\xfe", K)), vec![Err(Fault::Utf8)]);
        assert_eq!(Fault::Utf8.close().0, 1007);
    }

    #[test]
    fn protocol_errors_are_1002() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (client_frame(true, 1, b"x", None), "unmasked"),
            (client_frame(true, 0x1 | 0x40, b"x", K), "rsv1"),
            (client_frame(true, 0x1 | 0x10, b"x", K), "rsv3"),
            (client_frame(true, 3, b"x", K), "reserved data opcode"),
            (client_frame(true, 0xb, b"x", K), "reserved control opcode"),
            (client_frame(false, 9, b"x", K), "fragmented ping"),
            (client_frame(true, 9, &[0u8; 126], K), "long ping"),
            (client_frame(true, 0, b"x", K), "continuation first"),
            ([client_frame(false, 1, b"x", K), client_frame(true, 1, b"y", K)].concat(), "new message inside one"),
            (client_frame(true, 8, &[3], K), "one-byte close"),
            (client_frame(true, 8, &999u16.to_be_bytes(), K), "close code 999"),
            (client_frame(true, 8, &1005u16.to_be_bytes(), K), "close code 1005"),
            (client_frame(true, 8, &5000u16.to_be_bytes(), K), "close code 5000"),
        ];
        for (bytes, what) in cases {
            let got = decode_all(1024, &bytes);
            assert!(matches!(got.last(), Some(Err(f)) if f.close().0 == 1002), "{what}: {got:?}");
        }
    }

    #[test]
    fn lengths_of_16_and_64_bits_and_the_limit() {
        let big = vec![b'a'; 70_000];
        assert_eq!(decode_all(100_000, &client_frame(true, 1, &big[..300], K)), vec![Ok(Incoming::Text(Bytes::from(vec![b'a'; 300])))]);
        assert_eq!(decode_all(100_000, &client_frame(true, 1, &big, K)), vec![Ok(Incoming::Text(Bytes::from(big.clone())))]);
        // Over the limit: refused from the header alone, before the payload comes.
        let header_only = &client_frame(true, 2, &big, K)[..14];
        assert_eq!(decode_all(65_536, header_only), vec![Err(Fault::TooBig(70_000))]);
        // A 64-bit length no machine holds.
        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&u64::MAX.to_be_bytes()[..]);
        huge.extend_from_slice(&[1, 2, 3, 4]);
        let got = decode_all(65_536, &huge);
        assert!(matches!(got.last(), Some(Err(_))), "{got:?}");
        // The same length on a continuation: what came before plus it is past any u64 (the
        // fuzzer's find: the sum overflowed while being reported).
        let mut after_a_fragment = client_frame(false, 2, b"x", K);
        after_a_fragment.extend_from_slice(&[0x80, 0xff]);
        after_a_fragment.extend_from_slice(&u64::MAX.to_be_bytes()[..]);
        after_a_fragment.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(decode_all(65_536, &after_a_fragment), vec![Err(Fault::TooBig(u64::MAX))]);
        // Fragments adding up past the limit.
        let mut bytes = client_frame(false, 2, &big[..40_000], K);
        bytes.extend(client_frame(true, 0, &big[..40_000], K));
        assert_eq!(decode_all(65_536, &bytes), vec![Err(Fault::TooBig(80_000))]);
        assert_eq!(Fault::TooBig(1).close().0, 1009);
    }

    #[test]
    fn close_frames_carry_their_code_and_reason() {
        let mut payload = 1001u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let got = decode_all(64, &client_frame(true, 8, &payload, K));
        assert_eq!(got, vec![Ok(Incoming::Close(Some(CloseFrame { code: CloseCode::Away, reason: "bye".into() })))]);
        assert_eq!(decode_all(64, &client_frame(true, 8, b"", K)), vec![Ok(Incoming::Close(None))]);
        let mut bad = 1000u16.to_be_bytes().to_vec();
        bad.push(0xff);
        assert_eq!(decode_all(64, &client_frame(true, 8, &bad, K)), vec![Err(Fault::Utf8)]);
    }

    #[test]
    fn server_frames_are_unmasked_and_read_back_by_tungstenite() {
        let long = "x".repeat(70_000);
        let reason = "é".repeat(100);
        let msgs = vec![
            Message::Text("hi".into()),
            Message::Binary(Bytes::from(vec![1u8; 300])),
            Message::Text(long.clone().into()),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Close(Some(CloseFrame { code: CloseCode::Policy, reason: reason.as_str().into() })),
        ];
        let mut buf = BytesMut::new();
        for m in &msgs {
            encode(m, &mut buf);
        }
        let mut cursor = Cursor::new(&buf[..]);
        let mut seen = Vec::new();
        while let Ok(Some((h, len))) = FrameHeader::parse(&mut cursor) {
            assert!(h.mask.is_none() && h.is_final);
            let at = cursor.position() as usize;
            seen.push((h.opcode, buf[at..at + len as usize].to_vec()));
            cursor.set_position(at as u64 + len);
        }
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[0], (OpCode::Data(Data::Text), b"hi".to_vec()));
        // Each length in its shortest form: 7 bits, then 16, then 64.
        assert_eq!(&buf[..2], &[0x81, 2]);
        assert_eq!(&buf[4..8], &[0x82, 126, 1, 44]);
        assert_eq!(&buf[308..318], &[0x81, 127, 0, 0, 0, 0, 0, 1, 17, 112]);
        assert_eq!(seen[2].1.len(), 70_000);
        let close = &seen[4].1;
        assert!(close.len() <= 125 && std::str::from_utf8(&close[2..]).is_ok(), "close payload cut at a character");
        assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1008);
    }

    #[test]
    fn the_upgrade_is_checked() {
        let parse = |head: &str| -> Result<Vec<u8>, Refusal> {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            req.parse(head.as_bytes()).expect("parses");
            upgrade_key(&req).map(<[u8]>::to_vec)
        };
        let ok = "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert_eq!(parse(ok), Ok(b"dGhlIHNhbXBsZSBub25jZQ==".to_vec()));
        assert_eq!(parse(&ok.replace("Version: 13", "Version: 8")), Err(Refusal::Version));
        assert!(matches!(parse(&ok.replace("GET", "POST")), Err(Refusal::BadRequest(_))));
        assert!(matches!(parse(&ok.replace("HTTP/1.1", "HTTP/1.0")), Err(Refusal::BadRequest(_))));
        assert!(matches!(parse(&ok.replace("keep-alive, Upgrade", "keep-alive")), Err(Refusal::BadRequest(_))));
        assert!(matches!(parse(&ok.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")), Err(Refusal::BadRequest(_))));
        // RFC 6455 §1.3's example.
        let r = String::from_utf8(accept_response(b"dGhlIHNhbXBsZSBub25jZQ==", Some("goim"))).expect("ascii");
        assert!(r.starts_with("HTTP/1.1 101 ") && r.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{r}");
        assert!(r.contains("sec-websocket-protocol: goim\r\n") && r.ends_with("\r\n\r\n"));
    }
}
