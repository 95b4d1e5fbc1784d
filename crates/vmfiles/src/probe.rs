//! libblkid probing of a disk image: its partition table, partitions and
//! the file system in each (or on the whole disk when unpartitioned).

use crate::{Result, VmFilesError};
use libblkid_rs::BlkidProbe;
use std::os::fd::AsRawFd;
use std::path::Path;

/// One partition, the whole disk (number 0) when it has no table, or an
/// LVM logical volume inside a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based as in the partition table; 0 for an unpartitioned disk.
    /// An LVM volume carries the number of the partition holding its PV.
    pub number: u32,
    /// How a user names it: the number, or `vg/lv` for an LVM volume.
    pub name: String,
    /// Byte offset in the disk image.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// File system type as libblkid names it (`ext4`, `xfs`, `vfat`,
    /// `LVM2_member`...); None when nothing is recognised.
    pub fstype: Option<String>,
    /// The file system's label, when it has one.
    pub label: Option<String>,
    /// Why its files cannot be read here (an LVM layout that needs
    /// device-mapper, LVM tools missing); None when they can.
    pub unsupported: Option<String>,
}

impl Partition {
    /// Whether it holds a file system this crate can show (not swap, not
    /// an LVM PV, whose volumes are listed on their own).
    pub fn has_files(&self) -> bool {
        self.unsupported.is_none() && self.fstype.as_deref().is_some_and(|t| crate::mount::mount_args(t).is_ok())
    }
}

/// What [`probe`] found on a disk image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    /// `gpt`, `dos`, or None for a disk without a partition table.
    pub table: Option<String>,
    /// The partitions in table order (extended DOS partitions left
    /// out), or the whole disk as partition 0; then the LVM volumes
    /// found in them.
    pub partitions: Vec<Partition>,
}

impl DiskLayout {
    /// The partition named `name`: its number, or `vg/lv`.
    pub fn partition(&self, path: &Path, name: &str) -> Result<&Partition> {
        self.partitions.iter().find(|p| p.name == name).ok_or_else(|| VmFilesError::NoSuchPartition {
            path: path.to_path_buf(),
            name: name.to_string(),
            available: if self.partitions.is_empty() { "none".into() } else { self.partitions.iter().map(|p| p.name.clone()).collect::<Vec<_>>().join(", ") },
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
            name: "0".into(),
            start: 0,
            size: len,
            fstype: if ok { value(&probe, "TYPE") } else { None },
            label: if ok { value(&probe, "LABEL") } else { None },
            unsupported: None,
        });
        add_volumes(&file, path, &mut partitions)?;
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
            ranges.push((p.get_partno().unwrap_or(0), start, size));
        }
    }
    for (number, start, size) in ranges {
        let (fstype, label) = probe_range(&file, path, start, size)?;
        partitions.push(Partition { number, name: number.to_string(), start, size, fstype, label, unsupported: None });
    }
    add_volumes(&file, path, &mut partitions)?;
    Ok(DiskLayout { table, partitions })
}

/// Appends the LVM volumes of every LVM PV partition, probed like
/// partitions. A PV whose metadata cannot be read is marked unsupported
/// rather than failing the listing of the disk's other partitions.
fn add_volumes(file: &std::fs::File, path: &Path, partitions: &mut Vec<Partition>) -> Result<()> {
    let pvs: Vec<usize> = (0..partitions.len()).filter(|&i| partitions[i].fstype.as_deref() == Some("LVM2_member")).collect();
    for i in pvs {
        match crate::lvm::logical_volumes(path, &partitions[i]) {
            Ok(lvs) => {
                for mut lv in lvs {
                    if lv.unsupported.is_none() {
                        (lv.fstype, lv.label) = probe_range(file, path, lv.start, lv.size)?;
                    }
                    partitions.push(lv);
                }
            }
            Err(e) => partitions[i].unsupported = Some(format!("cannot read its LVM metadata: {e}")),
        }
    }
    Ok(())
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
