//! VM restore job: a VM snapshot's disks to image files in a directory
//! on the appliance (`<disk>.raw` or `.qcow2`), with its hardware in
//! `vm.json`; or, with a platform, restored for that platform by
//! `lifeboat_convert` (mapped hardware, its disk format and description,
//! guest repair).
//!
//! The directory is checked and opened beneath its `restore_roots` root;
//! every file is made in it by name relative to that descriptor
//! (`O_EXCL | O_NOFOLLOW`, after removing what was there), and disk ids
//! from the snapshot (untrusted) must be plain names.

use super::{err, JobFailure, JobHandle, JobOutput, JobResult};
use lifeboat_state::confine::{open_beneath, Confinement, Grant, Open, PathUse};
use lifeboat_store::Datastore;
use lifeboat_vm::image::restore_raw;
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

pub fn run(ds: &Datastore, snapshot: &str, target: &str, format: &str, confine: &Confinement, grant: Grant, h: &JobHandle) -> JobResult {
    if format != "raw" && format != "qcow2" {
        return Err(JobFailure::Invalid(format!("format {format:?}: use raw or qcow2")));
    }
    let place = confine.check(target, PathUse::RestoreTarget, grant)?;
    let (sid, snap) = ds.resolve_snapshot(snapshot)?;
    let vm = lifeboat_qemu::load_vm(ds, &snap)?;
    let (md, disks) = (&vm.md, &vm.disks);
    let ids: Vec<String> = md.disks.iter().map(|d| d.id.clone()).collect();
    if let Some(bad) = ids.iter().find(|id| lifeboat_state::confine::check_plain_name(id).is_err()) {
        return Err(JobFailure::Refused(format!("the snapshot names a disk {bad:?}, which is no plain file name; it is not restored")));
    }
    let dir = open_beneath(&place, Open::CreateDir)?;
    let target = Path::new(target);
    let p = &h.progress;
    p.total_files.store(disks.len() as u64, Ordering::Relaxed);
    p.total_bytes.store(disks.iter().map(|n| n.size).sum(), Ordering::Relaxed);
    p.scan_done.store(true, Ordering::Relaxed);
    h.set_phase("restoring VM disks");
    h.log(&format!("restoring VM {} of snapshot {} into {}", md.name, sid.to_hex(), target.display()));
    let json = target.join("vm.json");
    create_in(&dir, "vm.json").and_then(|mut f| f.write_all(&md.to_json())).map_err(|e| JobFailure::Failed(format!("writing {}: {e}", json.display())))?;
    let mut files = Vec::new();
    for w in &vm.warnings {
        h.log(&format!("warning: {w}"));
    }
    for (n, id) in disks.iter().zip(&ids) {
        if p.cancelled() {
            return Err(JobFailure::Cancelled);
        }
        let raw_name = format!("{id}.raw");
        let raw = target.join(&raw_name);
        // restore_raw creates its file itself (create_new: O_EXCL, which
        // never follows a symlink); it gets the directory through our
        // descriptor, so the path it opens cannot lead elsewhere.
        remove_in(&dir, &raw_name);
        restore_raw(ds, n, &in_dir(&dir, &raw_name)).map_err(|e| err(e).context(raw.display()))?;
        let file = if format == "qcow2" {
            let q_name = format!("{id}.qcow2");
            let q = target.join(&q_name);
            // qemu-img opens its output with O_TRUNC and follows links:
            // it writes through the /proc path of a file we created.
            let out = create_in(&dir, &q_name).map_err(|e| JobFailure::Failed(format!("creating {}: {e}", q.display())))?;
            let o = std::process::Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(in_dir(&dir, &raw_name))
                .arg(format!("/proc/{}/fd/{}", std::process::id(), out.as_raw_fd()))
                .output()
                .map_err(|e| JobFailure::Failed(format!("cannot run qemu-img: {e}")))?;
            if !o.status.success() {
                return Err(JobFailure::Failed(format!("qemu-img convert {}: {}", raw.display(), String::from_utf8_lossy(&o.stderr).trim())));
            }
            remove_in(&dir, &raw_name);
            q
        } else {
            raw
        };
        p.files.fetch_add(1, Ordering::Relaxed);
        p.bytes.fetch_add(n.size, Ordering::Relaxed);
        files.push(file.display().to_string());
    }
    Ok(JobOutput::new(&super::outcome::VmRestoreJobOutcome { snapshot: sid.to_hex(), vm: md.name.clone(), files }, vm.warnings.clone()))
}

/// What a restore for other platforms asks for.
pub struct ForTargets<'a> {
    /// `PLATFORM` or `PLATFORM:FORMAT` each.
    pub platforms: Vec<String>,
    /// The format of targets that name none.
    pub format: Option<&'a str>,
    pub maps: &'a [String],
    pub repair: bool,
    /// Windows driver source (`windows_drivers`).
    pub drivers: Option<&'a Path>,
}

