//! The gateway: holds client connections and executes the Gateway API for business workers.
//!
//! Clients connect on the WebSocket listener (`listen`); workers and API clients connect on the
//! inner port (`inner`) and speak GatewayWorker 3.x (`protocol`). One actor, the `hub`, owns all
//! connection state (`tables`) and decides which worker gets each client event (`router`), so
//! nothing on the message path takes a lock; it tells workers which uids and groups it holds
//! (`directory`), and closes clients that never speak (`unheard`). `server` starts it all from
//! a `Config`.

pub mod config;
pub mod conn_set;
pub mod directory;
pub mod fuzz;
pub mod hub;
pub mod inner;
pub mod listen;
pub mod outbox;
pub mod peer;
pub mod protocol;
pub mod router;
pub mod server;
pub mod stats;
pub mod tables;
pub mod unheard;

pub use config::Config;
pub use hub::ConnectionInfo;
pub use server::{run, start, start_with, Lister, Running};
pub use stats::Stats;
