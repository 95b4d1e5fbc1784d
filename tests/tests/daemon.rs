//! The daemon end to end: `lifeboat serve` with its REST API driven by
//! curl and by the CLI's remote mode. Auth on every route, jobs with
//! events and persisted history, crash recovery, a panicking job,
//! schedules with overlap skipping and retention.

mod common;

use common::daemon::{curl, Daemon, EventTap};
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Every operation of the served OpenAPI document, with path parameters filled in.
fn operations(d: &Daemon) -> Vec<(String, String, Vec<String>)> {
    let spec = d.admin_ok("GET", "/api/openapi.json", None);
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let tags = op["tags"].as_array().map(|t| t.iter().map(|x| x.as_str().unwrap().to_string()).collect()).unwrap_or_default();
            let concrete = path.replace("{name}", "default").replace("{id}", "0123456789abcdef");
            ops.push((method.to_uppercase(), concrete, tags));
        }
    }
    ops
}

fn public(path: &str) -> bool {
    path == "/api/login" || path == "/api/health"
}

#[test]
fn every_route_refuses_missing_wrong_and_weak_tokens() {
    let dir = scratch("daemon-auth");
    let d = Daemon::start(&dir.path().join("state"), None, &[]);
    let ro = d.token("reader", "read-only");
    let bo = d.token("uploader", "backup-only");
    let ops = operations(&d);
    assert!(ops.len() >= 28, "the OpenAPI document lists only {} operations", ops.len());
    let body = json!({});
    let mut checked = 0;
    for (method, path, tags) in &ops {
        // Signing in to the web console is public too.
        if public(path) || (method == "POST" && path == "/api/session") {
            continue;
        }
        let body = if method == "POST" || method == "PUT" { Some(&body) } else { None };
        for token in [None, Some("not-a-token"), Some("s.0000"), Some("0123456789abcdef.00")] {
            let r = d.call(method, path, token, body);
            assert_eq!(r.status, 401, "{method} {path} with token {token:?}: {r:?}");
            assert_eq!(r.json()["error"], "unauthorized");
        }
        // Same over TLS, HTTP/2.
        let r = d.call_tls(method, path, None, body);
        assert_eq!(r.status, 401, "TLS {method} {path}: {r:?}");
        if path == "/api/logout" || path == "/api/session" || path == "/api/events" {
            // (The event stream never ends; readers are tested with EventTap.)
            // Any valid token may end its own session.
            checked += 1;
            continue;
        }
        // Read-only: may read, may not change anything nor see tokens.
        let r = d.call(method, path, Some(&ro), body);
        let admin_only_read = ["/api/tokens", "/api/agents", "/api/settings"].iter().any(|p| path.starts_with(p));
        if method != "GET" || admin_only_read {
            assert_eq!(r.status, 403, "read-only {method} {path}: {r:?}");
            assert!(r.json()["message"].as_str().unwrap().contains("role"), "{r:?}");
        } else {
            assert!(r.status != 401 && r.status != 403, "read-only {method} {path}: {r:?}");
        }
        // Backup-only: nothing but the agent upload routes.
        if !tags.iter().any(|t| t == "agent") {
            let r = d.call(method, path, Some(&bo), body);
            assert_eq!(r.status, 403, "backup-only {method} {path}: {r:?}");
        }
        checked += 1;
    }
    assert!(checked >= 26);
    // Routes that take a path on the appliance: an operator (or admin)
    // gets 403 for a path outside the roots, with `..`, through a
    // symlink, or in the state directory; read-only and backup-only get
    // 403 for their role whatever the path. (tests/tests/confine.rs has
    // every route with every case.)
    let op = d.token("ops", "operator");
    let scratch_root = dir.path();
    let escape = scratch_root.join("escape");
    std::fs::create_dir_all(&escape).unwrap();
    std::os::unix::fs::symlink("/etc", escape.join("etc")).unwrap();
    let cases = [
        ("outside the roots", "/var/tmp/lifeboat-auth-test".to_string()),
        ("..", format!("{}/../../etc", scratch_root.display())),
        ("symlink escape", escape.join("etc/lifeboat-auth-test").display().to_string()),
        ("state directory", d.state_dir.display().to_string()),
    ];
    for (what, p) in &cases {
        let routes = [
            ("POST", "/api/jobs".to_string(), json!({ "kind": "restore", "datastore": "default", "snapshot": "latest", "target": p })),
            ("POST", "/api/jobs".to_string(), json!({ "kind": "vm-restore", "datastore": "default", "snapshot": "latest", "target": p })),
            ("POST", "/api/jobs".to_string(), json!({ "kind": "backup", "datastore": "default", "paths": [p] })),
            ("POST", "/api/datastores/default/snapshots/0123456789abcdef/restore".to_string(), json!({ "target": p })),
            ("POST", "/api/schedules".to_string(), json!({ "name": "s", "cron": "0 0 3 * * *", "job": { "kind": "backup", "datastore": "default", "paths": [p] } })),
            (
                "PUT",
                "/api/schedules/0123456789abcdef".to_string(),
                json!({ "name": "s", "cron": "0 0 3 * * *", "job": { "kind": "restore", "datastore": "default", "snapshot": "latest", "target": p } }),
            ),
            ("POST", "/api/datastores".to_string(), json!({ "name": "x", "path": p })),
        ];
        for (method, path, body) in &routes {
            if path == "/api/datastores" {
                // Admin only: the operator is refused for its role, the
                // admin for the path (datastores have no root: a path
                // outside the roots is not refused for them).
                let r = d.call(method, path, Some(&op), Some(body));
                assert!(r.status == 403 && r.json()["message"].as_str().unwrap().contains("role"), "{r:?}");
                if *what != "outside the roots" {
                    assert_eq!(d.call(method, path, Some(&d.admin), Some(body)).status, 403, "{method} {path} ({what}) {body}");
                }
            } else {
                let r = d.call(method, path, Some(&op), Some(body));
                assert_eq!(r.status, 403, "{method} {path} ({what}) {body}: {r:?}");
            }
            for tok in [&ro, &bo] {
                let r = d.call(method, path, Some(tok), Some(body));
                assert_eq!(r.status, 403, "{method} {path} ({what}): {r:?}");
                assert!(r.json()["message"].as_str().unwrap().contains("role"), "{r:?}");
            }
        }
    }
    assert!(!Path::new("/var/tmp/lifeboat-auth-test").exists() && !Path::new("/etc/lifeboat-auth-test").exists());
    // Export disks are ids, not paths.
    let r = d.call("POST", "/api/exports", Some(&op), Some(&json!({ "datastore": "default", "snapshot": "latest", "disk": "../../etc/x", "writable": true })));
    assert_eq!(r.status, 400, "{r:?}");
    // The public ones answer without a token; unknown routes are a JSON 404.
    assert_eq!(d.call("GET", "/api/health", None, None).status, 200);
    let r = d.call("GET", "/api/nope", Some(&d.admin), None);
    assert_eq!(r.status, 404);
    assert!(r.json()["message"].as_str().unwrap().contains("/api/nope"));
    // Malformed JSON is a 400 with our error document, not a 500.
    let r = curl(&d.http, "POST", "/api/jobs", Some(&d.admin), None, &["-H", "Content-Type: application/json", "--data-binary", "{\"kind\":"]);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["error"], "bad-request");
}

