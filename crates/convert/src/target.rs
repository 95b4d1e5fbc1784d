//! Target platforms and the hardware mapping a restore applies for each.
//!
//! A mapping is a small table of keys (disk bus, NIC model, firmware,
//! machine type, video, MAC policy, network policy) with one default
//! table per platform; the admin overrides single keys with `--map
//! KEY=VALUE`. [`convert`] turns the backed-up document into the one the
//! target will run: every writer (libvirt, OVF, OpenStack, Hyper-V) and
//! the guest repair read that converted document, so they always agree.

use lifeboat_vm::{Bus, Firmware, Nic, VmMetadata};
use serde::Serialize;
use std::collections::BTreeMap;

/// A platform a VM snapshot is restored for (`--target PLATFORM`).
/// Serialized, parsed and displayed as its lowercase name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// libvirt/KVM: qcow2 disks and a `domain.xml`.
    Kvm,
    /// OpenStack: qcow2 disks, a `domain.xml` and the Glance image
    /// properties of the boot disk (`openstack-image.json`).
    Openstack,
    /// VMware: VMDK disks with an OVF descriptor and manifest, packed
    /// into one OVA by default (`--map package=ovf` leaves them apart).
    Vmware,
    /// Hyper-V: VHDX disks, `hyperv.json` and `create-vm.ps1`.
    Hyperv,
}

impl Platform {
    /// Every platform, in the order error messages list them.
    pub const ALL: [Platform; 4] = [Platform::Kvm, Platform::Openstack, Platform::Vmware, Platform::Hyperv];

    /// The platform's name as `--target` takes it and reports show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Kvm => "kvm",
            Platform::Openstack => "openstack",
            Platform::Vmware => "vmware",
            Platform::Hyperv => "hyperv",
        }
    }

    /// The disk format a restore writes when none is asked for.
    pub fn default_format(self) -> crate::DiskFormat {
        match self {
            Platform::Kvm | Platform::Openstack => crate::DiskFormat::Qcow2,
            Platform::Vmware => crate::DiskFormat::Vmdk,
            Platform::Hyperv => crate::DiskFormat::Vhdx,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Platform, String> {
        Platform::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| format!("unknown target {s:?} (known: kvm, openstack, vmware, hyperv)"))
    }
}

/// Firmware the target VM gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareChoice {
    /// What the backup had: a guest installed for BIOS has no EFI system
    /// partition, so changing firmware needs more than a restore.
    Keep,
    /// Legacy BIOS (`--map firmware=bios`).
    Bios,
    /// UEFI (`--map firmware=uefi`).
    Uefi,
}

/// Whether the NICs keep their MAC addresses (`--map mac=keep|new`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MacPolicy {
    /// Every NIC keeps the MAC it had in the backup (the default).
    Keep,
    /// A fresh random MAC per NIC in the target's range (the source VM
    /// may still run on its old platform).
    New,
}

/// How the guest's network configuration is repaired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetPolicy {
    /// Static addresses stay; only MACs and interface names follow.
    Keep,
    /// Every configured interface switches to DHCP.
    Dhcp,
}

/// One target's hardware table. Values use QEMU's device names where the
/// neutral document does (`virtio-net-pci`, `pvscsi`), so a mapped
/// document still boots under QEMU; each writer translates them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mapping {
    /// The bus of every disk except CD-ROMs (which go on IDE or AHCI);
    /// on a Hyper-V generation 1 VM the first disk goes on IDE anyway.
    pub disk_bus: Bus,
    /// The controller of `scsi` disks (`virtio-scsi-pci`, `pvscsi`,
    /// `lsi53c895a`, `hv-storvsc`); unused for other buses.
    pub disk_controller: String,
    /// QEMU device name of every NIC (`virtio-net-pci`, `e1000`,
    /// `vmxnet3`, `hv-netvsc`).
    pub nic_model: String,
    /// Firmware of the target VM.
    pub firmware: FirmwareChoice,
    /// `auto`: `q35` for UEFI or a q35 source, `pc` otherwise (KVM,
    /// OpenStack); the virtual hardware version (`vmx-14`) on VMware; the
    /// generation (UEFI: 2, BIOS: 1) on Hyper-V.
    pub machine: String,
    /// Video device model (`vga`, `vmvga`, `hyperv`, ...), as libvirt's
    /// `<video><model type>` and Glance's `hw_video_model` take it;
    /// `none` leaves the video device out.
    pub video: String,
    /// Whether NICs keep their MACs or get new ones.
    pub mac: MacPolicy,
    /// How the guest's network configuration is repaired.
    pub network: NetPolicy,
    /// VMware: `ova` (one file, streamOptimized disks) or `ovf` (a
    /// descriptor beside monolithicSparse disks).
    pub package: String,
    /// libvirt's domain type: `kvm`, or `qemu` (software emulation).
    pub domain_type: String,
}

