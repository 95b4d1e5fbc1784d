//! The systemd files of the appliance: `systemd-analyze verify` accepts the
//! service unit without a warning (with ExecStart pointing at the built
//! binary, since verify checks that it exists), its hardening stays at or
//! below a fixed exposure level, and systemd-tmpfiles creates the
//! directories the tmpfiles snippet names.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// The unit as shipped, with /usr/bin/lifeboat replaced by the binary under test.
fn unit_for_this_build(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(common::workspace().join("systemd/lifeboat.service")).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/lifeboat serve --config /etc/lifeboat/lifeboat.toml"), "{text}");
    let unit = dir.join("lifeboat.service");
    std::fs::write(&unit, text.replace("/usr/bin/lifeboat", common::bin().to_str().unwrap())).unwrap();
    unit
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (apt install systemd)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn service_unit_passes_systemd_analyze_verify() {
    let dir = common::scratch("systemd-verify");
    let unit = unit_for_this_build(dir.path());
    let (ok, text) = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert!(ok, "systemd-analyze verify failed:\n{text}");
    // Unknown or misspelt keys are only warnings to verify: none allowed.
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("lifeboat")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns about the unit:\n{}", ours.join("\n"));
}

#[test]
fn verify_catches_a_broken_unit() {
    // The check above is only worth something if verify fails on a unit
    // whose binary is missing.
    let dir = common::scratch("systemd-verify-broken");
    let unit = dir.path().join("lifeboat.service");
    let text = std::fs::read_to_string(common::workspace().join("systemd/lifeboat.service")).unwrap();
    std::fs::write(&unit, text.replace("/usr/bin/lifeboat", "/nonexistent/lifeboat")).unwrap();
    let (ok, text) = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert!(!ok && text.contains("/nonexistent/lifeboat"), "{text}");
}

#[test]
fn service_hardening_stays_below_medium_exposure() {
    let dir = common::scratch("systemd-security");
    let unit = unit_for_this_build(dir.path());
    // Exposure is 0.0 (locked down) .. 10.0; --threshold makes exit non-zero above it.
    let (ok, text) = run(Command::new("systemd-analyze").args(["security", "--offline=yes", "--no-pager", "--threshold=50"]).arg(&unit));
    let overall = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or("(no overall line)");
    assert!(ok, "exposure above 5.0: {overall}\n{text}");
    for setting in ["NoNewPrivileges=", "PrivateTmp=", "ProtectSystem=", "CapabilityBoundingSet=~CAP_SYS_MODULE", "ProtectHostname=", "SystemCallFilter=~@debug"] {
        let line = text.lines().find(|l| l.contains(setting)).unwrap_or_else(|| panic!("{setting} not assessed:\n{text}"));
        assert!(line.trim_start().starts_with('✓'), "{setting} not in force: {line}");
    }
}

#[test]
fn tmpfiles_snippet_creates_the_directories() {
    let root = common::scratch("systemd-tmpfiles");
    let snippet = common::workspace().join("systemd/lifeboat.tmpfiles");
    let (ok, text) = run(Command::new("systemd-tmpfiles").arg("--create").arg(format!("--root={}", root.path().display())).arg(&snippet));
    assert!(ok, "systemd-tmpfiles --create failed:\n{text}");
    for (dir, mode) in [("etc/lifeboat", 0o750), ("var/lib/lifeboat", 0o700), ("srv/lifeboat", 0o700)] {
        let meta = std::fs::metadata(root.path().join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{dir}");
    }
}

/// The service protocol as systemd speaks it: a datagram socket in
/// NOTIFY_SOCKET, WATCHDOG_USEC set. `serve` must say READY=1 only once
/// its API answers, then WATCHDOG=1 at least every half watchdog period.
#[test]
fn serve_says_ready_once_listening_and_feeds_the_watchdog() {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    let dir = common::scratch("systemd-notify");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let app = common::appliance::Appliance::start("systemd-notify", &[], &[("NOTIFY_SOCKET", socket_path.to_str().unwrap()), ("WATCHDOG_USEC", "2000000")]);
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("no message from lifeboat serve on NOTIFY_SOCKET");
    let first = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(first.lines().any(|l| l == "READY=1"), "first notification: {first:?}");
    // Ready means ready: the API answers now.
    let (status, v) = app.call("GET", "/api/health", None, None);
    assert_eq!(status, 200, "{v}");

    // Pings every second (WatchdogSec=2s): at least two within 3.5 s.
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(3500) {
        if let Ok(n) = socket.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "WATCHDOG=1") {
                pings += 1;
            }
        }
    }
    assert!(pings >= 2, "{pings} watchdog pings in 3.5 s with WATCHDOG_USEC=2000000");
}

#[test]
fn serve_without_systemd_sends_nothing_and_logs_for_humans() {
    // No NOTIFY_SOCKET: nothing to notify, no warning about it; stderr is
    // a file, not the journal, so the log is human-readable, not JSON.
    let app = common::appliance::Appliance::start("systemd-none", &[], &[]);
    let (status, _) = app.call("GET", "/api/health", None, None);
    assert_eq!(status, 200);
    let log = app.stop();
    assert!(log.contains("API listening"), "{log}");
    assert!(!log.contains("cannot notify systemd"), "{log}");
    assert!(!log.trim_start().starts_with('{'), "human log expected:\n{log}");
}

#[test]
fn serve_logs_json_when_stderr_is_the_journal() {
    // systemd sets JOURNAL_STREAM=<dev>:<inode> of the stream it gave the
    // service; `lifeboat serve` writes JSON then. Here the "journal" is the
    // log file the test hands it, identified the same way.
    use std::os::unix::fs::MetadataExt;
    let dir = common::scratch("systemd-journal");
    let log_path = dir.path().join("journal");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    let config = dir.path().join("lifeboat.toml");
    std::fs::write(&config, "").unwrap();
    let mut child = common::lb_cmd()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--listen", "127.0.0.1:0"])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut text = String::new();
    for _ in 0..200 {
        text = std::fs::read_to_string(&log_path).unwrap();
        if text.contains("API listening") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = text.lines().find(|l| l.contains("API listening")).unwrap_or_else(|| panic!("no API listening line:\n{text}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["fields"]["message"], "API listening");
}
