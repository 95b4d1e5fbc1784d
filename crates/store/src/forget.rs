//! Removing snapshots. The snapshot leaves the index at once; its data
//! goes at the next gc. A forget record (a blob of kind `Forget`, listed
//! under `forget/` in the index and kept reachable by gc) lists the
//! removed snapshots, so an index rebuilt from the packs by `repair` does
//! not bring them back.

use crate::blob::BlobKind;
use crate::datastore::Datastore;
use crate::error::{Result, StoreError};
use crate::id::BlobId;
use crate::index::{self, IndexBatch};
use crate::sink::BlobSink;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const REF_FORGET: &[u8] = b"forget/";

#[derive(Debug, Serialize, Deserialize)]
pub struct ForgetRecord {
    pub time: chrono::DateTime<chrono::Utc>,
    pub snapshots: Vec<BlobId>,
}

/// Removes snapshots from the index and records them as forgotten in a forget blob, so an index rebuilt from the packs does not bring them back. Their data is gc's to reclaim.
pub fn forget_snapshots(ds: &Arc<Datastore>, ids: &[BlobId]) -> Result<()> {
    if ds.config().append_only {
        return Err(StoreError::AppendOnly { path: ds.root().to_path_buf(), op: "forget" });
    }
    if ids.is_empty() {
        return Ok(());
    }
    let record = ForgetRecord { time: chrono::Utc::now(), snapshots: ids.to_vec() };
    let sink = BlobSink::new(ds.clone())?;
    let rid = sink.put(BlobKind::Forget, &serde_json::to_vec(&record).expect("forget record serializes"))?.id;
    sink.flush()?;
    // A crash here leaves an unreferenced record (gc sweeps it) and every
    // snapshot in place.
    crate::failpoint::hit("forget-commit")?;
    let key = index::ref_key(REF_FORGET, &rid.0);
    let batch = IndexBatch { delete_snapshots: ids.to_vec(), refs: vec![(key, Vec::new())], ..Default::default() };
    index::commit(&ds.index_path(), batch)?;
    ds.refresh_index()
}
