//! The target's own description of the converted VM, beside its disks:
//! a libvirt domain XML (KVM), an OVF 1.0 envelope (VMware), Glance image
//! properties (OpenStack), and a Hyper-V description (JSON plus the
//! PowerShell that creates the VM). Admin fields (`extra`) go where each
//! format keeps free-form data.

use crate::target::Converted;
use crate::DiskFormat;
use lifeboat_vm::{Bus, Firmware};
use serde_json::json;
use std::fmt::Write;

/// One written disk: its document id, file name (relative to the output
/// directory), format, virtual size and bytes in the file.
#[derive(Clone, Debug)]
pub struct DiskFile {
    /// The disk's id in the converted document (`Disk::id`).
    pub id: String,
    /// The file's name: relative to the output directory, or the member
    /// name inside an OVA.
    pub file: String,
    /// The image format the file is in.
    pub format: DiskFormat,
    /// Virtual size in bytes: the disk as the guest sees it.
    pub size: u64,
    /// Length of the file in bytes (the OVF's `ovf:size`).
    pub file_bytes: u64,
}

/// XML text and attribute escaping; control characters XML 1.0 cannot
/// hold become spaces.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // XML 1.0 has no other control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// The namespace of lifeboat's own elements in a libvirt `<metadata>`.
pub const LIBVIRT_NS: &str = "https://lifeboat.dev/xmlns/vm/1";

fn libvirt_nic_model(m: &str) -> &str {
    match m {
        "virtio-net-pci" | "virtio-net" => "virtio",
        o => o,
    }
}

fn libvirt_scsi_model(c: &str) -> &str {
    match c {
        "virtio-scsi-pci" => "virtio-scsi",
        "lsi53c895a" | "lsi53c810" => "lsilogic",
        "megasas" | "megasas-gen2" => "lsisas1078",
        "mptsas1068" => "lsisas1068",
        "pvscsi" => "vmpvscsi",
        o => o,
    }
}

