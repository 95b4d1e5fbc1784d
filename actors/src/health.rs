//! `HealthActor`: samples the machine every few seconds (procfs, statvfs
//! on the blocking pool) and answers `GetHealth` with the latest sample.

use actix::prelude::*;
use lifeboat_health::{HealthReport, HealthSampler};
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
}

impl HealthActor {
    pub fn new(interval: Duration, datastores: Vec<(String, PathBuf)>) -> Result<Self, lifeboat_health::HealthError> {
        Ok(HealthActor { sampler: Arc::new(Mutex::new(HealthSampler::new()?)), interval, datastores, latest: None, sampling: false })
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
                Ok(report) => act.latest = Some(report),
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
