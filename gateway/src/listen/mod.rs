//! Client-facing transports. Each turns its wire format into the same hub messages (`Accept`,
//! `Data`, `Gone`), so workers never know how a client is connected.

pub mod web;
pub mod websocket;
