//! Windows repair, as far as offline tools go: the SYSTEM hive is edited
//! with hivex (`hivexregedit --merge`, `hivexget`) so the target's storage
//! driver starts at boot and is bound to its controller before Plug and
//! Play runs, and the old platform's services stay off.
//!
//! Steps (each a [`Step`](crate::Step) of the report):
//! 1. `drivers`: the target's driver files (`<file>.sys`: `viostor.sys`,
//!    `vioscsi.sys`, `netkvm.sys`, `pvscsi.sys` ...) are copied into
//!    `Windows\System32\drivers` from the driver source the admin gave
//!    (a virtio-win ISO or a directory, searched for the file by name),
//!    unless Windows has them already (`storahci`, `stornvme`, `storvsc`,
//!    `netvsc` and the IDE drivers ship with it). A boot driver that is
//!    neither there nor in a source fails the repair: the guest could
//!    not find its disk.
//! 2. `registry`: in the current control set, each storage driver's
//!    service gets `Start=0` (boot) with its type, group and image path,
//!    and `CriticalDeviceDatabase` maps the controller's PCI ids to it;
//!    NIC drivers get a service entry; the old platforms' guest services
//!    get `Start=4` (disabled).
//!
//! The hive edit is a function of its own ([`repair_system_hive`]) so it
//! is tested on a synthetic hive; no Windows image exists here.

use crate::guestfish::Guestfish;
use crate::{run_step, Outcome, RepairPlan, RepairReport};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const SCSI_ADAPTER: &str = "{4D36E97B-E325-11CE-BFC1-08002BE10318}";
const HDC: &str = "{4D36E96A-E325-11CE-BFC1-08002BE10318}";

/// A Windows driver for hardware the target gives the guest.
#[derive(Debug, PartialEq, Eq)]
pub struct WindowsDriver {
    /// The service name (its key under `Services`).
    pub service: &'static str,
    /// Starts at boot: a storage driver the boot disk needs.
    pub boot: bool,
    /// Windows ships it (no file to inject).
    pub inbox: bool,
    /// The service's load order group (`SCSI miniport`, `NDIS`, ...),
    /// written as its `Group` value.
    pub group: &'static str,
    /// The driver binary in `system32\drivers`, without `.sys`: the
    /// service's name but for VMware's NIC (service `vmxnet3ndis6`,
    /// file `vmxnet3.sys`).
    pub file: &'static str,
    /// CriticalDeviceDatabase keys (PCI ids) bound to it.
    pub devices: &'static [&'static str],
    /// Device setup class GUID written as `ClassGUID` with each
    /// `devices` key (SCSI adapter or IDE controller); empty for NICs,
    /// which get no CriticalDeviceDatabase entry.
    pub class: &'static str,
}

const DRIVERS: &[(&str, WindowsDriver)] = &[
    (
        "virtio_blk",
        WindowsDriver { service: "viostor", file: "viostor", boot: true, inbox: false, group: "SCSI miniport", devices: &["pci#ven_1af4&dev_1001", "pci#ven_1af4&dev_1042"], class: SCSI_ADAPTER },
    ),
    (
        "virtio_scsi",
        WindowsDriver { service: "vioscsi", file: "vioscsi", boot: true, inbox: false, group: "SCSI miniport", devices: &["pci#ven_1af4&dev_1004", "pci#ven_1af4&dev_1048"], class: SCSI_ADAPTER },
    ),
    ("vmw_pvscsi", WindowsDriver { service: "pvscsi", file: "pvscsi", boot: true, inbox: false, group: "SCSI miniport", devices: &["pci#ven_15ad&dev_07c0"], class: SCSI_ADAPTER }),
    ("hv_storvsc", WindowsDriver { service: "storvsc", file: "storvsc", boot: true, inbox: true, group: "SCSI miniport", devices: &[], class: SCSI_ADAPTER }),
    ("ahci", WindowsDriver { service: "storahci", file: "storahci", boot: true, inbox: true, group: "SCSI miniport", devices: &["pci#cc_010601"], class: SCSI_ADAPTER }),
    ("nvme", WindowsDriver { service: "stornvme", file: "stornvme", boot: true, inbox: true, group: "SCSI miniport", devices: &["pci#cc_010802"], class: SCSI_ADAPTER }),
    (
        "ata_piix",
        WindowsDriver { service: "intelide", file: "intelide", boot: true, inbox: true, group: "System Bus Extender", devices: &["pci#ven_8086&dev_7010", "pci#ven_8086&dev_7111"], class: HDC },
    ),
    ("virtio_net", WindowsDriver { service: "netkvm", file: "netkvm", boot: false, inbox: false, group: "NDIS", devices: &[], class: "" }),
    ("vmxnet3", WindowsDriver { service: "vmxnet3ndis6", file: "vmxnet3", boot: false, inbox: false, group: "NDIS", devices: &[], class: "" }),
    ("hv_netvsc", WindowsDriver { service: "netvsc", file: "netvsc", boot: false, inbox: true, group: "NDIS", devices: &[], class: "" }),
];

