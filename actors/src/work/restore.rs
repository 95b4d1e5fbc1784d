//! Restore job: a snapshot (or parts of it) into a directory on the appliance.

use super::{JobHandle, JobOutput, JobResult};
use lifeboat_ingest::RestoreOptions;
use lifeboat_state::confine::{open_beneath, Confinement, Grant, Open, PathUse};
use lifeboat_store::Datastore;
use std::path::PathBuf;
use std::sync::Arc;

pub fn run(ds: &Datastore, snapshot: &str, target: &str, include: &[String], confine: &Confinement, grant: Grant, h: &JobHandle) -> JobResult {
    // The target is checked and opened beneath its root before the
    // snapshot is even looked up; the restore then works below that
    // descriptor only.
    let place = confine.check(target, PathUse::RestoreTarget, grant)?;
    let (id, snap) = ds.resolve_snapshot(snapshot)?;
    let dir = open_beneath(&place, Open::CreateDir)?;
    h.set_phase("restoring");
    h.log(&format!("restoring snapshot {} into {target}", id.to_hex()));
    let opts = RestoreOptions {
        target: PathBuf::from(target),
        target_dir: Some(Arc::new(dir)),
        includes: include.to_vec(),
        owners: unsafe { libc::geteuid() } == 0 && place.owners,
        special: grant.admin,
        threads: 0,
    };
    let out = lifeboat_ingest::restore(ds, &snap, &opts, &h.progress)?;
    let warnings = out.warnings.clone();
    Ok(JobOutput::new(&super::outcome::RestoreJobOutcome { snapshot: id.to_hex(), files: out.files, dirs: out.dirs, bytes: out.bytes, left_out: out.left_out }, warnings))
}
