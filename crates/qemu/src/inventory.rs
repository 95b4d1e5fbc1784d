//! A running VM's hardware, read over QMP into the neutral format.

use crate::qmp::{Qmp, QmpError};
use lifeboat_vm::{is_device_id, Bus, Disk, Firmware, Nic, VmMetadata, METADATA_VERSION};
use serde_json::{json, Value};

/// A disk as QEMU knows it: the node to back up and the guest device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskNode {
    /// Guest device id (`-device ...,id=`), the disk's id in the metadata.
    pub device: String,
    /// The device's QOM path (for its model and boot index).
    pub qom_path: String,
    /// Block node at the top of the disk's graph (what the guest writes).
    pub node: String,
    /// Virtual size in bytes (`virtual-size` of the image; 0 if QEMU gave
    /// none).
    pub size: u64,
    /// Image format of the inserted medium (`qcow2`, `raw`, ...); `raw`
    /// if QEMU gave none. Bitmaps survive a restart only on qcow2.
    pub format: String,
    /// Image file name as `query-block` reports it; recorded as the disk's
    /// `source` in the metadata.
    pub filename: String,
}

/// The guest device's id and QOM path for a block backend: devices made
/// with `-device ...,id=X` live under /machine/peripheral/X; anonymous
/// ones (`-drive if=virtio`) under /machine/peripheral-anon and are
/// named by their drive (`virtio0`).
fn device_of(qdev: &str, drive: &str) -> (String, String) {
    let path = qdev.strip_suffix("/virtio-backend").unwrap_or(qdev).to_string();
    if let Some(id) = path.strip_prefix("/machine/peripheral/") {
        return (id.to_string(), path.clone());
    }
    if path.starts_with('/') {
        let id = if drive.is_empty() { path.rsplit('/').next().unwrap_or("disk").to_string() } else { drive.to_string() };
        return (id, path);
    }
    // A bare id (older QEMU): a named peripheral.
    (path.clone(), format!("/machine/peripheral/{path}"))
}

fn qom_str(q: &mut Qmp, path: &str, prop: &str) -> Option<String> {
    q.execute("qom-get", json!({ "path": path, "property": prop })).ok().and_then(|v| v.as_str().map(String::from))
}

/// The bus a disk sits on and its controller's QEMU device name, from
/// the guest device's model and the controller its parent bus belongs to
/// (`parent_bus` is a QOM link like `/machine/unattached/device[3]/ide/ide.0`,
/// whose parent object is the controller).
fn bus_of(q: &mut Qmp, dev_path: &str, model: &str) -> (Bus, Option<String>) {
    let mut controller = || -> Option<String> {
        let bus = qom_link(q, dev_path, "parent_bus")?;
        let ctrl = bus.rsplit_once('/')?.0.to_string();
        // virtio-scsi's bus hangs off the PCI proxy's virtio-backend.
        let ctrl = ctrl.strip_suffix("/virtio-backend").unwrap_or(&ctrl).to_string();
        qom_str(q, &ctrl, "type")
    };
    match model {
        m if m.starts_with("virtio-blk") => (Bus::Virtio, None),
        m if m.starts_with("nvme") => (Bus::Nvme, None),
        m if m.starts_with("usb-") => (Bus::Usb, None),
        m if m.starts_with("scsi-") => (Bus::Scsi, Some(controller().unwrap_or_else(|| "virtio-scsi-pci".into()))),
        m if m.starts_with("ide-") => match controller() {
            Some(c) if c.contains("ahci") => (Bus::Sata, Some(c)),
            Some(c) => (Bus::Ide, Some(c)),
            None => (Bus::Ide, None),
        },
        _ => (Bus::Virtio, None),
    }
}

fn qom_link(q: &mut Qmp, path: &str, prop: &str) -> Option<String> {
    qom_str(q, path, prop).filter(|p| p.starts_with('/'))
}

