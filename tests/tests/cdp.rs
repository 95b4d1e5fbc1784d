//! Continuous data protection end to end: `lifeboat cdp protect` on a
//! real QEMU (guestless; writes go through QEMU's block layer with its
//! own `qemu-io` monitor command), then `cdp points`, `cdp bookmark` and
//! `cdp export` of moments read back with qemu-io over NBD.

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn hmp(qmp: &Path, line: &str) -> String {
    let mut q = lifeboat_qemu::Qmp::connect(qmp).unwrap();
    q.execute("human-monitor-command", json!({ "command-line": line })).unwrap().as_str().unwrap_or("").to_string()
}

fn qemu_io_read(uri: &str, cmds: &[&str]) -> (bool, String) {
    let mut c = Command::new("qemu-io");
    c.args(["-r", "-f", "raw", uri]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let o = c.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.success() && !text.contains("fail") && !text.contains("error"), text)
}

/// A QEMU VM without a guest (CPUs stopped) named `name`, its raw `disk`
/// as virtio disk `disk0` (block node `drv0`), with two QMP monitors in
/// `dir`: one for lifeboat, one for the test's writes (`hmp`).
fn guestless_vm(dir: &Path, name: &str, disk: &Path) -> (ChildGuard, std::path::PathBuf, std::path::PathBuf) {
    let (q1, q2) = (dir.join("q1.sock"), dir.join("q2.sock"));
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-S", "-display", "none", "-nodefaults", "-machine", "pc", "-m", "64", "-name", name]);
    c.arg("-drive").arg(format!("file={},format=raw,if=none,id=drv0", disk.display()));
    c.args(["-device", "virtio-blk-pci,drive=drv0,id=disk0"]);
    c.arg("-qmp").arg(format!("unix:{},server=on,wait=off", q1.display()));
    c.arg("-qmp").arg(format!("unix:{},server=on,wait=off", q2.display()));
    let qemu = ChildGuard::spawn(c);
    assert!(wait_until(Duration::from_secs(30), || std::os::unix::net::UnixStream::connect(&q2).is_ok()));
    (qemu, q1, q2)
}

/// `cdp export` of `at` of the VM `cdp-vm`, then `f` with the disk's nbd:// URI.
fn with_export(ds: &Ds, at: &str, f: impl FnOnce(&str)) {
    with_export_of(ds, "cdp-vm", at, f)
}

