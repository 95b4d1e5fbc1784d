//! Restore job: a snapshot (or parts of it) into a directory on the appliance.

use super::{err, JobHandle, JobOutput, JobResult};
use lifeboat_ingest::RestoreOptions;
use lifeboat_store::Datastore;
use std::path::PathBuf;

pub fn run(ds: &Datastore, snapshot: &str, target: &str, include: &[String], h: &JobHandle) -> JobResult {
    let (id, snap) = ds.resolve_snapshot(snapshot).map_err(err)?;
    h.set_phase("restoring");
    h.log(&format!("restoring snapshot {} into {target}", id.to_hex()));
    let opts = RestoreOptions {
        target: PathBuf::from(target),
        includes: include.to_vec(),
        owners: unsafe { libc::geteuid() } == 0,
        threads: 0,
    };
    let out = lifeboat_ingest::restore(ds, &snap, &opts, &h.progress).map_err(err)?;
    let warnings = out.warnings.clone();
    Ok(JobOutput { result: serde_json::json!({ "snapshot": id.to_hex(), "files": out.files, "dirs": out.dirs, "bytes": out.bytes }), warnings })
}
