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
    let (ok, text) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", "--threshold=60"])
        .arg(&unit));
    let overall = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or("(no overall line)");
    assert!(ok, "exposure above 6.0: {overall}\n{text}");
    for setting in ["NoNewPrivileges=", "PrivateTmp=", "ProtectSystem=", "CapabilityBoundingSet=~CAP_SYS_MODULE"] {
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
