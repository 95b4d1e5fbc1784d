//! `JobsActor`: the lifecycle of every job — start, progress events,
//! cancel, finish, history (persisted through `lifeboat_state::JobStore`,
//! so it survives restarts). The work itself runs in the datastore's
//! actor on the blocking pool; a panic there fails the job, nothing else.

use crate::connector::VmRegistry;
use crate::datastore::Execute;
use crate::events::{EventsActor, Publish};
use crate::work::{JobFailure, JobHandle, JobResult};
use crate::Datastores;
use actix::prelude::*;
use chrono::Utc;
use lifeboat_api_types::{Event, JobErrorKind, JobInfo, JobProgress, JobSpec, JobState, KeepRules, NotifyWhen};
use lifeboat_state::confine::{Grant, SharedConfinement};
use lifeboat_state::JobStore;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

const PROGRESS_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("datastore {0:?} does not exist: list them with GET /api/datastores")]
    UnknownDatastore(String),
    #[error("job {0} not found")]
    NotFound(String),
    #[error("VM {0:?} is not registered: list them with GET /api/vms, register it with POST /api/vms")]
    UnknownVm(String),
    #[error("{0}")]
    Invalid(String),
    #[error("job {0} has already finished")]
    Finished(String),
    #[error("saving the job history: {0}")]
    State(String),
    /// What the job needs is in use by another job.
    #[error("{0}")]
    Busy(String),
}

struct Running {
    handle: Arc<JobHandle>,
    last: JobProgress,
    notify: NotifyWhen,
}

pub struct JobsActor {
    store: Arc<JobStore>,
    keep_history: usize,
    history: BTreeMap<String, JobInfo>,
    running: HashMap<String, Running>,
    datastores: Datastores,
    events: Addr<EventsActor>,
    notifier: Option<Recipient<JobFinished>>,
    vms: Option<VmRegistry>,
    /// Where jobs may read and write on the appliance.
    confine: SharedConfinement,
    guests: GuestSettings,
    /// Lab definitions: named lab runs, and those due after a VM backup.
    labs: Option<Arc<lifeboat_state::LabStore>>,
    /// The `Lab` actor's live runs, handed to lab-verify jobs.
    lab_runs: Option<crate::lab::LabRuns>,
    replicas: Option<crate::cdp::Replicas>,
}

/// What lab runs need of the config.
#[derive(Clone, Debug)]
pub struct GuestSettings {
    /// `qemu_accel`.
    pub accel: lifeboat_qemu::Accel,
    /// `lab_scripts_dir`: where script probes come from.
    pub scripts_dir: std::path::PathBuf,
    /// `windows_drivers`: driver files for Windows guests restored for
    /// another platform.
    pub windows_drivers: Option<std::path::PathBuf>,
}

impl Default for GuestSettings {
    fn default() -> Self {
        GuestSettings { accel: lifeboat_qemu::Accel::Auto, scripts_dir: "/etc/lifeboat/lab-scripts".into(), windows_drivers: None }
    }
}

impl JobsActor {
    /// Loads the history; jobs that were running when the daemon died
    /// come back as `interrupted` (and are announced).
    pub fn new(store: Arc<JobStore>, keep_history: usize, datastores: Datastores, events: Addr<EventsActor>, confine: SharedConfinement) -> Result<Self, JobError> {
        let (jobs, problems) = store.load_all(keep_history).map_err(|e| JobError::State(e.to_string()))?;
        for p in problems {
            tracing::warn!("job history: {p}");
        }
        let history = jobs.into_iter().map(|j| (j.id.clone(), j)).collect();
        Ok(JobsActor {
            store,
            keep_history,
            history,
            running: HashMap::new(),
            datastores,
            events,
            notifier: None,
            vms: None,
            confine,
            guests: GuestSettings::default(),
            labs: None,
            lab_runs: None,
            replicas: None,
        })
    }