/// A libvirt domain for the converted VM. `dir` is where the disks are
/// (libvirt wants absolute paths); `domain_type` is `kvm` or `qemu`.
pub fn libvirt_xml(c: &Converted, disks: &[DiskFile], dir: &std::path::Path, domain_type: &str) -> String {
    let md = &c.md;
    let mut x = String::new();
    let _ = writeln!(x, "<domain type='{}'>", esc(domain_type));
    let _ = writeln!(x, "  <name>{}</name>", esc(&md.name));
    let _ = writeln!(x, "  <title>{}</title>", esc(&format!("{} (restored by lifeboat for {})", md.name, c.platform)));
    if !md.extra.is_empty() {
        let _ = writeln!(x, "  <metadata>");
        let _ = writeln!(x, "    <lifeboat:vm xmlns:lifeboat='{LIBVIRT_NS}'>");
        for (k, v) in &md.extra {
            let _ = writeln!(x, "      <lifeboat:field name='{}'>{}</lifeboat:field>", esc(k), esc(v));
        }
        let _ = writeln!(x, "    </lifeboat:vm>");
        let _ = writeln!(x, "  </metadata>");
    }
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", md.memory_mib);
    let _ = writeln!(x, "  <vcpu>{}</vcpu>", md.cpus);
    let fw = if md.firmware == Firmware::Uefi { " firmware='efi'" } else { "" };
    let _ = writeln!(x, "  <os{fw}>");
    let _ = writeln!(x, "    <type arch='x86_64' machine='{}'>hvm</type>", esc(&md.machine));
    let _ = writeln!(x, "  </os>");
    let _ = writeln!(x, "  <features><acpi/><apic/></features>");
    let _ = writeln!(x, "  <devices>");
    let mut letters: std::collections::BTreeMap<&str, u32> = Default::default();
    let mut scsi: Vec<&str> = Vec::new();
    for d in &md.disks {
        let Some(f) = disks.iter().find(|f| f.id == d.id) else { continue };
        let (prefix, bus) = match d.bus {
            Bus::Virtio => ("vd", "virtio"),
            Bus::Ide => ("hd", "ide"),
            Bus::Sata => ("sd", "sata"),
            Bus::Scsi => ("sd", "scsi"),
            Bus::Usb => ("sd", "usb"),
            // libvirt gives NVMe disks their own controller element.
            Bus::Nvme => ("sd", "sata"),
        };
        let n = letters.entry(prefix).or_default();
        let dev = format!("{prefix}{}", (b'a' + (*n as u8 % 26)) as char);
        *n += 1;
        if d.bus == Bus::Scsi {
            let model = libvirt_scsi_model(d.controller.as_deref().unwrap_or("virtio-scsi-pci"));
            if !scsi.contains(&model) {
                scsi.push(model);
            }
        }
        let device = if d.is_cdrom() { "cdrom" } else { "disk" };
        let _ = writeln!(x, "    <disk type='file' device='{device}'>");
        let _ = writeln!(x, "      <driver name='qemu' type='{}'/>", f.format);
        let _ = writeln!(x, "      <source file='{}'/>", esc(&dir.join(&f.file).display().to_string()));
        let _ = writeln!(x, "      <target dev='{dev}' bus='{bus}'/>");
        if let Some(p) = md.boot_order.iter().position(|b| *b == d.id) {
            let _ = writeln!(x, "      <boot order='{}'/>", p + 1);
        }
        if d.is_cdrom() {
            let _ = writeln!(x, "      <readonly/>");
        }
        let _ = writeln!(x, "    </disk>");
    }
    for (i, m) in scsi.iter().enumerate() {
        let _ = writeln!(x, "    <controller type='scsi' index='{i}' model='{}'/>", esc(m));
    }
    for n in &md.nics {
        let _ = writeln!(x, "    <interface type='network'>");
        let _ = writeln!(x, "      <mac address='{}'/>", esc(&n.mac));
        let _ = writeln!(x, "      <source network='default'/>");
        let _ = writeln!(x, "      <model type='{}'/>", esc(libvirt_nic_model(&n.model)));
        if let Some(p) = md.boot_order.iter().position(|b| *b == n.id) {
            let _ = writeln!(x, "      <boot order='{}'/>", p + 1);
        }
        let _ = writeln!(x, "    </interface>");
    }
    if c.mapping.video != "none" {
        let _ = writeln!(x, "    <video><model type='{}'/></video>", esc(&c.mapping.video));
    }
    let _ = writeln!(x, "    <serial type='pty'/>");
    let _ = writeln!(x, "    <console type='pty'/>");
    let _ = writeln!(x, "    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>");
    let _ = writeln!(x, "  </devices>");
    let _ = writeln!(x, "</domain>");
    x
}

