//! VM files restore job: guest paths of a VM snapshot's file system
//! (crates/vmfiles, mounted read-only) copied into a directory on the
//! appliance.
//!
//! The target is checked and opened beneath its `restore_roots` root;
//! `cp` writes through that descriptor's /proc path, so no path it takes
//! can lead elsewhere. The guest is untrusted input like an agent's
//! tree: as in `restore`, an operator gets no set-ID bits and no device
//! nodes (counted in `left_out`), and owners only under a root with
//! `owners = true`.

use super::vm_restore::in_dir;
use super::{err, JobHandle, JobOutput, JobResult};
use lifeboat_state::confine::{open_beneath, Confinement, Grant, Open, PathUse};
use lifeboat_store::Datastore;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
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
        return Err("name at least one guest path to restore".into());
    }
    let place = confine.check(r.target, PathUse::RestoreTarget, grant).map_err(err)?;
    ds.refresh_index().map_err(err)?;
    let (sid, snap) = ds.resolve_snapshot(r.snapshot).map_err(err)?;
    h.set_phase("reading the guest's disk");
    let disk = lifeboat_vmfiles::SnapshotDisk::open(ds, &snap, r.disk).map_err(err)?;
    let fs = disk.mount(r.partition).map_err(err)?;
    // Every path is checked before anything is written.
    let sources = r.paths.iter().map(|p| fs.resolve(p)).collect::<Result<Vec<_>, _>>().map_err(err)?;
    let dir = open_beneath(&place, Open::CreateDir).map_err(err)?;
    let owners = unsafe { libc::geteuid() } == 0 && place.owners;
    h.set_phase("copying");
    h.log(&format!(
        "copying {} from partition {} of disk {} of snapshot {} into {}",
        r.paths.join(", "),
        fs.partition.name,
        fs.disk.disk,
        sid.to_hex(),
        r.target
    ));
    let p = &h.progress;
    p.scan_done.store(true, Ordering::Relaxed);
    let mut warnings = Vec::new();
    let mut left_out = 0u64;
    for (path, src) in r.paths.iter().zip(&sources) {
        if p.cancelled() {
            return Err("cancelled".into());
        }
        let name = src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| ".".into());
        let preserve = if owners { "mode,ownership,timestamps,links" } else { "mode,timestamps,links" };
        // `/.` copies a directory's contents, so the guest root lands in
        // the target itself rather than under a name of its own.
        let (from, to) = if name == "." { (src.join("."), in_dir(&dir, "")) } else { (src.clone(), in_dir(&dir, &name)) };
        let o = Command::new("cp")
            .args(["-R", "--no-dereference", "--remove-destination", &format!("--preserve={preserve}"), "--"])
            .arg(&from)
            .arg(&to)
            .output()
            .map_err(|e| format!("cannot run cp: {e}"))?;
        if !o.status.success() {
            return Err(format!("copying {path} into {}: {}", r.target, String::from_utf8_lossy(&o.stderr).trim()));
        }
        if !grant.admin {
            left_out += strip_special(&to, path, &mut warnings);
        }
    }
    Ok(JobOutput {
        result: serde_json::json!({
            "snapshot": sid.to_hex(), "disk": fs.disk.disk, "partition": fs.partition.name,
            "paths": r.paths, "target": r.target, "left_out": left_out,
        }),
        warnings,
    })
}

/// Removes device nodes, fifos and sockets and clears set-ID bits below
/// `at` (what `cp` just made): an operator's restore recreates none of
/// them. Returns how many entries were left out or changed.
fn strip_special(at: &Path, guest: &str, warnings: &mut Vec<String>) -> u64 {
    let mut n = 0;
    let mut todo = vec![at.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        let ft = m.file_type();
        let shown = || format!("{guest}{}", p.strip_prefix(at).map(|r| format!("/{}", r.display())).unwrap_or_default());
        if ft.is_block_device() || ft.is_char_device() || ft.is_fifo() || ft.is_socket() {
            let _ = std::fs::remove_file(&p);
            warnings.push(format!("{}: special file left out (only an admin restores those)", shown()));
            n += 1;
        } else if !ft.is_symlink() && m.mode() & 0o6000 != 0 {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m.mode() & 0o1777));
            warnings.push(format!("{}: set-ID bits cleared (only an admin restores those)", shown()));
            n += 1;
        }
        if ft.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                todo.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    n
}