/// The Windows drivers for the target's hardware, from the Linux module
/// names the mapping yields (the same table drives both repairs), each
/// once, in the order of `linux`. Modules without a Windows counterpart
/// (`virtio_pci`, `sd_mod`, ...) are skipped.
pub fn windows_drivers(linux: &[String]) -> Vec<&'static WindowsDriver> {
    let mut v: Vec<&'static WindowsDriver> = Vec::new();
    for m in linux {
        if let Some((_, d)) = DRIVERS.iter().find(|(k, _)| k == m) {
            if !v.iter().any(|x| x.service == d.service) {
                v.push(d);
            }
        }
    }
    v
}

/// The Windows guest services to disable (`Start=4`) for a guest moving
/// to `platform`: every other platform's; QEMU's agent and balloon
/// service only when moving to `vmware` or `hyperv`. Only services the
/// hive has are touched.
pub fn windows_platform_services(platform: &str) -> Vec<&'static str> {
    let mut v = Vec::new();
    if platform != "vmware" {
        v.extend(["VMTools", "VGAuthService", "vm3dservice", "vmvss"]);
    }
    if platform != "hyperv" {
        v.extend(["vmicheartbeat", "vmickvpexchange", "vmicshutdown", "vmictimesync", "vmicvss", "vmicguestinterface"]);
    }
    if platform == "vmware" || platform == "hyperv" {
        v.extend(["QEMU-GA", "BalloonService"]);
    }
    v
}

fn hivexget(hive: &Path, key: &str, value: &str) -> Result<Option<String>, String> {
    let o = Command::new("hivexget").arg(hive).arg(key).arg(value).output().map_err(|e| format!("cannot run hivexget (install libhivex-bin): {e}"))?;
    if !o.status.success() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&o.stdout).trim().to_string()))
}

fn key_exists(hive: &Path, key: &str) -> Result<bool, String> {
    // hivexget cannot tell a missing key from a missing value; hivexsh's
    // `cd` fails exactly when the key is not there.
    use std::io::Write;
    use std::process::Stdio;
    let mut child =
        Command::new("hivexsh").arg(hive).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| format!("cannot run hivexsh (install libhivex-bin): {e}"))?;
    let _ = writeln!(child.stdin.take().expect("stdin"), "cd {key}");
    Ok(child.wait().map_err(|e| e.to_string())?.success())
}

/// The hive's current control set, e.g. `ControlSet001`.
fn current_control_set(hive: &Path) -> Result<String, String> {
    let n = hivexget(hive, "\\Select", "Current")?.ok_or_else(|| format!("{} has no \\Select\\Current: not a SYSTEM hive", hive.display()))?;
    let n: u32 = n.parse().map_err(|_| format!("\\Select\\Current is {n:?}, not a number"))?;
    Ok(format!("ControlSet{n:03}"))
}

