//! Progress of long work, as counters a front end can poll (the CLI draws a line on a
//! terminal; `--json` runs stay quiet).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Inner {
    phase: Mutex<String>,
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    items_done: AtomicU64,
    items_total: AtomicU64,
}

/// Shared counters for the current phase of a long operation.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Inner>);

/// A reading of [`Progress`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressView {
    pub phase: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub items_done: u64,
    pub items_total: u64,
}

impl Progress {
    /// Starts a new phase with known totals (0 when unknown).
    pub fn phase(&self, name: impl Into<String>, bytes_total: u64, items_total: u64) {
        if let Ok(mut p) = self.0.phase.lock() {
            *p = name.into();
        }
        tracing::info!(phase = %self.view().phase, bytes_total, items_total, "starting");
        self.0.bytes_done.store(0, Ordering::Relaxed);
        self.0.items_done.store(0, Ordering::Relaxed);
        self.0.bytes_total.store(bytes_total, Ordering::Relaxed);
        self.0.items_total.store(items_total, Ordering::Relaxed);
    }
    /// Grows the current phase's totals (parts that run at once add theirs as they learn them).
    pub fn add_totals(&self, bytes: u64, items: u64) {
        self.0.bytes_total.fetch_add(bytes, Ordering::Relaxed);
        self.0.items_total.fetch_add(items, Ordering::Relaxed);
    }
    pub fn add_bytes(&self, n: u64) {
        self.0.bytes_done.fetch_add(n, Ordering::Relaxed);
    }
    pub fn item_done(&self) {
        self.0.items_done.fetch_add(1, Ordering::Relaxed);
    }
    pub fn view(&self) -> ProgressView {
        ProgressView {
            phase: self.0.phase.lock().map(|p| p.clone()).unwrap_or_default(),
            bytes_done: self.0.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.0.bytes_total.load(Ordering::Relaxed),
            items_done: self.0.items_done.load(Ordering::Relaxed),
            items_total: self.0.items_total.load(Ordering::Relaxed),
        }
    }
}
