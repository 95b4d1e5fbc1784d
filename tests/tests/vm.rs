//! VM backup end to end with the tiny test guest under QEMU (TCG):
//! a full backup taken while the guest keeps writing after the backup
//! point restores byte-identical to the disk at that point (qemu-img
//! compare); an incremental reads only the dirty chunks; instant restore
//! boots the guest from the datastore over our NBD server (heartbeats,
//! writes land in the overlay, the datastore stays untouched).

mod common;

use common::guest::*;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn vm_backup(ds: &Ds, qmp: &Path, failpoints: Option<&str>) -> ChildGuard {
    let mut c2 = lb_cmd();
    c2.args(["vm", "backup", "--datastore"]).arg(&ds.path).arg("--qmp").arg(qmp).arg("--json");
    if let Some(fp) = failpoints {
        c2.env("LIFEBOAT_FAILPOINTS", fp);
    }
    ChildGuard::spawn(c2)
}

fn fleece_socket(ds: &Path) -> Option<PathBuf> {
    let tmp = ds.join("tmp");
    std::fs::read_dir(tmp).ok()?.flatten().map(|e| e.path().join("nbd.sock")).find(|p| p.exists())
}

#[test]
fn vm_backup_incremental_restore_and_instant_restore() {
    require_root();
    let t = scratch("vm");
    let disk = build_guest("tiny", t.path());
    let run = t.path().join("run");
    let mut vm = Vm::boot_with(&disk, &run, &[], None, &lifeboat_qmp_args(&run));
    let local_boot = vm.wait_console("LIFEBOAT TEST GUEST lifeboat-tiny READY", Duration::from_secs(180));
    let mut ctl = Lines::connect(&vm.sock("control.sock"), Duration::from_secs(10));
    control(&mut ctl, "write 8", "wrote 8", Duration::from_secs(120));
    control(&mut ctl, "sync", "synced", Duration::from_secs(60));
    let mut qmp = Qmp::connect(&vm.sock("qmp.sock"));
    let lbqmp = run.join("lb-qmp.sock");
    let ds = Ds::init(t.path().join("ds"));

    // The inventory sees the guest's hardware.
    let o = run_cmd({
        let mut c = lb_cmd();
        c.args(["vm", "inspect", "--qmp"]).arg(&lbqmp);
        c
    });
    o.expect_ok();
    let md: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(md["name"], "lifeboat-test-guest", "{md}");
    assert_eq!(md["nics"][0]["mac"], "52:54:00:12:34:56", "{md}");
    let disk_id = md["disks"][0]["id"].as_str().unwrap().to_string();

    // 1. Full backup; the guest writes after the point, during the backup.
    qmp.cmd("stop", json!({}));
    let ref1 = t.path().join("ref1.raw");
    snapshot_disk(&disk, "raw", &ref1);
    let b = vm_backup(&ds, &lbqmp, Some("vm-fleeced=sleep6000"));
    assert!(wait_until(Duration::from_secs(60), || fleece_socket(&ds.path).is_some()), "the backup never exported its point in time");
    qmp.cmd("cont", json!({}));
    control(&mut ctl, "write 16", "wrote 16", Duration::from_secs(120));
    control(&mut ctl, "sync", "synced", Duration::from_secs(60));
    let o = b.wait();
    o.expect_ok();
    let full = o.json();
    let id1 = full["snapshot_id"].as_str().unwrap().to_string();
    let d = &full["disks"][0][1];
    // First backup: everything with data is read, holes are not.
    assert!(full["parent"].is_null() && d["chunks_read"].as_u64().unwrap() > 0 && d["chunks_zero"].as_u64().unwrap() > 0, "{full}");
    assert!(!identical(&disk, "raw", &ref1).0, "the guest did not change its disk after the backup point");
    let out1 = t.path().join("restore1");
    let o = run_cmd({
        let mut c = lb_cmd();
        c.args(["vm", "restore", "--datastore"]).arg(&ds.path).arg(&id1).arg(&out1).args(["--format", "qcow2"]);
        c
    });
    o.expect_ok();
    let (same, why) = identical(out1.join(format!("{disk_id}.qcow2")), "qcow2", &ref1);
    assert!(same, "restored disk differs from the disk at the backup point: {why}");
    let restored_md: Value = serde_json::from_slice(&std::fs::read(out1.join("vm.json")).unwrap()).unwrap();
    assert_eq!(restored_md["nics"], md["nics"]);

    // 2. Incremental: only dirty chunks are read.
    control(&mut ctl, "write 4", "wrote 4", Duration::from_secs(120));
    control(&mut ctl, "sync", "synced", Duration::from_secs(60));
    qmp.cmd("stop", json!({}));
    let ref2 = t.path().join("ref2.raw");
    snapshot_disk(&disk, "raw", &ref2);
    let o = vm_backup(&ds, &lbqmp, None).wait();
    o.expect_ok();
    qmp.cmd("cont", json!({}));
    let inc = o.json();
    let d = &inc["disks"][0][1];
    let (read, reused, chunks) = (d["chunks_read"].as_u64().unwrap(), d["chunks_reused"].as_u64().unwrap(), d["chunks"].as_u64().unwrap());
    eprintln!("incremental: {read} of {chunks} chunks read, {reused} reused");
    assert!(d["full_reason"].is_null(), "{inc}");
    // Since the first point the guest wrote 16 + 4 MiB (5 chunks at
    // least) plus file system metadata: far less than the disk.
    assert!((5..=16).contains(&read) && reused + read + d["chunks_zero"].as_u64().unwrap() == chunks, "{inc}");
    // File system metadata dirties chunks in small places: those are read
    // in part and patched onto the parent's chunk (the restore below
    // proves the patching byte-exact).
    let patched = d["chunks_patched"].as_u64().unwrap();
    assert!(patched >= 1 && d["bytes_read"].as_u64().unwrap() < read * (4 << 20), "{inc}");
    let id2 = inc["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(inc["parent"].as_str(), Some(id1.as_str()));
    let img = t.path().join("into.raw");
    qemu_img(&["create", "-f", "raw", img.to_str().unwrap(), &md["disks"][0]["size"].to_string()]);
    let o = run_cmd({
        let mut c = lb_cmd();
        c.args(["vm", "restore", "--datastore"]).arg(&ds.path).arg(&id2).args(["--disk", &disk_id, "--into"]).arg(&img);
        c
    });
    o.expect_ok();
    let (same, why) = identical(&img, "raw", &ref2);
    assert!(same, "incremental restore differs: {why}");
    ds.assert_check_clean();

    // 3. Instant restore of snapshot 2 after the original is gone.
    control(&mut ctl, "poweroff", "poweroff", Duration::from_secs(30));
    drop((qmp, ctl));
    vm.wait_exit(Duration::from_secs(90));
    let work = t.path().join("instant");
    let hb_sock = work.join("hb.sock");
    let ctl_sock = work.join("ctl.sock");
    let mut c = lb_cmd();
    c.args(["vm", "instant-restore", "--datastore"]).arg(&ds.path).arg(&id2).arg("--workdir").arg(&work);
    // No accelerator given: the product's default (auto) must find one
    // that boots here, as it must for every user.
    for a in serial_port_args(&[("hb", &hb_sock, "org.lifeboat.heartbeat"), ("ctl", &ctl_sock, "org.lifeboat.control")]) {
        c.arg(format!("--qemu-arg={a}"));
    }
    let started = Instant::now();
    let mut ir = ChildGuard::spawn(c);
    let mut hb = Lines::connect(&hb_sock, Duration::from_secs(120));
    let first = hb.line(Duration::from_secs(180)).expect("no heartbeat from the instantly restored VM");
    let to_heartbeat = started.elapsed();
    assert!(first.starts_with("heartbeat "), "{first}");
    eprintln!("instant restore: first heartbeat after {:.1} s (local boot to READY: {:.1} s)", to_heartbeat.as_secs_f64(), local_boot.as_secs_f64());
    let serial = std::fs::read_to_string(work.join("serial.log")).unwrap_or_default();
    assert!(serial.contains("LIFEBOAT TEST GUEST lifeboat-tiny READY"), "{serial}");
    let mut ctl = Lines::connect(&ctl_sock, Duration::from_secs(30));
    control(&mut ctl, "write 2", "wrote 2", Duration::from_secs(120));
    control(&mut ctl, "sync", "synced", Duration::from_secs(60));
    assert!(std::fs::metadata(work.join(format!("{disk_id}.overlay"))).map(|m| m.len() > 0).unwrap_or(false), "no overlay file");

    // 4. Migrate back while it runs: mirror onto a local qcow2, pivot,
    // release the export; the guest keeps running and writing.
    let local = t.path().join("local");
    let o = run_cmd({
        let mut c = lb_cmd();
        c.args(["vm", "migrate-back", "--qmp"]).arg(work.join("qmp.sock")).arg(&local).args(["--format", "qcow2"]);
        c
    });
    o.expect_ok();
    let wrote = control(&mut ctl, "write 3", "wrote 3", Duration::from_secs(120));
    let f: Vec<&str> = wrote.split_whitespace().collect();
    let (sha, guest_file) = (f[2].to_string(), f[3].to_string());
    control(&mut ctl, "sync", "synced", Duration::from_secs(60));
    // Stopping instant-restore now leaves the VM running: it needs no export.
    ir.signal(libc::SIGTERM);
    let o = ir.wait();
    assert_eq!(o.code(), Some(0), "{o}");
    assert!(o.stderr.contains("runs from local disks"), "{o}");
    assert!(o.stderr.contains("accelerator: KVM") || o.stderr.contains("accelerator: TCG"), "{o}");
    let beat = hb.line(Duration::from_secs(30)).expect("the migrated VM stopped beating");
    assert!(beat.starts_with("heartbeat "), "{beat}");
    control(&mut ctl, "poweroff", "poweroff", Duration::from_secs(30));
    assert!(wait_until(Duration::from_secs(90), || hb.line(Duration::from_secs(3)).is_none()), "the migrated VM did not power off");
    std::thread::sleep(Duration::from_secs(1));
    // The local image holds everything the guest wrote, the last file too.
    let final_raw = t.path().join("final.raw");
    let o = qemu_img(&["convert", "-U", "-f", "qcow2", "-O", "raw", local.join(format!("{disk_id}.qcow2")).to_str().unwrap(), final_raw.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_fs_clean(&final_raw);
    let dumped = t.path().join("dumped");
    debugfs_dump(&final_raw, &guest_file, &dumped);
    assert_eq!(sha256_file(&dumped), sha, "the file written after migrating back differs");
    // The datastore did not change: the same snapshots, all intact.
    ds.assert_check_clean();
    let (same, why) = {
        let o = run_cmd({
            let mut c = lb_cmd();
            c.args(["vm", "restore", "--datastore"]).arg(&ds.path).arg(&id2).arg(t.path().join("again")).args(["--disk", &disk_id]);
            c
        });
        o.expect_ok();
        identical(t.path().join("again").join(format!("{disk_id}.raw")), "raw", &ref2)
    };
    assert!(same, "snapshot changed after instant restore: {why}");
}
