//! The business worker: where application code runs.
//!
//! A worker learns the gateways from the register, keeps one link to each (`worker`), turns
//! their client events into calls on the application's [`Events`] (`events`), one client's at a
//! time in order (`clients`), and gives the
//! application the Gateway API (`api`) to answer with, sending to the gateways that hold a uid or
//! group (`directory`). The same API works outside a worker
//! ([`Api::remote`]), as PHP's GatewayClient does. `session` keeps `$_SESSION`-style session
//! state in step with the gateway; `probe` is a diagnostic application used by the tests.

pub mod api;
mod clients;
pub mod directory;
pub mod events;
pub mod probe;
pub mod query;
pub mod ready;
pub mod session;
pub mod stats;
pub mod worker;

pub use api::{Api, ApiError, Member};
pub use events::{Context, Events, WebSocketRequest};
pub use gateway::protocol::php;
pub use gateway::protocol::ClientId;
pub use stats::Stats;
pub use worker::{run, WorkerConfig};
