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

#![warn(missing_docs)]

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

/// Why a disk, partition or guest path could not be read. The messages
/// are meant for the user as they stand; [`VmFilesError::is_not_found`]
/// tells a wrong name from a failure.
#[derive(Debug, thiserror::Error)]
pub enum VmFilesError {
    /// The disk image file cannot be opened or stat'ed.
    #[error("cannot open disk image {}: {source}", path.display())]
    Open {
        /// The disk image.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// libblkid failed to set up a probe of the image.
    #[error("cannot read the partitions of {}: {reason}", path.display())]
    Probe {
        /// The disk image.
        path: PathBuf,
        /// libblkid's error.
        reason: String,
    },
    /// The user named a partition the disk does not have.
    #[error("disk {} has no partition {name}; partitions: {available}", path.display())]
    NoSuchPartition {
        /// The disk image, or the disk's id for a snapshot disk.
        path: PathBuf,
        /// The partition name asked for.
        name: String,
        /// The names there are, comma-separated, or `none`.
        available: String,
    },
    /// The partition holds nothing libblkid recognises.
    #[error("partition {name} of {} has no file system libblkid recognises (empty, encrypted, or swap?)", path.display())]
    NoFilesystem {
        /// The disk image.
        path: PathBuf,
        /// The partition's name.
        name: String,
    },
    /// The partition cannot be read here ([`Partition::unsupported`]
    /// says why, e.g. an LVM layout that needs device-mapper).
    #[error("partition {name} of {}: {reason}", path.display())]
    Unsupported {
        /// The disk image.
        path: PathBuf,
        /// The partition's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// libblkid recognised a file system this crate does not mount.
    #[error("file system {fstype} cannot be mounted here: supported are ext2/3/4, xfs, btrfs, vfat, ntfs")]
    UnsupportedFilesystem {
        /// libblkid's name for it, e.g. `swap`, `LVM2_member`.
        fstype: String,
    },
    /// An external tool (losetup, mount, lvm, mcopy) exited non-zero.
    #[error("{command} failed: {stderr}")]
    Command {
        /// The command line as run (Rust's debug form).
        command: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// An external tool could not be started, usually because it is not
    /// installed.
    #[error("cannot run {command}: {source} (is it installed? see scripts/setup.sh)")]
    Spawn {
        /// The command line (Rust's debug form).
        command: String,
        /// The OS error from spawning it.
        source: std::io::Error,
    },
    /// The FUSE file system that shows a datastore disk as a file could
    /// not be mounted.
    #[error("cannot serve the disk as a file over FUSE (is /dev/fuse there?): {0}")]
    DiskFile(std::io::Error),
    /// The private directory to mount on could not be made.
    #[error("cannot create a mount point: {0}")]
    MountPoint(std::io::Error),
    /// The snapshot's VM metadata or disks could not be loaded.
    #[error("{0}")]
    Snapshot(String),
    /// The user named a disk the VM does not have.
    #[error("VM {vm} has no disk {disk} (disks: {available})")]
    NoSuchDisk {
        /// The VM's name.
        vm: String,
        /// The disk id asked for.
        disk: String,
        /// The VM's disk ids, comma-separated.
        available: String,
    },
    /// No disk was named and the VM has more than one.
    #[error("VM {vm} has {count} disks: choose one (disks: {available})")]
    ChooseDisk {
        /// The VM's name.
        vm: String,
        /// How many disks it has.
        count: usize,
        /// Their ids, comma-separated.
        available: String,
    },
    /// No partition was named and the disk has none or several with
    /// readable files.
    #[error("disk {disk} has no single file system to read: choose a partition (with files: {available})")]
    ChoosePartition {
        /// The disk's id.
        disk: String,
        /// `name: fstype` of each partition with files, or `none`.
        available: String,
    },
    /// The guest path does not exist in the mounted file system, or
    /// cannot be reached or listed.
    #[error("{path} in partition {partition} of disk {disk}: {source}")]
    NoSuchPath {
        /// The guest path as given.
        path: String,
        /// The partition's name.
        partition: String,
        /// The disk's id.
        disk: String,
        /// The error met resolving it (not found, a symlink loop ...).
        source: std::io::Error,
    },
    /// A guest path with `..` (or another non-plain component).
    #[error("{path}: '..' is not allowed in a guest path")]
    BadPath {
        /// The guest path as given.
        path: String,
    },
}

impl VmFilesError {
    /// Whether the request named something that is not there (a disk,
    /// partition or path): a 404 to an API client, not a failure.
    pub fn is_not_found(&self) -> bool {
        matches!(self, VmFilesError::NoSuchDisk { .. } | VmFilesError::NoSuchPartition { .. } | VmFilesError::NoSuchPath { .. })
    }
}

/// `Result` with a [`VmFilesError`].
pub type Result<T> = std::result::Result<T, VmFilesError>;
