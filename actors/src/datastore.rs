//! `DatastoreActor`: owns one open datastore and runs the work against
//! it (snapshot listings, usage, jobs) on the blocking pool.

use crate::work::{self, JobFailure, JobHandle, JobResult};
use actix::prelude::*;
use lifeboat_api_types::{DatastoreInfo, JobSpec, KeepRules, SnapshotInfo};
use lifeboat_ingest::{BackupOptions, BackupOutcome, IngestError, Progress};
use lifeboat_store::{BlobId, Datastore, Snapshot, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub struct DatastoreActor {
    name: String,
    ds: Arc<Datastore>,
    tz: chrono_tz::Tz,
    /// Snapshots served by NBD exports (with a count per snapshot):
    /// forget refuses them and retention skips them, so gc keeps their
    /// chunks while clients read them.
    pinned: HashMap<BlobId, usize>,
}

impl DatastoreActor {
    pub fn new(ds: Arc<Datastore>) -> Self {
        DatastoreActor { name: "default".into(), ds, tz: chrono_tz::UTC, pinned: HashMap::new() }
    }

    pub fn named(name: &str, ds: Arc<Datastore>, tz: chrono_tz::Tz) -> Self {
        DatastoreActor { name: name.into(), ds, tz, pinned: HashMap::new() }
    }

    fn pinned_set(&self) -> HashSet<BlobId> {
        self.pinned.keys().copied().collect()
    }
}

/// Pins (or releases) a snapshot for an export.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PinSnapshot {
    pub id: BlobId,
    pub pin: bool,
}

impl Handler<PinSnapshot> for DatastoreActor {
    type Result = ();
    fn handle(&mut self, msg: PinSnapshot, _: &mut Context<Self>) {
        if msg.pin {
            *self.pinned.entry(msg.id).or_default() += 1;
        } else if let Some(n) = self.pinned.get_mut(&msg.id) {
            *n -= 1;
            if *n == 0 {
                self.pinned.remove(&msg.id);
            }
        }
    }
}

impl Actor for DatastoreActor {
    type Context = Context<Self>;
}

/// The open datastore itself, for work that runs outside this actor and
/// needs the handle for longer than one message (agent upload sessions).
#[derive(Message)]
#[rtype(result = "Arc<Datastore>")]
pub struct DatastoreHandle;

impl Handler<DatastoreHandle> for DatastoreActor {
    type Result = MessageResult<DatastoreHandle>;
    fn handle(&mut self, _: DatastoreHandle, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.ds.clone())
    }
}

/// All snapshots, oldest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<(BlobId, Snapshot)>, StoreError>")]
pub struct ListSnapshots;

impl Handler<ListSnapshots> for DatastoreActor {
    type Result = ResponseFuture<Result<Vec<(BlobId, Snapshot)>, StoreError>>;
    fn handle(&mut self, _: ListSnapshots, _: &mut Context<Self>) -> Self::Result {
        let ds = self.ds.clone();
        Box::pin(async move { blocking(move || ds.snapshots()).await.unwrap_or(Err(StoreError::Interrupted)) })
    }
}

/// Snapshots as the API shows them, with the DAMAGED flag of `repair`.
#[derive(Message)]
#[rtype(result = "Result<Vec<SnapshotInfo>, String>")]
pub struct SnapshotInfos;

impl Handler<SnapshotInfos> for DatastoreActor {
    type Result = ResponseFuture<Result<Vec<SnapshotInfo>, String>>;
    fn handle(&mut self, _: SnapshotInfos, _: &mut Context<Self>) -> Self::Result {
        let ds = self.ds.clone();
        Box::pin(async move {
            blocking(move || {
                let snaps = ds.snapshots().map_err(message)?;
                let damaged = ds.damaged_snapshots().map_err(message)?;
                Ok(snaps
                    .into_iter()
                    .map(|(id, s)| SnapshotInfo {
                        id: id.to_hex(),
                        time: s.time,
                        hostname: s.hostname,
                        paths: s.paths,
                        tags: s.tags,
                        kind: if s.kind == lifeboat_store::SnapshotKind::Vm { "vm" } else { "files" }.into(),
                        files: s.summary.files,
                        bytes: s.summary.total_bytes,
                        damaged: damaged.contains_key(&id),
                    })
                    .collect())
            })
            .await
            .unwrap_or_else(Err)
        })
    }
}

/// Name, path, snapshot count, space used and free.
#[derive(Message)]
#[rtype(result = "Result<DatastoreInfo, String>")]
pub struct Usage;

impl Handler<Usage> for DatastoreActor {
    type Result = ResponseFuture<Result<DatastoreInfo, String>>;
    fn handle(&mut self, _: Usage, _: &mut Context<Self>) -> Self::Result {
        let ds = self.ds.clone();
        let name = self.name.clone();
        Box::pin(async move {
            blocking(move || {
                let snapshots = ds.snapshots().map_err(message)?.len() as u64;
                let used_bytes = ds.pack_files().map_err(message)?.iter().map(|p| p.len).sum();
                let (free_bytes, total_bytes) = statvfs(ds.root());
                Ok(DatastoreInfo {
                    name,
                    path: ds.root().display().to_string(),
                    encrypted: ds.is_encrypted(),
                    append_only: ds.config().append_only,
                    compression: match ds.config().compression {
                        lifeboat_store::Compression::Zstd => format!("zstd:{}", ds.config().zstd_level),
                        c => c.to_string(),
                    },
                    snapshots,
                    used_bytes,
                    free_bytes,
                    total_bytes,
                })
            })
            .await
            .unwrap_or_else(Err)
        })
    }
}

