//! Instant restore for another platform: the snapshot's hardware is
//! mapped onto the target (the same table as `vm restore --target`) and
//! the guest repaired inside the instant VM's copy-on-write overlays
//! before QEMU starts. The datastore is never written and nothing is
//! copied; migrate-back then moves the repaired disks.

use crate::restore::{repair_guest, GuestRepair, TargetRestoreError};
use crate::target::{convert, Mapping, Platform};
use lifeboat_qemu::{DiskSource, InstantVm};
use lifeboat_repair::RepairReport;
use std::collections::BTreeMap;

/// What a retargeted instant VM became.
#[derive(Debug)]
pub struct Retargeted {
    /// NIC id -> (old MAC, new MAC).
    pub macs: BTreeMap<String, (String, String)>,
    /// None without repair.
    pub repair: Option<RepairReport>,
}

/// The overlays' NBD URIs as libguestfs opens them, in disk order.
fn drives(vm: &InstantVm) -> Result<Vec<String>, TargetRestoreError> {
    let disks = vm.md.disks.iter().filter(|d| !d.is_cdrom());
    Ok(match &vm.source {
        DiskSource::NbdUnix { path } => disks.map(|d| format!("nbd:///{}?socket={}", d.id, path.display())).collect(),
        DiskSource::Nbd { host, port } => disks.map(|d| format!("nbd://{host}:{port}/{}", d.id)).collect(),
        DiskSource::File { .. } => return Err(TargetRestoreError::Invalid("an instant VM on local files has no overlays to repair".into())),
    })
}

/// Maps `vm` (exported, not booted yet) onto `platform` with `maps`
/// overrides and, when `repair` is given, repairs the guest in its
/// overlays. Refused before anything is written when QEMU could not boot
/// the mapped hardware (Hyper-V's synthetic devices, say).
pub fn retarget_instant(vm: &mut InstantVm, platform: Platform, maps: &[String], repair: Option<&GuestRepair>, log: &dyn Fn(&str)) -> Result<Retargeted, TargetRestoreError> {
    let mapping = Mapping::defaults(platform).with_overrides(maps).map_err(TargetRestoreError::Invalid)?;
    let c = convert(&vm.md, platform, &mapping).map_err(TargetRestoreError::Invalid)?;
    lifeboat_qemu::check_restorable(&c.md).map_err(|e| TargetRestoreError::Invalid(format!("QEMU cannot boot the VM as mapped for {platform}: {e}")))?;
    let report = match repair {
        Some(o) => Some(repair_guest(&c, &drives(vm)?, o, log)?),
        None => None,
    };
    log(&format!(
        "booting as {platform}: {} on {}, NICs {}",
        c.md.machine,
        c.md.disks.iter().map(|d| format!("{} ({})", d.id, d.bus.as_str())).collect::<Vec<_>>().join(", "),
        c.md.nics.iter().map(|n| format!("{} {}", n.model, n.mac)).collect::<Vec<_>>().join(", ")
    ));
    vm.md = c.md;
    Ok(Retargeted { macs: c.macs, repair: report })
}
