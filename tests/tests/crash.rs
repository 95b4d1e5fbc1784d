//! Crash safety: a backup killed with SIGKILL at any moment, or stopped
//! dead by a failpoint at each step of the commit protocol, never damages
//! the datastore nor any snapshot that existed before.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PACK_TARGET: u64 = 256 << 10;

/// Tree B at step `i`: a fixed base, one new directory per step, and a
/// file rewritten at every step. Deterministic, so any step can be rebuilt.
fn b_step(dir: &Path, i: u64) {
    if i == 0 {
        gen_tree(&dir.join("base"), 1000, TreeSpec { dirs: 8, files: 120, max_file: 128 << 10, big_files: 0, big_size: 0 });
        for k in 0..8 {
            write_random(&dir.join(format!("base/large{k}.bin")), 4 << 20, 2000 + k);
        }
    }
    gen_tree(&dir.join(format!("step{i:02}")), 3000 + i, TreeSpec { dirs: 2, files: 10, max_file: 32 << 10, big_files: 1, big_size: 2 << 20 });
    write_random(&dir.join("mutable.bin"), 3 << 20, 4000 + i);
    fix_times(dir, 1_650_000_000);
}

/// Rebuilds tree B as of step `i` in a new directory.
fn b_rebuild(scratch: &Path, i: u64) -> PathBuf {
    let d = unique_dir(scratch, "b-rebuilt");
    for j in 0..=i {
        b_step(&d, j);
    }
    d
}

fn tree_a(dir: &Path) {
    gen_tree(dir, 77, TreeSpec { dirs: 6, files: 80, max_file: 96 << 10, big_files: 1, big_size: 2 << 20 });
    fix_times(dir, 1_600_000_000);
}