fn with_export_of(ds: &Ds, vm: &str, at: &str, f: impl FnOnce(&str)) {
    let mut c = lb_cmd();
    c.args(["cdp", "export", "--datastore"]).arg(&ds.path).args([vm, "--at", at, "--listen", "127.0.0.1:0"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    if !line.starts_with("nbd://") {
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        panic!("cdp export --at {at}: {line}{}", String::from_utf8_lossy(&o.stderr));
    }
    f(line.trim());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_protected_vm_reads_back_at_any_moment_and_at_its_bookmarks() {
    let t = scratch("cdp");
    let ds = Ds::init(t.path().join("ds"));
    const SIZE: u64 = 32 << 20;
    let disk = t.path().join("disk.raw");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(SIZE).unwrap();
    f.write_all_at(&vec![0x5a; 4 << 20], 0).unwrap();
    drop(f);
    // Two monitors: one for `cdp protect`, one for the test's writes.
    let (mut qemu, q1, q2) = guestless_vm(t.path(), "cdp-vm", &disk);

    // Nothing protected yet: named.
    let o = lb(args!["cdp", "points", "--datastore", &ds.path, "cdp-vm"]);
    o.expect_code(1);
    assert!(o.stderr.contains("not protected"), "{o}");

    let mut protect = lb_cmd();
    protect.args(["cdp", "protect", "--datastore"]).arg(&ds.path).arg("--qmp").arg(&q1);
    let mut protect = ChildGuard::spawn(protect);
    let sessions = ds.path.join("cdp/cdp-vm/disks/disk0/sessions.json");
    assert!(wait_until(Duration::from_secs(120), || sessions.exists()), "the initial copy never finished");

    // Three moments: 0x11 at 1 MiB, then 0x22 over it, then a bookmark,
    // then 0x33 at 8 MiB.
    hmp(&q2, "qemu-io drv0 \"write -P 0x11 1M 64k\"");
    std::thread::sleep(Duration::from_millis(20));
    let t1 = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    std::thread::sleep(Duration::from_millis(20));
    hmp(&q2, "qemu-io drv0 \"write -P 0x22 1M 32k\"");
    let o = lb(args!["cdp", "bookmark", "--datastore", &ds.path, "cdp-vm", "after-22"]);
    o.expect_ok();
    hmp(&q2, "qemu-io drv0 \"write -P 0x33 8M 4k\"");
    // While protection runs, the journal is its: an export says so.
    let o = lb(args!["cdp", "export", "--datastore", &ds.path, "cdp-vm", "--at", &t1]);
    o.expect_code(1);
    assert!(o.stderr.contains("in use") && o.stderr.contains("cdp protect"), "{o}");
    protect.signal(libc::SIGTERM);
    let o = protect.wait();
    o.expect_ok();
    assert!(o.stdout.contains("protecting cdp-vm: disk0 (sync mode)") && o.stdout.contains("stopped protecting cdp-vm"), "{o}");

    let o = lb(args!["cdp", "points", "--datastore", &ds.path, "cdp-vm", "--json"]);
    o.expect_ok();
    let p = o.json();
    assert_eq!(p["disks"][0]["disk"], "disk0", "{p:#}");
    assert_eq!(p["disks"][0]["size"], SIZE, "{p:#}");
    assert!(p["disks"][0]["sessions"][0]["ended"].is_string(), "{p:#}");
    assert_eq!(p["bookmarks"][0]["name"], "after-22", "{p:#}");

    // At t1: the copy, with 0x11 at 1 MiB; nothing at 8 MiB yet.
    with_export(&ds, &t1, |uri| {
        let (ok, out) = qemu_io_read(uri, &["read -P 0x11 1M 64k", "read -P 0x5a 0 1M", "read -P 0x5a 2M 2M", "read -P 0 8M 4k"]);
        assert!(ok, "{out}");
    });
    // At the bookmark: 0x22 over the first half, still no 0x33.
    with_export(&ds, "after-22", |uri| {
        let (ok, out) = qemu_io_read(uri, &["read -P 0x22 1M 32k", "read -P 0x11 1056k 32k", "read -P 0 8M 4k"]);
        assert!(ok, "{out}");
        // The check can fail: 0x11 is gone from the first half.
        assert!(!qemu_io_read(uri, &["read -P 0x11 1M 4k"]).0);
    });
    // Before protection began, and an unknown bookmark: refused, named.
    let o = lb(args!["cdp", "export", "--datastore", &ds.path, "cdp-vm", "--at", "2020-01-01T00:00:00Z"]);
    o.expect_code(1);
    assert!(o.stderr.contains("outside the protected time of disk disk0"), "{o}");
    let o = lb(args!["cdp", "export", "--datastore", &ds.path, "cdp-vm", "--at", "no-such-mark"]);
    o.expect_code(1);
    assert!(o.stderr.contains("no bookmark \"no-such-mark\""), "{o}");

    // Protected again: the journal continues; the newest moment has all
    // three writes, the gap between the sessions is refused.
    let stopped = p["disks"][0]["sessions"][0]["ended"].as_str().unwrap().to_string();
    hmp(&q2, "qemu-io drv0 \"write -P 0x44 12M 4k\"");
    let mut protect = lb_cmd();
    protect.args(["cdp", "protect", "--datastore"]).arg(&ds.path).arg("--qmp").arg(&q1).args(["--disk", "disk0", "--mode", "async"]);
    let mut protect = ChildGuard::spawn(protect);
    assert!(wait_until(Duration::from_secs(120), || std::fs::read_to_string(&sessions).unwrap_or_default().matches("ready").count() == 2), "the second session never began");
    protect.signal(libc::SIGTERM);
    protect.wait().expect_ok();
    let p = lb(args!["cdp", "points", "--datastore", &ds.path, "cdp-vm", "--json"]).json();
    // The end of the second session (its last write was its initial copy,
    // which completed before the session's moments begin).
    let end = p["disks"][0]["sessions"][1]["ended"].as_str().unwrap().to_string();
    with_export(&ds, &end, |uri| {
        let (ok, out) = qemu_io_read(uri, &["read -P 0x22 1M 32k", "read -P 0x33 8M 4k", "read -P 0x44 12M 4k"]);
        assert!(ok, "{out}");
    });
    // SIGKILL of the protecting process: a write QEMU reported done is in
    // the journal (its index, kept without a WAL, is rebuilt from the
    // segments at the next open).
    let mut protect = lb_cmd();
    protect.args(["cdp", "protect", "--datastore"]).arg(&ds.path).arg("--qmp").arg(&q1);
    let mut protect = ChildGuard::spawn(protect);
    assert!(wait_until(Duration::from_secs(120), || std::fs::read_to_string(&sessions).unwrap_or_default().matches("ready").count() == 3), "the third session never began");
    hmp(&q2, "qemu-io drv0 \"write -P 0x55 16M 64k\"");
    protect.signal(libc::SIGKILL);
    let _ = protect.wait();
    let p = lb(args!["cdp", "points", "--datastore", &ds.path, "cdp-vm", "--json"]).json();
    assert!(p["disks"][0]["sessions"][2]["ended"].is_null(), "{p:#}");
    let last = p["disks"][0]["last_write"].as_str().unwrap().to_string();
    with_export(&ds, &last, |uri| {
        let (ok, out) = qemu_io_read(uri, &["read -P 0x55 16M 64k", "read -P 0x44 12M 4k"]);
        assert!(ok, "{out}");
    });
    // The killed capture's target node is still in QEMU; the next
    // protection clears it and starts.
    let mut q = lifeboat_qemu::Qmp::connect(&q2).unwrap();
    let nodes = q.execute("query-named-block-nodes", json!({})).unwrap().to_string();
    drop(q);
    assert!(nodes.contains("lbcdp-disk0"), "{nodes}");
    let mut protect = lb_cmd();
    protect.args(["cdp", "protect", "--datastore"]).arg(&ds.path).arg("--qmp").arg(&q1);
    let mut protect = ChildGuard::spawn(protect);
    assert!(wait_until(Duration::from_secs(120), || std::fs::read_to_string(&sessions).unwrap_or_default().matches("ready").count() == 4), "no protection after a killed one");
    protect.signal(libc::SIGTERM);
    protect.wait().expect_ok();

    let gap = chrono::DateTime::parse_from_rfc3339(&stopped).unwrap() + chrono::Duration::milliseconds(1);
    let o = lb(args!["cdp", "export", "--datastore", &ds.path, "cdp-vm", "--at", gap.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)]);
    o.expect_code(1);
    assert!(o.stderr.contains("outside the protected time"), "{o}");

    // Restore a moment as a new qcow2 image: exactly that moment.
    let out = t.path().join("restored");
    let o = lb(args!["cdp", "restore", "--datastore", &ds.path, "cdp-vm", "--at", "after-22", &out, "--format", "qcow2"]);
    o.expect_ok();
    let img = out.join("disk0.qcow2");
    let mut c = Command::new("qemu-io");
    c.args(["-r", "-f", "qcow2"]).arg(&img);
    for cmd in ["read -P 0x22 1M 32k", "read -P 0x11 1056k 32k", "read -P 0x5a 0 1M", "read -P 0 8M 4k", "read -P 0 16M 64k"] {
        c.args(["-c", cmd]);
    }
    let r = c.output().unwrap();
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success() && !text.contains("fail"), "the restored image: {text}");
    let o = lb(args!["cdp", "restore", "--datastore", &ds.path, "cdp-vm", "--at", "after-22", &out, "--format", "qcow2"]);
    o.expect_code(1);
    assert!(o.stderr.contains("exists already"), "{o}");

    // Roll the VM's own disk back: refused while QEMU holds it, then done
    // in place once the VM is stopped.
    let spec = format!("disk0={}", disk.display());
    let o = lb(args!["cdp", "rollback", "--datastore", &ds.path, "cdp-vm", "--at", "after-22", "--disk", &spec]);
    o.expect_code(1);
    assert!(o.stderr.contains("in use") && o.stderr.contains("stop the VM"), "{o}");
    let o = lb(args!["cdp", "rollback", "--datastore", &ds.path, "cdp-vm", "--at", "after-22", "--disk", "disk9=/nope"]);
    o.expect_code(1);
    assert!(o.stderr.contains("no protected disk \"disk9\""), "{o}");
    qemu.signal(libc::SIGKILL);
    let _ = qemu.wait();
    let o = lb(args!["cdp", "rollback", "--datastore", &ds.path, "cdp-vm", "--at", "after-22", "--disk", &spec]);
    o.expect_ok();
    assert!(o.stdout.contains("disk disk0:") && o.stdout.contains("is as it was at"), "{o}");
    let f = std::fs::File::open(&disk).unwrap();
    let at = |off: u64, len: usize| {
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, off).unwrap();
        b
    };
    assert!(at(1 << 20, 32 << 10).iter().all(|&b| b == 0x22), "0x22 at 1 MiB");
    assert!(at((1 << 20) + (32 << 10), 32 << 10).iter().all(|&b| b == 0x11), "0x11 after it");
    assert!(at(0, 4096).iter().all(|&b| b == 0x5a), "the first bytes as they were");
    for off in [8u64 << 20, 12 << 20, 16 << 20] {
        assert!(at(off, 4096).iter().all(|&b| b == 0), "the later write at {off} is undone");
    }
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), SIZE);
}

