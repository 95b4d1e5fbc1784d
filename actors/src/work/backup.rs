//! Backup job: paths on the appliance into a datastore, then the
//! schedule's retention on the same (host, paths) group.

use super::outcome::BackupJobOutcome;
use super::{JobHandle, JobOutput, JobResult};
use lifeboat_api_types::{BackupSelection, KeepRules};
use lifeboat_ingest::BackupOptions;
use lifeboat_state::confine::{Confinement, Grant, PathUse};
use lifeboat_store::{BlobId, Datastore};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

#[allow(clippy::too_many_arguments)]
pub fn run(
    ds: &Arc<Datastore>,
    paths: &[String],
    select: &BackupSelection,
    keep: &KeepRules,
    pinned: &HashSet<BlobId>,
    tz: chrono_tz::Tz,
    confine: &Confinement,
    grant: Grant,
    h: &JobHandle,
) -> JobResult {
    // Every source under `backup_roots`, clear of protected trees, and
    // reached without a symlink, before anything is read. (The walk
    // itself never follows symlinks; a source swapped for a symlink
    // between this check and the walk's first open is not caught.)
    for p in paths {
        confine.check_resolved(p, PathUse::BackupSource, grant)?;
    }
    let opts = BackupOptions { sources: paths.iter().map(PathBuf::from).collect(), hostname: lifeboat_ingest::hostname(), select: select.clone(), ..Default::default() };
    h.set_phase("backing up");
    let out = lifeboat_ingest::backup(ds.clone(), &opts, &h.progress)?;
    h.log(&format!("snapshot {} committed", out.snapshot_id.to_hex()));
    let mut outcome = BackupJobOutcome { snapshot: out.snapshot_id.to_hex(), summary: out.snapshot.summary.clone(), forgotten: None };
    if !keep.is_empty() {
        h.set_phase("applying retention");
        outcome.forgotten = Some(super::forget::apply_keep(ds, keep, Some((&out.snapshot.hostname, &out.snapshot.paths)), pinned, tz, h)?);
    }
    Ok(JobOutput::new(&outcome, out.warnings))
}

/// For the daemon's own use (its API crate does not depend on ingest).
pub use lifeboat_ingest::hostname;
