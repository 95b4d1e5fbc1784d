//! `lifeboat vm import`: VMs from VMware and Hyper-V into the datastore.
//!
//! Images are made with qemu-img from a raw disk with data, holes and an
//! odd tail; every import is restored raw and compared byte for byte
//! with `qemu-img compare`, and its hardware read back from the restored
//! `vm.json`. Sources: an OVA shaped like an ESXi export (hand-written
//! OVF, streamOptimized VMDK, packed by GNU tar), the OVA and the loose
//! OVF that `vm restore --target vmware` writes (imported again, it
//! deduplicates to nothing), and a Hyper-V VHDX with the `hyperv.json`
//! that `--target hyperv` writes. Bad files fail with a message naming
//! them and leave no snapshot behind.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// 48 MiB + 1.5 KiB: data at both ends, a hole between, a tail that is
/// no multiple of a chunk.
fn make_raw(dir: &Path) -> PathBuf {
    let p = dir.join("source.raw");
    let size = (48u64 << 20) + 1536;
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    let mut r = Rng::new(7);
    f.write_all_at(&r.bytes(3 << 20), 1 << 20).unwrap();
    f.write_all_at(&r.bytes(1536 + 4096), size - 1536 - 4096).unwrap();
    p
}

fn qemu_img(args: &[&str]) {
    let o = Command::new("qemu-img").args(args).output().unwrap();
    assert!(o.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// `lifeboat vm SUB --datastore DS ARGS...`
fn vm<S: AsRef<std::ffi::OsStr>>(ds: &Ds, sub: &str, args: impl IntoIterator<Item = S>) -> Out {
    let mut c = lb_cmd();
    c.args(["vm", sub, "--datastore"]).arg(&ds.path).args(args);
    run_cmd(c)
}

fn import(ds: &Ds, file: &Path, extra: &[&str]) -> Value {
    let o = vm(ds, "import", [std::ffi::OsStr::new("--json"), file.as_os_str()].into_iter().chain(extra.iter().map(std::ffi::OsStr::new)));
    o.expect_ok();
    o.json()
}

/// Restores the snapshot raw into `out` and returns its vm.json.
fn restore_raw(ds: &Ds, snap: &str, out: &Path) -> Value {
    vm(ds, "restore", [snap, out.to_str().unwrap()]).expect_ok();
    serde_json::from_slice(&std::fs::read(out.join("vm.json")).unwrap()).unwrap()
}

fn assert_same_disk(img: &Path, reference: &Path) {
    let o = Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "raw"]).arg(img).arg(reference).output().unwrap();
    assert!(o.status.success(), "{} differs from {}: {}", img.display(), reference.display(), String::from_utf8_lossy(&o.stdout));
}

const ESXI_OVF: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-20036589" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="app01-disk1.vmdk" ovf:id="file1" ovf:size="SIZE"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="CAPACITY" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" ovf:populatedSize="4194304"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network"><Description>The VM Network network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="app01">
    <Info>A virtual machine</Info>
    <Name>app01</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian11_64Guest"><Info>The kind of installed guest operating system</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>app01</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType>
      </System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:Description>Number of Virtual CPUs</rasd:Description><rasd:ElementName>2 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:Description>Memory Size</rasd:Description><rasd:ElementName>3072MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>3072</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:Description>SCSI Controller</rasd:Description><rasd:ElementName>SCSI controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Address>00:50:56:12:34:56</rasd:Address><rasd:AddressOnParent>7</rasd:AddressOnParent><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#;

