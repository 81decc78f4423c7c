//! Stopping long work cleanly, and pausing it at known points for crash tests.
//!
//! [`Stop`] is a flag the front end raises on SIGINT/SIGTERM. Async code awaits
//! [`Stop::stopped`] beside its work; blocking code (the repository's archiver reading our
//! sources) polls [`Stop::is_stopped`] and ends early. Either way the operation then cleans up
//! what it started (a backup deletes its snapshots, a restore rolls back) within a bounded time.
//!
//! [`pause_point`] lets a test stop the process at a named phase deterministically:
//! `SPEECHVAULT_TEST_PAUSE_AT=restore:objects` makes the process announce
//! `speechvault: paused at restore:objects` on stderr (and write the point's name to
//! `SPEECHVAULT_TEST_PAUSE_FILE` if set) the first time it gets there, and wait: until it is
//! killed, or until the test creates `<pause file>.continue`. Without the variable it costs one
//! environment lookup.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A stop request shared by everything one operation runs.
#[derive(Debug, Clone)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    rx: tokio::sync::watch::Receiver<bool>,
}

/// The raising end of a [`Stop`].
#[derive(Debug)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    tx: tokio::sync::watch::Sender<bool>,
}

impl Stop {
    /// A stop flag and the handle that raises it.
    pub fn new() -> (StopHandle, Stop) {
        let flag = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::watch::channel(false);
        (StopHandle { flag: flag.clone(), tx }, Stop { flag, rx })
    }

    /// A flag nobody raises.
    pub fn never() -> Stop {
        let (handle, stop) = Self::new();
        // Keep the sender alive for the life of the process so `stopped` never resolves.
        std::mem::forget(handle);
        stop
    }

    /// A stop raised by its own handle or by this one: one part of an operation that fails
    /// can stop the parts running beside it, which then clean up as for a stop request.
    /// Must be called on a tokio runtime (a task passes the parent's stop on).
    pub fn child(&self) -> (StopHandle, Stop) {
        let (handle, child) = Self::new();
        let (parent, flag, tx) = (self.clone(), handle.flag.clone(), handle.tx.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = parent.stopped() => {
                    flag.store(true, Ordering::Relaxed);
                    let _ = tx.send(true);
                }
                () = tx.closed() => {}
            }
        });
        (handle, child)
    }

    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Resolves once a stop is requested.
    pub async fn stopped(&self) {
        let mut rx = self.rx.clone();
        loop {
            if *rx.borrow() {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl StopHandle {
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Relaxed);
        let _ = self.tx.send(true);
    }
}

/// Pauses forever when the test environment names this point (see the module docs).
pub fn pause_point(name: &str) {
    let Some(wanted) = std::env::var_os("SPEECHVAULT_TEST_PAUSE_AT") else {
        return;
    };
    if !wanted.to_string_lossy().split(',').any(|w| w.trim() == name) {
        return;
    }
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    match SEEN.lock() {
        Ok(mut seen) if !seen.iter().any(|s| s == name) => seen.push(name.to_string()),
        _ => return,
    }
    let _ = writeln!(std::io::stderr(), "speechvault: paused at {name}");
    let file = std::env::var_os("SPEECHVAULT_TEST_PAUSE_FILE").map(std::path::PathBuf::from);
    if let Some(f) = &file {
        let _ = std::fs::write(f, name);
    }
    let resume = file.map(|f| {
        let mut p = f.into_os_string();
        p.push(".continue");
        std::path::PathBuf::from(p)
    });
    loop {
        if let Some(r) = &resume
            && r.exists()
        {
            let _ = std::fs::remove_file(r);
            let _ = writeln!(std::io::stderr(), "speechvault: continuing after {name}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
