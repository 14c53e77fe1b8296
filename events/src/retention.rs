//! Retention: with `[events] history_days = N` (0 = forever), messages older than N days are
//! deleted, whatever the store, by every worker in the background. Deletes go in batches of
//! `BATCH` with a pause between, so no lock is held long and live traffic goes first; several
//! workers doing it at once only share the work (a deleted message is not deleted twice).

use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

const BATCH: usize = 1000;

/// Starts the background deletion when `days` > 0. Fractions of a day are allowed.
pub fn spawn(store: Arc<dyn Store>, days: f64) {
    if days <= 0.0 || !days.is_finite() {
        return;
    }
    let keep = Duration::from_secs_f64(days * 86_400.0);
    // Often enough that nothing outlives its time by more than a tenth of it, and at most
    // every 10 minutes.
    let every = (keep / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let cutoff = crate::store::now_ms() - keep.as_millis() as i64;
            let mut total = 0u64;
            loop {
                match store.delete_messages_before(cutoff, BATCH).await {
                    Ok(n) => {
                        total += n;
                        if (n as usize) < BATCH {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => {
                        warn!("retention: deleting old messages failed, trying again later: {e}");
                        break;
                    }
                }
            }
            if total > 0 {
                info!(deleted = total, older_than_days = days, "retention: old messages deleted");
            }
        }
    });
}