#[test]
fn openapi_document_matches_docs() {
    let dir = scratch("daemon-openapi");
    let d = Daemon::start(&dir.path().join("state"), None, &[]);
    let served = d.call("GET", "/api/openapi.json", Some(&d.admin), None);
    assert_eq!(served.status, 200);
    let path = workspace().join("docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, format!("{}\n", served.body.trim_end())).unwrap();
    }
    let committed = std::fs::read_to_string(&path).expect("docs/openapi.json exists (UPDATE_OPENAPI=1 writes it)");
    let a: Value = serde_json::from_str(&committed).unwrap();
    let b: Value = served.json();
    assert!(a == b, "docs/openapi.json is out of date: rerun this test with UPDATE_OPENAPI=1 and commit the file");
}

fn start_job(d: &Daemon, spec: Value) -> String {
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&spec));
    assert_eq!(r.status, 202, "{r:?}");
    r.json()["id"].as_str().unwrap().to_string()
}

#[test]
fn jobs_stream_events_restore_and_survive_restarts_and_crashes() {
    let dir = scratch("daemon-jobs");
    let state = dir.path().join("state");
    let src = dir.path().join("src");
    gen_tree(&src, 7, TreeSpec { files: 300, big_files: 3, big_size: 6 << 20, ..TreeSpec::small() });
    // Small packs, so an interrupted backup leaves committed packs behind.
    let ds = Ds::init(state.join("datastores/default"));
    ds.set_pack_target(1 << 20);

    let d = Daemon::start(&state, None, &[]);
    let tap = EventTap::start(&d);
    let backup = start_job(&d, json!({ "kind": "backup", "datastore": "default", "paths": [src], "tags": ["api"] }));
    let job = d.wait_job(&backup, Duration::from_secs(120));
    assert_eq!(job["state"], "succeeded", "{job}");
    let snap = job["result"]["snapshot"].as_str().unwrap().to_string();
    assert_eq!(job["result"]["summary"]["files"], 300 + 3);
    tap.wait_for("backup running", |e| e["type"] == "job-state" && e["job"]["id"] == backup.as_str() && e["job"]["state"] == "running");
    tap.wait_for("backup succeeded", |e| e["type"] == "job-state" && e["job"]["id"] == backup.as_str() && e["job"]["state"] == "succeeded");

    let snaps = d.admin_ok("GET", "/api/datastores/default/snapshots", None);
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["id"], snap.as_str());
    assert_eq!(snaps[0]["tags"], json!(["api"]));

    let target = dir.path().join("restored");
    let r = d.call("POST", &format!("/api/datastores/default/snapshots/{}/restore", &snap[..12]), Some(&d.admin), Some(&json!({ "target": target })));
    assert_eq!(r.status, 202, "{r:?}");
    let rj = d.wait_job(r.json()["id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!(rj["state"], "succeeded", "{rj}");
    assert_same_tree(&src, &target, &CompareOpts::full());

    let verify = start_job(&d, json!({ "kind": "verify", "datastore": "default", "read_data": true }));
    let vj = d.wait_job(&verify, Duration::from_secs(120));
    assert_eq!(vj["state"], "succeeded", "{vj}");
    assert!(vj["result"]["bytes_read"].as_u64().unwrap() > 0);
    let log = d.call("GET", &format!("/api/jobs/{backup}/log"), Some(&d.admin), None);
    assert!(log.body.contains("started backup") && log.body.contains("finished"), "{log:?}");
    // Bad requests name what is wrong.
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "backup", "datastore": "nope", "paths": [src] })));
    assert_eq!(r.status, 404);
    assert!(r.json()["message"].as_str().unwrap().contains("\"nope\""), "{r:?}");
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "backup", "datastore": "default", "paths": ["relative"] })));
    assert_eq!(r.status, 400);
    let r = d.call("POST", &format!("/api/jobs/{backup}/cancel"), Some(&d.admin), None);
    assert_eq!(r.status, 409, "{r:?}");
    drop(tap);
    let out = d.stop();
    assert!(out.status.success(), "serve did not stop cleanly on SIGTERM: {out}");

    // History survives a restart.
    let d = Daemon::start(&state, None, &[]);
    let jobs = d.admin_ok("GET", "/api/jobs", None);
    let ids: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&backup.as_str()) && ids.contains(&verify.as_str()), "{jobs}");
    assert_eq!(d.admin_ok("GET", &format!("/api/jobs/{backup}"), None)["state"], "succeeded");
    d.stop();

    // A backup cut off by a crash comes back `interrupted`; gc reclaims
    // what it left; the datastore checks clean and the first snapshot restores.
    let src2 = dir.path().join("src2");
    gen_tree(&src2, 8, TreeSpec { files: 100, big_files: 4, big_size: 5 << 20, ..TreeSpec::small() });
    let d = Daemon::start(&state, None, &[("LIFEBOAT_FAILPOINTS", "snapshot-commit=sleep60000")]);
    let committed = ds.packs().len();
    let cut = start_job(&d, json!({ "kind": "backup", "datastore": "default", "paths": [src2] }));
    let end = Instant::now() + Duration::from_secs(60);
    // Packs are sealed in groups: wait for the cut run's own.
    while ds.packs().len() < committed + 4 {
        assert!(Instant::now() < end, "the backup wrote no packs");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    d.kill();
    let d = Daemon::start(&state, None, &[]);
    let j = d.admin_ok("GET", &format!("/api/jobs/{cut}"), None);
    assert_eq!(j["state"], "interrupted", "{j}");
    assert!(j["error"].as_str().unwrap().contains("gc"), "{j}");
    let before = ds.pack_bytes();
    let gc = start_job(&d, json!({ "kind": "gc", "datastore": "default" }));
    let gj = d.wait_job(&gc, Duration::from_secs(120));
    assert_eq!(gj["state"], "succeeded", "{gj}");
    assert!(gj["result"]["bytes_freed"].as_u64().unwrap() > 0, "gc freed nothing of the interrupted run: {gj}");
    assert!(ds.pack_bytes() < before);
    assert_eq!(d.admin_ok("GET", "/api/datastores/default/snapshots", None).as_array().unwrap().len(), 1);
    d.stop();
    ds.assert_check_clean();
    ds.assert_restores(&snap, &src, &dir.path().join("scratch"));
}

