//! The LINE channel: LINE users chat with a bot's agents as visitors do.
//!
//! `switchboard line` runs it: `webhook` takes LINE's signed calls and stores their events;
//! `inbound` turns stored events into conversations and messages (through the same store and
//! Gateway API the workers use, so agents see nothing different); `sender` takes agents'
//! replies from the store's outgoing queue (`outbox`, filled by the workers' `say`) and calls
//! LINE (`client`). Nothing is held only in memory: a crash at any point loses nothing.

pub mod client;
pub mod config;
pub mod inbound;
pub mod outbox;
pub mod sender;
pub mod signature;
pub mod webhook;

pub use config::Config;

use crate::Chat;
use business::Api;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::Notify;
use tracing::info;

pub use crate::keys::{line_user, LINE_VISITOR_PREFIX as VISITOR_PREFIX};

/// What the webhook handler, the inbound processor and the senders share.
pub struct Line {
    pub chat: Arc<Chat>,
    pub api: Api,
    pub client: client::LineApi,
    pub config: Config,
    /// Poked when new events are stored, so they are processed at once.
    pub wake: Notify,
    /// Who holds leases on the outgoing queue: stable across restarts of this process.
    pub owner: String,
}

impl Line {
    pub fn new(chat: Arc<Chat>, api: Api) -> Result<Arc<Line>, String> {
        let config = chat.config.line.clone();
        if config.bots.is_empty() {
            return Err("no LINE channel configured: add [[events.line.bots]] with a bid".into());
        }
        std::fs::create_dir_all(&config.media_dir).map_err(|e| format!("media directory {}: {e}", config.media_dir))?;
        let client = client::LineApi::new(&config.api_base, &config.data_base, config.timeout(), chat.metrics.clone())?;
        let owner = format!("line@{}", config.listen);
        Ok(Arc::new(Line { chat, api, client, config, wake: Notify::new(), owner }))
    }

    /// Serves webhooks on `listener` and runs the processor and the senders until `stop`.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener, stop: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        for bot in &self.config.bots {
            let b = self.config.bot(&bot.bid).unwrap_or_default();
            info!(bid = %bot.bid, secret = !b.channel_secret.is_empty(), token = !b.channel_access_token.is_empty(), "LINE channel");
        }
        let (quit, quitting) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(inbound::run(self.clone(), quitting.clone()));
        tasks.spawn(sender::run(self.clone(), quitting.clone()));
        let mut q = quitting.clone();
        let app = webhook::router(self.clone());
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = q.wait_for(|v| *v).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::warn!("webhook listener stopped: {e}");
            }
        });
        stop.await;
        let _ = quit.send(true);
        let _ = server.await;
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}
