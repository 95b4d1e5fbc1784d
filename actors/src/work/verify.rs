//! Verify job: `check`, optionally reading and hashing every blob.

use super::{JobFailure, JobHandle, JobOutput, JobResult};
use lifeboat_ingest::Progress;
use lifeboat_store::Datastore;

pub fn run(ds: &Datastore, read_data: bool, h: &JobHandle) -> JobResult {
    h.set_phase(if read_data { "reading all data" } else { "checking index and packs" });
    let rep = lifeboat_store::check(ds, if read_data { lifeboat_store::CheckDepth::ReadData } else { lifeboat_store::CheckDepth::Structure }, &|n| h.progress.add(&h.progress.bytes, n))?;
    let _ = Progress::get(&h.progress.bytes);
    let result = serde_json::to_value(&rep).unwrap_or_default();
    if !rep.ok() {
        for e in &rep.errors {
            h.log(e);
        }
        return Err(JobFailure::Damaged(format!(
            "{} problems found in {}: {}; run `lifeboat check --read-data` for the affected snapshots and `lifeboat datastore repair`",
            rep.errors.len(),
            ds.root().display(),
            rep.errors.first().cloned().unwrap_or_default()
        )));
    }
    Ok(JobOutput { result, warnings: vec![] })
}
