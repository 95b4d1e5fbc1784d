//! Reading every document a released `vm backup` wrote, and repairing
//! what restore cannot do without.
//!
//! Versions:
//! - 1: first release. `bus` was `sata` for every `ide-hd`, also on the
//!   `pc` machine's PIIX IDE; no `controller` or `model`; an unnamed QEMU
//!   VM was saved with an empty name.
//! - 2: `bus` says what the guest sees (`ide` for PIIX), `controller` and
//!   `model` name the QEMU devices.
//!
//! Upgrading works on the JSON value, so that a field an old version
//! lacked or spelled differently never makes the document unreadable.

use crate::{is_device_id, is_mac, Bus, Disk, Fallbacks, Firmware, MetadataError, VmMetadata, METADATA_VERSION};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};

pub(crate) fn to_current(bytes: &[u8], warnings: &mut Vec<String>) -> Result<VmMetadata, MetadataError> {
    let mut v: Value = serde_json::from_slice(bytes).map_err(|e| MetadataError::Parse(e.to_string()))?;
    let obj = v.as_object_mut().ok_or_else(|| MetadataError::Parse("the document is not a JSON object".into()))?;
    let version = match obj.get("version").and_then(Value::as_u64) {
        Some(n) => n as u32,
        None => {
            warnings.push("the document has no version; read as version 1".into());
            1
        }
    };
    if version > METADATA_VERSION {
        return Err(MetadataError::Version { found: version, supported: METADATA_VERSION });
    }
    if version < 2 {
        v1_to_v2(obj, warnings);
    }
    fill_types(obj, warnings);
    obj.insert("version".into(), json!(METADATA_VERSION));
    serde_json::from_value(v).map_err(|e| MetadataError::Parse(e.to_string()))
}

/// Version 1 wrote `sata` for QEMU's IDE disks on every machine type.
fn v1_to_v2(obj: &mut Map<String, Value>, warnings: &mut Vec<String>) {
    let machine = obj.get("machine").and_then(Value::as_str).unwrap_or("").to_string();
    let from_qemu = obj.get("source").and_then(Value::as_str).unwrap_or("").starts_with("qemu");
    let q35 = machine.contains("q35");
    for d in obj.get_mut("disks").and_then(Value::as_array_mut).into_iter().flatten() {
        let Some(d) = d.as_object_mut() else { continue };
        if d.get("bus").and_then(Value::as_str) != Some("sata") {
            continue;
        }
        if from_qemu && !q35 {
            let id = d.get("id").and_then(Value::as_str).unwrap_or("?").to_string();
            d.insert("bus".into(), json!("ide"));
            d.insert("controller".into(), json!("piix3-ide"));
            warnings.push(format!("disk {id}: version 1 recorded the {machine} machine's IDE disks as sata; read as ide (PIIX)"));
        } else if q35 {
            d.insert("controller".into(), json!("ich9-ahci"));
        }
    }
}

