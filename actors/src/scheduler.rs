//! `SchedulerActor`: cron schedules in the appliance's time zone. Each
//! second it starts the schedules that are due (a backup's schedule
//! carries its retention, applied by the same job). Runs missed while
//! the daemon was down are not caught up: the next one is the next due
//! time from now, which is what cron does too.

use crate::jobs::{JobsActor, StartJob};
use crate::Datastores;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use lifeboat_api_types::{JobInfo, JobSpec, ScheduleInfo, ScheduleSpec};
use lifeboat_state::schedules::StoredSchedule;
use lifeboat_state::ScheduleStore;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub struct SchedulerActor {
    store: Arc<ScheduleStore>,
    tz: chrono_tz::Tz,
    jobs: Addr<JobsActor>,
    datastores: Datastores,
    next: HashMap<String, DateTime<Utc>>,
    last_job: HashMap<String, String>,
}

/// Parses the cron expression, with a message an admin can act on.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    cron::Schedule::from_str(expr).map_err(|e| format!("cron expression {expr:?} is invalid ({e}): use `sec min hour day-of-month month day-of-week`, e.g. `0 30 2 * * *` for 02:30 daily"))
}

pub fn parse_timezone(tz: &str) -> Result<chrono_tz::Tz, String> {
    tz.parse().map_err(|_| format!("time zone {tz:?} is unknown: use an IANA name such as Europe/Berlin or UTC"))
}

impl SchedulerActor {
    pub fn new(store: Arc<ScheduleStore>, tz: chrono_tz::Tz, jobs: Addr<JobsActor>, datastores: Datastores) -> Self {
        let mut s = SchedulerActor { store, tz, jobs, datastores, next: HashMap::new(), last_job: HashMap::new() };
        for sch in s.store.list() {
            s.plan(&sch);
        }
        s
    }

    /// What each schedule last started, from the job history (see
    /// `JobsActor::last_job_per_schedule`).
    pub fn with_last_jobs(mut self, last: HashMap<String, String>) -> Self {
        self.last_job = last;
        self
    }

    fn next_after(&self, spec: &ScheduleSpec, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let c = parse_cron(&spec.cron).ok()?;
        c.after(&after.with_timezone(&self.tz)).next().map(|t| t.with_timezone(&Utc))
    }

    fn plan(&mut self, s: &StoredSchedule) {
        match (s.spec.enabled, self.next_after(&s.spec, Utc::now())) {
            (true, Some(t)) => {
                self.next.insert(s.id.clone(), t);
            }
            _ => {
                self.next.remove(&s.id);
            }
        }
    }

    fn validate(&self, spec: &ScheduleSpec) -> Result<(), String> {
        lifeboat_state::config::validate_name(&spec.name)?;
        parse_cron(&spec.cron)?;
        if matches!(spec.job, JobSpec::AgentBackup { .. }) {
            return Err("agent backups run from the agent's host; schedule them there (e.g. a systemd timer running `lifeboat agent`)".into());
        }
        if self.datastores.get(spec.job.datastore()).is_none() {
            return Err(format!("datastore {:?} does not exist", spec.job.datastore()));
        }
        if !spec.keep.is_empty() && !matches!(spec.job, JobSpec::Backup { .. } | JobSpec::VmBackup { .. }) {
            return Err("keep rules apply to backup schedules only; for retention alone schedule a forget job".into());
        }
        // Else every run would back up, then fail on rules that keep nothing.
        if !spec.keep.is_empty() && crate::work::forget::policy(&spec.keep).is_empty() {
            return Err("keep rules of 0 keep nothing: give at least one of last/hourly/daily/weekly/monthly/yearly above 0, or leave keep out".into());
        }
        Ok(())
    }

    fn info(&self, s: StoredSchedule) -> ScheduleInfo {
        ScheduleInfo { next_run: self.next.get(&s.id).copied(), last_job: self.last_job.get(&s.id).cloned(), id: s.id, spec: s.spec }
    }

