//! A `lifeboat serve` under test: its own state directory, ephemeral
//! loopback ports (TLS and plain), the admin session, and a curl-based
//! API caller (curl is the REST peer DESIGN.md names).

use super::{bin, lb_cmd, Out};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Option<Child>,
    pub state_dir: PathBuf,
    /// https://127.0.0.1:PORT
    pub https: String,
    /// http://127.0.0.1:PORT (loopback plain listener)
    pub http: String,
    pub fingerprint: String,
    /// An admin session token.
    pub admin: String,
    pub admin_password: String,
    /// Everything the daemon wrote to stderr (its log) so far.
    pub log: Arc<Mutex<String>>,
}

pub struct Resp {
    pub status: u16,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.body)
    }
}

impl Daemon {
    /// Starts `lifeboat serve` with `state_dir` (created if needed), an
    /// optional config file body and extra environment, waits until it
    /// listens, and logs in as admin.
    pub fn start(state_dir: &Path, config: Option<&str>, env: &[(&str, &str)]) -> Daemon {
        Self::start_with(state_dir, config, &[], env)
    }

    /// `start` with extra `serve` arguments.
    pub fn start_with(state_dir: &Path, config: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        std::fs::create_dir_all(state_dir).unwrap();
        let mut c = lb_cmd();
        c.arg("serve").arg("--state-dir").arg(state_dir).args(["--listen", "127.0.0.1:0", "--listen-plain", "127.0.0.1:0"]);
        // Jobs read and write only under configured roots: the test's
        // scratch directory (the state directory inside it stays
        // protected), unless the test's config names its own.
        let scratch = state_dir.parent().expect("the state directory is in a scratch directory");
        let mut text = String::new();
        let given = config.unwrap_or_default();
        if !given.contains("backup_roots") {
            text.push_str(&format!("backup_roots = [{:?}]\n", scratch.display().to_string()));
        }
        if !given.contains("restore_roots") {
            text.push_str(&format!("restore_roots = [{:?}]\n", scratch.display().to_string()));
        }
        text.push_str(given);
        let p = state_dir.with_extension("toml");
        std::fs::write(&p, text).unwrap();
        c.arg("--config").arg(&p);
        c.args(args);
        // Not run by systemd, whatever the test runner was started by.
        c.env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC").env_remove("JOURNAL_STREAM");
        c.env("LIFEBOAT_LOG", "info");
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap_or_else(|e| panic!("cannot start {} serve: {e}", bin().display()));
        let log = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let l2 = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                l2.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut https, mut http, mut fingerprint) = (String::new(), String::new(), String::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        while https.is_empty() || http.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("lifeboat: API on ") {
                        let (url, fp) = rest.split_once(" (certificate SHA-256 fingerprint ").unwrap();
                        https = url.to_string();
                        fingerprint = fp.trim_end_matches(')').to_string();
                    } else if let Some(rest) = line.strip_prefix("lifeboat: plain HTTP on ") {
                        http = rest.split_whitespace().next().unwrap().to_string();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("lifeboat serve did not come up; its log:\n{}", log.lock().unwrap());
                }
            }
        }
        let admin_password = match std::fs::read_to_string(state_dir.join("initial-admin-password")) {
            Ok(s) => s.trim().to_string(),
            Err(_) => String::new(),
        };
        let mut d = Daemon { child: Some(child), state_dir: state_dir.to_path_buf(), https, http, fingerprint, admin: String::new(), admin_password, log };
        if !d.admin_password.is_empty() {
            d.admin = d.login(&d.admin_password.clone()).expect("admin login with the initial password");
        }
        d
    }

    pub fn login(&self, password: &str) -> Result<String, Resp> {
        let r = self.call("POST", "/api/login", None, Some(&serde_json::json!({ "username": "admin", "password": password })));
        if r.status == 200 {
            Ok(r.json()["token"].as_str().unwrap().to_string())
        } else {
            Err(r)
        }
    }

    /// One API call over the plain loopback listener.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
        curl(&self.http, method, path, token, body, &[])
    }

    /// The same over TLS (certificate not checked: see the CLI tests for pinning).
    pub fn call_tls(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
        curl(&self.https, method, path, token, body, &["-k", "--http2"])
    }

    /// As admin, expecting a 2xx.
    #[track_caller]
    pub fn admin_ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let r = self.call(method, path, Some(&self.admin), body);
        assert!((200..300).contains(&r.status), "{method} {path}: {r:?}");
        if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        }
    }

    pub fn token(&self, name: &str, role: &str) -> String {
        let v = self.admin_ok("POST", "/api/tokens", Some(&serde_json::json!({ "name": name, "role": role })));
        v["token"].as_str().unwrap().to_string()
    }

    /// Polls a job until it has finished; returns it.
    #[track_caller]
    pub fn wait_job(&self, id: &str, timeout: Duration) -> Value {
        let end = Instant::now() + timeout;
        loop {
            let j = self.admin_ok("GET", &format!("/api/jobs/{id}"), None);
            if j["state"] != "running" {
                return j;
            }
            assert!(Instant::now() < end, "job {id} still running after {timeout:?}: {j}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A `lifeboat --server ... --token ...` command (remote mode, TLS
    /// with the certificate pinned).
    pub fn remote(&self, token: &str) -> Command {
        let mut c = lb_cmd();
        c.args(["--server", &self.https, "--fingerprint", &self.fingerprint, "--token", token]);
        c
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL, like a crash or a power cut.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> Out {
        let mut c = self.child.take().unwrap();
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let status = c.wait().unwrap();
        Out { status, stdout: String::new(), stderr: self.log_text(), args: "serve".into() }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn curl(base: &str, method: &str, path: &str, token: Option<&str>, body: Option<&Value>, extra: &[&str]) -> Resp {
    let mut c = Command::new("curl");
    c.args(["-s", "-S", "--max-time", "60", "-X", method, "-w", "\n%{http_code}"]).args(extra);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", &b.to_string()]);
    }
    c.arg(format!("{base}{path}"));
    let o = c.output().expect("curl runs");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Resp { status: code.trim().parse().unwrap_or(0), body: body.to_string() }
}

/// Reads the event stream in the background (curl -N), collecting events.
pub struct EventTap {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
}

impl EventTap {
    pub fn start(d: &Daemon) -> EventTap {
        let mut child = Command::new("curl").args(["-sN", "-H", &format!("Authorization: Bearer {}", d.admin), &format!("{}/api/events", d.http)]).stdout(Stdio::piped()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let e2 = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(data) = line.strip_prefix("data: ") {
                    e2.lock().unwrap().push(serde_json::from_str(data).unwrap());
                }
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        EventTap { child, events }
    }

    /// The first event `f` accepts, waiting up to a minute for it.
    pub fn wait_for(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = self.events.lock().unwrap().iter().find(|e| f(e)) {
                return v.clone();
            }
            assert!(Instant::now() < end, "no event {what}; got {:?}", self.events.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EventTap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
