//! Read-only loop devices and mounts, each undone when its guard drops.

use crate::{Partition, Result, VmFilesError};
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| VmFilesError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        return Err(VmFilesError::Command { command, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A read-only loop device over a byte range of a file; detached on drop.
#[derive(Debug)]
pub struct LoopDevice {
    device: PathBuf,
}

impl LoopDevice {
    /// Attaches `image` bytes `offset..offset+size` read-only.
    pub fn attach(image: &Path, offset: u64, size: u64) -> Result<Self> {
        let device = run(Command::new("losetup").args(["--find", "--show", "--read-only", "--offset", &offset.to_string(), "--sizelimit", &size.to_string()]).arg(image))?;
        tracing::debug!(image = %image.display(), offset, size, %device, "loop device attached");
        Ok(LoopDevice { device: PathBuf::from(device) })
    }

    /// The device node, e.g. `/dev/loop3`.
    pub fn path(&self) -> &Path {
        &self.device
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("losetup").arg("--detach").arg(&self.device)) {
            tracing::warn!(device = %self.device.display(), "cannot detach loop device: {e}");
        }
    }
}

/// Mount type and options that read `fstype` without writing to it.
pub(crate) fn mount_args(fstype: &str) -> Result<(&'static str, &'static str)> {
    Ok(match fstype {
        // noload: do not replay the journal; a replay writes.
        "ext4" | "ext3" => ("ext4", "ro,noload"),
        "ext2" => ("ext2", "ro"),
        // nouuid: a clone of the guest's disk may be mounted on the
        // appliance at the same time (another snapshot of the same VM).
        "xfs" => ("xfs", "ro,norecovery,nouuid"),
        "btrfs" => ("btrfs", "ro,rescue=nologreplay"),
        "vfat" => ("vfat", "ro"),
        // ntfs-3g is FUSE (fuseblk), there on every kernel with FUSE.
        "ntfs" => ("ntfs-3g", "ro"),
        other => return Err(VmFilesError::UnsupportedFilesystem { fstype: other.to_string() }),
    })
}

/// A partition's file system mounted read-only on a private temporary
/// directory. Drop unmounts, detaches the loop device and removes the
/// directory, in that order.
#[derive(Debug)]
pub struct MountedFs {
    dir: Option<tempfile::TempDir>,
    /// False when the files were copied out instead (see `copy_fat`).
    mounted: bool,
    // Dropped after the unmount in Drop: the mount holds the device.
    _loop: LoopDevice,
}

impl MountedFs {
    /// Mounts `partition` of the disk image at `image`.
    pub fn mount(image: &Path, partition: &Partition) -> Result<Self> {
        if let Some(reason) = &partition.unsupported {
            return Err(VmFilesError::Unsupported { path: image.to_path_buf(), name: partition.name.clone(), reason: reason.clone() });
        }
        let Some(fstype) = &partition.fstype else {
            return Err(VmFilesError::NoFilesystem { path: image.to_path_buf(), name: partition.name.clone() });
        };
        let (kind, options) = mount_args(fstype)?;
        let dev = LoopDevice::attach(image, partition.start, partition.size)?;
        let dir = crate::cleanup::private_dir("fs")?;
        if kind == "vfat" && !kernel_has("vfat") {
            copy_fat(dev.path(), dir.path())?;
            tracing::debug!(image = %image.display(), partition = %partition.name, dir = %dir.path().display(), "FAT copied out with mtools");
            return Ok(MountedFs { dir: Some(dir), mounted: false, _loop: dev });
        }
        run(Command::new("mount").args(["-t", kind, "-o", options]).arg(dev.path()).arg(dir.path()))?;
        tracing::debug!(image = %image.display(), partition = %partition.name, fstype, dir = %dir.path().display(), "mounted");
        Ok(MountedFs { dir: Some(dir), mounted: true, _loop: dev })
    }

    /// Where the guest's files are.
    pub fn root(&self) -> &Path {
        self.dir.as_ref().expect("set until drop").path()
    }
}

impl Drop for MountedFs {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        if !self.mounted {
            return;
        }
        match run(Command::new("umount").arg(dir.path())) {
            Ok(_) => drop(dir),
            Err(e) => {
                // Removing the directory would walk into the still-mounted
                // guest file system; leave it for the operator.
                tracing::warn!(dir = %dir.path().display(), "cannot unmount: {e}");
                let _ = dir.keep();
            }
        }
    }
}

/// Whether the running kernel reads `fstype` (built in or loadable).
fn kernel_has(fstype: &str) -> bool {
    let listed = std::fs::read_to_string("/proc/filesystems").map(|l| l.lines().any(|line| line.split_whitespace().last() == Some(fstype))).unwrap_or(false);
    listed || Command::new("modprobe").arg(fstype).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Copies a FAT file system's files into `dst` with mtools, keeping
/// mtimes. Why: some kernels (the appliance's test machines) have no vfat
/// module; FAT partitions in VMs are small EFI system partitions, so a
/// copy is cheap, and mtools is far lighter than booting libguestfs.
fn copy_fat(device: &Path, dst: &Path) -> Result<()> {
    run(Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").args(["-s", "-m", "-n", "-i"]).arg(device).arg("::").arg(dst))?;
    Ok(())
}
