//! `NotifierActor`: mails job reports through the configured SMTP relay.
//! It holds the current settings; every mail is one SMTP session on the
//! blocking pool, so a slow relay never stalls an arbiter.

use actix::prelude::*;
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

/// Which outcomes of a job are mailed: a schedule's setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailPolicy {
    pub on_failure: bool,
    pub on_success: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailOutcome {
    /// The policy does not ask for a mail for this outcome.
    NotWanted,
    /// A mail was wanted but no SMTP relay is configured.
    NotConfigured,
    Sent,
    /// Sending failed; the message says why (it is also logged).
    Failed(String),
}

/// A job ended; mail its report if `policy` asks for it.
#[derive(Message)]
#[rtype(result = "MailOutcome")]
pub struct JobFinished {
    pub report: JobReport,
    pub policy: MailPolicy,
}

impl Handler<JobFinished> for NotifierActor {
    type Result = ResponseFuture<MailOutcome>;
    fn handle(&mut self, msg: JobFinished, _: &mut Context<Self>) -> Self::Result {
        let JobFinished { mut report, policy } = msg;
        let wanted = if report.ok { policy.on_success } else { policy.on_failure };
        let settings = self.settings.clone();
        report.appliance = self.appliance.clone();
        Box::pin(async move {
            if !wanted {
                return MailOutcome::NotWanted;
            }
            let Some(settings) = settings else {
                tracing::info!(job = %report.job_id, "job report not mailed: no SMTP relay configured");
                return MailOutcome::NotConfigured;
            };
            let job = report.job_id.clone();
            match blocking(move || Mailer::new(&settings)?.send_report(&report)).await {
                Ok(()) => {
                    tracing::info!(job = %job, "job report mailed");
                    MailOutcome::Sent
                }
                Err(e) => {
                    tracing::warn!(job = %job, "cannot mail the job report: {e}");
                    MailOutcome::Failed(e.to_string())
                }
            }
        })
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
            let settings = settings.ok_or_else(|| {
                NotifyError::Invalid("no SMTP relay configured: set the SMTP settings first".into())
            })?;
            blocking(move || Mailer::new(&settings)?.send_test(&appliance)).await
        })
    }
}

/// Runs a mail job on the blocking pool; a panic in it becomes an error.
async fn blocking(f: impl FnOnce() -> Result<(), NotifyError> + Send + 'static) -> Result<(), NotifyError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(NotifyError::Invalid(format!("the mail task failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_notify::testing::SmtpSink;
    use lifeboat_notify::SmtpSecurity;

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

    fn report(ok: bool) -> JobReport {
        let now = chrono::Utc::now();
        JobReport {
            job_id: "7".into(),
            kind: "backup".into(),
            target: "/srv/a".into(),
            schedule: Some("hourly".into()),
            ok,
            started: now,
            finished: now,
            summary: "3 files".into(),
            error: (!ok).then(|| "disk full".into()),
            appliance: String::new(),
        }
    }

    #[actix_rt::test]
    async fn mails_per_policy_and_reports_what_happened() {
        let sink = SmtpSink::start("none", None, false, &[]);
        let notifier = NotifierActor::new(Some(loopback_relay(sink.port)), "lb-actor").start();
        let failures_only = MailPolicy { on_failure: true, on_success: false };

        let out = notifier.send(JobFinished { report: report(false), policy: failures_only }).await.unwrap();
        assert_eq!(out, MailOutcome::Sent);
        let mail = sink.next_mail();
        assert_eq!(mail["subject"], "[Lifeboat lb-actor] backup /srv/a: FAILED");
        assert!(mail["body"].as_str().unwrap().contains("disk full"));

        let out = notifier.send(JobFinished { report: report(true), policy: failures_only }).await.unwrap();
        assert_eq!(out, MailOutcome::NotWanted);
        sink.assert_no_mail();

        notifier.send(SetSmtpSettings(None)).await.unwrap();
        let out = notifier.send(JobFinished { report: report(false), policy: failures_only }).await.unwrap();
        assert_eq!(out, MailOutcome::NotConfigured);
    }

    #[actix_rt::test]
    async fn a_dead_relay_is_reported_and_the_actor_lives_on() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let notifier = NotifierActor::new(Some(loopback_relay(port)), "lb-actor").start();
        let all = MailPolicy { on_failure: true, on_success: true };
        let out = notifier.send(JobFinished { report: report(false), policy: all }).await.unwrap();
        let MailOutcome::Failed(why) = out else { panic!("{out:?}") };
        assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");

        let err = notifier.send(SendTestMail { settings: None }).await.unwrap().unwrap_err();
        assert!(matches!(err, NotifyError::Unreachable { .. }), "{err:?}");
        // Test settings given with the message are used instead of the current ones.
        let sink = SmtpSink::start("none", None, false, &[]);
        notifier.send(SendTestMail { settings: Some(loopback_relay(sink.port)) }).await.unwrap().unwrap();
        assert_eq!(sink.next_mail()["subject"], "[Lifeboat lb-actor] test mail");
    }
}
