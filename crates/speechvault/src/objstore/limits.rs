//! Being gentle with a production server: a cap on requests in flight and on the rate bytes
//! are read at (`--max-requests`, `--limit-rate`).
//!
//! A request holds its permit from the moment it is sent until its response is consumed; a
//! GET holds it until its body has been read to the end (or dropped), so `--max-requests 4`
//! means at most four connections are busy at any time. The rate limit applies to bodies read
//! (GET), which is what a backup costs the source.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits one [`super::ObjectStore`] applies to all of its requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests in flight at most (`None`: as many as the caller starts).
    pub max_requests: Option<usize>,
    /// Bytes per second read at most, over all bodies together.
    pub read_rate: Option<u64>,
}

/// A permit for one request in flight; dropping it frees the slot.
#[derive(Debug, Clone)]
pub(crate) struct RequestSlot(
    #[allow(dead_code, reason = "held only to keep the slot")] Option<Arc<OwnedSemaphorePermit>>,
);

/// The shared state behind [`Limits`].
#[derive(Debug)]
pub(crate) struct Limiter {
    requests: Option<Arc<Semaphore>>,
    rate: Option<Pace>,
}

/// A shared pacer: each read of `n` bytes moves a virtual clock on by `n / rate`; a reader
/// waits until the clock is no more than a short burst ahead of real time.
#[derive(Debug)]
struct Pace {
    bytes_per_sec: u64,
    next: Mutex<Instant>,
}

/// How far ahead of real time the pacer may run: small enough that the rate holds over
/// any second, large enough that a 64 KiB read never waits on its own.
const BURST: Duration = Duration::from_millis(250);

impl Limiter {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            requests: limits.max_requests.map(|n| Arc::new(Semaphore::new(n.max(1)))),
            rate: limits
                .read_rate
                .filter(|r| *r > 0)
                .map(|bytes_per_sec| Pace { bytes_per_sec, next: Mutex::new(Instant::now()) }),
        }
    }

    /// Waits for a free request slot.
    pub(crate) async fn slot(&self) -> RequestSlot {
        match &self.requests {
            None => RequestSlot(None),
            Some(sem) => RequestSlot(sem.clone().acquire_owned().await.ok().map(Arc::new)),
        }
    }

    /// Accounts for `n` bytes read, waiting if the rate is exceeded.
    pub(crate) async fn read(&self, n: usize) {
        let Some(pace) = &self.rate else { return };
        let wait = {
            let Ok(mut next) = pace.next.lock() else { return };
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(n as f64 / pace.bytes_per_sec as f64);
            (*next).saturating_duration_since(now + BURST)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pace_holds_the_rate() {
        let l = Limiter::new(Limits { max_requests: None, read_rate: Some(4 << 20) });
        let start = Instant::now();
        // 8 MiB at 4 MiB/s: about 2 s less the burst allowance.
        for _ in 0..128 {
            l.read(64 << 10).await;
        }
        let secs = start.elapsed().as_secs_f64();
        assert!((1.6..3.0).contains(&secs), "{secs}");
    }

    #[tokio::test]
    async fn slots_are_capped() {
        let l = Limiter::new(Limits { max_requests: Some(2), read_rate: None });
        let a = l.slot().await;
        let _b = l.slot().await;
        assert!(tokio::time::timeout(Duration::from_millis(50), l.slot()).await.is_err());
        drop(a);
        assert!(tokio::time::timeout(Duration::from_millis(50), l.slot()).await.is_ok());
    }
}
