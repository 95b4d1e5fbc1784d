//! A real SMTP server on loopback for tests of code that sends mail: the
//! aiosmtpd script `testing/smtp_sink.py` (Debian package
//! python3-aiosmtpd, run by /usr/bin/python3), and a test CA with a
//! `localhost` certificate for its TLS modes. Only with feature `test-sink`.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The login the sink accepts when started with `auth`.
pub const USER: &str = "lifeboat-mailer";
/// The password the sink accepts for [`USER`].
pub const PASSWORD: &str = "s3cret-smtp-pass";

/// The aiosmtpd sink process; killed on drop.
pub struct SmtpSink {
    child: Child,
    /// Where it listens on 127.0.0.1.
    pub port: u16,
    mails: mpsc::Receiver<String>,
}

impl SmtpSink {
    /// `mode`: starttls, tls or none. With `auth`, logins as USER/PASSWORD
    /// are required; `extra` goes to the script as is.
    pub fn start(mode: &str, tls: Option<&TestPki>, auth: bool, extra: &[&str]) -> SmtpSink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testing/smtp_sink.py");
        // Debian's python3 (where python3-aiosmtpd lives), not whatever python3 is first on PATH.
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(script).args(["--mode", mode]).args(extra);
        if let Some(pki) = tls {
            cmd.arg("--cert").arg(&pki.server_cert).arg("--key").arg(&pki.server_key);
        }
        if auth {
            cmd.args(["--user", USER, "--password", PASSWORD]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start /usr/bin/python3 smtp_sink.py (apt install python3-aiosmtpd; scripts/setup.sh does)");
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

    /// A mail already received, without waiting (for async tests that
    /// must not block their runtime).
    /// The next mail received, if one is waiting (as the sink's JSON).
    pub fn try_mail(&self) -> Option<Value> {
        self.mails.try_recv().ok().map(|line| serde_json::from_str(&line).unwrap())
    }

    /// The next mail, waiting up to 20 s for it.
    pub fn next_mail(&self) -> Value {
        let line = self.mails.recv_timeout(Duration::from_secs(20)).expect("no mail reached the SMTP sink");
        serde_json::from_str(&line).unwrap()
    }

    /// Fails the test if a mail arrives within 300 ms.
    pub fn assert_no_mail(&self) {
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
pub struct TestPki {
    _dir: tempfile::TempDir,
    /// The CA's certificate (PEM).
    pub ca_cert: PathBuf,
    /// The server's certificate (PEM).
    pub server_cert: PathBuf,
    /// The server's key (PEM).
    pub server_key: PathBuf,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    /// A fresh CA and server certificate in a temporary directory.
    pub fn new() -> TestPki {
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
        let pki = TestPki { ca_cert: dir.path().join("ca.pem"), server_cert: dir.path().join("server.pem"), server_key: dir.path().join("server.key"), _dir: dir };
        std::fs::write(&pki.ca_cert, ca.pem()).unwrap();
        std::fs::write(&pki.server_cert, server.pem()).unwrap();
        std::fs::write(&pki.server_key, server_key.serialize_pem()).unwrap();
        pki
    }
}
