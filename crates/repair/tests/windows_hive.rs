//! The Windows repair's hive edit on a synthetic SYSTEM hive (a Windows
//! guest leaving VMware for KVM), read back with hivex's own tools.

use lifeboat_repair::windows::{repair_system_hive, windows_drivers, windows_platform_services};
use std::path::{Path, PathBuf};
use std::process::Command;

fn merge(hive: &Path, reg: &str) {
    let f = hive.with_extension("reg");
    std::fs::write(&f, format!("Windows Registry Editor Version 5.00\n\n{reg}")).unwrap();
    let o = Command::new("hivexregedit").args(["--merge", "--prefix", "HKEY_LOCAL_MACHINE\\SYSTEM"]).arg(hive).arg(&f).output().unwrap();
    assert!(o.status.success(), "hivexregedit: {}", String::from_utf8_lossy(&o.stderr));
}

fn get(hive: &Path, key: &str, value: &str) -> Option<String> {
    let o = Command::new("hivexget").arg(hive).arg(key).arg(value).output().unwrap();
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// A SYSTEM hive as a Windows guest on VMware has it: the current
/// control set is 002 (001 is the last-known-good copy), VMware Tools
/// and the pvscsi boot driver installed, Hyper-V's inbox services on
/// demand start.
fn vmware_system_hive(dir: &Path) -> PathBuf {
    let hive = dir.join("SYSTEM");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minimal.hive"), &hive).unwrap();
    let mut reg = String::from("[HKEY_LOCAL_MACHINE\\SYSTEM\\Select]\n\"Current\"=dword:00000002\n\"LastKnownGood\"=dword:00000001\n\n");
    for cs in ["ControlSet001", "ControlSet002"] {
        let k = format!("HKEY_LOCAL_MACHINE\\SYSTEM\\{cs}");
        reg += &format!("[{k}]\n\n[{k}\\Control]\n\n[{k}\\Control\\CriticalDeviceDatabase]\n\n[{k}\\Services]\n\n");
        reg += &format!("[{k}\\Services\\pvscsi]\n\"Start\"=dword:00000000\n\"Type\"=dword:00000001\n\n");
        reg += &format!("[{k}\\Services\\VMTools]\n\"Start\"=dword:00000002\n\"DisplayName\"=\"VMware Tools\"\n\n");
        reg += &format!("[{k}\\Services\\vmicheartbeat]\n\"Start\"=dword:00000003\n\n");
    }
    merge(&hive, &reg);
    hive
}

#[test]
fn a_vmware_guest_is_made_to_boot_from_virtio() {
    let t = tempfile::tempdir().unwrap();
    let hive = vmware_system_hive(t.path());
    let drivers = windows_drivers(&["virtio_blk".into(), "virtio_net".into()]);
    let details = repair_system_hive(&hive, &drivers, &windows_platform_services("kvm")).unwrap();
    let cs = "\\ControlSet002";
    // The boot driver starts at boot, with what the loader needs.
    assert_eq!(get(&hive, &format!("{cs}\\Services\\viostor"), "Start").as_deref(), Some("0"), "{details:?}");
    assert_eq!(get(&hive, &format!("{cs}\\Services\\viostor"), "Type").as_deref(), Some("1"));
    assert_eq!(get(&hive, &format!("{cs}\\Services\\viostor"), "Group").as_deref(), Some("SCSI miniport"));
    assert!(get(&hive, &format!("{cs}\\Services\\viostor"), "ImagePath").is_some_and(|p| p.contains("drivers\\viostor.sys")));
    // ... bound to both virtio-blk PCI ids before Plug and Play runs.
    for dev in ["pci#ven_1af4&dev_1001", "pci#ven_1af4&dev_1042"] {
        let k = format!("{cs}\\Control\\CriticalDeviceDatabase\\{dev}");
        assert_eq!(get(&hive, &k, "Service").as_deref(), Some("viostor"), "{k}");
        assert_eq!(get(&hive, &k, "ClassGUID").as_deref(), Some("{4D36E97B-E325-11CE-BFC1-08002BE10318}"));
    }
    // The NIC driver loads on demand.
    assert_eq!(get(&hive, &format!("{cs}\\Services\\netkvm"), "Start").as_deref(), Some("3"));
    // VMware's and Hyper-V's services are off; values beside Start stay.
    assert_eq!(get(&hive, &format!("{cs}\\Services\\VMTools"), "Start").as_deref(), Some("4"));
    assert_eq!(get(&hive, &format!("{cs}\\Services\\VMTools"), "DisplayName").as_deref(), Some("VMware Tools"));
    assert_eq!(get(&hive, &format!("{cs}\\Services\\vmicheartbeat"), "Start").as_deref(), Some("4"));
    // Services the guest never had are not invented.
    assert_eq!(get(&hive, &format!("{cs}\\Services\\vm3dservice"), "Start"), None);
    // The old boot driver is left as it was (harmless without its device).
    assert_eq!(get(&hive, &format!("{cs}\\Services\\pvscsi"), "Start").as_deref(), Some("0"));
    // The other control set is untouched.
    assert_eq!(get(&hive, "\\ControlSet001\\Services\\viostor", "Start"), None);
    assert_eq!(get(&hive, "\\ControlSet001\\Services\\VMTools", "Start").as_deref(), Some("2"));
    assert!(details.iter().any(|d| d.contains("VMTools: Start=4")), "{details:?}");
}

#[test]
fn a_hive_that_is_not_a_system_hive_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let hive = t.path().join("SOFTWARE");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minimal.hive"), &hive).unwrap();
    let e = repair_system_hive(&hive, &windows_drivers(&["virtio_blk".into()]), &[]).unwrap_err();
    assert!(e.contains("not a SYSTEM hive"), "{e}");
    let garbage = t.path().join("garbage");
    std::fs::write(&garbage, b"not a hive at all").unwrap();
    assert!(repair_system_hive(&garbage, &[], &[]).is_err());
}
