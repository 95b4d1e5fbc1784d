//! VM instant restore job: boots a VM snapshot straight from the
//! datastore (`lifeboat_qemu::InstantVm`: disks on our NBD server over a
//! unix socket in `<state>/instant/<name>/`, writes in overlays there)
//! and hands the running VM to `crate::instant::InstantVms`, where
//! `/api/vms` shows it. The job ends once QEMU runs the VM.

use super::{err, JobFailure, JobHandle, JobOutput, JobResult};
use crate::connector::VmRegistry;
use crate::datastore::DatastoreActor;
use actix::Addr;
use lifeboat_api_types::InstantVmInfo;
use lifeboat_qemu::{BootOptions, InstantVm, NbdListen, NetMode};
use lifeboat_store::Datastore;
use std::sync::Arc;
use std::time::Duration;

/// How long QEMU may take to open its monitor.
const READY_WITHIN: Duration = Duration::from_secs(60);

pub struct Request<'a> {
    pub datastore: &'a str,
    pub snapshot: &'a str,
    pub name: Option<&'a str>,
    pub net: &'a str,
    pub paused: bool,
    pub accel: lifeboat_qemu::Accel,
    pub job: &'a str,
    /// Boot with another platform's hardware.
    pub target: Option<Target<'a>>,
}

pub struct Target<'a> {
    pub platform: &'a str,
    pub map: &'a [String],
    pub repair: bool,
    /// Windows driver source (`windows_drivers`), as for `vm-restore`.
    pub drivers: Option<&'a std::path::Path>,
}

/// A name for `/api/vms`: letters, digits, `-`, `_`.
fn check_name(n: &str) -> Result<(), JobFailure> {
    if n.is_empty() || n.len() > 64 || n.starts_with('-') || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(JobFailure::Invalid(format!("VM name {n:?}: use up to 64 letters, digits, '-' and '_'")));
    }
    Ok(())
}

pub fn run(ds: &Arc<Datastore>, me: Addr<DatastoreActor>, reg: &VmRegistry, r: &Request, h: &JobHandle) -> JobResult {
    let net: NetMode = r.net.parse().map_err(JobFailure::Invalid)?;
    let platform: Option<lifeboat_convert::Platform> = r.target.as_ref().map(|t| t.platform.parse()).transpose().map_err(JobFailure::Invalid)?;
    // The newest backup may come from another process (the CLI, an agent).
    ds.refresh_index()?;
    let (sid, snap) = ds.resolve_snapshot(r.snapshot)?;
    let md = lifeboat_qemu::load_vm(ds, &snap)?.md;
    let name = r.name.map(String::from).unwrap_or_else(|| format!("{}-instant", md.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect::<String>()));
    check_name(&name)?;
    if reg.get(&name).is_some() {
        return Err(JobFailure::Refused(format!("a VM named {name:?} exists already (GET /api/vms); give another \"name\"")));
    }
    let instant = reg.instant();
    let workdir = instant.workdir(&name);
    // Left by a VM of this name that is gone (its daemon was killed).
    let _ = std::fs::remove_dir_all(&workdir);
    h.set_phase("exporting disks");
    h.log(&format!("VM {} of snapshot {}: {} disk(s) served from the datastore through overlays in {}", md.name, sid.to_hex(), md.disks.len(), workdir.display()));
    let mut vm = InstantVm::export(ds.clone(), &sid.to_hex(), &NbdListen::Unix, &workdir).map_err(err)?;
    for w in &vm.warnings {
        h.log(&format!("warning: {w}"));
    }
    let accel = lifeboat_qemu::accel::choose(r.accel);
    h.log(&format!("accelerator: {}", accel.reason));
    let mut retargeted = serde_json::Value::Null;
    if let (Some(t), Some(platform)) = (&r.target, platform) {
        h.set_phase(if t.repair { "repairing the guest in its overlays" } else { "mapping the hardware" });
        let repair = t.repair.then(|| lifeboat_convert::GuestRepair { tcg: accel.accel != lifeboat_qemu::Accel::Kvm, drivers: t.drivers.map(|d| d.to_path_buf()), scratch: workdir.join("repair") });
        let log = |l: &str| h.log(l);
        match lifeboat_convert::retarget_instant(&mut vm, platform, t.map, repair.as_ref(), &log) {
            Ok(done) => retargeted = serde_json::json!({ "platform": platform.as_str(), "macs": done.macs, "repair": done.repair }),
            Err(e) => {
                vm.discard();
                return Err(err(e));
            }
        }
    }
    h.set_phase("booting");
    let boot = vm.boot(&BootOptions { name: name.clone(), accel, net, paused: r.paused, video: true, extra_args: Vec::new() });
    let state = boot.and_then(|()| vm.wait_ready(READY_WITHIN));
    let state = match state {
        Ok(s) => s,
        Err(e) => {
            vm.discard();
            return Err(err(e));
        }
    };
    if h.progress.cancelled() {
        vm.discard();
        return Err(JobFailure::Cancelled);
    }
    let info = InstantVmInfo {
        datastore: r.datastore.to_string(),
        snapshot: sid.to_hex(),
        job: r.job.to_string(),
        started: chrono::Utc::now(),
        pid: vm.pid().unwrap_or(0),
        serial_log: vm.serial.display().to_string(),
        migrating: false,
    };
    let qmp = vm.qmp.display().to_string();
    let warnings = vm.warnings.clone();
    if let Err((vm, e)) = instant.insert(&name, vm, info.clone(), me) {
        (*vm).discard();
        return Err(JobFailure::Refused(e));
    }
    h.log(&format!("VM {name} runs ({state}), QEMU pid {}; stop it with DELETE /api/vms/{name}, or move it onto local disks with a vm-migrate-back job", info.pid));
    let outcome = super::outcome::VmInstantRestoreJobOutcome { vm: name, snapshot: info.snapshot, state, pid: info.pid, qmp, serial_log: info.serial_log, target: retargeted };
    Ok(JobOutput::new(&outcome, warnings))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert!(super::check_name("web1-instant").is_ok());
        for bad in ["", "-x", "a/b", "../x", "a b"] {
            assert!(super::check_name(bad).is_err(), "{bad}");
        }
    }
}