/// Gives every field the type the current struct wants, so that a
/// missing or mistyped field becomes a warning and a default instead of
/// an unreadable document.
fn fill_types(obj: &mut Map<String, Value>, warnings: &mut Vec<String>) {
    let mut want = |obj: &mut Map<String, Value>, key: &str, ok: fn(&Value) -> bool, default: Value, what: &str| {
        if !obj.get(key).is_some_and(ok) {
            if obj.contains_key(key) || !default.is_null() {
                warnings.push(format!("field {what}: missing or not understood; using {default}"));
            }
            obj.insert(key.to_string(), default);
        }
    };
    want(obj, "name", Value::is_string, json!(""), "name");
    want(obj, "source", Value::is_string, json!("unknown"), "source");
    let fw_ok = |v: &Value| matches!(v.as_str(), Some("bios" | "uefi"));
    want(obj, "firmware", fw_ok, json!("bios"), "firmware");
    want(obj, "machine", Value::is_string, json!(""), "machine");
    want(obj, "cpus", |v| v.as_u64().is_some_and(|n| n <= u32::MAX as u64), json!(0), "cpus");
    want(obj, "memory_mib", Value::is_u64, json!(0), "memory_mib");
    want(obj, "disks", Value::is_array, json!([]), "disks");
    want(obj, "nics", Value::is_array, json!([]), "nics");
    if !obj.get("boot_order").is_some_and(|b| b.as_array().is_some_and(|a| a.iter().all(Value::is_string))) {
        obj.insert("boot_order".into(), json!([]));
    }
    if obj.get("uuid").is_some_and(|u| !u.is_string()) {
        obj.insert("uuid".into(), Value::Null);
    }
    if obj.get("guest_os").is_some_and(|g| serde_json::from_value::<crate::GuestOs>(g.clone()).is_err()) {
        obj.insert("guest_os".into(), Value::Null);
    }
    if obj.get("extra").is_some_and(|e| serde_json::from_value::<std::collections::BTreeMap<String, String>>(e.clone()).is_err()) {
        warnings.push("field extra: not a map of strings; dropped".into());
        obj.remove("extra");
    }
    let disks = std::mem::take(obj.get_mut("disks").and_then(Value::as_array_mut).expect("made an array above"));
    let mut kept = Vec::new();
    for (i, d) in disks.into_iter().enumerate() {
        let Value::Object(mut d) = d else {
            warnings.push(format!("disk #{i}: not an object; dropped"));
            continue;
        };
        let id = d.get("id").and_then(Value::as_str).unwrap_or("").to_string();
        if !d.get("id").is_some_and(Value::is_string) {
            d.insert("id".into(), json!(""));
        }
        if !d.get("size").is_some_and(Value::is_u64) {
            d.insert("size".into(), json!(0));
        }
        let bus = d.get("bus").and_then(Value::as_str).unwrap_or("");
        if bus.parse::<Bus>().is_err() {
            warnings.push(format!("disk {id}: bus {bus:?} is not known; read as virtio"));
            d.insert("bus".into(), json!("virtio"));
        }
        for k in ["controller", "model", "source"] {
            if d.get(k).is_some_and(|v| !v.is_string()) {
                d.remove(k);
            }
        }
        if !d.get("format").is_some_and(Value::is_string) {
            d.insert("format".into(), json!("raw"));
        }
        kept.push(Value::Object(d));
    }
    obj.insert("disks".into(), Value::Array(kept));
    let nics = std::mem::take(obj.get_mut("nics").and_then(Value::as_array_mut).expect("made an array above"));
    let mut kept = Vec::new();
    for (i, n) in nics.into_iter().enumerate() {
        let Value::Object(mut n) = n else {
            warnings.push(format!("NIC #{i}: not an object; dropped"));
            continue;
        };
        for k in ["id", "mac", "model"] {
            if !n.get(k).is_some_and(Value::is_string) {
                n.insert(k.into(), json!(""));
            }
        }
        kept.push(Value::Object(n));
    }
    obj.insert("nics".into(), Value::Array(kept));
}

