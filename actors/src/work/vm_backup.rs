//! VM backup job: a registered VM's disks into a datastore at one point
//! in time (`lifeboat_qemu::backup_vm`), then the schedule's retention on
//! that VM's snapshots only.

use super::outcome::{VmBackupJobOutcome, VmDiskOutcome};
use super::{err, JobFailure, JobHandle, JobOutput, JobResult};
use lifeboat_api_types::{KeepRules, VmSource};
use lifeboat_qemu::{backup_vm, VmBackupOptions};
use lifeboat_state::VmEntry;
use lifeboat_store::{BlobId, Datastore};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[allow(clippy::too_many_arguments)]
pub fn run(ds: &Arc<Datastore>, vm: &VmEntry, full: bool, tags: &[String], keep: &KeepRules, pinned: &HashSet<BlobId>, tz: chrono_tz::Tz, h: &JobHandle) -> JobResult {
    // Totals for the progress bar, from a quick inventory.
    let inv = crate::connector::probe(vm);
    if let Some(e) = &inv.error {
        return Err(JobFailure::Failed(format!("VM {}: {e}", vm.name)));
    }
    let p = &h.progress;
    p.total_files.store(inv.disks.len() as u64, Ordering::Relaxed);
    p.total_bytes.store(inv.disks.iter().map(|d| d.size).sum(), Ordering::Relaxed);
    p.scan_done.store(true, Ordering::Relaxed);
    h.set_phase("backing up VM");
    let hostname = lifeboat_ingest::hostname();
    let out = match &vm.source {
        VmSource::Qmp { qmp, agent } => {
            h.log(&format!("VM {} ({}), {} disks, QMP {qmp}", vm.name, inv.qemu_name, inv.disks.len()));
            let opts = VmBackupOptions { qmp: PathBuf::from(qmp), agent: agent.as_ref().map(PathBuf::from), tags: tags.to_vec(), hostname: hostname.clone(), full };
            backup_vm(ds, &opts, &p.bytes).map_err(|e| err(e).context(format!("VM {}", vm.name)))?
        }
        VmSource::Libvirt { uri, domain } => {
            h.log(&format!("VM {} (libvirt domain {domain} at {uri}), {} disks", vm.name, inv.disks.len()));
            let opts = lifeboat_libvirt::LibvirtBackupOptions { uri: uri.clone(), domain: domain.clone(), tags: tags.to_vec(), hostname: hostname.clone(), full };
            lifeboat_libvirt::backup_domain(ds, &opts, &p.bytes).map_err(|e| err(e).context(format!("VM {}", vm.name)))?
        }
    };
    p.files.store(out.disks.len() as u64, Ordering::Relaxed);
    h.log(&format!("snapshot {} committed ({}-consistent)", out.snapshot_id.to_hex(), out.consistency));
    let mut warnings = out.warnings.clone();
    if let Some(e) = &out.agent_error {
        warnings.push(format!("guest agent: {e}; the backup is crash-consistent"));
    }
    let mut full_reasons = Vec::new();
    let disks: Vec<_> = out
        .disks
        .iter()
        .map(|(id, s)| {
            if let Some(r) = &s.full_reason {
                h.log(&format!("disk {id}: full read: {r}"));
                full_reasons.push(format!("{id}: {r}"));
            }
            VmDiskOutcome { id: id.clone(), stats: s.clone() }
        })
        .collect();
    let mut outcome = VmBackupJobOutcome {
        snapshot: out.snapshot_id.to_hex(),
        vm: vm.name.clone(),
        qemu_name: out.vm.clone(),
        consistency: out.consistency.clone(),
        frozen_filesystems: out.frozen_filesystems,
        parent: out.parent.map(|p| p.to_hex()),
        disks,
        bytes_read: out.disks.iter().map(|d| d.1.bytes_read).sum::<u64>(),
        full_reason: (!full_reasons.is_empty()).then(|| full_reasons.join("; ")),
        duration_ms: out.duration_ms,
        forgotten: None,
    };
    if !keep.is_empty() {
        h.set_phase("applying retention");
        let paths = vec![lifeboat_store::vm_source_path(&out.vm)];
        outcome.forgotten = Some(super::forget::apply_keep(ds, keep, Some((&hostname, &paths)), pinned, tz, h)?);
    }
    Ok(JobOutput::new(&outcome, warnings))
}
