//! GatewayWorker's `text` protocol: one client message per line, ending in `\n`, both ways.
//! Devices and backend scripts speak it over plain TCP (`nc`, a socket in any language); the
//! objects are the same as on WebSocket. A line over the maximum length closes the connection.

use super::tcp::Wire;
use bytes::{BufMut, Bytes, BytesMut};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::codec::LinesCodec;

#[derive(Clone)]
pub struct Text {
    /// Longest line, in bytes, without its `\n`.
    pub max_line: usize,
}

impl Wire for Text {
    type Codec = LinesCodec;
    type Frame = String;
    type Error = tokio_util::codec::LinesCodecError;
    const NAME: &'static str = "text";

    fn connection(&self) -> Self {
        self.clone()
    }

    fn decoder(&self) -> LinesCodec {
        // Also takes `\r\n` (telnet, Windows scripts): the codec strips the `\r`.
        LinesCodec::new_with_max_length(self.max_line)
    }

    fn inbound(&mut self, line: String) -> Result<Bytes, String> {
        Ok(Bytes::from(line))
    }

    fn outbound(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<bool, String> {
        let payload = super::client::payload(msg)?;
        // A newline inside would split it into two messages on the client's side.
        if payload.contains(&b'\n') {
            return Err("message holds a newline, which the text protocol cannot carry".into());
        }
        dst.put_slice(&payload);
        dst.put_u8(b'\n');
        Ok(false)
    }
}
