//! Garbage collection under stress: running beside a backup that
//! deduplicates against the very blobs being swept, and killed at every
//! step of its protocol. Afterwards `check --read-data` passes, every kept
//! snapshot restores byte-identical, and the next gc finishes the work.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A backup that dedups against blobs of a forgotten snapshot and sits
/// (failpoint sleep) between storing its data and committing its snapshot
/// while gc dooms those blobs. gc must wait for it and resurrect them.
#[test]
fn gc_beside_a_backup_that_reuses_doomed_blobs() {
    let t = scratch("gc-race");
    let src = t.path().join("src");
    gen_tree(&src, 21, TreeSpec { dirs: 6, files: 120, max_file: 256 << 10, big_files: 2, big_size: 3 << 20 });
    let ds = Ds::init(t.path().join("ds"));
    ds.set_pack_target(1 << 20);
    let old = ds.backup(&src, &[])["snapshot_id"].as_str().unwrap().to_string();
    ds.run("forget", [&old]).expect_ok();

    // No parent now: the backup reads everything and finds every blob in
    // the index already.
    let mut c = ds.cmd("backup");
    c.env("LIFEBOAT_FAILPOINTS", "snapshot-commit=sleep4000").arg("--json").arg(&src);
    let backup = ChildGuard::spawn(c);
    let writers = ds.path.join("writers");
    assert!(wait_until(Duration::from_secs(20), || fs::read_dir(&writers).map(|d| d.count() > 0).unwrap_or(false)), "the backup never registered");
    // Reading ~10 MiB takes well under a second; then it sleeps.
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let gc = ds.run("gc", ["--json"]);
    gc.expect_ok();
    let b = backup.wait();
    b.expect_ok();
    let rep = gc.json();
    assert!(rep["writers_waited"].as_u64().unwrap() >= 1, "gc did not wait for the running backup\n{gc}");
    assert!(rep["resurrected"].as_u64().unwrap() > 0, "the backup's deduplicated blobs were not resurrected\n{gc}");
    assert!(started.elapsed() >= Duration::from_millis(1000), "gc returned before the backup committed");
    assert_eq!(b.json()["summary"]["blobs_added"].as_u64(), Some(0), "the backup should deduplicate everything\n{b}");

    let new = b.json()["snapshot_id"].as_str().unwrap().to_string();
    ds.assert_check_clean();
    ds.assert_restores(&new, &src, t.path());
    // The next gc sweeps nothing the new snapshot needs.
    ds.run("gc", Vec::<String>::new()).expect_ok();
    ds.assert_check_clean();
    ds.assert_restores(&new, &src, t.path());
}

struct Prepared {
    dir: tempfile::TempDir,
    ds: PathBuf,
    /// Kept snapshots and the trees they must restore to.
    kept: Vec<(String, PathBuf)>,
    /// Pack bytes after an uninterrupted gc.
    clean_bytes: u64,
}

/// A datastore with garbage of every kind: whole dead packs, packs to
/// repack, and leftovers of a killed backup.
fn prepare() -> Prepared {
    let dir = scratch("gc-kill");
    let t = dir.path();
    let ds = Ds::init(t.join("ds"));
    ds.set_pack_target(512 << 10);
    let src = t.join("src");
    gen_tree(&src, 31, TreeSpec { dirs: 8, files: 150, max_file: 128 << 10, big_files: 1, big_size: 2 << 20 });
    let mut all = Vec::new();
    for i in 0..4u64 {
        write_random(&src.join(format!("step{i}.bin")), 1 << 20, 300 + i);
        if i > 0 {
            // Rewrite a third of the small files: garbage inside old packs.
            gen_tree(&src.join("churn"), 400 + i, TreeSpec { dirs: 2, files: 40, max_file: 64 << 10, big_files: 0, big_size: 0 });
        }
        // One worker: the same blobs land in the same packs every run, so
        // gc's work (and where the failpoints fire) does not vary.
        let id = ds.backup(&src, &["--threads", "1"])["snapshot_id"].as_str().unwrap().to_string();
        let copy = t.join(format!("tree{i}"));
        copy_tree(&src, &copy);
        all.push((id, copy));
        if i < 3 {
            fs::remove_file(src.join(format!("step{i}.bin"))).unwrap();
        }
    }
    // Forget snapshots 0 and 2.
    ds.run("forget", [&all[0].0, &all[2].0]).expect_ok();
    let kept: Vec<(String, PathBuf)> = vec![all[1].clone(), all[3].clone()];
    // Reference: an uninterrupted gc on a copy.
    let refds = t.join("ref");
    copy_tree(&ds.path, &refds);
    let r = Ds::at(refds);
    let o = r.run("gc", ["--json"]);
    o.expect_ok();
    assert!(o.json()["packs_repacked"].as_u64().unwrap() >= 1, "the set-up must make gc repack\n{o}");
    assert!(o.json()["packs_deleted"].as_u64().unwrap() >= 2, "{o}");
    let clean_bytes = r.pack_bytes();
    fs::remove_dir_all(&r.path).unwrap();
    Prepared { ds: ds.path.clone(), kept, clean_bytes, dir }
}

