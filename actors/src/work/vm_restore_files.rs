//! VM files restore job: guest paths of a VM snapshot's file system
//! (crates/vmfiles, mounted read-only) copied into a directory on the
//! appliance.
//!
//! The target is checked and opened beneath its `restore_roots` root;
//! the copy (`lifeboat_vmfiles::copy_out`) writes through that
//! descriptor's /proc path, so no path it takes can lead elsewhere. The
//! guest is untrusted input like an agent's tree: as in `restore`, an
//! operator gets no set-ID bits and no device nodes (counted in
//! `left_out`, never created even for a moment), and owners only under a
//! root with `owners = true`.

use super::vm_restore::in_dir;
use super::{JobFailure, JobHandle, JobOutput, JobResult};
use lifeboat_state::confine::{open_beneath, Confinement, Grant, Open, PathUse};
use lifeboat_store::Datastore;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct Request<'a> {
    pub snapshot: &'a str,
    pub paths: &'a [String],
    pub target: &'a str,
    pub disk: Option<&'a str>,
    pub partition: Option<&'a str>,
}

pub fn run(ds: &Arc<Datastore>, r: &Request<'_>, confine: &Confinement, grant: Grant, h: &JobHandle) -> JobResult {
    if r.paths.is_empty() {
        return Err(JobFailure::Invalid("name at least one guest path to restore".into()));
    }
    let place = confine.check(r.target, PathUse::RestoreTarget, grant)?;
    ds.refresh_index()?;
    let (sid, snap) = ds.resolve_snapshot(r.snapshot)?;
    h.set_phase("reading the guest's disk");
    let disk = lifeboat_vmfiles::SnapshotDisk::open(ds, &snap, r.disk)?;
    let fs = disk.mount(r.partition)?;
    // Every path is checked before anything is written.
    let sources = r.paths.iter().map(|p| fs.resolve(p)).collect::<Result<Vec<_>, _>>()?;
    let dir = open_beneath(&place, Open::CreateDir)?;
    let owners = unsafe { libc::geteuid() } == 0 && place.owners;
    h.set_phase("copying");
    h.log(&format!("copying {} from partition {} of disk {} of snapshot {} into {}", r.paths.join(", "), fs.partition.name, fs.disk.disk, sid.to_hex(), r.target));
    let p = &h.progress;
    p.scan_done.store(true, Ordering::Relaxed);
    // An admin's restore is the guest's files as they were; anyone else
    // gets no set-ID bits and no device nodes, never made even briefly.
    let policy = lifeboat_vmfiles::CopyPolicy { owners, set_id: grant.admin, special: grant.admin };
    let mut report = lifeboat_vmfiles::CopyReport::default();
    let on_file = |n: u64| {
        p.files.fetch_add(1, Ordering::Relaxed);
        p.bytes.fetch_add(n, Ordering::Relaxed);
    };
    for (path, src) in r.paths.iter().zip(&sources) {
        // The guest root lands in the target itself, not under a name.
        let name = src.strip_prefix(fs.root()).ok().and_then(|r| r.file_name()).map(|n| n.to_string_lossy().into_owned());
        let to = in_dir(&dir, name.as_deref().unwrap_or(""));
        lifeboat_vmfiles::copy_out(src, &to, path, policy, &mut report, &on_file, &|| p.cancelled()).map_err(|e| match e.kind() {
            std::io::ErrorKind::Interrupted => JobFailure::Cancelled,
            _ => JobFailure::Failed(format!("copying {path} into {}: {e}", r.target)),
        })?;
    }
    let outcome = super::outcome::VmRestoreFilesJobOutcome {
        snapshot: sid.to_hex(),
        disk: fs.disk.disk.clone(),
        partition: fs.partition.name.clone(),
        paths: r.paths.to_vec(),
        target: r.target.to_string(),
        left_out: report.left_out,
        files: report.files,
        dirs: report.dirs,
        bytes: report.bytes,
    };
    Ok(JobOutput::new(&outcome, report.warnings))
}
