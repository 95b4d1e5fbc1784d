//! Instant restore for another platform: the snapshot's hardware is
//! mapped onto the target (the same table as `vm restore --target`) and
//! the guest repaired inside the instant VM's copy-on-write overlays
//! before QEMU starts. The datastore is never written and nothing is
//! copied; migrate-back then moves the repaired disks.

use crate::restore::{repair_guest, GuestRepair, TargetRestoreError};
use crate::target::{convert, Mapping, Platform};
use lifeboat_qemu::{DiskSource, InstantVm};
use lifeboat_repair::RepairReport;
use lifeboat_vm::{Firmware, VmMetadata};
use std::collections::BTreeMap;

/// Devices of other platforms that QEMU has no model of.
const NOT_IN_QEMU: &[&str] = &["hv-netvsc", "hv-storvsc"];

/// Makes a document mapped for another platform one QEMU boots: a
/// platform's machine name (VMware's `vmx-14`, Hyper-V's `hyperv-gen1`)
/// names no QEMU machine, so the VM runs on `pc`, or `q35` for UEFI or a
/// q35 source (kvm's `auto`); a device QEMU has no model of (Hyper-V's
/// synthetic disk controller and NIC) refuses the mapping, naming it and
/// the `--map` that avoids it.
pub(crate) fn qemu_hardware(md: &mut VmMetadata, src_machine: &str) -> Result<(), String> {
    if md.machine.starts_with("vmx-") || md.machine.starts_with("hyperv-") {
        md.machine = if md.firmware == Firmware::Uefi || src_machine.contains("q35") { "q35" } else { "pc" }.to_string();
    }
    for n in &md.nics {
        if NOT_IN_QEMU.contains(&n.model.as_str()) {
            return Err(format!("QEMU has no {} NIC (NIC {}): map another model, e.g. --map nic_model=virtio-net-pci", n.model, n.id));
        }
    }
    for d in &md.disks {
        if let Some(c) = d.controller.as_deref().filter(|c| NOT_IN_QEMU.contains(c)) {
            return Err(format!("QEMU has no {c} controller (disk {}): map another, e.g. --map disk_controller=virtio-scsi-pci", d.id));
        }
    }
    Ok(())
}

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
    let mut c = convert(&vm.md, platform, &mapping).map_err(TargetRestoreError::Invalid)?;
    qemu_hardware(&mut c.md, &vm.md.machine).map_err(|e| TargetRestoreError::Invalid(format!("instant restore for {platform}: {e}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::tests::ide_e1000;

    fn mapped(platform: Platform, maps: &[&str]) -> Result<VmMetadata, String> {
        let maps: Vec<String> = maps.iter().map(|s| s.to_string()).collect();
        let src = ide_e1000();
        let mut md = convert(&src, platform, &Mapping::defaults(platform).with_overrides(&maps).unwrap()).unwrap().md;
        qemu_hardware(&mut md, &src.machine)?;
        lifeboat_qemu::check_restorable(&md).map_err(|e| e.to_string())?;
        Ok(md)
    }

    #[test]
    fn instant_vms_get_a_qemu_machine_and_refuse_hyperv_devices() {
        // kvm keeps its own choice; VMware's hardware version runs as pc
        // (q35 with UEFI) with pvscsi and vmxnet3, which QEMU has.
        assert_eq!(mapped(Platform::Kvm, &[]).unwrap().machine, "pc");
        let vmw = mapped(Platform::Vmware, &[]).unwrap();
        assert_eq!((vmw.machine.as_str(), vmw.nics[0].model.as_str(), vmw.disks[0].controller.as_deref()), ("pc", "vmxnet3", Some("pvscsi")));
        assert_eq!(mapped(Platform::Vmware, &["firmware=uefi"]).unwrap().machine, "q35");
        // Hyper-V: its NIC (generation 1) or its SCSI controller (2).
        let e = mapped(Platform::Hyperv, &[]).unwrap_err();
        assert!(e.contains("hv-netvsc") && e.contains("nic_model"), "{e}");
        let e = mapped(Platform::Hyperv, &["firmware=uefi", "nic_model=virtio-net-pci"]).unwrap_err();
        assert!(e.contains("hv-storvsc") && e.contains("disk_controller"), "{e}");
        // ... and with QEMU's devices mapped, it runs as pc.
        assert_eq!(mapped(Platform::Hyperv, &["nic_model=virtio-net-pci"]).unwrap().machine, "pc");
    }
}