/// The keys `--map` takes, with what each means (for errors and docs).
pub const MAP_KEYS: &[(&str, &str)] = &[
    ("disk_bus", "ide, sata, scsi, virtio, nvme, usb"),
    ("disk_controller", "SCSI controller: virtio-scsi-pci, pvscsi, lsi53c895a, megasas, hv-storvsc"),
    ("nic_model", "virtio-net-pci, e1000, e1000e, rtl8139, vmxnet3, hv-netvsc"),
    ("firmware", "keep, bios, uefi"),
    ("machine", "auto, or a machine type (pc, q35, vmx-14, hyperv-gen2)"),
    ("video", "vga, virtio, cirrus, qxl, vmvga, hyperv, none"),
    ("mac", "keep, new"),
    ("network", "keep (static addresses stay), dhcp"),
    ("package", "ova, ovf (vmware)"),
    ("domain_type", "kvm, qemu (the libvirt domain of kvm/openstack)"),
];

impl Mapping {
    /// The default table of a platform (docs/cross-platform-restore.md).
    pub fn defaults(p: Platform) -> Mapping {
        let (disk_bus, disk_controller, nic_model, video) = match p {
            Platform::Kvm | Platform::Openstack => (Bus::Virtio, "virtio-scsi-pci", "virtio-net-pci", "vga"),
            Platform::Vmware => (Bus::Scsi, "pvscsi", "vmxnet3", "vmvga"),
            Platform::Hyperv => (Bus::Scsi, "hv-storvsc", "hv-netvsc", "hyperv"),
        };
        Mapping {
            disk_bus,
            disk_controller: disk_controller.into(),
            nic_model: nic_model.into(),
            firmware: FirmwareChoice::Keep,
            machine: "auto".into(),
            video: video.into(),
            mac: MacPolicy::Keep,
            network: NetPolicy::Keep,
            package: "ova".into(),
            domain_type: "kvm".into(),
        }
    }

    /// Applies `KEY=VALUE` overrides in order; an unknown key or a value
    /// the key does not take is an error naming what it takes.
    pub fn with_overrides<S: AsRef<str>>(mut self, maps: &[S]) -> Result<Mapping, String> {
        for m in maps {
            let m = m.as_ref();
            let (k, v) = m.split_once('=').ok_or_else(|| format!("--map {m:?}: expected KEY=VALUE"))?;
            let (k, v) = (k.trim(), v.trim());
            let takes = MAP_KEYS
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, t)| *t)
                .ok_or_else(|| format!("--map {m:?}: unknown key {k:?} (keys: {})", MAP_KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")))?;
            let bad = || format!("--map {m:?}: {k} takes {takes}");
            match k {
                "disk_bus" => self.disk_bus = v.parse().map_err(|_| bad())?,
                "disk_controller" => self.disk_controller = device_name(v).ok_or_else(bad)?,
                "nic_model" => self.nic_model = device_name(v).ok_or_else(bad)?,
                "firmware" => {
                    self.firmware = match v {
                        "keep" => FirmwareChoice::Keep,
                        "bios" => FirmwareChoice::Bios,
                        "uefi" => FirmwareChoice::Uefi,
                        _ => return Err(bad()),
                    }
                }
                "machine" => self.machine = device_name(v).ok_or_else(bad)?,
                "video" => self.video = device_name(v).ok_or_else(bad)?,
                "mac" => {
                    self.mac = match v {
                        "keep" => MacPolicy::Keep,
                        "new" => MacPolicy::New,
                        _ => return Err(bad()),
                    }
                }
                "network" => {
                    self.network = match v {
                        "keep" => NetPolicy::Keep,
                        "dhcp" => NetPolicy::Dhcp,
                        _ => return Err(bad()),
                    }
                }
                "package" if v == "ova" || v == "ovf" => self.package = v.into(),
                "domain_type" if v == "kvm" || v == "qemu" => self.domain_type = v.into(),
                "package" | "domain_type" => return Err(bad()),
                _ => unreachable!("every key of MAP_KEYS is handled"),
            }
        }
        Ok(self)
    }
}

