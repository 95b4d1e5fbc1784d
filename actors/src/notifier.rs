//! `NotifierActor`: mails job reports through the configured SMTP relay
//! when `JobsActor` says a job finished and the schedule asks for it.
//! It holds the current settings; every mail is one SMTP session on the
//! blocking pool, so a slow relay never stalls an arbiter.

use crate::jobs::JobFinished;
use actix::prelude::*;
use lifeboat_api_types::{JobInfo, JobSpec, JobState, NotifyWhen};
use lifeboat_notify::{JobReport, Mailer, NotifyError, SmtpSettings};

pub struct NotifierActor {
    settings: Option<SmtpSettings>,
    /// Names this appliance in subjects.
    appliance: String,
}

impl NotifierActor {
    pub fn new(settings: Option<SmtpSettings>, appliance: impl Into<String>) -> Self {
        NotifierActor { settings, appliance: appliance.into() }
    }
}

impl Actor for NotifierActor {
    type Context = Context<Self>;
}

impl Supervised for NotifierActor {}

/// Whether a job that ended so is mailed under a schedule's setting.
pub fn wanted(notify: NotifyWhen, state: JobState) -> bool {
    match notify {
        NotifyWhen::Never => false,
        NotifyWhen::Failure => matches!(state, JobState::Failed | JobState::Interrupted | JobState::Skipped),
        NotifyWhen::Always => state.is_finished(),
    }
}

/// The report mail of a finished job.
pub fn job_report(job: &JobInfo, appliance: &str) -> JobReport {
    let outcome = match job.state {
        JobState::Succeeded => "ok",
        JobState::Warnings => "ok with warnings",
        JobState::Failed => "FAILED",
        JobState::Cancelled => "cancelled",
        JobState::Interrupted => "INTERRUPTED",
        JobState::Skipped => "SKIPPED",
        JobState::Running => "running",
    };
    let target = match &job.spec {
        JobSpec::Backup { datastore, paths, .. } => format!("{} to {datastore}", paths.join(", ")),
        JobSpec::AgentBackup { datastore, hostname, paths, .. } => format!("{hostname}:{} to {datastore}", paths.join(", ")),
        JobSpec::Restore { datastore, snapshot, target, .. } => format!("{datastore}/{snapshot} to {target}"),
        JobSpec::Verify { datastore, .. } | JobSpec::Forget { datastore, .. } | JobSpec::Gc { datastore } => datastore.clone(),
        JobSpec::VmBackup { datastore, vm, .. } => format!("VM {vm} to {datastore}"),
        JobSpec::VmRestore { datastore, snapshot, target, .. } => format!("VM {datastore}/{snapshot} to {target}"),
        JobSpec::LabVerify { datastore, vms, .. } => format!("lab verification of {} in {datastore}", vms.iter().map(|v| v.snapshot.as_str()).collect::<Vec<_>>().join(", ")),
        JobSpec::VmInstantRestore { datastore, snapshot, .. } => format!("instant restore of VM {datastore}/{snapshot}"),
        JobSpec::VmMigrateBack { vm, target, .. } => format!("migration of VM {vm} back to {target}"),
        JobSpec::VmRestoreFiles { datastore, snapshot, paths, target, .. } => format!("{} of VM {datastore}/{snapshot} to {target}", paths.join(", ")),
        JobSpec::CdpProtect { datastore, vm, mode, .. } => format!("CDP protection ({mode}) of VM {vm} into {datastore}"),
    };
    let mut summary = String::new();
    let p = &job.progress;
    if p.files_done > 0 || p.bytes_done > 0 {
        summary.push_str(&format!("{} files, {} bytes processed\n", p.files_done, p.bytes_done));
    }
    if let Some(text) = lab_summary(job) {
        // A lab run: the verdict per VM and step, as the CLI prints it.
        summary.push_str(&text);
    } else if let Some(result) = job.result.as_object() {
        for (key, value) in result {
            match value {
                serde_json::Value::Array(items) => {
                    summary.push_str(&format!("{key}:\n"));
                    for item in items {
                        summary.push_str(&format!("  {}\n", item.as_str().map(str::to_string).unwrap_or_else(|| item.to_string())));
                    }
                }
                serde_json::Value::String(text) => summary.push_str(&format!("{key}: {text}\n")),
                other => summary.push_str(&format!("{key}: {other}\n")),
            }
        }
    }
    JobReport {
        job_id: job.id.clone(),
        kind: job.spec.kind().to_string(),
        target,
        schedule: job.schedule.clone(),
        ok: matches!(job.state, JobState::Succeeded | JobState::Warnings),
        outcome: outcome.to_string(),
        started: job.started,
        finished: job.finished.unwrap_or_else(chrono::Utc::now),
        summary,
        error: job.error.clone(),
        appliance: appliance.to_string(),
        attachments: Vec::new(),
    }
}

