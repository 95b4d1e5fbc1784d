//! The neutral VM format.
//!
//! A backed-up VM is this metadata document plus one chunked image per
//! disk (see `docs/vm-format.md`). The document says what hardware the VM
//! had in terms no single hypervisor owns, so that a restore can rebuild it
//! on QEMU/KVM now and on other platforms later. Connectors (crates/qemu)
//! fill it from the running VM; the admin may edit it (and `extra` holds
//! fields of their own); restore reads it.
//!
//! One rule holds the two ends together: whatever a restore needs of the
//! document, [`VmMetadata::validate`] checks, and a backup runs the same
//! check before it commits (after [`VmMetadata::complete`] filled what it
//! can). Reading is tolerant instead: [`VmMetadata::load`] takes every
//! version a released `vm backup` wrote (`upgrade`), repairs what an old
//! or hand-edited document got wrong, and says what it changed.

#![warn(missing_docs)]

pub mod image;
mod upgrade;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the metadata document this code writes. Every older one is
/// read too (see `upgrade.rs` for what changed between them).
pub const METADATA_VERSION: u32 = 2;

/// What the VM boots with; a guest installed for one rarely boots with
/// the other, so restore keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// Legacy BIOS; JSON `bios`.
    Bios,
    /// UEFI (OVMF on QEMU); JSON `uefi`.
    Uefi,
}

/// The kind of storage bus a disk sits on, as the guest sees it. A guest
/// OS boots only with a driver for its boot disk's controller (Windows
/// above all), so restore must rebuild the same kind, or repair the guest
/// for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    /// Parallel ATA: the PIIX IDE of QEMU's `pc` machine.
    Ide,
    /// AHCI (ICH9 on `q35`, or an `ahci` device on `pc`).
    Sata,
    /// A SCSI controller (`controller` says which: lsi53c895a,
    /// virtio-scsi-pci, megasas, pvscsi ...).
    Scsi,
    /// virtio-blk: the disk is its own PCI device.
    Virtio,
    /// NVMe: the disk is its own controller.
    Nvme,
    /// USB mass storage (`usb-storage`).
    Usb,
}

impl Bus {
    /// Every bus; parsing a name (`FromStr`) looks it up here.
    pub const ALL: [Bus; 6] = [Bus::Ide, Bus::Sata, Bus::Scsi, Bus::Virtio, Bus::Nvme, Bus::Usb];

    /// The name used in the JSON document and on the command line
    /// (`ide`, `sata`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Bus::Ide => "ide",
            Bus::Sata => "sata",
            Bus::Scsi => "scsi",
            Bus::Virtio => "virtio",
            Bus::Nvme => "nvme",
            Bus::Usb => "usb",
        }
    }

    /// The controller a disk on this bus gets when the document names
    /// none (QEMU device names).
    pub fn default_controller(self) -> Option<&'static str> {
        match self {
            Bus::Ide => Some("piix3-ide"),
            Bus::Sata => Some("ich9-ahci"),
            Bus::Scsi => Some("virtio-scsi-pci"),
            Bus::Virtio | Bus::Nvme | Bus::Usb => None,
        }
    }
}

impl std::fmt::Display for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Bus {
    type Err = String;
    fn from_str(s: &str) -> Result<Bus, String> {
        Bus::ALL.into_iter().find(|b| b.as_str() == s).ok_or_else(|| format!("unknown disk bus {s:?} (known: ide, sata, scsi, virtio, nvme, usb)"))
    }
}