/// A device or machine name: letters, digits, `-`, `_`, `.`; these end
/// up in command lines and XML attributes.
fn device_name(v: &str) -> Option<String> {
    (!v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')).then(|| v.to_string())
}

/// What the converted VM is, beside its neutral document: what no
/// document field holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Converted {
    /// The platform mapped onto.
    pub platform: Platform,
    /// The mapping applied: the platform's defaults with the overrides.
    pub mapping: Mapping,
    /// The document the target runs: buses, controllers, NIC models,
    /// MACs, firmware and machine as mapped; admin fields kept.
    pub md: VmMetadata,
    /// NIC id -> (old MAC, new MAC) where the MAC changed.
    pub macs: BTreeMap<String, (String, String)>,
}

/// Maps a backed-up document onto a platform.
pub fn convert(src: &VmMetadata, platform: Platform, mapping: &Mapping) -> Result<Converted, String> {
    let mut md = src.clone();
    md.firmware = match mapping.firmware {
        FirmwareChoice::Keep => src.firmware,
        FirmwareChoice::Bios => Firmware::Bios,
        FirmwareChoice::Uefi => Firmware::Uefi,
    };
    md.machine = match (mapping.machine.as_str(), platform) {
        ("auto", Platform::Kvm | Platform::Openstack) => if md.firmware == Firmware::Uefi || src.machine.contains("q35") { "q35" } else { "pc" }.to_string(),
        ("auto", Platform::Vmware) => "vmx-14".to_string(),
        ("auto", Platform::Hyperv) => if md.firmware == Firmware::Uefi { "hyperv-gen2" } else { "hyperv-gen1" }.to_string(),
        (m, _) => m.to_string(),
    };
    let q35 = md.machine.contains("q35");
    let hyperv_gen2 = md.machine == "hyperv-gen2";
    for d in &mut md.disks {
        if d.is_cdrom() && hyperv_gen2 {
            // Generation 2 has no IDE controller: its DVD drives are SCSI.
            d.bus = Bus::Scsi;
            d.controller = Some(mapping.disk_controller.clone());
            d.model = Some("scsi-cd".into());
            continue;
        }
        if d.is_cdrom() {
            // A CD-ROM needs no driver to boot the guest: it goes where
            // every platform has one (IDE on pc, AHCI on q35).
            d.bus = if q35 { Bus::Sata } else { Bus::Ide };
            d.controller = Some(if q35 { "ich9-ahci" } else { "piix3-ide" }.into());
            d.model = Some("ide-cd".into());
            continue;
        }
        d.bus = mapping.disk_bus;
        d.model = None;
        d.controller = match mapping.disk_bus {
            Bus::Scsi => Some(mapping.disk_controller.clone()),
            Bus::Ide | Bus::Sata if q35 => Some("ich9-ahci".into()),
            Bus::Ide => Some("piix3-ide".into()),
            Bus::Sata => Some("ahci".into()),
            _ => None,
        };
    }
    if platform == Platform::Hyperv && md.machine == "hyperv-gen1" {
        // Generation 1 boots only from IDE; the rest may sit on SCSI.
        if let Some(d) = md.disks.iter_mut().find(|d| !d.is_cdrom()) {
            d.bus = Bus::Ide;
            d.controller = Some("piix3-ide".into());
        }
    }
    let mut macs = BTreeMap::new();
    let mut taken: Vec<String> = md.nics.iter().map(|n| n.mac.to_ascii_lowercase()).collect();
    for Nic { id, mac, model } in &mut md.nics {
        *model = mapping.nic_model.clone();
        if mapping.mac == MacPolicy::New {
            let new = loop {
                let m = random_mac(platform)?;
                if !taken.contains(&m) {
                    break m;
                }
            };
            taken.push(new.clone());
            macs.insert(id.clone(), (mac.clone(), new.clone()));
            *mac = new;
        }
    }
    md.validate().map_err(|e| format!("the mapped VM for {platform} is not valid: {e}"))?;
    Ok(Converted { platform, mapping: mapping.clone(), md, macs })
}