#[test]
fn a_cancelled_job_ends_cancelled_and_a_failed_one_says_why() {
    let dir = scratch("daemon-cancel");
    let src = dir.path().join("src");
    gen_tree(&src, 4, TreeSpec { files: 200, big_files: 8, big_size: 4 << 20, ..TreeSpec::small() });
    let ds = Ds::init(dir.path().join("state/datastores/default"));
    ds.set_pack_target(1 << 20);
    // Every pack write waits: the backup still runs when the cancel comes.
    let d = Daemon::start(&dir.path().join("state"), None, &[("LIFEBOAT_FAILPOINTS", "pack-write=sleep300")]);
    let id = start_job(&d, json!({ "kind": "backup", "datastore": "default", "paths": [src] }));
    let end = Instant::now() + Duration::from_secs(60);
    while d.admin_ok("GET", &format!("/api/jobs/{id}"), None)["progress"]["bytes_done"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < end, "the backup never started reading");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = d.call("POST", &format!("/api/jobs/{id}/cancel"), Some(&d.admin), None);
    assert!(r.status < 300, "{r:?}");
    let j = d.wait_job(&id, Duration::from_secs(120));
    assert_eq!(j["state"], "cancelled", "{j}");
    assert_eq!(j["error_kind"], "cancelled", "{j}");
    assert_eq!(d.admin_ok("GET", "/api/datastores/default/snapshots", None).as_array().unwrap().len(), 0);
    // A snapshot that is not there: the job names it, and says it is missing
    // rather than broken.
    let r = start_job(&d, json!({ "kind": "verify", "datastore": "default" }));
    assert_eq!(d.wait_job(&r, Duration::from_secs(60))["state"], "succeeded");
    let vr = start_job(&d, json!({ "kind": "vm-restore", "datastore": "default", "snapshot": "ffffffff", "target": dir.path().join("out") }));
    let j = d.wait_job(&vr, Duration::from_secs(60));
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(j["error_kind"], "not-found", "{j}");
    assert!(j["error"].as_str().unwrap().contains("ffffffff"), "{j}");
    d.stop();
}