/// The metadata document, `vm.json` in a VM snapshot: the VM's hardware
/// in hypervisor-neutral terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmMetadata {
    /// The document's format version; [`METADATA_VERSION`] once loaded.
    pub version: u32,
    /// The name the VM is known by (QEMU `-name`, libvirt domain name).
    pub name: String,
    /// The hypervisor's id for the VM (SMBIOS UUID), when it has one.
    #[serde(default)]
    pub uuid: Option<String>,
    /// Where it came from, e.g. "qemu 10.0.2" or "libvirt".
    pub source: String,
    /// BIOS or UEFI.
    pub firmware: Firmware,
    /// Machine type as the source named it, e.g. "pc-q35-10.0"; restore
    /// maps it to what the target offers.
    pub machine: String,
    /// Virtual CPUs (at least 1).
    pub cpus: u32,
    /// Memory in MiB (at least 1).
    pub memory_mib: u64,
    /// The disks (at least one).
    pub disks: Vec<Disk>,
    /// The network cards (may be none).
    pub nics: Vec<Nic>,
    /// Device ids in boot order (disks and NICs).
    #[serde(default)]
    pub boot_order: Vec<String>,
    /// Guest OS as far as known (from qemu-ga when it answers).
    #[serde(default)]
    pub guest_os: Option<GuestOs>,
    /// Fields the admin adds (owner, notes, ticket): kept as they are.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

/// One virtual disk (or CD-ROM drive) of the VM. Its data is stored
/// beside the document as `<id>.raw` (under its old id if loading had to
/// change it, see [`Loaded::renamed`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Stable id of the disk within the VM (the guest-visible device id).
    pub id: String,
    /// Size in bytes of the virtual disk.
    pub size: u64,
    /// Bus the guest sees it on.
    pub bus: Bus,
    /// The controller the disk hangs off, as QEMU names the device:
    /// `piix3-ide`, `ich9-ahci`, `lsi53c895a`, `virtio-scsi-pci`,
    /// `megasas` ...; `None` where the disk is its own controller
    /// (virtio-blk, NVMe) or the source did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// The guest device: `ide-hd`, `ide-cd`, `scsi-hd`, `scsi-cd`,
    /// `virtio-blk-pci`, `nvme`, `usb-storage`; `None` for a plain disk
    /// of its bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Format of the source image (qcow2, raw, ...): informational.
    pub format: String,
    /// Path or URL of the source image at backup time.
    #[serde(default)]
    pub source: Option<String>,
}

impl Disk {
    /// A CD-ROM drive (its medium is backed up like a disk).
    pub fn is_cdrom(&self) -> bool {
        self.model.as_deref().is_some_and(|m| m.ends_with("-cd"))
    }
}

/// One network card of the VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// Stable id of the NIC within the VM (a device id, unique among
    /// disks and NICs).
    pub id: String,
    /// MAC address, `xx:xx:xx:xx:xx:xx` in hex, unique within the VM;
    /// kept on restore so the guest's network config still matches.
    pub mac: String,
    /// Device model: virtio-net-pci, e1000, rtl8139, vmxnet3 ...
    pub model: String,
}

/// The guest operating system, as qemu-ga's `guest-get-osinfo` (or an
/// imported OVF) reported it. Informational: restore does not need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestOs {
    /// Short OS id, e.g. `ubuntu`, `mswindows`.
    pub id: String,
    /// Human-readable name, e.g. `Ubuntu 24.04 LTS`.
    pub name: String,
    /// OS version id, e.g. `24.04`, when known.
    #[serde(default)]
    pub version: Option<String>,
    /// Kernel release, when known.
    #[serde(default)]
    pub kernel: Option<String>,
}

/// Why a metadata document was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// Not JSON, not an object, or a field that cannot be read as its
    /// type.
    #[error("VM metadata is not valid JSON: {0}")]
    Parse(String),
    /// Written by a newer lifeboat: refused rather than misread.
    #[error("VM metadata version {found} is newer than this lifeboat knows (it reads versions 1 to {supported}); restore with a newer lifeboat")]
    Version {
        /// The document's version.
        found: u32,
        /// [`METADATA_VERSION`].
        supported: u32,
    },
    /// Readable, but something a restore needs is missing or wrong
    /// ([`VmMetadata::validate`]); the message names it.
    #[error("VM metadata is invalid: {0}")]
    Invalid(String),
}

