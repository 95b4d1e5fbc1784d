//! LVM logical volumes inside a partition, found without activating them.
//!
//! Why not `vgchange -ay`: activation needs the kernel's device-mapper,
//! which the appliance's test kernels lack, and it would register the
//! guest's VG with the host (a guest VG named like one of the host's, or
//! two snapshots of the same VM, would clash). Instead the partition is
//! attached as a read-only loop device, the LVM tools read its metadata
//! (`--readonly`, a filter admitting only that device, no backups or
//! archives written), and each linear LV, one contiguous extent range of
//! this PV, becomes a byte range of the disk like any partition, mounted
//! through its own read-only loop device. Striped, mirrored, thin or
//! cached LVs, and LVs reaching into another disk, are listed as
//! unsupported.

use crate::mount::{run, LoopDevice};
use crate::{Partition, Result};
use std::path::Path;
use std::process::Command;

/// Runs an `lvm` reporting command that sees only `device`.
fn lvm_report(device: &Path, what: &str, fields: &str) -> Result<Vec<Vec<String>>> {
    let dev = device.display().to_string();
    let filter = format!("[\"a|^{dev}$|\",\"r|.*|\"]");
    let config = format!(
        "devices{{filter={filter} global_filter={filter} use_devicesfile=0 obtain_device_list_from_udev=0 scan_lvs=0}} \
         backup{{backup=0 archive=0}} activation{{udev_sync=0 udev_rules=0 monitoring=0}}"
    );
    let out = run(Command::new("lvm").arg(what).env("LVM_SUPPRESS_FD_WARNINGS", "1").args([
        "--readonly",
        "--noheadings",
        "--nosuffix",
        "--units",
        "b",
        "--separator",
        "|",
        "-o",
        fields,
        "--config",
        &config,
    ]))?;
    Ok(out.lines().map(|l| l.trim().split('|').map(str::to_string).collect()).filter(|r: &Vec<String>| r.len() == fields.split(',').count()).collect())
}

/// The logical volumes in `pv`, a partition of `image` holding an LVM PV,
/// as byte ranges of `image`. Their file systems are probed by the caller.
pub(crate) fn logical_volumes(image: &Path, pv: &Partition) -> Result<Vec<Partition>> {
    let dev = LoopDevice::attach(image, pv.start, pv.size)?;
    let devname = dev.path().display().to_string();
    let pvs = lvm_report(dev.path(), "pvs", "pe_start")?;
    let Some(pe_start) = pvs.first().and_then(|r| r[0].parse::<u64>().ok()) else {
        return Ok(Vec::new());
    };
    let mut segs = lvm_report(dev.path(), "lvs", "vg_name,lv_name,segtype,seg_start_pe,seg_size_pe,seg_pe_ranges,vg_extent_size")?;
    segs.sort_by_key(|r| (r[0].clone(), r[1].clone(), r[3].parse::<u64>().unwrap_or(0)));
    let mut out: Vec<Partition> = Vec::new();
    let mut next_pe: Option<u64> = None;
    for r in segs {
        let name = format!("{}/{}", r[0], r[1]);
        let extent: u64 = r[6].parse().unwrap_or(0);
        let count: u64 = r[4].parse().unwrap_or(0);
        let first = || -> Option<u64> {
            let (d, range) = r[5].trim().rsplit_once(':')?;
            if d != devname || r[5].contains(' ') {
                return None;
            }
            range.split_once('-')?.0.parse().ok()
        };
        let new = out.last().map(|p| p.name != name).unwrap_or(true);
        if new {
            next_pe = None;
            out.push(Partition { number: pv.number, name: name.clone(), start: 0, size: 0, fstype: None, label: None, unsupported: None });
        }
        let lv = out.last_mut().expect("pushed above");
        if lv.unsupported.is_some() {
            continue;
        }
        let reason = if r[2] != "linear" && r[2] != "striped" {
            Some(format!("{} volume", r[2]))
        } else {
            match first() {
                None => Some(format!("extents {} are not one range of this disk's PV (striped, or on another disk)", r[5].trim())),
                Some(f) if next_pe.is_some_and(|n| n != f) => Some("its extents are not contiguous".to_string()),
                Some(f) => {
                    if new {
                        lv.start = pv.start + pe_start + f * extent;
                    }
                    lv.size += count * extent;
                    next_pe = Some(f + count);
                    None
                }
            }
        };
        if let Some(reason) = reason {
            lv.unsupported = Some(format!("LVM volume {name}: {reason}; only linear volumes are read without device-mapper"));
        }
    }
    for lv in out.iter_mut().filter(|lv| lv.unsupported.is_none() && lv.start + lv.size > pv.start + pv.size) {
        lv.unsupported = Some(format!("LVM volume {} reaches past the end of partition {}", lv.name, pv.name));
    }
    tracing::debug!(image = %image.display(), partition = pv.number, volumes = out.len(), "LVM volumes found");
    Ok(out)
}