/// Glance image properties for the boot disk (`openstack image create
/// --property K=V` for each).
pub fn openstack_json(c: &Converted, boot: &DiskFile) -> serde_json::Value {
    let md = &c.md;
    let boot_disk = md.disks.iter().find(|d| d.id == boot.id);
    let disk_bus = match boot_disk.map(|d| d.bus) {
        Some(Bus::Virtio) | None => "virtio",
        Some(Bus::Ide) => "ide",
        Some(Bus::Sata) => "sata",
        Some(Bus::Scsi) => "scsi",
        Some(Bus::Usb) => "usb",
        Some(Bus::Nvme) => "nvme",
    };
    let vif = match md.nics.first().map(|n| n.model.as_str()) {
        Some("virtio-net-pci") | None => "virtio",
        Some("e1000") => "e1000",
        Some("e1000e") => "e1000e",
        Some("rtl8139") => "rtl8139",
        Some("vmxnet3") => "vmxnet3",
        Some(o) => o,
    };
    let os_type = match md.guest_os.as_ref().map(|g| g.id.as_str()) {
        Some("mswindows" | "windows") => "windows",
        _ => "linux",
    };
    let mut props = serde_json::Map::new();
    props.insert("hw_disk_bus".into(), json!(disk_bus));
    if disk_bus == "scsi" {
        props.insert("hw_scsi_model".into(), json!(libvirt_scsi_model(boot_disk.and_then(|d| d.controller.as_deref()).unwrap_or("virtio-scsi-pci"))));
    }
    props.insert("hw_vif_model".into(), json!(vif));
    props.insert("hw_firmware_type".into(), json!(if md.firmware == Firmware::Uefi { "uefi" } else { "bios" }));
    props.insert("hw_machine_type".into(), json!(md.machine));
    props.insert("hw_video_model".into(), json!(c.mapping.video));
    props.insert("os_type".into(), json!(os_type));
    if let Some(g) = &md.guest_os {
        props.insert("os_distro".into(), json!(g.id));
        if let Some(v) = &g.version {
            props.insert("os_version".into(), json!(v));
        }
    }
    // Admin fields as properties of their own, unless they would shadow
    // one of the hardware properties above.
    for (k, v) in &md.extra {
        props.entry(k.clone()).or_insert_with(|| json!(v));
    }
    json!({
        "name": md.name,
        "disk_format": boot.format.as_str(),
        "container_format": "bare",
        "file": boot.file,
        "min_disk": boot.size.div_ceil(1 << 30),
        "min_ram": md.memory_mib,
        "properties": props,
        "extra_disks": md.disks.iter().filter(|d| d.id != boot.id).map(|d| d.id.clone()).collect::<Vec<_>>(),
    })
}

/// The Hyper-V generation a converted document asks for.
pub fn hyperv_generation(c: &Converted) -> u8 {
    if c.md.machine == "hyperv-gen1" || (c.md.machine != "hyperv-gen2" && c.md.firmware == Firmware::Bios) {
        1
    } else {
        2
    }
}

/// The Hyper-V description: generation, memory, CPUs, disks on their
/// controllers, NICs with their MACs, admin fields as notes.
pub fn hyperv_json(c: &Converted, disks: &[DiskFile]) -> serde_json::Value {
    let md = &c.md;
    let (mut ide, mut scsi) = (0u32, 0u32);
    let ds: Vec<serde_json::Value> = md
        .disks
        .iter()
        .filter_map(|d| disks.iter().find(|f| f.id == d.id).map(|f| (d, f)))
        .map(|(d, f)| {
            let (ctrl, loc) = if d.bus == Bus::Ide {
                ide += 1;
                ("ide", ide - 1)
            } else {
                scsi += 1;
                ("scsi", scsi - 1)
            };
            json!({"id": d.id, "file": f.file, "controller": ctrl, "controller_number": loc / 64, "location": loc % 64, "dvd": d.is_cdrom()})
        })
        .collect();
    let notes: Vec<String> = md.extra.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    json!({
        "name": md.name,
        "generation": hyperv_generation(c),
        "secure_boot": false,
        "memory_mib": md.memory_mib,
        "cpus": md.cpus,
        "disks": ds,
        "nics": md.nics.iter().map(|n| json!({"id": n.id, "mac": n.mac.replace(':', "").to_ascii_uppercase(), "switch": null})).collect::<Vec<_>>(),
        "notes": notes.join("\n"),
        "extra": md.extra,
    })
}

