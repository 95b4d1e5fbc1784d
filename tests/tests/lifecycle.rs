//! Datastore lifecycle: forget by keep rules, gc with repacking, index
//! repair from the packs (lost index, damaged index, damaged packs), and
//! append-only datastores.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

fn short(id: &str) -> &str {
    &id[..8]
}

#[test]
fn forget_by_rules_and_tags_then_gc_reclaims_and_repacks() {
    let t = scratch("forget");
    let src = t.path().join("src");
    gen_tree(&src, 1, TreeSpec { dirs: 4, files: 40, max_file: 64 << 10, big_files: 0, big_size: 0 });
    let ds = Ds::init(t.path().join("ds"));
    // Five snapshots, each with one unique 3 MiB file; the third is tagged.
    let mut ids = Vec::new();
    for i in 0..5u64 {
        let _ = fs::remove_file(src.join(format!("unique{}.bin", i.wrapping_sub(1))));
        write_random(&src.join(format!("unique{i}.bin")), 3 << 20, 100 + i);
        let tag: &[&str] = if i == 2 { &["--tag", "monthly"] } else { &[] };
        ids.push(ds.backup(&src, tag)["snapshot_id"].as_str().unwrap().to_string());
    }
    let last_tree = unique_dir(t.path(), "last");
    copy_tree(&src, &last_tree);

    // No rule and no id: refused, nothing removed.
    let o = ds.run("forget", Vec::<String>::new());
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("keep"), "{o}");
    assert_eq!(ds.snapshot_ids().len(), 5);

    // A dry run lists decisions and removes nothing.
    let o = ds.run("forget", ["--keep-last", "2", "--dry-run", "--json"]);
    o.expect_ok();
    let v = o.json();
    assert_eq!(v["remove"].as_array().unwrap().len(), 3, "{o}");
    assert_eq!(ds.snapshot_ids().len(), 5);

    // --tag limits the rules to tagged snapshots: with one tagged snapshot
    // and keep-last 1, nothing goes.
    let o = ds.run("forget", ["--keep-last", "1", "--tag", "monthly"]);
    o.expect_ok();
    assert_eq!(ds.snapshot_ids().len(), 5, "{o}");

    // Keep the last two: 0, 1 and 2 go; the output names each decision.
    let before = ds.pack_bytes();
    let o = ds.run("forget", ["--keep-last", "2"]);
    o.expect_ok();
    for id in &ids[..3] {
        assert!(o.stdout.contains(&format!("{} ", short(id))) && o.stdout.contains("remove"), "{o}");
    }
    let mut left = ds.snapshot_ids();
    left.sort();
    let mut want = vec![ids[3].clone(), ids[4].clone()];
    want.sort();
    assert_eq!(left, want);
    // Forget only writes its small forget record.
    assert!(ds.pack_bytes() >= before && ds.pack_bytes() < before + 4096, "forget alone deletes no data");
    let before = ds.pack_bytes();

    // gc gives back the three unique files (9 MiB, stored raw) and repacks
    // the first backup's pack, which also holds the data still in use.
    let o = ds.run("gc", ["--json"]);
    o.expect_ok();
    let rep = o.json();
    let freed = before - ds.pack_bytes();
    assert!((9 << 20..10 << 20).contains(&freed), "freed {freed} bytes\n{o}");
    assert!(rep["packs_repacked"].as_u64().unwrap() >= 1, "{o}");
    assert!(rep["bytes_repacked"].as_u64().unwrap() > 0, "{o}");
    ds.assert_check_clean();
    ds.assert_restores(&ids[4], &last_tree, t.path());

    // Snapshot 3 (unique3.bin instead of unique4.bin) restores identical.
    let three = unique_dir(t.path(), "three");
    copy_tree(&last_tree, &three);
    fs::remove_file(three.join("unique4.bin")).unwrap();
    write_random(&three.join("unique3.bin"), 3 << 20, 103);
    let d3 = unique_dir(t.path(), "r3");
    ds.restore(&ids[3], &d3, &[]).expect_ok();
    let diff = diff_trees(&scan_tree(&three), &scan_tree(&d3), &CompareOpts::content_only());
    assert!(diff.is_empty(), "{diff:?}");

    // A second gc finds nothing more to do.
    let o = ds.run("gc", ["--json"]);
    o.expect_ok();
    assert_eq!(o.json()["packs_deleted"], Value::from(0), "{o}");
    assert_eq!(o.json()["packs_repacked"], Value::from(0), "{o}");

    // Explicit ids work too.
    ds.run("forget", [&ids[3]]).expect_ok();
    assert_eq!(ds.snapshot_ids(), vec![ids[4].clone()]);
}