/// Returns the warnings and the renamed devices (new id -> old id).
pub(crate) fn complete(m: &mut VmMetadata, fb: &Fallbacks) -> (Vec<String>, BTreeMap<String, String>) {
    let mut w = Vec::new();
    let clean_name = |s: &str| s.trim().replace(['/', '\0', '\n'], "-");
    if m.name.trim().is_empty() {
        let from_uuid = m.uuid.as_deref().filter(|u| !u.is_empty()).map(|u| (clean_name(u), "its SMBIOS UUID"));
        let from_fb = fb.names.iter().map(|n| clean_name(n)).find(|n| !n.is_empty()).map(|n| (n, fb.names_are));
        let (name, why) = from_uuid.or(from_fb).unwrap_or_else(|| ("vm".to_string(), "a default"));
        w.push(format!("the VM has no name; named it {name:?} after {why} (rename it in the VM's metadata if you like)"));
        m.name = name;
    } else if m.name != clean_name(&m.name) {
        let name = clean_name(&m.name);
        w.push(format!("the VM's name {:?} holds a '/', NUL, newline or outer spaces; using {name:?}", m.name));
        m.name = name;
    }
    if m.source.is_empty() {
        m.source = "unknown".into();
    }
    if m.cpus == 0 {
        w.push("the document gives 0 CPUs; restoring with 1".into());
        m.cpus = 1;
    }
    if m.memory_mib == 0 {
        w.push("the document gives no memory; restoring with 1024 MiB".into());
        m.memory_mib = 1024;
    }
    if m.machine.is_empty() {
        m.machine = if m.firmware == Firmware::Uefi { "q35" } else { "pc" }.into();
        w.push(format!("the document names no machine type; using {}", m.machine));
    }

    // Disks: the snapshot's stored disks are the truth about what exists.
    if !fb.stored_disks.is_empty() {
        m.disks.retain(|d| {
            let stored = fb.stored_disks.iter().any(|(id, _)| *id == d.id);
            if !stored {
                w.push(format!("disk {} is described but its data is not in the snapshot; left out", d.id));
            }
            stored
        });
        for (id, size) in &fb.stored_disks {
            match m.disks.iter_mut().find(|d| d.id == *id) {
                Some(d) if d.size != *size => {
                    w.push(format!("disk {id}: the document says {} bytes, the snapshot holds {size}; using {size}", d.size));
                    d.size = *size;
                }
                Some(_) => {}
                None => {
                    w.push(format!("disk {id} is in the snapshot but not described; restoring it as a virtio disk"));
                    m.disks.push(Disk { id: id.clone(), size: *size, bus: Bus::Virtio, controller: None, model: None, format: "raw".into(), source: None });
                }
            }
        }
    }
    let mut ids: HashSet<String> = HashSet::new();
    let mut renamed = Vec::new();
    for (i, d) in m.disks.iter_mut().enumerate() {
        if !is_device_id(&d.id) || ids.contains(&d.id) {
            let new = unique_id(&sanitize_id(&d.id, &format!("disk{i}")), &ids);
            w.push(format!("disk id {:?} is not a usable device id; calling it {new}", d.id));
            renamed.push((d.id.clone(), new.clone()));
            d.id = new;
        }
        ids.insert(d.id.clone());
    }
    let mut macs = HashSet::new();
    for (i, n) in m.nics.iter_mut().enumerate() {
        if !is_device_id(&n.id) || ids.contains(&n.id) {
            let new = unique_id(&sanitize_id(&n.id, &format!("net{i}")), &ids);
            w.push(format!("NIC id {:?} is not a usable device id; calling it {new}", n.id));
            renamed.push((n.id.clone(), new.clone()));
            n.id = new;
        }
        ids.insert(n.id.clone());
        n.mac = n.mac.to_ascii_lowercase();
        if !is_mac(&n.mac) || macs.contains(&n.mac) {
            let new = derived_mac(&m.name, &n.id, &macs);
            w.push(format!("NIC {}: MAC {:?} is invalid or used twice; using {new}", n.id, n.mac));
            n.mac = new;
        }
        macs.insert(n.mac.clone());
        if n.model.is_empty() || !n.model.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            w.push(format!("NIC {}: device model {:?} is not usable; using e1000", n.id, n.model));
            n.model = "e1000".into();
        }
    }
    let mut order = Vec::new();
    for b in std::mem::take(&mut m.boot_order) {
        let b = renamed.iter().find(|(old, _)| *old == b).map(|(_, new)| new.clone()).unwrap_or(b);
        if ids.contains(&b) && !order.contains(&b) {
            order.push(b);
        } else {
            w.push(format!("boot order names {b}, which is no device of this VM; dropped"));
        }
    }
    m.boot_order = order;
    (w, renamed.into_iter().map(|(old, new)| (new, old)).collect())
}

fn sanitize_id(s: &str, default: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).take(64).collect();
    out = out.trim_matches('_').to_string();
    if !out.as_bytes().first().is_some_and(u8::is_ascii_alphabetic) {
        return default.to_string();
    }
    out
}

