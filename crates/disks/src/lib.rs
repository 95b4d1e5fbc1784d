//! Disk discovery and data-disk preparation for the appliance console.
//!
//! `list_disks` finds the machine's disks in sysfs and probes each one with
//! libblkid (partition table, file systems, labels, UUIDs), then looks
//! inside the file systems it can mount read-only for existing Lifeboat
//! datastores (a directory holding the datastore's `config.json` and
//! `packs/`), so the
//! console can offer them for import instead of format. The disk holding
//! `/` or `/boot` is marked as the system disk and never offered.
//!
//! Why libblkid and not `lsblk --json`: lsblk takes file system and
//! partition-table fields from the udev database, which is empty where udev
//! does not run (containers, CI, early boot), so it reported no partition
//! table on a freshly partitioned disk here. libblkid reads the disk itself.
//!
//! `format_disk` and `import_filesystem` change the system: a GPT with one
//! partition, mkfs (ext4 or xfs) labelled `lifeboat-data`, an fstab entry by
//! UUID and a mount, all under a configurable root so tests run them in a
//! temporary directory against loop devices.
#![warn(missing_docs)]

mod datastores;
mod error;
mod format;
mod mounts;
mod probe;
mod sysfs;

pub use datastores::FoundDatastore;
pub use error::{DiskError, Result};
pub use format::{check_format, format_disk, import_filesystem, FormatRequest, FsType, ImportRequest, Prepared, DATA_LABEL};
pub(crate) use mounts::fstab_upsert;
pub use mounts::MountTable;

use std::path::{Path, PathBuf};

/// A whole disk as the console shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name: `sda`, `vdb`, `nvme0n1`, `loop3`.
    pub name: String,
    /// Device node: `/dev/sda`.
    pub path: PathBuf,
    /// Kernel device number `(major, minor)`, from sysfs `dev`.
    pub devno: (u32, u32),
    /// Size in bytes.
    pub size: u64,
    /// Vendor model from sysfs (`device/model`); for a loop device
    /// `loop device (<backing file>)`, for a virtio disk `virtio disk`.
    /// Compared again before formatting, to catch a reused device name.
    pub model: Option<String>,
    /// Serial number from sysfs, when the device reports one; compared
    /// again before formatting like `model`.
    pub serial: Option<String>,
    /// sysfs `removable` is 1 (USB sticks, card readers, CD drives).
    pub removable: bool,
    /// sysfs `ro` is 1: the disk cannot be written and is never formatted.
    pub read_only: bool,
    /// libblkid's PTTYPE (`gpt`, `dos`, ...) when the disk has a
    /// partition table.
    pub partition_table: Option<String>,
    /// A file system on the whole disk (no partition table).
    pub filesystem: Option<Filesystem>,
    /// The partitions in the table, in table order (empty without a
    /// partition table).
    pub partitions: Vec<Partition>,
    /// Why this disk holds the running system (`holds /`), if it does.
    pub system: Option<String>,
    /// Mount points of the disk or its partitions, and `swap` / holder
    /// devices (LVM, RAID) using it: a disk in use is never formatted.
    pub in_use: Vec<String>,
    /// Why the disk could not be probed (not readable, ...): its contents
    /// are unknown and it is not offered.
    pub probe_error: Option<String>,
}

/// One entry of a disk's partition table, as libblkid reads it from the
/// table itself (so it is listed even without a kernel device node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Partition number in the table (1-based).
    pub number: u32,
    /// Device node, when the kernel made one (loop devices only get them
    /// after `partx -a`).
    pub path: Option<PathBuf>,
    /// Offset from the start of the disk, bytes.
    pub start: u64,
    /// Length of the partition, bytes.
    pub size: u64,
    /// GPT partition name, if any.
    pub name: Option<String>,
    /// The file system in the partition; None when there is none, when
    /// its signatures are ambiguous, and for an extended (DOS) partition.
    pub filesystem: Option<Filesystem>,
}

/// A file system (or other signature: swap, LVM, RAID member) libblkid
/// found on a whole disk or a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filesystem {
    /// blkid's TYPE: `ext4`, `xfs`, `vfat`, `swap`, `LVM2_member`, ...;
    /// `unknown (conflicting signatures)` when libblkid found more than
    /// one on a whole disk.
    pub fstype: String,
    /// blkid's LABEL, if the file system has one.
    pub label: Option<String>,
    /// blkid's UUID (the form `UUID=` in fstab takes), if it has one.
    /// `import_filesystem` needs it.
    pub uuid: Option<String>,
    /// The device node to mount it from, when there is one.
    pub device: Option<PathBuf>,
    /// Where it is mounted now (first mount point), if it is. Only filled
    /// in by the datastore search (`ListOptions::search_datastores`).
    pub mounted_at: Option<PathBuf>,
    /// Lifeboat datastores found on it.
    pub datastores: Vec<FoundDatastore>,
    /// Why the datastore search was skipped or failed, if it was.
    pub search_note: Option<String>,
}