/// An error as the API's answer shows it (with its causes).
fn message(e: impl std::fmt::Display) -> String {
    format!("{e:#}")
}

fn statvfs(p: &std::path::Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c = match std::ffi::CString::new(p.as_os_str().as_bytes()) {
        Ok(c) => c,
        Err(_) => return (0, 0),
    };
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return (0, 0);
    }
    (s.f_bavail as u64 * s.f_frsize as u64, s.f_blocks as u64 * s.f_frsize as u64)
}

/// Removes snapshots by id (the API's DELETE); space comes back with gc.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct ForgetSnapshots(pub Vec<String>);

impl Handler<ForgetSnapshots> for DatastoreActor {
    type Result = ResponseFuture<Result<(), String>>;
    fn handle(&mut self, msg: ForgetSnapshots, _: &mut Context<Self>) -> Self::Result {
        let ds = self.ds.clone();
        let pinned = self.pinned_set();
        Box::pin(async move {
            blocking(move || {
                if ds.config().append_only {
                    return Err(message(StoreError::AppendOnly { path: ds.root().to_path_buf(), op: "forget" }));
                }
                let mut ids = Vec::new();
                for q in &msg.0 {
                    let id = ds.resolve_snapshot(q).map_err(message)?.0;
                    if pinned.contains(&id) {
                        return Err(format!("snapshot {} is in use by an NBD export or by a VM running from it: delete the export or stop the VM first (GET /api/exports, GET /api/vms)", id.short()));
                    }
                    ids.push(id);
                }
                lifeboat_store::forget_snapshots(&ds, &ids).map_err(message)
            })
            .await
            .unwrap_or_else(Err)
        })
    }
}

/// Runs one job's work; the jobs actor owns its lifecycle.
#[derive(Message)]
#[rtype(result = "JobResult")]
pub struct Execute {
    /// The job's id.
    pub job: String,
    pub spec: JobSpec,
    pub keep: KeepRules,
    pub handle: Arc<JobHandle>,
    /// For VM jobs: the registered VM, claimed for the job's duration.
    pub vm: Option<(lifeboat_state::VmEntry, crate::connector::VmBusy)>,
    /// The VM registry, for instant restores and migrations back.
    pub vms: Option<crate::connector::VmRegistry>,
    /// Where the job may read and write (checked again here: a schedule
    /// runs long after its spec was checked, and the file system moves).
    pub confine: lifeboat_state::Confinement,
    pub grant: lifeboat_state::Grant,
    /// How lab runs and restores start and repair guests.
    pub guests: crate::jobs::GuestSettings,
    /// The `Lab` actor's live runs, where a lab run lists itself.
    pub lab_runs: Option<crate::lab::LabRuns>,
    /// The live CDP protections, where a protection lists itself.
    pub replicas: Option<crate::cdp::Replicas>,
}

