//! goim's binary packets, for mobile apps and IM clients built for goim (and the OpenResty IM
//! servers that copied its format). Both directions, big-endian:
//!
//! ```text
//! package length i32 (the whole packet) | header length i16 (16) | version i16 | operation i32 | sequence i32 | body
//! ```
//!
//! The codec only frames; what each operation means to the chat is `listen::goim`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The fixed header: every packet's header length must be exactly this.
pub const HEADER_LEN: usize = 16;

/// Operations (see docs/protocol.md, "goim packets").
pub mod op {
    pub const HEARTBEAT: i32 = 2;
    pub const HEARTBEAT_REPLY: i32 = 3;
    pub const SEND: i32 = 4;
    pub const PUSH: i32 = 5;
    pub const AUTH: i32 = 7;
    pub const AUTH_REPLY: i32 = 8;
    pub const SYNC: i32 = 14;
    pub const SYNC_REPLY: i32 = 15;
    pub const ACK: i32 = 16;
    pub const ACK_REPLY: i32 = 17;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub ver: i16,
    pub op: i32,
    pub seq: i32,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("package length {0} is under the header length")]
    TooShort(i64),
    #[error("package length {len} is over the maximum {max}")]
    TooLong { len: i64, max: usize },
    #[error("header length {0} (expected 16)")]
    HeaderLen(i16),
}

impl Packet {
    pub fn new(op: i32, seq: i32, body: impl Into<Bytes>) -> Packet {
        Packet { ver: 1, op, seq, body: body.into() }
    }

    /// The whole packet's length, header included.
    fn wire_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.wire_len());
        dst.put_i32(self.wire_len() as i32);
        dst.put_i16(HEADER_LEN as i16);
        dst.put_i16(self.ver);
        dst.put_i32(self.op);
        dst.put_i32(self.seq);
        dst.put_slice(&self.body);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.wire_len());
        self.encode(&mut b);
        b.freeze()
    }

    /// Takes one whole packet off the front of `src`, if it holds one. A bad length is an
    /// error at once, before any body arrives, so a liar cannot make us wait or buffer.
    pub fn decode(src: &mut BytesMut, max: usize) -> Result<Option<Packet>, PacketError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([src[0], src[1], src[2], src[3]]) as i64;
        if len < HEADER_LEN as i64 {
            return Err(PacketError::TooShort(len));
        }
        if len as u64 > max as u64 {
            return Err(PacketError::TooLong { len, max });
        }
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let header_len = i16::from_be_bytes([src[4], src[5]]);
        if header_len as usize != HEADER_LEN {
            return Err(PacketError::HeaderLen(header_len));
        }
        let len = len as usize;
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        let mut head = src.split_to(HEADER_LEN);
        head.advance(6); // package and header length, checked above
        let ver = head.get_i16();
        let op = head.get_i32();
        let seq = head.get_i32();
        let body = src.split_to(len - HEADER_LEN).freeze();
        Ok(Some(Packet { ver, op, seq, body }))
    }
}

/// Frames goim packets on a byte stream (raw TCP).
#[derive(Debug, Clone)]
pub struct GoimCodec {
    pub max: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Packet(#[from] PacketError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Decoder for GoimCodec {
    type Item = Packet;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        Ok(Packet::decode(src, self.max)?)
    }
}

impl Encoder<Packet> for GoimCodec {
    type Error = CodecError;

    fn encode(&mut self, p: Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        p.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Packet>, PacketError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(p) = Packet::decode(&mut buf, max)? {
            out.push(p);
        }
        Ok(out)
    }

    #[test]
    fn heartbeat_bytes_as_documented() {
        let p = Packet { ver: 1, op: op::HEARTBEAT, seq: 7, body: Bytes::new() };
        assert_eq!(hex::encode(p.to_bytes()), "00000010 0010 0001 00000002 00000007".replace(' ', ""));
        let reply = Packet { ver: 1, op: op::HEARTBEAT_REPLY, seq: 7, body: Bytes::from(3i32.to_be_bytes().to_vec()) };
        assert_eq!(hex::encode(reply.to_bytes()), "00000014001000010000000300000007 00000003".replace(' ', ""));
    }

    #[test]
    fn round_trip_and_split_reads() {
        let a = Packet::new(op::SEND, 1, &b"{\"method\":\"say\"}"[..]);
        let b = Packet::new(op::AUTH, 2, &b"{}"[..]);
        let mut wire = a.to_bytes().to_vec();
        wire.extend_from_slice(&b.to_bytes());
        assert_eq!(decode_all(&wire, 1024), Ok(vec![a.clone(), b.clone()]));
        // Byte by byte: nothing until each packet is whole.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in &wire {
            buf.put_u8(*byte);
            while let Some(p) = Packet::decode(&mut buf, 1024).expect("valid") {
                got.push(p);
            }
        }
        assert_eq!(got, vec![a, b]);
    }

    #[test]
    fn bad_lengths_are_errors_before_the_body() {
        assert_eq!(decode_all(&(-1i32).to_be_bytes(), 1024), Err(PacketError::TooShort(-1)));
        assert_eq!(decode_all(&15i32.to_be_bytes(), 1024), Err(PacketError::TooShort(15)));
        assert_eq!(decode_all(&2000i32.to_be_bytes(), 1024), Err(PacketError::TooLong { len: 2000, max: 1024 }));
        let mut bad_header = Packet::new(op::SEND, 1, Bytes::new()).to_bytes().to_vec();
        bad_header[5] = 12;
        assert_eq!(decode_all(&bad_header, 1024), Err(PacketError::HeaderLen(12)));
    }
}