#[test]
fn vmware_and_hyperv_exports_import_identical_and_round_trip() {
    let t = scratch("vm-import");
    let raw = make_raw(t.path());
    let size = std::fs::metadata(&raw).unwrap().len();
    let ds = Ds::init(t.path().join("ds"));

    // An OVA as ESXi exports one: descriptor first, streamOptimized VMDK.
    let esxi = t.path().join("esxi");
    std::fs::create_dir_all(&esxi).unwrap();
    let vmdk = esxi.join("app01-disk1.vmdk");
    qemu_img(&["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw.to_str().unwrap(), vmdk.to_str().unwrap()]);
    let ovf = ESXI_OVF.replace("SIZE", &std::fs::metadata(&vmdk).unwrap().len().to_string()).replace("CAPACITY", &size.to_string());
    std::fs::write(esxi.join("app01.ovf"), ovf).unwrap();
    let ova = t.path().join("app01.ova");
    let st = Command::new("tar").args(["--format=ustar", "-cf"]).arg(&ova).arg("-C").arg(&esxi).args(["app01.ovf", "app01-disk1.vmdk"]).status().unwrap();
    assert!(st.success());
    let r = import(&ds, &ova, &[]);
    assert_eq!(r["vm"], "app01");
    assert_eq!(r["consistency"], "offline");
    let snap = r["snapshot_id"].as_str().unwrap().to_string();
    let out = t.path().join("r-esxi");
    let md = restore_raw(&ds, &snap, &out);
    assert_same_disk(&out.join("disk0.raw"), &raw);
    assert_eq!((md["cpus"].as_u64(), md["memory_mib"].as_u64(), md["firmware"].as_str(), md["machine"].as_str()), (Some(2), Some(3072), Some("bios"), Some("pc")));
    assert_eq!((md["disks"][0]["bus"].as_str(), md["disks"][0]["controller"].as_str(), md["disks"][0]["size"].as_u64()), (Some("scsi"), Some("lsi53c895a"), Some(size)));
    assert_eq!((md["nics"][0]["mac"].as_str(), md["nics"][0]["model"].as_str()), (Some("00:50:56:12:34:56"), Some("e1000")));
    assert_eq!(md["guest_os"]["id"], "debian");
    assert_eq!(md["extra"]["import.virtual_system_type"], "vmx-19");

    // The same OVF loose, beside its VMDK, under another name.
    let r = import(&ds, &esxi.join("app01.ovf"), &["--name", "app01-loose", "--cpus", "4"]);
    assert_eq!(r["vm"], "app01-loose");
    assert_eq!(r["disks"][0][1]["bytes_added"].as_u64(), Some(0), "the same disk again must deduplicate\n{r:#}");
    let md = restore_raw(&ds, r["snapshot_id"].as_str().unwrap(), &t.path().join("r-loose"));
    assert_eq!(md["cpus"].as_u64(), Some(4));
    assert_same_disk(&t.path().join("r-loose/disk0.raw"), &raw);

    // What `vm restore --target vmware` writes imports back identical.
    let vmw = t.path().join("to-vmware");
    vm(&ds, "restore", [snap.as_str(), "--target", "vmware", "--no-repair", vmw.to_str().unwrap()]).expect_ok();
    let r = import(&ds, &vmw.join("vm.ova"), &["--name", "app01-back"]);
    assert_eq!(r["disks"][0][1]["bytes_added"].as_u64(), Some(0), "{r:#}");
    restore_raw(&ds, r["snapshot_id"].as_str().unwrap(), &t.path().join("r-back"));
    assert_same_disk(&t.path().join("r-back/disk0.raw"), &raw);

    // Hyper-V: a VHDX with the description `--target hyperv` writes.
    let hv = t.path().join("to-hyperv");
    vm(&ds, "restore", [snap.as_str(), "--target", "hyperv", "--map", "firmware=uefi", "--no-repair", hv.to_str().unwrap()]).expect_ok();
    let desc: Value = serde_json::from_slice(&std::fs::read(hv.join("hyperv.json")).unwrap()).unwrap();
    let vhdx = hv.join(desc["disks"][0]["file"].as_str().unwrap());
    let r = import(&ds, &vhdx, &[]);
    let md = restore_raw(&ds, r["snapshot_id"].as_str().unwrap(), &t.path().join("r-hv"));
    assert_same_disk(&t.path().join("r-hv/disk0.raw"), &raw);
    assert_eq!((md["name"].as_str(), md["firmware"].as_str(), md["cpus"].as_u64(), md["memory_mib"].as_u64()), (Some("app01"), Some("uefi"), Some(2), Some(3072)));
    let hv_mac = desc["nics"][0]["mac"].as_str().unwrap().to_ascii_lowercase();
    assert_eq!(md["nics"][0]["mac"].as_str().unwrap().replace(':', ""), hv_mac);
    assert_eq!(md["extra"]["import.hyperv_generation"], "2");

    // A bare VHDX: defaults, said as warnings.
    let bare = t.path().join("bare.vhdx");
    qemu_img(&["convert", "-f", "raw", "-O", "vhdx", raw.to_str().unwrap(), bare.to_str().unwrap()]);
    let r = import(&ds, &bare, &["--memory", "512"]);
    assert!(r["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("no hyperv.json")), "{r:#}");
    let md = restore_raw(&ds, r["snapshot_id"].as_str().unwrap(), &t.path().join("r-bare"));
    assert_eq!((md["name"].as_str(), md["memory_mib"].as_u64(), md["disks"][0]["bus"].as_str()), (Some("bare"), Some(512), Some("ide")));
    assert_same_disk(&t.path().join("r-bare/disk0.raw"), &raw);
    ds.assert_check_clean();
}

#[test]
fn bad_imports_name_the_file_and_store_nothing() {
    let t = scratch("vm-import-bad");
    let raw = make_raw(t.path());
    let ds = Ds::init(t.path().join("ds"));
    let fails = |file: &Path, want: &str| {
        let o = vm(&ds, "import", [file]);
        assert_eq!(o.code(), Some(1), "{o}");
        assert!(o.stderr.contains(want), "wanted {want:?}\n{o}");
        assert!(!o.stderr.contains("panicked"), "{o}");
    };
    fails(&t.path().join("nothing-here.ova"), "nothing-here.ova");
    let odd = t.path().join("disk.xyz");
    std::fs::write(&odd, b"x").unwrap();
    fails(&odd, "unknown kind of file");

    // An OVA cut short inside its disk.
    let dir = t.path().join("ova");
    std::fs::create_dir_all(&dir).unwrap();
    let vmdk = dir.join("app01-disk1.vmdk");
    qemu_img(&["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw.to_str().unwrap(), vmdk.to_str().unwrap()]);
    let size = std::fs::metadata(&raw).unwrap().len();
    std::fs::write(dir.join("app01.ovf"), ESXI_OVF.replace("SIZE", "1").replace("CAPACITY", &size.to_string())).unwrap();
    let ova = t.path().join("cut.ova");
    assert!(Command::new("tar").args(["--format=ustar", "-cf"]).arg(&ova).arg("-C").arg(&dir).args(["app01.ovf", "app01-disk1.vmdk"]).status().unwrap().success());
    let f = std::fs::OpenOptions::new().write(true).open(&ova).unwrap();
    f.set_len(f.metadata().unwrap().len() / 2).unwrap();
    fails(&ova, "truncated");

    // An OVF whose disk is not beside it, and one that climbs out.
    std::fs::remove_file(&vmdk).unwrap();
    fails(&dir.join("app01.ovf"), "missing");
    std::fs::write(dir.join("evil.ovf"), ESXI_OVF.replace("app01-disk1.vmdk", "../source.raw").replace("SIZE", "1").replace("CAPACITY", "1")).unwrap();
    fails(&dir.join("evil.ovf"), "not a plain name");

    // A disk image qemu cannot read as what its name says.
    let fake = t.path().join("fake.vhdx");
    std::fs::write(&fake, vec![0x55u8; 1 << 20]).unwrap();
    fails(&fake, "qemu-nbd could not read");

    assert!(ds.snapshot_ids().is_empty(), "a failed import left a snapshot");
    ds.assert_check_clean();
}
