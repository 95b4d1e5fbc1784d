//! Mail delivery against a real SMTP server on loopback (aiosmtpd, from the
//! Debian package python3-aiosmtpd): STARTTLS and implicit TLS with a
//! certificate from a test CA, AUTH PLAIN and LOGIN, a plain loopback relay,
//! and the errors an admin sees for a wrong password, a dead relay and an
//! untrusted certificate.

use lifeboat_notify::{JobReport, Mailer, NotifyError, SmtpSecurity, SmtpSettings};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const USER: &str = "lifeboat-mailer";
const PASSWORD: &str = "s3cret-smtp-pass";

/// The aiosmtpd sink process; killed on drop.
struct SmtpSink {
    child: Child,
    port: u16,
    mails: mpsc::Receiver<String>,
}

impl SmtpSink {
    /// `mode`: starttls, tls or none. With `auth`, logins as USER/PASSWORD
    /// are required; `extra` goes to the script as is.
    fn start(mode: &str, tls: Option<&TestPki>, auth: bool, extra: &[&str]) -> SmtpSink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
        // Debian's python3 (where python3-aiosmtpd lives), not whatever python3 is first on PATH.
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(script).args(["--mode", mode]).args(extra);
        if let Some(pki) = tls {
            cmd.arg("--cert").arg(&pki.server_cert).arg("--key").arg(&pki.server_key);
        }
        if auth {
            cmd.args(["--user", USER, "--password", PASSWORD]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start /usr/bin/python3 smtp_sink.py (apt install python3-aiosmtpd; scripts/setup.sh does)");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(20)).expect("SMTP sink did not start");
        let port = first.strip_prefix("LISTENING ").expect(&first).parse().unwrap();
        SmtpSink { child, port, mails: rx }
    }

    fn next_mail(&self) -> Value {
        let line = self.mails.recv_timeout(Duration::from_secs(20)).expect("no mail reached the SMTP sink");
        serde_json::from_str(&line).unwrap()
    }

    fn assert_no_mail(&self) {
        assert!(self.mails.recv_timeout(Duration::from_millis(300)).is_err(), "the sink received a mail");
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a server certificate for `localhost` signed by it.
struct TestPki {
    _dir: tempfile::TempDir,
    ca_cert: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl TestPki {
    fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(DnType::CommonName, "Lifeboat test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
        let pki = TestPki {
            ca_cert: dir.path().join("ca.pem"),
            server_cert: dir.path().join("server.pem"),
            server_key: dir.path().join("server.key"),
            _dir: dir,
        };
        std::fs::write(&pki.ca_cert, ca.pem()).unwrap();
        std::fs::write(&pki.server_cert, server.pem()).unwrap();
        std::fs::write(&pki.server_key, server_key.serialize_pem()).unwrap();
        pki
    }
}

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
        started: finished - chrono::Duration::seconds(42),
        finished,
        summary: "812 files read, 3 skipped".into(),
        error: Some("reading /srv/files/db.sqlite: Permission denied (os error 13)".into()),
        appliance: "lb-test".into(),
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
    assert!(body.starts_with("Job 17 (backup of /srv/files) FAILED."), "{body}");
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
    report.error = None;
    mailer.send_report(&report).unwrap();

    let mail = sink.next_mail();
    assert_eq!(mail["subject"], "[Lifeboat lb-test] backup /srv/files: ok");
    let body = mail["body"].as_str().unwrap();
    assert!(body.contains("finished successfully") && !body.contains("Error:"), "{body}");
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
    let err = Mailer::new(&settings(sink.port, SmtpSecurity::Starttls, None, true))
        .unwrap()
        .send_test("lb-test")
        .unwrap_err();
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
