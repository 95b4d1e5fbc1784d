//! A point-in-time export of every disk of a running VM.
//!
//! For each disk a temporary qcow2 overlay (the *fleece*) gets the running
//! disk as its backing node, and a `blockdev-backup sync=none` job copies
//! each old block into it just before the guest overwrites it. The fleece
//! node therefore shows the disk as it was when the job started. One QMP
//! `transaction` starts the jobs of all disks together with the dirty
//! bitmap rotation. That makes the backup crash-consistent across disks,
//! and makes the exported bitmap hold exactly the blocks changed since the
//! previous backup up to this point.
//!
//! Bitmaps: each disk carries one recording bitmap, `lifeboat-a` or
//! `lifeboat-b`, persistent on qcow2. A backup disables the current one,
//! exports it, and starts the other. On success the old one is removed. On
//! failure it is merged into the new one, so the next backup still sees
//! every change since the last good one. A missing or inconsistent bitmap
//! (the VM restarted on a raw disk, QEMU crashed) means a full read, and
//! the reason is reported.

use crate::inventory::DiskNode;
use crate::qmp::{Qmp, QmpError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BITMAPS: [&str; 2] = ["lifeboat-a", "lifeboat-b"];

/// One disk of a [`FleeceSession`]: its frozen view exported read-only
/// over QEMU's NBD server.
#[derive(Clone, Debug)]
pub struct DiskExport {
    /// Guest device id ([`DiskNode::device`]); also the export name.
    pub device: String,
    /// The live block node whose point in time is exported; it carries the
    /// dirty bitmaps.
    pub node: String,
    /// Disk size in bytes.
    pub size: u64,
    /// NBD export name on the session's socket.
    pub export: String,
    /// The exported bitmap (`qemu:dirty-bitmap:<name>`) for an
    /// incremental read; `None` means read everything.
    pub bitmap: Option<String>,
    /// Why a full read is needed when an incremental one was asked for.
    pub full_reason: Option<String>,
    new_bitmap: String,
    fleece_node: String,
    fleece_file: PathBuf,
    job: String,
}

/// A point in time of a VM's disks, exported by QEMU until
/// [`FleeceSession::finish`]. QEMU keeps copying overwritten blocks into the
/// overlays meanwhile, so end it promptly. Dropping it without `finish`
/// leaves the jobs, exports and overlays in QEMU.
pub struct FleeceSession {
    /// QEMU's NBD server socket: `nbd+unix:///<export>?socket=<this>`.
    pub socket: PathBuf,
    /// The exported disks, in the order given to [`FleeceSession::start`].
    pub disks: Vec<DiskExport>,
    finished: bool,
}

/// Why a point in time could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FleeceError {
    /// A QMP command failed (QEMU refused the transaction, the export, ...).
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// `qemu-img create` of a fleece overlay failed.
    #[error("creating the temporary overlay {path}: {msg}")]
    Overlay {
        /// The overlay file in the work directory.
        path: PathBuf,
        /// qemu-img's own message.
        msg: String,
    },
}

/// The recording bitmaps on `node`: (name, inconsistent).
fn bitmaps(q: &mut Qmp, node: &str) -> Result<Vec<(String, bool)>, QmpError> {
    let nodes = q.execute("query-named-block-nodes", json!({ "flat": true }))?;
    let mut out = Vec::new();
    for n in nodes.as_array().into_iter().flatten() {
        if n["node-name"] != node {
            continue;
        }
        for b in n["dirty-bitmaps"].as_array().into_iter().flatten() {
            let name = b["name"].as_str().unwrap_or("").to_string();
            if BITMAPS.contains(&name.as_str()) {
                out.push((name, b["inconsistent"].as_bool().unwrap_or(false) || !b["recording"].as_bool().unwrap_or(true)));
            }
        }
    }
    Ok(out)
}

/// Longest unix socket path (sun_path holds 108 bytes with the NUL).
const SUN_PATH_MAX: usize = 107;

/// `workdir/nbd.sock`, or, when that is too long for a unix socket (a
/// datastore deep in the tree), a fresh name in the system's temp dir.
fn socket_path(workdir: &Path) -> PathBuf {
    let p = workdir.join("nbd.sock");
    if p.as_os_str().len() <= SUN_PATH_MAX {
        return p;
    }
    let tag = workdir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "vm".into());
    let short = std::env::temp_dir().join(format!("lifeboat-{}.sock", &tag[..tag.len().min(40)]));
    if short.as_os_str().len() <= SUN_PATH_MAX {
        short
    } else {
        PathBuf::from(format!("/tmp/lifeboat-{}.sock", std::process::id()))
    }
}

