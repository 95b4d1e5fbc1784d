//! Live counters a UI can sample while a backup or restore runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters and warnings of one run, shared (usually in an `Arc`) between
/// the run's worker threads and whoever watches or cancels it. Every
/// counter is updated and read with `Ordering::Relaxed`: each is a
/// snapshot on its own, not consistent with the others at any instant.
/// Other jobs (verify, VM backups) reuse it with their own meaning of
/// `files` and `bytes`.
#[derive(Default)]
pub struct Progress {
    /// Regular files done: backed up (read or found unchanged) or, in a
    /// restore, written. Hard links a restore makes are not counted.
    pub files: AtomicU64,
    /// Directories whose backup is complete. A restore does not count
    /// here (its outcome does).
    pub dirs: AtomicU64,
    /// Bytes of files done (read or found unchanged). In a restore, bytes
    /// of file content written so far.
    pub bytes: AtomicU64,
    /// Bytes actually read from source files by a backup; files found
    /// unchanged against the parent snapshot add nothing here.
    pub bytes_read: AtomicU64,
    /// Warnings so far, all of them (also those `messages` no longer
    /// keeps).
    pub warnings: AtomicU64,
    /// Totals from the counting scan, valid once `scan_done`.
    pub total_files: AtomicU64,
    /// Bytes of the regular files the counting scan found; like
    /// `total_files`, a running count until `scan_done`.
    pub total_bytes: AtomicU64,
    /// The totals are final: set by `scan::count_totals` when it finishes
    /// (not when it is cancelled), or by a caller that knows the totals
    /// up front.
    pub scan_done: AtomicBool,
    /// Set by a signal handler or the API to stop the run.
    pub cancel: Arc<AtomicBool>,
    /// Warning messages (first ones kept in full, the rest counted).
    pub messages: Mutex<Vec<String>>,
}

const KEEP_MESSAGES: usize = 1000;

impl Progress {
    /// All counters zero, not cancelled, no messages (the same as
    /// `Default`).
    pub fn new() -> Self {
        Self::default()
    }
    /// Whether `cancel` is set. Backup and restore check it before every
    /// entry (and a backup between chunks) and then return
    /// `IngestError::Interrupted`.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
    /// Records a warning from any thread: logged through `tracing`,
    /// counted in `warnings`, and kept in `messages` while fewer than
    /// 1000 are kept.
    pub fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings.fetch_add(1, Ordering::Relaxed);
        let mut m = self.messages.lock().unwrap();
        if m.len() < KEEP_MESSAGES {
            m.push(msg);
        }
    }
    /// Adds `n` to the counter `c`, normally one of this `Progress`'s
    /// fields (`self` itself is not used).
    pub fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value of the counter `c`.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