    /// Each schedule's newest run in the history (schedule id -> job
    /// id), so a restarted daemon still shows what a schedule last did.
    pub fn last_job_per_schedule(&self) -> HashMap<String, String> {
        let mut last: HashMap<String, &JobInfo> = HashMap::new();
        for j in self.history.values() {
            if let Some(s) = &j.schedule {
                if last.get(s).is_none_or(|l| (l.started, &l.id) < (j.started, &j.id)) {
                    last.insert(s.clone(), j);
                }
            }
        }
        last.into_iter().map(|(s, j)| (s, j.id.clone())).collect()
    }

    fn log(&self, id: &str, line: &str) {
        if let Err(e) = self.store.log(id, line) {
            tracing::warn!(job = id, "job log: {e}");
        }
    }

    fn save_and_publish(&mut self, job: JobInfo) {
        if let Err(e) = self.store.save(&job) {
            tracing::error!(job = %job.id, "saving job: {e}");
        }
        self.events.do_send(Publish(Event::JobState { job: job.clone() }));
        self.history.insert(job.id.clone(), job);
        while self.history.len() > self.keep_history {
            let oldest = self.history.iter().find(|(id, _)| !self.running.contains_key(*id)).map(|(id, _)| id.clone());
            match oldest {
                Some(id) => {
                    self.history.remove(&id);
                    self.store.remove(&id);
                }
                None => break,
            }
        }
    }

    fn new_job(spec: JobSpec, schedule: Option<String>, state: JobState) -> JobInfo {
        JobInfo {
            id: JobStore::new_id(),
            spec,
            state,
            schedule,
            started: Utc::now(),
            finished: if state.is_finished() { Some(Utc::now()) } else { None },
            progress: JobProgress::default(),
            error: None,
            error_kind: None,
            result: serde_json::Value::Null,
        }
    }

    fn handle_for(&self, id: &str) -> Arc<JobHandle> {
        let store = self.store.clone();
        let jid = id.to_string();
        Arc::new(JobHandle::new(Box::new(move |line| {
            let _ = store.log(&jid, line);
        })))
    }
}

impl JobsActor {
    /// Lab runs use these settings (from the config) instead of the defaults.
    pub fn with_guests(mut self, guests: GuestSettings) -> Self {
        self.guests = guests;
        self
    }

    /// Lab definitions, for `lab-verify` jobs that name one and for runs
    /// after VM backups.
    pub fn with_labs(mut self, labs: Arc<lifeboat_state::LabStore>) -> Self {
        self.labs = Some(labs);
        self
    }

    /// Lab-verify jobs list their runs with the `Lab` actor's registry.
    /// Where `cdp-protect` jobs list their live protections.
    pub fn with_replicas(mut self, replicas: crate::cdp::Replicas) -> Self {
        self.replicas = Some(replicas);
        self
    }

    pub fn with_lab_runs(mut self, runs: crate::lab::LabRuns) -> Self {
        self.lab_runs = Some(runs);
        self
    }

    /// A `lab-verify` spec naming a lab, with the lab's VMs and probes.
    fn expand_lab(&self, spec: JobSpec) -> Result<JobSpec, JobError> {
        match spec {
            JobSpec::LabVerify { datastore, lab: Some(name), vms, probes, boot_timeout, network } if vms.is_empty() => {
                let def = self.labs.as_ref().and_then(|l| l.get(&name)).ok_or_else(|| JobError::Invalid(format!("lab {name:?} is not defined: list them with GET /api/labs")))?;
                if def.datastore != datastore {
                    return Err(JobError::Invalid(format!("lab {name:?} verifies backups in datastore {:?}, not {datastore:?}", def.datastore)));
                }
                let _ = (probes, boot_timeout, network);
                Ok(JobSpec::LabVerify { datastore, lab: Some(name), vms: def.vms, probes: def.probes, boot_timeout: def.boot_timeout, network: def.network })
            }
            JobSpec::LabVerify { vms, .. } if vms.is_empty() => Err(JobError::Invalid("a lab verification needs VMs, or a lab (GET /api/labs)".into())),
            other => Ok(other),
        }
    }

