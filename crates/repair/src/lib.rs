//! Guest repair: makes a restored guest boot on hardware it was not
//! installed on, after its disks are written and before its first boot.
//!
//! Works through libguestfs (guestfish in remote-control mode, see
//! `guestfish.rs`) rather than file-system code of our own: it reads any
//! file system and partition layout the guest kernel does, and runs the
//! guest's own tools (update-initramfs, dracut) in the guest's root.
//!
//! Linux steps, in order (each one a [`Step`] of the report; a step
//! that cannot do its job fails the repair, and a failed repair fails the
//! restore). A first step, `mount`, mounts the guest's file systems as
//! libguestfs' inspection finds them and changes nothing.
//! 1. `fstab`: block devices named by kernel name (/dev/sdX, hdX, vdX,
//!    xvdX) become `UUID=`: the names change with the controller.
//! 2. `bootloader`: `root=`/`resume=` by kernel name become `UUID=` in
//!    extlinux/syslinux, GRUB (grub.cfg and /etc/default/grub), BLS
//!    entries and /etc/kernel/cmdline.
//! 3. `network`: old MACs become the new ones wherever the configuration
//!    names them; a single NIC's configured interface name is pinned to
//!    its new MAC (a systemd .link file) when names would change; DHCP
//!    instead of static addresses when asked.
//! 4. `guest-tools`: the old platforms' agents (open-vm-tools,
//!    hyperv-daemons, ...) are disabled.
//! 5. `initramfs`: the target's storage and NIC drivers are added to the
//!    initramfs configuration (initramfs-tools or dracut) and every
//!    kernel's initramfs is rebuilt, then checked to contain them.
//!
//! Windows (`windows.rs`): driver files injected from a driver source,
//! then the SYSTEM hive edited with hivex (boot-start storage driver,
//! CriticalDeviceDatabase, old platform services disabled).
#![warn(missing_docs)]

mod guestfish;
mod linux;
pub mod windows;

pub(crate) use guestfish::{GfError, Guestfish};
use serde::Serialize;

/// What to repair for.
#[derive(Clone, Debug, Default)]
pub struct RepairPlan {
    /// The target platform's name (`kvm`, `openstack`, `vmware`,
    /// `hyperv`): it picks the Windows services to disable and names the
    /// comments and files the repair writes (a dracut.conf.d file).
    pub platform: String,
    /// Linux kernel module names the new hardware needs (`virtio_blk`,
    /// `ahci`, ...): added to a Linux guest's initramfs; for Windows they
    /// select the drivers through `windows::windows_drivers`.
    pub drivers: Vec<String>,
    /// (old MAC, new MAC) per NIC whose MAC changes, `aa:bb:...` form;
    /// replaced in a Linux guest's network configuration in lower or
    /// upper case, with `:` or `-` between the bytes.
    pub macs: Vec<(String, String)>,
    /// NICs of the target VM (new MACs), in order. With exactly one, a
    /// Linux guest's single configured interface name is pinned to it.
    pub nics: Vec<String>,
    /// Switch a Linux guest's statically configured interfaces to DHCP
    /// (ifupdown, ifcfg, networkd, NetworkManager; netplan fails the step).
    pub dhcp: bool,
    /// systemd units / SysV services of the old platforms to disable in a
    /// Linux guest, usually `platform_tools(platform)`. Windows guests use
    /// `windows::windows_platform_services` instead.
    pub disable: Vec<String>,
    /// Run libguestfs' appliance under TCG (software emulation: slower,
    /// for hosts where /dev/kvm is there but cannot boot it).
    pub tcg: bool,
    /// Where Windows driver files come from (a directory or a
    /// virtio-win ISO), for drivers the guest lacks.
    pub driver_source: Option<std::path::PathBuf>,
}

/// The Linux guest agents (systemd units / SysV services) to disable for
/// a guest moving to `platform`: every other platform's agents (Xen's
/// always); the QEMU guest agent only when moving to `vmware` or
/// `hyperv`.
pub fn platform_tools(platform: &str) -> Vec<String> {
    let vmware = ["open-vm-tools", "vmtoolsd", "vgauth", "vmware-tools"];
    let hyperv = ["hv-kvp-daemon", "hv-vss-daemon", "hv-fcopy-daemon", "hypervkvpd", "hypervvssd", "hypervfcopyd"];
    let qemu = ["qemu-guest-agent"];
    let xen = ["xe-linux-distribution", "xe-daemon"];
    let mut v: Vec<&str> = xen.to_vec();
    if platform != "vmware" {
        v.extend(vmware);
    }
    if platform != "hyperv" {
        v.extend(hyperv);
    }
    if platform == "vmware" || platform == "hyperv" {
        v.extend(qemu);
    }
    v.into_iter().map(String::from).collect()
}

/// How a repair step ended; serialized lower case (`"changed"`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The step wrote to the guest.
    Changed,
    /// The step changed nothing in the guest (`mount` always reports
    /// this).
    Unchanged,
    /// The step failed; it is the last step of the report.
    Failed,
}

/// One repair step: what it did, file by file.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// The step's name: `mount`, `fstab`, `bootloader`, `network`,
    /// `guest-tools`, `initramfs` (Linux); `drivers`, `registry` (Windows).
    pub step: String,
    /// How it ended.
    pub outcome: Outcome,
    /// One line per file or change (`/etc/fstab: /dev/sda1 -> UUID=...`),
    /// notes, or for a failed step its error message.
    pub details: Vec<String>,
    /// Wall-clock time the step took.
    pub seconds: f64,
}