/// The daemon's side: a registered VM protected by a `cdp-protect` job,
/// moments and bookmarks through the API, a moment exported over NBD
/// while the protection runs, cancel and a daemon stop end the session
/// cleanly.
#[test]
fn the_daemon_protects_a_registered_vm_as_a_job() {
    use common::daemon::Daemon;
    let t = scratch("cdp-daemon");
    const SIZE: u64 = 16 << 20;
    let disk = t.path().join("disk.raw");
    std::fs::File::create(&disk).unwrap().set_len(SIZE).unwrap();
    let (_qemu, q1, q2) = guestless_vm(t.path(), "cdp-dvm", &disk);
    let state = t.path().join("state");
    let d = Daemon::start(&state, Some("nbd_listen = \"127.0.0.1:0\"\n"), &[]);
    d.admin_ok("POST", "/api/vms", Some(&json!({ "name": "dvm", "source": { "kind": "qmp", "qmp": q1 } })));
    assert_eq!(d.admin_ok("GET", "/api/cdp", None), json!([]));

    let start = |mode: &str| {
        let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "cdp-protect", "datastore": "default", "vm": "dvm", "mode": mode })));
        assert_eq!(r.status, 202, "{r:?}");
        r.json()["id"].as_str().unwrap().to_string()
    };
    let protecting = |job: &str| {
        wait_until(Duration::from_secs(120), || {
            let l = d.admin_ok("GET", "/api/cdp", None);
            l[0]["protecting"] == true && l[0]["job"] == job && l[0]["disks"][0]["sessions"].as_array().is_some_and(|s| s.last().is_some_and(|s| s.get("ended").is_none()))
        })
    };
    let job = start("sync");
    assert!(protecting(&job), "the protection never became ready: {}", d.admin_ok("GET", &format!("/api/jobs/{job}"), None));
    let j = d.admin_ok("GET", &format!("/api/jobs/{job}"), None);
    assert_eq!(j["state"], "running");
    assert!(j["progress"]["phase"].as_str().unwrap().contains("protecting cdp-dvm (sync mode)"), "{j}");
    // The monitor is the protection's: a backup of the VM meanwhile is refused.
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "vm-backup", "datastore": "default", "vm": "dvm" })));
    assert_eq!(r.status, 409, "{r:?}");

    hmp(&q2, "qemu-io drv0 \"write -P 0x11 1M 64k\"");
    std::thread::sleep(Duration::from_millis(20));
    let t1 = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    std::thread::sleep(Duration::from_millis(20));
    hmp(&q2, "qemu-io drv0 \"write -P 0x22 1M 32k\"");
    let b = d.call("POST", "/api/datastores/default/cdp/cdp-dvm/bookmarks", Some(&d.admin), Some(&json!({ "name": "after-22" })));
    assert_eq!(b.status, 201, "{b:?}");
    assert_eq!(b.json()["kind"], "manual");
    let again = d.call("POST", "/api/datastores/default/cdp/cdp-dvm/bookmarks", Some(&d.admin), Some(&json!({ "name": "after-22" })));
    assert_eq!(again.status, 400, "{again:?}");
    hmp(&q2, "qemu-io drv0 \"write -P 0x33 8M 4k\"");

    // Moments of the live journal, over the daemon's NBD server.
    let export = |at: &str| -> String {
        let e = d.admin_ok("POST", "/api/datastores/default/cdp/cdp-dvm/exports", Some(&json!({ "at": at })));
        assert_eq!(e.as_array().unwrap().len(), 1, "{e}");
        assert_eq!(e[0]["writable"], false);
        assert!(e[0]["snapshot"].as_str().unwrap().starts_with("cdp:cdp-dvm@"), "{e}");
        e[0]["uri"].as_str().unwrap().to_string()
    };
    let u1 = export(&t1);
    let (ok, out) = qemu_io_read(&u1, &["read -P 0x11 1M 64k", "read -P 0 8M 4k"]);
    assert!(ok, "the moment before 0x22: {out}");
    let u2 = export("after-22");
    let (ok, out) = qemu_io_read(&u2, &["read -P 0x22 1M 32k", "read -P 0x11 1056k 32k", "read -P 0 8M 4k"]);
    assert!(ok, "the bookmark: {out}");
    let r = d.call("POST", "/api/datastores/default/cdp/cdp-dvm/exports", Some(&d.admin), Some(&json!({ "at": "2020-01-01T00:00:00Z" })));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.json()["message"].as_str().unwrap().contains("outside the protected time"), "{r:?}");
    let r = d.call("POST", "/api/datastores/default/cdp/nope/exports", Some(&d.admin), Some(&json!({ "at": t1 })));
    assert_eq!(r.status, 404, "{r:?}");
    let info = d.admin_ok("GET", "/api/datastores/default/cdp/cdp-dvm", None);
    assert_eq!(info["bookmarks"][0]["name"], "after-22", "{info}");
    assert!(info["disks"][0]["last_write"].is_string() && info["disks"][0]["size"] == SIZE, "{info}");
    // A read-only token sees it and may not change it.
    let ro = d.token("viewer", "read-only");
    assert_eq!(d.call("GET", "/api/cdp", Some(&ro), None).status, 200);
    assert_eq!(d.call("POST", "/api/datastores/default/cdp/cdp-dvm/bookmarks", Some(&ro), Some(&json!({ "name": "x" }))).status, 403);

    // Cancel ends the protection cleanly: the session has its end, the VM runs on.
    d.admin_ok("POST", &format!("/api/jobs/{job}/cancel"), None);
    let j = d.wait_job(&job, Duration::from_secs(60));
    assert_eq!(j["state"], "cancelled", "{j}");
    let info = d.admin_ok("GET", "/api/datastores/default/cdp/cdp-dvm", None);
    assert_eq!(info["protecting"], false);
    assert!(info["disks"][0]["sessions"][0]["ended"].is_string(), "{info}");
    // The exports made during the protection still read their moments.
    assert!(qemu_io_read(&u2, &["read -P 0x22 1M 32k"]).0);
    hmp(&q2, "qemu-io drv0 \"write -P 0x44 12M 4k\"");
    for e in d.admin_ok("GET", "/api/exports", None).as_array().unwrap() {
        d.admin_ok("DELETE", &format!("/api/exports/{}", e["id"].as_str().unwrap()), None);
    }

    // A policy that cannot work is refused before anything starts.
    for (bad, why) in [
        (json!({ "every_seconds": 0 }), "at least 1"),
        (json!({ "log_file": t.path().join("app.log"), "log_regex": "(" }), "log_regex"),
        (json!({ "consistent": true }), "every_seconds"),
        (json!({ "log_file": "/etc/shadow", "log_regex": "root" }), "/etc"),
    ] {
        let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "cdp-protect", "datastore": "default", "vm": "dvm", "bookmarks": bad })));
        assert_eq!(r.status / 100, 4, "{bad}: {r:?}");
        assert!(r.json()["message"].as_str().unwrap_or("").contains(why), "{bad}: {r:?}");
    }

    // Protected again (async) with bookmarks of its own: every second, and
    // one per matching line of a watched log. Asked to be
    // application-consistent, but this VM has no guest agent: the points
    // are still made, and say why they are only crash-consistent.
    let events = common::daemon::EventTap::start(&d);
    let app_log = t.path().join("app.log");
    std::fs::write(&app_log, "checkpoint complete (before the protection)\n").unwrap();
    let r = d.call(
        "POST",
        "/api/jobs",
        Some(&d.admin),
        Some(&json!({ "kind": "cdp-protect", "datastore": "default", "vm": "dvm", "mode": "async",
            "bookmarks": { "every_seconds": 1, "log_file": app_log, "log_regex": "checkpoint (complete|done)", "consistent": true } })),
    );
    assert_eq!(r.status, 202, "{r:?}");
    let job2 = r.json()["id"].as_str().unwrap().to_string();
    assert!(protecting(&job2), "the second protection never became ready: {} {}", d.admin_ok("GET", &format!("/api/jobs/{job2}"), None), d.admin_ok("GET", "/api/cdp", None));
    std::fs::OpenOptions::new().append(true).open(&app_log).unwrap().write_all(b"noise\ncheckpoint done lsn=77\n").unwrap();
    let ev = events.wait_for("a log bookmark", |e| e["type"] == "cdp-bookmark" && e["bookmark"]["kind"] == "log");
    assert_eq!(ev["vm"], "cdp-dvm", "{ev}");
    assert!(ev["bookmark"]["detail"].as_str().unwrap().starts_with("checkpoint done lsn=77 (not application-consistent"), "{ev}");
    events.wait_for("a periodic bookmark", |e| e["type"] == "cdp-bookmark" && e["bookmark"]["kind"] == "every");
    let info = d.admin_ok("GET", "/api/datastores/default/cdp/cdp-dvm", None);
    let marks = info["bookmarks"].as_array().unwrap();
    let log_marks: Vec<_> = marks.iter().filter(|b| b["kind"] == "log").collect();
    assert_eq!(log_marks.len(), 1, "only the line appended during the protection: {info}");
    let every = marks.iter().find(|b| b["kind"] == "every").expect("a periodic bookmark");
    assert!(every.get("consistent").is_none(), "no agent, no freeze: {every}");
    assert!(every["detail"].as_str().unwrap().contains("not application-consistent") && every["detail"].as_str().unwrap().contains("agent"), "{every}");
    assert_eq!(info["disks"][0]["sessions"][1]["mode"], "async", "{info}");
    assert_eq!(info["disks"][0]["sessions"][0]["mode"], "sync", "{info}");
    // A policy bookmark names a moment like any other.
    let u = export(every["name"].as_str().unwrap());
    let (ok, out) = qemu_io_read(&u, &["read -P 0x44 12M 4k"]);
    assert!(ok, "the periodic bookmark: {out}");
    let log = d.stop().stderr;
    assert!(log.contains("stopped 1 CDP protection(s)"), "{log}");
    let sessions: serde_json::Value = serde_json::from_slice(&std::fs::read(state.join("datastores/default/cdp/cdp-dvm/disks/disk0/sessions.json")).unwrap()).unwrap();
    assert_eq!(sessions.as_array().unwrap().len(), 2, "{sessions}");
    let text = lb(args!["cdp", "points", "--datastore", state.join("datastores/default"), "cdp-dvm"]).stdout;
    assert!(text.contains("(log): checkpoint done lsn=77") && text.contains("(async)"), "{text}");
    assert!(sessions[1]["ended"].is_string(), "{sessions}");
    // The CLI reads the journal the daemon left: the end of the second
    // session has everything (its initial copy brought 0x44, written
    // between the sessions).
    let p = lb(args!["cdp", "points", "--datastore", state.join("datastores/default"), "cdp-dvm", "--json"]).json();
    let last = p["disks"][0]["sessions"][1]["ended"].as_str().unwrap().to_string();
    let ds = Ds { path: state.join("datastores/default"), password: None };
    with_export_of(&ds, "cdp-dvm", &last, |uri| {
        let (ok, out) = qemu_io_read(uri, &["read -P 0x22 1M 32k", "read -P 0x33 8M 4k", "read -P 0x44 12M 4k"]);
        assert!(ok, "the last moment: {out}");
    });
}

