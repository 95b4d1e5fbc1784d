//! Cross-platform restore end to end (docs/cross-platform-restore.md).
//!
//! 1. Formats and descriptions: a VM with an IDE disk of an odd size
//!    (not a multiple of 64 KiB, with holes) and an e1000 NIC is backed
//!    up over QMP and restored for every target. Each disk is checked
//!    with `qemu-img check` and compared with the plain raw restore;
//!    the libvirt XML passes `virt-xml-validate`; the OVA is a ustar with
//!    the descriptor first whose VMDK `qemu-img info` reads as
//!    streamOptimized and `virt-v2v -i ova` accepts; repair of a disk
//!    without an OS fails the restore loudly.
//!    The Hyper-V VHDX is dynamic (its file parameters read back).
//! 2. The proof: the Debian guest as an IDE/e1000/BIOS platform left it
//!    (tests/guest/build.sh --debian-ide: root and fstab by /dev/sda1,
//!    an initramfs with IDE drivers only, its NIC named lan0 by its old
//!    MAC) restored for kvm (virtio-blk, virtio-net, new MAC) boots and
//!    answers heartbeat and ping, lan0 on the new MAC; the same restore
//!    with --no-repair stops in its initramfs without a root. Instant
//!    restore with the same mapping does the same on a tap, repaired in
//!    its overlays, the datastore's files unchanged.
//! 3. Several targets at once, from one read of the datastore.

mod common;

use common::guest::*;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The MAC of the e1000 NIC every VM here is backed up with. The
/// debian-ide guest names its NIC `lan0` by this MAC
/// (`/etc/systemd/network/10-lan0.link`, tests/guest/build.sh
/// `DEBIAN_IDE_MAC`) and configures `lan0`: on a new MAC its network
/// comes up only when the repair moved the .link file to it.
const LEGACY_MAC: &str = "52:54:00:0e:10:00";

/// Backs up `disk` (raw) as an IDE disk with an e1000 NIC of a paused
/// `pc` QEMU; returns the snapshot id.
fn back_up_ide(ds: &Ds, disk: &Path, name: &str, dir: &Path, mem: &str) -> String {
    back_up_paused_as(ds, disk, name, dir, &PausedHardware { mem, mac: LEGACY_MAC, drive: "if=ide,index=0,media=disk", nic: "e1000" })
}

fn restore_for(ds: &Ds, snap: &str, out: &Path, extra: &[&str]) -> Out {
    let mut c = lb_cmd();
    c.args(["vm", "restore", "--json", "--datastore"]).arg(&ds.path).arg(snap).arg(out).args(extra);
    run_cmd(c)
}

