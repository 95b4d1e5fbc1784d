//! VM backup through the daemon, with the tiny test guest under QEMU
//! (TCG): the VM is registered by its QMP socket and listed with its
//! live inventory; `vm-backup` jobs run full, then incremental (few bytes
//! read) while the guest keeps writing after the backup point; a restore
//! through the remote CLI is byte-identical to the disk at that point
//! (qemu-img compare). A dirty bitmap removed behind lifeboat's back
//! makes the next backup a full read that says why, and that restore is
//! identical too. NBD exports of a snapshot: nbdinfo and qemu-img compare
//! read them, a read-only one refuses writes (qemu-io), a writable one
//! keeps writes in its overlay, and an exported snapshot cannot be
//! forgotten.

mod common;

use common::daemon::Daemon;
use common::guest::*;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The backup's NBD socket once it has exported its point in time: in
/// its work directory, or in /tmp when that path is too long for a socket.
fn fleece_socket(ds: &Path) -> Option<PathBuf> {
    std::fs::read_dir(ds.join("tmp")).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        [e.path().join("nbd.sock"), std::env::temp_dir().join(format!("lifeboat-{}.sock", &name[..name.len().min(40)]))].into_iter().find(|p| p.exists())
    })
}

fn start_backup(d: &Daemon, vm: &str) -> String {
    let j = d.admin_ok("POST", "/api/jobs", Some(&json!({ "kind": "vm-backup", "datastore": "default", "vm": vm })));
    j["id"].as_str().unwrap().to_string()
}

#[track_caller]
fn succeeded(d: &Daemon, id: &str) -> Value {
    let j = d.wait_job(id, Duration::from_secs(300));
    assert_eq!(j["state"], "succeeded", "{j}\n--- job log\n{}", d.call("GET", &format!("/api/jobs/{id}/log"), Some(&d.admin), None).body);
    j["result"].clone()
}

fn qemu_io(uri: &str, cmd: &str) -> std::process::Output {
    Command::new("qemu-io").args(["-f", "raw", "-c", cmd, uri]).output().expect("run qemu-io")
}