/// The protected host dies: QEMU is killed (SIGKILL) right after a run
/// of numbered records, each written by the guest's device and
/// acknowledged to it. In sync mode every acknowledged record is in the
/// journal; a moment between two records holds exactly the ones before
/// it. In async mode what was acknowledged more than a second before the
/// death is there (the RPO this mode promises at a steady write rate).
#[test]
fn killing_the_protected_vm_keeps_every_acknowledged_record() {
    for mode in ["sync", "async"] {
        let t = scratch(&format!("cdp-kill-{mode}"));
        let ds = Ds::init(t.path().join("ds"));
        const SIZE: u64 = 32 << 20;
        const REC: u64 = 256 << 10;
        let disk = t.path().join("disk.raw");
        std::fs::File::create(&disk).unwrap().set_len(SIZE).unwrap();
        let (mut qemu, q1, q2) = guestless_vm(t.path(), "cdp-kill", &disk);
        let mut protect = lb_cmd();
        protect.args(["cdp", "protect", "--datastore"]).arg(&ds.path).arg("--qmp").arg(&q1).args(["--mode", mode]);
        let protect = ChildGuard::spawn(protect);
        let sessions = ds.path.join("cdp/cdp-kill/disks/disk0/sessions.json");
        assert!(wait_until(Duration::from_secs(120), || sessions.exists()), "{mode}: the initial copy never finished");

        // Records 1..=N: record i is byte i over [i*REC, (i+1)*REC). The
        // moment after each acknowledgement is noted.
        let mut acked = Vec::new();
        let mut q = lifeboat_qemu::Qmp::connect(&q2).unwrap();
        let n: u64 = if mode == "sync" { 40 } else { 60 };
        for i in 1..=n {
            q.execute("human-monitor-command", json!({ "command-line": format!("qemu-io drv0 \"write -P {i} {} {REC}\"", i * REC) })).unwrap();
            acked.push(std::time::Instant::now());
            std::thread::sleep(Duration::from_millis(if mode == "sync" { 5 } else { 50 }));
            if i == 10 || i == 25 {
                let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                lb(args!["cdp", "bookmark", "--datastore", &ds.path, "cdp-kill", format!("after-{i}"), "--at", at]).expect_ok();
            }
        }
        drop(q);
        qemu.signal(libc::SIGKILL);
        let died = std::time::Instant::now();
        let _ = qemu.wait();
        // The protection notices the death, says so, and keeps the journal.
        let o = protect.wait();
        o.expect_code(1);
        assert!(o.stderr.contains("protection of cdp-kill stopped"), "{mode}: {o}");

        let p = lb(args!["cdp", "points", "--datastore", &ds.path, "cdp-kill", "--json"]).json();
        let last = p["disks"][0]["last_write"].as_str().unwrap().to_string();
        let present = |uri: &str, i: u64| qemu_io_read(uri, &[&format!("read -P {i} {} {REC}", i * REC)]).0;
        let absent = |uri: &str, i: u64| qemu_io_read(uri, &[&format!("read -P 0 {} {REC}", i * REC)]).0;
        with_export_of(&ds, "cdp-kill", &last, |uri| {
            let missing: Vec<u64> = (1..=n).filter(|&i| !present(uri, i)).collect();
            if mode == "sync" {
                assert!(missing.is_empty(), "sync: acknowledged records missing after the VM was killed: {missing:?}");
            } else {
                // Only records acknowledged within the last second may be missing.
                let old: Vec<u64> = missing.iter().copied().filter(|&i| died.duration_since(acked[(i - 1) as usize]) > Duration::from_secs(1)).collect();
                assert!(old.is_empty(), "async: records acknowledged over 1 s before the death are missing: {old:?}");
                eprintln!("async: {} of the {n} records missing after the kill ({missing:?})", missing.len());
            }
        });
        // Between two records: exactly those before (sync); in async mode
        // a record reaches the journal up to the RPO after its
        // acknowledgement, so those older than a second, and none after.
        for j in [10u64, 25] {
            with_export_of(&ds, "cdp-kill", &format!("after-{j}"), |uri| {
                for i in 1..=j {
                    let settled = mode == "sync" || acked[(j - 1) as usize].duration_since(acked[(i - 1) as usize]) > Duration::from_secs(1);
                    if settled {
                        assert!(present(uri, i), "{mode}: record {i} missing at the moment after record {j}");
                    }
                }
                for i in [j + 1, j + 2, n] {
                    assert!(absent(uri, i), "{mode}: record {i} is there at the moment after record {j}");
                }
            });
        }
    }
}