/// What a repair did: the guest found and each step run, serialized with
/// the restore's results.
#[derive(Clone, Debug, Serialize)]
pub struct RepairReport {
    /// What libguestfs found: type, distro, product name, root.
    pub os: String,
    /// The steps run, in order; after a failure the failed step is last.
    pub steps: Vec<Step>,
    /// Wall-clock time of the whole repair, the appliance's start
    /// included.
    pub seconds: f64,
}

/// What a step did (outcome and details), or why it failed.
pub(crate) type StepResult = Result<(Outcome, Vec<String>), String>;

/// Runs step `name`, timed, and records it in `report`; a failure is
/// recorded too and ends the repair (`Err((step, message))`).
pub(crate) fn run_step(report: &mut RepairReport, name: &str, f: &mut dyn FnMut() -> StepResult) -> Result<(), (String, String)> {
    let t = std::time::Instant::now();
    let r = f();
    let seconds = t.elapsed().as_secs_f64();
    match r {
        Ok((outcome, details)) => {
            report.steps.push(Step { step: name.into(), outcome, details, seconds });
            Ok(())
        }
        Err(msg) => {
            report.steps.push(Step { step: name.into(), outcome: Outcome::Failed, details: vec![msg.clone()], seconds });
            Err((name.to_string(), msg))
        }
    }
}

/// Why a repair failed. Either way the guest may not boot on the target;
/// the restore fails, or the guest can be restored with `--no-repair` and
/// repaired by hand.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// A repair step failed; the guest may be partly repaired (files of
    /// earlier steps written).
    #[error("guest repair failed in step {step}: {msg}")]
    Step {
        /// The failed step's name (as in [`Step::step`]).
        step: String,
        /// Its error message.
        msg: String,
        /// The steps run so far, the failed one last.
        report: Box<RepairReport>,
    },
    /// The session failed outside the steps: the scratch directory or
    /// guestfish could not be set up, an inspection command failed,
    /// libguestfs found no operating system or one this crate does not
    /// repair, or (after all steps succeeded) the final unmount and sync
    /// failed.
    #[error("guest repair: {0}")]
    Inspect(String),
}

impl From<GfError> for RepairError {
    fn from(e: GfError) -> Self {
        RepairError::Inspect(e.to_string())
    }
}

/// Inspects the guest on `drives` (the VM's disks in order: paths or NBD
/// URIs of `format`, writable) and repairs it for `plan`. `scratch` is a
/// local directory (created if missing) for guestfish's log, file
/// transfers, the Windows hive and a mounted driver ISO. Runs guestfish
/// (libguestfs-tools) and, for Windows, hivex's tools; a Windows driver
/// ISO is loop-mounted, which needs root. The changes are certain to be
/// on the disks only after a successful repair (the session is unmounted
/// and synced then); a failed one abandons the session without a sync,
/// so the disks may hold some of its changes.
pub fn repair(drives: &[String], format: &str, plan: &RepairPlan, scratch: &std::path::Path) -> Result<RepairReport, RepairError> {
    let t0 = std::time::Instant::now();
    std::fs::create_dir_all(scratch).map_err(|e| RepairError::Inspect(format!("scratch {}: {e}", scratch.display())))?;
    let g = Guestfish::launch(drives, format, plan.tcg, scratch)?;
    let roots = g.lines(&["inspect-os"])?;
    let Some(root) = roots.first().cloned() else {
        return Err(RepairError::Inspect("libguestfs found no operating system on the disks (no root file system it recognises)".into()));
    };
    let kind = g.run(&["inspect-get-type", &root])?.trim().to_string();
    let distro = g.run(&["inspect-get-distro", &root])?.trim().to_string();
    let product = g.run(&["inspect-get-product-name", &root])?.trim().to_string();
    let os = format!("{kind} {distro} ({product}) on {root}");
    let mut report = RepairReport { os, steps: Vec::new(), seconds: 0.0 };
    let r = match kind.as_str() {
        "linux" => linux::repair(&g, &root, plan, &mut report),
        "windows" => windows::repair(&g, &root, plan, &mut report, scratch),
        other => return Err(RepairError::Inspect(format!("{}: repair of {other} guests is not implemented; restore with --no-repair and repair the guest by hand", report.os))),
    };
    report.seconds = t0.elapsed().as_secs_f64();
    match r {
        Ok(()) => {
            g.close()?;
            report.seconds = t0.elapsed().as_secs_f64();
            Ok(report)
        }
        Err((step, msg)) => Err(RepairError::Step { step, msg, report: Box::new(report) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_keeps_its_own_platform_agent() {
        let kvm = platform_tools("kvm");
        assert!(kvm.contains(&"open-vm-tools".to_string()) && kvm.contains(&"hv-kvp-daemon".to_string()));
        assert!(!kvm.contains(&"qemu-guest-agent".to_string()));
        let vmw = platform_tools("vmware");
        assert!(!vmw.contains(&"open-vm-tools".to_string()) && vmw.contains(&"qemu-guest-agent".to_string()));
        let hv = platform_tools("hyperv");
        assert!(!hv.contains(&"hv-kvp-daemon".to_string()) && hv.contains(&"open-vm-tools".to_string()));
    }
}