impl FleeceSession {
    /// Freezes the disks' current state and exports it. `incremental`
    /// asks for the changed-block bitmaps. `workdir` holds the overlays
    /// and the socket (it must be on a filesystem QEMU can write).
    pub fn start(q: &mut Qmp, disks: &[DiskNode], workdir: &Path, incremental: bool) -> Result<Self, FleeceError> {
        let socket = socket_path(workdir);
        let mut exports = Vec::new();
        let mut actions = Vec::new();
        for (i, d) in disks.iter().enumerate() {
            let existing = bitmaps(q, &d.node)?;
            let (old, reason) = match existing.as_slice() {
                [] if incremental => (None, Some("no changed-block bitmap on the disk yet (first backup, or the VM restarted on a raw disk)".to_string())),
                [] => (None, None),
                [(name, false)] if incremental => (Some(name.clone()), None),
                [(name, true)] if incremental => {
                    q.execute("block-dirty-bitmap-remove", json!({ "node": d.node, "name": name }))?;
                    (None, Some(format!("bitmap {name} is inconsistent (QEMU stopped uncleanly)")))
                }
                _ => {
                    // Not asked for, or both bitmaps present (a crashed run):
                    // start over with a full read.
                    for (name, _) in &existing {
                        q.execute("block-dirty-bitmap-remove", json!({ "node": d.node, "name": name }))?;
                    }
                    (None, incremental.then(|| "changed-block bitmaps were left by an interrupted backup".to_string()))
                }
            };
            let new = if old.as_deref() == Some(BITMAPS[0]) { BITMAPS[1] } else { BITMAPS[0] };
            let fleece_node = format!("lifeboat-fleece{i}");
            let fleece_file = workdir.join(format!("fleece{i}.qcow2"));
            crate::qemu_img_create(&fleece_file, "qcow2", d.size).map_err(|msg| FleeceError::Overlay { path: fleece_file.clone(), msg })?;
            q.execute(
                "blockdev-add",
                json!({
                    "driver": "qcow2",
                    "node-name": fleece_node,
                    "file": { "driver": "file", "filename": fleece_file },
                    "backing": d.node,
                }),
            )?;
            if let Some(o) = &old {
                actions.push(json!({ "type": "block-dirty-bitmap-disable", "data": { "node": d.node, "name": o } }));
            }
            actions.push(json!({
                "type": "block-dirty-bitmap-add",
                "data": { "node": d.node, "name": new, "persistent": d.format == "qcow2" }
            }));
            let job = format!("lifeboat-fleece{i}");
            actions.push(json!({
                "type": "blockdev-backup",
                "data": { "device": d.node, "target": fleece_node, "sync": "none", "job-id": job }
            }));
            exports.push(DiskExport {
                device: d.device.clone(),
                node: d.node.clone(),
                size: d.size,
                export: d.device.clone(),
                bitmap: old,
                full_reason: reason,
                new_bitmap: new.to_string(),
                fleece_node,
                fleece_file,
                job,
            });
        }
        let mut s = FleeceSession { socket, disks: exports, finished: false };
        if let Err(e) = s.begin(q, actions) {
            s.cleanup(q, false);
            return Err(e);
        }
        Ok(s)
    }

    fn begin(&mut self, q: &mut Qmp, actions: Vec<Value>) -> Result<(), FleeceError> {
        q.execute("transaction", json!({ "actions": actions }))?;
        q.execute("nbd-server-start", json!({ "addr": { "type": "unix", "data": { "path": self.socket } } }))?;
        for d in &self.disks {
            let mut args = json!({
                "type": "nbd",
                "id": format!("lifeboat-export-{}", d.device),
                "node-name": d.fleece_node,
                "name": d.export,
                "writable": false,
            });
            if let Some(b) = &d.bitmap {
                args["bitmaps"] = json!([b]);
            }
            q.execute("block-export-add", args)?;
        }
        Ok(())
    }

    /// NBD URI of a disk's export.
    pub fn uri(&self, d: &DiskExport) -> String {
        format!("nbd+unix:///{}?socket={}", d.export, self.socket.display())
    }

    /// Ends the point in time: exports, jobs and overlays go. `success`
    /// decides what happens to the exported bitmaps (see module doc).
    pub fn finish(mut self, q: &mut Qmp, success: bool) -> Result<(), FleeceError> {
        self.finished = true;
        self.cleanup(q, success);
        Ok(())
    }

    /// Best effort: each step runs even if an earlier one failed, so a
    /// half-started session is taken apart as far as it got.
    fn cleanup(&mut self, q: &mut Qmp, success: bool) {
        for d in &self.disks {
            if q.execute("block-export-del", json!({ "id": format!("lifeboat-export-{}", d.device) })).is_ok() {
                let id = format!("lifeboat-export-{}", d.device);
                let _ = q.wait_event("BLOCK_EXPORT_DELETED", Duration::from_secs(30), |e| e["id"] == id.as_str());
            }
        }
        let _ = q.execute("nbd-server-stop", json!({}));
        for d in &self.disks {
            if q.execute("block-job-cancel", json!({ "device": d.job, "force": true })).is_ok() {
                let job = d.job.clone();
                let _ = q.wait_event("BLOCK_JOB_CANCELLED", Duration::from_secs(30), |e| e["device"] == job.as_str());
            }
            let _ = q.execute("blockdev-del", json!({ "node-name": d.fleece_node }));
            let _ = std::fs::remove_file(&d.fleece_file);
            if let Some(old) = &d.bitmap {
                if !success {
                    let _ = q.execute("block-dirty-bitmap-merge", json!({ "node": d.node, "target": d.new_bitmap, "bitmaps": [old] }));
                }
                let _ = q.execute("block-dirty-bitmap-remove", json!({ "node": d.node, "name": old }));
            } else if !success {
                // A failed full read: the next one must be full too.
                let _ = q.execute("block-dirty-bitmap-remove", json!({ "node": d.node, "name": d.new_bitmap }));
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_fits_a_unix_socket() {
        let short = Path::new("/var/lib/lifeboat/datastores/default/tmp/vm-ab12");
        assert_eq!(socket_path(short), short.join("nbd.sock"));
        let deep = PathBuf::from(format!("/{}/tmp/vm-abb47901eaa60a1d54fd2e9221128d52", "d".repeat(90)));
        let p = socket_path(&deep);
        assert!(p.as_os_str().len() <= SUN_PATH_MAX, "{}", p.display());
        assert!(p.to_string_lossy().contains("vm-abb47901eaa60a1d54fd2e9221128d52"), "{}", p.display());
    }
}
