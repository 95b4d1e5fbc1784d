//! File-level access to a VM disk image, read-only.
//!
//! Why: a user who lost one file in a VM should not have to restore the
//! whole disk. This crate takes a disk image readable as a file (a raw
//! image, or a datastore disk exposed as a read-only file), finds its
//! partitions and file systems with libblkid, and mounts one of them
//! read-only through a read-only loop device with the partition's offset
//! and size. The kernel then reads the file system: no parser of our own.
//!
//! Nothing is ever written to the image: the loop device is read-only
//! (`losetup -r`) and journaled file systems are mounted without replaying
//! their journal (`noload` for ext3/4, `norecovery` for xfs), as a replay
//! would need to write. Every loop device and mount is held by a guard
//! that undoes it on drop, also on error paths; what a killed process
//! leaves behind is found by its name and undone by `clean_stale`.
//!
//! LVM volumes inside a partition are found too (see `lvm`), without
//! device-mapper.

mod archive;
mod cleanup;
mod copy;
mod diskfile;
mod lvm;
mod mount;
mod probe;
mod snapshot;

pub use archive::{unpack_tar, write_tar, ArchiveReport, UnpackPolicy};
pub use cleanup::{clean_stale, Cleaned};
pub use copy::{copy_out, CopyPolicy, CopyReport};
pub use diskfile::DiskFile;
pub use mount::{LoopDevice, MountedFs};
pub use probe::{probe, DiskLayout, Partition};
pub use snapshot::{guest_relative, GuestEntry, GuestFiles, SnapshotDisk};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VmFilesError {
    #[error("cannot open disk image {}: {source}", path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot read the partitions of {}: {reason}", path.display())]
    Probe { path: PathBuf, reason: String },
    #[error("disk {} has no partition {name}; partitions: {available}", path.display())]
    NoSuchPartition { path: PathBuf, name: String, available: String },
    #[error("partition {name} of {} has no file system libblkid recognises (empty, encrypted, or swap?)", path.display())]
    NoFilesystem { path: PathBuf, name: String },
    #[error("partition {name} of {}: {reason}", path.display())]
    Unsupported { path: PathBuf, name: String, reason: String },
    #[error("file system {fstype} cannot be mounted here: supported are ext2/3/4, xfs, btrfs, vfat, ntfs")]
    UnsupportedFilesystem { fstype: String },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run {command}: {source} (is it installed? see scripts/setup.sh)")]
    Spawn { command: String, source: std::io::Error },
    #[error("cannot serve the disk as a file over FUSE (is /dev/fuse there?): {0}")]
    DiskFile(std::io::Error),
    #[error("cannot create a mount point: {0}")]
    MountPoint(std::io::Error),
    #[error("{0}")]
    Snapshot(String),
    #[error("VM {vm} has no disk {disk} (disks: {available})")]
    NoSuchDisk { vm: String, disk: String, available: String },
    #[error("VM {vm} has {count} disks: choose one (disks: {available})")]
    ChooseDisk { vm: String, count: usize, available: String },
    #[error("disk {disk} has no single file system to read: choose a partition (with files: {available})")]
    ChoosePartition { disk: String, available: String },
    #[error("{path} in partition {partition} of disk {disk}: {source}")]
    NoSuchPath { path: String, partition: String, disk: String, source: std::io::Error },
    #[error("{path}: '..' is not allowed in a guest path")]
    BadPath { path: String },
}

impl VmFilesError {
    /// Whether the request named something that is not there (a disk,
    /// partition or path): a 404 to an API client, not a failure.
    pub fn is_not_found(&self) -> bool {
        matches!(self, VmFilesError::NoSuchDisk { .. } | VmFilesError::NoSuchPartition { .. } | VmFilesError::NoSuchPath { .. })
    }
}

pub type Result<T> = std::result::Result<T, VmFilesError>;
