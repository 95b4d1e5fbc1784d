//! The `Lab` actor: the verification lab's runs in this daemon.
//!
//! A run is a `lab-verify` job; its work (`work::lab_verify`, over
//! `lifeboat_lab`) runs on the blocking pool like every job's, and while
//! it runs it is registered here ([`LabRuns`]) with its cancel flag. The
//! actor answers which runs are live (`GET /api/lab-runs`) and, at
//! shutdown, cancels them and waits until each has powered off its VMs
//! and removed its network: a clean stop leaves no namespace, tap,
//! nftables table or QEMU behind. What a killed daemon left is swept
//! when the actor is made, before any job can start a new run.

use actix::prelude::*;
use lifeboat_api_types::LabRunInfo;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct LiveRun {
    info: LabRunInfo,
    cancel: Arc<AtomicBool>,
}

/// The lab runs in progress, shared by the actor and the runs' jobs.
#[derive(Clone, Default)]
pub struct LabRuns(Arc<Mutex<BTreeMap<String, LiveRun>>>);

/// A run's place in [`LabRuns`]; dropping it (the run ended, however)
/// takes the run off the list.
pub struct LiveRunGuard {
    runs: LabRuns,
    id: String,
}

impl Drop for LiveRunGuard {
    fn drop(&mut self) {
        self.runs.0.lock().remove(&self.id);
    }
}

impl LabRuns {
    /// Lists a starting run until the guard is dropped; `cancel` is the
    /// flag its work watches (the job's own), set at shutdown.
    pub fn register(&self, info: LabRunInfo, cancel: Arc<AtomicBool>) -> LiveRunGuard {
        let id = info.id.clone();
        self.0.lock().insert(id.clone(), LiveRun { info, cancel });
        LiveRunGuard { runs: self.clone(), id }
    }

    /// The runs in progress, oldest first.
    pub fn list(&self) -> Vec<LabRunInfo> {
        let mut v: Vec<LabRunInfo> = self.0.lock().values().map(|r| r.info.clone()).collect();
        v.sort_by(|a, b| a.started.cmp(&b.started).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// Asks every run to stop; returns how many there were.
    fn cancel_all(&self) -> usize {
        let live = self.0.lock();
        for r in live.values() {
            r.cancel.store(true, Ordering::Relaxed);
        }
        live.len()
    }

    fn is_empty(&self) -> bool {
        self.0.lock().is_empty()
    }
}

/// Owns the daemon's lab runs (see the module doc).
pub struct LabActor {
    runs: LabRuns,
}

impl LabActor {
    /// Sweeps what lab runs of a killed process left (namespaces with
    /// their VMs, markers under `markers`), then starts with no runs.
    pub fn new(markers: &Path) -> Self {
        for stale in lifeboat_lab::net::sweep_stale(markers) {
            tracing::warn!("removed the lab network {stale} of a run that did not finish");
        }
        LabActor { runs: LabRuns::default() }
    }

    /// The registry the runs' jobs put themselves on.
    pub fn runs(&self) -> LabRuns {
        self.runs.clone()
    }
}

impl Actor for LabActor {
    type Context = Context<Self>;
}

/// The lab runs in progress.
#[derive(Message)]
#[rtype(result = "Vec<LabRunInfo>")]
pub struct RunningLabs;

impl Handler<RunningLabs> for LabActor {
    type Result = MessageResult<RunningLabs>;
    fn handle(&mut self, _: RunningLabs, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.runs.list())
    }
}

/// Cancels every run and waits up to `wait` for them to end (VMs off,
/// networks removed); answers how many were still running then.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct StopLabs {
    /// How long to wait for the runs to clean up.
    pub wait: Duration,
}

impl Handler<StopLabs> for LabActor {
    type Result = ResponseFuture<usize>;
    fn handle(&mut self, msg: StopLabs, _: &mut Context<Self>) -> Self::Result {
        let runs = self.runs.clone();
        Box::pin(async move {
            let n = runs.cancel_all();
            if n > 0 {
                tracing::info!("stopping {n} lab run(s): their VMs are powered off and their networks removed");
            }
            let end = Instant::now() + msg.wait;
            while !runs.is_empty() && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let left = runs.list().len();
            if left > 0 {
                tracing::warn!("{left} lab run(s) did not end in {} s; the next start sweeps what they leave", msg.wait.as_secs());
            }
            left
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn info(id: &str) -> LabRunInfo {
        LabRunInfo { id: id.into(), job: format!("job-{id}"), datastore: "default".into(), lab: None, vms: vec!["vm:a".into()], netns: format!("lblab-{id}"), started: Utc::now() }
    }

    #[actix_rt::test]
    async fn stop_cancels_every_run_and_waits_for_it_to_end() {
        let actor = LabActor { runs: LabRuns::default() };
        let runs = actor.runs();
        let addr = actor.start();
        let cancel = Arc::new(AtomicBool::new(false));
        let guard = runs.register(info("r1"), cancel.clone());
        assert_eq!(addr.send(RunningLabs).await.unwrap()[0].id, "r1");
        // A run that ends shortly after it sees its flag.
        let seen = cancel.clone();
        let worker = std::thread::spawn(move || {
            while !seen.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(200));
            drop(guard);
        });
        let left = addr.send(StopLabs { wait: Duration::from_secs(10) }).await.unwrap();
        worker.join().unwrap();
        assert_eq!(left, 0);
        assert!(cancel.load(Ordering::Relaxed));
        assert!(addr.send(RunningLabs).await.unwrap().is_empty());
    }

    #[actix_rt::test]
    async fn a_run_that_does_not_end_is_counted_after_the_wait() {
        let actor = LabActor { runs: LabRuns::default() };
        let runs = actor.runs();
        let addr = actor.start();
        let _stuck = runs.register(info("r2"), Arc::new(AtomicBool::new(false)));
        assert_eq!(addr.send(StopLabs { wait: Duration::from_millis(300) }).await.unwrap(), 1);
    }
}
