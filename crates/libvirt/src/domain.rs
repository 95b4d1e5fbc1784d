//! A domain's hardware, read from its live XML (`virsh dumpxml`) into the
//! neutral `VmMetadata`.

use crate::LibvirtError;
use lifeboat_vm::{Bus, Disk, Firmware, Nic, VmMetadata, METADATA_VERSION};
use roxmltree::{Document, Node};

/// A disk the backup reads: libvirt names it by its target (`vda`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainDisk {
    /// The guest-side device name (`<target dev>`, e.g. `vda`, `sdb`):
    /// libvirt's name for the disk and the disk's id in `VmMetadata`.
    pub target: String,
    /// Image format libvirt gives QEMU (`qcow2`, `raw`).
    pub format: String,
    /// `file`, `block`, `network`, `volume`.
    pub source_type: String,
    /// Where the image is on the host, as `<source>` names it (`file`,
    /// `dev`, `name` or `volume` attribute); `None` for an empty drive.
    pub source: Option<String>,
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| c.has_tag_name(name))
}

fn children<'a, 'i: 'a>(n: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children().filter(move |c| c.has_tag_name(name))
}

/// Bytes in `value` of `unit` (libvirt's default unit is KiB).
fn to_bytes(value: u64, unit: Option<&str>) -> Option<u64> {
    let m: u64 = match unit.unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        _ => return None,
    };
    value.checked_mul(m)
}

/// libvirt's SCSI controller models as QEMU device names.
fn scsi_model(libvirt: &str) -> String {
    match libvirt {
        "virtio-scsi" | "virtio-transitional" | "virtio-non-transitional" => "virtio-scsi-pci",
        // libvirt's default for x86 guests without a model.
        "" | "lsilogic" => "lsi53c895a",
        "lsisas1068" => "mptsas1068",
        "lsisas1078" => "megasas-gen2",
        "vmpvscsi" => "pvscsi",
        "ibmvscsi" | "buslogic" => "lsi53c895a",
        other => return other.to_string(),
    }
    .into()
}

/// The bus kind and controller of a `<disk>`: libvirt names the bus
/// (`ide`, `sata`, `scsi`, `virtio`, `nvme`, `usb`) and, for SCSI, the
/// controller by index in `<address controller=N>`.
fn disk_bus(bus: &str, controllers: &[(String, String)], disk: Node) -> (Bus, Option<String>) {
    match bus {
        "ide" => (Bus::Ide, Some("piix3-ide".into())),
        "sata" => (Bus::Sata, Some("ich9-ahci".into())),
        "scsi" => {
            let index = child(disk, "address").and_then(|a| a.attribute("controller")).unwrap_or("0");
            let model = controllers.iter().find(|(i, _)| i == index).map(|(_, m)| m.clone()).unwrap_or_else(|| scsi_model(""));
            (Bus::Scsi, Some(model))
        }
        "nvme" => (Bus::Nvme, None),
        "usb" => (Bus::Usb, None),
        _ => (Bus::Virtio, None),
    }
}

/// libvirt's NIC model names as QEMU device names (what restore starts).
fn nic_model(libvirt: &str) -> String {
    match libvirt {
        "" | "virtio" | "virtio-transitional" | "virtio-non-transitional" => "virtio-net-pci".into(),
        other => other.into(),
    }
}