/// A lab run's summary (per VM: verdict, steps, why a step failed) and
/// where its report is.
fn lab_summary(job: &JobInfo) -> Option<String> {
    if !matches!(job.spec, JobSpec::LabVerify { .. }) {
        return None;
    }
    let rep: lifeboat_lab::LabReport = serde_json::from_value(job.result.clone()).ok()?;
    let mut s = rep.summary_text();
    if let Some(dir) = job.result["report_dir"].as_str() {
        s.push_str(&format!("report: {dir}/report.html (attached)\n"));
    }
    Some(s)
}

/// A lab run's HTML report (self-contained: screenshots inline), read
/// from where the run left it.
fn lab_report_attachment(job: &JobInfo) -> Option<lifeboat_notify::Attachment> {
    if !matches!(job.spec, JobSpec::LabVerify { .. }) {
        return None;
    }
    let dir = std::path::PathBuf::from(job.result["report_dir"].as_str()?);
    let data = std::fs::read(dir.join("report.html")).map_err(|e| tracing::warn!(job = %job.id, "the lab report {}: {e}", dir.display())).ok()?;
    let id = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Some(lifeboat_notify::Attachment { filename: format!("lab-report-{id}.html"), content_type: "text/html; charset=utf-8".into(), data })
}

impl NotifierActor {
    /// Mails `job`'s report if `notify` asks for it; says what happened.
    fn mail_job(&self, job: &JobInfo, notify: NotifyWhen) -> impl std::future::Future<Output = MailOutcome> + 'static {
        let wanted = wanted(notify, job.state);
        let settings = self.settings.clone();
        let mut report = job_report(job, &self.appliance);
        let info = job.clone();
        async move {
            if !wanted {
                return MailOutcome::NotWanted;
            }
            let Some(settings) = settings else {
                tracing::info!(job = %report.job_id, "job report not mailed: no SMTP relay configured");
                return MailOutcome::NotConfigured;
            };
            let job = report.job_id.clone();
            let sent = blocking(move || {
                report.attachments.extend(lab_report_attachment(&info));
                Mailer::new(&settings)?.send_report(&report)
            });
            match sent.await {
                Ok(()) => {
                    tracing::info!(job = %job, "job report mailed");
                    MailOutcome::Sent
                }
                Err(e) => {
                    tracing::warn!(job = %job, "cannot mail the job report: {e}");
                    MailOutcome::Failed(e.to_string())
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailOutcome {
    /// The schedule's setting does not ask for a mail for this outcome.
    NotWanted,
    /// A mail was wanted but no SMTP relay is configured.
    NotConfigured,
    Sent,
    /// Sending failed; the message says why (it is also logged).
    Failed(String),
}

impl Handler<JobFinished> for NotifierActor {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, msg: JobFinished, _: &mut Context<Self>) -> Self::Result {
        let mail = self.mail_job(&msg.job, msg.notify);
        Box::pin(async move {
            mail.await;
        })
    }
}

/// Like `JobFinished`, answered with what became of the mail (for the
/// API's and tests' use).
#[derive(Message)]
#[rtype(result = "MailOutcome")]
pub struct MailJobReport {
    pub job: JobInfo,
    pub notify: NotifyWhen,
}

impl Handler<MailJobReport> for NotifierActor {
    type Result = ResponseFuture<MailOutcome>;
    fn handle(&mut self, msg: MailJobReport, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.mail_job(&msg.job, msg.notify))
    }
}

/// New SMTP settings (None: no mails), already validated and stored by the caller.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetSmtpSettings(pub Option<SmtpSettings>);

impl Handler<SetSmtpSettings> for NotifierActor {
    type Result = ();
    fn handle(&mut self, msg: SetSmtpSettings, _: &mut Context<Self>) {
        self.settings = msg.0;
    }
}

/// Sends a test mail with `settings`, or with the current ones if None.
#[derive(Message)]
#[rtype(result = "Result<(), NotifyError>")]
pub struct SendTestMail {
    pub settings: Option<SmtpSettings>,
}

impl Handler<SendTestMail> for NotifierActor {
    type Result = ResponseFuture<Result<(), NotifyError>>;
    fn handle(&mut self, msg: SendTestMail, _: &mut Context<Self>) -> Self::Result {
        let settings = msg.settings.or_else(|| self.settings.clone());
        let appliance = self.appliance.clone();
        Box::pin(async move {
            let settings = settings.ok_or_else(|| NotifyError::Invalid("no SMTP relay configured: set the SMTP settings first".into()))?;
            blocking(move || Mailer::new(&settings)?.send_test(&appliance)).await
        })
    }
}

/// Runs a mail job on the blocking pool; a panic in it becomes an error.
async fn blocking(f: impl FnOnce() -> Result<(), NotifyError> + Send + 'static) -> Result<(), NotifyError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(NotifyError::Invalid(format!("the mail task failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_api_types::{JobProgress, SmtpSecurity};
    use lifeboat_notify::testing::SmtpSink;

    fn loopback_relay(port: u16) -> SmtpSettings {
        SmtpSettings {
            host: "127.0.0.1".into(),
            port: Some(port),
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: "lifeboat@appliance.test".into(),
            to: vec!["ops@example.test".into()],
            ca_file: None,
        }
    }

    fn job(state: JobState) -> JobInfo {
        let now = chrono::Utc::now();
        JobInfo {
            id: "7".into(),
            spec: JobSpec::Backup { datastore: "main".into(), paths: vec!["/srv/a".into()], select: Default::default() },
            state,
            schedule: Some("hourly".into()),
            started: now,
            finished: Some(now),
            progress: JobProgress { phase: "done".into(), files_done: 3, bytes_done: 300, ..Default::default() },
            error: (state == JobState::Failed).then(|| "disk full".into()),
            error_kind: (state == JobState::Failed).then_some(lifeboat_api_types::JobErrorKind::Failed),
            result: serde_json::json!({"snapshot": "abc123"}),
        }
    }

    #[test]
    fn policy_per_outcome() {
        assert!(wanted(NotifyWhen::Failure, JobState::Failed));
        assert!(wanted(NotifyWhen::Failure, JobState::Skipped));
        assert!(!wanted(NotifyWhen::Failure, JobState::Succeeded));
        assert!(!wanted(NotifyWhen::Failure, JobState::Cancelled));
        assert!(wanted(NotifyWhen::Always, JobState::Succeeded));
        assert!(!wanted(NotifyWhen::Never, JobState::Failed));
    }

    #[actix_rt::test]
    async fn mails_per_schedule_setting_and_says_what_happened() {
        let sink = SmtpSink::start("none", None, false, &[]);
        let notifier = NotifierActor::new(Some(loopback_relay(sink.port)), "lb-actor").start();

        let out = notifier.send(MailJobReport { job: job(JobState::Failed), notify: NotifyWhen::Failure }).await.unwrap();
        assert_eq!(out, MailOutcome::Sent);
        let mail = sink.next_mail();
        assert_eq!(mail["subject"], "[Lifeboat lb-actor] backup /srv/a to main: FAILED");
        let body = mail["body"].as_str().unwrap();
        assert!(body.contains("disk full") && body.contains("snapshot: abc123") && body.contains("Schedule:  hourly"), "{body}");

        let out = notifier.send(MailJobReport { job: job(JobState::Succeeded), notify: NotifyWhen::Failure }).await.unwrap();
        assert_eq!(out, MailOutcome::NotWanted);
        // JobsActor's message, fire and forget.
        notifier.do_send(JobFinished { job: job(JobState::Succeeded), notify: NotifyWhen::Always });
        let mut mail = None;
        for _ in 0..200 {
            mail = sink.try_mail();
            if mail.is_some() {
                break;
            }
            // Yield to the actor (this test's runtime is its arbiter).
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(mail.expect("no mail after JobFinished")["subject"], "[Lifeboat lb-actor] backup /srv/a to main: ok");
        sink.assert_no_mail();

        notifier.send(SetSmtpSettings(None)).await.unwrap();
        let out = notifier.send(MailJobReport { job: job(JobState::Failed), notify: NotifyWhen::Always }).await.unwrap();
        assert_eq!(out, MailOutcome::NotConfigured);
    }

    #[test]
    fn a_lab_run_is_mailed_with_its_verdict_per_vm_and_step() {
        let now = chrono::Utc::now();
        let step = |name: &str, outcome, detail: &str| lifeboat_lab::Step { name: name.into(), outcome, started: now, ended: now, detail: detail.into() };
        let vm = lifeboat_lab::VmReport {
            vm: "db".into(),
            snapshot: "0123456789abcdef".into(),
            ip: Some("10.0.2.15/24".into()),
            passed: false,
            started: now,
            ended: now,
            steps: vec![step("boot", lifeboat_lab::Outcome::Pass, "ok"), step("ping", lifeboat_lab::Outcome::Fail, "10.0.2.15 did not answer ping")],
            screenshot: None,
            warnings: vec![],
        };
        let rep = lifeboat_lab::LabReport { lab: "20261205-x".into(), passed: false, started: now, ended: now, accelerator: "TCG".into(), vms: vec![vm], cancelled: false };
        let mut result = serde_json::to_value(&rep).unwrap();
        result["report_dir"] = "/srv/ds/lab-reports/20261205-x".into();
        let mut j = job(JobState::Failed);
        j.spec = JobSpec::LabVerify { datastore: "main".into(), lab: Some("nightly".into()), vms: vec![], probes: String::new(), boot_timeout: 0, network: Default::default() };
        j.result = result;
        let body = job_report(&j, "lb").summary;
        assert!(body.contains("lab 20261205-x: FAILED (0 of 1 VMs passed)"), "{body}");
        assert!(body.contains("db (01234567): FAILED - boot pass, ping fail") && body.contains("ping: 10.0.2.15 did not answer ping"), "{body}");
        assert!(body.contains("report: /srv/ds/lab-reports/20261205-x/report.html (attached)"), "{body}");
        // Not the raw JSON dump of the result.
        assert!(!body.contains("accelerator:"), "{body}");
    }

    #[actix_rt::test]
    async fn a_dead_relay_is_reported_and_the_actor_lives_on() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let notifier = NotifierActor::new(Some(loopback_relay(port)), "lb-actor").start();
        let out = notifier.send(MailJobReport { job: job(JobState::Failed), notify: NotifyWhen::Always }).await.unwrap();
        let MailOutcome::Failed(why) = out else { panic!("{out:?}") };
        assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");

        let err = notifier.send(SendTestMail { settings: None }).await.unwrap().unwrap_err();
        assert!(matches!(err, NotifyError::Unreachable { .. }), "{err:?}");
        // Settings given with the message are used instead of the current ones.
        let sink = SmtpSink::start("none", None, false, &[]);
        notifier.send(SendTestMail { settings: Some(loopback_relay(sink.port)) }).await.unwrap().unwrap();
        assert_eq!(sink.next_mail()["subject"], "[Lifeboat lb-actor] test mail");
    }
}