fn assert_intact(ds: &Ds, kept: &[(String, PathBuf)], scratch: &Path, what: &str) {
    let o = ds.check(true);
    assert_eq!(o.code(), Some(0), "{what}: check after the crash found damage\n{o}");
    assert!(!o.stdout.contains("damaged:"), "{what}\n{o}");
    let mut ids = ds.snapshot_ids();
    ids.sort();
    let mut want: Vec<String> = kept.iter().map(|k| k.0.clone()).collect();
    want.sort();
    assert_eq!(ids, want, "{what}: snapshots changed");
    for (id, tree) in kept {
        ds.assert_restores(id, tree, scratch);
    }
}

#[test]
fn gc_killed_at_every_step_loses_nothing_and_the_next_gc_finishes() {
    let p = prepare();
    let points = [
        "gc-repack=abort@1",
        "gc-repack=abort@6",
        "gc-doom=abort@1",
        "gc-wait=abort@1",
        "index-commit=abort@1",
        "index-commit=abort@2",
        "index-commit=abort@3",
        "index-committed=abort@2",
        "index-committed=abort@3",
        "gc-delete=abort@1",
        "gc-delete=abort@3",
    ];
    let mut killed = 0;
    for spec in points {
        let dir = unique_dir(p.dir.path(), "run");
        copy_tree(&p.ds, &dir);
        let ds = Ds::at(&dir);
        let mut c = ds.cmd("gc");
        c.env("LIFEBOAT_FAILPOINTS", spec);
        let o = run_cmd(c);
        match o.code() {
            Some(137) => killed += 1,
            Some(0) => eprintln!("{spec}: gc finished before the failpoint"),
            _ => panic!("{spec}: unexpected end of gc\n{o}"),
        }
        assert_intact(&ds, &p.kept, p.dir.path(), spec);
        // A backup in between works.
        // The next gc completes the reclamation.
        let o = ds.run("gc", ["--json"]);
        o.expect_ok();
        assert_intact(&ds, &p.kept, p.dir.path(), spec);
        let left = ds.pack_bytes();
        assert!(left <= p.clean_bytes + (64 << 10), "{spec}: after recovery {left} bytes of packs, a clean gc leaves {}\n{o}", p.clean_bytes);
        fs::remove_dir_all(&dir).unwrap();
    }
    assert!(killed >= 9, "only {killed} of {} failpoints fired", points.len());
}

#[test]
fn gc_sigkilled_at_random_moments() {
    let p = prepare();
    // gc on this datastore takes a few hundred ms: slow it down so kills
    // land inside each phase.
    let slow = "gc-repack=sleep60";
    let mut killed = 0;
    let mut missed = vec![];
    for (i, ms) in [5u64, 60, 150, 300, 600, 1000].iter().enumerate() {
        let dir = unique_dir(p.dir.path(), "kill");
        copy_tree(&p.ds, &dir);
        let ds = Ds::at(&dir);
        let mut c = ds.cmd("gc");
        c.env("LIFEBOAT_FAILPOINTS", slow);
        let mut child = ChildGuard::spawn(c);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(*ms) && child.running() {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.signal(libc::SIGKILL);
        let o = child.wait();
        if o.signal() == Some(libc::SIGKILL) {
            killed += 1;
        } else {
            missed.push(format!("kill at {ms} ms: gc ended by itself after {:?}\n{o}", start.elapsed()));
        }
        let what = format!("kill {i} at {ms} ms");
        assert_intact(&ds, &p.kept, p.dir.path(), &what);
        ds.run("gc", Vec::<String>::new()).expect_ok();
        assert_intact(&ds, &p.kept, p.dir.path(), &what);
        assert!(ds.pack_bytes() <= p.clean_bytes + (64 << 10), "{what}");
        fs::remove_dir_all(&dir).unwrap();
    }
    assert!(killed >= 4, "only {killed} kills landed inside gc:\n{}", missed.join("\n"));
}
