//! schemathesis (from PyPI, installed by scripts/setup.sh into
//! /opt/lifeboat-test-venv) generates requests from the served OpenAPI
//! document; no answer may be a 500 and every answer must match the
//! document. Two runs: every operation with a read-only token (mutations
//! are refused before their body is looked at), then the mutations that
//! are safe to fuzz with an admin token. Jobs, datastore creation and
//! schedule creation are left out of the admin run: random absolute paths
//! would back up or restore over this machine's own files. VM
//! registration and exports are in: a random socket or snapshot is refused.

mod common;

use common::daemon::Daemon;
use common::*;
use std::process::Command;

const SCHEMATHESIS: &str = "/opt/lifeboat-test-venv/bin/schemathesis";

fn schemathesis(d: &Daemon, token: &str, extra: &[&str]) -> Out {
    let mut c = Command::new(SCHEMATHESIS);
    c.arg("run")
        .arg(format!("{}/api/openapi.json", d.http))
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
        .args(["--hypothesis-max-examples", "25", "--hypothesis-seed", "1", "--request-timeout", "10000", "--workers", "2"])
        .args(["--exclude-path", "/api/events", "--experimental", "openapi-3.1"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(extra)
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1");
    let o = c.output().unwrap_or_else(|e| panic!("cannot run {SCHEMATHESIS} (scripts/setup.sh installs it): {e}"));
    Out { status: o.status, stdout: String::from_utf8_lossy(&o.stdout).into_owned(), stderr: String::from_utf8_lossy(&o.stderr).into_owned(), args: format!("schemathesis {extra:?}") }
}

#[test]
fn schemathesis_finds_no_server_errors() {
    let dir = scratch("api-fuzz");
    let d = Daemon::start(&dir.path().join("state"), None, &[]);
    let ro = d.token("fuzz-reader", "read-only");
    let o = schemathesis(&d, &ro, &[]);
    assert!(o.ok(), "schemathesis (read-only token) found problems:\n{o}");
    assert!(o.stdout.contains("passed"), "{o}");
    let admin = d.token("fuzz-admin", "admin");
    let o = schemathesis(
        &d,
        &admin,
        &["--include-path-regex", r"^/api/(tokens|agents|settings/smtp$|jobs/\{id\}|datastores/\{name\}/snapshots/\{id\}$|password|logout|schedules/\{id\}$|health|vms|exports|labs)"],
    );
    assert!(o.ok(), "schemathesis (admin token) found problems:\n{o}");
    // The daemon is still there and the admin token still works.
    assert_eq!(d.call("GET", "/api/datastores", Some(&admin), None).status, 200);
    let log = d.log_text();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
}
