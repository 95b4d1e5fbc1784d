//! The QEMU command line that boots a backed-up VM with the hardware its
//! metadata document describes, its disks read over NBD.
//!
//! One builder for every caller that boots a backup (the CLI's instant
//! restore, the daemon's jobs, the verification lab), and `vm backup`
//! builds it too before it commits: a document this cannot turn into a
//! command line is one no restore could boot.
//!
//! Disks keep the kind of controller the guest had (PIIX IDE, AHCI, the
//! same SCSI HBA, virtio-blk, NVMe), because a guest whose boot disk
//! moves to a controller it has no driver for does not boot.

use crate::accel::AccelChoice;
use lifeboat_vm::{Bus, Firmware, VmMetadata};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How the VM's NICs are connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetMode {
    /// QEMU's user-mode network (NAT, no host set-up needed).
    User,
    /// NICs present, no cable plugged.
    None,
    /// Each NIC on a tap device: one name, or `PREFIX%d` numbered per NIC.
    Tap(String),
}

impl std::str::FromStr for NetMode {
    type Err = String;
    fn from_str(s: &str) -> Result<NetMode, String> {
        match s {
            "user" => Ok(NetMode::User),
            "none" => Ok(NetMode::None),
            t if t.starts_with("tap:") && t.len() > 4 => Ok(NetMode::Tap(t[4..].to_string())),
            o => Err(format!("--net {o}: expected user, none or tap:IFNAME")),
        }
    }
}

/// Where a disk's bytes come from.
#[derive(Clone, Debug)]
pub enum DiskSource {
    /// An NBD export on a TCP server (the export name is the disk id).
    Nbd {
        /// Server address as QEMU should dial it (name or IP).
        host: String,
        /// Server TCP port.
        port: u16,
    },
    /// An NBD export on a unix socket: reachable from a QEMU inside a
    /// network namespace of its own (the lab), with no network path to
    /// the appliance at all.
    NbdUnix {
        /// The server's socket (export name: the disk id).
        path: PathBuf,
    },
    /// Local image files (a copied restore, a test).
    File {
        /// Directory holding one image per disk, `<disk id>.<format>`.
        path: PathBuf,
        /// QEMU block driver of the images (`raw`, `qcow2`), also their
        /// file extension.
        format: String,
    },
}

/// OVMF files a UEFI guest boots with.
#[derive(Clone, Debug)]
pub struct UefiFirmware {
    /// Firmware code, shared and mapped read-only.
    pub code: PathBuf,
    /// This VM's own, writable variable store (boot entries); see
    /// [`UefiFirmware::prepare`].
    pub vars: PathBuf,
}

impl UefiFirmware {
    /// Debian's OVMF (package `ovmf`), with a fresh variable store copied
    /// into `dir` when the VM needs one.
    pub fn ovmf_in(dir: &std::path::Path) -> UefiFirmware {
        UefiFirmware { code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(), vars: dir.join("OVMF_VARS.fd") }
    }

    /// Makes the variable store from OVMF's template unless it exists
    /// (a restarted instant restore keeps its boot entries).
    pub fn prepare(&self) -> std::io::Result<()> {
        if !self.vars.exists() {
            std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &self.vars).map_err(|e| std::io::Error::new(e.kind(), format!("copying OVMF's variable store (install the ovmf package): {e}")))?;
        }
        Ok(())
    }
}

/// Everything that is not in the metadata document.
#[derive(Clone, Debug)]
pub struct BootPlan {
    /// Accelerator (`-accel`).
    pub accel: AccelChoice,
    /// Where every disk is read from.
    pub source: DiskSource,
    /// How the NICs are connected.
    pub net: NetMode,
    /// QMP socket QEMU creates (`-qmp unix:...,server=on,wait=off`).
    pub qmp: PathBuf,
    /// The guest's serial console goes to this file.
    pub serial: PathBuf,
    /// `-name` of the booted VM.
    pub name: String,
    /// Start with the CPUs stopped (`-S`).
    pub paused: bool,
    /// A standard VGA card (for screenshots); none otherwise.
    pub video: bool,
    /// UEFI firmware for `firmware = uefi`: code (read-only) and this
    /// VM's own copy of the variable store.
    pub uefi: UefiFirmware,
}

