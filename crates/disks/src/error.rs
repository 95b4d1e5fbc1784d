//! The error type of disk discovery and data-disk preparation.

use std::path::PathBuf;

/// `std::result::Result` with [`DiskError`] as the default error.
pub type Result<T, E = DiskError> = std::result::Result<T, E>;

/// Why listing, checking, formatting or importing a disk failed. The
/// messages are meant for the console user and say what to do where
/// there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A file system operation on a file, directory or pipe failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// The verb for the message: `open`, `read`, `list`, `create`,
        /// `write`, `rename`, ...
        op: &'static str,
        /// The file or directory (or, for pipe I/O, the program).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// libblkid could not set up a probe of the device. (Ambiguous
    /// signatures are not an error: the disk is listed with unknown
    /// contents instead.)
    #[error("cannot probe {path} with libblkid: {reason}")]
    Probe {
        /// The device probed.
        path: PathBuf,
        /// libblkid's error.
        reason: String,
    },
    /// The disk or device node is no longer there (detached since it was
    /// listed, or never existed). List the disks again.
    #[error("disk {disk} is gone: it is no longer attached; list the disks again and pick one that is there")]
    Gone {
        /// The disk or device asked for (a path or kernel name).
        disk: PathBuf,
    },
    /// The disk or file system is not the one the user chose: its size,
    /// device number, model or serial differ from the listing, sysfs
    /// gives it no device number, or (on import) its file system UUID
    /// changed or the file system is gone. List the disks again before
    /// going on.
    #[error("disk {disk} changed since it was listed ({what}); list the disks again before formatting")]
    Changed {
        /// The disk or device.
        disk: PathBuf,
        /// What differs, for the message.
        what: String,
    },
    /// The disk must not be formatted: the system disk, read-only,
    /// unreadable, in use, or too small for the file system.
    #[error("refusing to format: {reason}")]
    Refused {
        /// Why, as [`Disk::format_refusal`](crate::Disk::format_refusal)
        /// or the size check words it.
        reason: String,
    },
    /// An external tool (wipefs, sfdisk, partx, mkfs.*) is not installed,
    /// could not be started, exited with an error, or left no usable file
    /// system behind.
    #[error("{program} failed on {target}: {detail}")]
    Command {
        /// The tool's name (`blkid` when the new file system has no UUID).
        program: String,
        /// The disk or partition it worked on.
        target: PathBuf,
        /// `not installed`, the spawn error, or its stderr and exit status.
        detail: String,
    },
    /// The kernel did not create the new partition's device node within
    /// 10 seconds of partitioning (after `partx --update`/`--add`). The
    /// disk has a new partition table by then.
    #[error("partition {partition} did not appear after partitioning {disk}")]
    NoPartitionNode {
        /// The partitioned disk.
        disk: PathBuf,
        /// The node waited for, such as `/dev/sdb1` or `/dev/loop3p1`.
        partition: PathBuf,
    },
    /// mount(2) of the new or imported file system failed.
    #[error("cannot mount {device} on {mount_point}: {source}")]
    Mount {
        /// The partition or device mounted.
        device: PathBuf,
        /// The mount point under the configured root.
        mount_point: PathBuf,
        /// The errno of mount(2).
        source: std::io::Error,
    },
    /// Creating a datastore failed. Not produced by this crate's own
    /// functions: the caller creates the datastore in the mount.
    #[error("cannot create the datastore in {path}: {source}")]
    Datastore {
        /// The datastore directory.
        path: PathBuf,
        /// The store's error.
        source: lifeboat_store::StoreError,
    },
}

impl DiskError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DiskError::Io { op, path: path.into(), source }
    }
}
