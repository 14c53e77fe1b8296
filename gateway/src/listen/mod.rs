//! Client-facing transports. Each turns its wire format into the same hub messages (`Accept`,
//! `Data`, `Gone`), so workers never know how a client is connected: `websocket` (JSON text
//! frames, or goim packets in binary frames), `tcp` with `text` lines or `goim` packets, `poll`
//! (HTTP long polling, for networks that block WebSocket) and `web` for the pages. `door` counts
//! connections per address at accept; `client` holds what they share after that (admission and
//! per-connection limits), and `conn` the socket with its buffers, driven by one task per
//! connection while it has something to do; `parking` holds idle text and goim connections
//! without a task.

pub mod client;
pub mod conn;
pub mod door;
pub mod goim;
pub mod parking;
pub mod poll;
pub mod tcp;
pub mod text;
pub mod web;
pub mod websocket;
