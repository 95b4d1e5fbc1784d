//! OVF 1.x/2.x envelopes (DSP0243) as VMware, VirtualBox and lifeboat's
//! own `--target vmware` write them, read into the neutral document.
//!
//! Element and attribute names are matched by local name: exporters
//! disagree on namespace versions (`ovf/envelope/1` vs `/2`) and
//! prefixes, never on the names. Hardware is mapped to the nearest device
//! QEMU has, so the imported snapshot boots in instant restore and the
//! lab as it is; what the source called it stays in `extra`.

use crate::ImportError;
use lifeboat_vm::{Bus, Disk, Firmware, GuestOs, Nic, VmMetadata, METADATA_VERSION};
use roxmltree::{Document, Node};
use std::collections::BTreeMap;

/// A VM described by an OVF envelope.
#[derive(Debug)]
pub struct OvfVm {
    /// The VM mapped onto QEMU hardware. CPU count and memory are 0 when
    /// the envelope names none; disk sizes are the DiskSection's (0 for
    /// a CD image).
    pub md: VmMetadata,
    /// Disk id in `md` -> the file (`href`) holding its image.
    pub files: Vec<(String, String)>,
    /// What was mapped to something else, or left out, and why.
    pub warnings: Vec<String>,
}

fn bad(what: impl Into<String>) -> ImportError {
    ImportError::Description(what.into())
}

fn attr<'a>(n: Node<'a, '_>, local: &str) -> Option<&'a str> {
    n.attributes().find(|a| a.name() == local).map(|a| a.value())
}

fn child<'a, 'i>(n: Node<'a, 'i>, local: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| c.is_element() && c.tag_name().name() == local)
}

fn text<'a>(n: Node<'a, '_>, local: &str) -> Option<&'a str> {
    child(n, local).and_then(|c| c.text()).map(str::trim)
}

/// "byte * 2^20", "MegaBytes", "GB" ... as a multiplier of bytes.
fn units(s: Option<&str>, default: u64) -> Result<u64, ImportError> {
    let Some(s) = s.map(|s| s.trim()) else { return Ok(default) };
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    if let Some(exp) = compact.strip_prefix("byte*2^") {
        let e: u32 = exp.parse().map_err(|_| bad(format!("allocation units {s:?}")))?;
        return 1u64.checked_shl(e).filter(|_| e < 63).ok_or_else(|| bad(format!("allocation units {s:?}")));
    }
    Ok(match compact.as_str() {
        "byte" | "bytes" => 1,
        "kilobytes" | "kb" | "kib" => 1 << 10,
        "megabytes" | "mb" | "mib" => 1 << 20,
        "gigabytes" | "gb" | "gib" => 1 << 30,
        "terabytes" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad(format!("allocation units {s:?}"))),
    })
}

fn number(s: &str, what: &str) -> Result<u64, ImportError> {
    s.trim().parse().map_err(|_| bad(format!("{what} {s:?} is not a number")))
}

/// One `Item` of the virtual hardware section.
struct Item<'a> {
    kind: u32,
    instance: String,
    parent: Option<String>,
    address_on_parent: Option<u32>,
    sub_type: Option<String>,
    host_resource: Option<String>,
    quantity: Option<&'a str>,
    units: Option<&'a str>,
    address: Option<String>,
    name: Option<String>,
}

fn items<'a>(hw: Node<'a, '_>) -> Vec<Item<'a>> {
    hw.children()
        .filter(|c| c.is_element() && matches!(c.tag_name().name(), "Item" | "StorageItem" | "EthernetPortItem"))
        .map(|c| {
            let t = |k: &str| text(c, k).filter(|s| !s.is_empty());
            Item {
                kind: t("ResourceType").and_then(|s| s.parse().ok()).unwrap_or(0),
                instance: t("InstanceID").unwrap_or("").to_string(),
                parent: t("Parent").map(String::from),
                address_on_parent: t("AddressOnParent").and_then(|s| s.parse().ok()),
                sub_type: t("ResourceSubType").map(String::from),
                host_resource: t("HostResource").map(String::from),
                quantity: t("VirtualQuantity"),
                units: t("AllocationUnits"),
                address: t("Address").map(String::from),
                name: t("ElementName").map(String::from),
            }
        })
        .collect()
}

