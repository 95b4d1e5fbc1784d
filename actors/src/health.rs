//! `HealthActor`: samples the machine every few seconds (procfs, statvfs
//! on the blocking pool) and answers `GetHealth` with the latest sample,
//! `GetHealthHistory` with a bounded history for the web console's charts
//! (in memory: a restart starts it anew).

use actix::prelude::*;
use lifeboat_api_types::HealthSample;
use lifeboat_health::{HealthReport, HealthSampler};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct HealthActor {
    sampler: Arc<Mutex<HealthSampler>>,
    interval: Duration,
    /// (name, path) of the datastores whose free space is reported.
    datastores: Vec<(String, PathBuf)>,
    latest: Option<HealthReport>,
    sampling: bool,
    history: VecDeque<HealthSample>,
    /// At most one history point per this many seconds, and this many
    /// points (a day at one a minute by default).
    history_every: u64,
    history_len: usize,
}

impl HealthActor {
    pub fn new(interval: Duration, datastores: Vec<(String, PathBuf)>) -> Result<Self, lifeboat_health::HealthError> {
        Ok(HealthActor { sampler: Arc::new(Mutex::new(HealthSampler::new()?)), interval, datastores, latest: None, sampling: false, history: VecDeque::new(), history_every: 60, history_len: 1440 })
    }

    /// Keeps a history point at most every `every` and at most `len` of them.
    pub fn with_history(mut self, every: Duration, len: usize) -> Self {
        self.history_every = every.as_secs();
        self.history_len = len.max(1);
        self
    }

    fn record(&mut self, report: &HealthReport) {
        let due = self.history.back().is_none_or(|last| report.sampled_at as i64 - last.time.timestamp() >= self.history_every as i64);
        if due {
            if self.history.len() == self.history_len {
                self.history.pop_front();
            }
            self.history.push_back(HealthSample::of(report));
        }
    }

    fn sample(&mut self, ctx: &mut Context<Self>) {
        // A sample still running (a hung statvfs on a dead NFS mount) is
        // not stacked with another.
        if self.sampling {
            return;
        }
        self.sampling = true;
        let fut = take_sample(self.sampler.clone(), self.datastores.clone());
        ctx.spawn(fut.into_actor(self).map(|result, act, _| {
            act.sampling = false;
            match result {
                Ok(report) => {
                    act.record(&report);
                    act.latest = Some(report);
                }
                Err(e) => tracing::warn!("health sample failed: {e}"),
            }
        }));
    }
}

async fn take_sample(sampler: Arc<Mutex<HealthSampler>>, datastores: Vec<(String, PathBuf)>) -> Result<HealthReport, String> {
    tokio::task::spawn_blocking(move || {
        let mut sampler = sampler.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sampler.sample(&datastores).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("health sampling task failed: {e}")))
}

impl Actor for HealthActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.sample(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.sample(ctx));
    }
}

impl Supervised for HealthActor {}

/// The latest health sample (taken now if there is none yet).
#[derive(Message)]
#[rtype(result = "Result<HealthReport, String>")]
pub struct GetHealth;

impl Handler<GetHealth> for HealthActor {
    type Result = ResponseFuture<Result<HealthReport, String>>;
    fn handle(&mut self, _: GetHealth, _: &mut Context<Self>) -> Self::Result {
        match &self.latest {
            Some(report) => {
                let report = report.clone();
                Box::pin(async move { Ok(report) })
            }
            None => Box::pin(take_sample(self.sampler.clone(), self.datastores.clone())),
        }
    }
}

/// The health history, oldest first.
#[derive(Message)]
#[rtype(result = "Vec<HealthSample>")]
pub struct GetHealthHistory;

impl Handler<GetHealthHistory> for HealthActor {
    type Result = MessageResult<GetHealthHistory>;
    fn handle(&mut self, _: GetHealthHistory, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.history.iter().cloned().collect())
    }
}

/// Report the free space of this datastore too (one was added); a name
/// already watched gets the new path.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WatchDatastore {
    pub name: String,
    pub path: PathBuf,
}

impl Handler<WatchDatastore> for HealthActor {
    type Result = ();
    fn handle(&mut self, msg: WatchDatastore, ctx: &mut Context<Self>) {
        self.datastores.retain(|(name, _)| *name != msg.name);
        self.datastores.push((msg.name, msg.path));
        self.sample(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn history_is_bounded_spaced_and_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let actor = HealthActor::new(Duration::from_millis(300), vec![("main".into(), dir.path().to_path_buf())]).unwrap().with_history(Duration::from_secs(1), 2).start();
        actor.send(GetHealth).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(3600)).await;
        let h = actor.send(GetHealthHistory).await.unwrap();
        // ~12 samples were taken, one per second was kept, and only the last two stay.
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h[1].time.timestamp() - h[0].time.timestamp() >= 1, "{h:?}");
        assert!(h[1].time.timestamp() >= chrono::Utc::now().timestamp() - 2, "the newest point is recent: {h:?}");
        assert_eq!(h[1].datastores.len(), 1);
        assert!(h[1].datastores[0].used_bytes > 0 && h[1].datastores[0].total_bytes >= h[1].datastores[0].used_bytes, "{h:?}");
        assert!(h[1].memory_available_bytes > 0);
    }

    #[actix_rt::test]
    async fn samples_periodically_and_answers_with_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let actor = HealthActor::new(Duration::from_millis(200), vec![("main".into(), dir.path().to_path_buf())]).unwrap().start();
        let first = actor.send(GetHealth).await.unwrap().unwrap();
        assert!(first.memory.total_bytes > 0 && first.daemon_rss_bytes > 0);
        assert_eq!(first.datastores.len(), 1);
        assert_eq!(first.datastores[0].name, "main");
        assert!(first.datastores[0].total_bytes > 0, "{:?}", first.datastores[0]);

        // Later answers come from later samples.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let later = actor.send(GetHealth).await.unwrap().unwrap();
        assert!(later.sampled_at > first.sampled_at, "{} vs {}", later.sampled_at, first.sampled_at);
        assert!(later.io_interval_secs < 1.0, "samples are 200 ms apart, rates over {} s", later.io_interval_secs);

        let other = tempfile::tempdir().unwrap();
        actor.send(WatchDatastore { name: "second".into(), path: other.path().to_path_buf() }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let names: Vec<String> = actor.send(GetHealth).await.unwrap().unwrap().datastores.into_iter().map(|d| d.name).collect();
        assert_eq!(names, ["main", "second"]);
    }
}
