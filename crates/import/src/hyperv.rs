//! A Hyper-V disk (VHDX/VHD), or any single disk image, with what is
//! known of its VM: `hyperv.json` beside it (the description
//! `vm restore --target hyperv` writes, and an admin can write by hand:
//! name, generation, memory_mib, cpus, disks with file and controller,
//! nics with mac), else defaults the CLI flags override.
//!
//! Hyper-V's synthetic devices have no QEMU counterpart: its SCSI
//! controller becomes virtio-scsi and its network adapter virtio-net,
//! which `vm restore --target kvm` repairs a Linux guest for; generation
//! 1 boots from IDE as it did.

use crate::serve::{format_of, ImageSource};
use crate::{safe_join, ImportError, ImportPlan};
use lifeboat_vm::{Bus, Disk, Firmware, Nic, VmMetadata, METADATA_VERSION};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Deserialize)]
struct Description {
    name: Option<String>,
    generation: Option<u8>,
    memory_mib: Option<u64>,
    cpus: Option<u32>,
    #[serde(default)]
    disks: Vec<DescribedDisk>,
    #[serde(default)]
    nics: Vec<DescribedNic>,
    #[serde(default)]
    extra: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct DescribedDisk {
    file: String,
    #[serde(default)]
    controller: Option<String>,
    #[serde(default)]
    dvd: bool,
}

#[derive(Deserialize)]
struct DescribedNic {
    mac: String,
}

/// "00155D0A0B0C" or "00-15-5d-..." as "00:15:5d:0a:0b:0c".
fn mac(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (hex.len() == 12 && s.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '-'))
        .then(|| hex.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_ascii_lowercase()).collect::<Vec<_>>().join(":"))
}

