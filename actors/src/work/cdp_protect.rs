//! CDP protection job: a registered QMP VM's disks mirrored into their
//! journals (`lifeboat_cdp::Replica`) until the job is cancelled, the
//! daemon stops, or the VM's mirror ends.

use super::{err, JobFailure, JobHandle, JobOutput, JobResult};
use crate::cdp::Replicas;
use lifeboat_api_types::{CdpBookmarkPolicy, VmSource};
use lifeboat_cdp::capture::MirrorMode;
use lifeboat_cdp::{time_of, BookmarkClock, CdpError, Replica, ReplicaOptions};
use lifeboat_state::VmEntry;
use lifeboat_store::Datastore;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// One protection, as the job spec gives it.
pub struct Request<'a> {
    /// The job's id.
    pub job: &'a str,
    /// The datastore's name.
    pub datastore: &'a str,
    /// Disks to protect (empty: all).
    pub disks: &'a [String],
    /// `sync` or `async`.
    pub mode: &'a str,
    /// How long each disk's initial copy may take.
    pub copy_timeout: Duration,
    /// The daemon's live protections, where this one lists itself.
    pub replicas: Option<&'a Replicas>,
    /// The bookmarks it makes by itself.
    pub bookmarks: &'a CdpBookmarkPolicy,
}

fn cdp_err(e: CdpError) -> JobFailure {
    match e {
        CdpError::Invalid(m) | CdpError::InUse(m) => JobFailure::Invalid(m),
        e => err(e),
    }
}

pub fn run(ds: &Arc<Datastore>, vm: &VmEntry, r: &Request, h: &JobHandle) -> JobResult {
    let mode: MirrorMode = r.mode.parse().map_err(JobFailure::Invalid)?;
    let mut clock = BookmarkClock::new(r.bookmarks, chrono::Utc::now()).map_err(cdp_err)?;
    let (qmp, agent) = match &vm.source {
        VmSource::Qmp { qmp, agent } => (qmp, agent.as_deref().map(std::path::Path::new)),
        VmSource::Libvirt { .. } => return Err(JobFailure::Invalid(format!("VM {}: CDP protects VMs registered by their QMP socket; libvirt domains are not supported yet", vm.name))),
    };
    h.set_phase("copying disks into their journals");
    let opts = ReplicaOptions { disks: r.disks.to_vec(), mode, copy_timeout: r.copy_timeout };
    let open = |dir: &std::path::Path, vm: &str, size: u64| match r.replicas {
        Some(reg) => reg.open_or_create(dir, vm, size),
        None => lifeboat_cdp::open_or_create(dir, vm, size),
    };
    let mut replica = Replica::start(&ds.root().join("cdp"), std::path::Path::new(qmp), &opts, &open, &|m| h.log(m)).map_err(|e| cdp_err(e).context(format!("VM {}", vm.name)))?;
    let name = replica.vm().name.clone();
    let disks: Vec<String> = replica.journals().iter().map(|(d, _)| d.clone()).collect();
    let p = &h.progress;
    p.total_files.store(disks.len() as u64, Ordering::Relaxed);
    p.files.store(disks.len() as u64, Ordering::Relaxed);
    p.scan_done.store(true, Ordering::Relaxed);
    let guard = r.replicas.map(|reg| reg.register(r.datastore, &name, r.job, replica.journals().to_vec(), p.cancel.clone()));
    h.set_phase(&format!("protecting {name} ({} mode)", r.mode));
    let failed = replica
        .watch(&p.cancel, &mut clock, agent, &|m| h.log(m), &mut |b| {
            h.log(&format!("bookmark {} ({}{})", b.name, b.kind, if b.consistent { ", application-consistent" } else { "" }));
            if let Some(reg) = r.replicas {
                reg.bookmarked(r.datastore, &name, b);
            }
        })
        .err();
    drop(guard);
    h.set_phase("stopping the protection");
    let ranges = replica.stop();
    for (d, range) in ranges.as_deref().unwrap_or_default() {
        if let Some((a, b)) = range {
            h.log(&format!("disk {d}: journal {} .. {}", time_of(*a), time_of(*b)));
        }
    }
    if let Some(e) = failed {
        return Err(JobFailure::Failed(format!("the protection of {name} ended: {e}")));
    }
    ranges.map_err(cdp_err)?;
    if p.cancelled() {
        return Err(JobFailure::Cancelled);
    }
    Ok(JobOutput::new(&super::outcome::CdpProtectJobOutcome { vm: name, disks }, vec![]))
}
