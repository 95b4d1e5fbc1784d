//! Mail delivery against a real SMTP server on loopback (aiosmtpd, from the
//! Debian package python3-aiosmtpd): STARTTLS and implicit TLS with a
//! certificate from a test CA, AUTH PLAIN and LOGIN, a plain loopback relay,
//! and the errors an admin sees for a wrong password, a dead relay and an
//! untrusted certificate.

use lifeboat_notify::testing::{SmtpSink, TestPki, PASSWORD, USER};
use lifeboat_notify::{JobReport, Mailer, NotifyError, SmtpSecurity, SmtpSettings};
use serde_json::Value;

fn settings(port: u16, security: SmtpSecurity, pki: Option<&TestPki>, auth: bool) -> SmtpSettings {
    SmtpSettings {
        host: if security == SmtpSecurity::None { "127.0.0.1".into() } else { "localhost".into() },
        port: Some(port),
        security,
        username: auth.then(|| USER.to_string()),
        password: auth.then(|| PASSWORD.to_string()),
        from: "Lifeboat <lifeboat@appliance.test>".into(),
        to: vec!["ops@example.test".into(), "Backup Admin <backup@example.test>".into()],
        ca_file: pki.map(|p| p.ca_cert.clone()),
    }
}

fn failed_backup_report() -> JobReport {
    let finished = chrono::Utc::now();
    JobReport {
        job_id: "17".into(),
        kind: "backup".into(),
        target: "/srv/files".into(),
        schedule: Some("nightly".into()),
        ok: false,
        outcome: "FAILED".into(),
        started: finished - chrono::Duration::seconds(42),
        finished,
        summary: "812 files read, 3 skipped".into(),
        error: Some("reading /srv/files/db.sqlite: Permission denied (os error 13)".into()),
        appliance: "lb-test".into(),
        attachments: Vec::new(),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn starttls_with_auth_plain_delivers_the_job_report() {
    let pki = TestPki::new();
    let sink = SmtpSink::start("starttls", Some(&pki), true, &[]);
    let mailer = Mailer::new(&settings(sink.port, SmtpSecurity::Starttls, Some(&pki), true)).unwrap();
    mailer.send_report(&failed_backup_report()).unwrap();

    let mail = sink.next_mail();
    assert_eq!(mail["subject"], "[Lifeboat lb-test] backup /srv/files: FAILED");
    assert_eq!(mail["mail_from"], "lifeboat@appliance.test");
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["ops@example.test", "backup@example.test"]));
    assert_eq!(mail["to"], "ops@example.test, Backup Admin <backup@example.test>");
    let body = mail["body"].as_str().unwrap();
    assert!(body.starts_with("Job 17 (backup of /srv/files): FAILED."), "{body}");
    assert!(body.contains("812 files read, 3 skipped"), "{body}");
    assert!(body.contains("reading /srv/files/db.sqlite: Permission denied (os error 13)"), "{body}");
    assert_eq!(mail["auth_user"], USER);
    assert_eq!(mail["auth_mechanism"], "PLAIN");
    assert_eq!(mail["encrypted"], true);
}

#[test]
fn implicit_tls_with_auth_login_delivers_a_success_report() {
    let pki = TestPki::new();
    let sink = SmtpSink::start("tls", Some(&pki), true, &["--exclude-mech", "PLAIN"]);
    let mailer = Mailer::new(&settings(sink.port, SmtpSecurity::Tls, Some(&pki), true)).unwrap();
    let mut report = failed_backup_report();
    report.ok = true;
    report.outcome = "ok".into();
    report.error = None;
    mailer.send_report(&report).unwrap();

    let mail = sink.next_mail();
    assert_eq!(mail["subject"], "[Lifeboat lb-test] backup /srv/files: ok");
    let body = mail["body"].as_str().unwrap();
    assert!(body.starts_with("Job 17 (backup of /srv/files): ok.") && !body.contains("Error:"), "{body}");
    assert_eq!(mail["auth_mechanism"], "LOGIN");
    assert_eq!(mail["encrypted"], true);
}

#[test]
fn plain_smtp_to_a_loopback_relay_without_auth() {
    let sink = SmtpSink::start("none", None, false, &[]);
    let mailer = Mailer::new(&settings(sink.port, SmtpSecurity::None, None, false)).unwrap();
    mailer.send_test("lb-test").unwrap();
    let mail = sink.next_mail();
    assert_eq!(mail["subject"], "[Lifeboat lb-test] test mail");
    assert!(mail["body"].as_str().unwrap().contains(&format!("127.0.0.1:{}", sink.port)));
    assert_eq!(mail["auth_user"], Value::Null);
    assert_eq!(mail["encrypted"], false);
}

#[test]
fn wrong_password_is_a_clear_error_naming_the_server() {
    let pki = TestPki::new();
    let sink = SmtpSink::start("starttls", Some(&pki), true, &[]);
    let mut s = settings(sink.port, SmtpSecurity::Starttls, Some(&pki), true);
    s.password = Some("not-the-password".into());
    let err = Mailer::new(&s).unwrap().send_test("lb-test").unwrap_err();
    assert!(matches!(err, NotifyError::AuthFailed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("localhost:{}", sink.port)), "{msg}");
    assert!(msg.contains(USER) && msg.contains("password"), "{msg}");
    assert!(!msg.contains("not-the-password"), "the error shows the password: {msg}");
    sink.assert_no_mail();
}

#[test]
fn missing_login_is_a_clear_error() {
    let pki = TestPki::new();
    let sink = SmtpSink::start("starttls", Some(&pki), true, &[]);
    let s = settings(sink.port, SmtpSecurity::Starttls, Some(&pki), false);
    let err = Mailer::new(&s).unwrap().send_test("lb-test").unwrap_err();
    assert!(matches!(err, NotifyError::AuthRequired { .. }), "{err:?}");
    assert!(err.to_string().contains("username and password"), "{err}");
}

#[test]
fn unreachable_server_is_a_clear_error_naming_it() {
    let port = free_port();
    let err = Mailer::new(&settings(port, SmtpSecurity::None, None, false)).unwrap().send_test("lb-test").unwrap_err();
    assert!(matches!(err, NotifyError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("cannot reach SMTP server 127.0.0.1:{port}")), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
}

#[test]
fn untrusted_certificate_is_a_tls_error() {
    let pki = TestPki::new();
    let sink = SmtpSink::start("starttls", Some(&pki), true, &[]);
    let err = Mailer::new(&settings(sink.port, SmtpSecurity::Starttls, None, true)).unwrap().send_test("lb-test").unwrap_err();
    assert!(matches!(err, NotifyError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("localhost:{}", sink.port)), "{err}");
    sink.assert_no_mail();
}

#[test]
fn starttls_required_but_not_offered_is_a_tls_error() {
    let sink = SmtpSink::start("none", None, false, &[]);
    let mut s = settings(sink.port, SmtpSecurity::Starttls, None, false);
    s.host = "127.0.0.1".into();
    let err = Mailer::new(&s).unwrap().send_test("lb-test").unwrap_err();
    assert!(matches!(err, NotifyError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("STARTTLS"), "{err}");
    sink.assert_no_mail();
}

#[test]
fn plain_smtp_to_a_remote_host_is_refused_before_connecting() {
    let mut s = settings(25, SmtpSecurity::None, None, false);
    s.host = "mail.example.test".into();
    let err = Mailer::new(&s).err().expect("plain SMTP to a remote host accepted");
    assert!(err.to_string().contains("only allowed for a relay on this machine"), "{err}");
}