    /// After a VM backup: the lab runs defined to follow it.
    fn labs_after(&self, job: &JobInfo) -> Vec<StartJob> {
        let (Some(labs), JobSpec::VmBackup { datastore, .. }) = (&self.labs, &job.spec) else { return Vec::new() };
        let Some(vm) = job.result["qemu_name"].as_str() else { return Vec::new() };
        labs.after_backup_of(datastore, vm)
            .into_iter()
            .map(|def| StartJob {
                spec: JobSpec::LabVerify { datastore: def.datastore, lab: Some(def.name.clone()), vms: def.vms, probes: def.probes, boot_timeout: def.boot_timeout, network: def.network },
                schedule: None,
                keep: KeepRules::default(),
                notify: def.notify,
                skip_if_running: false,
                grant: Grant::default(),
            })
            .collect()
    }
}

impl Actor for JobsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(PROGRESS_EVERY, |act, _| {
            for (id, r) in act.running.iter_mut() {
                let now = r.handle.snapshot();
                if now != r.last {
                    r.last = now.clone();
                    act.events.do_send(Publish(Event::JobProgress { id: id.clone(), progress: now }));
                }
            }
        });
    }
}

/// Sent to the notifier when a job ends.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct JobFinished {
    pub job: JobInfo,
    pub notify: NotifyWhen,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct SetNotifier(pub Recipient<JobFinished>);

/// The VM registry, for `vm-backup` jobs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetVmRegistry(pub VmRegistry);

impl Handler<SetVmRegistry> for JobsActor {
    type Result = ();
    fn handle(&mut self, msg: SetVmRegistry, _: &mut Context<Self>) {
        self.vms = Some(msg.0);
    }
}

impl Handler<SetNotifier> for JobsActor {
    type Result = ();
    fn handle(&mut self, msg: SetNotifier, _: &mut Context<Self>) {
        self.notifier = Some(msg.0);
    }
}

/// Starts a job. With `skip_if_running` (scheduled runs), a run of the
/// same schedule still going makes this one `skipped`, not stacked.
#[derive(Message)]
#[rtype(result = "Result<JobInfo, JobError>")]
pub struct StartJob {
    pub spec: JobSpec,
    pub schedule: Option<String>,
    pub keep: KeepRules,
    pub notify: NotifyWhen,
    pub skip_if_running: bool,
    /// What the job may do on the appliance's files beyond the roots'
    /// defaults: the caller's (`Principal::grant`); none for schedules.
    pub grant: Grant,
}

impl StartJob {
    pub fn now(spec: JobSpec, grant: Grant) -> Self {
        StartJob { spec, schedule: None, keep: KeepRules::default(), notify: NotifyWhen::Never, skip_if_running: false, grant }
    }
}