#[test]
fn sigkill_at_many_points() {
    let t = scratch("sigkill");
    let a = t.path().join("a");
    tree_a(&a);
    let b = t.path().join("b");
    b_step(&b, 0);

    // How long does a full backup of B take here? Spread the kills over it.
    let cal = Ds::init(t.path().join("calibrate"));
    cal.set_pack_target(PACK_TARGET);
    let start = Instant::now();
    cal.backup(&b, &[]);
    let full = start.elapsed();
    fs::remove_dir_all(&cal.path).unwrap();

    let ds = Ds::init(t.path().join("ds"));
    ds.set_pack_target(PACK_TARGET);
    let id_a = ds.backup(&a, &[])["snapshot_id"].as_str().unwrap().to_string();
    // Snapshots that must survive: (id, step of B or None for A).
    let mut expected: Vec<(String, Option<u64>)> = vec![(id_a.clone(), None)];

    // Where in the run each kill lands, as a fraction of its expected
    // length: early, late, in between, and right at the end (the snapshot
    // commit). A run that finishes early shortens the estimate: later runs
    // find much of their data stored already.
    const FRACTIONS: [f64; 10] = [0.0, 0.5, 0.95, 0.25, 0.75, 0.1, 0.6, 0.85, 0.4, 0.99];
    const ROUNDS: u64 = FRACTIONS.len() as u64;
    let min_delay = Duration::from_millis(20);
    let mut estimate = full;
    let mut killed = 0;
    let mut after_commits = 0;
    for i in 0..ROUNDS {
        if i > 0 {
            b_step(&b, i);
        }
        let packs_before = ds.packs().len();
        let delay = min_delay + estimate.saturating_sub(min_delay).mul_f64(FRACTIONS[i as usize]);
        let mut c = ds.cmd("backup");
        c.arg("--json").arg(&b);
        let mut child = ChildGuard::spawn(c);
        let started = Instant::now();
        while started.elapsed() < delay && child.running() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let ran = started.elapsed();
        child.signal(libc::SIGKILL);
        let o = child.wait();
        eprintln!("sigkill round {i}: kill planned at {delay:?} (estimate {estimate:?}): {:?}", o.status);
        if o.code() == Some(0) {
            estimate = ran.max(min_delay);
        }
        match (o.code(), o.signal()) {
            (None, Some(libc::SIGKILL)) => {
                killed += 1;
                if ds.packs().len() > packs_before {
                    after_commits += 1; // the killed run had sealed (and maybe committed) packs
                }
            }
            (Some(0), _) => {
                // Finished before the kill: a real snapshot of B at step i.
                let id = o.json()["snapshot_id"].as_str().unwrap().to_string();
                ds.assert_restores(&id, &b, t.path());
                expected.push((id, Some(i)));
            }
            _ => panic!("round {i}: unexpected end of a backup killed after {delay:?}\n{o}"),
        }
        let check = ds.check(true);
        assert_eq!(check.code(), Some(0), "round {i}: check after a kill at {delay:?} found damage\n{check}");
        assert!(!check.stdout.contains("damaged:"), "{check}");
        let mut ids = ds.snapshot_ids();
        ids.sort();
        if o.signal() == Some(libc::SIGKILL) {
            // A kill that lands after the snapshot commit, while the
            // process exits, leaves a whole snapshot: it must be B at step i.
            let new: Vec<&String> = ids.iter().filter(|id| !expected.iter().any(|e| &e.0 == *id)).collect();
            if let [id] = new[..] {
                eprintln!("sigkill round {i}: the killed run had committed its snapshot");
                ds.assert_restores(id, &b, t.path());
                expected.push((id.clone(), Some(i)));
            }
        }
        let mut want: Vec<String> = expected.iter().map(|e| e.0.clone()).collect();
        want.sort();
        assert_eq!(ids, want, "round {i}: snapshots changed after a kill at {delay:?}");
        ds.assert_restores(&id_a, &a, t.path());
    }
    eprintln!("sigkill: full run {full:?}; {killed} of {ROUNDS} killed; {after_commits} killed runs had sealed packs");
    assert!(killed >= 5, "only {killed} of {ROUNDS} backups were killed mid-run (full run takes {full:?})");
    assert!(after_commits >= 1, "no kill landed after packs were sealed");

    // A normal backup after all that works, and cleans up partial packs.
    let last = ds.backup(&b, &[]);
    let last_id = last["snapshot_id"].as_str().unwrap().to_string();
    assert!(ds.partials().is_empty(), "{:?}", ds.partials());
    ds.assert_check_clean();
    ds.assert_restores(&last_id, &b, t.path());
    for (id, step) in &expected {
        match step {
            None => ds.assert_restores(id, &a, t.path()),
            Some(i) => {
                let d = b_rebuild(t.path(), *i);
                ds.assert_restores(id, &d, t.path());
                fs::remove_dir_all(d).unwrap();
            }
        }
    }
}

/// A backup that dies at failpoint `spec` (an `abort`), then recovery.
fn failpoint_abort(name: &str, spec: &str) {
    let t = scratch(&format!("fp-{name}"));
    let a = t.path().join("a");
    tree_a(&a);
    let c_dir = t.path().join("c");
    // Big enough for two index commits before the last (one every 16
    // packs; a chunk of a big file fills a pack of PACK_TARGET alone).
    gen_tree(&c_dir, 88, TreeSpec { dirs: 5, files: 60, max_file: 128 << 10, big_files: 3, big_size: 24 << 20 });
    let ds = Ds::init(t.path().join("ds"));
    ds.set_pack_target(PACK_TARGET);
    let id_a = ds.backup(&a, &[])["snapshot_id"].as_str().unwrap().to_string();
    let packs_before = ds.packs().len();

    let mut c = ds.cmd("backup");
    c.env("LIFEBOAT_FAILPOINTS", spec).arg(&c_dir);
    let o = run_cmd(c);
    assert_eq!(o.code(), Some(137), "{spec}: the failpoint did not kill the backup\n{o}");
    assert_eq!(ds.snapshot_ids(), vec![id_a.clone()], "{spec}");
    let check = ds.check(true);
    assert_eq!(check.code(), Some(0), "{spec}: check after the crash\n{check}");
    assert!(!check.stdout.contains("damaged:"), "{check}");
    ds.assert_restores(&id_a, &a, t.path());
    match name {
        // Died after a pack reached packs/ but before the index knew it.
        "pack-sealed" => assert!(check.stdout.contains("not in the index"), "{spec}: no unreferenced pack reported\n{check}"),
        // Died before any pack of this run was sealed: nothing new in packs/.
        "pack-write" | "pack-fsync" if spec.ends_with("@1") => assert_eq!(ds.packs().len(), packs_before),
        _ => {}
    }

    // The next backup works, removes the dead run's partial pack, restores.
    let b = ds.backup(&c_dir, &[]);
    assert!(ds.partials().is_empty(), "{spec}: partial packs left: {:?}", ds.partials());
    ds.assert_check_clean();
    ds.assert_restores(b["snapshot_id"].as_str().unwrap(), &c_dir, t.path());
    ds.assert_restores(&id_a, &a, t.path());
}

