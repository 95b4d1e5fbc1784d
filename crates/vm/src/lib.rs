//! The neutral VM format.
//!
//! A backed-up VM is this metadata document plus one chunked image per
//! disk (see `docs/vm-format.md`). The document says what hardware the VM
//! had in terms no single hypervisor owns, so that a restore can rebuild it
//! on QEMU/KVM now and on other platforms later. Connectors (crates/qemu)
//! fill it from the running VM; the admin may edit it (and `extra` holds
//! fields of their own); restore reads it.
//!
//! The document is versioned: a reader refuses a version it does not know
//! rather than guessing.

pub mod image;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the metadata document this code writes and reads.
pub const METADATA_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmMetadata {
    pub version: u32,
    /// The name the VM is known by (QEMU `-name`, libvirt domain name).
    pub name: String,
    /// The hypervisor's id for the VM (SMBIOS UUID), when it has one.
    #[serde(default)]
    pub uuid: Option<String>,
    /// Where it came from, e.g. "qemu 10.0.2" or "libvirt".
    pub source: String,
    pub firmware: Firmware,
    /// Machine type as the source named it, e.g. "pc-q35-10.0"; restore
    /// maps it to what the target offers.
    pub machine: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<Disk>,
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Stable id of the disk within the VM (the guest-visible device id).
    pub id: String,
    /// Size in bytes of the virtual disk.
    pub size: u64,
    /// Bus the guest sees it on: virtio, scsi, sata, ide, nvme.
    pub bus: String,
    /// Format of the source image (qcow2, raw, ...): informational.
    pub format: String,
    /// Path or URL of the source image at backup time.
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub id: String,
    pub mac: String,
    /// Device model: virtio-net-pci, e1000, rtl8139, vmxnet3 ...
    pub model: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestOs {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub kernel: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("VM metadata is not valid JSON: {0}")]
    Parse(String),
    #[error("VM metadata version {found} is not supported (this lifeboat reads version {supported})")]
    Version { found: u32, supported: u32 },
    #[error("VM metadata is invalid: {0}")]
    Invalid(String),
}

impl VmMetadata {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("metadata serializes")
    }

    /// Parses and checks a document (as stored, or as edited by an admin).
    pub fn from_json(bytes: &[u8]) -> Result<Self, MetadataError> {
        #[derive(Deserialize)]
        struct V {
            version: u32,
        }
        let v: V = serde_json::from_slice(bytes).map_err(|e| MetadataError::Parse(e.to_string()))?;
        if v.version != METADATA_VERSION {
            return Err(MetadataError::Version { found: v.version, supported: METADATA_VERSION });
        }
        let m: VmMetadata = serde_json::from_slice(bytes).map_err(|e| MetadataError::Parse(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    pub fn validate(&self) -> Result<(), MetadataError> {
        let bad = |m: String| Err(MetadataError::Invalid(m));
        if self.name.is_empty() {
            return bad("the VM has no name".into());
        }
        if self.cpus == 0 || self.memory_mib == 0 {
            return bad(format!("{} CPUs and {} MiB of memory cannot boot", self.cpus, self.memory_mib));
        }
        let mut ids = std::collections::HashSet::new();
        for d in &self.disks {
            if !ids.insert(&d.id) {
                return bad(format!("disk id {} appears twice", d.id));
            }
            if d.size == 0 {
                return bad(format!("disk {} has size 0", d.id));
            }
        }
        for n in &self.nics {
            if !is_mac(&n.mac) {
                return bad(format!("NIC {} has an invalid MAC address {:?}", n.id, n.mac));
            }
        }
        Ok(())
    }
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VmMetadata {
        VmMetadata {
            version: METADATA_VERSION,
            name: "web1".into(),
            uuid: None,
            source: "qemu 10.0.2".into(),
            firmware: Firmware::Bios,
            machine: "pc-q35-10.0".into(),
            cpus: 2,
            memory_mib: 1024,
            disks: vec![Disk { id: "disk0".into(), size: 1 << 30, bus: "virtio".into(), format: "qcow2".into(), source: None }],
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
    }

    #[test]
    fn refuses_unknown_versions_and_nonsense() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["version"] = 2.into();
        let e = VmMetadata::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        let mut m = sample();
        m.nics[0].mac = "52:54:00:zz:34:56".into();
        assert!(VmMetadata::from_json(&m.to_json()).unwrap_err().to_string().contains("MAC"));
        let mut m = sample();
        m.cpus = 0;
        assert!(m.validate().is_err());
        assert!(VmMetadata::from_json(b"{").is_err());
    }
}
