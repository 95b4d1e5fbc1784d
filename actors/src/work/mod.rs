//! What each job kind does, one file per kind (as Proxmox keeps one
//! file per job). These run on the blocking pool, never on an arbiter:
//! they call the crates and report through a `JobHandle`.

pub mod backup;
pub mod cdp_protect;
pub mod failure;
pub mod forget;
pub mod gc;
pub mod lab_verify;
pub mod outcome;
pub mod restore;
pub mod verify;
pub mod vm_backup;
pub mod vm_instant_restore;
pub mod vm_migrate_back;
pub mod vm_restore;
pub mod vm_restore_files;

use lifeboat_api_types::JobProgress;
use lifeboat_ingest::Progress;
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A running job's live state, shared by the worker (which updates it)
/// and the jobs actor (which samples it for events and cancels it).
pub struct JobHandle {
    pub progress: Arc<Progress>,
    phase: Mutex<String>,
    log: Box<dyn Fn(&str) + Send + Sync>,
    /// What a job that fails still has to show (a failed lab run's
    /// report): the job's result when it ends in an error.
    failed_result: Mutex<Option<serde_json::Value>>,
}

impl JobHandle {
    pub fn new(log: Box<dyn Fn(&str) + Send + Sync>) -> Self {
        JobHandle { progress: Arc::new(Progress::new()), phase: Mutex::new("starting".into()), log, failed_result: Mutex::new(None) }
    }

    pub fn set_phase(&self, phase: &str) {
        *self.phase.lock() = phase.to_string();
        self.log(phase);
    }

    pub fn log(&self, line: &str) {
        (self.log)(line)
    }

    /// The result to keep should the job fail after all.
    pub fn set_failed_result(&self, v: serde_json::Value) {
        *self.failed_result.lock() = Some(v);
    }

    pub fn take_failed_result(&self) -> Option<serde_json::Value> {
        self.failed_result.lock().take()
    }

    pub fn cancel(&self) {
        self.progress.cancel.store(true, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> JobProgress {
        let p = &self.progress;
        let scan_done = p.scan_done.load(Ordering::Relaxed);
        JobProgress {
            phase: self.phase.lock().clone(),
            files_done: Progress::get(&p.files),
            bytes_done: Progress::get(&p.bytes),
            files_total: scan_done.then(|| Progress::get(&p.total_files)),
            bytes_total: scan_done.then(|| Progress::get(&p.total_bytes)),
        }
    }
}

/// How a job ended, besides failing.
pub struct JobOutput {
    pub result: serde_json::Value,
    /// Inputs that could not be read (the job still counts as done).
    pub warnings: Vec<String>,
}

impl JobOutput {
    /// A job's typed outcome (see `outcome`) as its result.
    pub fn new(outcome: &impl serde::Serialize, warnings: Vec<String>) -> Self {
        JobOutput { result: serde_json::to_value(outcome).expect("job outcomes serialize"), warnings }
    }
}

pub use failure::JobFailure;

/// How a job ends.
pub type JobResult = Result<JobOutput, JobFailure>;

/// An error of a crate without a kind of its own, as `Failed`.
pub(crate) fn err(e: impl std::fmt::Display) -> JobFailure {
    JobFailure::failed(e)
}
