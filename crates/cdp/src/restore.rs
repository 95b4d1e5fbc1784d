//! A moment written out: as new disk images (restore), or over the
//! protected VM's own disk while the VM is stopped (rollback). Both serve
//! the moment on a private NBD socket and let `qemu-img convert` copy
//! it: zeroes are skipped, any image format can be written, and qemu-img
//! takes QEMU's image lock on the target, so a disk a running VM holds is
//! refused rather than overwritten under it.

use crate::{CdpError, PointInTime, Result};
use lifeboat_nbd::{Export, Server, ServerConfig};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// How the target is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// A new image file (refused if the file exists).
    Create,
    /// Over an existing image of the same size (a rollback).
    Overwrite,
}

/// Writes `point` (disk `disk`) to `target` as a `format` image (`raw`,
/// `qcow2`, or for `Overwrite` the existing image's own format).
pub fn copy_point(point: PointInTime, disk: &str, target: &Path, format: &str, mode: CopyMode) -> Result<()> {
    if mode == CopyMode::Create && target.exists() {
        return Err(CdpError::Invalid(format!("{} exists already: restore into an empty directory", target.display())));
    }
    let sockets = lifeboat_qemu::SocketDir::create("lbcdpw").map_err(|e| crate::io_err(Path::new("/run/lifeboat"), e))?;
    let sock = sockets.path().join("nbd.sock");
    let server = Server::new(ServerConfig::default());
    server.add_export(Export::new(disk.to_string(), Arc::new(point)));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("lifeboat-cdp-copy").enable_all().build().map_err(|e| crate::io_err(&sock, e))?;
    server.spawn_unix(&rt, &sock).map_err(|e| crate::io_err(&sock, e))?;
    let mut c = Command::new("qemu-img");
    c.args(["convert", "-f", "raw"]).arg(format!("nbd+unix:///{disk}?socket={}", sock.display())).args(["-O", format]);
    if mode == CopyMode::Overwrite {
        // Into the existing image: no new file, its format kept.
        c.arg("-n");
    }
    c.arg(target);
    let o = c.output().map_err(|e| CdpError::Invalid(format!("running qemu-img (install qemu-utils): {e}")))?;
    drop(rt);
    if o.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    if err.contains("lock") {
        return Err(CdpError::Invalid(format!("{} is in use (does the VM still run?): stop the VM before rolling its disk back ({err})", target.display())));
    }
    Err(CdpError::Invalid(format!("writing disk {disk} to {}: {err}", target.display())))
}

/// The format of an existing image (`qemu-img info`), to roll back into
/// it as it is.
pub fn image_format(path: &Path) -> Result<String> {
    let o = Command::new("qemu-img").args(["info", "-U", "--output=json"]).arg(path).output().map_err(|e| CdpError::Invalid(format!("running qemu-img (install qemu-utils): {e}")))?;
    if !o.status.success() {
        return Err(CdpError::Invalid(format!("{}: {}", path.display(), String::from_utf8_lossy(&o.stderr).trim())));
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| CdpError::Invalid(format!("qemu-img info {}: {e}", path.display())))?;
    v["format"].as_str().map(str::to_string).ok_or_else(|| CdpError::Invalid(format!("qemu-img info {}: no format", path.display())))
}