/// Parses `virsh dumpxml` output. `disk_size` gives a disk's capacity in
/// bytes by its target (the XML does not hold it).
pub fn parse_domain(xml: &str, mut disk_size: impl FnMut(&str) -> Result<u64, LibvirtError>) -> Result<(VmMetadata, Vec<DomainDisk>), LibvirtError> {
    let doc = Document::parse(xml).map_err(|e| LibvirtError::Xml(format!("domain XML: {e}")))?;
    let dom = doc.root_element();
    if !dom.has_tag_name("domain") {
        return Err(LibvirtError::Xml(format!("expected <domain>, found <{}>", dom.tag_name().name())));
    }
    let text = |name: &str| child(dom, name).and_then(|n| n.text()).map(|t| t.trim().to_string());
    let name = text("name").ok_or_else(|| LibvirtError::Xml("domain XML has no <name>".into()))?;
    let os = child(dom, "os");
    let machine = os.and_then(|o| child(o, "type")).and_then(|t| t.attribute("machine")).unwrap_or("pc").to_string();
    let uefi = os.is_some_and(|o| o.attribute("firmware") == Some("efi") || child(o, "loader").is_some_and(|l| l.attribute("type") == Some("pflash")));
    let cpus = text("vcpu").and_then(|v| v.parse().ok()).unwrap_or(1);
    let mem = child(dom, "memory");
    let memory = mem.and_then(|m| to_bytes(m.text()?.trim().parse().ok()?, m.attribute("unit"))).unwrap_or(0);

    let devices = child(dom, "devices").ok_or_else(|| LibvirtError::Xml(format!("domain {name} has no <devices>")))?;
    // SCSI controllers by index, with their QEMU device model.
    let controllers: Vec<(String, String)> = children(devices, "controller")
        .filter(|c| c.attribute("type") == Some("scsi"))
        .map(|c| (c.attribute("index").unwrap_or("0").to_string(), scsi_model(c.attribute("model").unwrap_or(""))))
        .collect();
    let mut disks = Vec::new();
    let mut meta_disks = Vec::new();
    let mut boot: Vec<(u32, String)> = Vec::new();
    for d in children(devices, "disk").filter(|d| d.attribute("device").unwrap_or("disk") == "disk") {
        let Some(target) = child(d, "target").and_then(|t| t.attribute("dev")) else { continue };
        let bus = child(d, "target").and_then(|t| t.attribute("bus")).unwrap_or("virtio");
        let format = child(d, "driver").and_then(|t| t.attribute("type")).unwrap_or("raw").to_string();
        let source_type = d.attribute("type").unwrap_or("file").to_string();
        let source = child(d, "source").and_then(|s| s.attribute("file").or(s.attribute("dev")).or(s.attribute("name")).or(s.attribute("volume"))).map(String::from);
        if let Some(o) = child(d, "boot").and_then(|b| b.attribute("order")?.parse().ok()) {
            boot.push((o, target.to_string()));
        }
        let (bus, controller) = disk_bus(bus, &controllers, d);
        meta_disks.push(Disk { id: target.to_string(), size: disk_size(target)?, bus, controller, model: None, format: format.clone(), source: source.clone() });
        disks.push(DomainDisk { target: target.to_string(), format, source_type, source });
    }
    let mut nics = Vec::new();
    for (i, n) in children(devices, "interface").enumerate() {
        let Some(mac) = child(n, "mac").and_then(|m| m.attribute("address")) else { continue };
        let id = child(n, "alias").and_then(|a| a.attribute("name")).map(String::from).unwrap_or_else(|| format!("net{i}"));
        let model = nic_model(child(n, "model").and_then(|m| m.attribute("type")).unwrap_or(""));
        if let Some(o) = child(n, "boot").and_then(|b| b.attribute("order")?.parse().ok()) {
            boot.push((o, id.clone()));
        }
        nics.push(Nic { id, mac: mac.to_ascii_lowercase(), model });
    }
    // Per-device <boot order=N/> wins; otherwise <os><boot dev=.../>.
    let boot_order: Vec<String> = if !boot.is_empty() {
        boot.sort();
        boot.into_iter().map(|b| b.1).collect()
    } else {
        let mut order = Vec::new();
        for b in os.into_iter().flat_map(|o| children(o, "boot")) {
            match b.attribute("dev") {
                Some("hd") => order.extend(meta_disks.first().map(|d| d.id.clone())),
                Some("network") => order.extend(nics.first().map(|n| n.id.clone())),
                _ => {}
            }
        }
        order
    };
    let md = VmMetadata {
        version: METADATA_VERSION,
        name,
        uuid: text("uuid"),
        source: "libvirt".into(),
        firmware: if uefi { Firmware::Uefi } else { Firmware::Bios },
        machine,
        cpus,
        memory_mib: memory >> 20,
        disks: meta_disks,
        nics,
        boot_order,
        guest_os: None,
        extra: Default::default(),
    };
    md.validate().map_err(|e| LibvirtError::Xml(e.to_string()))?;
    Ok((md, disks))
}

