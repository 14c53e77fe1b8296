//! Every method that is not built in goes to the upstream HTTP service, as in the original
//! deployment: POST to the URL template with `{method}` filled in, the client's JSON as the
//! body, the token as `?token=` and as a bearer token, and who is asking in headers. A 200
//! answer goes back to the caller unchanged; anything else becomes an error frame whose code is
//! the HTTP status (502 when unreachable, 504 on timeout).
//!
//! The call runs in a task of its own, so neither other clients nor the caller's own next
//! messages wait for a slow upstream; a semaphore bounds how many calls one worker has open.

use crate::protocol::error;
use crate::who::Who;
use crate::Config;
use business::Context;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::{info, warn};

pub struct Upstream {
    client: reqwest::Client,
    url: String,
    token: String,
    timeout: Duration,
    slots: Arc<Semaphore>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Upstream {
    /// `None` when no upstream is configured.
    pub fn new(config: &Config, metrics: Arc<crate::metrics::Metrics>) -> Result<Option<Upstream>, String> {
        if config.upstream_url.is_empty() {
            return Ok(None);
        }
        let timeout = Duration::from_secs_f64(config.upstream_timeout.max(0.001));
        let client = reqwest::Client::builder().timeout(timeout).build().map_err(|e| format!("upstream HTTP client: {e}"))?;
        let token = if config.upstream_token.is_empty() {
            std::env::var("SWITCHBOARD_UPSTREAM_TOKEN").unwrap_or_default()
        } else {
            config.upstream_token.clone()
        };
        Ok(Some(Upstream {
            client,
            url: config.upstream_url.clone(),
            token,
            timeout,
            slots: Arc::new(Semaphore::new(config.upstream_concurrency.max(1))),
            metrics,
        }))
    }

    /// Starts the call and returns at once; the answer is sent to the caller when it comes.
    pub fn forward(self: &Arc<Self>, ctx: &Context, method: &str, body: Bytes) {
        let who = Who::of(ctx);
        let (uid, bid) = match &who {
            Who::Nobody => (String::new(), String::new()),
            Who::Agent { bid, .. } | Who::Visitor { bid, .. } => (who.from_uid().unwrap_or_default(), bid.clone()),
        };
        let me = self.clone();
        let api = ctx.api.clone();
        let client_id = ctx.id();
        let method = method.to_string();
        // A stopping worker waits for this answer before handing its clients over.
        let guard = ctx.work_guard();
        tokio::spawn(async move {
            let _guard = guard;
            let frame = me.call(&method, &client_id, &uid, &bid, body).await;
            if let Err(e) = api.send_to_client(&client_id, frame).await {
                warn!(client = %client_id, "upstream answer not delivered: {e}");
            }
        });
    }

    async fn call(&self, method: &str, client_id: &str, uid: &str, bid: &str, body: Bytes) -> Bytes {
        let fail = |code: &str, msg: &str| Bytes::from(error(Some(method), code, msg));
        let Ok(_slot) = tokio::time::timeout(self.timeout, self.slots.acquire()).await else {
            warn!(method, "upstream busy: no free slot within {:?}", self.timeout);
            return fail("503", "upstream busy");
        };
        let url = self.url.replace("{method}", method);
        let mut req = self
            .client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-client-id", client_id)
            .header("x-uid", uid)
            .header("x-bid", bid)
            .body(body);
        if !self.token.is_empty() {
            req = req.query(&[("token", &self.token)]).bearer_auth(&self.token);
        }
        let started = std::time::Instant::now();
        let sent = req.send().await;
        self.metrics.upstream.observe_since(started);
        match sent {
            Ok(resp) if resp.status() == reqwest::StatusCode::OK => match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    warn!(method, %url, "upstream body: {e}");
                    fail("502", "upstream answer unreadable")
                }
            },
            Ok(resp) => {
                let status = resp.status().as_u16().to_string();
                info!(method, %url, status = %status, "upstream refused");
                fail(&status, "upstream error")
            }
            Err(e) if e.is_timeout() => {
                warn!(method, %url, "upstream timed out after {:?}", self.timeout);
                fail("504", "upstream timeout")
            }
            Err(e) => {
                // The URL is logged without its query, so the token never reaches the log.
                warn!(method, %url, "upstream unreachable: {}", e.without_url());
                fail("502", "upstream unreachable")
            }
        }
    }
}