fn reg_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Edits a SYSTEM hive file (a local copy) for the target, in its current
/// control set only: boot-start storage drivers bound to their
/// controllers, NIC driver services (demand start), the `disable`
/// services that exist set to `Start=4`. Returns what it changed, line by
/// line. Errors (as text) when the file is not a SYSTEM hive, hivex's
/// tools are missing (libhivex-bin, libwin-hivex-perl) or a boot driver's
/// `Start` does not read back as 0.
pub fn repair_system_hive(hive: &Path, drivers: &[&WindowsDriver], disable: &[&str]) -> Result<Vec<String>, String> {
    let cs = current_control_set(hive)?;
    let mut details = Vec::new();
    let mut reg = String::from("Windows Registry Editor Version 5.00\n\n");
    let key = |reg: &mut String, path: &str, values: &[(&str, String)]| {
        let _ = writeln!(reg, "[HKEY_LOCAL_MACHINE\\SYSTEM\\{path}]");
        for (k, v) in values {
            let _ = writeln!(reg, "{}={v}", reg_str(k));
        }
        reg.push('\n');
    };
    let dword = |n: u32| format!("dword:{n:08x}");
    let services = format!("{cs}\\Services");
    for d in drivers {
        let start = if d.boot { 0 } else { 3 };
        key(
            &mut reg,
            &format!("{services}\\{}", d.service),
            &[
                ("Type", dword(1)),
                ("Start", dword(start)),
                ("ErrorControl", dword(1)),
                ("Group", reg_str(d.group)),
                ("ImagePath", format!("str(2):{}", reg_str(&format!("system32\\drivers\\{}.sys", d.file)))),
            ],
        );
        details.push(format!("{services}\\{}: Start={start}{}", d.service, if d.boot { " (boot)" } else { "" }));
        if !d.devices.is_empty() {
            let cdd = format!("{cs}\\Control\\CriticalDeviceDatabase");
            key(&mut reg, &cdd, &[]);
            for dev in d.devices {
                key(&mut reg, &format!("{cdd}\\{dev}"), &[("Service", reg_str(d.service)), ("ClassGUID", reg_str(d.class))]);
                details.push(format!("{cdd}\\{dev} -> {}", d.service));
            }
        }
    }
    for s in disable {
        if key_exists(hive, &format!("\\{services}\\{s}"))? {
            key(&mut reg, &format!("{services}\\{s}"), &[("Start", dword(4))]);
            details.push(format!("{services}\\{s}: Start=4 (disabled)"));
        }
    }
    let file = hive.with_extension("lifeboat.reg");
    std::fs::write(&file, &reg).map_err(|e| format!("{}: {e}", file.display()))?;
    let o = Command::new("hivexregedit")
        .args(["--merge", "--prefix", "HKEY_LOCAL_MACHINE\\SYSTEM"])
        .arg(hive)
        .arg(&file)
        .output()
        .map_err(|e| format!("cannot run hivexregedit (install libwin-hivex-perl): {e}"))?;
    let _ = std::fs::remove_file(&file);
    if !o.status.success() {
        return Err(format!("hivexregedit: {}", String::from_utf8_lossy(&o.stderr).trim()));
    }
    // Read back what the boot depends on.
    for d in drivers.iter().filter(|d| d.boot) {
        let got = hivexget(hive, &format!("\\{services}\\{}", d.service), "Start")?;
        if got.as_deref() != Some("0") {
            return Err(format!("{}: Start reads back as {got:?} after the edit", d.service));
        }
    }
    Ok(details)
}

/// Finds `<name>.sys` in a driver source directory tree (an ISO is
/// loop-mounted read-only first, see [`DriverSource`]).
fn find_driver(source: &Path, file: &str, os_hint: &str) -> Result<Option<PathBuf>, String> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut stack = vec![source.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n.to_string_lossy().eq_ignore_ascii_case(file)) {
                found.push(p);
            }
        }
    }
    // virtio-win lays out <driver>/<os>/<arch>/: prefer amd64 and the
    // guest's OS version, else any.
    found.sort_by_key(|p| {
        let s = p.to_string_lossy().to_ascii_lowercase();
        (!s.contains("amd64"), !s.contains(os_hint), s.len())
    });
    Ok(found.into_iter().next())
}

/// The guest's OS short name as virtio-win names directories (2k19,
/// w10, ...), from libguestfs' product name; `w10` when it matches none.
fn os_hint(g: &Guestfish, root: &str) -> String {
    let product = g.run(&["inspect-get-product-name", root]).unwrap_or_default().to_ascii_lowercase();
    for (k, v) in [("2022", "2k22"), ("2019", "2k19"), ("2016", "2k16"), ("2012 r2", "2k12r2"), ("2012", "2k12"), ("windows 11", "w11"), ("windows 10", "w10")] {
        if product.contains(k) {
            return v.into();
        }
    }
    "w10".into()
}

/// A driver source ready to search: a directory as it is, an ISO
/// (virtio-win) loop-mounted read-only until dropped.
struct DriverSource {
    dir: PathBuf,
    mounted: bool,
}

impl DriverSource {
    fn open(src: &Path, scratch: &Path) -> Result<DriverSource, String> {
        if src.is_dir() {
            return Ok(DriverSource { dir: src.to_path_buf(), mounted: false });
        }
        if !src.is_file() {
            return Err(format!("driver source {} does not exist (give a directory or a virtio-win ISO)", src.display()));
        }
        let dir = scratch.join("driver-source");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let o = Command::new("mount").args(["-o", "loop,ro"]).arg(src).arg(&dir).output().map_err(|e| format!("cannot run mount: {e}"))?;
        if !o.status.success() {
            return Err(format!("cannot mount driver source {}: {}", src.display(), String::from_utf8_lossy(&o.stderr).trim()));
        }
        Ok(DriverSource { dir, mounted: true })
    }
}