/// A SCSI controller's OVF subtype as QEMU's device.
fn scsi_hba(sub: &str) -> (&'static str, Option<String>) {
    match sub.to_ascii_lowercase().as_str() {
        "lsilogic" => ("lsi53c895a", None),
        "lsilogicsas" => ("mptsas1068", None),
        "virtualscsi" | "pvscsi" => ("pvscsi", None),
        "virtio-scsi" | "virtio-scsi-pci" | "virtioscsi" => ("virtio-scsi-pci", None),
        "megasas" => ("megasas", None),
        o => ("lsi53c895a", Some(format!("SCSI controller {o:?} has no QEMU equivalent; the disks sit on an LSI 53C895A (restore with --target and --map to choose another)"))),
    }
}

fn nic_model(sub: &str) -> (&'static str, Option<String>) {
    match sub.to_ascii_lowercase().as_str() {
        "e1000" => ("e1000", None),
        "e1000e" => ("e1000e", None),
        "vmxnet3" => ("vmxnet3", None),
        "pcnet32" | "vmxnet" | "vmxnet2" => ("pcnet", None),
        "virtio" | "virtio-net" | "virtio-net-pci" => ("virtio-net-pci", None),
        "rtl8139" => ("rtl8139", None),
        o => ("e1000", Some(format!("NIC model {o:?} has no QEMU equivalent; it is an e1000 now"))),
    }
}

/// `vmw:osType` / OVF OS id as a guest OS family.
fn guest_os(os: Node) -> Option<GuestOs> {
    let t = attr(os, "osType").map(String::from).or_else(|| text(os, "Description").map(String::from))?;
    let l = t.to_ascii_lowercase();
    let id = ["windows", "debian", "ubuntu", "rhel", "centos", "sles", "freebsd"].into_iter().find(|k| l.contains(k)).unwrap_or(if l.contains("win") { "windows" } else { "linux" });
    Some(GuestOs { id: id.into(), name: t, version: None, kernel: None })
}

/// A MAC in QEMU's range for a NIC the source gave none (VMware leaves
/// it out when the importer is to generate one; a bare VHDX has no NIC).
pub(crate) fn random_mac() -> String {
    let r = lifeboat_store::PackId::random().to_hex();
    format!("52:54:00:{}:{}:{}", &r[0..2], &r[2..4], &r[4..6])
}