impl Handler<Execute> for DatastoreActor {
    type Result = ResponseFuture<JobResult>;
    fn handle(&mut self, msg: Execute, ctx: &mut Context<Self>) -> Self::Result {
        let ds = self.ds.clone();
        let me = ctx.address();
        let name = self.name.clone();
        let tz = self.tz;
        let pinned = self.pinned_set();
        Box::pin(async move {
            blocking(move || {
                let h = &msg.handle;
                match &msg.spec {
                    JobSpec::Backup { paths, select, .. } => work::backup::run(&ds, paths, select, &msg.keep, &pinned, tz, &msg.confine, msg.grant, h),
                    JobSpec::Restore { snapshot, target, include, .. } => work::restore::run(&ds, snapshot, target, include, &msg.confine, msg.grant, h),
                    JobSpec::Verify { read_data, .. } => work::verify::run(&ds, *read_data, h),
                    JobSpec::Forget { keep, .. } => work::forget::run(&ds, keep, &pinned, tz, h),
                    JobSpec::Gc { .. } => work::gc::run(&ds, h),
                    JobSpec::AgentBackup { .. } => Err(JobFailure::Invalid("agent backups are driven by the agent, not started as jobs".into())),
                    JobSpec::VmBackup { full, tags, .. } => match &msg.vm {
                        Some((vm, _busy)) => work::vm_backup::run(&ds, vm, *full, tags, &msg.keep, &pinned, tz, h),
                        None => Err(JobFailure::Failed("internal error: a VM backup without its VM".into())),
                    },
                    JobSpec::VmRestore { snapshot, target, format, platform, platforms, map, no_repair, .. } if platform.is_some() || !platforms.is_empty() => {
                        let t = work::vm_restore::ForTargets {
                            platforms: platform.iter().chain(platforms).cloned().collect(),
                            format: format.as_deref(),
                            maps: map,
                            repair: !*no_repair,
                            drivers: msg.guests.windows_drivers.as_deref(),
                        };
                        work::vm_restore::run_for_targets(&ds, snapshot, target, &t, &msg.confine, msg.grant, h)
                    }
                    JobSpec::VmRestore { snapshot, target, format, .. } => work::vm_restore::run(&ds, snapshot, target, format.as_deref().unwrap_or("raw"), &msg.confine, msg.grant, h),
                    JobSpec::LabVerify { vms, probes, boot_timeout, network, lab, .. } => {
                        let r = work::lab_verify::Request {
                            job: &msg.job,
                            datastore: &name,
                            lab: lab.as_deref(),
                            vms,
                            probes,
                            boot_timeout: *boot_timeout,
                            network,
                            accel: msg.guests.accel,
                            scripts_dir: &msg.guests.scripts_dir,
                            runs: msg.lab_runs.as_ref(),
                        };
                        work::lab_verify::run(&ds, &r, h)
                    }
                    JobSpec::VmInstantRestore { snapshot, name: vm_name, net, paused, platform, map, no_repair, .. } => match &msg.vms {
                        Some(reg) => {
                            let target = platform.as_deref().map(|p| work::vm_instant_restore::Target { platform: p, map, repair: !*no_repair, drivers: msg.guests.windows_drivers.as_deref() });
                            let r = work::vm_instant_restore::Request { datastore: &name, snapshot, name: vm_name.as_deref(), net, paused: *paused, accel: msg.guests.accel, job: &msg.job, target };
                            work::vm_instant_restore::run(&ds, me, reg, &r, h)
                        }
                        None => Err(JobFailure::Failed("this daemon has no VM connector".into())),
                    },
                    JobSpec::VmRestoreFiles { snapshot, paths, target, disk, partition, .. } => {
                        let r = work::vm_restore_files::Request { snapshot, paths, target, disk: disk.as_deref(), partition: partition.as_deref() };
                        work::vm_restore_files::run(&ds, &r, &msg.confine, msg.grant, h)
                    }
                    JobSpec::CdpProtect { disks, mode, bookmarks, .. } => match &msg.vm {
                        Some((vm, _busy)) => {
                            let r = work::cdp_protect::Request {
                                job: &msg.job,
                                datastore: &name,
                                disks,
                                mode,
                                copy_timeout: std::time::Duration::from_secs(3600),
                                replicas: msg.replicas.as_ref(),
                                bookmarks,
                            };
                            work::cdp_protect::run(&ds, vm, &r, h)
                        }
                        None => Err(JobFailure::Failed("internal error: a CDP protection without its VM".into())),
                    },
                    JobSpec::VmMigrateBack { vm, target, format, .. } => match (&msg.vms, &msg.vm) {
                        (Some(reg), Some(_busy)) => work::vm_migrate_back::run(reg, vm, target, format, &msg.confine, msg.grant, h),
                        _ => Err(JobFailure::Failed("internal error: a migration back without its VM".into())),
                    },
                }
            })
            .await
            .unwrap_or_else(|e| Err(JobFailure::Failed(e)))
        })
    }
}

/// Runs one backup; progress and cancellation go through `progress`.
#[derive(Message)]
#[rtype(result = "Result<BackupOutcome, IngestError>")]
pub struct RunBackup {
    pub options: BackupOptions,
    pub progress: Arc<Progress>,
}

impl Handler<RunBackup> for DatastoreActor {
    type Result = ResponseFuture<Result<BackupOutcome, IngestError>>;
    fn handle(&mut self, msg: RunBackup, _: &mut Context<Self>) -> Self::Result {
        let ds = self.ds.clone();
        Box::pin(async move { blocking(move || lifeboat_ingest::backup(ds, &msg.options, &msg.progress)).await.unwrap_or(Err(IngestError::Interrupted)) })
    }
}

/// Runs `f` on the blocking pool. A panic inside is caught there and
/// comes back as `Err(message)`: the job fails, the actor and the
/// daemon live on.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        if e.is_panic() {
            let p = e.into_panic();
            let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown".into());
            tracing::error!(panic = %msg, "a job panicked");
            format!("internal error: the job panicked ({msg}); the daemon carries on; please report this")
        } else {
            "the job was cancelled".into()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn backup_through_the_actor_then_list() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("a.txt"), b"hello actor").unwrap();
        let ds = Arc::new(Datastore::init(&dir.path().join("ds")).unwrap());
        let addr = DatastoreActor::new(ds).start();
        let opts = BackupOptions { sources: vec![src], hostname: "test".into(), ..Default::default() };
        let out = addr.send(RunBackup { options: opts, progress: Arc::new(Progress::new()) }).await.unwrap().unwrap();
        assert_eq!(out.snapshot.summary.files, 1);
        let snaps = addr.send(ListSnapshots).await.unwrap().unwrap();
        assert_eq!(snaps.len(), 1);
        assert_eq!(snaps[0].0, out.snapshot_id);
    }
}