fn qemu_img_check(img: &Path, fmt: &str) {
    let o = Command::new("qemu-img").args(["check", "-f", fmt]).arg(img).output().unwrap();
    assert!(o.status.success(), "qemu-img check {}: {}{}", img.display(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

fn assert_same(img: &Path, fmt: &str, reference: &Path) {
    // (qemu-img has no check for raw: nothing in it can be inconsistent)
    if fmt != "raw" {
        qemu_img_check(img, fmt);
    }
    let (same, said) = identical(img, fmt, reference);
    assert!(same, "{} ({fmt}) differs from the raw restore: {said}", img.display());
}

fn info(img: &Path) -> Value {
    let o = Command::new("qemu-img").args(["info", "--output=json"]).arg(img).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A VHDX's file parameters (metadata region, MS-VHDX 2.6.2.1): the
/// block size and `LeaveBlocksAllocated` (set: a fixed VHDX; clear: a
/// dynamic one). GUIDs are stored with their first three fields little
/// endian.
fn vhdx_file_parameters(path: &Path) -> (u32, bool) {
    const METADATA_REGION: [u8; 16] = [0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e];
    const FILE_PARAMETERS: [u8; 16] = [0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b];
    let f = std::fs::read(path).unwrap();
    let u32_at = |o: usize| u32::from_le_bytes(f[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(f[o..o + 8].try_into().unwrap());
    assert_eq!(&f[..8], b"vhdxfile", "{} is no VHDX", path.display());
    // The region table at 192 KiB: "regi", checksum, count, reserved,
    // then 32-byte entries (GUID, file offset, length, required).
    let rt = 192 * 1024;
    assert_eq!(&f[rt..rt + 4], b"regi", "no region table in {}", path.display());
    let meta = (0..u32_at(rt + 8) as usize)
        .map(|i| rt + 16 + 32 * i)
        .find(|&e| f[e..e + 16] == METADATA_REGION)
        .map(|e| u64_at(e + 16) as usize)
        .unwrap_or_else(|| panic!("no metadata region in {}", path.display()));
    // The metadata table: "metadata", reserved, count, reserved (32
    // bytes), then 32-byte entries (GUID, offset in the region, length).
    assert_eq!(&f[meta..meta + 8], b"metadata");
    let count = u16::from_le_bytes(f[meta + 10..meta + 12].try_into().unwrap()) as usize;
    let item =
        (0..count).map(|i| meta + 32 + 32 * i).find(|&e| f[e..e + 16] == FILE_PARAMETERS).map(|e| meta + u32_at(e + 16) as usize).unwrap_or_else(|| panic!("no file parameters in {}", path.display()));
    (u32_at(item), u32_at(item + 4) & 1 == 1)
}

#[test]
fn every_target_writes_its_format_and_description() {
    require_root();
    let t = scratch("convert-formats");
    // 5 MiB + 3 sectors: no multiple of 64 KiB (nor of 4 KiB); data at
    // the start, in the middle and in the last sector, holes between.
    let size: u64 = 5 * 1024 * 1024 + 3 * 512;
    let disk = t.path().join("ide.raw");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&disk).unwrap();
        f.set_len(size).unwrap();
        let mut rng = Rng::new(20);
        f.write_all_at(&rng.bytes(70_000), 0).unwrap();
        f.write_all_at(&rng.bytes(4096), 3 * 1024 * 1024 + 777).unwrap();
        f.write_all_at(&rng.bytes(512), size - 512).unwrap();
    }
    let ds = Ds::init(t.path().join("ds"));
    let snap = back_up_ide(&ds, &disk, "convert-odd", &t.path().join("q"), "256");

    // The reference: the plain raw restore.
    let plain = t.path().join("plain");
    let mut c = lb_cmd();
    c.args(["vm", "restore", "--datastore"]).arg(&ds.path).arg(&snap).arg(&plain);
    run_cmd(c).expect_ok();
    let md: Value = serde_json::from_slice(&std::fs::read(plain.join("vm.json")).unwrap()).unwrap();
    let id = md["disks"][0]["id"].as_str().unwrap().to_string();
    assert_eq!((md["disks"][0]["bus"].as_str(), md["nics"][0]["model"].as_str()), (Some("ide"), Some("e1000")), "{md}");
    let reference = plain.join(format!("{id}.raw"));
    assert_eq!(std::fs::metadata(&reference).unwrap().len(), size);
    assert!(identical(&reference, "raw", &disk).0, "the raw restore is not the disk backed up");

    // kvm, qcow2 (its default): disk, libvirt XML, converted vm.json.
    let kvm = t.path().join("kvm");
    let o = restore_for(&ds, &snap, &kvm, &["--target", "kvm", "--no-repair", "--map", "mac=new"]);
    o.expect_ok();
    let r = o.json();
    assert_eq!((r["platform"].as_str(), r["format"].as_str()), (Some("kvm"), Some("qcow2")), "{r}");
    assert!(r["repair"].is_null(), "{r}");
    assert_same(&kvm.join(format!("{id}.qcow2")), "qcow2", &reference);
    let conv: Value = serde_json::from_slice(&std::fs::read(kvm.join("vm.json")).unwrap()).unwrap();
    assert_eq!((conv["disks"][0]["bus"].as_str(), conv["nics"][0]["model"].as_str(), conv["machine"].as_str()), (Some("virtio"), Some("virtio-net-pci"), Some("pc")), "{conv}");
    let new_mac = conv["nics"][0]["mac"].as_str().unwrap();
    assert!(new_mac.starts_with("52:54:00:") && new_mac != "52:54:00:0e:10:00", "mac=new gives a fresh MAC: {new_mac}");
    assert_eq!(r["macs"]["net0"][1].as_str(), Some(new_mac), "{r}");
    let xml = kvm.join("domain.xml");
    let v = Command::new("virt-xml-validate").arg(&xml).arg("domain").output().unwrap();
    assert!(v.status.success(), "virt-xml-validate rejects domain.xml: {}{}\n{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr), std::fs::read_to_string(&xml).unwrap());
    let text = std::fs::read_to_string(&xml).unwrap();
    assert!(text.contains(&format!("<source file='{}'/>", std::fs::canonicalize(&kvm).unwrap().join(format!("{id}.qcow2")).display())), "{text}");
    assert!(text.contains(&format!("<mac address='{new_mac}'/>")) && text.contains("bus='virtio'") && text.contains("<model type='virtio'/>"), "{text}");

    // openstack, raw: the image properties.
    let os = t.path().join("openstack");
    restore_for(&ds, &snap, &os, &["--target", "openstack", "--no-repair", "--format", "raw"]).expect_ok();
    assert_same(&os.join(format!("{id}.raw")), "raw", &reference);
    let props: Value = serde_json::from_slice(&std::fs::read(os.join("openstack-image.json")).unwrap()).unwrap();
    let p = &props["properties"];
    assert_eq!(
        (p["hw_disk_bus"].as_str(), p["hw_vif_model"].as_str(), p["hw_firmware_type"].as_str(), p["hw_machine_type"].as_str(), p["os_type"].as_str()),
        (Some("virtio"), Some("virtio"), Some("bios"), Some("pc"), Some("linux")),
        "{props}"
    );
    assert_eq!(props["disk_format"], "raw");

    // vmware: an OVA (descriptor first, manifest, streamOptimized VMDK).
    let vmw = t.path().join("vmware");
    let o = restore_for(&ds, &snap, &vmw, &["--target", "vmware", "--no-repair"]);
    o.expect_ok();
    let ova = vmw.join("vm.ova");
    let list = run_ok(Command::new("tar").arg("-tvf").arg(&ova));
    let names: Vec<&str> = list.lines().map(|l| l.split_whitespace().last().unwrap()).collect();
    assert_eq!(names, vec!["vm.ovf", "vm.mf", &format!("{id}.vmdk")], "{list}");
    let x = t.path().join("ova-x");
    std::fs::create_dir_all(&x).unwrap();
    run_ok(Command::new("tar").arg("-xf").arg(&ova).arg("-C").arg(&x));
    let vmdk = x.join(format!("{id}.vmdk"));
    let i = info(&vmdk);
    assert_eq!((i["format"].as_str(), i["format-specific"]["data"]["create-type"].as_str()), (Some("vmdk"), Some("streamOptimized")), "{i}");
    assert!(i["virtual-size"].as_u64().unwrap() >= size, "{i}");
    assert_same(&vmdk, "vmdk", &reference);
    let ovf = std::fs::read_to_string(x.join("vm.ovf")).unwrap();
    assert!(ovf.contains(&format!("ovf:capacity=\"{size}\"")) && ovf.contains("VmxNet3") && ovf.contains("VirtualSCSI"), "{ovf}");
    // The manifest's digests are those of the files.
    for l in std::fs::read_to_string(x.join("vm.mf")).unwrap().lines() {
        let (f, sum) = l.strip_prefix("SHA256(").and_then(|l| l.split_once(")= ")).unwrap();
        assert_eq!(sha256_file(&x.join(f)), sum, "manifest entry {l}");
    }
    // A consumer nobody here wrote: virt-v2v parses the OVA.
    let v2v = Command::new("virt-v2v").args(["-i", "ova"]).arg(&ova).args(["--print-source"]).env("LIBGUESTFS_BACKEND", "direct").output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&v2v.stdout), String::from_utf8_lossy(&v2v.stderr));
    assert!(v2v.status.success(), "virt-v2v -i ova --print-source failed: {said}");
    // (virt-v2v 2.2 prints the hardware it will convert, not name/memory)
    assert!(said.contains("hypervisor type: vmware") && said.contains("0 [scsi]") && said.contains("mac: 52:54:00:0e:10:00 [vmxnet3]"), "virt-v2v read another VM: {said}");
    eprintln!("virt-v2v --print-source:\n{said}");

    // vmware with package=ovf: a descriptor beside a monolithicSparse VMDK.
    let ovfdir = t.path().join("vmware-ovf");
    restore_for(&ds, &snap, &ovfdir, &["--target", "vmware", "--no-repair", "--map", "package=ovf"]).expect_ok();
    let vmdk = ovfdir.join(format!("{id}.vmdk"));
    assert_eq!(info(&vmdk)["format-specific"]["data"]["create-type"].as_str(), Some("monolithicSparse"));
    assert_same(&vmdk, "vmdk", &reference);
    assert!(ovfdir.join("vm.ovf").is_file() && ovfdir.join("vm.mf").is_file());

    // hyperv: a dynamic VHDX and its description.
    let hv = t.path().join("hyperv");
    restore_for(&ds, &snap, &hv, &["--target", "hyperv", "--no-repair"]).expect_ok();
    let vhdx = hv.join(format!("{id}.vhdx"));
    assert_eq!(info(&vhdx)["format"].as_str(), Some("vhdx"));
    assert_same(&vhdx, "vhdx", &reference);
    // Dynamic: LeaveBlocksAllocated clear (qemu-img info does not say).
    // The reader tells a fixed VHDX apart, so the check can fail.
    let (block, fixed) = vhdx_file_parameters(&vhdx);
    assert!(!fixed && block.is_power_of_two() && block >= 1 << 20, "{} is not a dynamic VHDX (block size {block}, LeaveBlocksAllocated {fixed})", vhdx.display());
    let fixed_vhdx = t.path().join("fixed.vhdx");
    run_ok(Command::new("qemu-img").args(["create", "-q", "-f", "vhdx", "-o", "subformat=fixed"]).arg(&fixed_vhdx).arg("1M"));
    assert!(vhdx_file_parameters(&fixed_vhdx).1, "a fixed VHDX reads as dynamic: the check above proves nothing");
    let d: Value = serde_json::from_slice(&std::fs::read(hv.join("hyperv.json")).unwrap()).unwrap();
    assert_eq!(
        (d["generation"].as_u64(), d["memory_mib"].as_u64(), d["disks"][0]["controller"].as_str(), d["nics"][0]["mac"].as_str()),
        (Some(1), Some(256), Some("ide"), Some("5254000E1000")),
        "{d}"
    );
    assert!(std::fs::read_to_string(hv.join("create-vm.ps1")).unwrap().contains("New-VM -Name 'convert-odd' -Generation 1"));

    // Wrong combinations and a bad mapping are refused before any work.
    let o = restore_for(&ds, &snap, &t.path().join("bad"), &["--target", "hyperv", "--format", "qcow2", "--no-repair"]);
    assert!(!o.ok() && o.stderr.contains("Hyper-V reads VHDX"), "{}", o.stderr);
    let o = restore_for(&ds, &snap, &t.path().join("bad"), &["--target", "kvm", "--map", "disk_bus=floppy"]);
    assert!(!o.ok() && o.stderr.contains("disk_bus takes ide, sata"), "{}", o.stderr);

    // Repair of a disk without an operating system fails the restore,
    // loudly, and writes no disk.
    let rep = t.path().join("repair-noos");
    let o = restore_for(&ds, &snap, &rep, &["--target", "kvm"]);
    assert!(!o.ok(), "a repair that found no OS passed: {}", o.stdout);
    assert!(o.stderr.contains("no operating system") && o.stderr.contains("--no-repair"), "{}", o.stderr);
    assert!(!rep.join(format!("{id}.qcow2")).exists(), "a disk was written although the repair failed");
    // The work directory (overlays, NBD socket) is gone.
    let leftovers: Vec<_> = std::fs::read_dir(ds.path.join("tmp")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(leftovers.is_empty(), "left in the datastore's tmp/: {leftovers:?}");
}

/// Several targets at once: each lands in its own directory, each disk
/// equals the raw restore, and the datastore is read once for all of
/// them (a raw copy outruns a compressed VMDK; the shared reads hold the
/// chunks for the slower writers). 40 chunks of data, more than the
/// disk's own cache of decoded chunks, so only sharing keeps it one read.
#[test]
fn several_targets_are_written_from_one_read() {
    require_root();
    let t = scratch("convert-multi");
    let size: u64 = 160 << 20;
    let disk = t.path().join("big.raw");
    std::fs::write(&disk, Rng::new(21).bytes(size as usize)).unwrap();
    let ds = Ds::init(t.path().join("ds"));
    let snap = back_up_ide(&ds, &disk, "convert-multi", &t.path().join("q"), "256");

    let single = t.path().join("single");
    let o = restore_for(&ds, &snap, &single, &["--target", "kvm:raw", "--no-repair"]);
    o.expect_ok();
    let one = o.json()["chunks_read"].as_u64().unwrap();
    assert!(one >= 40, "a full read decodes every chunk: {one}");
    let id = o.json()["files"].as_array().unwrap().iter().find_map(|f| f.as_str().unwrap().strip_suffix(".raw").map(String::from)).unwrap();
    let reference = single.join(format!("{id}.raw"));
    assert!(identical(&reference, "raw", &disk).0, "the raw restore is not the disk backed up");

    let multi = t.path().join("multi");
    let o = restore_for(&ds, &snap, &multi, &["--target", "kvm", "--target", "vmware", "--target", "hyperv", "--target", "kvm:raw", "--no-repair"]);
    o.expect_ok();
    let r = o.json();
    let list = r.as_array().expect("a list of reports with several targets");
    assert_eq!(list.len(), 4, "{r}");
    assert_same(&multi.join("kvm-qcow2").join(format!("{id}.qcow2")), "qcow2", &reference);
    assert_same(&multi.join("kvm-raw").join(format!("{id}.raw")), "raw", &reference);
    assert_same(&multi.join("hyperv").join(format!("{id}.vhdx")), "vhdx", &reference);
    let x = t.path().join("ova-x");
    std::fs::create_dir_all(&x).unwrap();
    run_ok(Command::new("tar").arg("-xf").arg(multi.join("vmware/vm.ova")).arg("-C").arg(&x));
    assert_same(&x.join(format!("{id}.vmdk")), "vmdk", &reference);
    for d in ["kvm-qcow2", "kvm-raw"] {
        assert!(multi.join(d).join("domain.xml").is_file(), "{d} has no domain.xml");
    }
    let both = list[0]["chunks_read"].as_u64().unwrap();
    eprintln!("chunks decoded: {one} for one target, {both} for four");
    // Four readers without sharing decode about four times as much.
    assert!(both * 10 <= one * 12, "four targets decoded {both} chunks against {one} for one: the reads were not shared");

    // A bad target among good ones: refused before anything is written.
    let o = restore_for(&ds, &snap, &t.path().join("bad"), &["--target", "kvm", "--target", "hyperv:qcow2", "--no-repair"]);
    assert!(!o.ok() && o.stderr.contains("Hyper-V reads VHDX"), "{}", o.stderr);
    assert!(!t.path().join("bad/kvm").join(format!("{id}.qcow2")).exists());
    let o = restore_for(&ds, &snap, &t.path().join("bad"), &["--target", "kvm", "--target", "kvm:qcow2", "--no-repair"]);
    assert!(!o.ok() && o.stderr.contains("named twice"), "{}", o.stderr);
}

// ------------------------------------------------------------ the proof

/// A network namespace with a bridge holding `addr` and a tap on it.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(addr: &str) -> NetNs {
        let name = format!("lbconv-{}", std::process::id());
        let _ = tool("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        run_ok(tool("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        for a in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", "br0", "type", "bridge"],
            vec!["addr", "add", addr, "dev", "br0"],
            vec!["link", "set", "br0", "up"],
            vec!["tuntap", "add", "dev", "tap0", "mode", "tap"],
            vec!["link", "set", "tap0", "master", "br0"],
            vec!["link", "set", "tap0", "up"],
        ] {
            run_ok(tool("ip").arg("-n").arg(&ns.name).args(&a));
        }
        ns
    }

    fn ping(&self, ip: &str) -> bool {
        tool("ip").args(["netns", "exec", &self.name, "ping", "-c", "1", "-W", "1", ip]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = tool("ip").args(["netns", "del", &self.name]).status();
    }
}

/// The first heartbeat line within `timeout`, if any.
fn heartbeat(vm: &mut Vm, timeout: Duration) -> Option<String> {
    let sock = vm.sock("heartbeat.sock");
    let run = vm.run.clone();
    heartbeat_on(&sock, timeout, || vm.child.running(), || console_of(&run.join("serial.log")))
}

fn console_of(serial: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(serial).unwrap_or_default()).into_owned()
}

/// The first heartbeat line on the socket `sock` within `timeout`, while
/// `alive`; None as soon as the console shows the initramfs gave up.
fn heartbeat_on(sock: &Path, timeout: Duration, mut alive: impl FnMut() -> bool, console: impl Fn() -> String) -> Option<String> {
    let mut hb = Lines::connect(sock, Duration::from_secs(10));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && alive() {
        if let Some(l) = hb.line(Duration::from_secs(2)) {
            if l.starts_with("heartbeat ") {
                return Some(l);
            }
        }
        // The initramfs gave up: no need to wait out the timeout.
        if console().contains("ALERT!") {
            return None;
        }
    }
    None
}

/// The guest's interfaces as qemu-guest-agent on `sock` reports them
/// (`guest-network-get-interfaces`), once it answers guest-sync.
fn guest_interfaces(sock: &Path, timeout: Duration) -> Value {
    let mut qga = Lines::connect(sock, Duration::from_secs(10));
    let deadline = Instant::now() + timeout;
    let mut id = 4200u64;
    let mut synced = false;
    while !synced && Instant::now() < deadline {
        id += 1;
        qga.send(&serde_json::json!({"execute": "guest-sync", "arguments": {"id": id}}).to_string());
        let until = Instant::now() + Duration::from_secs(5);
        while let Some(l) = qga.line(until.saturating_duration_since(Instant::now())) {
            if serde_json::from_str::<Value>(&l).is_ok_and(|v| v["return"].as_u64() == Some(id)) {
                synced = true;
                break;
            }
        }
    }
    assert!(synced, "qemu-guest-agent on {} did not answer guest-sync within {timeout:?}", sock.display());
    qga.send(r#"{"execute": "guest-network-get-interfaces"}"#);
    let l = qga.line(Duration::from_secs(30)).expect("no answer to guest-network-get-interfaces");
    let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad qga line {l:?}: {e}"));
    v.get("return").cloned().unwrap_or_else(|| panic!("guest-network-get-interfaces failed: {l}"))
}

/// The guest's network came up on `lan0`, the name its .link file gives
/// the NIC with `mac`: `lan0` has that MAC and 10.0.2.15, and no other
/// interface holds the address.
#[track_caller]
fn assert_lan0_on(ifs: &Value, mac: &str) {
    let list = ifs.as_array().unwrap_or_else(|| panic!("{ifs}"));
    let lan0 = list.iter().find(|i| i["name"] == "lan0").unwrap_or_else(|| panic!("no lan0 in the guest (its .link file did not match MAC {mac}): {ifs}"));
    assert!(lan0["hardware-address"].as_str().is_some_and(|m| m.eq_ignore_ascii_case(mac)), "lan0 has another MAC than {mac}: {ifs}");
    assert!(lan0["ip-addresses"].as_array().into_iter().flatten().any(|a| a["ip-address"] == "10.0.2.15"), "lan0 lacks 10.0.2.15: {ifs}");
}

/// `path: sha256` of every file in the datastore but its tmp/.
fn datastore_digest(ds: &Path) -> String {
    run_ok(Command::new("sh").arg("-c").arg("cd \"$1\" && find . -path ./tmp -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum").arg("sh").arg(ds))
}

#[test]
fn an_ide_guest_restored_for_kvm_boots_on_virtio_only_when_repaired() {
    require_root();
    let t = scratch("convert-proof");
    let disk = build_guest("debian-ide", t.path());
    let ds = Ds::init(t.path().join("ds"));
    let snap = back_up_ide(&ds, &disk, "legacy-db", &t.path().join("q"), "1024");
    std::fs::remove_file(&disk).unwrap();
    let ns = NetNs::new("10.0.2.2/24");

    // Unrepaired: the kernel looks for /dev/sda1, virtio-blk makes vda,
    // and the IDE-only initramfs has no virtio driver anyway.
    let bare = t.path().join("bare");
    let o = restore_for(&ds, &snap, &bare, &["--target", "kvm", "--no-repair", "--map", "mac=new"]);
    o.expect_ok();
    let conv: Value = serde_json::from_slice(&std::fs::read(bare.join("vm.json")).unwrap()).unwrap();
    let id = conv["disks"][0]["id"].as_str().unwrap().to_string();
    let mac = conv["nics"][0]["mac"].as_str().unwrap().to_string();
    // The hardware run-tiny.sh gives it is the converted document's.
    assert_eq!(
        (conv["disks"][0]["bus"].as_str(), conv["nics"][0]["model"].as_str(), conv["machine"].as_str(), conv["firmware"].as_str()),
        (Some("virtio"), Some("virtio-net-pci"), Some("pc"), Some("bios")),
        "{conv}"
    );
    let env = |mac: &str| vec![("GUEST_MEM", "1024".to_string()), ("GUEST_DISK_FORMAT", "qcow2".into()), ("GUEST_NET", "tap:tap0".into()), ("GUEST_MAC", mac.to_string())];
    let t0 = Instant::now();
    let e = env(&mac);
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut vm = Vm::boot(&bare.join(format!("{id}.qcow2")), &t.path().join("run-bare"), &e, Some(&ns.name));
    let beat = heartbeat(&mut vm, Duration::from_secs(150));
    let console = vm.console();
    assert!(beat.is_none(), "the unrepaired guest came up ({beat:?}): the negative proves nothing\n{console}");
    assert!(console.contains("ALERT!") && console.contains("/dev/sda1 does not exist"), "the unrepaired guest failed for another reason than its root:\n{console}");
    assert!(!ns.ping("10.0.2.15"), "the unrepaired guest answers ping");
    eprintln!("--no-repair: stuck in the initramfs after {:.0} s ({})", t0.elapsed().as_secs_f64(), console.lines().find(|l| l.contains("ALERT!")).unwrap_or("").trim());
    drop(vm);
    std::fs::remove_dir_all(&bare).unwrap();

    // Repaired: root and fstab by UUID, virtio drivers in the initramfs,
    // the NIC's .link file on the new MAC.
    let fixed = t.path().join("fixed");
    let t1 = Instant::now();
    let o = restore_for(&ds, &snap, &fixed, &["--target", "kvm", "--map", "mac=new"]);
    o.expect_ok();
    let r = o.json();
    eprintln!("restore with repair: {:.0} s\n{}", t1.elapsed().as_secs_f64(), serde_json::to_string_pretty(&r["repair"]).unwrap());
    let conv: Value = serde_json::from_slice(&std::fs::read(fixed.join("vm.json")).unwrap()).unwrap();
    let mac = conv["nics"][0]["mac"].as_str().unwrap().to_string();
    assert!(mac.starts_with("52:54:00:") && mac != LEGACY_MAC, "mac=new gives a fresh MAC: {mac}");
    assert_eq!((r["macs"]["net0"][0].as_str(), r["macs"]["net0"][1].as_str()), (Some(LEGACY_MAC), Some(mac.as_str())), "{r}");
    let steps = r["repair"]["steps"].as_array().unwrap();
    let step = |n: &str| steps.iter().find(|s| s["step"] == n).unwrap_or_else(|| panic!("no step {n}: {r}"));
    assert_eq!(step("fstab")["outcome"], "changed", "{r}");
    assert!(step("fstab")["details"][0].as_str().unwrap().contains("/dev/sda1 -> UUID=11feb0a7-0000-4000-8000-000000000002"), "{r}");
    assert_eq!(step("bootloader")["outcome"], "changed", "{r}");
    assert_eq!(step("network")["outcome"], "changed", "{r}");
    let net = step("network")["details"].to_string();
    assert!(net.contains(&format!("/etc/systemd/network/10-lan0.link: MAC {LEGACY_MAC} -> {mac}")), "the network step did not move lan0's .link file to the new MAC: {r}");
    assert!(net.contains(&format!("interface lan0 pinned to MAC {mac}")), "{r}");
    assert_eq!(step("initramfs")["outcome"], "changed", "{r}");
    assert!(step("initramfs")["details"].to_string().contains("holds virtio_pci, virtio_blk, virtio_net"), "{r}");
    // The report is in the output directory too.
    let saved: Value = serde_json::from_slice(&std::fs::read(fixed.join("restore-report.json")).unwrap()).unwrap();
    assert_eq!(saved["repair"]["steps"], r["repair"]["steps"]);
    assert_eq!(saved["source"]["disks"][0]["bus"], "ide");
    let img = fixed.join(format!("{id}.qcow2"));
    qemu_img_check(&img, "qcow2");
    let t2 = Instant::now();
    let e = env(&mac);
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut vm = Vm::boot(&img, &t.path().join("run-fixed"), &e, Some(&ns.name));
    let beat = heartbeat(&mut vm, Duration::from_secs(240));
    assert!(beat.is_some(), "the repaired guest sent no heartbeat\n{}", vm.console());
    let pinged = wait_until(Duration::from_secs(120), || ns.ping("10.0.2.15"));
    assert!(pinged, "the repaired guest does not answer ping on its new NIC ({mac})\n{}", vm.console());
    assert_lan0_on(&guest_interfaces(&vm.sock("qga.sock"), Duration::from_secs(60)), &mac);
    eprintln!("repaired guest: heartbeat, ping and lan0 after {:.0} s on virtio-blk + virtio-net ({mac})", t2.elapsed().as_secs_f64());
    drop(vm);

    // Instant restore with the same mapping: repaired inside the
    // overlays, booted straight from the snapshot on virtio with its NIC
    // on the namespace's tap; heartbeat and ping on the new MAC, and the
    // datastore is not written (every file as before, byte for byte).
    let before = datastore_digest(&ds.path);
    let work = t.path().join("instant");
    let (hb_sock, qga_sock) = (work.join("hb.sock"), work.join("qga.sock"));
    let t3 = Instant::now();
    let mut c = tool("ip");
    c.args(["netns", "exec", &ns.name]).arg(bin()).stdin(Stdio::null()).env_remove("LIFEBOAT_DATASTORE").env_remove("LIFEBOAT_FAILPOINTS");
    c.args(["vm", "instant-restore", "--datastore"]).arg(&ds.path).arg(&snap).args(["--target", "kvm", "--map", "mac=new", "--net", "tap:tap0", "--accel", "tcg", "--workdir"]).arg(&work);
    for a in serial_port_args(&[("hb", &hb_sock, "org.lifeboat.heartbeat"), ("qga", &qga_sock, "org.qemu.guest_agent.0")]) {
        c.arg(format!("--qemu-arg={a}"));
    }
    let mut inst = ChildGuard::spawn(c);
    let serial = work.join("serial.log");
    // The repair runs before QEMU starts and makes the sockets.
    let started = wait_until(Duration::from_secs(420), || hb_sock.exists() || !inst.running());
    if !inst.running() {
        panic!("instant-restore --target kvm stopped before its VM ran: {}", inst.wait());
    }
    assert!(started, "the instant VM mapped for kvm did not start within 420 s");
    let repaired_after = t3.elapsed();
    let beat = heartbeat_on(&hb_sock, Duration::from_secs(300), || inst.running(), || console_of(&serial));
    assert!(beat.is_some(), "the instant VM mapped for kvm sent no heartbeat\n{}", console_of(&serial));
    let pinged = wait_until(Duration::from_secs(120), || ns.ping("10.0.2.15"));
    assert!(pinged, "the instant VM does not answer ping on its new NIC\n{}", console_of(&serial));
    // The NIC QEMU runs: virtio-net with a new MAC, which lan0 has.
    let mut q = Qmp::connect(&work.join("qmp.sock"));
    let model = q.cmd("qom-get", serde_json::json!({"path": "/machine/peripheral/net0", "property": "type"}));
    let imac = q.cmd("qom-get", serde_json::json!({"path": "/machine/peripheral/net0", "property": "mac"})).as_str().unwrap().to_string();
    drop(q); // one QMP client at a time: instant-restore asks when stopped
    assert_eq!(model.as_str(), Some("virtio-net-pci"));
    assert!(imac.starts_with("52:54:00:") && imac != LEGACY_MAC, "{imac}");
    assert_lan0_on(&guest_interfaces(&qga_sock, Duration::from_secs(60)), &imac);
    eprintln!("instant restore for kvm: repaired in the overlays after {:.0} s; heartbeat, ping and lan0 on {imac} after {:.0} s", repaired_after.as_secs_f64(), t3.elapsed().as_secs_f64());
    inst.signal(libc::SIGINT);
    let o = inst.wait();
    assert_eq!(o.code(), Some(0), "{o}");
    assert!(o.stdout.contains("guest repaired in its overlays"), "{o}");
    assert!(o.stdout.contains(&format!("NIC net0: MAC {LEGACY_MAC} -> {imac}")), "{o}");
    assert!(o.stderr.contains(&format!("/etc/systemd/network/10-lan0.link: MAC {LEGACY_MAC} -> {imac}")), "the repair log names no MAC change of lan0's .link file: {o}");
    assert!(!console_of(&serial).contains("ALERT!"));
    assert_eq!(datastore_digest(&ds.path), before, "the instant restore's repair changed the datastore");
    ds.assert_check_clean();
}
