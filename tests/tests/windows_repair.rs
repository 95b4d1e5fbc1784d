//! Windows guest repair end to end, on a phony Windows disk (no Windows
//! image exists here): MBR + NTFS with the SOFTWARE and SYSTEM hives and
//! the directories libguestfs' inspection looks for, as libguestfs' own
//! test suite makes one. The disk is imported as a VM (`vm import`),
//! then restored for KVM:
//! - without a driver source the repair fails loudly (the guest has no
//!   viostor.sys, so it could not find its boot disk) and nothing is
//!   written;
//! - with a virtio-win-shaped driver directory, viostor.sys for the
//!   guest's version is injected, the SYSTEM hive's current control set
//!   boot-starts viostor bound to the virtio-blk PCI ids, and VMware's
//!   services are disabled, read back from the restored disk with
//!   ntfs-3g and hivex;
//! - two targets at once (kvm and hyperv) are repaired side by side,
//!   each its own way;
//! - a vm-restore job and a vm-instant-restore job for kvm through the
//!   daemon take the same driver tree from the `windows_drivers` setting.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn hive(dir: &Path, name: &str, reg: &str, prefix: &str) -> PathBuf {
    let h = dir.join(name);
    std::fs::copy(workspace().join("crates/repair/tests/data/minimal.hive"), &h).unwrap();
    let f = dir.join(format!("{name}.reg"));
    std::fs::write(&f, format!("Windows Registry Editor Version 5.00\n\n{reg}")).unwrap();
    ok(Command::new("hivexregedit").args(["--merge", "--prefix", prefix]).arg(&h).arg(&f));
    h
}

/// The first partition of a raw disk on a loop device, mounted with
/// ntfs-3g (read-only unless `rw`); undone on drop.
struct NtfsMount {
    dev: String,
    dir: PathBuf,
}

impl NtfsMount {
    fn new(disk: &Path, dir: &Path, rw: bool, mkfs: bool) -> NtfsMount {
        std::fs::create_dir_all(dir).unwrap();
        let mut c = Command::new("losetup");
        c.args(["-f", "--show", "-o", "1048576"]);
        if !rw {
            c.arg("-r");
        }
        let dev = ok(c.arg(disk));
        if mkfs {
            ok(Command::new("mkntfs").args(["-Q", "-q", "-L", "phony-windows"]).arg(&dev));
        }
        let m = NtfsMount { dev, dir: dir.to_path_buf() };
        ok(Command::new("ntfs-3g").args(["-o", if rw { "rw" } else { "ro" }]).arg(&m.dev).arg(dir));
        m
    }
}

impl Drop for NtfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A Windows Server 2019 that ran on VMware, as far as inspection and
/// repair look: NTFS, hives, cmd.exe, Program Files.
fn phony_windows(dir: &Path) -> PathBuf {
    let disk = dir.join("windows.raw");
    std::fs::File::create(&disk).unwrap().set_len(128 << 20).unwrap();
    let mut sf = Command::new("sfdisk");
    sf.arg("--quiet").arg(&disk).stdin(std::process::Stdio::piped());
    let mut child = sf.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"label: dos\nstart=2048, type=7, bootable\n").unwrap();
    assert!(child.wait().unwrap().success());

    let software = hive(
        dir,
        "SOFTWARE",
        "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft]\n\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT]\n\n\
         [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion]\n\"ProductName\"=str(1):\"Windows Server 2019 Standard\"\n\
         \"CurrentVersion\"=str(1):\"6.3\"\n\"CurrentMajorVersionNumber\"=dword:0000000a\n\"CurrentMinorVersionNumber\"=dword:00000000\n\
         \"InstallationType\"=str(1):\"Server\"\n\n",
        "HKEY_LOCAL_MACHINE\\SOFTWARE",
    );
    let k = "HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001";
    let system = hive(
        dir,
        "SYSTEM",
        &format!(
            "[HKEY_LOCAL_MACHINE\\SYSTEM\\Select]\n\"Current\"=dword:00000001\n\"Default\"=dword:00000001\n\n[{k}]\n\n[{k}\\Control]\n\n\
             [{k}\\Control\\CriticalDeviceDatabase]\n\n[{k}\\Services]\n\n[{k}\\Services\\pvscsi]\n\"Start\"=dword:00000000\n\"Type\"=dword:00000001\n\n\
             [{k}\\Services\\VMTools]\n\"Start\"=dword:00000002\n\n[{k}\\Services\\Tcpip]\n\n[{k}\\Services\\Tcpip\\Parameters]\n\"Hostname\"=str(1):\"APP01\"\n\n"
        ),
        "HKEY_LOCAL_MACHINE\\SYSTEM",
    );
    let m = NtfsMount::new(&disk, &dir.join("mnt"), true, true);
    let sys32 = m.dir.join("Windows/System32");
    std::fs::create_dir_all(sys32.join("config")).unwrap();
    std::fs::create_dir_all(sys32.join("drivers")).unwrap();
    std::fs::create_dir_all(m.dir.join("Program Files")).unwrap();
    std::fs::copy(&software, sys32.join("config/SOFTWARE")).unwrap();
    std::fs::copy(&system, sys32.join("config/SYSTEM")).unwrap();
    std::fs::write(sys32.join("cmd.exe"), phony_pe()).unwrap();
    std::fs::write(sys32.join("drivers/pvscsi.sys"), b"vmware pvscsi").unwrap();
    drop(m);
    disk
}