#[test]
fn a_panicking_job_fails_and_the_daemon_carries_on() {
    let dir = scratch("daemon-panic");
    let src = dir.path().join("src");
    gen_tree(&src, 3, TreeSpec::small());
    let d = Daemon::start(&dir.path().join("state"), None, &[("LIFEBOAT_FAILPOINTS", "snapshot-commit=panic")]);
    let first = start_job(&d, json!({ "kind": "backup", "datastore": "default", "paths": [src] }));
    let j = d.wait_job(&first, Duration::from_secs(60));
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(j["error_kind"], "failed", "{j}");
    assert!(j["error"].as_str().unwrap().contains("panicked"), "{j}");
    assert_eq!(d.call("GET", "/api/health", None, None).status, 200);
    assert_eq!(d.admin_ok("GET", "/api/datastores/default/snapshots", None).as_array().unwrap().len(), 0);
    // The failpoint fires once: the next backup goes through.
    let second = start_job(&d, json!({ "kind": "backup", "datastore": "default", "paths": [src] }));
    assert_eq!(d.wait_job(&second, Duration::from_secs(60))["state"], "succeeded");
    assert_eq!(d.admin_ok("GET", "/api/datastores/default/snapshots", None).as_array().unwrap().len(), 1);
}

#[test]
fn schedules_skip_overlapping_runs_apply_retention_and_persist() {
    let dir = scratch("daemon-sched");
    let state = dir.path().join("state");
    let src = dir.path().join("src");
    gen_tree(&src, 4, TreeSpec::small());
    // Each backup holds its commit for 2.5 s, so a schedule firing every
    // second overlaps itself.
    let d = Daemon::start(&state, None, &[("LIFEBOAT_FAILPOINTS", "snapshot-commit=sleep2500")]);
    let spec = json!({
        "name": "every-second",
        "cron": "* * * * * *",
        "job": { "kind": "backup", "datastore": "default", "paths": [src] },
        "keep": { "last": 2 },
        "notify": "never",
    });
    let bad = d.call("POST", "/api/schedules", Some(&d.admin), Some(&json!({ "name": "x", "cron": "every day", "job": spec["job"] })));
    assert_eq!(bad.status, 400);
    assert!(bad.json()["message"].as_str().unwrap().contains("cron expression"), "{bad:?}");
    let zero = d.call("POST", "/api/schedules", Some(&d.admin), Some(&json!({ "name": "x", "cron": "0 0 * * * *", "job": spec["job"], "keep": { "last": 0 } })));
    assert!(zero.status == 400 && zero.body.contains("keep nothing"), "{zero:?}");
    let tap = EventTap::start(&d);
    let r = d.call("POST", "/api/schedules", Some(&d.admin), Some(&spec));
    assert_eq!(r.status, 201, "{r:?}");
    let sid = r.json()["id"].as_str().unwrap().to_string();
    assert!(r.json()["next_run"].is_string());
    tap.wait_for("a skipped run", |e| e["type"] == "schedule-skipped" && e["schedule"] == sid.as_str());
    // Let three backups finish, then stop the schedule.
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let jobs = d.admin_ok("GET", "/api/jobs", None);
        let done = jobs.as_array().unwrap().iter().filter(|j| j["schedule"] == sid.as_str() && j["state"] == "succeeded").count();
        if done >= 3 {
            break;
        }
        assert!(Instant::now() < end, "scheduled backups did not run: {jobs}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut disabled = spec.clone();
    disabled["enabled"] = json!(false);
    d.admin_ok("PUT", &format!("/api/schedules/{sid}"), Some(&disabled));
    let end = Instant::now() + Duration::from_secs(30);
    while !d.admin_ok("GET", "/api/jobs?running=true", None).as_array().unwrap().is_empty() {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(200));
    }
    let jobs = d.admin_ok("GET", "/api/jobs?limit=1000", None);
    let mine: Vec<&Value> = jobs.as_array().unwrap().iter().filter(|j| j["schedule"] == sid.as_str()).collect();
    let skipped = mine.iter().filter(|j| j["state"] == "skipped").count();
    assert!(skipped >= 1, "no run was skipped: {jobs}");
    // Never two runs of the schedule at once: each started after the previous finished or was skipped.
    let mut runs: Vec<(&str, &str)> = mine.iter().filter(|j| j["state"] == "succeeded").map(|j| (j["started"].as_str().unwrap(), j["finished"].as_str().unwrap())).collect();
    runs.sort();
    for w in runs.windows(2) {
        assert!(w[1].0 >= w[0].1, "runs overlapped: {w:?}");
    }
    // Retention: keep the last 2.
    let snaps = d.admin_ok("GET", "/api/datastores/default/snapshots", None);
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps}");
    let last_job = d.admin_ok("GET", &format!("/api/schedules/{sid}"), None)["last_job"].clone();
    assert!(last_job.is_string(), "{last_job}");
    drop(tap);
    d.stop();
    // Schedules persist, and so does what each last ran (from the history).
    let d = Daemon::start(&state, None, &[]);
    let list = d.admin_ok("GET", "/api/schedules", None);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["last_job"], last_job, "{list}");
    assert_eq!(list[0]["name"], "every-second");
    assert_eq!(list[0]["enabled"], false);
    assert!(list[0].get("next_run").is_none(), "a disabled schedule has no next run: {list}");
    d.admin_ok("DELETE", &format!("/api/schedules/{sid}"), None);
    assert_eq!(d.call("GET", &format!("/api/schedules/{sid}"), Some(&d.admin), None).status, 404);
}