#[test]
fn append_only_refuses_forget_and_gc() {
    let t = scratch("append-only");
    let src = t.path().join("src");
    gen_tree(&src, 2, TreeSpec::small());
    let path = t.path().join("ds");
    lb(args!["datastore", "init", "--append-only", &path]).expect_ok();
    let ds = Ds::at(&path);
    let id = ds.backup(&src, &[])["snapshot_id"].as_str().unwrap().to_string();
    ds.backup(&src, &[]);
    for (cmd, args) in [("forget", vec!["--keep-last", "1"]), ("forget", vec![id.as_str()]), ("gc", vec![])] {
        let o = ds.run(cmd, &args);
        assert_eq!(o.code(), Some(1), "{cmd} on an append-only datastore\n{o}");
        assert!(o.stderr.contains("append-only") && o.stderr.contains(cmd), "{o}");
    }
    assert_eq!(ds.snapshot_ids().len(), 2);
    // Dry runs only look.
    ds.run("forget", ["--keep-last", "1", "--dry-run"]).expect_ok();
    ds.run("gc", ["--dry-run"]).expect_ok();
    // Turned off on the appliance, forget works.
    let mut c = lb_cmd();
    c.args(["datastore", "config", "--datastore"]).arg(&ds.path).args(["--append-only", "false"]);
    run_cmd(c).expect_ok();
    ds.run("forget", ["--keep-last", "1"]).expect_ok();
    assert_eq!(ds.snapshot_ids().len(), 1);
}

fn repair(ds: &Ds) -> Out {
    let mut c = lb_cmd();
    c.args(["datastore", "repair", "--datastore"]).arg(&ds.path);
    run_cmd(c)
}

#[test]
fn repair_rebuilds_a_deleted_or_damaged_index() {
    let t = scratch("repair-index");
    let a = t.path().join("a");
    let b = t.path().join("b");
    gen_tree(&a, 3, TreeSpec::small());
    gen_tree(&b, 4, TreeSpec::small());
    let ds = Ds::init(t.path().join("ds"));
    ds.set_pack_target(256 << 10);
    let ida = ds.backup(&a, &[])["snapshot_id"].as_str().unwrap().to_string();
    let idb = ds.backup(&b, &[])["snapshot_id"].as_str().unwrap().to_string();
    let gone = ds.backup(&a, &["--tag", "x"])["snapshot_id"].as_str().unwrap().to_string();
    ds.run("forget", [&gone]).expect_ok();
    let mut want = ds.snapshot_ids();
    want.sort();

    // The index deleted: commands say what to do.
    fs::remove_dir_all(ds.path.join("index")).unwrap();
    let o = ds.run("snapshots", Vec::<String>::new());
    assert_eq!(o.code(), Some(1));
    assert!(o.stderr.contains("datastore repair"), "{o}");
    let o = repair(&ds);
    assert_eq!(o.code(), Some(0), "{o}");
    assert!(o.stdout.contains("no damage found"), "{o}");
    let mut got = ds.snapshot_ids();
    got.sort();
    assert_eq!(got, want, "repair must bring back exactly the snapshots (not the forgotten one)");
    ds.assert_check_clean();
    ds.assert_restores(&ida, &a, t.path());
    ds.assert_restores(&idb, &b, t.path());

    // The index damaged: every table and manifest file overwritten.
    for e in fs::read_dir(ds.path.join("index")).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("MANIFEST") || n.ends_with(".sst") || n == "CURRENT" {
            fs::write(e.path(), b"garbage garbage garbage").unwrap();
        }
    }
    let o = ds.run("snapshots", Vec::<String>::new());
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(!o.stderr.contains("panicked"), "{o}");
    let o = repair(&ds);
    assert_eq!(o.code(), Some(0), "{o}");
    assert!(o.stderr.contains("moved it to"), "repair says where the damaged index went\n{o}");
    let mut got = ds.snapshot_ids();
    got.sort();
    assert_eq!(got, want);
    ds.assert_check_clean();
    ds.assert_restores(&ida, &a, t.path());
    ds.assert_restores(&idb, &b, t.path());
    // Backups go on normally, and dedup against the rebuilt index.
    let again = ds.backup(&b, &["--force"]);
    assert!(again["summary"]["bytes_added"].as_u64().unwrap_or(0) < 64 << 10, "{again}");
}

