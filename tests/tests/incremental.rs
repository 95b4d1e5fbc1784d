//! Incremental backups: unchanged files are not read, changed large files
//! store only their changed chunks, and --exclude leaves paths out.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const BIG: u64 = 20 << 20;

fn build(src: &Path) {
    gen_tree(src, 11, TreeSpec { dirs: 8, files: 100, max_file: 128 << 10, big_files: 0, big_size: 0 });
    write_random(&src.join("dir00/big.bin"), BIG, 99);
    write_file(&src.join("small.txt"), b"a small file\n");
}

#[test]
fn unchanged_then_small_changes() {
    let t = scratch("incremental");
    let src = t.path().join("src");
    build(&src);
    let ds = Ds::init(t.path().join("ds"));

    let b1 = ds.backup(&src, &[]);
    let id1 = b1["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(sum(&b1, "files_new"), sum(&b1, "files"));
    assert!(sum(&b1, "bytes_read") >= BIG, "{b1:#}");
    assert!(sum(&b1, "dirs") >= 8, "{b1:#}");

    // Nothing changed: nothing is read, every directory is the same tree.
    let b2 = ds.backup(&src, &[]);
    let id2 = b2["snapshot_id"].as_str().unwrap().to_string();
    assert_ne!(id1, id2);
    assert_eq!(b2["parent"], id1.as_str(), "{b2:#}");
    assert_eq!(sum(&b2, "files"), sum(&b1, "files"));
    assert_eq!(sum(&b2, "files_unchanged"), sum(&b2, "files"), "{b2:#}");
    assert_eq!(sum(&b2, "files_new") + sum(&b2, "files_changed"), 0, "{b2:#}");
    assert_eq!(sum(&b2, "bytes_read"), 0, "{b2:#}");
    assert!(sum(&b2, "dirs_unchanged") > 0, "{b2:#}");
    assert_eq!(sum(&b2, "dirs_unchanged"), sum(&b2, "dirs"), "{b2:#}");
    assert_eq!(sum(&b2, "total_bytes"), sum(&b1, "total_bytes"));
    // Only the snapshot document itself is new.
    assert!(sum(&b2, "bytes_added") < 4096, "{b2:#}");
    assert!(sum(&b2, "blobs_added") <= 1, "{b2:#}");
    let packs_before = ds.pack_bytes();

    // A few bytes in the middle of the big file, and one touched file.
    let big = src.join("dir00/big.bin");
    let old_big = fs::read(&big).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.write_all_at(b"CHANGED IN THE MIDDLE", BIG / 2 + 12345).unwrap();
    drop(f);
    set_mtime(&src.join("small.txt"), 1_700_000_000, 0);

    let b3 = ds.backup(&src, &[]);
    let id3 = b3["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(b3["parent"], id2.as_str(), "{b3:#}");
    assert_eq!(sum(&b3, "files_changed"), 2, "{b3:#}");
    assert_eq!(sum(&b3, "files_new"), 0, "{b3:#}");
    assert_eq!(sum(&b3, "files_unchanged"), sum(&b3, "files") - 2, "{b3:#}");
    assert_eq!(sum(&b3, "bytes_read"), BIG + 13, "only the two changed files are read: {b3:#}");
    let added = sum(&b3, "bytes_added");
    assert!(added > 0, "{b3:#}");
    assert!(added < BIG / 2, "changing 21 bytes added {added} bytes of a {BIG} byte file: {b3:#}");
    assert!(sum(&b3, "blobs_added") <= 8, "{b3:#}");
    assert!(ds.pack_bytes() - packs_before < BIG / 2, "packs grew by {}", ds.pack_bytes() - packs_before);
    assert!(sum(&b3, "dirs_unchanged") > 0 && sum(&b3, "dirs_unchanged") < sum(&b3, "dirs"), "{b3:#}");

    // The new snapshot is the new tree; the old one still has the old bytes.
    ds.assert_restores(&id3, &src, t.path());
    let old = t.path().join("old");
    ds.restore(&id1, &old, &["--include", "dir00/big.bin"]).expect_ok();
    assert!(fs::read(old.join("dir00/big.bin")).unwrap() == old_big, "first snapshot's big.bin changed");

    // --force reads everything again yet adds nothing.
    let b4 = ds.backup(&src, &["--force"]);
    assert_eq!(sum(&b4, "bytes_read"), sum(&b4, "total_bytes"), "{b4:#}");
    assert_eq!(sum(&b4, "files_new"), sum(&b4, "files"), "{b4:#}");
    assert!(b4["parent"].is_null(), "{b4:#}");
    assert!(sum(&b4, "bytes_added") < 4096, "{b4:#}");
    ds.assert_check_clean();
}

fn ls_paths(ds: &Ds, snap: &str) -> Vec<String> {
    let o = ds.run("ls", ["--json", "-r", snap]);
    o.expect_ok();
    o.stdout.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].as_str().unwrap().to_string()).collect()
}

#[test]
fn excludes_by_name_and_absolute_path() {
    let t = scratch("exclude");
    let src = t.path().join("src");
    gen_tree(&src, 3, TreeSpec { dirs: 4, files: 30, max_file: 16 << 10, big_files: 0, big_size: 0 });
    write_file(&src.join("app.log"), b"log\n");
    write_file(&src.join("dir00/deep/debug.log"), b"log\n");
    write_file(&src.join("dir00/deep/keep.txt"), b"keep\n");
    write_file(&src.join("logs.d/readme"), b"not a .log file\n");
    write_file(&src.join("secret/key"), b"k\n");
    write_file(&src.join("secret/sub/key2"), b"k2\n");
    write_file(&src.join("data/cache/blob1"), b"c1\n");
    write_file(&src.join("data/cache/nested/blob2"), b"c2\n");
    write_file(&src.join("data/kept"), b"kept\n");
    let abs = fs::canonicalize(&src).unwrap();
    let abs = abs.to_str().unwrap();

    let ds = Ds::init(t.path().join("ds"));
    let pat_secret = format!("{abs}/secret");
    let pat_cache = format!("{abs}/data/cache/*");
    let b = ds.backup(&src, &["--exclude", "*.log", "--exclude", &pat_secret, "--exclude", &pat_cache]);
    let id = b["snapshot_id"].as_str().unwrap();

    let paths = ls_paths(&ds, id);
    for gone in ["/app.log", "/dir00/deep/debug.log", "/secret", "/secret/key", "/data/cache/blob1", "/data/cache/nested"] {
        assert!(!paths.iter().any(|p| p == gone), "{gone} was not excluded: {paths:?}");
    }
    assert!(!paths.iter().any(|p| p.ends_with(".log") || p.starts_with("/secret") || p.starts_with("/data/cache/")), "{paths:?}");
    for kept in ["/dir00/deep/keep.txt", "/logs.d/readme", "/data/kept", "/data/cache"] {
        assert!(paths.iter().any(|p| p == kept), "{kept} missing: {paths:?}");
    }

    // The restore equals the source minus the excluded paths.
    let mut want = scan_tree(&src);
    let excluded = |p: &PathBuf| p.extension().is_some_and(|e| e == "log") || p.starts_with("secret") || (p.starts_with("data/cache") && p != Path::new("data/cache"));
    want.retain(|p, _| !excluded(p));
    let n_files = want.values().filter(|e| e.kind == Kind::File).count() as u64;
    assert_eq!(sum(&b, "files"), n_files, "{b:#}");
    let dst = t.path().join("dst");
    ds.restore(id, &dst, &[]).expect_ok();
    // data/cache's own mtime is kept; its children are left out.
    let mut o = CompareOpts::full();
    o.dir_mtime = true;
    let d = diff_trees(&want, &scan_tree(&dst), &o);
    assert!(d.is_empty(), "{d:#?}");

    // A bad pattern is refused up front.
    let o = ds.backup_raw(&src, &["--exclude", "a["]);
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("a["), "{o}");
    assert_eq!(ds.snapshots().len(), 1);
}