/// A document as [`VmMetadata::load`] read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The document, upgraded, completed and valid.
    pub md: VmMetadata,
    /// What was upgraded or repaired, for the admin.
    pub warnings: Vec<String>,
    /// Devices whose id had to change: new id -> id in the document
    /// (the name its disk is stored under).
    pub renamed: BTreeMap<String, String>,
}

impl Loaded {
    /// The id a disk's data is stored under in the snapshot.
    pub fn stored_id<'a>(&'a self, id: &'a str) -> &'a str {
        self.renamed.get(id).map(String::as_str).unwrap_or(id)
    }
}

/// What a reader or a backup knows about a VM beyond its document, to
/// fill what the document lacks.
#[derive(Clone, Debug, Default)]
pub struct Fallbacks {
    /// Names to give a VM whose document has none (after its UUID), the
    /// first non-empty one wins: the QMP socket's file name at backup
    /// time; the snapshot's `vm:<name>` and its id at restore.
    pub names: Vec<String>,
    /// What those names are, for the warning ("the QMP socket's name").
    pub names_are: &'static str,
    /// Disks as stored in the snapshot: (id, size in bytes).
    pub stored_disks: Vec<(String, u64)>,
}

impl VmMetadata {
    /// The document as pretty-printed JSON, as stored in `vm.json`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("metadata serializes")
    }

    /// Strict: parses a document of the current version and requires it
    /// to be valid as it stands (an admin's edit is checked this way).
    pub fn from_json(bytes: &[u8]) -> Result<Self, MetadataError> {
        let m: VmMetadata = serde_json::from_slice(bytes).map_err(|e| MetadataError::Parse(e.to_string()))?;
        if m.version != METADATA_VERSION {
            return Err(MetadataError::Invalid(format!("version {} given; an edited document must be version {METADATA_VERSION}", m.version)));
        }
        m.validate()?;
        Ok(m)
    }

    /// Tolerant: reads any version a released lifeboat wrote, upgrades it
    /// to the current one and repairs what it can (each change becomes a
    /// warning). Refuses only what cannot be read at all: not JSON, a
    /// version from the future, or a document nothing can be made of.
    pub fn load(bytes: &[u8], fb: &Fallbacks) -> Result<Loaded, MetadataError> {
        let mut warnings = Vec::new();
        let mut md = upgrade::to_current(bytes, &mut warnings)?;
        let (w, renamed) = upgrade::complete(&mut md, fb);
        warnings.extend(w);
        md.validate()?;
        Ok(Loaded { md, warnings, renamed })
    }

    /// Fills and repairs what a restore needs and the source did not
    /// give: a name (uuid, then `fb.names`), CPUs and memory, a machine
    /// type, well-formed unique MACs, disk sizes and ids matching the
    /// stored disks, a boot order naming existing devices. Returns what
    /// it changed, in words for the admin.
    pub fn complete(&mut self, fb: &Fallbacks) -> Vec<String> {
        upgrade::complete(self, fb).0
    }

    /// Everything restore and instant restore require of a document.
    /// `vm backup` checks it before committing a snapshot, so a backup
    /// that could not be restored is never reported as saved.
    pub fn validate(&self) -> Result<(), MetadataError> {
        let bad = |m: String| Err(MetadataError::Invalid(m));
        if self.version != METADATA_VERSION {
            return bad(format!("version {} (this lifeboat writes {METADATA_VERSION})", self.version));
        }
        if self.name.trim().is_empty() {
            return bad("the VM has no name".into());
        }
        if self.name.contains(['/', '\0', '\n']) {
            return bad(format!("the VM's name {:?} holds a '/', NUL or newline", self.name));
        }
        if self.cpus == 0 || self.memory_mib == 0 {
            return bad(format!("{} CPUs and {} MiB of memory cannot boot", self.cpus, self.memory_mib));
        }
        if self.machine.is_empty() {
            return bad("no machine type".into());
        }
        if self.disks.is_empty() {
            return bad("the VM has no disks".into());
        }
        let mut ids = std::collections::HashSet::new();
        for d in &self.disks {
            if !is_device_id(&d.id) {
                return bad(format!("disk id {:?} is not a usable device id (letters, digits, '-', '_', '.')", d.id));
            }
            if !ids.insert(d.id.as_str()) {
                return bad(format!("device id {} appears twice", d.id));
            }
            if d.size == 0 {
                return bad(format!("disk {} has size 0", d.id));
            }
        }
        let mut macs = std::collections::HashSet::new();
        for n in &self.nics {
            if !is_device_id(&n.id) || !ids.insert(n.id.as_str()) {
                return bad(format!("NIC id {:?} is not a usable device id or is used twice", n.id));
            }
            if !is_mac(&n.mac) {
                return bad(format!("NIC {} has an invalid MAC address {:?}", n.id, n.mac));
            }
            if !macs.insert(n.mac.to_ascii_lowercase()) {
                return bad(format!("MAC {} is used by two NICs", n.mac));
            }
            if n.model.is_empty() || !n.model.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return bad(format!("NIC {} has no usable device model ({:?})", n.id, n.model));
            }
        }
        for b in &self.boot_order {
            if !ids.contains(b.as_str()) {
                return bad(format!("boot order names {b}, which is neither a disk nor a NIC"));
            }
        }
        Ok(())
    }
}

