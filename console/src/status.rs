//! What the status screen shows of the running daemon, read from its API
//! (never from its files): health, datastores with their space, running
//! jobs and the last failures. The daemon leaves a loopback URL and a
//! read-only token of its current run in its state directory
//! (`lifeboat_state::console`); without that file, or when the daemon
//! does not answer, the screen says the daemon is not running.
//!
//! Fetched on a background thread (`StatusFetcher`), so a daemon that is
//! slow to answer never freezes the console.

use crate::system::JobLine;
use lifeboat_api_types::{DatastoreInfo, HealthReport, JobInfo, JobState};
use lifeboat_state::console::ConsoleAccess;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often the status screen asks the daemon.
pub const REFRESH: Duration = Duration::from_secs(2);

/// The daemon as the status screen shows it.
#[derive(Clone, Debug)]
pub enum DaemonStatus {
    /// Not asked yet.
    Unknown,
    /// Not running (or not answering): why, for the screen.
    NotRunning(String),
    Running(Box<Snapshot>),
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub url: String,
    pub health: Result<HealthReport, String>,
    pub datastores: Result<Vec<DatastoreInfo>, String>,
    pub running: Result<Vec<JobLine>, String>,
    pub failures: Result<Vec<JobLine>, String>,
}

/// Asks the daemon whose state directory is `state_dir`.
pub fn fetch(state_dir: &std::path::Path) -> DaemonStatus {
    let access = match ConsoleAccess::read(state_dir) {
        Ok(Some(a)) => a,
        Ok(None) => return DaemonStatus::NotRunning(format!("no {} (it is written when the daemon starts)", ConsoleAccess::path(state_dir).display())),
        Err(e) => return DaemonStatus::NotRunning(e.to_string()),
    };
    let trust = lifeboat_client::TlsTrust::Fingerprint(access.fingerprint.clone());
    let client = match lifeboat_client::ApiClient::new_with_timeout(&access.url, Some(access.token.clone()), trust, Duration::from_secs(3)) {
        Ok(c) => c,
        Err(e) => return DaemonStatus::NotRunning(e.to_string()),
    };
    // The first call tells whether the daemon is there at all.
    let health = match client.get::<HealthReport>("/api/health/details") {
        Ok(h) => Ok(h),
        Err(lifeboat_client::ClientError::Transport { message, .. }) => {
            return DaemonStatus::NotRunning(format!("{} does not answer: {message}", access.url));
        }
        Err(e) if e.status() == Some(401) => {
            return DaemonStatus::NotRunning(format!("{} refused the console's token: the daemon that wrote it has stopped", access.url));
        }
        Err(e) => Err(e.to_string()),
    };
    let datastores = client.get::<Vec<DatastoreInfo>>("/api/datastores").map_err(|e| e.to_string());
    let jobs = client.get::<Vec<JobInfo>>("/api/jobs?limit=200").map_err(|e| e.to_string());
    let running = jobs.as_ref().map(|j| j.iter().filter(|j| j.state == JobState::Running).map(job_line).collect()).map_err(Clone::clone);
    let failed = [JobState::Failed, JobState::Interrupted];
    let failures = jobs.map(|j| j.iter().filter(|j| failed.contains(&j.state)).take(5).map(job_line).collect());
    DaemonStatus::Running(Box::new(Snapshot { url: access.url, health, datastores, running, failures }))
}

pub fn job_line(j: &JobInfo) -> JobLine {
    let kind = serde_json::to_value(&j.spec).ok().and_then(|v| v["kind"].as_str().map(str::to_string)).unwrap_or_default();
    let state = serde_json::to_value(j.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let detail = match &j.error {
        Some(e) => format!("{} {}: {e}", j.started.format("%Y-%m-%d %H:%M"), j.spec.datastore()),
        None => format!("{} {}", j.started.format("%Y-%m-%d %H:%M"), j.spec.datastore()),
    };
    JobLine { id: j.id.clone(), kind, state, detail }
}

/// Fetches in the background every `REFRESH` while asked to.
pub struct StatusFetcher {
    state_dir: PathBuf,
    rx: Option<mpsc::Receiver<DaemonStatus>>,
    last: Option<Instant>,
}

impl StatusFetcher {
    pub fn new(state_dir: PathBuf) -> Self {
        StatusFetcher { state_dir, rx: None, last: None }
    }

    /// Starts a fetch now (unless one is under way).
    pub fn refresh(&mut self) {
        if self.rx.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let dir = self.state_dir.clone();
        std::thread::spawn(move || {
            let _ = tx.send(fetch(&dir));
        });
        self.rx = Some(rx);
        self.last = Some(Instant::now());
    }

    /// A finished fetch, if there is one; starts the next when due.
    pub fn poll(&mut self) -> Option<DaemonStatus> {
        let mut got = None;
        if let Some(rx) = &self.rx {
            match rx.try_recv() {
                Ok(s) => {
                    got = Some(s);
                    self.rx = None;
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => self.rx = None,
            }
        }
        if self.last.is_none_or(|t| t.elapsed() >= REFRESH) {
            self.refresh();
        }
        got
    }
}
