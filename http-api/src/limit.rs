//! Per-key rate limits: a GCRA bucket per key (governor), made only once a key has been
//! recognised, so a stranger cannot make the API allocate one.

use crate::fail::Fail;
use crate::keys::Key;
use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Limits {
    default_rate: f64,
    burst: u32,
    by_key: Mutex<HashMap<String, Option<Arc<DefaultDirectRateLimiter>>>>,
}

impl Limits {
    pub fn new(default_rate: f64, burst: u32) -> Limits {
        Limits { default_rate, burst, by_key: Mutex::new(HashMap::new()) }
    }

    fn limiter(&self, key: &Key) -> Option<Arc<DefaultDirectRateLimiter>> {
        let mut map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = map.get(&key.name) {
            return l.clone();
        }
        map.entry(key.name.clone())
            .or_insert_with(|| {
                let rate = key.rate_limit.unwrap_or(self.default_rate);
                if rate <= 0.0 {
                    return None;
                }
                let burst = NonZeroU32::new(key.rate_burst.unwrap_or(self.burst).max(1)).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(Duration::from_secs_f64(1.0 / rate))?.allow_burst(burst);
                Some(Arc::new(RateLimiter::direct(quota)))
            })
            .clone()
    }

    /// Takes `cost` requests from `key`'s budget, or says how long to wait (429, Retry-After).
    pub fn take(&self, key: &Key, cost: u32) -> Result<(), Fail> {
        let Some(limiter) = self.limiter(key) else { return Ok(()) };
        let n = NonZeroU32::new(cost.max(1)).unwrap_or(NonZeroU32::MIN);
        match limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let mut f =
                    Fail::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", format!("rate limit of key {:?}: try again later", key.name));
                f.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
                Err(f)
            }
            Err(_) => Err(Fail::bad(format!("{cost} commands at once exceed the key's burst ({})", key.rate_burst.unwrap_or(self.burst)))),
        }
    }
}