/// PowerShell that creates the VM from the description on a Hyper-V host
/// (run it in the directory holding the VHDX files).
pub fn hyperv_ps1(c: &Converted, disks: &[DiskFile]) -> String {
    let md = &c.md;
    let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut p = String::new();
    let _ = writeln!(p, "# Creates VM {} on Hyper-V (written by lifeboat vm restore --target hyperv).", md.name.replace('\n', " "));
    let _ = writeln!(p, "$ErrorActionPreference = 'Stop'");
    let _ = writeln!(p, "$here = Split-Path -Parent $MyInvocation.MyCommand.Path");
    let _ = writeln!(p, "$vm = New-VM -Name {} -Generation {} -MemoryStartupBytes {}MB -NoVHD", q(&md.name), hyperv_generation(c), md.memory_mib);
    let _ = writeln!(p, "Set-VMProcessor -VM $vm -Count {}", md.cpus);
    if hyperv_generation(c) == 2 {
        let _ = writeln!(p, "Set-VMFirmware -VM $vm -EnableSecureBoot Off");
    }
    for d in &md.disks {
        let Some(f) = disks.iter().find(|f| f.id == d.id) else { continue };
        let ctrl = if d.bus == Bus::Ide { "IDE" } else { "SCSI" };
        let cmd = if d.is_cdrom() { "Add-VMDvdDrive" } else { "Add-VMHardDiskDrive" };
        let _ = writeln!(p, "{cmd} -VM $vm -ControllerType {ctrl} -Path (Join-Path $here {})", q(&f.file));
    }
    let _ = writeln!(p, "Get-VMNetworkAdapter -VM $vm | Remove-VMNetworkAdapter");
    for n in &md.nics {
        let _ = writeln!(p, "Add-VMNetworkAdapter -VM $vm -Name {} -StaticMacAddress {}", q(&n.id), q(&n.mac.replace(':', "").to_ascii_uppercase()));
    }
    if !md.extra.is_empty() {
        let notes: Vec<String> = md.extra.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(p, "Set-VM -VM $vm -Notes {}", q(&notes.join("; ")));
    }
    p
}

