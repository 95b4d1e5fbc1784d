//! The notify, health and systemd tests' view of a daemon under test:
//! `Daemon` (common/daemon.rs) in its own scratch directory, with calls
//! answering (status, JSON).

use super::daemon::Daemon;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Appliance {
    pub daemon: Daemon,
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` (the plain loopback listener).
    pub url: String,
}

impl Appliance {
    /// Starts the daemon with an empty config file, `args` and `env`.
    pub fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Appliance {
        let dir = super::scratch(name);
        let daemon = Daemon::start_with(&dir.path().join("state"), Some(""), args, env);
        let url = daemon.http.clone();
        Appliance { daemon, dir, url }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.daemon.state_dir.clone()
    }

    pub fn admin_password(&self) -> String {
        self.daemon.admin_password.clone()
    }

    /// Logs in as admin; returns a new session token.
    pub fn login(&self) -> String {
        self.daemon.login(&self.daemon.admin_password).expect("admin login")
    }

    /// (HTTP status, JSON body or Null).
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        let r = self.daemon.call(method, path, token, body);
        (r.status, serde_json::from_str(&r.body).unwrap_or(Value::Null))
    }

    pub fn wait_job(&self, _token: &str, id: &str) -> Value {
        self.daemon.wait_job(id, Duration::from_secs(60))
    }

    pub fn log(&self) -> String {
        self.daemon.log_text()
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid() as u32
    }

    /// SIGTERM, waits for the exit; returns the whole log.
    pub fn stop(self) -> String {
        self.daemon.stop().stderr
    }
}

pub fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}