impl Handler<StartJob> for JobsActor {
    type Result = Result<JobInfo, JobError>;
    fn handle(&mut self, msg: StartJob, ctx: &mut Context<Self>) -> Self::Result {
        if matches!(msg.spec, JobSpec::AgentBackup { .. }) {
            return Err(JobError::Invalid("agent backups are started by `lifeboat agent`, not through /api/jobs".into()));
        }
        let ds = self.datastores.get(msg.spec.datastore()).ok_or_else(|| JobError::UnknownDatastore(msg.spec.datastore().into()))?;
        let mut msg = msg;
        msg.spec = self.expand_lab(msg.spec)?;
        if msg.skip_if_running {
            if let Some(sched) = &msg.schedule {
                let busy = self.running.keys().find(|id| self.history.get(*id).and_then(|j| j.schedule.as_ref()) == Some(sched)).cloned();
                if let Some(running_job) = busy {
                    let mut job = Self::new_job(msg.spec, msg.schedule.clone(), JobState::Skipped);
                    job.error = Some(format!("skipped: the previous run ({running_job}) of this schedule is still running"));
                    self.log(&job.id, job.error.as_deref().unwrap_or_default());
                    self.events.do_send(Publish(Event::ScheduleSkipped { schedule: sched.clone(), running_job }));
                    self.save_and_publish(job.clone());
                    if let Some(n) = &self.notifier {
                        n.do_send(JobFinished { job: job.clone(), notify: msg.notify });
                    }
                    return Ok(job);
                }
            }
        }
        let job = Self::new_job(msg.spec.clone(), msg.schedule, JobState::Running);
        // A VM job names a registered VM and holds it for its duration
        // (one backup per VM at a time: QMP serves one client).
        let vm = match &msg.spec {
            JobSpec::VmBackup { vm, .. } | JobSpec::VmMigrateBack { vm, .. } | JobSpec::CdpProtect { vm, .. } => {
                let reg = self.vms.as_ref().ok_or_else(|| JobError::Invalid("this daemon has no VM connector".into()))?;
                let entry = reg.get(vm).ok_or_else(|| JobError::UnknownVm(vm.clone()))?;
                if let JobSpec::VmMigrateBack { datastore, .. } = &msg.spec {
                    match reg.instant().info(vm) {
                        None => return Err(JobError::Invalid(format!("VM {vm:?} does not run from a backup: there is nothing to migrate back"))),
                        Some(i) if &i.datastore != datastore => return Err(JobError::Invalid(format!("VM {vm:?} runs from datastore {:?}, not {datastore:?}", i.datastore))),
                        Some(_) => {}
                    }
                }
                let busy = reg.begin(vm, &job.id).map_err(JobError::Busy)?;
                Some((entry, busy))
            }
            JobSpec::VmInstantRestore { .. } if self.vms.is_none() => return Err(JobError::Invalid("this daemon has no VM connector".into())),
            _ => None,
        };
        let handle = self.handle_for(&job.id);
        handle.log(&format!("started {} on datastore {}", job.spec.kind(), job.spec.datastore()));
        self.running.insert(job.id.clone(), Running { handle: handle.clone(), last: JobProgress::default(), notify: msg.notify });
        self.save_and_publish(job.clone());
        let me = ctx.address();
        let id = job.id.clone();
        let confine = self.confine.read().clone();
        let exec = Execute {
            job: id.clone(),
            spec: msg.spec,
            keep: msg.keep,
            handle,
            vm,
            vms: self.vms.clone(),
            confine,
            grant: msg.grant,
            guests: self.guests.clone(),
            lab_runs: self.lab_runs.clone(),
            replicas: self.replicas.clone(),
        };
        actix::spawn(async move {
            let result = ds.send(exec).await.unwrap_or_else(|e| Err(JobFailure::Failed(format!("the datastore actor is gone: {e}"))));
            me.do_send(Finished { id, result });
        });
        Ok(job)
    }
}

/// A job's work ended (from the datastore actor, or an agent session).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Finished {
    pub id: String,
    pub result: JobResult,
}

impl Handler<Finished> for JobsActor {
    type Result = ();
    fn handle(&mut self, msg: Finished, ctx: &mut Context<Self>) {
        let Some(run) = self.running.remove(&msg.id) else { return };
        let Some(mut job) = self.history.get(&msg.id).cloned() else { return };
        job.finished = Some(Utc::now());
        job.progress = run.handle.snapshot();
        let cancelled = run.handle.progress.cancelled();
        match msg.result {
            Ok(out) => {
                job.state = if out.warnings.is_empty() { JobState::Succeeded } else { JobState::Warnings };
                for w in &out.warnings {
                    run.handle.log(&format!("warning: {w}"));
                }
                job.result = out.result;
                if !out.warnings.is_empty() {
                    job.result["warnings"] = serde_json::json!(out.warnings);
                }
            }
            Err(e) => {
                // A cancelled job may fail on whatever it was doing when
                // the flag was seen; it is still a cancellation.
                let kind = if cancelled { JobErrorKind::Cancelled } else { e.kind() };
                job.state = if kind == JobErrorKind::Cancelled { JobState::Cancelled } else { JobState::Failed };
                if let Some(r) = run.handle.take_failed_result() {
                    job.result = r;
                }
                run.handle.log(&format!("error: {e}"));
                job.error = Some(e.to_string());
                job.error_kind = Some(kind);
            }
        }
        run.handle.log(&format!("finished: {:?}", job.state));
        tracing::info!(job = %job.id, kind = job.spec.kind(), state = ?job.state, "job finished");
        self.save_and_publish(job.clone());
        if job.state == JobState::Succeeded || job.state == JobState::Warnings {
            for start in self.labs_after(&job) {
                tracing::info!(after = %job.id, "starting the lab run that follows this VM backup");
                ctx.address().do_send(start);
            }
        }
        if let Some(n) = &self.notifier {
            n.do_send(JobFinished { job, notify: run.notify });
        }
    }
}