/// A directory wider than one tree page (paged trees): restores exactly,
/// a second backup finds everything unchanged, and adding one file
/// rewrites one page of the listing, not all of it.
#[test]
fn wide_directory_is_paged() {
    let t = scratch("wide");
    let src = t.path().join("src");
    let wide = src.join("wide");
    fs::create_dir_all(&wide).unwrap();
    for i in 0..12_000u32 {
        write_file(&wide.join(format!("entry-{i:06}")), format!("content {i}\n").as_bytes());
    }
    let ds = Ds::init(t.path().join("ds"));
    let b1 = ds.backup(&src, &[]);
    assert_eq!(sum(&b1, "files"), 12_000, "{b1:#}");
    ds.assert_restores("latest", &src, t.path());

    let b2 = ds.backup(&src, &[]);
    assert_eq!(sum(&b2, "files_unchanged"), 12_000, "{b2:#}");
    assert_eq!(sum(&b2, "dirs_unchanged"), sum(&b2, "dirs"), "{b2:#}");
    assert!(sum(&b2, "blobs_added") <= 1, "{b2:#}");

    write_file(&wide.join("entry-005000a"), b"one more\n");
    let b3 = ds.backup(&src, &[]);
    assert_eq!(sum(&b3, "files_new"), 1, "{b3:#}");
    // The new file, one or two new pages, the page list, the root tree,
    // and the snapshot: far fewer than the 5+ pages of the listing.
    assert!(sum(&b3, "blobs_added") <= 6, "{b3:#}");
    // b1 added the contents (~170 KB) and the whole listing (~900 KB).
    assert!(sum(&b3, "bytes_added") < sum(&b1, "bytes_added") / 2, "listing rewritten whole? {b3:#}");
    ds.assert_restores("latest", &src, t.path());
    let ls = ds.run("ls", ["latest", "/wide"]);
    assert_eq!(ls.code(), Some(0), "{ls}");
    assert_eq!(ls.stdout.lines().count(), 12_001);
    ds.assert_check_clean();
    let gc = ds.run("gc", ["--json"]);
    assert_eq!(gc.code(), Some(0), "{gc}");
    ds.assert_check_clean();
    ds.assert_restores("latest", &src, t.path());
}
