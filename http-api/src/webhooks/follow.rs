//! One webhook's follower: reads the feed after its position, delivers what it subscribes to,
//! moves its position. Every api process that has the webhook configured runs one, but only
//! the holder of the webhook's lease in the store (`Store::lease`, renewed as it works)
//! delivers; the others wait to take over when a holder stops renewing (a crash, a partition).
//! A holder that lost its lease mid-delivery stops after that attempt, so two never run on.

use super::sign::signature;
use super::WebhookConfig;
use events::feed::{self, Event};
use events::store::Store;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How often an idle follower looks for new events.
const POLL: Duration = Duration::from_millis(200);
/// How long a lease lasts unless renewed (at least; longer when a delivery may take longer):
/// how soon a standby takes over from a dead holder.
const LEASE_MS: i64 = 10_000;

/// The lease's length for `hook`: it is renewed before every attempt, and must outlast one.
fn lease_ms(hook: &WebhookConfig) -> i64 {
    LEASE_MS.max((hook.timeout * 2000.0) as i64 + 5_000)
}
/// How often a standby asks for the lease.
const STANDBY: Duration = Duration::from_secs(1);
/// Events read at once.
const PAGE: usize = 100;

/// What became of one delivery.
enum Outcome {
    Delivered,
    GivenUp,
    Stopping,
    /// Another follower holds the lease now: this one goes back to waiting.
    LeaseLost,
}

/// Who this follower is, in the lease: unique per process and run.
fn owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("{host}:{}:{:08x}", std::process::id(), rand::rng().random::<u32>())
}

/// Takes or renews the lease; false when another holds it or the store does not answer.
async fn hold(store: &dyn Store, hook: &WebhookConfig, lease: &str, me: &str) -> bool {
    match store.lease(lease, me, events::store::now_ms(), lease_ms(hook)).await {
        Ok(held) => held,
        Err(e) => {
            warn!(lease, "lease not renewed: {e}");
            false
        }
    }
}

/// Runs until `stop` turns true.
pub async fn run(hook: WebhookConfig, store: Arc<dyn Store>, http: reqwest::Client, stop: watch::Receiver<bool>) {
    let reader = format!("webhook:{}", hook.name);
    let me = owner();
    follow(&hook, store.as_ref(), &http, stop, &reader, &me).await;
    // Stopping (a restart, a reload): let a standby take over now rather than at expiry. The
    // lease's own primitive, renewed as already expired; a no-op unless it is still ours.
    let _ = store.lease(&reader, &me, events::store::now_ms() - 1, 0).await;
}

async fn follow(hook: &WebhookConfig, store: &dyn Store, http: &reqwest::Client, mut stop: watch::Receiver<bool>, reader: &str, me: &str) {
    let mut holding = None;
    info!(webhook = %hook.name, url = %hook.url, owner = %me, "webhook follower started");
    while !*stop.borrow() {
        let held = hold(store, hook, reader, me).await;
        if Some(held) != holding {
            info!(webhook = %hook.name, owner = %me, "{}", if held { "delivering: this process holds the webhook's lease" } else { "standing by: another process holds the webhook's lease" });
            holding = Some(held);
        }
        if !held {
            pause(&mut stop, STANDBY).await;
            continue;
        }
        let page = match store.read_mark(feed::THREAD, reader).await {
            Ok(at) => feed::after(store, at.unwrap_or(0), PAGE).await,
            Err(e) => Err(e),
        };
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                warn!(webhook = %hook.name, "feed not readable, trying again: {e}");
                pause(&mut stop, Duration::from_secs(1)).await;
                continue;
            }
        };
        if page.is_empty() {
            pause(&mut stop, POLL).await;
            continue;
        }
        for (position, event) in page {
            if hook.wants(&event) {
                match deliver(hook, http, &event, &mut stop, store, reader, me).await {
                    Outcome::Stopping => return,
                    Outcome::LeaseLost => break,
                    Outcome::Delivered | Outcome::GivenUp => {}
                }
            }
            // Moved only now: a crash before this delivers the event again, never skips it.
            while let Err(e) = store.mark_read(feed::THREAD, reader, position).await {
                warn!(webhook = %hook.name, "position not saved, trying again: {e}");
                if pause(&mut stop, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps `d`, or less when stopping; true when stopping.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let _ = tokio::time::timeout(d, stop.wait_for(|s| *s)).await;
    *stop.borrow()
}

/// Delivers `event` until a 2xx, a refusal that retrying cannot change, or `give_up_after`.
async fn deliver(
    hook: &WebhookConfig,
    http: &reqwest::Client,
    event: &Event,
    stop: &mut watch::Receiver<bool>,
    store: &dyn Store,
    lease: &str,
    me: &str,
) -> Outcome {
    let body = match serde_json::to_vec(event) {
        Ok(b) => b,
        Err(e) => {
            warn!(webhook = %hook.name, event = %event.id, "not serializable, given up: {e}");
            return Outcome::GivenUp;
        }
    };
    let deadline_ms = event.created_at.saturating_add((hook.give_up_after * 1000.0) as i64);
    let mut attempt: u32 = 0;
    if !hold(store, hook, lease, me).await {
        return Outcome::LeaseLost;
    }
    loop {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let sent = http
            .post(&hook.url)
            .timeout(Duration::from_secs_f64(hook.timeout))
            .header("content-type", "application/json")
            .header("switchboard-event-id", &event.id)
            .header("switchboard-event-type", &event.kind)
            .header("switchboard-signature", signature(&hook.secret, now, &body))
            .body(body.clone())
            .send()
            .await;
        let why = match sent {
            Ok(r) if r.status().is_success() => return Outcome::Delivered,
            Ok(r) if r.status().is_server_error() || matches!(r.status().as_u16(), 408 | 429) => format!("answered {}", r.status()),
            Ok(r) => {
                warn!(webhook = %hook.name, event = %event.id, status = r.status().as_u16(), "the receiver refused the event: given up");
                return Outcome::GivenUp;
            }
            Err(e) if e.is_timeout() => format!("no answer within {} s", hook.timeout),
            Err(e) => format!("not sent: {e}"),
        };
        if events::store::now_ms() > deadline_ms {
            warn!(webhook = %hook.name, event = %event.id, attempts = attempt + 1, "event older than give_up_after, given up ({why})");
            return Outcome::GivenUp;
        }
        // Exponential, capped, with jitter so many followers (or a receiver's many callers)
        // do not retry in step.
        let full = (hook.retry_base * 2f64.powi(attempt.min(30) as i32)).min(hook.retry_max);
        let wait = rand::rng().random_range(full / 2.0..=full);
        info!(webhook = %hook.name, event = %event.id, attempt = attempt + 1, "delivery failed ({why}); again in {wait:.1} s");
        attempt += 1;
        if pause(stop, Duration::from_secs_f64(wait)).await {
            return Outcome::Stopping;
        }
        // A long run of retries must not outlive the lease, or a standby would deliver too.
        if !hold(store, hook, lease, me).await {
            return Outcome::LeaseLost;
        }
    }
}