/// Registers a job whose work runs elsewhere (an agent's upload); the
/// caller reports its end with `Finished`.
#[derive(Message)]
#[rtype(result = "Result<(JobInfo, Arc<JobHandle>), JobError>")]
pub struct BeginExternal {
    pub spec: JobSpec,
}

impl Handler<BeginExternal> for JobsActor {
    type Result = Result<(JobInfo, Arc<JobHandle>), JobError>;
    fn handle(&mut self, msg: BeginExternal, _: &mut Context<Self>) -> Self::Result {
        if self.datastores.get(msg.spec.datastore()).is_none() {
            return Err(JobError::UnknownDatastore(msg.spec.datastore().into()));
        }
        let job = Self::new_job(msg.spec, None, JobState::Running);
        let handle = self.handle_for(&job.id);
        self.running.insert(job.id.clone(), Running { handle: handle.clone(), last: JobProgress::default(), notify: NotifyWhen::Never });
        self.save_and_publish(job.clone());
        Ok((job, handle))
    }
}

#[derive(Message)]
#[rtype(result = "Result<JobInfo, JobError>")]
pub struct CancelJob(pub String);

impl Handler<CancelJob> for JobsActor {
    type Result = Result<JobInfo, JobError>;
    fn handle(&mut self, msg: CancelJob, _: &mut Context<Self>) -> Self::Result {
        let job = self.history.get(&msg.0).cloned().ok_or_else(|| JobError::NotFound(msg.0.clone()))?;
        let run = self.running.get(&msg.0).ok_or_else(|| JobError::Finished(msg.0.clone()))?;
        run.handle.cancel();
        run.handle.log("cancel requested");
        Ok(job)
    }
}

/// Jobs, newest first; `running_only` for the status screens.
#[derive(Message)]
#[rtype(result = "Vec<JobInfo>")]
pub struct ListJobs {
    pub running_only: bool,
    pub limit: usize,
}

impl Handler<ListJobs> for JobsActor {
    type Result = MessageResult<ListJobs>;
    fn handle(&mut self, msg: ListJobs, _: &mut Context<Self>) -> Self::Result {
        let mut out: Vec<JobInfo> = self.history.values().rev().filter(|j| !msg.running_only || j.state == JobState::Running).take(msg.limit).cloned().collect();
        for j in out.iter_mut() {
            if let Some(r) = self.running.get(&j.id) {
                j.progress = r.handle.snapshot();
            }
        }
        MessageResult(out)
    }
}

#[derive(Message)]
#[rtype(result = "Result<JobInfo, JobError>")]
pub struct GetJob(pub String);

impl Handler<GetJob> for JobsActor {
    type Result = Result<JobInfo, JobError>;
    fn handle(&mut self, msg: GetJob, _: &mut Context<Self>) -> Self::Result {
        let mut j = self.history.get(&msg.0).cloned().ok_or_else(|| JobError::NotFound(msg.0.clone()))?;
        if let Some(r) = self.running.get(&j.id) {
            j.progress = r.handle.snapshot();
        }
        Ok(j)
    }
}

#[derive(Message)]
#[rtype(result = "Result<String, JobError>")]
pub struct GetJobLog(pub String);

impl Handler<GetJobLog> for JobsActor {
    type Result = ResponseFuture<Result<String, JobError>>;
    fn handle(&mut self, msg: GetJobLog, _: &mut Context<Self>) -> Self::Result {
        let known = self.history.contains_key(&msg.0);
        let store = self.store.clone();
        Box::pin(async move {
            if !known {
                return Err(JobError::NotFound(msg.0));
            }
            crate::datastore::blocking(move || store.read_log(&msg.0).map_err(|e| JobError::State(e.to_string()))).await.unwrap_or_else(|e| Err(JobError::State(e)))
        })
    }
}
