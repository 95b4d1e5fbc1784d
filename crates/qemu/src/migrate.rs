//! Migrate back: a VM running from NBD exports (instant restore) moves
//! onto local images while it runs. For each disk, `blockdev-mirror`
//! copies the export into the target image and keeps the two in step;
//! once the job is ready, `block-job-complete` pivots the guest's device
//! onto the target; the NBD node is then deleted, which closes the
//! connection to the export. The guest never stops.

use crate::qmp::{Qmp, QmpError};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Why migrating a disk back failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A QMP command failed or an event did not come in time.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// `qemu-img create` of the target failed, or the mirror job ended
    /// with an error (the message says which).
    #[error("{0}")]
    Other(String),
}

/// The block nodes of the VM that read from NBD: (device id, node name, size).
pub fn nbd_disks(q: &mut Qmp) -> Result<Vec<(String, String, u64)>, QmpError> {
    let mut out = Vec::new();
    for d in crate::inventory::disks(q)? {
        let nodes = q.execute("query-named-block-nodes", json!({ "flat": true }))?;
        let is_nbd = nodes.as_array().into_iter().flatten().any(|n| n["node-name"] == d.node.as_str() && n["drv"] == "nbd");
        if is_nbd {
            out.push((d.device, d.node, d.size));
        }
    }
    Ok(out)
}

/// Mirrors `node` into a new image `target` (format `fmt`) and pivots.
pub fn migrate_disk(q: &mut Qmp, node: &str, size: u64, target: &Path, fmt: &str) -> Result<(), MigrateError> {
    crate::qemu_img_create(target, fmt, size).map_err(|e| MigrateError::Other(format!("qemu-img create {}: {e}", target.display())))?;
    let tnode = format!("lifeboat-migrate-{node}");
    let job = format!("lifeboat-migrate-{node}");
    q.execute("blockdev-add", json!({ "driver": fmt, "node-name": tnode, "file": { "driver": "file", "filename": target } }))?;
    let started = q.execute("blockdev-mirror", json!({ "job-id": job, "device": node, "target": tnode, "sync": "full" }));
    if let Err(e) = started {
        let _ = q.execute("blockdev-del", json!({ "node-name": tnode }));
        return Err(e.into());
    }
    let ready = q.wait_event("BLOCK_JOB_READY", Duration::from_secs(3600), |d| d["device"] == job.as_str());
    if let Err(e) = ready {
        let _ = q.execute("block-job-cancel", json!({ "device": job, "force": true }));
        return Err(e.into());
    }
    q.execute("block-job-complete", json!({ "device": job }))?;
    let done = q.wait_event("BLOCK_JOB_COMPLETED", Duration::from_secs(600), |d| d["device"] == job.as_str())?;
    if let Some(err) = done["data"]["error"].as_str() {
        return Err(MigrateError::Other(format!("mirroring {node} failed: {err}")));
    }
    // The device now uses the target; the NBD node is unused: close it.
    q.execute("blockdev-del", json!({ "node-name": node }))?;
    Ok(())
}
