//! Writers that deduplicate against each other (issue 24): two backups of
//! the same data at the same time store it about once when they run in
//! one process (the daemon's jobs), gc reclaims the second copies that
//! two processes store, and killing one of two concurrent writers never
//! costs the other its snapshot.

mod common;

use common::daemon::Daemon;
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PACK_TARGET: u64 = 1 << 20;

/// An ~8,000-file tree and a copy of it (same bytes, separate inodes, as
/// two hosts backing up the same data would have).
fn two_copies(t: &Path) -> (PathBuf, PathBuf) {
    let one = t.join("one");
    gen_tree(&one, 2400, TreeSpec { dirs: 60, files: 8000, max_file: 64 << 10, big_files: 2, big_size: 4 << 20 });
    fix_times(&one, 1_650_000_000);
    let two = t.join("two");
    copy_tree(&one, &two);
    (one, two)
}

/// Pack bytes of one backup of `src` alone.
fn single_backup_bytes(t: &Path, src: &Path) -> u64 {
    let ds = Ds::init(t.join("single"));
    ds.set_pack_target(PACK_TARGET);
    ds.backup(src, &[]);
    ds.pack_bytes()
}

#[test]
fn two_jobs_in_the_daemon_store_one_tree_about_once() {
    let t = scratch("dedup-daemon");
    let (one, two) = two_copies(t.path());
    let single = single_backup_bytes(t.path(), &one);

    let state = t.path().join("state");
    let ds = Ds::init(state.join("datastores/default"));
    ds.set_pack_target(PACK_TARGET);
    let d = Daemon::start(&state, None, &[]);
    let start = |src: &Path| {
        let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "backup", "datastore": "default", "paths": [src] })));
        assert_eq!(r.status, 202, "{r:?}");
        r.json()["id"].as_str().unwrap().to_string()
    };
    let (j1, j2) = (start(&one), start(&two));
    let (r1, r2) = (d.wait_job(&j1, Duration::from_secs(300)), d.wait_job(&j2, Duration::from_secs(300)));
    assert_eq!(r1["state"], "succeeded", "{r1}");
    assert_eq!(r2["state"], "succeeded", "{r2}");
    d.stop();
    let s1 = r1["result"]["snapshot"].as_str().unwrap().to_string();
    let s2 = r2["result"]["snapshot"].as_str().unwrap().to_string();

    let both = ds.pack_bytes();
    let ratio = both as f64 / single as f64;
    eprintln!("dedup-daemon: one backup {single} pack bytes; two at once {both} ({ratio:.2}x)");
    assert!(ratio <= 1.3, "two concurrent backups of one tree took {ratio:.2}x the space of one ({both} vs {single} bytes)");
    ds.assert_check_clean();
    ds.assert_restores(&s1, &one, t.path());
    ds.assert_restores(&s2, &two, t.path());
}

#[test]
fn gc_reclaims_what_two_processes_stored_twice() {
    let t = scratch("dedup-gc");
    let (one, two) = two_copies(t.path());
    let single = single_backup_bytes(t.path(), &one);

    let ds = Ds::init(t.path().join("ds"));
    ds.set_pack_target(PACK_TARGET);
    let spawn = |src: &Path| {
        let mut c = ds.cmd("backup");
        c.arg("--json").arg(src);
        ChildGuard::spawn(c)
    };
    let (c1, c2) = (spawn(&one), spawn(&two));
    let (o1, o2) = (c1.wait(), c2.wait());
    o1.expect_ok();
    o2.expect_ok();
    let id1 = o1.json()["snapshot_id"].as_str().unwrap().to_string();
    let id2 = o2.json()["snapshot_id"].as_str().unwrap().to_string();
    let both = ds.pack_bytes();
    ds.assert_check_clean();

    let o = ds.run("gc", ["--json"]);
    o.expect_ok();
    let after = ds.pack_bytes();
    let (before_ratio, after_ratio) = (both as f64 / single as f64, after as f64 / single as f64);
    eprintln!("dedup-gc: one backup {single} pack bytes; two processes at once {both} ({before_ratio:.2}x); after gc {after} ({after_ratio:.2}x)\n{o}");
    // Processes cannot see each other's pending blobs: the second copies
    // are there before gc (unless one run happened to commit first), and
    // gone after it, but for packs under the repack threshold.
    assert!(after_ratio <= 1.3, "after gc the datastore holds {after_ratio:.2}x one backup ({after} vs {single} bytes)\n{o}");
    assert!(after <= both);
    ds.assert_check_clean();
    ds.assert_restores(&id1, &one, t.path());
    ds.assert_restores(&id2, &two, t.path());
}