/// The metadata describes hardware [`qemu_args`] cannot recreate (too many
/// IDE/SATA disks, an unknown SCSI controller).
#[derive(Debug, thiserror::Error)]
#[error("VM {vm} cannot be booted as described: {reason}")]
pub struct BootError {
    /// The VM's name in its metadata.
    pub vm: String,
    /// Which disk and what about it, for people.
    pub reason: String,
}

/// SCSI host adapters a restore can recreate (QEMU device names).
const SCSI_HBAS: &[&str] = &["virtio-scsi-pci", "lsi53c895a", "lsi53c810", "megasas", "megasas-gen2", "mptsas1068", "pvscsi", "am53c974", "dc390"];

/// The arguments after `qemu-system-x86_64`.
pub fn qemu_args(md: &VmMetadata, plan: &BootPlan) -> Result<Vec<String>, BootError> {
    let fail = |reason: String| BootError { vm: md.name.clone(), reason };
    let q35 = md.machine.contains("q35");
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    push(&["-accel", plan.accel.qemu_arg(), "-name", &plan.name]);
    push(&["-machine", &md.machine, "-smp", &md.cpus.to_string(), "-m", &md.memory_mib.to_string()]);
    push(&["-nodefaults", "-display", "none", "-vga", if plan.video { "std" } else { "none" }]);
    push(&["-qmp", &format!("unix:{},server=on,wait=off", plan.qmp.display())]);
    push(&["-serial", &format!("file:{}", plan.serial.display())]);
    if plan.paused {
        push(&["-S"]);
    }
    if md.firmware == Firmware::Uefi {
        push(&["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={}", plan.uefi.code.display())]);
        push(&["-drive", &format!("if=pflash,format=raw,unit=1,file={}", plan.uefi.vars.display())]);
    }
    let boot = |id: &str| md.boot_order.iter().position(|b| b == id).map(|p| format!(",bootindex={}", p + 1)).unwrap_or_default();

    // Controllers first, one per kind the disks need.
    let mut ide_units = 0u32; // PIIX: ide.0 and ide.1, two units each
    let mut sata_ports = 0u32;
    let sata_bus = if q35 { "ide" } else { "sata0" }; // q35 has ICH9 AHCI built in
    let mut scsi: BTreeMap<String, String> = BTreeMap::new(); // model -> controller id
    let mut usb = false;
    let mut devices = Vec::new();
    for (i, d) in md.disks.iter().enumerate() {
        let node = format!("d{i}");
        let readonly = if d.is_cdrom() { ",read-only=on" } else { "" };
        let blockdev = match &plan.source {
            DiskSource::Nbd { host, port } => format!("driver=nbd,node-name={node},server.type=inet,server.host={host},server.port={port},export={}{readonly}", d.id),
            DiskSource::NbdUnix { path } => format!("driver=nbd,node-name={node},server.type=unix,server.path={},export={}{readonly}", path.display(), d.id),
            DiskSource::File { path, format } => format!("driver={format},node-name={node},file.driver=file,file.filename={}{readonly}", path.join(format!("{}.{format}", d.id)).display()),
        };
        a.push("-blockdev".into());
        a.push(blockdev);
        let kind = if d.is_cdrom() { "cd" } else { "hd" };
        let b = boot(&d.id);
        // PIIX IDE exists only on pc; an IDE disk of a q35 VM goes on AHCI.
        let bus = if d.bus == Bus::Ide && q35 { Bus::Sata } else { d.bus };
        let dev = match bus {
            Bus::Ide => {
                if ide_units >= 4 {
                    return Err(fail(format!("disk {} is its 5th IDE disk; the PIIX controller has 4 places", d.id)));
                }
                let s = format!("ide-{kind},drive={node},id={},bus=ide.{},unit={}{b}", d.id, ide_units / 2, ide_units % 2);
                ide_units += 1;
                s
            }
            Bus::Sata => {
                if sata_ports >= 6 {
                    return Err(fail(format!("disk {} is its 7th SATA disk; an AHCI controller has 6 ports", d.id)));
                }
                if !q35 && sata_ports == 0 {
                    devices.push("ahci,id=sata0".to_string());
                }
                let s = format!("ide-{kind},drive={node},id={},bus={sata_bus}.{sata_ports}{b}", d.id);
                sata_ports += 1;
                s
            }
            Bus::Scsi => {
                let model = d.controller.as_deref().unwrap_or("virtio-scsi-pci");
                if !SCSI_HBAS.contains(&model) {
                    return Err(fail(format!("disk {} hangs off SCSI controller {model:?}, which this restore cannot recreate (known: {})", d.id, SCSI_HBAS.join(", "))));
                }
                let n = scsi.len();
                let ctrl = scsi.entry(model.to_string()).or_insert_with(|| format!("scsi{n}")).clone();
                if !devices.iter().any(|x| x.ends_with(&format!(",id={ctrl}"))) {
                    devices.push(format!("{model},id={ctrl}"));
                }
                format!("scsi-{kind},drive={node},id={},bus={ctrl}.0{b}", d.id)
            }
            Bus::Virtio => format!("virtio-blk-pci,drive={node},id={}{b}", d.id),
            Bus::Nvme => format!("nvme,drive={node},id={},serial={}{b}", d.id, &d.id[..d.id.len().min(20)]),
            Bus::Usb => {
                if !usb {
                    devices.push("qemu-xhci,id=usb0".to_string());
                    usb = true;
                }
                format!("usb-storage,drive={node},id={},bus=usb0.0{b}", d.id)
            }
        };
        devices.push(dev);
    }
    for (i, n) in md.nics.iter().enumerate() {
        let netdev = match &plan.net {
            NetMode::User => format!("user,id=n{i}"),
            NetMode::None => format!("hubport,id=n{i},hubid={i}"),
            NetMode::Tap(t) => format!("tap,id=n{i},ifname={},script=no,downscript=no", t.replace("%d", &i.to_string())),
        };
        a.push("-netdev".into());
        a.push(netdev);
        devices.push(format!("{},netdev=n{i},mac={},id={}{}", n.model, n.mac, n.id, boot(&n.id)));
    }
    for d in devices {
        a.push("-device".into());
        a.push(d);
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::{Accel, AccelChoice};
    use lifeboat_vm::{Disk, Nic, METADATA_VERSION};

    fn md(machine: &str, disks: &[(&str, Bus, Option<&str>)]) -> VmMetadata {
        VmMetadata {
            version: METADATA_VERSION,
            name: "web1".into(),
            uuid: None,
            source: "qemu".into(),
            firmware: Firmware::Bios,
            machine: machine.into(),
            cpus: 2,
            memory_mib: 512,
            disks: disks.iter().map(|(id, bus, c)| Disk { id: id.to_string(), size: 1 << 20, bus: *bus, controller: c.map(String::from), model: None, format: "raw".into(), source: None }).collect(),
            nics: vec![Nic { id: "net0".into(), mac: "52:54:00:00:00:01".into(), model: "e1000".into() }],
            boot_order: vec![disks[0].0.to_string()],
            guest_os: None,
            extra: Default::default(),
        }
    }

    fn plan() -> BootPlan {
        BootPlan {
            accel: AccelChoice { accel: Accel::Tcg, reason: String::new() },
            source: DiskSource::Nbd { host: "127.0.0.1".into(), port: 10809 },
            net: NetMode::User,
            qmp: "/w/qmp.sock".into(),
            serial: "/w/serial.log".into(),
            name: "web1-instant".into(),
            paused: false,
            video: false,
            uefi: UefiFirmware::ovmf_in(std::path::Path::new("/w")),
        }
    }

    fn devices(a: &[String]) -> Vec<&str> {
        a.windows(2).filter(|w| w[0] == "-device").map(|w| w[1].as_str()).collect()
    }

    #[test]
    fn pc_ide_disks_go_on_piix_and_sata_gets_an_ahci() {
        let m = md("pc-i440fx-10.0", &[("hd0", Bus::Ide, None), ("hd1", Bus::Ide, None), ("hd2", Bus::Ide, None), ("sd0", Bus::Sata, Some("ich9-ahci"))]);
        let a = qemu_args(&m, &plan()).unwrap();
        let d = devices(&a);
        assert_eq!(
            d[..5],
            [
                "ide-hd,drive=d0,id=hd0,bus=ide.0,unit=0,bootindex=1",
                "ide-hd,drive=d1,id=hd1,bus=ide.0,unit=1",
                "ide-hd,drive=d2,id=hd2,bus=ide.1,unit=0",
                "ahci,id=sata0",
                "ide-hd,drive=d3,id=sd0,bus=sata0.0"
            ]
        );
        assert!(a.windows(2).any(|w| w == ["-accel", "tcg"]));
        let mut m5 = m.clone();
        for i in 0..2 {
            m5.disks.push(Disk { id: format!("x{i}"), ..m.disks[0].clone() });
        }
        assert!(qemu_args(&m5, &plan()).unwrap_err().to_string().contains("5th IDE"));
    }

    #[test]
    fn q35_sata_uses_the_builtin_ahci_and_scsi_keeps_its_hba() {
        let m =
            md("pc-q35-10.0", &[("sda", Bus::Sata, Some("ich9-ahci")), ("sdb", Bus::Scsi, Some("lsi53c895a")), ("sdc", Bus::Scsi, Some("virtio-scsi-pci")), ("sdd", Bus::Scsi, Some("lsi53c895a"))]);
        let a = qemu_args(&m, &plan()).unwrap();
        let d = devices(&a);
        assert_eq!(d[0], "ide-hd,drive=d0,id=sda,bus=ide.0,bootindex=1");
        assert!(d.contains(&"lsi53c895a,id=scsi0") && d.contains(&"virtio-scsi-pci,id=scsi1"), "{d:?}");
        assert!(d.contains(&"scsi-hd,drive=d3,id=sdd,bus=scsi0.0"), "{d:?}");
        assert_eq!(d.iter().filter(|x| x.starts_with("lsi53c895a")).count(), 1);
        let bad = md("pc", &[("sda", Bus::Scsi, Some("rogue-hba,x=1"))]);
        assert!(qemu_args(&bad, &plan()).unwrap_err().to_string().contains("cannot recreate"));
    }

    #[test]
    fn nvme_virtio_usb_cdrom_nics_and_uefi() {
        let mut m = md("pc-q35-10.0", &[("nv0", Bus::Nvme, None), ("vd0", Bus::Virtio, None), ("u0", Bus::Usb, None), ("cd0", Bus::Sata, None)]);
        m.disks[3].model = Some("ide-cd".into());
        m.firmware = Firmware::Uefi;
        m.boot_order = vec!["net0".into(), "nv0".into()];
        let mut p = plan();
        p.net = NetMode::Tap("lab%d".into());
        p.paused = true;
        let a = qemu_args(&m, &p).unwrap();
        let d = devices(&a);
        assert!(d.contains(&"nvme,drive=d0,id=nv0,serial=nv0,bootindex=2"), "{d:?}");
        assert!(d.contains(&"virtio-blk-pci,drive=d1,id=vd0"));
        assert!(d.contains(&"qemu-xhci,id=usb0") && d.contains(&"usb-storage,drive=d2,id=u0,bus=usb0.0"));
        assert!(d.contains(&"ide-cd,drive=d3,id=cd0,bus=ide.0"));
        assert!(d.contains(&"e1000,netdev=n0,mac=52:54:00:00:00:01,id=net0,bootindex=1"));
        assert!(a.iter().any(|x| x.starts_with("tap,id=n0,ifname=lab0,")));
        assert!(a.iter().any(|x| x == "-S") && a.iter().any(|x| x == "if=pflash,format=raw,unit=1,file=/w/OVMF_VARS.fd"));
        assert!(a.iter().any(|x| x.contains("export=cd0,read-only=on")));
    }
}