/// The VM's disks: every block backend attached to a guest device with a
/// medium inserted (CD-ROMs with media too; empty drives are skipped).
pub fn disks(q: &mut Qmp) -> Result<Vec<DiskNode>, QmpError> {
    let blocks = q.execute("query-block", json!({}))?;
    let mut out = Vec::new();
    for b in blocks.as_array().into_iter().flatten() {
        let Some(ins) = b.get("inserted") else { continue };
        let qdev = b["qdev"].as_str().unwrap_or("");
        let drive = b["device"].as_str().unwrap_or("");
        if qdev.is_empty() && drive.is_empty() {
            continue;
        }
        // UEFI firmware code and variable store, not guest disks: restore
        // starts the VM with its own firmware (`firmware = uefi`).
        if qdev.starts_with("/machine/system.flash") || drive.starts_with("pflash") {
            continue;
        }
        let (mut device, qom_path) = if qdev.is_empty() { (drive.to_string(), format!("/machine/peripheral/{drive}")) } else { device_of(qdev, drive) };
        // An anonymous device on a -blockdev node has neither an id nor
        // a drive name ("device[4]"): give it one QEMU and file names take.
        if !is_device_id(&device) || out.iter().any(|d: &DiskNode| d.device == device) {
            device = (0..).map(|i| format!("disk{i}")).find(|c| !out.iter().any(|d: &DiskNode| d.device == *c)).expect("a free name");
        }
        out.push(DiskNode {
            device,
            qom_path,
            node: ins["node-name"].as_str().unwrap_or("").to_string(),
            size: ins["image"]["virtual-size"].as_u64().unwrap_or(0),
            format: ins["image"]["format"].as_str().unwrap_or("raw").to_string(),
            filename: ins["image"]["filename"].as_str().unwrap_or("").to_string(),
        });
    }
    Ok(out)
}

/// Reads the VM's hardware into a metadata document.
pub fn capture(q: &mut Qmp) -> Result<(VmMetadata, Vec<DiskNode>), QmpError> {
    let name = q.execute("query-name", json!({}))?["name"].as_str().unwrap_or("").to_string();
    let uuid = q.execute("query-uuid", json!({}))?.get("UUID").and_then(Value::as_str).filter(|u| *u != "00000000-0000-0000-0000-000000000000").map(String::from);
    let cpus = q.execute("query-cpus-fast", json!({}))?.as_array().map_or(1, |a| a.len() as u32);
    let memory_mib = q.execute("query-memory-size-summary", json!({}))?["base-memory"].as_u64().unwrap_or(0) >> 20;
    let machine = qom_str(q, "/machine", "type").unwrap_or_default();
    let machine = machine.strip_suffix("-machine").unwrap_or(&machine).to_string();
    // UEFI firmware lives in a pflash device with a drive attached.
    let firmware = match qom_str(q, "/machine/system.flash0", "drive") {
        Some(d) if !d.is_empty() => Firmware::Uefi,
        _ => Firmware::Bios,
    };

    let nodes = disks(q)?;
    let mut boot: Vec<(i64, String)> = Vec::new();
    let mut disks_md = Vec::new();
    for d in &nodes {
        let path = d.qom_path.clone();
        let model = qom_str(q, &path, "type").unwrap_or_default();
        if let Ok(i) = q.execute("qom-get", json!({ "path": path, "property": "bootindex" })) {
            if let Some(i) = i.as_i64().filter(|i| *i >= 0) {
                boot.push((i, d.device.clone()));
            }
        }
        let (bus, controller) = bus_of(q, &path, &model);
        disks_md.push(Disk { id: d.device.clone(), size: d.size, bus, controller, model: Some(model).filter(|m| !m.is_empty()), format: d.format.clone(), source: Some(d.filename.clone()) });
    }
    // NICs are the guest devices with a `mac` property (query-rx-filter
    // only knows virtio-net).
    let mut nics = Vec::new();
    let mut candidates = Vec::new();
    for parent in ["/machine/peripheral", "/machine/peripheral-anon"] {
        let Ok(children) = q.execute("qom-list", json!({ "path": parent })) else { continue };
        for c in children.as_array().into_iter().flatten() {
            if c["type"].as_str().unwrap_or("").starts_with("child<") {
                candidates.push((parent, c["name"].as_str().unwrap_or("").to_string()));
            }
        }
    }
    for (parent, name) in candidates {
        let path = format!("{parent}/{name}");
        let id = if parent.ends_with("-anon") { format!("net{}", nics.len()) } else { name };
        let Some(mac) = qom_str(q, &path, "mac") else { continue };
        let model = qom_str(q, &path, "type").unwrap_or_default();
        if let Ok(i) = q.execute("qom-get", json!({ "path": path, "property": "bootindex" })) {
            if let Some(i) = i.as_i64().filter(|i| *i >= 0) {
                boot.push((i, id.clone()));
            }
        }
        nics.push(Nic { id, mac, model });
    }
    boot.sort();
    let md = VmMetadata {
        version: METADATA_VERSION,
        name,
        uuid,
        source: format!("qemu {}", q.version),
        firmware,
        machine,
        cpus,
        memory_mib,
        disks: disks_md,
        nics,
        boot_order: boot.into_iter().map(|b| b.1).collect(),
        guest_os: None,
        extra: Default::default(),
    };
    Ok((md, nodes))
}

/// The run state QEMU reports (`query-status`): `running`, `paused`,
/// `shutdown`, `internal-error`, ...
pub fn run_state(q: &mut Qmp) -> Result<String, QmpError> {
    Ok(q.execute("query-status", json!({}))?["status"].as_str().unwrap_or("").to_string())
}
