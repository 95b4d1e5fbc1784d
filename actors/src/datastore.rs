//! `DatastoreActor`: owns one open datastore and serves reads and backup
//! runs against it.

use actix::prelude::*;
use lifeboat_ingest::{BackupOptions, BackupOutcome, IngestError, Progress};
use lifeboat_store::{BlobId, Datastore, Snapshot, StoreError};
use std::sync::Arc;

pub struct DatastoreActor {
    ds: Arc<Datastore>,
}

impl DatastoreActor {
    pub fn new(ds: Arc<Datastore>) -> Self {
        DatastoreActor { ds }
    }
}

impl Actor for DatastoreActor {
    type Context = Context<Self>;
}

/// All snapshots, oldest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<(BlobId, Snapshot)>, StoreError>")]
pub struct ListSnapshots;

impl Handler<ListSnapshots> for DatastoreActor {
    type Result = ResponseFuture<Result<Vec<(BlobId, Snapshot)>, StoreError>>;
    fn handle(&mut self, _: ListSnapshots, _: &mut Context<Self>) -> Self::Result {
        let ds = self.ds.clone();
        Box::pin(async move { blocking(move || ds.snapshots()).await.unwrap_or(Err(StoreError::Interrupted)) })
    }
}

/// Runs one backup; progress and cancellation go through `progress`.
#[derive(Message)]
#[rtype(result = "Result<BackupOutcome, IngestError>")]
pub struct RunBackup {
    pub options: BackupOptions,
    pub progress: Arc<Progress>,
}

impl Handler<RunBackup> for DatastoreActor {
    type Result = ResponseFuture<Result<BackupOutcome, IngestError>>;
    fn handle(&mut self, msg: RunBackup, _: &mut Context<Self>) -> Self::Result {
        let ds = self.ds.clone();
        Box::pin(async move {
            blocking(move || lifeboat_ingest::backup(ds, &msg.options, &msg.progress))
                .await
                .unwrap_or(Err(IngestError::Interrupted))
        })
    }
}

/// Runs `f` on the blocking pool; `None` if it panicked (the actor and
/// the daemon live on).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn backup_through_the_actor_then_list() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("a.txt"), b"hello actor").unwrap();
        let ds = Arc::new(Datastore::init(&dir.path().join("ds")).unwrap());
        let addr = DatastoreActor::new(ds).start();
        let opts = BackupOptions { sources: vec![src], hostname: "test".into(), ..Default::default() };
        let out = addr.send(RunBackup { options: opts, progress: Arc::new(Progress::new()) }).await.unwrap().unwrap();
        assert_eq!(out.snapshot.summary.files, 1);
        let snaps = addr.send(ListSnapshots).await.unwrap().unwrap();
        assert_eq!(snaps.len(), 1);
        assert_eq!(snaps[0].0, out.snapshot_id);
    }
}