/// Reads an OVF envelope. `fallback_name` names the VM when the envelope
/// does not.
pub fn parse(xml: &str, fallback_name: &str) -> Result<OvfVm, ImportError> {
    let doc = Document::parse(xml).map_err(|e| bad(format!("the OVF is not well-formed XML: {e}")))?;
    let env = doc.root_element();
    if env.tag_name().name() != "Envelope" {
        return Err(bad(format!("the OVF's root element is <{}>, not <Envelope>", env.tag_name().name())));
    }
    let mut warnings = Vec::new();
    let files: BTreeMap<&str, &str> = child(env, "References")
        .map(|r| r.children().filter(|c| c.is_element() && c.tag_name().name() == "File").filter_map(|f| Some((attr(f, "id")?, attr(f, "href")?))).collect())
        .unwrap_or_default();
    // diskId -> (capacity in bytes, fileRef)
    let mut disks: BTreeMap<&str, (u64, Option<&str>)> = BTreeMap::new();
    if let Some(sec) = child(env, "DiskSection") {
        for d in sec.children().filter(|c| c.is_element() && c.tag_name().name() == "Disk") {
            let id = attr(d, "diskId").ok_or_else(|| bad("a <Disk> without ovf:diskId"))?;
            let cap = number(attr(d, "capacity").ok_or_else(|| bad(format!("disk {id} has no ovf:capacity")))?, "capacity")?;
            let bytes = cap.checked_mul(units(attr(d, "capacityAllocationUnits"), 1)?).ok_or_else(|| bad(format!("disk {id}: capacity overflows")))?;
            disks.insert(id, (bytes, attr(d, "fileRef")));
        }
    }
    let vs = env
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "VirtualSystem")
        .ok_or_else(|| bad("the OVF holds no <VirtualSystem> (a VirtualSystemCollection of several VMs is not supported; export one VM)"))?;
    let name = text(vs, "Name").or(attr(vs, "id")).filter(|s| !s.is_empty()).unwrap_or(fallback_name).to_string();
    let hw = child(vs, "VirtualHardwareSection").ok_or_else(|| bad("the OVF has no <VirtualHardwareSection>"))?;
    let system_type = child(hw, "System").and_then(|s| text(s, "VirtualSystemType")).unwrap_or("").to_string();
    let uefi =
        hw.children().filter(|c| c.is_element() && c.tag_name().name() == "Config").any(|c| attr(c, "key") == Some("firmware") && attr(c, "value").is_some_and(|v| v.eq_ignore_ascii_case("efi")));
    let items = items(hw);

    let mut cpus = 0u32;
    let mut memory_mib = 0u64;
    for it in &items {
        match it.kind {
            3 => cpus = number(it.quantity.unwrap_or("0"), "CPU count")? as u32,
            4 => {
                let bytes = number(it.quantity.unwrap_or("0"), "memory size")?.saturating_mul(units(it.units, 1 << 20)?);
                memory_mib = bytes >> 20;
            }
            _ => {}
        }
    }
    let ctrl = |instance: &str| items.iter().find(|i| i.instance == instance);
    let mut md_disks = Vec::new();
    let mut md_files = Vec::new();
    let mut sata = false;
    let mut disk_items: Vec<&Item> = items.iter().filter(|i| i.kind == 17 || i.kind == 15 || i.kind == 16).collect();
    // Controllers in order, then unit: the guest's view of disk order.
    disk_items.sort_by_key(|i| (i.parent.clone().unwrap_or_default(), i.address_on_parent.unwrap_or(0)));
    for it in disk_items {
        let cdrom = it.kind != 17;
        let Some(host) = it.host_resource.as_deref() else {
            if !cdrom {
                warnings.push(format!("{} has no backing disk; left out", it.name.as_deref().unwrap_or("a disk")));
            }
            continue;
        };
        // "ovf:/disk/vmdisk1" (or "/disk/vmdisk1") names a DiskSection disk;
        // "ovf:/file/file1" a file directly (CD images).
        let (bytes, file_ref) = if let Some(id) = host.rsplit_once("/disk/").map(|x| x.1) {
            *disks.get(id).ok_or_else(|| bad(format!("{host} names no disk of the DiskSection")))?
        } else if let Some(f) = host.rsplit_once("/file/").map(|x| x.1) {
            (0, Some(f))
        } else {
            return Err(bad(format!("unknown host resource {host:?}")));
        };
        let Some(file_ref) = file_ref else {
            warnings.push(format!("{host} is an empty disk without a file; left out"));
            continue;
        };
        let href = files.get(file_ref).ok_or_else(|| bad(format!("{host} refers to file {file_ref}, which <References> does not list")))?;
        let parent = it.parent.as_deref().and_then(ctrl);
        let (bus, controller) = match parent.map(|p| (p.kind, p.sub_type.as_deref().unwrap_or(""))) {
            Some((5, _)) => (Bus::Ide, Some("piix3-ide".to_string())),
            Some((6, sub)) => {
                let (hba, w) = scsi_hba(sub);
                warnings.extend(w);
                (Bus::Scsi, Some(hba.to_string()))
            }
            Some((20, sub)) if sub.to_ascii_lowercase().contains("nvme") => (Bus::Nvme, None),
            Some((20, _)) => {
                sata = true;
                (Bus::Sata, Some("ich9-ahci".to_string()))
            }
            _ => {
                warnings.push(format!("{host}: no controller given; on IDE"));
                (Bus::Ide, Some("piix3-ide".to_string()))
            }
        };
        let id = if cdrom { format!("cd{}", md_disks.iter().filter(|d: &&Disk| d.is_cdrom()).count()) } else { format!("disk{}", md_disks.iter().filter(|d: &&Disk| !d.is_cdrom()).count()) };
        let model = cdrom.then(|| if bus == Bus::Scsi { "scsi-cd" } else { "ide-cd" }.to_string());
        md_disks.push(Disk { id: id.clone(), size: bytes, bus, controller, model, format: "vmdk".into(), source: Some(href.to_string()) });
        md_files.push((id, href.to_string()));
    }
    let mut nics = Vec::new();
    for it in items.iter().filter(|i| i.kind == 10) {
        let (model, w) = nic_model(it.sub_type.as_deref().unwrap_or("e1000"));
        warnings.extend(w);
        let mac = match it.address.as_deref().map(|m| m.replace('-', ":").to_ascii_lowercase()) {
            Some(m) if m.len() == 17 => m,
            _ => {
                let m = random_mac();
                warnings.push(format!("network adapter {} had no MAC address; it got {m}", nics.len() + 1));
                m
            }
        };
        nics.push(Nic { id: format!("net{}", nics.len()), mac, model: model.into() });
    }
    let mut extra = BTreeMap::new();
    if !system_type.is_empty() {
        extra.insert("import.virtual_system_type".to_string(), system_type);
    }
    let firmware = if uefi { Firmware::Uefi } else { Firmware::Bios };
    let boot_order = md_disks.iter().filter(|d| !d.is_cdrom()).take(1).map(|d| d.id.clone()).collect();
    let md = VmMetadata {
        version: METADATA_VERSION,
        name,
        uuid: None,
        source: "ovf".into(),
        firmware,
        machine: if uefi || sata { "q35" } else { "pc" }.into(),
        cpus,
        memory_mib,
        disks: md_disks,
        nics,
        boot_order,
        guest_os: child(vs, "OperatingSystemSection").and_then(guest_os),
        extra,
    };
    Ok(OvfVm { md, files: md_files, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like an OVF exported by ESXi 7 (trimmed).
    const VMWARE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-123" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
    <File ovf:href="web01-disk1.vmdk" ovf:id="file1" ovf:size="68608"/>
    <File ovf:href="web01-disk2.vmdk" ovf:id="file2" ovf:size="1024"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="16" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
    <Disk ovf:capacity="1048576" ovf:diskId="vmdisk2" ovf:fileRef="file2" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="web01">
    <Info>A virtual machine</Info>
    <Name>web01</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian11_64Guest"><Info>x</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>4</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>8192</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>5</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>1</rasd:AddressOnParent><rasd:ElementName>Hard disk 2</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk2</rasd:HostResource><rasd:InstanceID>6</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>5</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:AutomaticAllocation>false</rasd:AutomaticAllocation><rasd:ElementName>CD/DVD drive 1</rasd:ElementName><rasd:InstanceID>7</rasd:InstanceID><rasd:Parent>4</rasd:Parent><rasd:ResourceType>15</rasd:ResourceType></Item>
      <Item><rasd:Address>00:50:56:ab:cd:ef</rasd:Address><rasd:AddressOnParent>7</rasd:AddressOnParent><rasd:Connection>VM Network</rasd:Connection><rasd:InstanceID>8</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>8</rasd:AddressOnParent><rasd:InstanceID>9</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#;

    #[test]
    fn a_vmware_envelope_maps_to_qemu_hardware() {
        let v = parse(VMWARE, "fallback").unwrap();
        let md = &v.md;
        assert_eq!((md.name.as_str(), md.cpus, md.memory_mib, md.firmware, md.machine.as_str()), ("web01", 4, 8192, Firmware::Uefi, "q35"));
        // Sorted by unit on the controller, not by document order.
        assert_eq!(
            md.disks.iter().map(|d| (d.id.as_str(), d.size, d.bus, d.controller.as_deref())).collect::<Vec<_>>(),
            vec![("disk0", 16 << 30, Bus::Scsi, Some("pvscsi")), ("disk1", 1 << 20, Bus::Scsi, Some("pvscsi"))]
        );
        assert_eq!(v.files, vec![("disk0".to_string(), "web01-disk1.vmdk".to_string()), ("disk1".to_string(), "web01-disk2.vmdk".to_string())]);
        assert_eq!(md.nics[0], Nic { id: "net0".into(), mac: "00:50:56:ab:cd:ef".into(), model: "vmxnet3".into() });
        assert_eq!(md.nics[1].model, "e1000");
        assert!(md.nics[1].mac.starts_with("52:54:00:") && v.warnings.iter().any(|w| w.contains("no MAC")), "{:?}", v.warnings);
        assert_eq!(md.guest_os.as_ref().unwrap().id, "debian");
        assert_eq!(md.extra["import.virtual_system_type"], "vmx-19");
        assert_eq!(md.boot_order, vec!["disk0"]);
        md.validate().unwrap();
    }

    #[test]
    fn broken_envelopes_are_named() {
        let e = |x: &str| parse(x, "f").unwrap_err().to_string();
        assert!(e("<Envelope><VirtualSystem>").contains("not well-formed"));
        assert!(e("<Other/>").contains("not <Envelope>"));
        assert!(e("<Envelope/>").contains("no <VirtualSystem>"));
        let dangling = VMWARE.replace("ovf:fileRef=\"file2\"", "ovf:fileRef=\"file9\"");
        assert!(e(&dangling).contains("file9"));
        let no_disk = VMWARE.replace("ovf:/disk/vmdisk2", "ovf:/disk/vmdisk7");
        assert!(e(&no_disk).contains("vmdisk7"));
        let units = VMWARE.replace("byte * 2^30", "furlongs");
        assert!(e(&units).contains("furlongs"));
    }
}