/// The user and group QEMU runs as, from the live XML's DAC label
/// (`<seclabel model='dac'><label>+64055:+64055</label>`); `None` when
/// libvirt runs QEMU without one (as root, or labels off).
pub fn qemu_owner(xml: &str) -> Option<(u32, u32)> {
    let doc = Document::parse(xml).ok()?;
    let dom = doc.root_element();
    let label = children(dom, "seclabel").find(|s| s.attribute("model") == Some("dac")).and_then(|s| child(s, "label"))?.text()?;
    let (u, g) = label.trim().split_once(':')?;
    Some((u.trim_start_matches('+').parse().ok()?, g.trim_start_matches('+').parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<domain type='qemu' id='3'>
  <name>web1</name>
  <uuid>eb42a5d4-8f51-48f3-974d-42bed11fc047</uuid>
  <memory unit='KiB'>524288</memory>
  <vcpu placement='static'>2</vcpu>
  <os firmware='efi'><type arch='x86_64' machine='pc-q35-10.0'>hvm</type><loader type='pflash'/></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web1.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <boot order='2'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sda' bus='sata'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg/data'/>
      <target dev='sdb' bus='scsi'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:AA:bb:cc'/>
      <model type='virtio'/>
      <alias name='net0'/>
      <boot order='1'/>
    </interface>
    <interface type='user'>
      <mac address='52:54:00:aa:bb:cd'/>
      <model type='e1000'/>
    </interface>
  </devices>
</domain>"#;

    #[test]
    fn reads_the_hardware() {
        let (md, disks) = parse_domain(XML, |t| Ok(if t == "vda" { 1 << 30 } else { 8 << 30 })).unwrap();
        assert_eq!(md.name, "web1");
        assert_eq!(md.uuid.as_deref(), Some("eb42a5d4-8f51-48f3-974d-42bed11fc047"));
        assert_eq!(md.firmware, Firmware::Uefi);
        assert_eq!(md.machine, "pc-q35-10.0");
        assert_eq!((md.cpus, md.memory_mib), (2, 512));
        assert_eq!(md.disks.len(), 2, "the cdrom is not a disk to back up");
        assert_eq!((md.disks[0].id.as_str(), md.disks[0].size, md.disks[0].bus.as_str(), md.disks[0].format.as_str()), ("vda", 1 << 30, "virtio", "qcow2"));
        assert_eq!((md.disks[1].id.as_str(), md.disks[1].bus.as_str(), md.disks[1].source.as_deref()), ("sdb", "scsi", Some("/dev/vg/data")));
        assert_eq!(disks[1].source_type, "block");
        assert_eq!(md.nics[0], Nic { id: "net0".into(), mac: "52:54:00:aa:bb:cc".into(), model: "virtio-net-pci".into() });
        assert_eq!((md.nics[1].id.as_str(), md.nics[1].model.as_str()), ("net1", "e1000"));
        assert_eq!(md.boot_order, vec!["net0", "vda"]);
    }

    #[test]
    fn boot_order_from_os_and_bios_default() {
        let xml = "<domain><name>a</name><memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type machine='pc'>hvm</type><boot dev='hd'/></os>\
                   <devices><disk device='disk'><driver type='qcow2'/><source file='/x.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>";
        let (md, _) = parse_domain(xml, |_| Ok(1 << 20)).unwrap();
        assert_eq!((md.firmware, md.memory_mib, md.boot_order), (Firmware::Bios, 256, vec!["vda".to_string()]));
    }

    #[test]
    fn qemu_owner_from_the_dac_label() {
        let xml = "<domain><name>a</name><seclabel type='dynamic' model='apparmor'><label>libvirt-x</label></seclabel>\
                   <seclabel type='dynamic' model='dac' relabel='yes'><label>+64055:+994</label></seclabel></domain>";
        assert_eq!(qemu_owner(xml), Some((64055, 994)));
        assert_eq!(qemu_owner("<domain><name>a</name></domain>"), None);
    }

    #[test]
    fn bad_xml_is_an_error_naming_it() {
        let e = parse_domain("<domain>", |_| Ok(1)).unwrap_err();
        assert!(e.to_string().contains("domain XML"), "{e}");
        let e = parse_domain("<domainbackup/>", |_| Ok(1)).unwrap_err();
        assert!(e.to_string().contains("expected <domain>"), "{e}");
    }
}
