//! The gateway's inner wire protocol, GatewayWorker 3.x byte for byte.
//!
//! `header` frames packets, `command` gives them meaning, `php` is the serialize subset carried
//! inside them, `json` writes JSON the way PHP does, `client_id` names one client anywhere, and
//! `websocket` is the server side of RFC 6455 framing for clients, and
//! `websocket_connect` builds the `{get, server, cookie}` body workers receive after a handshake;
//! `goim` frames the binary packets of goim-style app clients; `directory` is the extension that
//! tells workers which gateway holds which uids and groups.

pub mod client_id;
pub mod command;
pub mod directory;
pub mod goim;
pub mod header;
pub mod json;
pub mod php;
pub mod websocket;
pub mod websocket_connect;

pub use client_id::{ClientId, InvalidClientId};
pub use command::{cmd, AllTarget, Body, Command, CommandError, EventKind, Message, Origin, SelectWhere};
pub use header::{encode_reply, FrameError, Packet, PacketCodec, ReplyCodec, DEFAULT_MAX_PACKET, HEAD_LEN};
pub use json::Id;
