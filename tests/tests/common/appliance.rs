//! `lifeboat serve` for end-to-end tests: a daemon on loopback ports with
//! its own state directory, stderr (its log) in a file, and curl as the
//! API client.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Appliance {
    child: Child,
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` (the plain loopback listener).
    pub url: String,
    pub log_path: PathBuf,
}

impl Appliance {
    /// Starts the daemon with `env` added; waits until it listens.
    pub fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Appliance {
        let dir = super::scratch(name);
        let config = dir.path().join("lifeboat.toml");
        std::fs::write(&config, "").unwrap();
        let log_path = dir.path().join("daemon.log");
        let mut cmd = super::lb_cmd();
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--listen", "127.0.0.1:0", "--listen-plain", "127.0.0.1:0"])
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start lifeboat serve");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let url = loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("lifeboat: plain HTTP on ") {
                        break rest.split_whitespace().next().unwrap().to_string();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("lifeboat serve did not start:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default());
                }
            }
        };
        Appliance { child, dir, url, log_path }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The admin password written on first start.
    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("initial-admin-password")).unwrap().trim().to_string()
    }

    /// Logs in as admin; returns the session token.
    pub fn login(&self) -> String {
        let body = serde_json::json!({"username": "admin", "password": self.admin_password()});
        let (status, v) = self.call("POST", "/api/login", None, Some(&body));
        assert_eq!(status, 200, "login: {v}");
        v["token"].as_str().unwrap().to_string()
    }

    /// One API call with curl: (HTTP status, JSON body or Null).
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        let mut c = Command::new("curl");
        c.args(["-sS", "-X", method, "-w", "\n%{http_code}", "--max-time", "60"]);
        if let Some(t) = token {
            c.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary"]).arg(b.to_string());
        }
        let out = c.arg(format!("{}{path}", self.url)).output().expect("curl (apt install curl)");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or_else(|| panic!("curl {method} {path}: {text} {}", String::from_utf8_lossy(&out.stderr)));
        let status: u16 = code.trim().parse().unwrap_or_else(|_| panic!("curl {method} {path}: {text}"));
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// Polls a job until it finished; returns its JobInfo.
    pub fn wait_job(&self, token: &str, id: &str) -> Value {
        for _ in 0..600 {
            let (status, job) = self.call("GET", &format!("/api/jobs/{id}"), Some(token), None);
            assert_eq!(status, 200, "{job}");
            if job["state"] != "running" {
                return job;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("job {id} still running after 60 s");
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the exit; returns the whole log.
    pub fn stop(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..200 {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}