impl Drop for DriverSource {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).status();
        }
    }
}

pub(crate) fn repair(g: &Guestfish, root: &str, plan: &RepairPlan, report: &mut RepairReport, scratch: &Path) -> Result<(), (String, String)> {
    let drivers = windows_drivers(&plan.drivers);
    let gf = |e: crate::GfError| e.to_string();
    let mut sysroot = String::new();
    // 1. Driver files.
    run_step(report, "drivers", &mut || {
        g.run(&["mount", root, "/"]).map_err(gf)?;
        sysroot = g.run(&["inspect-get-windows-systemroot", root]).map_err(gf)?.trim().to_string();
        let drivers_dir = g.run(&["case-sensitive-path", &format!("{sysroot}/system32/drivers")]).map_err(gf)?.trim().to_string();
        let mut details = Vec::new();
        let hint = os_hint(g, root);
        let source_dir = plan.driver_source.as_deref().map(|s| DriverSource::open(s, scratch)).transpose()?;
        for d in drivers.iter().filter(|d| !d.inbox) {
            let file = format!("{}.sys", d.file);
            let in_guest = g.run(&["case-sensitive-path", &format!("{drivers_dir}/{file}")]).ok().map(|p| p.trim().to_string()).filter(|p| g.is_file(p).unwrap_or(false));
            if let Some(p) = in_guest {
                details.push(format!("{p}: already there"));
                continue;
            }
            let source = match &source_dir {
                Some(src) => find_driver(&src.dir, &file, &hint)?,
                None => None,
            };
            match source {
                Some(s) => {
                    let dst = format!("{drivers_dir}/{file}");
                    g.run(&["upload", &s.display().to_string(), &dst]).map_err(gf)?;
                    details.push(format!("{dst}: from {}", s.display()));
                }
                None if d.boot => {
                    let src = plan.driver_source.as_ref().map(|p| format!(" and {} has none", p.display())).unwrap_or_default();
                    return Err(format!("the guest has no {file}{src}: it could not find its boot disk; give a driver source (e.g. the virtio-win ISO) or --map disk_bus=sata"));
                }
                None => details.push(format!("{file}: not in the guest nor a driver source; the NIC needs its driver installed after boot")),
            }
        }
        let changed = details.iter().any(|d| d.contains(": from "));
        Ok((if changed { Outcome::Changed } else { Outcome::Unchanged }, details))
    })?;

    // 2. The SYSTEM hive.
    run_step(report, "registry", &mut || {
        let hive_path = g.run(&["case-sensitive-path", &format!("{sysroot}/system32/config/SYSTEM")]).map_err(gf)?.trim().to_string();
        let local = scratch.join("SYSTEM");
        let _ = std::fs::remove_file(&local);
        g.run(&["download", &hive_path, &local.display().to_string()]).map_err(gf)?;
        let disable = windows_platform_services(&plan.platform);
        let details = repair_system_hive(&local, &drivers, &disable)?;
        g.run(&["upload", &local.display().to_string(), &hive_path]).map_err(gf)?;
        Ok((Outcome::Changed, details))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linux_driver_table_names_windows_drivers() {
        let d = windows_drivers(&["virtio_blk".into(), "virtio_pci".into(), "virtio_net".into(), "virtio_blk".into()]);
        assert_eq!(d.iter().map(|d| d.service).collect::<Vec<_>>(), vec!["viostor", "netkvm"]);
        assert!(d[0].boot && !d[0].inbox && !d[1].boot);
        assert_eq!(windows_drivers(&["hv_storvsc".into()])[0].service, "storvsc");
        // VMware's NIC service loads a file of another name.
        let v = windows_drivers(&["vmxnet3".into()]);
        assert_eq!((v[0].service, v[0].file), ("vmxnet3ndis6", "vmxnet3"));
    }

    #[test]
    fn a_guest_keeps_its_own_platform_services() {
        assert!(windows_platform_services("kvm").contains(&"VMTools") && !windows_platform_services("kvm").contains(&"QEMU-GA"));
        assert!(!windows_platform_services("vmware").contains(&"VMTools") && windows_platform_services("vmware").contains(&"QEMU-GA"));
        assert!(!windows_platform_services("hyperv").contains(&"vmicheartbeat"));
    }
}
