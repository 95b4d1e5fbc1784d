//! libblkid probing of a disk image: its partition table, partitions and
//! the file system in each (or on the whole disk when unpartitioned).

use crate::{Result, VmFilesError};
use libblkid_rs::BlkidProbe;
use std::os::fd::AsRawFd;
use std::path::Path;

/// One partition, or the whole disk (number 0) when it has no table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based as in the partition table; 0 for an unpartitioned disk.
    pub number: u32,
    /// Byte offset and length in the disk image.
    pub start: u64,
    pub size: u64,
    /// File system type as libblkid names it (`ext4`, `xfs`, `vfat`,
    /// `LVM2_member`...); None when nothing is recognised.
    pub fstype: Option<String>,
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    /// `gpt`, `dos`, or None for a disk without a partition table.
    pub table: Option<String>,
    pub partitions: Vec<Partition>,
}

impl DiskLayout {
    pub fn partition(&self, path: &Path, number: u32) -> Result<&Partition> {
        self.partitions.iter().find(|p| p.number == number).ok_or_else(|| VmFilesError::NoSuchPartition {
            path: path.to_path_buf(),
            number,
            available: if self.partitions.is_empty() {
                "none".into()
            } else {
                self.partitions.iter().map(|p| p.number.to_string()).collect::<Vec<_>>().join(", ")
            },
        })
    }
}

fn err(path: &Path, e: impl std::fmt::Display) -> VmFilesError {
    VmFilesError::Probe { path: path.to_path_buf(), reason: e.to_string() }
}

fn value(probe: &BlkidProbe, name: &str) -> Option<String> {
    if probe.has_value(name).unwrap_or(false) {
        probe.lookup_value(name).ok().filter(|v| !v.is_empty())
    } else {
        None
    }
}

/// The partition table and file systems of the disk image at `path`.
pub fn probe(path: &Path) -> Result<DiskLayout> {
    let file = std::fs::File::open(path).map_err(|source| VmFilesError::Open { path: path.to_path_buf(), source })?;
    let len = file.metadata().map_err(|source| VmFilesError::Open { path: path.to_path_buf(), source })?.len();
    let mut probe = BlkidProbe::new().map_err(|e| err(path, e))?;
    probe.set_device(file.as_raw_fd(), 0, len as i64).map_err(|e| err(path, e))?;
    probe.enable_superblocks(true).map_err(|e| err(path, e))?;
    probe.enable_partitions(true).map_err(|e| err(path, e))?;
    // Ambiguous signatures fail safeprobe; the disk then shows no file
    // system instead of failing, like `lifeboat disks` does.
    let ok = probe.do_safeprobe().is_ok();
    let table = if ok { value(&probe, "PTTYPE") } else { None };
    let mut partitions = Vec::new();
    if table.is_none() {
        partitions.push(Partition {
            number: 0,
            start: 0,
            size: len,
            fstype: if ok { value(&probe, "TYPE") } else { None },
            label: if ok { value(&probe, "LABEL") } else { None },
        });
        return Ok(DiskLayout { table, partitions });
    }
    let mut ranges = Vec::new();
    if let Ok(mut list) = probe.get_partitions() {
        let n = list.number_of_partitions().unwrap_or(0);
        for i in 0..n {
            let Ok(p) = list.get_partition(i) else { continue };
            if p.is_extended() {
                continue;
            }
            let start = *p.get_start().bytes().as_ref() as u64;
            let size = *p.get_size().bytes().as_ref() as u64;
            ranges.push((p.get_partno().unwrap_or(0) as u32, start, size));
        }
    }
    for (number, start, size) in ranges {
        let (fstype, label) = probe_range(&file, path, start, size)?;
        partitions.push(Partition { number, start, size, fstype, label });
    }
    Ok(DiskLayout { table, partitions })
}

fn probe_range(file: &std::fs::File, path: &Path, start: u64, size: u64) -> Result<(Option<String>, Option<String>)> {
    let mut probe = BlkidProbe::new().map_err(|e| err(path, e))?;
    probe.set_device(file.as_raw_fd(), start as i64, size as i64).map_err(|e| err(path, e))?;
    probe.enable_superblocks(true).map_err(|e| err(path, e))?;
    if probe.do_safeprobe().is_err() {
        return Ok((None, None));
    }
    Ok((value(&probe, "TYPE"), value(&probe, "LABEL")))
}