#[test]
fn killing_one_of_two_concurrent_writers_spares_the_other() {
    let t = scratch("dedup-kill");
    let (one, two) = two_copies(t.path());
    let ds = Ds::init(t.path().join("ds"));
    ds.set_pack_target(PACK_TARGET);
    let seed = t.path().join("seed");
    gen_tree(&seed, 7, TreeSpec { dirs: 2, files: 10, max_file: 8 << 10, big_files: 0, big_size: 0 });
    let id_seed = ds.backup(&seed, &[])["snapshot_id"].as_str().unwrap().to_string();

    let spawn = |src: &Path| {
        let mut c = ds.cmd("backup");
        c.arg("--json").arg(src);
        ChildGuard::spawn(c)
    };
    let mut victim = spawn(&one);
    let survivor = spawn(&two);
    // Kill once the runs are well under way (packs sealed), or at the
    // latest when one of them is done.
    let base = ds.pack_bytes();
    assert!(wait_until(Duration::from_secs(120), || ds.pack_bytes() >= base + (8 << 20) || !victim.running()), "no progress");
    victim.signal(libc::SIGKILL);
    let ov = victim.wait();
    eprintln!("dedup-kill: victim ended with {:?}", ov.status);
    let o = survivor.wait();
    o.expect_ok();
    let id = o.json()["snapshot_id"].as_str().unwrap().to_string();
    ds.assert_check_clean();
    ds.assert_restores(&id, &two, t.path());
    ds.assert_restores(&id_seed, &seed, t.path());

    // gc takes what the killed run left, and the rest stays whole.
    ds.run("gc", ["--json"]).expect_ok();
    ds.assert_check_clean();
    ds.assert_restores(&id, &two, t.path());
    ds.assert_restores(&id_seed, &seed, t.path());
}

#[test]
fn one_daemon_job_cancelled_or_the_daemon_killed_beside_another() {
    let t = scratch("dedup-daemon-stop");
    let (one, two) = two_copies(t.path());
    let state = t.path().join("state");
    let ds = Ds::init(state.join("datastores/default"));
    ds.set_pack_target(PACK_TARGET);
    let seed = t.path().join("seed");
    gen_tree(&seed, 7, TreeSpec { dirs: 2, files: 10, max_file: 8 << 10, big_files: 0, big_size: 0 });
    let id_seed = ds.backup(&seed, &[])["snapshot_id"].as_str().unwrap().to_string();

    // A job cancelled while the other takes blobs from its pending packs:
    // the other's snapshot must name only data that is there.
    let d = Daemon::start(&state, None, &[]);
    let start = |d: &Daemon, src: &Path| {
        let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "backup", "datastore": "default", "paths": [src] })));
        assert_eq!(r.status, 202, "{r:?}");
        r.json()["id"].as_str().unwrap().to_string()
    };
    let (j1, j2) = (start(&d, &one), start(&d, &two));
    let base = ds.pack_bytes();
    wait_until(Duration::from_secs(60), || ds.pack_bytes() >= base + (4 << 20));
    let r = d.call("POST", &format!("/api/jobs/{j1}/cancel"), Some(&d.admin), None);
    eprintln!("dedup-daemon-stop: cancel -> HTTP {}", r.status);
    let r1 = d.wait_job(&j1, Duration::from_secs(300));
    let r2 = d.wait_job(&j2, Duration::from_secs(300));
    eprintln!("dedup-daemon-stop: cancelled job ended {}", r1["state"]);
    assert_eq!(r2["state"], "succeeded", "{r2}");
    let s2 = r2["result"]["snapshot"].as_str().unwrap().to_string();
    d.stop();
    ds.assert_check_clean();
    ds.assert_restores(&s2, &two, t.path());

    // The daemon killed with two jobs running: both die, nothing earlier
    // is harmed.
    let d = Daemon::start(&state, None, &[]);
    let three = t.path().join("three");
    gen_tree(&three, 2500, TreeSpec { dirs: 20, files: 3000, max_file: 64 << 10, big_files: 2, big_size: 4 << 20 });
    let four = t.path().join("four");
    copy_tree(&three, &four);
    let base = ds.pack_bytes();
    let (_k1, _k2) = (start(&d, &three), start(&d, &four));
    wait_until(Duration::from_secs(60), || ds.pack_bytes() >= base + (4 << 20));
    d.kill();
    ds.assert_check_clean();
    ds.assert_restores(&s2, &two, t.path());
    ds.assert_restores(&id_seed, &seed, t.path());
    ds.run("gc", ["--json"]).expect_ok();
    ds.assert_check_clean();
    ds.assert_restores(&s2, &two, t.path());
    ds.assert_restores(&id_seed, &seed, t.path());
}