/// A random MAC in the platform's own range, so its tools accept it:
/// VMware's static range 00:50:56:00-3f, Hyper-V's 00:15:5d, QEMU's
/// 52:54:00 otherwise.
fn random_mac(p: Platform) -> Result<String, String> {
    let mut b = [0u8; 3];
    getrandom::getrandom(&mut b).map_err(|e| format!("no random bytes for a new MAC: {e}"))?;
    let prefix = match p {
        Platform::Vmware => {
            b[0] &= 0x3f;
            "00:50:56"
        }
        Platform::Hyperv => "00:15:5d",
        Platform::Kvm | Platform::Openstack => "52:54:00",
    };
    Ok(format!("{prefix}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2]))
}

/// Kernel modules a Linux guest needs for the converted hardware: the
/// boot disk's controller, the NICs, and what those sit on. Repair puts
/// them into the initramfs.
pub fn linux_drivers(md: &VmMetadata) -> Vec<String> {
    let mut m: Vec<&str> = Vec::new();
    for d in &md.disks {
        match (d.bus, d.controller.as_deref()) {
            (Bus::Virtio, _) => m.extend(["virtio_pci", "virtio_blk"]),
            (Bus::Scsi, Some("virtio-scsi-pci") | None) => m.extend(["virtio_pci", "virtio_scsi", "sd_mod"]),
            (Bus::Scsi, Some("pvscsi")) => m.extend(["vmw_pvscsi", "sd_mod"]),
            (Bus::Scsi, Some("hv-storvsc")) => m.extend(["hv_vmbus", "hv_storvsc", "sd_mod"]),
            (Bus::Scsi, Some("lsi53c895a" | "lsi53c810")) => m.extend(["sym53c8xx", "sd_mod"]),
            (Bus::Scsi, Some("megasas" | "megasas-gen2")) => m.extend(["megaraid_sas", "sd_mod"]),
            (Bus::Scsi, Some("mptsas1068")) => m.extend(["mptsas", "sd_mod"]),
            (Bus::Scsi, Some(_)) => m.push("sd_mod"),
            (Bus::Ide, _) => m.extend(["ata_piix", "ata_generic", "sd_mod"]),
            (Bus::Sata, _) => m.extend(["ahci", "sd_mod"]),
            (Bus::Nvme, _) => m.push("nvme"),
            (Bus::Usb, _) => m.extend(["xhci_pci", "usb_storage", "sd_mod"]),
        }
    }
    for n in &md.nics {
        match n.model.as_str() {
            "virtio-net-pci" | "virtio-net" => m.extend(["virtio_pci", "virtio_net"]),
            "vmxnet3" => m.push("vmxnet3"),
            "hv-netvsc" => m.extend(["hv_vmbus", "hv_netvsc"]),
            "e1000" => m.push("e1000"),
            "e1000e" => m.push("e1000e"),
            "rtl8139" => m.push("8139cp"),
            _ => {}
        }
    }
    let mut out: Vec<String> = Vec::new();
    for x in m {
        if !out.iter().any(|o| o == x) {
            out.push(x.to_string());
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lifeboat_vm::{Disk, METADATA_VERSION};

    pub(crate) fn ide_e1000() -> VmMetadata {
        VmMetadata {
            version: METADATA_VERSION,
            name: "web1".into(),
            uuid: Some("0d5b7a4e-0000-4000-8000-000000000001".into()),
            source: "qemu 10.0.2".into(),
            firmware: Firmware::Bios,
            machine: "pc-i440fx-10.0".into(),
            cpus: 2,
            memory_mib: 1024,
            disks: vec![
                Disk { id: "ide0-hd0".into(), size: 2 << 30, bus: Bus::Ide, controller: Some("piix3-ide".into()), model: Some("ide-hd".into()), format: "raw".into(), source: None },
                Disk { id: "cd0".into(), size: 1 << 20, bus: Bus::Ide, controller: Some("piix3-ide".into()), model: Some("ide-cd".into()), format: "raw".into(), source: None },
            ],
            nics: vec![Nic { id: "net0".into(), mac: "52:54:00:12:34:56".into(), model: "e1000".into() }],
            boot_order: vec!["ide0-hd0".into()],
            guest_os: None,
            extra: BTreeMap::from([("owner".to_string(), "ops & <infra>".to_string())]),
        }
    }

    #[test]
    fn each_platform_maps_disks_nics_and_machine() {
        let src = ide_e1000();
        let kvm = convert(&src, Platform::Kvm, &Mapping::defaults(Platform::Kvm)).unwrap();
        assert_eq!((kvm.md.disks[0].bus, kvm.md.disks[0].controller.as_deref()), (Bus::Virtio, None));
        assert_eq!((kvm.md.disks[1].bus, kvm.md.disks[1].model.as_deref()), (Bus::Ide, Some("ide-cd")), "a CD-ROM stays where every platform has a driver");
        assert_eq!(kvm.md.nics[0].model, "virtio-net-pci");
        assert_eq!(kvm.md.machine, "pc");
        assert_eq!(kvm.md.nics[0].mac, "52:54:00:12:34:56", "MACs are kept by default");
        assert_eq!(kvm.md.extra, src.extra);
        let vmw = convert(&src, Platform::Vmware, &Mapping::defaults(Platform::Vmware)).unwrap();
        assert_eq!((vmw.md.disks[0].bus, vmw.md.disks[0].controller.as_deref()), (Bus::Scsi, Some("pvscsi")));
        assert_eq!((vmw.md.nics[0].model.as_str(), vmw.md.machine.as_str()), ("vmxnet3", "vmx-14"));
        let hv = convert(&src, Platform::Hyperv, &Mapping::defaults(Platform::Hyperv)).unwrap();
        assert_eq!(hv.md.machine, "hyperv-gen1");
        assert_eq!(hv.md.disks[0].bus, Bus::Ide, "generation 1 boots from IDE");
        let hv2 = convert(&src, Platform::Hyperv, &Mapping::defaults(Platform::Hyperv).with_overrides(&["firmware=uefi"]).unwrap()).unwrap();
        assert_eq!((hv2.md.machine.as_str(), hv2.md.firmware, hv2.md.disks[0].bus), ("hyperv-gen2", Firmware::Uefi, Bus::Scsi));
        assert_eq!(hv2.md.disks[1].bus, Bus::Scsi, "generation 2 has no IDE: its DVD drive is on SCSI");
        let cd = crate::writers::DiskFile { id: "cd0".into(), file: "cd0.vhdx".into(), format: crate::DiskFormat::Vhdx, size: 1 << 20, file_bytes: 1 << 20 };
        let ps1 = crate::writers::hyperv_ps1(&hv2, &[cd]);
        assert!(ps1.contains("Add-VMDvdDrive -VM $vm -ControllerType SCSI"), "{ps1}");
        assert!(!ps1.contains("IDE"), "{ps1}");
        let q = convert(&src, Platform::Openstack, &Mapping::defaults(Platform::Openstack).with_overrides(&["firmware=uefi"]).unwrap()).unwrap();
        assert_eq!((q.md.machine.as_str(), q.md.disks[1].bus), ("q35", Bus::Sata), "q35 has no PIIX IDE: the CD-ROM goes on AHCI");
    }

    #[test]
    fn overrides_apply_in_order_and_bad_ones_say_what_the_key_takes() {
        let m =
            Mapping::defaults(Platform::Kvm).with_overrides(&["disk_bus=scsi", "disk_controller=lsi53c895a", "nic_model=e1000e", "mac=new", "network=dhcp", "video=virtio", "disk_bus=sata"]).unwrap();
        assert_eq!((m.disk_bus, m.disk_controller.as_str(), m.nic_model.as_str(), m.mac, m.network, m.video.as_str()), (Bus::Sata, "lsi53c895a", "e1000e", MacPolicy::New, NetPolicy::Dhcp, "virtio"));
        let e = Mapping::defaults(Platform::Kvm).with_overrides(&["disk_bus=floppy"]).unwrap_err();
        assert!(e.contains("disk_bus takes ide, sata"), "{e}");
        let e = Mapping::defaults(Platform::Kvm).with_overrides(&["colour=red"]).unwrap_err();
        assert!(e.contains("unknown key \"colour\"") && e.contains("nic_model"), "{e}");
        assert!(Mapping::defaults(Platform::Kvm).with_overrides(&["nic_model"]).unwrap_err().contains("KEY=VALUE"));
        assert!(Mapping::defaults(Platform::Kvm).with_overrides(&["nic_model=e1000,netdev=x"]).is_err(), "no QEMU option injection through a model");
        assert!(Mapping::defaults(Platform::Kvm).with_overrides(&["machine=pc'/><x"]).is_err(), "no XML injection through a machine");
        assert!("xen".parse::<Platform>().unwrap_err().contains("kvm, openstack, vmware, hyperv"));
    }

    #[test]
    fn new_macs_are_fresh_unique_and_in_the_platform_range() {
        let mut src = ide_e1000();
        src.nics.push(Nic { id: "net1".into(), mac: "52:54:00:12:34:57".into(), model: "e1000".into() });
        for p in Platform::ALL {
            let c = convert(&src, p, &Mapping::defaults(p).with_overrides(&["mac=new"]).unwrap()).unwrap();
            assert_eq!(c.macs.len(), 2);
            assert_ne!(c.md.nics[0].mac, c.md.nics[1].mac);
            for (id, (old, new)) in &c.macs {
                let n = c.md.nics.iter().find(|n| &n.id == id).unwrap();
                assert_eq!(&n.mac, new);
                assert_ne!(old, new);
                let want = match p {
                    Platform::Vmware => "00:50:56:",
                    Platform::Hyperv => "00:15:5d:",
                    _ => "52:54:00:",
                };
                assert!(new.starts_with(want), "{p}: {new}");
            }
            if p == Platform::Vmware {
                assert!(u8::from_str_radix(&c.md.nics[0].mac[9..11], 16).unwrap() <= 0x3f, "VMware's static range");
            }
        }
    }

    #[test]
    fn drivers_follow_the_mapped_hardware() {
        let src = ide_e1000();
        let kvm = convert(&src, Platform::Kvm, &Mapping::defaults(Platform::Kvm)).unwrap();
        let d = linux_drivers(&kvm.md);
        for m in ["virtio_pci", "virtio_blk", "virtio_net"] {
            assert!(d.contains(&m.to_string()), "{d:?}");
        }
        assert_eq!(d.iter().filter(|x| *x == "virtio_pci").count(), 1);
        let vmw = convert(&src, Platform::Vmware, &Mapping::defaults(Platform::Vmware)).unwrap();
        let d = linux_drivers(&vmw.md);
        assert!(d.contains(&"vmw_pvscsi".to_string()) && d.contains(&"vmxnet3".to_string()), "{d:?}");
        let hv = convert(&src, Platform::Hyperv, &Mapping::defaults(Platform::Hyperv).with_overrides(&["firmware=uefi"]).unwrap()).unwrap();
        let d = linux_drivers(&hv.md);
        assert!(d.contains(&"hv_storvsc".to_string()) && d.contains(&"hv_netvsc".to_string()), "{d:?}");
    }
}
