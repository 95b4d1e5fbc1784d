//! libblkid probing: the partition table of a disk and the file system
//! (type, label, UUID) on the whole disk or in each partition.

use crate::error::{DiskError, Result};
use crate::{Disk, Filesystem, Partition};
use libblkid_rs::BlkidProbe;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

fn blkid_err(path: &Path, e: impl std::fmt::Display) -> DiskError {
    DiskError::Probe { path: path.to_path_buf(), reason: e.to_string() }
}

fn value(probe: &BlkidProbe, name: &str) -> Option<String> {
    if probe.has_value(name).unwrap_or(false) {
        probe.lookup_value(name).ok().filter(|v| !v.is_empty())
    } else {
        None
    }
}

/// Fills in the disk's partition table, partitions and file systems.
pub(crate) fn probe_disk(disk: &mut Disk) -> Result<()> {
    let file = match std::fs::File::open(&disk.path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DiskError::Gone { disk: disk.path.clone() }),
        Err(e) => return Err(DiskError::io("open", &disk.path, e)),
    };
    let mut probe = BlkidProbe::new().map_err(|e| blkid_err(&disk.path, e))?;
    probe.set_device(file.as_raw_fd(), 0, 0).map_err(|e| blkid_err(&disk.path, e))?;
    probe.enable_superblocks(true).map_err(|e| blkid_err(&disk.path, e))?;
    probe.enable_partitions(true).map_err(|e| blkid_err(&disk.path, e))?;
    // An ambiguous result (two signatures) is an error in safeprobe; the
    // disk is then shown as having unknown contents rather than failing
    // the whole list.
    let ambiguous = probe.do_safeprobe().is_err();
    disk.partition_table = value(&probe, "PTTYPE");
    if ambiguous {
        disk.filesystem = Some(Filesystem { fstype: "unknown (conflicting signatures)".into(), label: None, uuid: None, device: None, mounted_at: None, datastores: Vec::new(), search_note: None });
        return Ok(());
    }
    if disk.partition_table.is_none() {
        disk.filesystem = value(&probe, "TYPE").map(|fstype| Filesystem {
            fstype,
            label: value(&probe, "LABEL"),
            uuid: value(&probe, "UUID"),
            device: Some(disk.path.clone()),
            mounted_at: None,
            datastores: Vec::new(),
            search_note: None,
        });
        return Ok(());
    }
    // Partitions from the table itself, so a loop device without
    // partition nodes still shows them.
    let mut table = Vec::new();
    if let Ok(mut list) = probe.get_partitions() {
        let n = list.number_of_partitions().unwrap_or(0);
        for i in 0..n {
            let Ok(p) = list.get_partition(i) else { continue };
            table.push((p.get_partno().unwrap_or(0), p.get_start().bytes(), p.get_size().bytes(), p.get_name().ok().flatten().filter(|s| !s.is_empty()), p.is_extended()));
        }
    }
    let nodes = crate::sysfs::partitions(&disk.name);
    for (number, start, size, name, extended) in table {
        let start = *start.as_ref() as u64;
        let size = *size.as_ref() as u64;
        let path: Option<PathBuf> = nodes.iter().find(|(n, _, _)| *n == number).map(|(_, kname, _)| PathBuf::from("/dev").join(kname)).filter(|p| p.exists());
        // Through the partition node when there is one: its page cache is
        // the one mkfs wrote through, the whole disk's may be stale.
        let filesystem = match (&path, extended) {
            (_, true) => None,
            (Some(node), false) => probe_device(node)?,
            (None, false) => probe_range(&file, &disk.path, start, size)?,
        };
        let filesystem = filesystem.map(|mut fs| {
            fs.device = path.clone();
            fs
        });
        disk.partitions.push(Partition { number, path, start, size, name, filesystem });
    }
    Ok(())
}

/// The file system in bytes `start..start+size` of the open disk.
fn probe_range(file: &std::fs::File, path: &Path, start: u64, size: u64) -> Result<Option<Filesystem>> {
    let mut probe = BlkidProbe::new().map_err(|e| blkid_err(path, e))?;
    probe.set_device(file.as_raw_fd(), start as i64, size as i64).map_err(|e| blkid_err(path, e))?;
    probe.enable_superblocks(true).map_err(|e| blkid_err(path, e))?;
    if probe.do_safeprobe().is_err() {
        return Ok(None);
    }
    Ok(value(&probe, "TYPE").map(|fstype| Filesystem { fstype, label: value(&probe, "LABEL"), uuid: value(&probe, "UUID"), device: None, mounted_at: None, datastores: Vec::new(), search_note: None }))
}

/// Type and UUID of the file system on a device (a fresh partition).
pub(crate) fn probe_device(path: &Path) -> Result<Option<Filesystem>> {
    let file = std::fs::File::open(path).map_err(|e| DiskError::io("open", path, e))?;
    probe_range(&file, path, 0, 0)
}
