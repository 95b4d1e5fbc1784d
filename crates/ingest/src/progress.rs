//! Live counters a UI can sample while a backup or restore runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub dirs: AtomicU64,
    /// Bytes of files done (read or found unchanged).
    pub bytes: AtomicU64,
    pub bytes_read: AtomicU64,
    pub warnings: AtomicU64,
    /// Totals from the counting scan, valid once `scan_done`.
    pub total_files: AtomicU64,
    pub total_bytes: AtomicU64,
    pub scan_done: AtomicBool,
    /// Set by a signal handler or the API to stop the run.
    pub cancel: Arc<AtomicBool>,
    /// Warning messages (first ones kept in full, the rest counted).
    pub messages: Mutex<Vec<String>>,
}

const KEEP_MESSAGES: usize = 1000;

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
    pub fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings.fetch_add(1, Ordering::Relaxed);
        let mut m = self.messages.lock().unwrap();
        if m.len() < KEEP_MESSAGES {
            m.push(msg);
        }
    }
    pub fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
