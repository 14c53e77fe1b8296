//! The 28-byte GatewayProtocol packet (spec §2): framing only, no meaning.
//!
//! [`Packet`] is what travels; [`super::Command`] gives it meaning. Keeping the two apart lets the
//! gateway forward bytes it does not need to understand and lets the codec be tested on its own.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Header length; `pack_len` counts it.
pub const HEAD_LEN: usize = 28;
/// workerman's default maximum package size (10 MiB); exactly this size is accepted.
pub const DEFAULT_MAX_PACKET: usize = 10 * 1024 * 1024;

/// Flag bit 0: the body is a PHP scalar's string form, not serialized data.
pub const FLAG_BODY_IS_SCALAR: u8 = 0x01;
/// Flag bit 1: the body is pre-framed for the client socket; write it as is.
pub const FLAG_NOT_CALL_ENCODE: u8 = 0x02;

/// One packet on a gateway inner connection. Fields not used by a command are zero.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packet {
    pub cmd: u8,
    pub local_ip: u32,
    pub local_port: u16,
    pub client_ip: u32,
    pub client_port: u16,
    pub connection_id: u32,
    pub flag: u8,
    pub gateway_port: u16,
    pub ext: Bytes,
    pub body: Bytes,
}

/// Why a byte stream is not GatewayProtocol; the peer is disconnected with this reason.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("package length {0} is shorter than the 28-byte header")]
    TooShort(u32),
    #[error("package length {len} exceeds the maximum {max}")]
    TooLarge { len: u32, max: usize },
    #[error("ext_len {ext_len} does not fit in a package of length {len}")]
    ExtOverflow { ext_len: u32, len: u32 },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Packet {
    pub fn encoded_len(&self) -> usize {
        HEAD_LEN + self.ext.len() + self.body.len()
    }

    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_u32(self.encoded_len() as u32);
        dst.put_u8(self.cmd);
        dst.put_u32(self.local_ip);
        dst.put_u16(self.local_port);
        dst.put_u32(self.client_ip);
        dst.put_u16(self.client_port);
        dst.put_u32(self.connection_id);
        dst.put_u8(self.flag);
        dst.put_u16(self.gateway_port);
        dst.put_u32(self.ext.len() as u32);
        dst.put_slice(&self.ext);
        dst.put_slice(&self.body);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut b);
        b.freeze()
    }

    /// Takes one packet off the front of `src`, or `None` until enough bytes have arrived.
    pub fn decode(src: &mut BytesMut, max: usize) -> Result<Option<Packet>, FrameError> {
        if src.len() < HEAD_LEN {
            // Without 28 bytes the length is still checked once 4 are here, so garbage is
            // refused at once instead of after the peer sends more.
            if src.len() >= 4 {
                check_len(u32::from_be_bytes([src[0], src[1], src[2], src[3]]), max)?;
            }
            return Ok(None);
        }
        let mut h = &src[..HEAD_LEN];
        let len = h.get_u32();
        check_len(len, max)?;
        let ext_len = u32::from_be_bytes([src[24], src[25], src[26], src[27]]);
        if ext_len as usize > len as usize - HEAD_LEN {
            return Err(FrameError::ExtOverflow { ext_len, len });
        }
        if src.len() < len as usize {
            src.reserve(len as usize - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(len as usize);
        let mut h = &frame[..HEAD_LEN];
        let _ = h.get_u32();
        let mut p = Packet {
            cmd: h.get_u8(),
            local_ip: h.get_u32(),
            local_port: h.get_u16(),
            client_ip: h.get_u32(),
            client_port: h.get_u16(),
            connection_id: h.get_u32(),
            flag: h.get_u8(),
            gateway_port: h.get_u16(),
            ..Packet::default()
        };
        frame.advance(HEAD_LEN);
        p.ext = frame.split_to(ext_len as usize).freeze();
        p.body = frame.freeze();
        Ok(Some(p))
    }

    pub fn body_is_scalar(&self) -> bool {
        self.flag & FLAG_BODY_IS_SCALAR != 0
    }

    pub fn raw(&self) -> bool {
        self.flag & FLAG_NOT_CALL_ENCODE != 0
    }
}

fn check_len(len: u32, max: usize) -> Result<(), FrameError> {
    if (len as usize) < HEAD_LEN {
        return Err(FrameError::TooShort(len));
    }
    if len as usize > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(())
}

/// tokio codec for packets, with the maximum size a peer may send.
#[derive(Debug, Clone)]
pub struct PacketCodec {
    pub max_len: usize,
}

impl Default for PacketCodec {
    fn default() -> Self {
        PacketCodec { max_len: DEFAULT_MAX_PACKET }
    }
}

impl Decoder for PacketCodec {
    type Item = Packet;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, FrameError> {
        Packet::decode(src, self.max_len)
    }
}

impl Encoder<Packet> for PacketCodec {
    type Error = FrameError;

    fn encode(&mut self, p: Packet, dst: &mut BytesMut) -> Result<(), FrameError> {
        p.encode(dst);
        Ok(())
    }
}

/// Pre-encoded packets (one group message encoded once, written to many links).
impl Encoder<Bytes> for PacketCodec {
    type Error = FrameError;

    fn encode(&mut self, b: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.extend_from_slice(&b);
        Ok(())
    }
}

/// Query replies have no header: `u32 BE length` then PHP-serialized bytes (spec §4).
pub fn encode_reply(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + payload.len());
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// Decoder for query replies, used by the API side.
#[derive(Debug, Clone)]
pub struct ReplyCodec {
    pub max_len: usize,
}

impl Decoder for ReplyCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        if len as usize > self.max_len {
            return Err(FrameError::TooLarge { len, max: self.max_len });
        }
        if src.len() < 4 + len as usize {
            // The length is allowed: room for the rest at once, as `Packet::decode` makes.
            src.reserve(4 + len as usize - src.len());
            return Ok(None);
        }
        src.advance(4);
        Ok(Some(src.split_to(len as usize).freeze()))
    }
}

impl Encoder<Bytes> for ReplyCodec {
    type Error = FrameError;

    fn encode(&mut self, b: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.extend_from_slice(&b);
        Ok(())
    }
}