/// The plan for disk image `file` (`stem`: its name without extension,
/// `ext`: its lowercase extension). Only a VHDX/VHD looks for a
/// `hyperv.json` beside it, and uses it only when it lists `file`.
pub fn plan(file: &Path, stem: &str, ext: &str) -> Result<ImportPlan, ImportError> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let described = dir.join("hyperv.json");
    let name_of = |p: &Path| p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let desc: Option<Description> = if described.is_file() && matches!(ext, "vhdx" | "vhd") {
        let text = std::fs::read(&described).map_err(|e| ImportError::file(&described, e))?;
        let d: Description = serde_json::from_slice(&text).map_err(|e| ImportError::file(&described, format!("not a Hyper-V description: {e}")))?;
        // Only a description that lists this very disk is about it.
        d.disks.iter().any(|x| x.file == name_of(file)).then_some(d)
    } else {
        None
    };
    let mut warnings = Vec::new();
    let mut extra = BTreeMap::new();
    let (name, generation, cpus, memory_mib, files, nics) = match desc {
        Some(d) => {
            extra = d.extra;
            let files: Vec<(String, Option<String>, bool)> = d.disks.into_iter().map(|x| (x.file, x.controller, x.dvd)).collect();
            let nics = d.nics.iter().map(|n| mac(&n.mac).ok_or_else(|| ImportError::file(&described, format!("NIC MAC {:?} is not a MAC address", n.mac)))).collect::<Result<Vec<_>, _>>()?;
            (d.name.unwrap_or_else(|| stem.to_string()), d.generation.unwrap_or(1), d.cpus.unwrap_or(0), d.memory_mib.unwrap_or(0), files, nics)
        }
        None => {
            if matches!(ext, "vhdx" | "vhd") {
                warnings.push(format!("no hyperv.json beside {} describes it: generation 1 with one NIC assumed (set --cpus/--memory as needed)", name_of(file)));
            }
            let gen = 1;
            (stem.to_string(), gen, 0, 0, vec![(name_of(file), None, false)], vec![])
        }
    };
    if !(1..=2).contains(&generation) {
        return Err(ImportError::file(&described, format!("generation {generation}: Hyper-V has generations 1 and 2")));
    }
    let mut disks = Vec::new();
    let mut sources = Vec::new();
    for (i, (f, controller, dvd)) in files.iter().enumerate() {
        let path = safe_join(dir, f)?;
        if !path.is_file() {
            return Err(ImportError::file(&path, "a disk the description lists is missing"));
        }
        let ide = match controller.as_deref() {
            Some("ide") => true,
            Some("scsi") => false,
            // Generation 1 boots from IDE; generation 2 has only SCSI.
            _ => generation == 1 && i == 0,
        };
        if ide && generation == 2 {
            warnings.push(format!("{f}: generation 2 has no IDE; on SCSI"));
        }
        let id = if *dvd { format!("cd{i}") } else { format!("disk{i}") };
        let (bus, ctrl) = if ide && generation == 1 { (Bus::Ide, "piix3-ide") } else { (Bus::Scsi, "virtio-scsi-pci") };
        let model = dvd.then(|| if bus == Bus::Ide { "ide-cd" } else { "scsi-cd" }.to_string());
        let format = format_of(&path);
        disks.push(Disk { id: id.clone(), size: 0, bus, controller: Some(ctrl.into()), model, format: format.unwrap_or("raw").into(), source: Some(f.clone()) });
        sources.push((id, ImageSource::File { path, format }));
    }
    if disks.iter().any(|d| d.bus == Bus::Scsi) && matches!(ext, "vhdx" | "vhd") {
        warnings.push("Hyper-V's synthetic SCSI controller is recorded as virtio-scsi (restore with --target kvm to repair the guest for it)".into());
    }
    let mut md_nics: Vec<Nic> = nics.into_iter().enumerate().map(|(i, m)| Nic { id: format!("net{i}"), mac: m, model: "virtio-net-pci".into() }).collect();
    if md_nics.is_empty() {
        md_nics.push(Nic { id: "net0".into(), mac: crate::ovf::random_mac(), model: "virtio-net-pci".into() });
    }
    if matches!(ext, "vhdx" | "vhd") {
        extra.insert("import.hyperv_generation".into(), generation.to_string());
    }
    let uefi = generation == 2;
    let boot_order = disks.iter().filter(|d| !d.is_cdrom()).take(1).map(|d| d.id.clone()).collect();
    let md = VmMetadata {
        version: METADATA_VERSION,
        name,
        uuid: None,
        source: if matches!(ext, "vhdx" | "vhd") { "hyper-v" } else { "disk image" }.into(),
        firmware: if uefi { Firmware::Uefi } else { Firmware::Bios },
        machine: if uefi { "q35" } else { "pc" }.into(),
        cpus,
        memory_mib,
        disks,
        nics: md_nics,
        boot_order,
        guest_os: None,
        extra,
    };
    Ok(ImportPlan { md, disks: sources, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_in_hyper_v_spelling() {
        assert_eq!(mac("00155D0A0B0C").as_deref(), Some("00:15:5d:0a:0b:0c"));
        assert_eq!(mac("00-15-5D-0A-0B-0C").as_deref(), Some("00:15:5d:0a:0b:0c"));
        assert_eq!(mac("00155D0A0B"), None);
        assert_eq!(mac("00155D0A0B0Z"), None);
    }

    #[test]
    fn a_description_names_generation_disks_and_nics() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.vhdx"), b"x").unwrap();
        std::fs::write(t.path().join("b.vhdx"), b"x").unwrap();
        std::fs::write(t.path().join("hyperv.json"), r#"{"name":"sql1","generation":2,"memory_mib":4096,"cpus":2,"disks":[{"file":"a.vhdx","controller":"scsi"},{"file":"b.vhdx","controller":"scsi"}],"nics":[{"mac":"00155D0A0B0C"}],"extra":{"owner":"dba"}}"#).unwrap();
        let p = plan(&t.path().join("a.vhdx"), "a", "vhdx").unwrap();
        assert_eq!((p.md.name.as_str(), p.md.firmware, p.md.cpus, p.md.memory_mib, p.md.disks.len()), ("sql1", Firmware::Uefi, 2, 4096, 2));
        assert_eq!(p.md.nics[0].mac, "00:15:5d:0a:0b:0c");
        assert_eq!(p.md.extra["owner"], "dba");
        // A description that does not list the disk is not about it.
        std::fs::write(t.path().join("c.vhdx"), b"x").unwrap();
        let p = plan(&t.path().join("c.vhdx"), "c", "vhdx").unwrap();
        assert_eq!((p.md.name.as_str(), p.md.disks.len(), p.md.disks[0].bus), ("c", 1, Bus::Ide));
        // A listed disk that is not there is named.
        std::fs::remove_file(t.path().join("b.vhdx")).unwrap();
        let e = plan(&t.path().join("a.vhdx"), "a", "vhdx").unwrap_err().to_string();
        assert!(e.contains("b.vhdx") && e.contains("missing"), "{e}");
    }
}
