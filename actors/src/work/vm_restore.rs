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

use super::{err, JobHandle, JobOutput, JobResult};
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
        return Err(format!("format {format:?}: use raw or qcow2"));
    }
    let place = confine.check(target, PathUse::RestoreTarget, grant).map_err(err)?;
    let (sid, snap) = ds.resolve_snapshot(snapshot).map_err(err)?;
    let vm = lifeboat_qemu::load_vm(ds, &snap).map_err(err)?;
    let (md, disks) = (&vm.md, &vm.disks);
    let ids: Vec<String> = md.disks.iter().map(|d| d.id.clone()).collect();
    if let Some(bad) = ids.iter().find(|id| lifeboat_state::confine::check_plain_name(id).is_err()) {
        return Err(format!("the snapshot names a disk {bad:?}, which is no plain file name; it is not restored"));
    }
    let dir = open_beneath(&place, Open::CreateDir).map_err(err)?;
    let target = Path::new(target);
    let p = &h.progress;
    p.total_files.store(disks.len() as u64, Ordering::Relaxed);
    p.total_bytes.store(disks.iter().map(|n| n.size).sum(), Ordering::Relaxed);
    p.scan_done.store(true, Ordering::Relaxed);
    h.set_phase("restoring VM disks");
    h.log(&format!("restoring VM {} of snapshot {} into {}", md.name, sid.to_hex(), target.display()));
    let json = target.join("vm.json");
    create_in(&dir, "vm.json")
        .and_then(|mut f| f.write_all(&md.to_json()))
        .map_err(|e| format!("writing {}: {e}", json.display()))?;
    let mut files = Vec::new();
    for w in &vm.warnings {
        h.log(&format!("warning: {w}"));
    }
    for (n, id) in disks.iter().zip(&ids) {
        if p.cancelled() {
            return Err("cancelled".into());
        }
        let raw_name = format!("{id}.raw");
        let raw = target.join(&raw_name);
        // restore_raw creates its file itself (create_new: O_EXCL, which
        // never follows a symlink); it gets the directory through our
        // descriptor, so the path it opens cannot lead elsewhere.
        remove_in(&dir, &raw_name);
        restore_raw(ds, n, &in_dir(&dir, &raw_name)).map_err(|e| format!("{}: {}", raw.display(), err(e)))?;
        let file = if format == "qcow2" {
            let q_name = format!("{id}.qcow2");
            let q = target.join(&q_name);
            // qemu-img opens its output with O_TRUNC and follows links:
            // it writes through the /proc path of a file we created.
            let out = create_in(&dir, &q_name).map_err(|e| format!("creating {}: {e}", q.display()))?;
            let o = std::process::Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(in_dir(&dir, &raw_name))
                .arg(format!("/proc/{}/fd/{}", std::process::id(), out.as_raw_fd()))
                .output()
                .map_err(|e| format!("cannot run qemu-img: {e}"))?;
            if !o.status.success() {
                return Err(format!("qemu-img convert {}: {}", raw.display(), String::from_utf8_lossy(&o.stderr).trim()));
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
    Ok(JobOutput { result: serde_json::json!({ "snapshot": sid.to_hex(), "vm": md.name, "files": files }), warnings: vm.warnings.clone() })
}

/// A restore for another platform (`platform`: kvm, openstack, vmware,
/// hyperv) into `target`, confined like `run`: the output directory is
/// opened beneath its root and every file is made through that
/// descriptor.
#[allow(clippy::too_many_arguments)]
pub fn run_for_target(ds: &std::sync::Arc<Datastore>, snapshot: &str, target: &str, format: Option<&str>, platform: &str, maps: &[String], repair: bool, confine: &Confinement, grant: Grant, h: &JobHandle) -> JobResult {
    let platform: lifeboat_convert::Platform = platform.parse()?;
    let format = format.map(str::parse::<lifeboat_convert::DiskFormat>).transpose()?;
    let place = confine.check(target, PathUse::RestoreTarget, grant).map_err(err)?;
    let (sid, snap) = ds.resolve_snapshot(snapshot).map_err(err)?;
    let vm = lifeboat_qemu::load_vm(ds, &snap).map_err(err)?;
    let dir = open_beneath(&place, Open::CreateDir).map_err(err)?;
    let p = &h.progress;
    p.total_files.store(vm.disks.len() as u64, Ordering::Relaxed);
    p.total_bytes.store(vm.disks.iter().map(|n| n.size).sum(), Ordering::Relaxed);
    p.scan_done.store(true, Ordering::Relaxed);
    h.set_phase(if repair { "repairing the guest and writing VM disks" } else { "writing VM disks" });
    h.log(&format!("restoring VM {} of snapshot {} for {platform} into {target}", vm.md.name, sid.to_hex()));
    for w in &vm.warnings {
        h.log(&format!("warning: {w}"));
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let opts = lifeboat_convert::TargetRestoreOptions {
        platform,
        format,
        maps: maps.to_vec(),
        repair,
        workdir: ds.root().join("tmp").join(format!("restore-{}-{stamp}", sid.short())),
        out_display: Some(PathBuf::from(target)),
        tcg: lifeboat_qemu::accel::choose(lifeboat_qemu::Accel::Auto).accel != lifeboat_qemu::Accel::Kvm,
        // Jobs repair Windows guests with the drivers Windows ships (or
        // the guest has); a driver source is a CLI option for now.
        drivers: None,
    };
    let out = PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), dir.as_raw_fd()));
    let log = |l: &str| h.log(l);
    let r = match lifeboat_convert::restore_for_target(ds.clone(), &vm, &out, &opts, &log) {
        Ok(r) => r,
        Err(lifeboat_convert::restore::TargetRestoreError::Repair { msg, report }) => {
            for s in report.iter().flat_map(|r| r.steps.iter()) {
                h.log(&format!("repair {}: {:?}: {}", s.step, s.outcome, s.details.join("; ")));
            }
            return Err(msg);
        }
        Err(e) => return Err(e.to_string()),
    };
    p.files.store(vm.disks.len() as u64, Ordering::Relaxed);
    p.bytes.store(vm.disks.iter().map(|n| n.size).sum(), Ordering::Relaxed);
    let mut result = serde_json::to_value(&r).map_err(err)?;
    result["snapshot"] = sid.to_hex().into();
    result["files"] = r.files.iter().map(|f| Path::new(target).join(f).display().to_string()).collect::<Vec<_>>().into();
    Ok(JobOutput { result, warnings: r.warnings.clone() })
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
