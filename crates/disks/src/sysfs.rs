//! Disks as sysfs sees them: names, sizes, models, partitions, holders,
//! and which disks hold the running system.

use crate::error::{DiskError, Result};
use crate::mounts::MountTable;
use crate::Disk;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const SYS_BLOCK: &str = "/sys/block";

/// Kernel names under /sys/block that can be data disks, sorted. RAM
/// disks, zram (swap), floppies and stacked devices (device mapper, RAID)
/// are left out; stacked devices show up as the use of their members.
pub(crate) fn disk_names() -> Result<Vec<String>> {
    let rd = std::fs::read_dir(SYS_BLOCK).map_err(|e| DiskError::io("list", SYS_BLOCK, e))?;
    let mut names: Vec<String> =
        rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !["ram", "zram", "fd", "dm-", "md"].iter().any(|p| n.starts_with(p))).collect();
    names.sort();
    Ok(names)
}

fn read_attr(path: impl AsRef<Path>) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn parse_devno(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The disk `name`, or None when it has no medium (size 0: an unattached
/// loop device, an empty CD drive).
pub(crate) fn read_disk(name: &str) -> Result<Option<Disk>> {
    let dir = Path::new(SYS_BLOCK).join(name);
    if !dir.exists() {
        return Ok(None);
    }
    let sectors: u64 = read_attr(dir.join("size")).and_then(|s| s.parse().ok()).unwrap_or(0);
    if sectors == 0 {
        return Ok(None);
    }
    let devno = read_attr(dir.join("dev")).and_then(|s| parse_devno(&s)).ok_or_else(|| DiskError::Changed { disk: PathBuf::from("/dev").join(name), what: "no device number in sysfs".into() })?;
    let model = read_attr(dir.join("device/model")).or_else(|| {
        // Loop devices say what they are backed by; virtio disks have no model.
        read_attr(dir.join("loop/backing_file")).map(|f| format!("loop device ({f})")).or_else(|| name.starts_with("vd").then(|| "virtio disk".to_string()))
    });
    Ok(Some(Disk {
        name: name.to_string(),
        path: PathBuf::from("/dev").join(name),
        devno,
        // sysfs counts 512-byte sectors whatever the logical block size.
        size: sectors * 512,
        model,
        serial: read_attr(dir.join("serial")).or_else(|| read_attr(dir.join("device/serial"))),
        removable: read_attr(dir.join("removable")).as_deref() == Some("1"),
        read_only: read_attr(dir.join("ro")).as_deref() == Some("1"),
        partition_table: None,
        filesystem: None,
        partitions: Vec::new(),
        system: None,
        in_use: Vec::new(),
        probe_error: None,
    }))
}

/// The disk's partitions that have kernel devices: (name, devno), by
/// partition number.
pub(crate) fn partition_devnos(disk: &str) -> Vec<(String, (u32, u32))> {
    partitions(disk).into_iter().map(|(_, name, devno)| (name, devno)).collect()
}

/// (number, kernel name, devno) of the disk's partition devices.
pub(crate) fn partitions(disk: &str) -> Vec<(u32, String, (u32, u32))> {
    let dir = Path::new(SYS_BLOCK).join(disk);
    let Ok(rd) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut parts: Vec<_> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            let number: u32 = read_attr(p.join("partition"))?.parse().ok()?;
            let devno = parse_devno(&read_attr(p.join("dev"))?)?;
            Some((number, e.file_name().to_string_lossy().into_owned(), devno))
        })
        .collect();
    parts.sort();
    parts
}

/// Devices stacked on `name` (device mapper, RAID), from its holders/.
pub(crate) fn holders(name: &str) -> Vec<String> {
    let dir = Path::new("/sys/class/block").join(name).join("holders");
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<String> = rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// The whole disks under block device `devno`: the device itself if it
/// is a disk, its parent if it is a partition, and the members' disks if
/// it is stacked (LVM, RAID, dm-crypt).
fn disks_of_devno(devno: (u32, u32), depth: u32) -> Vec<String> {
    let link = PathBuf::from(format!("/sys/dev/block/{}:{}", devno.0, devno.1));
    let Ok(dir) = std::fs::canonicalize(&link) else { return Vec::new() };
    if dir.join("partition").exists() {
        return dir.parent().and_then(|p| p.file_name()).map(|n| vec![n.to_string_lossy().into_owned()]).unwrap_or_default();
    }
    let slaves: Vec<PathBuf> = std::fs::read_dir(dir.join("slaves")).map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    if slaves.is_empty() || depth > 8 {
        return dir.file_name().map(|n| vec![n.to_string_lossy().into_owned()]).unwrap_or_default();
    }
    slaves.iter().filter_map(|s| read_attr(s.join("dev")).and_then(|d| parse_devno(&d))).flat_map(|d| disks_of_devno(d, depth + 1)).collect()
}

/// Disk name -> why it is a system disk. The running system's `/`,
/// `/boot` and `/boot/efi` count, and so do the `extra` directories (the
/// console's configured root and its `/boot`).
pub(crate) fn system_disks(mounts: &MountTable, extra: &[PathBuf]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut add = |devno: (u32, u32), why: String| {
        if devno.0 == 0 {
            return; // not a block device (tmpfs, overlay)
        }
        for disk in disks_of_devno(devno, 0) {
            out.entry(disk).or_insert_with(|| why.clone());
        }
    };
    for mp in ["/", "/boot", "/boot/efi"] {
        if let Some(m) = mounts.at(Path::new(mp)) {
            add(m.devno, format!("holds {mp}"));
        }
    }
    for dir in extra {
        for p in [dir.clone(), dir.join("boot")] {
            if let Ok(md) = std::fs::metadata(&p) {
                let dev = md.dev();
                add((libc::major(dev), libc::minor(dev)), format!("holds {}", p.display()));
            }
        }
    }
    out
}