#[test]
fn vm_backup_jobs_exports_and_bitmap_loss_through_the_daemon() {
    require_root();
    let t = scratch("vm-daemon");
    let disk = build_guest("tiny", t.path());
    let run = t.path().join("run");
    let mut vm = Vm::boot_with(&disk, &run, &[], None, &lifeboat_qmp_args(&run));
    vm.wait_console("LIFEBOAT TEST GUEST lifeboat-tiny READY", Duration::from_secs(180));
    let mut ctl = Lines::connect(&vm.sock("control.sock"), Duration::from_secs(10));
    control(&mut ctl, "write 8", "wrote 8", Duration::from_secs(120));
    control(&mut ctl, "sync", "synced", Duration::from_secs(60));
    let mut qmp = Qmp::connect(&vm.sock("qmp.sock"));
    let lbqmp = run.join("lb-qmp.sock");

    // Each backup holds 3 s at its point in time, for the guest to write.
    let state = t.path().join("state");
    let d = Daemon::start(&state, Some("nbd_listen = \"127.0.0.1:0\"\n"), &[("LIFEBOAT_FAILPOINTS", "vm-fleeced=sleep3000")]);
    let ds = state.join("datastores/default");

    // Registration: a dead socket is refused, naming it; the live one
    // registers under QEMU's name and lists with its hardware.
    let dead = t.path().join("nothing.sock");
    let r = d.call("POST", "/api/vms", Some(&d.admin), Some(&json!({ "source": { "kind": "qmp", "qmp": dead } })));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.json()["message"].as_str().unwrap().contains(dead.to_str().unwrap()), "{r:?}");
    let ro = d.token("reader", "read-only");
    let r = d.call("POST", "/api/vms", Some(&ro), Some(&json!({ "source": { "kind": "qmp", "qmp": lbqmp } })));
    assert_eq!(r.status, 403, "{r:?}");
    let v = d.admin_ok("POST", "/api/vms", Some(&json!({ "source": { "kind": "qmp", "qmp": lbqmp } })));
    assert_eq!(v["name"], "lifeboat-test-guest", "{v}");
    let list = d.call("GET", "/api/vms", Some(&ro), None).json();
    let g = &list[0];
    assert_eq!((g["status"].as_str(), g["cpus"].as_u64()), (Some("running"), Some(1)), "{list}");
    let disk_size = g["disks"][0]["size"].as_u64().unwrap();
    assert_eq!(disk_size, std::fs::metadata(&disk).unwrap().len(), "{list}");
    assert!(g["memory_mib"].as_u64().unwrap() > 0 && g["disks"][0]["format"] == "raw", "{list}");
    let o = run_cmd({
        let mut c = d.remote(&ro);
        c.args(["vm", "list"]);
        c
    });
    o.expect_ok();
    assert!(o.stdout.contains("lifeboat-test-guest") && o.stdout.contains("running"), "{o}");
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "vm-backup", "datastore": "default", "vm": "nope" })));
    assert_eq!(r.status, 404, "{r:?}");

    // 1. Full backup, from the remote CLI (which follows the job).
    let o = run_cmd({
        let mut c = d.remote(&d.admin);
        c.args(["vm", "backup", "--datastore", "default", "--json", "lifeboat-test-guest"]);
        c
    });
    o.expect_ok();
    let job1 = o.json();
    assert_eq!((job1["state"].as_str(), job1["spec"]["kind"].as_str()), (Some("succeeded"), Some("vm-backup")), "{job1}");
    let full = job1["result"].clone();
    let id1 = full["snapshot"].as_str().unwrap().to_string();
    assert!(full["parent"].is_null(), "{full}");

    // 2. Incremental, the guest writing after the point.
    control(&mut ctl, "write 4", "wrote 4", Duration::from_secs(120));
    control(&mut ctl, "sync", "synced", Duration::from_secs(60));
    qmp.cmd("stop", json!({}));
    let ref2 = t.path().join("ref2.raw");
    snapshot_disk(&disk, "raw", &ref2);
    let j2 = start_backup(&d, "lifeboat-test-guest");
    assert!(wait_until(Duration::from_secs(60), || fleece_socket(&ds).is_some()), "the backup never exported its point in time");
    // While the job holds the VM's monitor, listing does not wait for it.
    let busy = d.admin_ok("GET", "/api/vms", None);
    assert!(busy[0]["error"].as_str().unwrap_or("").contains(&j2), "{busy}");
    qmp.cmd("cont", json!({}));
    control(&mut ctl, "write 8", "wrote 8", Duration::from_secs(120));
    control(&mut ctl, "sync", "synced", Duration::from_secs(60));
    let inc = succeeded(&d, &j2);
    assert!(!identical(disk.to_str().unwrap(), "raw", &ref2).0, "the guest did not change its disk after the backup point");
    let id2 = inc["snapshot"].as_str().unwrap().to_string();
    let read = inc["bytes_read"].as_u64().unwrap();
    eprintln!("incremental read {read} of {disk_size} bytes");
    assert_eq!(inc["parent"].as_str(), Some(id1.as_str()), "{inc}");
    assert!(inc["full_reason"].is_null() && read >= 4 << 20 && read * 4 < disk_size, "{inc}");
    let out2 = t.path().join("restore2");
    let o = run_cmd({
        let mut c = d.remote(&d.admin);
        c.args(["vm", "restore", "--datastore", "default", &id2]).arg(&out2);
        c
    });
    o.expect_ok();
    let disk_id = inc["disks"][0]["id"].as_str().unwrap().to_string();
    let restored2 = out2.join(format!("{disk_id}.raw"));
    let (same, why) = identical(restored2.to_str().unwrap(), "raw", &ref2);
    assert!(same, "restore of the incremental differs from the disk at its point: {why}");

    // 3. The bitmap is lost behind lifeboat's back: a full read, reported.
    let blocks = qmp.cmd("query-block", json!({}));
    let ins = blocks.as_array().unwrap().iter().find_map(|b| b.get("inserted")).expect("an inserted disk").clone();
    let node = ins["node-name"].as_str().unwrap().to_string();
    let nodes = qmp.cmd("query-named-block-nodes", json!({ "flat": true }));
    let this = nodes.as_array().unwrap().iter().find(|n| n["node-name"] == node.as_str()).expect("the disk's node").clone();
    let named: Vec<String> = this["dirty-bitmaps"].as_array().into_iter().flatten().filter_map(|b| b["name"].as_str().map(String::from)).collect();
    assert!(named.iter().any(|n| n.starts_with("lifeboat-")), "no lifeboat dirty bitmap after two backups: {this}");
    for b in &named {
        qmp.cmd("block-dirty-bitmap-remove", json!({ "node": node, "name": b }));
    }
    control(&mut ctl, "write 2", "wrote 2", Duration::from_secs(120));
    control(&mut ctl, "sync", "synced", Duration::from_secs(60));
    qmp.cmd("stop", json!({}));
    let ref3 = t.path().join("ref3.raw");
    snapshot_disk(&disk, "raw", &ref3);
    let third = succeeded(&d, &start_backup(&d, "lifeboat-test-guest"));
    qmp.cmd("cont", json!({}));
    let reason = third["full_reason"].as_str().unwrap_or_else(|| panic!("no full_reason after the bitmap was removed: {third}"));
    assert!(reason.contains("bitmap"), "{third}");
    assert_eq!(third["parent"].as_str(), Some(id2.as_str()), "{third}");
    assert!(third["bytes_read"].as_u64().unwrap() > read * 2 && third["disks"][0]["chunks_reused"] == 0, "{third}");
    let id3 = third["snapshot"].as_str().unwrap().to_string();
    let out3 = t.path().join("restore3");
    let j = d.admin_ok("POST", "/api/jobs", Some(&json!({ "kind": "vm-restore", "datastore": "default", "snapshot": id3, "target": out3 })));
    succeeded(&d, j["id"].as_str().unwrap());
    let (same, why) = identical(out3.join(format!("{disk_id}.raw")).to_str().unwrap(), "raw", &ref3);
    assert!(same, "restore after the bitmap-lost fallback differs: {why}");

    // 4. Exports of snapshot 2: read with real clients, read-only refuses
    // writes, a writable one keeps them in its overlay only.
    let o = run_cmd({
        let mut c = d.remote(&d.admin);
        c.args(["vm", "export", "--json", &id2[..12]]);
        c
    });
    o.expect_ok();
    let e = o.json();
    let uri = e["uri"].as_str().unwrap().to_string();
    assert_eq!((e["writable"].as_bool(), e["size"].as_u64(), e["snapshot"].as_str()), (Some(false), Some(disk_size), Some(id2.as_str())), "{e}");
    let info = Command::new("nbdinfo").arg("--size").arg(&uri).output().expect("run nbdinfo");
    assert_eq!(String::from_utf8_lossy(&info.stdout).trim(), disk_size.to_string(), "nbdinfo: {}", String::from_utf8_lossy(&info.stderr));
    let (same, why) = identical(&uri, "raw", &restored2);
    assert!(same, "the export differs from the restored disk: {why}");
    let w = qemu_io(&uri, "write -P 0xab 0 64k");
    let text = format!("{}{}", String::from_utf8_lossy(&w.stdout), String::from_utf8_lossy(&w.stderr));
    eprintln!("qemu-io write to the read-only export: {:?} {}", w.status.code(), text.trim());
    assert!(
        !w.status.success() || text.contains("failed") || text.contains("ermission") || text.contains("read-only") || text.contains("read only"),
        "a write to a read-only export was accepted: {text}"
    );
    let r = d.call("DELETE", &format!("/api/datastores/default/snapshots/{id2}"), Some(&d.admin), None);
    assert!((400..500).contains(&r.status) && r.body.contains("export"), "forgetting an exported snapshot: {r:?}");

    let wr = d.admin_ok("POST", "/api/exports", Some(&json!({ "datastore": "default", "snapshot": id2, "disk": disk_id, "writable": true })));
    let wuri = wr["uri"].as_str().unwrap().to_string();
    let w = qemu_io(&wuri, "write -P 0xab 1M 64k");
    assert!(w.status.success(), "write to a writable export: {}", String::from_utf8_lossy(&w.stderr));
    let rd = qemu_io(&wuri, "read -P 0xab 1M 64k");
    assert!(rd.status.success() && !String::from_utf8_lossy(&rd.stdout).contains("Pattern verification failed"), "{rd:?}");
    let overlays = state.join("exports").join(wr["id"].as_str().unwrap());
    assert!(overlays.is_dir(), "no overlay directory {}", overlays.display());
    let listed = d.admin_ok("GET", "/api/exports", None);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    for x in [&e, &wr] {
        let r = d.call("DELETE", &format!("/api/exports/{}", x["id"].as_str().unwrap()), Some(&d.admin), None);
        assert_eq!(r.status, 204, "{r:?}");
    }
    assert!(wait_until(Duration::from_secs(10), || !overlays.exists()), "the overlay stayed after the export was deleted");
    assert!(!Command::new("nbdinfo").arg("--size").arg(&uri).output().unwrap().status.success(), "a deleted export still answers");
    assert_eq!(d.admin_ok("GET", "/api/exports", None), json!([]));
    // The datastore never saw the overlay's write.
    let again = t.path().join("again");
    let j = d.admin_ok("POST", "/api/jobs", Some(&json!({ "kind": "vm-restore", "datastore": "default", "snapshot": id2, "target": again })));
    succeeded(&d, j["id"].as_str().unwrap());
    let (same, why) = identical(again.join(format!("{disk_id}.raw")).to_str().unwrap(), "raw", &ref2);
    assert!(same, "snapshot 2 changed after a writable export: {why}");
    // The same snapshot as a job for another platform (the tiny guest's
    // repair is covered by tests/tests/convert.rs: here the job options).
    let hv = t.path().join("for-hyperv");
    let j = d.admin_ok("POST", "/api/jobs", Some(&json!({ "kind": "vm-restore", "datastore": "default", "snapshot": id2, "target": hv, "platform": "hyperv", "map": ["mac=new"], "no_repair": true })));
    let r = succeeded(&d, j["id"].as_str().unwrap());
    assert_eq!((r["platform"].as_str(), r["format"].as_str()), (Some("hyperv"), Some("vhdx")), "{r}");
    assert!(!r["macs"].as_object().unwrap().is_empty() && r["macs"].as_object().unwrap().values().all(|m| m[1].as_str().unwrap().starts_with("00:15:5d:")), "{r}");
    let (same, why) = identical(hv.join(format!("{disk_id}.vhdx")).to_str().unwrap(), "vhdx", &ref2);
    assert!(same, "the VHDX restored by the job differs: {why}");
    let desc: Value = serde_json::from_slice(&std::fs::read(hv.join("hyperv.json")).unwrap()).unwrap();
    assert_eq!(desc["nics"][0]["mac"].as_str().map(|m| m.starts_with("00155D")), Some(true), "{desc}");
    // Several platforms in one job: a directory each, one read.
    let multi = t.path().join("for-several");
    let j = d.admin_ok("POST", "/api/jobs", Some(&json!({ "kind": "vm-restore", "datastore": "default", "snapshot": id2, "target": multi, "platforms": ["kvm:raw", "hyperv"], "no_repair": true })));
    let r = succeeded(&d, j["id"].as_str().unwrap());
    let targets = r["targets"].as_array().unwrap_or_else(|| panic!("no targets in {r}"));
    assert_eq!(targets.iter().map(|t| t["platform"].as_str().unwrap()).collect::<Vec<_>>(), ["kvm", "hyperv"], "{r}");
    let (same, why) = identical(multi.join(format!("kvm/{disk_id}.raw")).to_str().unwrap(), "raw", &ref2);
    assert!(same, "the kvm disk of the several-platform job differs: {why}");
    let (same, why) = identical(multi.join(format!("hyperv/{disk_id}.vhdx")).to_str().unwrap(), "vhdx", &ref2);
    assert!(same, "the hyperv disk of the several-platform job differs: {why}");
    assert!(r["files"].as_array().unwrap().iter().any(|f| f.as_str().unwrap().ends_with("hyperv/hyperv.json")), "{r}");
    let bad = d.admin_ok(
        "POST",
        "/api/jobs",
        Some(&json!({ "kind": "vm-restore", "datastore": "default", "snapshot": id2, "target": t.path().join("bad"), "platform": "kvm", "map": ["nic_model=e1000,x"], "no_repair": true })),
    );
    let j = d.wait_job(bad["id"].as_str().unwrap(), Duration::from_secs(60));
    assert!(j["state"] == "failed" && j["error"].as_str().unwrap_or("").contains("nic_model takes"), "{j}");

    // A schedule's keep rules touch only this VM's snapshots: not the
    // file backup in the same datastore.
    let files = t.path().join("files");
    write_file(&files.join("a.txt"), b"not a VM");
    let fb = d.admin_ok("POST", "/api/jobs", Some(&json!({ "kind": "backup", "datastore": "default", "paths": [files] })));
    let file_snap = succeeded(&d, fb["id"].as_str().unwrap())["snapshot"].as_str().unwrap().to_string();
    let sched = d.admin_ok(
        "POST",
        "/api/schedules",
        Some(&json!({ "name": "guest-nightly", "cron": "0 0 3 * * *", "job": { "kind": "vm-backup", "datastore": "default", "vm": "lifeboat-test-guest" }, "keep": { "last": 1 } })),
    );
    let j = d.admin_ok("POST", &format!("/api/schedules/{}/run", sched["id"].as_str().unwrap()), None);
    let fourth = succeeded(&d, j["id"].as_str().unwrap());
    let mut forgotten: Vec<&str> = fourth["forgotten"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    forgotten.sort();
    let mut older = vec![id1.as_str(), id2.as_str(), id3.as_str()];
    older.sort();
    assert_eq!(forgotten, older, "{fourth}");
    let snaps = d.admin_ok("GET", "/api/datastores/default/snapshots", None);
    let left: Vec<&str> = snaps.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(left.len(), 2, "{snaps}");
    assert!(left.contains(&file_snap.as_str()) && left.contains(&fourth["snapshot"].as_str().unwrap()), "{snaps}");

    // The registry is on disk: the local CLI reads it, and it can go.
    let o = run_cmd({
        let mut c = lb_cmd();
        c.args(["vm", "list", "--state-dir"]).arg(&state);
        c
    });
    o.expect_ok();
    assert!(o.stdout.contains("lifeboat-test-guest"), "{o}");
    assert_eq!(d.call("DELETE", "/api/vms/lifeboat-test-guest", Some(&d.admin), None).status, 204);
    assert_eq!(d.admin_ok("GET", "/api/vms", None), json!([]));

    control(&mut ctl, "poweroff", "poweroff", Duration::from_secs(30));
    drop((qmp, ctl));
    vm.wait_exit(Duration::from_secs(90));
    let log = d.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

fn pid_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists() && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

fn instant_vm(list: &Value, name: &str) -> Option<Value> {
    list.as_array().unwrap().iter().find(|v| v["name"] == name).cloned()
}

/// Instant restore as a daemon job: the tiny guest's backup boots in the
/// appliance and `/api/vms` shows it as instant-restored; its snapshot
/// cannot be forgotten while it runs. A paused one is migrated back onto
/// a local qcow2 (identical to the backup) and boots from it with the
/// exports closed, registered as an ordinary VM. A daemon killed with
/// SIGKILL leaves an instant VM behind, which the next start kills and
/// removes (sparing the migrated one); a clean stop powers instant VMs off.
#[test]
fn instant_restore_jobs_migrate_back_and_cleanup() {
    require_root();
    let t = scratch("vm-instant");
    let tiny = build_guest("tiny", t.path());
    let state = t.path().join("state");
    let restores = t.path().join("restores");
    let cfg = format!("restore_roots = [\"{}\"]\n", restores.display());
    let d = Daemon::start(&state, Some(&cfg), &[]);
    let ds = Ds::at(state.join("datastores/default"));
    back_up_paused(&ds, &tiny, "inst-tiny", &t.path().join("q"));
    let instant_dir = state.join("instant");
    let start = |d: &Daemon, extra: Value| {
        let mut spec = json!({ "kind": "vm-instant-restore", "datastore": "default", "snapshot": "vm:inst-tiny" });
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let j = d.admin_ok("POST", "/api/jobs", Some(&spec));
        d.wait_job(j["id"].as_str().unwrap(), Duration::from_secs(120))
    };

    // Boots; listed as instant-restored and running; the guest comes up.
    let ro = d.token("reader", "read-only");
    let r = d.call("POST", "/api/jobs", Some(&ro), Some(&json!({ "kind": "vm-instant-restore", "datastore": "default", "snapshot": "vm:inst-tiny" })));
    assert_eq!(r.status, 403, "{r:?}");
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "vm-instant-restore", "datastore": "default", "snapshot": "latest", "net": "bridge" })));
    assert_eq!(r.status, 400, "{r:?}");
    let j = start(&d, json!({ "name": "booted" }));
    assert_eq!(j["state"], "succeeded", "{j:#}");
    let booted_pid = j["result"]["pid"].as_u64().unwrap();
    let serial = PathBuf::from(j["result"]["serial_log"].as_str().unwrap());
    assert!(serial.starts_with(instant_dir.join("booted")), "{j}");
    let v = instant_vm(&d.call("GET", "/api/vms", Some(&ro), None).json(), "booted").expect("the instant VM is listed");
    assert_eq!((v["status"].as_str(), v["instant"]["datastore"].as_str(), v["instant"]["pid"].as_u64()), (Some("running"), Some("default"), Some(booted_pid)), "{v:#}");
    let snap = v["instant"]["snapshot"].as_str().unwrap().to_string();
    assert!(
        wait_until(Duration::from_secs(180), || String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).contains("LIFEBOAT TEST GUEST lifeboat-tiny READY")),
        "the instant-restored guest did not come up:\n{}",
        String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default())
    );
    let r = d.call("DELETE", &format!("/api/datastores/default/snapshots/{snap}"), Some(&d.admin), None);
    assert!((400..500).contains(&r.status) && r.body.contains("stop the VM"), "forgetting the snapshot of a running instant VM: {r:?}");
    // The name is taken; the job says so.
    let dup = start(&d, json!({ "name": "booted" }));
    assert_eq!(dup["state"], "failed", "{dup:#}");
    assert!(dup["error"].as_str().unwrap().contains("exists already"), "{dup:#}");

    // A paused one migrates back, byte for byte, and then boots on its own.
    let o = run_cmd({
        let mut c = d.remote(&d.admin);
        c.args(["vm", "instant-restore", "--datastore", "default", "--paused", "--name", "mig", "vm:inst-tiny"]);
        c
    });
    o.expect_ok();
    assert!(o.stdout.contains("VM mig runs from snapshot"), "{o}");
    let outside = t.path().join("elsewhere");
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "vm-migrate-back", "datastore": "default", "vm": "mig", "target": outside })));
    assert_eq!(r.status, 403, "a migration out of restore_roots: {r:?}");
    let target = restores.join("mig");
    let o = run_cmd({
        let mut c = d.remote(&d.admin);
        c.args(["vm", "migrate-back", "--datastore", "default", "mig"]).arg(&target);
        c
    });
    o.expect_ok();
    assert!(o.stdout.contains("runs on local disks now"), "{o}");
    let images: Vec<PathBuf> = std::fs::read_dir(&target).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(images.len(), 1, "{images:?}");
    let (same, why) = identical(images[0].to_str().unwrap(), "qcow2", &tiny);
    assert!(same, "the migrated image differs from the backup: {why}");
    let list = d.admin_ok("GET", "/api/vms", None);
    let mig = instant_vm(&list, "mig").expect("the migrated VM stays registered");
    assert!(mig["instant"].is_null() && mig["status"] == "paused", "{mig:#}");
    let mig_qmp = PathBuf::from(mig["source"]["qmp"].as_str().unwrap());
    let mut q = Qmp::connect(&mig_qmp);
    let nodes = q.cmd("query-named-block-nodes", json!({ "flat": true }));
    assert!(!nodes.as_array().unwrap().iter().any(|n| n["drv"] == "nbd"), "a disk still reads over NBD: {nodes}");
    q.cmd("cont", json!({}));
    let mig_serial = mig_qmp.with_file_name("serial.log");
    assert!(wait_until(Duration::from_secs(180), || String::from_utf8_lossy(&std::fs::read(&mig_serial).unwrap_or_default()).contains("READY")), "the migrated VM did not boot from its local image");
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "vm-migrate-back", "datastore": "default", "vm": "mig", "target": target })));
    assert_eq!(r.status, 400, "migrating an ordinary VM back: {r:?}");

    drop(q); // QMP serves one client: the daemon's inventory asks next.

    // SIGKILL: "booted" is left running on a dead export; the next start
    // removes it and spares the migrated VM.
    d.kill();
    assert!(pid_alive(booted_pid), "QEMU died with the daemon; this test expects it left behind");
    let d = Daemon::start(&state, Some(&cfg), &[]);
    assert!(!pid_alive(booted_pid), "the next start left the stale instant VM running");
    assert!(!instant_dir.join("booted").exists());
    let list = d.admin_ok("GET", "/api/vms", None);
    assert!(instant_vm(&list, "booted").is_none(), "{list:#}");
    assert_eq!(instant_vm(&list, "mig").map(|v| v["status"].clone()), Some(json!("running")), "{list:#}");

    // Stopping one removes it; a clean daemon stop powers the rest off.
    let a = start(&d, json!({ "name": "a" }));
    let b = start(&d, json!({ "name": "b" }));
    let (pa, pb) = (a["result"]["pid"].as_u64().unwrap(), b["result"]["pid"].as_u64().unwrap());
    let o = run_cmd({
        let mut c = d.remote(&d.admin);
        c.args(["vm", "stop", "a"]);
        c
    });
    o.expect_ok();
    assert!(!pid_alive(pa) && !instant_dir.join("a").exists(), "vm stop left QEMU or its overlays");
    let r = d.call("DELETE", &format!("/api/datastores/default/snapshots/{snap}"), Some(&d.admin), None);
    assert!((400..500).contains(&r.status), "b still runs from the snapshot: {r:?}");
    let out = d.stop();
    assert!(out.status.success(), "{out}");
    assert!(!pid_alive(pb) && !instant_dir.join("b").exists(), "a clean stop left an instant VM");
    Qmp::connect(&mig_qmp).cmd("quit", json!({}));
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// A `vm-instant-restore` job with a target platform: a guestless backup
/// of an IDE + e1000 VM boots (paused) with kvm's hardware, the guest
/// not repaired (`no_repair`: no guest to repair, and no libguestfs run).
/// The job's result names the mapping and the MAC change, `/api/vms`
/// lists it as instant-restored from that job, and the QEMU the job
/// started has a virtio-blk disk and a virtio-net NIC with the new MAC
/// (QMP `qom-get`). A vmware mapping runs as pc with pvscsi and vmxnet3;
/// Hyper-V's NIC, which QEMU lacks, is refused, nothing started.
#[test]
fn instant_restore_job_boots_with_a_target_platforms_hardware() {
    require_root();
    let t = scratch("vm-instant-target");
    let disk = t.path().join("blank.raw");
    {
        let f = std::fs::File::create(&disk).unwrap();
        f.set_len(16 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&Rng::new(33).bytes(1 << 20), 0).unwrap();
    }
    let state = t.path().join("state");
    let d = Daemon::start(&state, None, &[]);
    let ds = Ds::at(state.join("datastores/default"));
    let old_mac = "52:54:00:0e:20:00";
    back_up_paused_as(&ds, &disk, "inst-ide", &t.path().join("q"), &PausedHardware { mem: "256", mac: old_mac, drive: "if=ide,index=0,media=disk", nic: "e1000" });

    let spec = json!({ "kind": "vm-instant-restore", "datastore": "default", "snapshot": "vm:inst-ide", "name": "as-kvm", "paused": true, "platform": "kvm", "map": ["mac=new"], "no_repair": true });
    let j = d.admin_ok("POST", "/api/jobs", Some(&spec));
    let job = j["id"].as_str().unwrap().to_string();
    let r = succeeded(&d, &job);
    assert_eq!((r["vm"].as_str(), r["target"]["platform"].as_str()), (Some("as-kvm"), Some("kvm")), "{r:#}");
    assert!(r["target"]["repair"].is_null(), "no_repair, yet a repair report: {r:#}");
    let new_mac = r["target"]["macs"]["net0"][1].as_str().unwrap_or_else(|| panic!("no MAC change in {r:#}")).to_string();
    assert_eq!(r["target"]["macs"]["net0"][0].as_str(), Some(old_mac), "{r:#}");
    assert!(new_mac.starts_with("52:54:00:") && new_mac != old_mac, "{r:#}");
    let pid = r["pid"].as_u64().unwrap();
    assert!(pid_alive(pid));

    // Listed as an instant VM of this job, paused, with the backed-up disk.
    let v = instant_vm(&d.admin_ok("GET", "/api/vms", None), "as-kvm").expect("the retargeted instant VM is listed");
    assert_eq!((v["status"].as_str(), v["instant"]["job"].as_str(), v["instant"]["pid"].as_u64()), (Some("paused"), Some(job.as_str()), Some(pid)), "{v:#}");
    assert_eq!(v["disks"].as_array().map(|d| d.len()), Some(1), "{v:#}");
    assert_eq!(v["disks"][0]["size"].as_u64(), Some(16 << 20), "{v:#}");
    let disk_id = v["disks"][0]["id"].as_str().unwrap().to_string();

    // The QEMU it runs: kvm's devices, not the backup's IDE and e1000.
    let mut q = Qmp::connect(Path::new(r["qmp"].as_str().unwrap()));
    let qom = |q: &mut Qmp, dev: &str, prop: &str| q.cmd("qom-get", json!({ "path": format!("/machine/peripheral/{dev}"), "property": prop }));
    assert_eq!(qom(&mut q, &disk_id, "type").as_str(), Some("virtio-blk-pci"), "disk {disk_id}");
    assert_eq!(qom(&mut q, "net0", "type").as_str(), Some("virtio-net-pci"));
    assert_eq!(qom(&mut q, "net0", "mac").as_str(), Some(new_mac.as_str()));
    drop(q);

    // vmware: its hardware version (vmx-14) names no QEMU machine; the
    // VM runs as pc with VMware's devices, which QEMU has.
    let j = d.admin_ok(
        "POST",
        "/api/jobs",
        Some(&json!({ "kind": "vm-instant-restore", "datastore": "default", "snapshot": "vm:inst-ide", "name": "as-vmware", "paused": true, "platform": "vmware", "no_repair": true })),
    );
    let r = succeeded(&d, j["id"].as_str().unwrap());
    let mut q = Qmp::connect(Path::new(r["qmp"].as_str().unwrap()));
    assert_eq!(qom(&mut q, &disk_id, "type").as_str(), Some("scsi-hd"), "disk {disk_id}");
    assert_eq!(qom(&mut q, "net0", "type").as_str(), Some("vmxnet3"));
    let machine = q.cmd("qom-get", json!({ "path": "/machine", "property": "type" }));
    assert!(machine.as_str().is_some_and(|m| m.starts_with("pc-i440fx")), "{machine}");
    drop(q);
    assert_eq!(d.call("DELETE", "/api/vms/as-vmware", Some(&d.admin), None).status, 204);

    // Hyper-V's synthetic NIC does not run under QEMU: refused before
    // anything starts, naming the way out.
    let j = d.admin_ok(
        "POST",
        "/api/jobs",
        Some(&json!({ "kind": "vm-instant-restore", "datastore": "default", "snapshot": "vm:inst-ide", "name": "as-hyperv", "paused": true, "platform": "hyperv", "no_repair": true })),
    );
    let f = d.wait_job(j["id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!(f["state"], "failed", "{f:#}");
    assert!(f["error"].as_str().unwrap_or("").contains("QEMU has no hv-netvsc NIC"), "{f:#}");
    assert!(instant_vm(&d.admin_ok("GET", "/api/vms", None), "as-hyperv").is_none());
    assert!(!state.join("instant").join("as-hyperv").exists(), "the refused VM left its work directory");

    assert_eq!(d.call("DELETE", "/api/vms/as-kvm", Some(&d.admin), None).status, 204);
    assert!(wait_until(Duration::from_secs(30), || !pid_alive(pid)), "DELETE /api/vms left the instant QEMU running");
    let out = d.stop();
    assert!(out.status.success() && !out.stderr.contains("panicked"), "{out}");
}