fn unique_id(base: &str, taken: &HashSet<String>) -> String {
    if !taken.contains(base) {
        return base.to_string();
    }
    (2..).map(|n| format!("{base}-{n}")).find(|c| !taken.contains(c)).expect("some suffix is free")
}

/// A locally administered MAC in QEMU's 52:54:00 range, stable for the
/// same VM and NIC so that a repeated restore gets the same address.
fn derived_mac(name: &str, id: &str, taken: &HashSet<String>) -> String {
    (0u32..)
        .map(|salt| {
            let h = fnv(format!("{name}/{id}/{salt}").as_bytes());
            format!("52:54:00:{:02x}:{:02x}:{:02x}", (h >> 16) as u8, (h >> 8) as u8, h as u8)
        })
        .find(|m| !taken.contains(m))
        .expect("some MAC is free")
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, x| (h ^ *x as u64).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fb(names: &[&str], disks: &[(&str, u64)]) -> Fallbacks {
        Fallbacks { names: names.iter().map(|s| s.to_string()).collect(), names_are: "the snapshot", stored_disks: disks.iter().map(|(i, s)| (i.to_string(), *s)).collect() }
    }

    /// What version 1 wrote for an unnamed `pc` VM with IDE disks (the
    /// document of the report that a backup "saved" could not restore).
    const V1_UNNAMED_PC: &str = r#"{
      "version": 1, "name": "", "uuid": null, "source": "qemu 10.0.2", "firmware": "bios",
      "machine": "pc-i440fx-10.0", "cpus": 2, "memory_mib": 1024,
      "disks": [
        {"id": "ide0-hd0", "size": 4294967296, "bus": "sata", "format": "qcow2", "source": "/vm/a.qcow2"},
        {"id": "ide0-hd1", "size": 1073741824, "bus": "sata", "format": "raw", "source": "/vm/b.raw"}],
      "nics": [{"id": "net0", "mac": "52:54:00:12:34:56", "model": "e1000"}],
      "boot_order": ["ide0-hd0"], "guest_os": null, "extra": {}
    }"#;

    const V1_Q35: &str = r#"{
      "version": 1, "name": "web1", "uuid": "6f1e2d3c-aaaa-bbbb-cccc-111122223333", "source": "qemu 10.0.2",
      "firmware": "uefi", "machine": "pc-q35-10.0", "cpus": 1, "memory_mib": 512,
      "disks": [{"id": "disk0", "size": 1048576, "bus": "sata", "format": "raw"},
                {"id": "disk1", "size": 1048576, "bus": "scsi", "format": "raw"}],
      "nics": [], "boot_order": ["disk0", "net0"], "extra": {"owner": "ops"}
    }"#;

    #[test]
    fn version_1_unnamed_pc_vm_restores_with_a_name_and_ide_disks() {
        let f = fb(&["", "74769f9c"], &[("ide0-hd0", 4 << 30), ("ide0-hd1", 1 << 30)]);
        let l = VmMetadata::load(V1_UNNAMED_PC.as_bytes(), &f).unwrap();
        let (m, w) = (l.md, l.warnings);
        assert_eq!(m.version, METADATA_VERSION);
        assert_eq!(m.name, "74769f9c");
        assert_eq!(m.disks.iter().map(|d| (d.bus, d.controller.as_deref())).collect::<Vec<_>>(), [(Bus::Ide, Some("piix3-ide")); 2]);
        assert!(w.iter().any(|w| w.contains("no name")), "{w:?}");
        assert!(w.iter().any(|w| w.contains("read as ide")), "{w:?}");
        m.validate().unwrap();
    }

    #[test]
    fn version_1_q35_keeps_sata_and_its_fields() {
        let l = VmMetadata::load(V1_Q35.as_bytes(), &fb(&["web1"], &[("disk0", 1 << 20), ("disk1", 1 << 20)])).unwrap();
        let (m, w) = (l.md, l.warnings);
        assert_eq!(m.name, "web1");
        assert_eq!((m.disks[0].bus, m.disks[0].controller.as_deref()), (Bus::Sata, Some("ich9-ahci")));
        assert_eq!((m.disks[1].bus, m.disks[1].controller.as_deref()), (Bus::Scsi, None));
        assert_eq!(m.firmware, Firmware::Uefi);
        assert_eq!(m.extra["owner"], "ops");
        // net0 was never a device of this VM: dropped with a word.
        assert_eq!(m.boot_order, ["disk0"]);
        assert!(w.iter().any(|w| w.contains("net0")), "{w:?}");
    }

    #[test]
    fn unnamed_vm_takes_its_uuid_first() {
        let doc = V1_UNNAMED_PC.replace(r#""uuid": null"#, r#""uuid": "6f1e2d3c-aaaa-bbbb-cccc-111122223333""#);
        let m = VmMetadata::load(doc.as_bytes(), &fb(&["qmp"], &[])).unwrap().md;
        assert_eq!(m.name, "6f1e2d3c-aaaa-bbbb-cccc-111122223333");
    }

    #[test]
    fn broken_fields_are_repaired_not_refused() {
        let doc = r#"{"version": 1, "name": "a/b", "firmware": "bogus", "cpus": -1,
            "disks": [{"id": "device[4]", "size": 0, "bus": "floppy"}, 7],
            "nics": [{"id": "n", "mac": "zz", "model": ""}, {"id": "n", "mac": "52:54:00:00:00:01"}],
            "boot_order": ["device[4]"], "extra": [1]}"#;
        let l = VmMetadata::load(doc.as_bytes(), &fb(&[], &[("device[4]", 4096)])).unwrap();
        assert_eq!(l.stored_id("device_4"), "device[4]");
        let (m, w) = (l.md, l.warnings);
        m.validate().unwrap();
        assert_eq!(m.name, "a-b");
        assert_eq!((m.cpus, m.memory_mib, m.machine.as_str()), (1, 1024, "pc"));
        assert_eq!((m.disks.len(), m.disks[0].id.as_str(), m.disks[0].size, m.disks[0].bus), (1, "device_4", 4096, Bus::Virtio));
        assert_eq!(m.boot_order, ["device_4"]);
        assert_eq!(m.nics.len(), 2);
        assert_ne!(m.nics[0].id, m.nics[1].id);
        assert!(m.nics.iter().all(|n| is_mac(&n.mac)));
        assert!(w.len() >= 6, "{w:?}");
    }

    #[test]
    fn stored_disks_decide_what_exists() {
        let l = VmMetadata::load(V1_Q35.as_bytes(), &fb(&["web1"], &[("disk0", 2 << 20), ("disk7", 4096)])).unwrap();
        let (m, w) = (l.md, l.warnings);
        assert_eq!(m.disks.iter().map(|d| (d.id.as_str(), d.size)).collect::<Vec<_>>(), [("disk0", 2 << 20), ("disk7", 4096)]);
        assert_eq!(w.iter().filter(|w| w.contains("disk1") || w.contains("disk7") || w.contains("2097152")).count(), 3, "{w:?}");
    }

    #[test]
    fn a_document_with_no_disk_at_all_is_refused() {
        let doc = r#"{"version": 2, "name": "x", "source": "qemu", "firmware": "bios", "machine": "pc", "cpus": 1, "memory_mib": 1, "disks": [], "nics": []}"#;
        assert!(VmMetadata::load(doc.as_bytes(), &Fallbacks::default()).unwrap_err().to_string().contains("no disks"));
    }

    #[test]
    fn derived_macs_are_stable_and_distinct() {
        let a = derived_mac("vm", "net0", &HashSet::new());
        assert_eq!(a, derived_mac("vm", "net0", &HashSet::new()));
        assert_ne!(a, derived_mac("vm", "net0", &HashSet::from([a.clone()])));
        assert!(is_mac(&a));
    }
}
