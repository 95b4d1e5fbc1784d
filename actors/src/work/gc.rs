//! Gc job: reclaim space (safe while backups run, see crates/store/src/gc.rs).

use super::{JobHandle, JobOutput, JobResult};
use lifeboat_store::Datastore;

pub fn run(ds: &Datastore, h: &JobHandle) -> JobResult {
    h.set_phase("marking");
    let rep = lifeboat_store::gc(ds, &Default::default(), &|e| h.log(&format!("{e:?}")))?;
    Ok(JobOutput { result: serde_json::to_value(&rep).unwrap_or_default(), warnings: vec![] })
}
