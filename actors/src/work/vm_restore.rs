//! VM restore job: a VM snapshot's disks to image files in a directory
//! on the appliance (`<disk>.raw` or `.qcow2`), with its hardware in
//! `vm.json`.

use super::{err, JobHandle, JobOutput, JobResult};
use lifeboat_store::Datastore;
use lifeboat_vm::image::restore_raw;
use std::path::Path;
use std::sync::atomic::Ordering;

pub fn run(ds: &Datastore, snapshot: &str, target: &str, format: &str, h: &JobHandle) -> JobResult {
    if format != "raw" && format != "qcow2" {
        return Err(format!("format {format:?}: use raw or qcow2"));
    }
    let (sid, snap) = ds.resolve_snapshot(snapshot).map_err(err)?;
    let vm = lifeboat_qemu::load_vm(ds, &snap).map_err(err)?;
    let (md, disks) = (&vm.md, &vm.disks);
    let target = Path::new(target);
    std::fs::create_dir_all(target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    let p = &h.progress;
    p.total_files.store(disks.len() as u64, Ordering::Relaxed);
    p.total_bytes.store(disks.iter().map(|n| n.size).sum(), Ordering::Relaxed);
    p.scan_done.store(true, Ordering::Relaxed);
    h.set_phase("restoring VM disks");
    h.log(&format!("restoring VM {} of snapshot {} into {}", md.name, sid.to_hex(), target.display()));
    std::fs::write(target.join("vm.json"), md.to_json()).map_err(|e| format!("writing {}: {e}", target.join("vm.json").display()))?;
    let mut files = Vec::new();
    for w in &vm.warnings {
        h.log(&format!("warning: {w}"));
    }
    for (d, n) in md.disks.iter().zip(disks) {
        if p.cancelled() {
            return Err("cancelled".into());
        }
        let id = &d.id;
        let raw = target.join(format!("{id}.raw"));
        restore_raw(ds, n, &raw).map_err(err)?;
        let file = if format == "qcow2" {
            let q = target.join(format!("{id}.qcow2"));
            let o = std::process::Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(&raw)
                .arg(&q)
                .output()
                .map_err(|e| format!("cannot run qemu-img: {e}"))?;
            if !o.status.success() {
                return Err(format!("qemu-img convert {}: {}", raw.display(), String::from_utf8_lossy(&o.stderr).trim()));
            }
            let _ = std::fs::remove_file(&raw);
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