#[test]
fn remote_cli_pins_the_certificate_and_follows_jobs() {
    let dir = scratch("daemon-cli");
    let src = dir.path().join("src");
    gen_tree(&src, 5, TreeSpec::small());
    let d = Daemon::start(&dir.path().join("state"), None, &[]);
    let op = d.token("ops", "operator");
    let mut c = d.remote(&op);
    c.arg("backup").arg(&src);
    let o = run_cmd(c);
    o.expect_ok();
    // The same readable summary as a local backup, not the job's JSON.
    assert!(o.stdout.contains("snapshot ") && o.stdout.contains(" saved") && o.stdout.contains("files:   ") && o.stdout.contains(" new, "), "{o}");
    assert!(!o.stdout.contains('{'), "{o}");
    let mut c = d.remote(&op);
    c.args(["backup", "--json"]).arg(&src);
    let o = run_cmd(c);
    o.expect_ok();
    assert_eq!(o.json()["state"], "succeeded", "{o}");
    assert!(o.json()["result"]["summary"]["files_unchanged"].as_u64().unwrap() > 100, "{o}");
    let mut c = d.remote(&op);
    c.args(["check"]);
    let o = run_cmd(c);
    o.expect_ok();
    assert!(o.stdout.contains("checked 2 snapshots") && o.stdout.contains("no errors found"), "{o}");
    let mut c = d.remote(&op);
    c.args(["restore", "latest"]).arg(dir.path().join("back"));
    let o = run_cmd(c);
    o.expect_ok();
    assert!(o.stdout.contains("restored snapshot ") && o.stdout.contains(" files, "), "{o}");
    let mut c = d.remote(&op);
    c.args(["gc"]);
    let o = run_cmd(c);
    o.expect_ok();
    assert!(o.stdout.contains("freed ") && o.stdout.contains(" packs"), "{o}");
    let mut c = d.remote(&op);
    c.args(["snapshots", "--json"]);
    let o = run_cmd(c);
    o.expect_ok();
    assert_eq!(o.json().as_array().unwrap().len(), 2);
    // A wrong pin is refused, naming the fingerprint; no pin is explained.
    let mut c = lb_cmd();
    c.args(["--server", &d.https, "--fingerprint", &"00".repeat(32), "--token", &op, "snapshots"]);
    let o = run_cmd(c);
    o.expect_code(1);
    assert!(o.stderr.contains("fingerprint is"), "{o}");
    let mut c = lb_cmd();
    c.args(["--server", &d.https, "--token", &op, "snapshots"]);
    let o = run_cmd(c);
    o.expect_code(1);
    assert!(o.stderr.contains("--fingerprint"), "{o}");
    // A read-only token cannot start a backup; the message says why.
    let ro = d.token("ro", "read-only");
    let mut c = d.remote(&ro);
    c.arg("backup").arg(&src);
    let o = run_cmd(c);
    o.expect_code(1);
    assert!(o.stderr.contains("403") && o.stderr.contains("read-only"), "{o}");
    // A failing job fails the command with its error.
    let mut c = d.remote(&op);
    c.args(["restore", "deadbeef"]).arg(dir.path().join("nowhere"));
    let o = run_cmd(c);
    o.expect_code(1);
    assert!(o.stderr.contains("deadbeef"), "{o}");
    // Login from stdin gives a working session token.
    let mut c = lb_cmd();
    c.args(["--server", &d.https, "--fingerprint", &d.fingerprint, "login"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{}", d.admin_password).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let session = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let mut c = d.remote(&session);
    c.args(["jobs", "list"]);
    let o = run_cmd(c);
    o.expect_ok();
    assert!(o.stdout.contains("backup") && o.stdout.contains("succeeded"), "{o}");
}

#[test]
fn passwords_and_config_are_checked() {
    let dir = scratch("daemon-pw");
    let state = dir.path().join("state");
    let d = Daemon::start(&state, None, &[]);
    let r = d.login("wrong password").unwrap_err();
    assert_eq!(r.status, 401);
    assert!(r.json()["message"].as_str().unwrap().contains("wrong"));
    let r = d.call("PUT", "/api/password", Some(&d.admin), Some(&json!({ "current_password": d.admin_password, "new_password": "short" })));
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("too short"), "{r:?}");
    let r = d.call("PUT", "/api/password", Some(&d.admin), Some(&json!({ "current_password": "nope", "new_password": "long enough now" })));
    assert_eq!(r.status, 400);
    d.admin_ok("PUT", "/api/password", Some(&json!({ "current_password": d.admin_password, "new_password": "long enough now" })));
    // The change ends sessions; the new password works.
    assert_eq!(d.call("GET", "/api/jobs", Some(&d.admin), None).status, 401);
    assert!(d.login("long enough now").is_ok());
    assert!(d.login(&d.admin_password).is_err());
    // Secrets stay out of the log.
    let log = d.log_text();
    assert!(!log.contains("long enough now") && !log.contains(&d.admin_password), "a password reached the log");
    d.stop();

    // Offline: `lifeboat admin password` (the console uses the same store).
    let mut c = lb_cmd();
    c.arg("admin").arg("password").arg("--state-dir").arg(&state).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "set offline 123").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let d = Daemon::start(&state, None, &[]);
    assert!(d.login("set offline 123").is_ok());
    d.stop();

    // Plain HTTP off loopback and unknown time zones are refused at start.
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "listen_plain = \"0.0.0.0:18080\"\n").unwrap();
    let o = lb(args!["serve", "--config", &cfg, "--state-dir", &state]);
    o.expect_code(1);
    assert!(o.stderr.contains("loopback"), "{o}");
    std::fs::write(&cfg, "timezone = \"Mars/Olympus\"\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let o = lb(args!["serve", "--config", &cfg, "--state-dir", &state]);
    o.expect_code(1);
    assert!(o.stderr.contains("Mars/Olympus"), "{o}");
    let o = lb(args!["serve", "--config", dir.path().join("missing.toml")]);
    o.expect_code(1);
    assert!(o.stderr.contains("missing.toml"), "{o}");
}