/// The headers of an x86-64 console program (PE32+), no code: inspection
/// reads the guest's architecture from cmd.exe.
fn phony_pe() -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    b[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes()); // machine: x86-64
    b[0x94..0x96].copy_from_slice(&0xf0u16.to_le_bytes()); // optional header size
    b[0x96..0x98].copy_from_slice(&0x22u16.to_le_bytes()); // executable, large-address aware
    b[0x98..0x9a].copy_from_slice(&0x20bu16.to_le_bytes()); // PE32+
    b[0x98 + 68..0x98 + 70].copy_from_slice(&3u16.to_le_bytes()); // console subsystem
    b
}

fn hivexget(hive: &Path, key: &str, value: &str) -> Option<String> {
    let o = Command::new("hivexget").arg(hive).arg(key).arg(value).output().unwrap();
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

#[test]
fn a_windows_guest_from_vmware_is_repaired_for_kvm() {
    require_root();
    let t = scratch("windows-repair");
    let disk = phony_windows(t.path());
    let ds = Ds::init(t.path().join("ds"));
    let mut c = lb_cmd();
    c.args(["vm", "import", "--datastore"]).arg(&ds.path).args(["--json", "--name", "app01"]).arg(&disk);
    let o = run_cmd(c);
    o.expect_ok();
    let snap = o.json()["snapshot_id"].as_str().unwrap().to_string();

    let restore = |out: &Path, extra: &[&str]| {
        let mut c = lb_cmd();
        c.args(["vm", "restore", "--datastore"]).arg(&ds.path).arg(&snap).args(["--target", "kvm", "--format", "raw", "--json"]).args(extra).arg(out);
        run_cmd(c)
    };
    // No driver source: Windows has no virtio driver of its own.
    let o = restore(&t.path().join("no-drivers"), &[]);
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("viostor.sys") && o.stderr.contains("driver source"), "{o}");
    assert!(!t.path().join("no-drivers/disk0.raw").exists(), "a failed repair left a disk behind");

    // A driver tree shaped like the virtio-win ISO.
    let vw = t.path().join("virtio-win");
    for (os, body) in [("2k19", "viostor for 2019"), ("w10", "viostor for w10"), ("2k16", "viostor for 2016")] {
        write_file(&vw.join(format!("viostor/{os}/amd64/viostor.sys")), body.as_bytes());
    }
    write_file(&vw.join("NetKVM/2k19/amd64/netkvm.sys"), b"netkvm for 2019");
    let out = t.path().join("kvm");
    let o = restore(&out, &["--drivers", vw.to_str().unwrap()]);
    o.expect_ok();
    let rep = o.json();
    let steps = rep["repair"]["steps"].as_array().unwrap();
    assert!(rep["repair"]["os"].as_str().unwrap().contains("windows"), "{rep:#}");
    assert!(steps.iter().any(|s| s["step"] == "drivers" && s["outcome"] == "changed"), "{rep:#}");
    assert!(steps.iter().any(|s| s["step"] == "registry" && s["outcome"] == "changed"), "{rep:#}");

    // Read the result back from the restored disk.
    let m = NtfsMount::new(&out.join("disk0.raw"), &t.path().join("check"), false, false);
    let drivers = m.dir.join("Windows/System32/drivers");
    assert_eq!(std::fs::read_to_string(drivers.join("viostor.sys")).unwrap(), "viostor for 2019");
    assert_eq!(std::fs::read_to_string(drivers.join("netkvm.sys")).unwrap(), "netkvm for 2019");
    let system = m.dir.join("Windows/System32/config/SYSTEM");
    assert_eq!(hivexget(&system, "\\ControlSet001\\Services\\viostor", "Start").as_deref(), Some("0"));
    assert_eq!(hivexget(&system, "\\ControlSet001\\Control\\CriticalDeviceDatabase\\pci#ven_1af4&dev_1001", "Service").as_deref(), Some("viostor"));
    assert_eq!(hivexget(&system, "\\ControlSet001\\Services\\VMTools", "Start").as_deref(), Some("4"));
    assert_eq!(hivexget(&system, "\\ControlSet001\\Services\\Tcpip\\Parameters", "Hostname").as_deref(), Some("APP01"));
    drop(m);
    // The backup itself was never written: repair works on an overlay.
    ds.assert_check_clean();
    let again = t.path().join("plain");
    let mut c = lb_cmd();
    c.args(["vm", "restore", "--datastore"]).arg(&ds.path).arg(&snap).arg(&again);
    run_cmd(c).expect_ok();
    let o = Command::new("cmp").arg(again.join("disk0.raw")).arg(&disk).output().unwrap();
    assert!(o.status.success(), "the snapshot changed: {}", String::from_utf8_lossy(&o.stdout));

    // Two targets at once: their repairs run side by side, each on its
    // own overlay (virtio drivers for kvm, Hyper-V's in-box ones).
    let both = t.path().join("both");
    let mut c = lb_cmd();
    c.args(["vm", "restore", "--datastore"]).arg(&ds.path).arg(&snap).args(["--target", "kvm:raw", "--target", "hyperv", "--json", "--drivers", vw.to_str().unwrap()]).arg(&both);
    let o = run_cmd(c);
    o.expect_ok();
    let reps = o.json();
    let reps = reps.as_array().expect("one report per target");
    let step = |r: &serde_json::Value, name: &str| r["repair"]["steps"].as_array().unwrap().iter().find(|s| s["step"] == name).map(|s| s["outcome"].clone());
    assert_eq!(step(&reps[0], "drivers"), Some("changed".into()), "{reps:#?}");
    assert_eq!(step(&reps[1], "drivers"), Some("unchanged".into()), "Hyper-V's drivers ship with Windows: {reps:#?}");
    assert_eq!(step(&reps[1], "registry"), Some("changed".into()), "{reps:#?}");
    let m = NtfsMount::new(&both.join("kvm/disk0.raw"), &t.path().join("check-both"), false, false);
    assert_eq!(hivexget(&m.dir.join("Windows/System32/config/SYSTEM"), "\\ControlSet001\\Services\\viostor", "Start").as_deref(), Some("0"));
    drop(m);
    let v = Command::new("qemu-img").args(["info", "--output=json"]).arg(both.join("hyperv/disk0.vhdx")).output().unwrap();
    assert!(v.status.success() && String::from_utf8_lossy(&v.stdout).contains("\"vhdx\""), "{}", String::from_utf8_lossy(&v.stderr));

    // A vm-restore job takes its driver source from the daemon's
    // `windows_drivers` setting.
    let cfg = format!("windows_drivers = {:?}\n\n[[datastore]]\nname = \"win\"\npath = {:?}\n", vw.display().to_string(), ds.path.display().to_string());
    let d = common::daemon::Daemon::start(&t.path().join("state"), Some(&cfg), &[]);
    let out = t.path().join("by-job");
    let j = d.admin_ok("POST", "/api/jobs", Some(&serde_json::json!({ "kind": "vm-restore", "datastore": "win", "snapshot": snap, "target": out, "platform": "kvm:raw" })));
    let j = d.wait_job(j["id"].as_str().unwrap(), std::time::Duration::from_secs(600));
    assert_eq!(j["state"], "succeeded", "{j:#}");
    let m = NtfsMount::new(&out.join("disk0.raw"), &t.path().join("check-job"), false, false);
    assert_eq!(std::fs::read_to_string(m.dir.join("Windows/System32/drivers/viostor.sys")).unwrap(), "viostor for 2019");
    drop(m);
    // So does a vm-instant-restore job for kvm (repaired in its overlays;
    // without a driver source its repair fails as the first restore above
    // did). Paused: the phony disk boots nothing.
    let j = d.admin_ok("POST", "/api/jobs", Some(&serde_json::json!({ "kind": "vm-instant-restore", "datastore": "win", "snapshot": snap, "name": "win-kvm", "platform": "kvm", "paused": true })));
    let j = d.wait_job(j["id"].as_str().unwrap(), std::time::Duration::from_secs(600));
    assert_eq!(j["state"], "succeeded", "{j:#}");
    let steps = j["result"]["target"]["repair"]["steps"].as_array().unwrap_or_else(|| panic!("no repair report: {j:#}")).clone();
    let drivers = steps.iter().find(|s| s["step"] == "drivers").unwrap_or_else(|| panic!("no drivers step: {j:#}"));
    assert_eq!(drivers["outcome"], "changed", "{j:#}");
    let from = format!("viostor.sys: from {}", vw.join("viostor/2k19/amd64/viostor.sys").display());
    assert!(drivers["details"].as_array().unwrap().iter().any(|l| l.as_str().is_some_and(|l| l.contains(&from))), "the instant job did not take viostor.sys from windows_drivers: {j:#}");
    assert_eq!(d.call("DELETE", "/api/vms/win-kvm", Some(&d.admin), None).status, 204);
    d.stop();
}
