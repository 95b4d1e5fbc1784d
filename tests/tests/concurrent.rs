//! Two backups into one datastore at the same time: both succeed, both
//! restore, the index stays consistent, and shared data is stored once
//! where the runs can see each other's commits.

mod common;

use common::*;
use std::fs;
use std::path::Path;

/// Two trees that share most files (same bytes, separate inodes) and each
/// have some of their own.
fn build(t: &Path) -> (std::path::PathBuf, std::path::PathBuf, u64) {
    let shared = t.join("shared");
    gen_tree(&shared, 500, TreeSpec { dirs: 6, files: 120, max_file: 256 << 10, big_files: 3, big_size: 3 << 20 });
    let one = t.join("one");
    let two = t.join("two");
    copy_tree(&shared, &one);
    copy_tree(&shared, &two);
    gen_tree(&one.join("own"), 501, TreeSpec { dirs: 2, files: 20, max_file: 128 << 10, big_files: 1, big_size: 2 << 20 });
    gen_tree(&two.join("own"), 502, TreeSpec { dirs: 2, files: 20, max_file: 128 << 10, big_files: 1, big_size: 2 << 20 });
    fs::remove_dir_all(&shared).unwrap();
    let shared_bytes = tree_bytes(&one) - tree_bytes(&one.join("own"));
    (one, two, shared_bytes)
}

#[test]
fn two_backups_at_once_into_one_datastore() {
    let t = scratch("concurrent");
    let (one, two, shared_bytes) = build(t.path());
    let ds = Ds::init(t.path().join("ds"));
    ds.set_pack_target(256 << 10);
    // One earlier snapshot so the runs also read an existing index.
    let seed = t.path().join("seed");
    gen_tree(&seed, 7, TreeSpec { dirs: 2, files: 10, max_file: 8 << 10, big_files: 0, big_size: 0 });
    let id_seed = ds.backup(&seed, &[])["snapshot_id"].as_str().unwrap().to_string();

    let spawn = |src: &Path| {
        let mut c = ds.cmd("backup");
        c.arg("--json").arg(src);
        ChildGuard::spawn(c)
    };
    let mut c1 = spawn(&one);
    let mut c2 = spawn(&two);
    // Readers while both commit: listing must never fail.
    let mut reads = 0;
    while c1.running() || c2.running() {
        let o = ds.run("snapshots", ["--json"]);
        assert_eq!(o.code(), Some(0), "snapshots failed while backups ran\n{o}");
        let o = ds.run("ls", [id_seed.as_str()]);
        assert_eq!(o.code(), Some(0), "ls failed while backups ran\n{o}");
        reads += 1;
    }
    eprintln!("concurrent: {reads} rounds of reads during the backups");
    let (o1, o2) = (c1.wait(), c2.wait());
    o1.expect_ok();
    o2.expect_ok();
    let (j1, j2) = (o1.json(), o2.json());
    let id1 = j1["snapshot_id"].as_str().unwrap().to_string();
    let id2 = j2["snapshot_id"].as_str().unwrap().to_string();
    assert_ne!(id1, id2);
    let mut ids = ds.snapshot_ids();
    ids.sort();
    let mut want = vec![id_seed.clone(), id1.clone(), id2.clone()];
    want.sort();
    assert_eq!(ids, want);

    ds.assert_check_clean();
    ds.assert_restores(&id1, &one, t.path());
    ds.assert_restores(&id2, &two, t.path());
    ds.assert_restores(&id_seed, &seed, t.path());

    // Both stored at most their own bytes (random data does not compress),
    // and together not more than two separate datastores would hold.
    let (s1, s2) = (sum(&j1, "bytes_stored"), sum(&j2, "bytes_stored"));
    let (t1, t2) = (sum(&j1, "total_bytes"), sum(&j2, "total_bytes"));
    let packs = ds.pack_bytes();
    eprintln!("concurrent: shared {shared_bytes} B; run1 stored {s1}/{t1}; run2 stored {s2}/{t2}; packs {packs} B");
    assert!(s1 <= t1 + (1 << 20) && s2 <= t2 + (1 << 20), "{j1:#}\n{j2:#}");
    assert!(packs <= s1 + s2 + (2 << 20), "packs hold {packs} bytes, more than the runs stored ({s1} + {s2})");
    // Two separate datastores would hold about t1 + t2 (random data does
    // not compress). Runs in lockstep over the same files may both store a
    // blob the other has not committed yet; never more than that.
    assert!(packs < t1 + t2 + (2 << 20), "{packs} pack bytes for {t1} + {t2} bytes of files");

    // A third backup of either tree, after both have committed, finds
    // everything already stored: dedup across the runs' commits.
    let j3 = ds.backup(&two, &["--force"]);
    assert!(sum(&j3, "bytes_added") < 4096, "{j3:#}");
    // And a new tree with the shared content adds only its own files.
    let three = t.path().join("three");
    copy_tree(&one, &three);
    fs::remove_dir_all(three.join("own")).unwrap();
    write_file(&three.join("new-file"), &Rng::new(9).bytes(100_000));
    let j4 = ds.backup(&three, &[]);
    assert!(sum(&j4, "bytes_added") < 200_000 + 100_000, "{j4:#}");
    assert!(sum(&j4, "total_bytes") >= shared_bytes);
    ds.assert_check_clean();
}

#[test]
fn staggered_backups_share_committed_data() {
    // The second run starts once the first has committed part of the
    // shared data; it must not store that data again.
    let t = scratch("staggered");
    let (one, two, shared_bytes) = build(t.path());
    let ds = Ds::init(t.path().join("ds"));
    ds.set_pack_target(256 << 10);
    let mut c = ds.cmd("backup");
    c.arg("--json").arg(&one);
    let mut c1 = ChildGuard::spawn(c);
    // Wait until run 1 is some 40% through (or done).
    assert!(wait_until(std::time::Duration::from_secs(60), || ds.pack_bytes() >= 6 << 20 || !c1.running()), "run 1 is stuck");
    let head_start = ds.pack_bytes();
    let mut c = ds.cmd("backup");
    c.arg("--json").arg(&two);
    let c2 = ChildGuard::spawn(c);
    let (o1, o2) = (c1.wait(), c2.wait());
    o1.expect_ok();
    o2.expect_ok();
    let (j1, j2) = (o1.json(), o2.json());
    let (a1, a2) = (sum(&j1, "bytes_added"), sum(&j2, "bytes_added"));
    eprintln!("staggered: shared {shared_bytes} B; run1 added {a1}; run2 added {a2} of {}", sum(&j2, "total_bytes"));
    assert!(a2 + (1 << 20) < sum(&j2, "total_bytes"), "the second run stored again what the first had committed ({head_start} pack bytes before it started): {j2:#}");
    assert!(ds.pack_bytes() < sum(&j1, "total_bytes") + sum(&j2, "total_bytes"), "no dedup between the runs");
    ds.assert_check_clean();
    ds.assert_restores(j1["snapshot_id"].as_str().unwrap(), &one, t.path());
    ds.assert_restores(j2["snapshot_id"].as_str().unwrap(), &two, t.path());
}
