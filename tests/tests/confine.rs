//! Where server-side jobs may read and write (issue 27): an operator's
//! restore into the daemon's state directory is refused (403) with
//! nothing written; every route that takes a path refuses paths outside
//! the roots, `..`, symlink escapes and the state directory, for
//! operator, read-only and backup-only tokens; crafted snapshots (a
//! symlinked directory with entries "through" it) restore inside the
//! target; an operator's restore leaves set-ID bits out (the remote CLI
//! exits 3).

mod common;

use common::daemon::Daemon;
use common::*;
use lifeboat_store::{BlobKind, BlobSink, Datastore, Node, NodeKind, Snapshot, Tree};
use serde_json::{json, Value};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Every entry under `dir` (names, sizes, modes), to prove nothing changed.
fn listing(dir: &Path) -> Vec<(PathBuf, u64, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), if m.is_dir() { 0 } else { m.len() }, m.permissions().mode()));
        }
    }
    out.sort();
    out
}

/// Paths in the state directory now that were not before, but for what
/// the daemon itself writes (job history, audit log, the datastore's
/// index files).
fn new_in_state(state: &Path, before: &[(PathBuf, u64, u32)]) -> Vec<PathBuf> {
    listing(state)
        .into_iter()
        .map(|e| e.0)
        .filter(|p| !before.iter().any(|b| &b.0 == p))
        .filter(|p| !p.starts_with(state.join("jobs")) && !p.ends_with("audit.log") && !p.starts_with(state.join("datastores")))
        .collect()
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// A files snapshot whose root tree is what `build` makes, committed
/// straight into the datastore (as an agent could upload it).
fn craft(ds: &Path, build: impl FnOnce(&BlobSink) -> Vec<Node>) -> String {
    let ds = Arc::new(Datastore::open(ds).unwrap());
    let sink = BlobSink::new(ds.clone()).unwrap();
    let nodes = build(&sink);
    let tree = sink.put(BlobKind::Tree, &Tree { nodes }.encode()).unwrap().id;
    let snap = Snapshot {
        time: chrono::Utc::now(),
        hostname: "crafted".into(),
        paths: vec!["/crafted".into()],
        tags: vec![],
        tree,
        parent: None,
        summary: Default::default(),
        program: "test".into(),
        kind: Default::default(),
        root: None,
    };
    sink.commit_snapshot(snap.encode()).unwrap().to_hex()
}

fn file(sink: &BlobSink, name: &[u8], mode: u32, data: &[u8]) -> Node {
    let id = sink.put(BlobKind::SmallFile, data).unwrap().id;
    Node::file(name, mode, data.len() as u64, 0, vec![id])
}

fn dir_node(name: &[u8], subtree: lifeboat_store::BlobId) -> Node {
    Node { kind: NodeKind::Dir, mode: 0o755, subtree: Some(subtree), ..Node::file(name, 0o755, 0, 0, vec![]) }
}

fn link_node(name: &[u8], target: &Path) -> Node {
    Node { kind: NodeKind::Symlink, mode: 0o777, link_target: Some(target.as_os_str().as_encoded_bytes().to_vec()), ..Node::file(name, 0o777, 0, 0, vec![]) }
}

struct Setup {
    _dir: tempfile::TempDir,
    base: PathBuf,
    d: Daemon,
    state: PathBuf,
    restores: PathBuf,
    src: PathBuf,
    outside: PathBuf,
    snap: String,
}

fn setup(name: &str) -> Setup {
    setup_with(name, |_| ())
}

/// `setup`, with `before` run on the default datastore's path (made
/// already) before the daemon starts: the daemon's index view would not
/// see another process's commit at once.
fn setup_with(name: &str, before: impl FnOnce(&Path)) -> Setup {
    let dir = scratch(name);
    let base = dir.path().to_path_buf();
    let state = base.join("state");
    let restores = base.join("restores");
    let src = base.join("src");
    let outside = base.join("outside");
    for d in [&restores, &outside] {
        std::fs::create_dir_all(d).unwrap();
    }
    gen_tree(&src, 3, TreeSpec::small());
    // Escapes planted inside the roots.
    symlink(&outside, restores.join("link")).unwrap();
    symlink(&state, restores.join("to-state")).unwrap();
    symlink(&outside, src.join("link")).unwrap();
    let config = format!("backup_roots = [{:?}]\nrestore_roots = [{:?}]\n", src.display().to_string(), restores.display().to_string());
    let ds = state.join("datastores/default");
    Ds::init(&ds);
    before(&ds);
    let d = Daemon::start(&state, Some(&config), &[]);
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "backup", "datastore": "default", "paths": [src] })));
    assert_eq!(r.status, 202, "{r:?}");
    let j = d.wait_job(r.json()["id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!(j["state"], "succeeded", "{j}");
    let snap = j["result"]["snapshot"].as_str().unwrap().to_string();
    Setup { _dir: dir, base, d, state, restores, src, outside, snap }
}

#[test]
fn an_operator_restore_into_the_state_directory_is_refused_and_writes_nothing() {
    let s = setup("confine-report");
    let d = &s.d;
    let op = d.token("ops", "operator");
    let before = listing(&s.state);
    let packs = listing(&s.state.join("datastores/default/packs"));
    for target in [s.state.clone(), s.state.join("restored"), s.state.join("datastores/default/packs")] {
        for (method, path, body) in [
            ("POST", "/api/jobs".to_string(), json!({ "kind": "restore", "datastore": "default", "snapshot": s.snap, "target": target })),
            ("POST", format!("/api/datastores/default/snapshots/{}/restore", s.snap), json!({ "target": target })),
        ] {
            let r = d.call(method, &path, Some(&op), Some(&body));
            assert_eq!(r.status, 403, "{path} {target:?}: {r:?}");
            let msg = r.json()["message"].as_str().unwrap().to_string();
            assert!(msg.contains("state directory"), "{msg}");
        }
    }
    // Even an admin session may not; the job list holds no such job.
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "restore", "datastore": "default", "snapshot": s.snap, "target": s.state })));
    assert_eq!(r.status, 403, "{r:?}");
    let jobs = d.admin_ok("GET", "/api/jobs", None);
    assert!(jobs.as_array().unwrap().iter().all(|j| j["spec"]["kind"] != "restore"), "{jobs}");
    // Nothing written.
    assert_eq!(new_in_state(&s.state, &before), Vec::<PathBuf>::new());
    assert_eq!(listing(&s.state.join("datastores/default/packs")), packs);
    // Under the root it works, and the files are the daemon's, not the
    // backed-up owners (no `owners = true` on the root).
    let target = s.restores.join("ok");
    let r = d.call("POST", "/api/jobs", Some(&op), Some(&json!({ "kind": "restore", "datastore": "default", "snapshot": s.snap, "target": target })));
    assert_eq!(r.status, 202, "{r:?}");
    let j = d.wait_job(r.json()["id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!(j["state"], "succeeded", "{j}");
    assert!(!empty(&target));
}

/// Every route that takes a path, with the path cases; `who` is the
/// token, `expect` the status for a path under the roots.
fn path_routes(s: &Setup) -> Vec<(&'static str, String, Value, &'static str)> {
    let snap = &s.snap;
    let cases: Vec<(&str, String)> = vec![
        ("outside the roots", s.base.join("elsewhere").display().to_string()),
        ("..", format!("{}/../outside/x", s.restores.display())),
        ("symlink escape", s.restores.join("link/x").display().to_string()),
        ("symlink to the state directory", s.restores.join("to-state").display().to_string()),
        ("state directory", s.state.display().to_string()),
        ("system tree", "/etc/lifeboat-test".to_string()),
    ];
    let src_cases: Vec<(&str, String)> = vec![
        ("outside the roots", s.outside.display().to_string()),
        ("..", format!("{}/../outside", s.src.display())),
        ("symlink escape", s.src.join("link").display().to_string()),
        ("state directory", s.state.display().to_string()),
        ("system tree", "/etc/shadow".to_string()),
    ];
    let mut out = Vec::new();
    for (what, p) in &cases {
        out.push(("POST", "/api/jobs".to_string(), json!({ "kind": "restore", "datastore": "default", "snapshot": snap, "target": p }), *what));
        out.push(("POST", "/api/jobs".to_string(), json!({ "kind": "vm-restore", "datastore": "default", "snapshot": snap, "target": p }), *what));
        out.push(("POST", format!("/api/datastores/default/snapshots/{snap}/restore"), json!({ "target": p }), *what));
        let sched = json!({ "name": "s", "cron": "0 3 * * *", "job": { "kind": "restore", "datastore": "default", "snapshot": snap, "target": p } });
        out.push(("POST", "/api/schedules".to_string(), sched.clone(), *what));
        out.push(("PUT", "/api/schedules/0123456789abcdef".to_string(), sched, *what));
    }
    for (what, p) in &src_cases {
        out.push(("POST", "/api/jobs".to_string(), json!({ "kind": "backup", "datastore": "default", "paths": [p] }), *what));
        let sched = json!({ "name": "b", "cron": "0 3 * * *", "job": { "kind": "backup", "datastore": "default", "paths": [p] } });
        out.push(("POST", "/api/schedules".to_string(), sched, *what));
    }
    out
}

#[test]
fn every_route_taking_a_path_refuses_escapes_for_every_role() {
    let s = setup("confine-routes");
    let d = &s.d;
    let op = d.token("ops", "operator");
    let ro = d.token("reader", "read-only");
    let bo = d.token("uploader", "backup-only");
    let admin_tok = d.token("root-ish", "admin");
    let before_outside = listing(&s.outside);
    let before_state = listing(&s.state);
    let mut checked = 0;
    for (method, path, body, what) in path_routes(&s) {
        // Operators and admins: 403 naming the setting or the tree.
        for (who, tok) in [("operator", &op), ("admin", &admin_tok)] {
            let r = d.call(method, &path, Some(tok), Some(&body));
            assert_eq!(r.status, 403, "{who} {method} {path} ({what}) {body}: {r:?}");
            let msg = r.json()["message"].as_str().unwrap().to_string();
            assert!(msg.contains("_roots") || msg.contains("state directory") || msg.contains("..") || msg.contains("symlink") || msg.contains("system tree"), "{who} {path} ({what}): {msg}");
        }
        // Read-only and backup-only: refused by role, before the path.
        for (who, tok) in [("read-only", &ro), ("backup-only", &bo)] {
            let r = d.call(method, &path, Some(tok), Some(&body));
            assert_eq!(r.status, 403, "{who} {method} {path} ({what}): {r:?}");
            assert!(r.json()["message"].as_str().unwrap().contains("role"), "{r:?}");
        }
        checked += 1;
    }
    assert!(checked >= 35, "{checked}");
    // Exports take a disk id (an overlay's file name), never a path.
    for disk in ["../../etc/x", "a/b", ".."] {
        let body = json!({ "datastore": "default", "snapshot": s.snap, "disk": disk, "writable": true });
        assert_eq!(d.call("POST", "/api/exports", Some(&op), Some(&body)).status, 400, "{disk}");
        for tok in [&ro, &bo] {
            assert_eq!(d.call("POST", "/api/exports", Some(tok), Some(&body)).status, 403);
        }
    }
    // Datastores (admin only): never the state directory, a system tree,
    // through a symlink, nor with `..`.
    for p in [s.state.join("ds").display().to_string(), "/etc/lifeboat-ds".into(), s.restores.join("link/ds").display().to_string(), format!("{}/../x", s.restores.display())] {
        let body = json!({ "name": "two", "path": p });
        let r = d.call("POST", "/api/datastores", Some(&d.admin), Some(&body));
        assert_eq!(r.status, 403, "{p}: {r:?}");
        for tok in [&op, &ro, &bo] {
            assert_eq!(d.call("POST", "/api/datastores", Some(tok), Some(&body)).status, 403, "{p}");
        }
    }
    assert!(!Path::new("/etc/lifeboat-test").exists() && !Path::new("/etc/lifeboat-ds").exists());
    assert_eq!(listing(&s.outside), before_outside, "something was written outside the roots");
    assert_eq!(new_in_state(&s.state, &before_state), Vec::<PathBuf>::new());
    assert!(d.admin_ok("GET", "/api/schedules", None).as_array().unwrap().is_empty());

    // An admin token with the original_location capability may pass the
    // roots (here: a directory outside them), never the state directory.
    let r = d.call("POST", "/api/tokens", Some(&d.admin), Some(&json!({ "name": "op-orig", "role": "operator", "original_location": true })));
    assert_eq!(r.status, 400, "only admin tokens get original_location: {r:?}");
    let orig = d.admin_ok("POST", "/api/tokens", Some(&json!({ "name": "orig", "role": "admin", "original_location": true })))["token"].as_str().unwrap().to_string();
    let elsewhere = s.base.join("elsewhere");
    let r = d.call("POST", "/api/jobs", Some(&orig), Some(&json!({ "kind": "restore", "datastore": "default", "snapshot": s.snap, "target": elsewhere })));
    assert_eq!(r.status, 202, "{r:?}");
    let j = d.wait_job(r.json()["id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!(j["state"], "succeeded", "{j}");
    for bad in [s.state.display().to_string(), s.restores.join("link/x").display().to_string()] {
        let r = d.call("POST", "/api/jobs", Some(&orig), Some(&json!({ "kind": "restore", "datastore": "default", "snapshot": s.snap, "target": bad })));
        assert_eq!(r.status, 403, "{bad}: {r:?}");
    }
    assert_eq!(listing(&s.outside), before_outside);
}

#[test]
fn crafted_snapshots_restore_inside_the_target() {
    let (mut one, mut two) = (String::new(), String::new());
    let s = setup_with("confine-crafted", |ds| {
        let outside = ds.ancestors().nth(3).unwrap().join("outside");
        // A symlink `a` to outside and a directory `a` with entries
        // through it; a set-uid file.
        one = craft(ds, |sink| {
            let inner = sink.put(BlobKind::Tree, &Tree { nodes: vec![file(sink, b"x", 0o644, b"through")] }.encode()).unwrap().id;
            vec![link_node(b"a", &outside), dir_node(b"a", inner), file(sink, b"suid", 0o4755, b"#!/bin/sh\n")]
        });
        // A directory `a` with entries, for a target whose `a` is a symlink.
        two = craft(ds, |sink| {
            let inner = sink.put(BlobKind::Tree, &Tree { nodes: vec![file(sink, b"x", 0o644, b"inside")] }.encode()).unwrap().id;
            vec![dir_node(b"a", inner)]
        });
    });
    let d = &s.d;
    let op = d.token("ops", "operator");
    let outside = s.outside.clone();
    let t1 = s.restores.join("t1");
    let r = d.call("POST", "/api/jobs", Some(&op), Some(&json!({ "kind": "restore", "datastore": "default", "snapshot": one, "target": t1 })));
    assert_eq!(r.status, 202, "{r:?}");
    let j = d.wait_job(r.json()["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(j["state"], "warnings", "{j}");
    assert!(empty(&outside), "the crafted snapshot wrote outside the target: {:?}", listing(&outside));
    assert_eq!(j["result"]["left_out"], 1, "{j}");
    assert_eq!(std::fs::metadata(t1.join("suid")).unwrap().permissions().mode() & 0o7777, 0o755);

    // Into a target where `a` is a symlink to outside.
    let t2 = s.restores.join("t2");
    std::fs::create_dir(&t2).unwrap();
    symlink(&outside, t2.join("a")).unwrap();
    let r = d.call("POST", "/api/jobs", Some(&op), Some(&json!({ "kind": "restore", "datastore": "default", "snapshot": two, "target": t2 })));
    assert_eq!(r.status, 202, "{r:?}");
    let j = d.wait_job(r.json()["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(j["state"], "succeeded", "{j}");
    assert!(empty(&outside));
    assert_eq!(std::fs::read(t2.join("a/x")).unwrap(), b"inside");

    // The remote CLI: an operator's restore that left something out is
    // a partial restore, exit 3; an admin's keeps the set-uid bit.
    let mut c = d.remote(&op);
    c.args(["restore", &one[..12]]).arg(s.restores.join("t3"));
    let o = run_cmd(c);
    o.expect_code(3);
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "restore", "datastore": "default", "snapshot": one, "target": s.restores.join("t4") })));
    let j = d.wait_job(r.json()["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(j["result"]["left_out"], 0, "{j}");
    assert_eq!(std::fs::metadata(s.restores.join("t4/suid")).unwrap().permissions().mode() & 0o7777, 0o4755);
    assert!(empty(&outside));
}