/// A restore for other platforms (kvm, openstack, vmware, hyperv) into
/// `target` (one platform) or `target/<platform>` each (several, from
/// one read of the datastore), confined like `run`: every output
/// directory is opened beneath its root and every file is made through
/// that descriptor.
pub fn run_for_targets(ds: &std::sync::Arc<Datastore>, snapshot: &str, target: &str, t: &ForTargets, confine: &Confinement, grant: Grant, h: &JobHandle) -> JobResult {
    let format = t.format.map(str::parse::<lifeboat_convert::DiskFormat>).transpose().map_err(JobFailure::Invalid)?;
    let specs = lifeboat_convert::parse_targets(&t.platforms, format).map_err(JobFailure::Invalid)?;
    let (sid, snap) = ds.resolve_snapshot(snapshot)?;
    let vm = lifeboat_qemu::load_vm(ds, &snap)?;
    let p = &h.progress;
    p.total_files.store((vm.disks.len() * specs.len()) as u64, Ordering::Relaxed);
    p.total_bytes.store(vm.disks.iter().map(|n| n.size).sum::<u64>() * specs.len() as u64, Ordering::Relaxed);
    p.scan_done.store(true, Ordering::Relaxed);
    h.set_phase(if t.repair { "repairing the guest and writing VM disks" } else { "writing VM disks" });
    let names: Vec<String> = specs.iter().map(|s| s.subdir.clone().unwrap_or_else(|| s.platform.to_string())).collect();
    h.log(&format!("restoring VM {} of snapshot {} for {} into {target}", vm.md.name, sid.to_hex(), names.join(", ")));
    for w in &vm.warnings {
        h.log(&format!("warning: {w}"));
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let tcg = lifeboat_qemu::accel::choose(lifeboat_qemu::Accel::Auto).accel != lifeboat_qemu::Accel::Kvm;
    // The descriptors stay open while the restore writes through them.
    let mut dirs = Vec::new();
    let mut targets = Vec::new();
    for s in &specs {
        let shown = match &s.subdir {
            Some(sub) => format!("{}/{sub}", target.trim_end_matches('/')),
            None => target.to_string(),
        };
        let place = confine.check(&shown, PathUse::RestoreTarget, grant)?;
        let dir = open_beneath(&place, Open::CreateDir)?;
        let opts = lifeboat_convert::TargetRestoreOptions {
            platform: s.platform,
            format: s.format,
            maps: t.maps.to_vec(),
            repair: t.repair,
            workdir: ds.root().join("tmp").join(format!("restore-{}-{stamp}-{}", sid.short(), s.subdir.as_deref().unwrap_or("t"))),
            out_display: Some(PathBuf::from(&shown)),
            tcg,
            drivers: t.drivers.map(Path::to_path_buf),
        };
        targets.push((PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), dir.as_raw_fd())), opts));
        dirs.push((dir, shown));
    }
    let log = |l: &str| h.log(l);
    let results = lifeboat_convert::restore_for_targets(ds.clone(), &vm, &targets, &log).map_err(err)?;
    let mut done = Vec::new();
    let mut failed = Vec::new();
    let mut warnings = vm.warnings.clone();
    for ((_, shown), r) in dirs.iter().zip(results) {
        match r {
            Ok(r) => {
                let mut v = serde_json::to_value(&r).map_err(err)?;
                v["target"] = shown.clone().into();
                v["files"] = r.files.iter().map(|f| Path::new(shown).join(f).display().to_string()).collect::<Vec<_>>().into();
                warnings.extend(r.warnings.iter().filter(|w| !vm.warnings.contains(w)).cloned());
                done.push(v);
                p.files.fetch_add(vm.disks.len() as u64, Ordering::Relaxed);
                p.bytes.fetch_add(vm.disks.iter().map(|n| n.size).sum(), Ordering::Relaxed);
            }
            // (a failed repair's steps are in the job's log already)
            Err(lifeboat_convert::restore::TargetRestoreError::Repair { msg, .. }) => failed.push(msg),
            Err(e) => failed.push(format!("{shown}: {e}")),
        }
    }
    if let Some(msg) = lifeboat_convert::failure_message(&failed, specs.len()) {
        return Err(JobFailure::Failed(msg));
    }
    let mut result = if done.len() == 1 {
        done.remove(0)
    } else {
        let files: Vec<serde_json::Value> = done.iter().flat_map(|v| v["files"].as_array().cloned().unwrap_or_default()).collect();
        serde_json::json!({ "vm": vm.md.name, "files": files, "targets": done })
    };
    result["snapshot"] = sid.to_hex().into();
    Ok(JobOutput { result, warnings })
}

/// `name` in the directory `dir` as a path through the descriptor (by
/// our pid, not `self`: qemu-img opens these paths too).
pub(crate) fn in_dir(dir: &OwnedFd, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{}/fd/{}/{name}", std::process::id(), dir.as_raw_fd()))
}

pub(crate) fn remove_in(dir: &OwnedFd, name: &str) {
    if let Ok(c) = CString::new(name) {
        unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
    }
}

/// A new file `name` in `dir` (what was there is removed first; a
/// symlink is never followed).
fn create_in(dir: &OwnedFd, name: &str) -> std::io::Result<File> {
    remove_in(dir, name);
    let c = CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}