#[test]
fn repair_drops_damaged_blobs_names_the_loss_and_a_new_backup_heals() {
    let t = scratch("repair-damage");
    let src = t.path().join("src");
    gen_tree(&src, 5, TreeSpec { dirs: 3, files: 30, max_file: 32 << 10, big_files: 0, big_size: 0 });
    write_random(&src.join("big.bin"), 8 << 20, 9);
    let ds = Ds::init(t.path().join("ds"));
    let id = ds.backup(&src, &[])["snapshot_id"].as_str().unwrap().to_string();

    // Damage one chunk of big.bin in the middle of the pack.
    let (pack, len) = ds.largest_pack();
    let recs = pack_records(&pack);
    let chunk = recs.iter().filter(|r| r.1 == 1).min_by_key(|r| (r.0 as i64 - len as i64 / 2).abs()).copied().unwrap();
    let f = fs::OpenOptions::new().read(true).write(true).open(&pack).unwrap();
    let at = chunk.0 + 48 + chunk.2 / 3;
    let mut buf = [0u8; 64];
    f.read_exact_at(&mut buf, at).unwrap();
    for x in &mut buf {
        *x = !*x;
    }
    f.write_all_at(&buf, at).unwrap();
    drop(f);

    let o = repair(&ds);
    assert_eq!(o.code(), Some(1), "repair of a damaged datastore exits 1\n{o}");
    assert!(o.stdout.contains("lost blob"), "{o}");
    assert!(o.stdout.lines().any(|l| l.starts_with("damaged:") && l.contains(short(&id)) && l.contains("/big.bin")), "{o}");
    // Only the damaged blob is lost: the snapshot is still listed, marked.
    let o = ds.run("snapshots", Vec::<String>::new());
    o.expect_ok();
    assert!(o.stdout.contains("DAMAGED"), "{o}");
    assert_eq!(ds.snapshots()[0]["damaged"].as_array().map(|a| a.len()), Some(1));
    // check names exactly the damaged file.
    let o = ds.check(true);
    assert_eq!(o.code(), Some(1), "{o}");
    let damaged: Vec<&str> = o.stdout.lines().filter(|l| l.starts_with("damaged:")).collect();
    assert!(!damaged.is_empty() && damaged.iter().all(|l| l.contains("/big.bin")), "{o}");
    // Restore salvages the rest.
    let dst = unique_dir(t.path(), "dst");
    let o = ds.restore(&id, &dst, &[]);
    assert_eq!(o.code(), Some(3), "{o}");
    assert!(o.stderr.contains("big.bin"), "{o}");
    let mut want = scan_tree(&src);
    want.remove(Path::new("big.bin"));
    let mut got = scan_tree(&dst);
    got.remove(Path::new("big.bin"));
    assert!(diff_trees(&want, &got, &CompareOpts::content_only()).is_empty());

    // A new backup of the same files stores the lost chunk again: the old
    // snapshot is whole once more.
    ds.backup(&src, &["--force"]);
    ds.assert_check_clean();
    ds.assert_restores(&id, &src, t.path());
    // The full check has dropped the stale "damaged" mark.
    assert_eq!(ds.snapshots()[0]["damaged"], Value::Null);
}

#[test]
fn repair_and_gc_work_on_an_encrypted_datastore() {
    let t = scratch("repair-enc");
    let a = t.path().join("a");
    gen_tree(&a, 7, TreeSpec::small());
    let ds = Ds::init_encrypted(t.path().join("ds"), "correct horse");
    let keep = ds.backup(&a, &[])["snapshot_id"].as_str().unwrap().to_string();
    write_random(&a.join("extra.bin"), 2 << 20, 77);
    let gone = ds.backup(&a, &[])["snapshot_id"].as_str().unwrap().to_string();
    ds.run("forget", [&gone]).expect_ok();
    fs::remove_dir_all(ds.path.join("index")).unwrap();
    let mut c = lb_cmd();
    c.args(["datastore", "repair", "--datastore"]).arg(&ds.path).env("LIFEBOAT_PASSWORD", "correct horse");
    let o = run_cmd(c);
    assert_eq!(o.code(), Some(0), "{o}");
    assert_eq!(ds.snapshot_ids(), vec![keep.clone()]);
    ds.run("gc", Vec::<String>::new()).expect_ok();
    ds.assert_check_clean();
    fs::remove_file(a.join("extra.bin")).unwrap();
    ds.assert_restores(&keep, &a, t.path());
}