/// The takeover proof with a real guest: the tiny guest writes files
/// (each acknowledged once the guest's `sync` returned) under sync
/// protection; its QEMU is killed; the latest moment boots as the VM
/// (`cdp boot`, disks from the journal through overlays) and reaches
/// READY; a restore of that moment holds every acknowledged file, byte
/// for byte, on a file system that checks clean.
#[test]
fn the_latest_moment_of_a_killed_vm_boots_and_holds_every_acknowledged_file() {
    use common::guest::*;
    require_root();
    let t = scratch("cdp-takeover");
    let disk = build_guest("tiny", t.path());
    let run = t.path().join("run");
    let mut vm = Vm::boot_with(&disk, &run, &[], None, &lifeboat_qmp_args(&run));
    vm.wait_console("LIFEBOAT TEST GUEST lifeboat-tiny READY", Duration::from_secs(180));
    let ds = Ds::init(t.path().join("ds"));
    let mut protect = lb_cmd();
    protect.args(["cdp", "protect", "--datastore"]).arg(&ds.path).arg("--qmp").arg(run.join("lb-qmp.sock"));
    let protect = ChildGuard::spawn(protect);
    let cdp = ds.path.join("cdp/lifeboat-test-guest");
    assert!(
        wait_until(Duration::from_secs(300), || cdp.join("vm.json").exists()
            && std::fs::read_dir(cdp.join("disks")).is_ok_and(|mut d| d.next().is_some_and(|e| e.is_ok_and(|e| e.path().join("sessions.json").exists())))),
        "the protection never became ready"
    );

    let mut ctl = Lines::connect(&vm.sock("control.sock"), Duration::from_secs(10));
    let mut files = Vec::new();
    for _ in 0..3 {
        let wrote = control(&mut ctl, "write 1", "wrote 1", Duration::from_secs(120));
        let f: Vec<&str> = wrote.split_whitespace().collect();
        files.push((f[2].to_string(), f[3].to_string()));
    }
    drop(ctl);
    vm.child.signal(libc::SIGKILL);
    let _ = vm.child.wait();
    let o = protect.wait();
    o.expect_code(1);
    assert!(o.stderr.contains("protection of lifeboat-test-guest stopped"), "{o}");

    // Take over: the latest moment boots (its own heartbeat and control
    // ports, as the original had).
    let work = t.path().join("takeover");
    let (hb_sock, ctl_sock) = (work.join("hb.sock"), work.join("ctl.sock"));
    let mut c = lb_cmd();
    c.args(["cdp", "boot", "--datastore"]).arg(&ds.path).args(["lifeboat-test-guest", "--at", "latest", "--workdir"]).arg(&work);
    for a in serial_port_args(&[("hb", &hb_sock, "org.lifeboat.heartbeat"), ("ctl", &ctl_sock, "org.lifeboat.control")]) {
        c.arg(format!("--qemu-arg={a}"));
    }
    let started = std::time::Instant::now();
    let mut booted = ChildGuard::spawn(c);
    let mut hb = Lines::connect(&hb_sock, Duration::from_secs(120));
    let first = hb.line(Duration::from_secs(240)).unwrap_or_else(|| panic!("no heartbeat from the booted moment; serial: {}", std::fs::read_to_string(work.join("serial.log")).unwrap_or_default()));
    assert!(first.starts_with("heartbeat "), "{first}");
    eprintln!("takeover: first heartbeat {:.1} s after `cdp boot`", started.elapsed().as_secs_f64());
    let serial = std::fs::read_to_string(work.join("serial.log")).unwrap_or_default();
    assert!(serial.contains("LIFEBOAT TEST GUEST lifeboat-tiny READY"), "{serial}");
    let mut ctl = Lines::connect(&ctl_sock, Duration::from_secs(30));
    control(&mut ctl, "ping", "pong", Duration::from_secs(60));
    // The guest writes into the overlays; the journal stays as it was.
    control(&mut ctl, "write 1", "wrote 1", Duration::from_secs(120));
    drop(ctl);
    booted.signal(libc::SIGTERM);
    booted.wait().expect_ok();

    // The same moment restored: every acknowledged file, byte for byte.
    let out = t.path().join("restored");
    lb(args!["cdp", "restore", "--datastore", &ds.path, "lifeboat-test-guest", "--at", "latest", &out]).expect_ok();
    let img = std::fs::read_dir(&out).unwrap().flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "raw")).expect("a restored disk");
    // A crash-consistent moment: the guest's file system journal is
    // replayed as its next mount would, and then nothing is wrong (on a
    // copy of the partition: e2fsck cannot reopen an offset after replay).
    let part = t.path().join("part.ext4");
    let mut whole = std::fs::File::open(&img).unwrap();
    std::io::Seek::seek(&mut whole, std::io::SeekFrom::Start(PART_OFFSET)).unwrap();
    std::io::copy(&mut whole, &mut std::fs::File::create(&part).unwrap()).unwrap();
    let fsck = Command::new("e2fsck").arg("-fy").arg(&part).output().unwrap();
    assert!(fsck.status.code().is_some_and(|c| c <= 1), "e2fsck -fy of the latest moment: {}{}", String::from_utf8_lossy(&fsck.stdout), String::from_utf8_lossy(&fsck.stderr));
    let fsck = Command::new("e2fsck").arg("-fn").arg(&part).output().unwrap();
    assert!(fsck.status.success(), "after the replay: {}", String::from_utf8_lossy(&fsck.stdout));
    for (i, (sha, path)) in files.iter().enumerate() {
        let dumped = t.path().join(format!("file-{i}"));
        let o = Command::new("debugfs").arg("-R").arg(format!("dump {path} {}", dumped.display())).arg(&part).output().unwrap();
        assert!(dumped.is_file(), "acknowledged file {path} is not in the latest moment: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(&sha256_file(&dumped), sha, "acknowledged file {path} differs at the latest moment");
    }
}