impl Disk {
    /// Every file system on the disk: the whole-disk one and the
    /// partitions' ones.
    pub fn filesystems(&self) -> impl Iterator<Item = &Filesystem> {
        self.filesystem.iter().chain(self.partitions.iter().filter_map(|p| p.filesystem.as_ref()))
    }

    /// Datastores found anywhere on the disk, with their file system.
    pub fn datastores(&self) -> Vec<(&Filesystem, &FoundDatastore)> {
        self.filesystems().flat_map(|fs| fs.datastores.iter().map(move |d| (fs, d))).collect()
    }

    /// None when the disk may be formatted, else why not.
    pub fn format_refusal(&self) -> Option<String> {
        if let Some(why) = &self.system {
            return Some(format!("{} is the system disk ({why})", self.path.display()));
        }
        if self.read_only {
            return Some(format!("{} is read-only", self.path.display()));
        }
        if let Some(e) = &self.probe_error {
            return Some(format!("{} cannot be read: {e}", self.path.display()));
        }
        if !self.in_use.is_empty() {
            return Some(format!("{} is in use ({})", self.path.display(), self.in_use.join(", ")));
        }
        None
    }

    /// A one-line summary of what is on the disk: `empty`, `gpt, 2
    /// partitions: ext4 "data", swap`, `xfs "lifeboat-data"`.
    pub fn contents(&self) -> String {
        fn fs_text(fs: &Filesystem) -> String {
            match &fs.label {
                Some(l) => format!("{} \"{l}\"", fs.fstype),
                None => fs.fstype.clone(),
            }
        }
        if self.probe_error.is_some() {
            return "unreadable".into();
        }
        if let Some(fs) = &self.filesystem {
            return fs_text(fs);
        }
        match &self.partition_table {
            None => "empty".into(),
            Some(pt) => {
                let parts: Vec<String> = self.partitions.iter().map(|p| p.filesystem.as_ref().map(fs_text).unwrap_or_else(|| "no file system".into())).collect();
                match parts.len() {
                    0 => format!("{pt}, no partitions"),
                    1 => format!("{pt}, 1 partition: {}", parts[0]),
                    n => format!("{pt}, {n} partitions: {}", parts.join(", ")),
                }
            }
        }
    }
}

/// What `list_disks` looks at.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// When not empty, only these disks (device paths or kernel names)
    /// are listed and probed. The console's `--disk` option; tests use it
    /// so they never touch loop devices that are not theirs.
    pub only: Vec<PathBuf>,
    /// Directories whose disks also count as the system disk (besides the
    /// running system's `/` and `/boot`): the console passes its `--root`.
    pub system_paths: Vec<PathBuf>,
    /// Mount unmounted file systems read-only to look for datastores.
    pub search_datastores: bool,
}

/// Lists the disks, probed, sorted by kernel name.
pub fn list_disks(opts: &ListOptions) -> Result<Vec<Disk>> {
    let mounts = MountTable::read()?;
    let system = sysfs::system_disks(&mounts, &opts.system_paths);
    let mut disks = Vec::new();
    for name in sysfs::disk_names()? {
        if !opts.only.is_empty() && !opts.only.iter().any(|o| matches_disk(o, &name)) {
            continue;
        }
        let Some(mut disk) = sysfs::read_disk(&name)? else { continue };
        disk.system = system.get(&disk.name).cloned();
        match probe::probe_disk(&mut disk) {
            Ok(()) => {}
            // Detached between the sysfs listing and the probe.
            Err(DiskError::Gone { .. }) => continue,
            Err(e) => disk.probe_error = Some(e.to_string()),
        }
        disk.in_use = mounts::usage(&disk, &mounts);
        if opts.search_datastores {
            datastores::search_disk(&mut disk, &mounts);
        }
        disks.push(disk);
    }
    Ok(disks)
}

/// Reads one disk again, by device path or kernel name: the console calls
/// it right before formatting to catch a disk that disappeared or changed.
pub fn find_disk(disk: &Path, system_paths: &[PathBuf]) -> Result<Disk> {
    let opts = ListOptions { only: vec![disk.to_path_buf()], system_paths: system_paths.to_vec(), search_datastores: false };
    list_disks(&opts)?.into_iter().next().ok_or_else(|| DiskError::Gone { disk: disk.to_path_buf() })
}

fn matches_disk(wanted: &Path, name: &str) -> bool {
    wanted == Path::new(name) || wanted == Path::new("/dev").join(name)
}

/// `1.5 GiB`-style size.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(200 << 20), "200 MiB");
        assert_eq!(human_size(8 << 30), "8.0 GiB");
    }

    #[test]
    fn disk_names_match_paths_and_names() {
        assert!(matches_disk(Path::new("/dev/loop3"), "loop3"));
        assert!(matches_disk(Path::new("loop3"), "loop3"));
        assert!(!matches_disk(Path::new("/dev/loop3"), "loop30"));
    }
}