    fn start(&mut self, s: &StoredSchedule) -> ResponseFuture<Result<JobInfo, String>> {
        let msg = StartJob { spec: s.spec.job.clone(), schedule: Some(s.id.clone()), keep: s.spec.keep.clone(), notify: s.spec.notify, skip_if_running: true, grant: Default::default() };
        let jobs = self.jobs.clone();
        Box::pin(async move { jobs.send(msg).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string()) })
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            let now = Utc::now();
            let due: Vec<StoredSchedule> = act.store.list().into_iter().filter(|s| act.next.get(&s.id).is_some_and(|t| *t <= now)).collect();
            for s in due {
                act.plan(&s);
                let id = s.id.clone();
                let fut = act.start(&s);
                ctx.spawn(fut.into_actor(act).map(move |r, act, _| match r {
                    Ok(job) => {
                        act.last_job.insert(id, job.id);
                    }
                    Err(e) => tracing::error!(schedule = %id, "scheduled run failed to start: {e}"),
                }));
            }
        });
    }
}

#[derive(Message)]
#[rtype(result = "Vec<ScheduleInfo>")]
pub struct ListSchedules;

impl Handler<ListSchedules> for SchedulerActor {
    type Result = MessageResult<ListSchedules>;
    fn handle(&mut self, _: ListSchedules, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.store.list().into_iter().map(|s| self.info(s)).collect())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Invalid(String),
    #[error("schedule {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    State(String),
}

impl From<lifeboat_state::StateError> for ScheduleError {
    fn from(e: lifeboat_state::StateError) -> Self {
        match e {
            lifeboat_state::StateError::NotFound(s) => ScheduleError::NotFound(s),
            lifeboat_state::StateError::Conflict(s) => ScheduleError::Conflict(s),
            lifeboat_state::StateError::Invalid(s) => ScheduleError::Invalid(s),
            e => ScheduleError::State(e.to_string()),
        }
    }
}

#[derive(Message)]
#[rtype(result = "Result<ScheduleInfo, ScheduleError>")]
pub struct GetSchedule(pub String);

impl Handler<GetSchedule> for SchedulerActor {
    type Result = Result<ScheduleInfo, ScheduleError>;
    fn handle(&mut self, msg: GetSchedule, _: &mut Context<Self>) -> Self::Result {
        let s = self.store.get(&msg.0).ok_or(ScheduleError::NotFound(msg.0))?;
        Ok(self.info(s))
    }
}

/// Creates (`id: None`) or replaces a schedule.
#[derive(Message)]
#[rtype(result = "Result<ScheduleInfo, ScheduleError>")]
pub struct PutSchedule {
    pub id: Option<String>,
    pub spec: ScheduleSpec,
}

impl Handler<PutSchedule> for SchedulerActor {
    type Result = Result<ScheduleInfo, ScheduleError>;
    fn handle(&mut self, msg: PutSchedule, _: &mut Context<Self>) -> Self::Result {
        self.validate(&msg.spec).map_err(ScheduleError::Invalid)?;
        let s = match msg.id {
            None => self.store.create(msg.spec)?,
            Some(id) => self.store.update(&id, msg.spec)?,
        };
        self.plan(&s);
        Ok(self.info(s))
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), ScheduleError>")]
pub struct DeleteSchedule(pub String);

impl Handler<DeleteSchedule> for SchedulerActor {
    type Result = Result<(), ScheduleError>;
    fn handle(&mut self, msg: DeleteSchedule, _: &mut Context<Self>) -> Self::Result {
        self.store.delete(&msg.0)?;
        self.next.remove(&msg.0);
        self.last_job.remove(&msg.0);
        Ok(())
    }
}

/// Runs a schedule now, as its timer would (overlap rule included).
#[derive(Message)]
#[rtype(result = "Result<JobInfo, ScheduleError>")]
pub struct RunScheduleNow(pub String);

impl Handler<RunScheduleNow> for SchedulerActor {
    type Result = ResponseActFuture<Self, Result<JobInfo, ScheduleError>>;
    fn handle(&mut self, msg: RunScheduleNow, _: &mut Context<Self>) -> Self::Result {
        let Some(s) = self.store.get(&msg.0) else {
            return Box::pin(actix::fut::ready(Err(ScheduleError::NotFound(msg.0))));
        };
        let id = s.id.clone();
        Box::pin(self.start(&s).into_actor(self).map(move |r, act, _| {
            let job = r.map_err(ScheduleError::Invalid)?;
            act.last_job.insert(id, job.id.clone());
            Ok(job)
        }))
    }
}