#[test]
fn datastores_are_added_listed_and_kept() {
    let dir = scratch("daemon-ds");
    let state = dir.path().join("state");
    let d = Daemon::start(&state, None, &[]);
    let second = dir.path().join("second");
    let v = d.admin_ok("POST", "/api/datastores", Some(&json!({ "name": "second", "path": second })));
    assert_eq!(v["name"], "second");
    assert!(second.join("config.json").is_file());
    let r = d.call("POST", "/api/datastores", Some(&d.admin), Some(&json!({ "name": "second", "path": second })));
    assert_eq!(r.status, 409);
    let r = d.call("POST", "/api/datastores", Some(&d.admin), Some(&json!({ "name": "../x", "path": "/tmp/x" })));
    assert_eq!(r.status, 400);
    // A directory with other things in it is not taken over.
    let busy = dir.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("precious.txt"), b"keep me").unwrap();
    let r = d.call("POST", "/api/datastores", Some(&d.admin), Some(&json!({ "name": "busy", "path": busy })));
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(std::fs::read(busy.join("precious.txt")).unwrap(), b"keep me");
    d.stop();
    let d = Daemon::start(&state, None, &[]);
    let list = d.admin_ok("GET", "/api/datastores", None);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "second"]);
    assert!(list[0]["free_bytes"].as_u64().unwrap() > 0);
}