/// A device id QEMU accepts (`id=`) that is also a safe file name
/// (`<id>.raw` in the snapshot, `<id>.qcow2` on restore).
pub fn is_device_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.as_bytes()[0].is_ascii_alphabetic() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> VmMetadata {
        VmMetadata {
            version: METADATA_VERSION,
            name: "web1".into(),
            uuid: None,
            source: "qemu 10.0.2".into(),
            firmware: Firmware::Bios,
            machine: "pc-q35-10.0".into(),
            cpus: 2,
            memory_mib: 1024,
            disks: vec![Disk { id: "disk0".into(), size: 1 << 30, bus: Bus::Virtio, controller: None, model: None, format: "qcow2".into(), source: None }],
            nics: vec![Nic { id: "net0".into(), mac: "52:54:00:12:34:56".into(), model: "virtio-net-pci".into() }],
            boot_order: vec!["disk0".into()],
            guest_os: None,
            extra: BTreeMap::from([("owner".to_string(), "ops".to_string())]),
        }
    }

    #[test]
    fn round_trips_and_keeps_admin_fields() {
        let m = sample();
        assert_eq!(VmMetadata::from_json(&m.to_json()).unwrap(), m);
        let l = VmMetadata::load(&m.to_json(), &Fallbacks::default()).unwrap();
        assert_eq!((l.md, l.warnings), (m, vec![]));
    }

    #[test]
    fn refuses_future_versions_and_nonsense() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["version"] = 3.into();
        let e = VmMetadata::load(&serde_json::to_vec(&v).unwrap(), &Fallbacks::default()).unwrap_err();
        assert!(e.to_string().contains("version 3"), "{e}");
        let mut m = sample();
        m.nics[0].mac = "52:54:00:zz:34:56".into();
        assert!(VmMetadata::from_json(&m.to_json()).unwrap_err().to_string().contains("MAC"));
        let mut m = sample();
        m.cpus = 0;
        assert!(m.validate().is_err());
        let mut m = sample();
        m.boot_order = vec!["cdrom9".into()];
        assert!(m.validate().unwrap_err().to_string().contains("cdrom9"));
        let mut m = sample();
        m.disks[0].id = "../x".into();
        assert!(m.validate().is_err());
        assert!(VmMetadata::from_json(b"{").is_err());
        assert!(VmMetadata::load(b"[1]", &Fallbacks::default()).is_err());
    }

    #[test]
    fn bus_names_round_trip() {
        for b in Bus::ALL {
            assert_eq!(b.as_str().parse::<Bus>().unwrap(), b);
            assert_eq!(serde_json::to_string(&b).unwrap(), format!("\"{b}\""));
        }
        assert!("floppy".parse::<Bus>().is_err());
    }
}