/// OVF 1.0 envelope (DSP0243 1.0, as VMware writes it). `stream`: the
/// disks are streamOptimized VMDKs (inside an OVA).
pub fn ovf(c: &Converted, disks: &[DiskFile], stream: bool) -> String {
    let md = &c.md;
    let mut x = String::new();
    let _ = writeln!(x, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let _ = writeln!(
        x,
        "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" xmlns:cim=\"http://schemas.dmtf.org/wbem/wscim/1/common\" xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\" xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\" xmlns:vmw=\"http://www.vmware.com/schema/ovf\" xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">"
    );
    let files: Vec<(&lifeboat_vm::Disk, &DiskFile)> = md.disks.iter().filter_map(|d| disks.iter().find(|f| f.id == d.id).map(|f| (d, f))).collect();
    let _ = writeln!(x, "  <References>");
    for (i, (_, f)) in files.iter().enumerate() {
        let _ = writeln!(x, "    <File ovf:href=\"{}\" ovf:id=\"file{}\" ovf:size=\"{}\"/>", esc(&f.file), i + 1, f.file_bytes);
    }
    let _ = writeln!(x, "  </References>");
    let _ = writeln!(x, "  <DiskSection>");
    let _ = writeln!(x, "    <Info>Virtual disk information</Info>");
    let fmt = if stream { "streamOptimized" } else { "monolithicSparse" };
    for (i, (d, _)) in files.iter().enumerate() {
        if d.is_cdrom() {
            continue;
        }
        let _ = writeln!(
            x,
            "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte\" ovf:diskId=\"vmdisk{}\" ovf:fileRef=\"file{}\" ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#{fmt}\"/>",
            d.size,
            i + 1,
            i + 1
        );
    }
    let _ = writeln!(x, "  </DiskSection>");
    let _ = writeln!(x, "  <NetworkSection>");
    let _ = writeln!(x, "    <Info>The list of logical networks</Info>");
    let _ = writeln!(x, "    <Network ovf:name=\"VM Network\">");
    let _ = writeln!(x, "      <Description>The VM Network network</Description>");
    let _ = writeln!(x, "    </Network>");
    let _ = writeln!(x, "  </NetworkSection>");
    let _ = writeln!(x, "  <VirtualSystem ovf:id=\"{}\">", esc(&md.name));
    let _ = writeln!(x, "    <Info>A virtual machine restored by lifeboat</Info>");
    let _ = writeln!(x, "    <Name>{}</Name>", esc(&md.name));
    let (os_id, os_type) = match md.guest_os.as_ref().map(|g| g.id.as_str()) {
        Some("mswindows" | "windows") => (103, "windows9Server64Guest"),
        Some("debian") => (96, "debian11_64Guest"),
        Some("ubuntu") => (94, "ubuntu64Guest"),
        Some("rhel" | "centos" | "rocky" | "almalinux") => (80, "rhel8_64Guest"),
        _ => (101, "otherLinux64Guest"),
    };
    let _ = writeln!(x, "    <OperatingSystemSection ovf:id=\"{os_id}\" vmw:osType=\"{os_type}\">");
    let _ = writeln!(x, "      <Info>The kind of installed guest operating system</Info>");
    let _ = writeln!(x, "    </OperatingSystemSection>");
    let _ = writeln!(x, "    <VirtualHardwareSection>");
    let _ = writeln!(x, "      <Info>Virtual hardware requirements</Info>");
    let _ = writeln!(x, "      <System>");
    let _ = writeln!(x, "        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>");
    let _ = writeln!(x, "        <vssd:InstanceID>0</vssd:InstanceID>");
    let _ = writeln!(x, "        <vssd:VirtualSystemIdentifier>{}</vssd:VirtualSystemIdentifier>", esc(&md.name));
    let _ = writeln!(x, "        <vssd:VirtualSystemType>{}</vssd:VirtualSystemType>", esc(&md.machine));
    let _ = writeln!(x, "      </System>");
    // rasd elements in alphabetical order, as the CIM schema wants them.
    let item = |x: &mut String, fields: &[(&str, String)]| {
        let mut f: Vec<&(&str, String)> = fields.iter().collect();
        f.sort_by_key(|(k, _)| *k);
        let _ = writeln!(x, "      <Item>");
        for (k, v) in f {
            let _ = writeln!(x, "        <rasd:{k}>{}</rasd:{k}>", esc(v));
        }
        let _ = writeln!(x, "      </Item>");
    };
    let mut id = 1u32;
    let mut next = || {
        id += 1;
        id - 1
    };
    item(
        &mut x,
        &[
            ("AllocationUnits", "hertz * 10^6".into()),
            ("Description", "Number of Virtual CPUs".into()),
            ("ElementName", format!("{} virtual CPU(s)", md.cpus)),
            ("InstanceID", next().to_string()),
            ("ResourceType", "3".into()),
            ("VirtualQuantity", md.cpus.to_string()),
        ],
    );
    item(
        &mut x,
        &[
            ("AllocationUnits", "byte * 2^20".into()),
            ("Description", "Memory Size".into()),
            ("ElementName", format!("{}MB of memory", md.memory_mib)),
            ("InstanceID", next().to_string()),
            ("ResourceType", "4".into()),
            ("VirtualQuantity", md.memory_mib.to_string()),
        ],
    );
    // Controllers: one SCSI (its model as VMware names it), one IDE.
    let scsi_model = files.iter().find(|(d, _)| d.bus == Bus::Scsi).map(|(d, _)| match d.controller.as_deref() {
        Some("lsi53c895a" | "lsi53c810") => "lsilogic",
        Some("mptsas1068") => "lsilogicsas",
        Some("virtio-scsi-pci") => "virtualscsi",
        _ => "VirtualSCSI",
    });
    let scsi_id = scsi_model.map(|m| {
        let i = next();
        item(
            &mut x,
            &[
                ("Address", "0".into()),
                ("Description", "SCSI Controller".into()),
                ("ElementName", "SCSI controller 0".into()),
                ("InstanceID", i.to_string()),
                ("ResourceSubType", m.into()),
                ("ResourceType", "6".into()),
            ],
        );
        i
    });
    let ide_id = files.iter().any(|(d, _)| d.bus != Bus::Scsi).then(|| {
        let i = next();
        item(&mut x, &[("Address", "0".into()), ("Description", "IDE Controller".into()), ("ElementName", "IDE 0".into()), ("InstanceID", i.to_string()), ("ResourceType", "5".into())]);
        i
    });
    let (mut on_scsi, mut on_ide) = (0u32, 0u32);
    for (i, (d, _)) in files.iter().enumerate() {
        let (parent, slot) = match (d.bus, scsi_id, ide_id) {
            (Bus::Scsi, Some(p), _) => {
                on_scsi += 1;
                // Unit 7 is the controller's own.
                (p, if on_scsi > 7 { on_scsi } else { on_scsi - 1 })
            }
            (_, _, Some(p)) => {
                on_ide += 1;
                (p, on_ide - 1)
            }
            _ => continue,
        };
        if d.is_cdrom() {
            item(
                &mut x,
                &[
                    ("AddressOnParent", slot.to_string()),
                    ("AutomaticAllocation", "false".into()),
                    ("ElementName", format!("CD/DVD drive {}", i + 1)),
                    ("InstanceID", next().to_string()),
                    ("Parent", parent.to_string()),
                    ("ResourceType", "15".into()),
                ],
            );
        } else {
            item(
                &mut x,
                &[
                    ("AddressOnParent", slot.to_string()),
                    ("ElementName", format!("Hard disk {}", i + 1)),
                    ("HostResource", format!("ovf:/disk/vmdisk{}", i + 1)),
                    ("InstanceID", next().to_string()),
                    ("Parent", parent.to_string()),
                    ("ResourceType", "17".into()),
                ],
            );
        }
    }
    for (i, n) in md.nics.iter().enumerate() {
        let sub = match n.model.as_str() {
            "vmxnet3" => "VmxNet3",
            "e1000" => "E1000",
            "e1000e" => "E1000e",
            "virtio-net-pci" => "virtio",
            o => o,
        };
        item(
            &mut x,
            &[
                ("Address", n.mac.clone()),
                ("AddressOnParent", (7 + i).to_string()),
                ("AutomaticAllocation", "true".into()),
                ("Connection", "VM Network".into()),
                ("Description", format!("{sub} ethernet adapter on \"VM Network\"")),
                ("ElementName", format!("Network adapter {}", i + 1)),
                ("InstanceID", next().to_string()),
                ("ResourceSubType", sub.into()),
                ("ResourceType", "10".into()),
            ],
        );
    }
    if c.mapping.video != "none" {
        item(&mut x, &[("AutomaticAllocation", "false".into()), ("ElementName", "Video card".into()), ("InstanceID", next().to_string()), ("ResourceType", "24".into())]);
    }
    if md.firmware == Firmware::Uefi {
        let _ = writeln!(x, "      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>");
    }
    let _ = writeln!(x, "    </VirtualHardwareSection>");
    if !md.extra.is_empty() {
        let _ = writeln!(x, "    <AnnotationSection ovf:required=\"false\">");
        let _ = writeln!(x, "      <Info>Admin fields kept from the backup</Info>");
        let notes: Vec<String> = md.extra.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(x, "      <Annotation>{}</Annotation>", esc(&notes.join("\n")));
        let _ = writeln!(x, "    </AnnotationSection>");
        let _ = writeln!(x, "    <ProductSection ovf:required=\"false\">");
        let _ = writeln!(x, "      <Info>Admin fields kept from the backup</Info>");
        for (k, v) in &md.extra {
            let _ = writeln!(x, "      <Property ovf:key=\"{}\" ovf:type=\"string\" ovf:value=\"{}\"/>", esc(k), esc(v));
        }
        let _ = writeln!(x, "    </ProductSection>");
    }
    let _ = writeln!(x, "  </VirtualSystem>");
    let _ = writeln!(x, "</Envelope>");
    x
}

/// The platform metadata an NFS datastore shows beside a snapshot's
/// disks: `vm.json` (the neutral document, as backed up) and `vm.ovf`
/// (the VMware description a `--target vmware` restore writes), whose
/// disks are the export's `<disk>.vmdk` descriptors. `disks` are the
/// exported disks only.
pub fn nfs_export_files(md: &lifeboat_vm::VmMetadata, disks: &[DiskFile]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let p = crate::Platform::Vmware;
    let c = crate::convert(md, p, &crate::Mapping::defaults(p))?;
    Ok(vec![("vm.json".into(), md.to_json()), ("vm.ovf".into(), ovf(&c, disks, false).into_bytes())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{convert, Mapping, Platform};
    use lifeboat_vm::{Disk, Nic, VmMetadata, METADATA_VERSION};
    use std::collections::BTreeMap;

    fn src() -> VmMetadata {
        VmMetadata {
            version: METADATA_VERSION,
            name: "db<1>".into(),
            uuid: None,
            source: "qemu 10.0.2".into(),
            firmware: Firmware::Bios,
            machine: "pc".into(),
            cpus: 2,
            memory_mib: 1536,
            disks: vec![
                Disk { id: "disk0".into(), size: 5 << 30, bus: Bus::Ide, controller: None, model: None, format: "raw".into(), source: None },
                Disk { id: "disk1".into(), size: 1 << 30, bus: Bus::Ide, controller: None, model: None, format: "raw".into(), source: None },
            ],
            nics: vec![Nic { id: "net0".into(), mac: "52:54:00:aa:bb:cc".into(), model: "e1000".into() }],
            boot_order: vec!["disk0".into(), "net0".into()],
            guest_os: None,
            extra: BTreeMap::from([("owner".to_string(), "ops & \"infra\"".to_string()), ("ticket".to_string(), "CHG-42".to_string())]),
        }
    }

    fn files(f: DiskFormat) -> Vec<DiskFile> {
        vec![
            DiskFile { id: "disk0".into(), file: format!("disk0.{f}"), format: f, size: 5 << 30, file_bytes: 123 },
            DiskFile { id: "disk1".into(), file: format!("disk1.{f}"), format: f, size: 1 << 30, file_bytes: 45 },
        ]
    }

    #[test]
    fn libvirt_domain_has_the_mapped_hardware_and_admin_fields() {
        let c = convert(&src(), Platform::Kvm, &Mapping::defaults(Platform::Kvm)).unwrap();
        let x = libvirt_xml(&c, &files(DiskFormat::Qcow2), std::path::Path::new("/srv/out"), "kvm");
        let doc = roxmltree::Document::parse(&x).unwrap();
        let r = doc.root_element();
        assert_eq!(r.descendants().find(|n| n.has_tag_name("name")).unwrap().text(), Some("db<1>"));
        let targets: Vec<_> = r.descendants().filter(|n| n.has_tag_name("target") && n.attribute("dev").is_some()).map(|n| (n.attribute("dev").unwrap(), n.attribute("bus").unwrap())).collect();
        assert_eq!(targets, vec![("vda", "virtio"), ("vdb", "virtio")]);
        let src0 = r.descendants().find(|n| n.has_tag_name("source") && n.attribute("file").is_some()).unwrap();
        assert_eq!(src0.attribute("file"), Some("/srv/out/disk0.qcow2"));
        assert_eq!(r.descendants().find(|n| n.has_tag_name("model") && n.parent().unwrap().has_tag_name("interface")).unwrap().attribute("type"), Some("virtio"));
        let fields: Vec<_> =
            r.descendants().filter(|n| n.tag_name().name() == "field" && n.tag_name().namespace() == Some(LIBVIRT_NS)).map(|n| (n.attribute("name").unwrap(), n.text().unwrap())).collect();
        assert_eq!(fields, vec![("owner", "ops & \"infra\""), ("ticket", "CHG-42")]);
    }

    #[test]
    fn ovf_lists_files_disks_and_hardware_in_schema_order() {
        let c = convert(&src(), Platform::Vmware, &Mapping::defaults(Platform::Vmware)).unwrap();
        let x = ovf(&c, &files(DiskFormat::Vmdk), true);
        let doc = roxmltree::Document::parse(&x).unwrap();
        let ovf_ns = "http://schemas.dmtf.org/ovf/envelope/1";
        let disks: Vec<_> = doc.descendants().filter(|n| n.has_tag_name((ovf_ns, "Disk"))).collect();
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[0].attribute((ovf_ns, "capacity")), Some("5368709120"));
        assert!(disks[0].attribute((ovf_ns, "format")).unwrap().ends_with("#streamOptimized"));
        let rasd = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
        let items: Vec<_> = doc.descendants().filter(|n| n.has_tag_name((ovf_ns, "Item"))).collect();
        for it in &items {
            let names: Vec<&str> = it.children().filter(|c| c.is_element()).map(|c| c.tag_name().name()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted, "rasd elements out of order");
        }
        let ty = |it: &roxmltree::Node, k: &str| it.children().find(|c| c.has_tag_name((rasd, k))).and_then(|c| c.text()).map(str::to_string);
        let scsi = items.iter().find(|i| ty(i, "ResourceType").as_deref() == Some("6")).unwrap();
        assert_eq!(ty(scsi, "ResourceSubType").as_deref(), Some("VirtualSCSI"));
        let nic = items.iter().find(|i| ty(i, "ResourceType").as_deref() == Some("10")).unwrap();
        assert_eq!((ty(nic, "ResourceSubType").as_deref(), ty(nic, "Address").as_deref()), (Some("VmxNet3"), Some("52:54:00:aa:bb:cc")));
        let mem = items.iter().find(|i| ty(i, "ResourceType").as_deref() == Some("4")).unwrap();
        assert_eq!(ty(mem, "VirtualQuantity").as_deref(), Some("1536"));
        let props: Vec<_> = doc.descendants().filter(|n| n.has_tag_name((ovf_ns, "Property"))).map(|p| (p.attribute((ovf_ns, "key")).unwrap(), p.attribute((ovf_ns, "value")).unwrap())).collect();
        assert_eq!(props, vec![("owner", "ops & \"infra\""), ("ticket", "CHG-42")]);
    }

    #[test]
    fn openstack_and_hyperv_descriptions() {
        let c = convert(&src(), Platform::Openstack, &Mapping::defaults(Platform::Openstack)).unwrap();
        let f = files(DiskFormat::Qcow2);
        let j = openstack_json(&c, &f[0]);
        let p = &j["properties"];
        assert_eq!(
            (p["hw_disk_bus"].as_str(), p["hw_vif_model"].as_str(), p["hw_firmware_type"].as_str(), p["hw_machine_type"].as_str(), p["os_type"].as_str()),
            (Some("virtio"), Some("virtio"), Some("bios"), Some("pc"), Some("linux"))
        );
        assert_eq!((j["disk_format"].as_str(), j["min_disk"].as_u64(), p["ticket"].as_str()), (Some("qcow2"), Some(5), Some("CHG-42")));
        let c = convert(&src(), Platform::Hyperv, &Mapping::defaults(Platform::Hyperv)).unwrap();
        let f = files(DiskFormat::Vhdx);
        let j = hyperv_json(&c, &f);
        assert_eq!((j["generation"].as_u64(), j["memory_mib"].as_u64(), j["cpus"].as_u64()), (Some(1), Some(1536), Some(2)));
        assert_eq!((j["disks"][0]["controller"].as_str(), j["disks"][1]["controller"].as_str()), (Some("ide"), Some("scsi")));
        assert_eq!(j["nics"][0]["mac"], "525400AABBCC");
        assert!(j["notes"].as_str().unwrap().contains("ticket: CHG-42"));
        let ps = hyperv_ps1(&c, &f);
        assert!(ps.contains("New-VM -Name 'db<1>' -Generation 1 -MemoryStartupBytes 1536MB"), "{ps}");
        assert!(ps.contains("-ControllerType IDE -Path (Join-Path $here 'disk0.vhdx')"), "{ps}");
        assert!(ps.contains("-StaticMacAddress '525400AABBCC'"), "{ps}");
    }
}