#[test]
fn failpoint_pack_write() {
    failpoint_abort("pack-write", "pack-write=abort@2");
}

#[test]
fn failpoint_pack_write_first() {
    failpoint_abort("pack-write", "pack-write=abort@1");
}

#[test]
fn failpoint_pack_fsync() {
    failpoint_abort("pack-fsync", "pack-fsync=abort@2");
}

#[test]
fn failpoint_pack_sealed() {
    failpoint_abort("pack-sealed", "pack-sealed=abort@2");
}

#[test]
fn failpoint_index_commit() {
    failpoint_abort("index-commit", "index-commit=abort@2");
}

#[test]
fn failpoint_index_committed() {
    failpoint_abort("index-committed", "index-committed=abort@2");
}

/// `error` failpoints: the backup fails cleanly (exit 1, no snapshot, no
/// partial packs) and the datastore stays usable.
#[test]
fn failpoint_errors_fail_cleanly() {
    let t = scratch("fp-error");
    let a = t.path().join("a");
    tree_a(&a);
    let ds = Ds::init(t.path().join("ds"));
    ds.set_pack_target(PACK_TARGET);
    let id_a = ds.backup(&a, &[])["snapshot_id"].as_str().unwrap().to_string();
    let mut ids = vec![id_a.clone()];
    for (k, spec) in ["pack-write=error@2", "pack-fsync=error@3", "pack-sealed=error@2", "index-commit=error@3", "index-committed=error@2"].iter().enumerate() {
        let src = t.path().join(format!("c{k}"));
        // Chunked files and the small ones: over 64 packs, so two index
        // commits come before the last (one every 16 packs).
        gen_tree(&src, 90 + k as u64, TreeSpec { dirs: 3, files: 30, max_file: 128 << 10, big_files: 3, big_size: 24 << 20 });
        let mut c = ds.cmd("backup");
        c.env("LIFEBOAT_FAILPOINTS", spec).arg(&src);
        let o = run_cmd(c);
        assert_eq!(o.code(), Some(1), "{spec}\n{o}");
        let name = spec.split('=').next().unwrap();
        assert!(o.stderr.contains(&format!("failpoint {name} fired")), "{spec}: error does not say what failed\n{o}");
        assert!(!o.stderr.contains("panicked"), "{o}");
        assert_eq!(ds.snapshot_ids(), ids, "{spec}: a failed backup changed the snapshots");
        assert!(ds.partials().is_empty(), "{spec}: partial packs left: {:?}", ds.partials());
        ds.assert_check_clean();
        let b = ds.backup(&src, &[]);
        let id = b["snapshot_id"].as_str().unwrap().to_string();
        ds.assert_restores(&id, &src, t.path());
        ids.push(id);
    }
    ds.assert_restores(&id_a, &a, t.path());
}
