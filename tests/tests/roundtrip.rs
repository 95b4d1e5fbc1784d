//! Backup and restore of a tree with every kind of entry and metadata the
//! product promises to keep, compared field by field afterwards; plus
//! partial restores, `ls`, `snapshots`, LIFEBOAT_DATASTORE and id prefixes.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const SPARSE_SIZE: u64 = 50 << 20;
const SPARSE_TAIL: &[u8] = b"the end of a sparse file";

/// Builds the tree under `src` (created). Returns it for convenience.
fn build_tree(src: &Path) {
    gen_tree(&src.join("gen"), 7, TreeSpec { dirs: 10, files: 120, max_file: 200 << 10, big_files: 0, big_size: 0 });

    // Nested and empty directories.
    write_file(&src.join("docs/a/b/c/deep.txt"), b"deep inside\n");
    write_file(&src.join("docs/a/sibling.txt"), &Rng::new(1).text(5000));
    write_file(&src.join("docs/other.txt"), b"not under docs/a\n");
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::create_dir_all(src.join("docs/a/empty-too")).unwrap();

    // Awkward names.
    write_file(&src.join("with space dir/file with spaces.txt"), b"spaces\n");
    write_file(&src.join(OsStr::from_bytes(b"caf\xe9")), b"latin-1 name\n");
    write_file(&src.join(OsStr::from_bytes(b"dir-\xff\xfe")).join("inner"), b"in a non-UTF-8 directory\n");

    // Symlinks: relative, absolute, to a directory, dangling.
    let l = src.join("links");
    fs::create_dir_all(&l).unwrap();
    std::os::unix::fs::symlink("../docs/a/b/c/deep.txt", l.join("rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", l.join("abs")).unwrap();
    std::os::unix::fs::symlink("../docs", l.join("to-dir")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", l.join("dangling")).unwrap();

    // A hard-linked pair across two directories, and a triple in one.
    write_file(&src.join("hard/one"), &Rng::new(2).bytes(70_000));
    fs::create_dir_all(src.join("hard/sub")).unwrap();
    fs::hard_link(src.join("hard/one"), src.join("hard/sub/two")).unwrap();
    write_file(&src.join("hard/x"), b"three names\n");
    fs::hard_link(src.join("hard/x"), src.join("hard/y")).unwrap();
    fs::hard_link(src.join("hard/x"), src.join("hard/z")).unwrap();

    // A sparse file: 50 MiB hole with a few bytes at the end.
    let sp = src.join("sparse.img");
    let f = fs::File::create(&sp).unwrap();
    f.set_len(SPARSE_SIZE).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(SPARSE_TAIL, SPARSE_SIZE).unwrap();
    drop(f);

    // A 20 MiB pseudo-random file (chunked).
    write_random(&src.join("big.bin"), 20 << 20, 42);

    // Modes.
    write_file(&src.join("modes/private"), b"secret\n");
    chmod(&src.join("modes/private"), 0o600);
    write_file(&src.join("modes/script.sh"), b"#!/bin/sh\necho hi\n");
    chmod(&src.join("modes/script.sh"), 0o755);
    write_file(&src.join("modes/suid"), b"\x7fELF pretend\n");
    chmod(&src.join("modes/suid"), 0o4755);
    write_file(&src.join("modes/sgid-dir/f"), b"x");
    chmod(&src.join("modes/sgid-dir"), 0o2775);
    write_file(&src.join("modes/readonly-dir/f"), b"y");

    // Owners (root only).
    write_file(&src.join("owned/file"), b"owned by 1234\n");
    std::os::unix::fs::symlink("file", src.join("owned/link")).unwrap();
    write_file(&src.join("owned/suid-owned"), b"suid owned\n");
    lchown(&src.join("owned/file"), 1234, 5678);
    lchown(&src.join("owned/link"), 1234, 5678);
    lchown(&src.join("owned/suid-owned"), 1234, 5678);
    chmod(&src.join("owned/suid-owned"), 0o4750); // after chown, which clears it
    lchown(&src.join("owned"), 1234, 5678);

    // Times: everything gets a fixed ns-precise mtime, a few special ones.
    fix_times(src, 1_600_000_000);
    set_mtime(&src.join("docs/other.txt"), 0, 1);
    set_mtime(&src.join("modes/script.sh"), -86_400 * 400, 123_456_789); // before 1970
    set_mtime(&src.join("big.bin"), 4_102_444_800, 999_999_999); // year 2100
    set_mtime(&src.join("links/dangling"), 1_234_567_890, 5);
    chmod(&src.join("modes/readonly-dir"), 0o555);
    set_mtime(&src.join("modes/readonly-dir"), 1_500_000_000, 42);
    set_mtime(&src.join("modes"), 1_500_000_001, 43);
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}"))).collect()
}

#[test]
fn full_tree_round_trip() {
    require_root();
    let t = scratch("roundtrip");
    let src = t.path().join("src");
    build_tree(&src);
    let ds = Ds::init(t.path().join("ds"));

    // Sanity: the source really is sparse and owned as intended.
    let sm = fs::metadata(src.join("sparse.img")).unwrap();
    assert_eq!(sm.len(), SPARSE_SIZE + SPARSE_TAIL.len() as u64);
    assert!(sm.blocks() * 512 < 1 << 20, "source sparse file is not sparse on this filesystem");
    assert_eq!(fs::symlink_metadata(src.join("owned/link")).unwrap().uid(), 1234);

    let b = ds.backup(&src, &["--tag", "nightly", "--tag", "e2e"]);
    let files = sum(&b, "files");
    let expected_files = scan_tree(&src).values().filter(|e| e.kind == Kind::File).count() as u64;
    assert_eq!(files, expected_files, "summary files\n{b:#}");
    assert_eq!(sum(&b, "warnings"), 0, "{b:#}");
    assert!(b["parent"].is_null(), "first snapshot has a parent: {b:#}");
    assert_eq!(sum(&b, "total_bytes"), tree_bytes(&src));
    let id = b["snapshot_id"].as_str().unwrap().to_string();
    assert!(id.starts_with(b["short_id"].as_str().unwrap()));

    // Full restore of "latest": every field of every entry.
    let dst = t.path().join("restored");
    let o = ds.restore("latest", &dst, &[]);
    o.expect_ok();
    assert_same_tree(&src, &dst, &CompareOpts::full());

    // Spot checks that do not depend on the comparison helper.
    let rb = |p: &str| dst.join(p);
    assert_eq!(fs::read(dst.join(OsStr::from_bytes(b"caf\xe9"))).unwrap(), b"latin-1 name\n");
    assert_eq!(fs::read_link(rb("links/dangling")).unwrap(), PathBuf::from("does/not/exist"));
    assert_eq!(fs::read_link(rb("links/rel")).unwrap(), PathBuf::from("../docs/a/b/c/deep.txt"));
    assert_eq!(fs::read(rb("links/rel")).unwrap(), b"deep inside\n");
    assert_eq!(fs::metadata(rb("hard/one")).unwrap().ino(), fs::metadata(rb("hard/sub/two")).unwrap().ino());
    assert_eq!(fs::metadata(rb("hard/x")).unwrap().nlink(), 3);
    assert_ne!(fs::metadata(rb("hard/one")).unwrap().ino(), fs::metadata(rb("hard/x")).unwrap().ino());
    assert_eq!(fs::metadata(rb("modes/suid")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(fs::metadata(rb("modes/private")).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(fs::metadata(rb("modes/script.sh")).unwrap().mode() & 0o7777, 0o755);
    let so = fs::metadata(rb("owned/suid-owned")).unwrap();
    assert_eq!((so.uid(), so.gid(), so.mode() & 0o7777), (1234, 5678, 0o4750));
    let bm = fs::metadata(rb("big.bin")).unwrap();
    assert_eq!((bm.mtime(), bm.mtime_nsec()), (4_102_444_800, 999_999_999));
    assert_eq!(fs::metadata(rb("modes/script.sh")).unwrap().mtime(), -86_400 * 400);
    assert!(fs::read_dir(rb("empty")).unwrap().next().is_none());
    let rs = fs::metadata(rb("sparse.img")).unwrap();
    assert_eq!(rs.len(), SPARSE_SIZE + SPARSE_TAIL.len() as u64);
    assert!(rs.blocks() * 512 < 4 << 20, "restored sparse file takes {} bytes on disk for {} bytes", rs.blocks() * 512, rs.len());
    let data = fs::read(rb("sparse.img")).unwrap();
    assert!(data.ends_with(SPARSE_TAIL) && data[..SPARSE_SIZE as usize].iter().all(|&b| b == 0));

    // Restoring again over the existing tree converges to the same result.
    ds.restore("latest", &dst, &[]).expect_ok();
    assert_same_tree(&src, &dst, &CompareOpts::full());
}

#[test]
fn partial_restore_ls_snapshots_env_and_prefix() {
    require_root();
    let t = scratch("roundtrip-partial");
    let src = t.path().join("src");
    build_tree(&src);
    let ds = Ds::init(t.path().join("ds"));
    let b = ds.backup(&src, &["--tag", "nightly", "--tag", "e2e"]);
    let id = b["snapshot_id"].as_str().unwrap().to_string();

    // --include of one subdirectory: it and its parents, nothing else.
    let d1 = t.path().join("inc-dir");
    ds.restore(&id, &d1, &["--include", "/docs/a"]).expect_ok();
    let got = scan_tree(&d1);
    let names: Vec<_> = got.keys().cloned().collect();
    assert!(got.keys().all(|p| p.starts_with("docs")), "restored outside /docs: {names:?}");
    assert!(!got.contains_key(Path::new("docs/other.txt")), "sibling of the include restored: {names:?}");
    assert_eq!(fs::read(d1.join("docs/a/b/c/deep.txt")).unwrap(), b"deep inside\n");
    assert_same_tree(&src.join("docs/a"), &d1.join("docs/a"), &CompareOpts::full());

    // --include of one file (with spaces in its path).
    let d2 = t.path().join("inc-file");
    ds.restore(&id, &d2, &["--include", "with space dir/file with spaces.txt"]).expect_ok();
    let got: Vec<PathBuf> = scan_tree(&d2).keys().cloned().collect();
    assert_eq!(got, vec![PathBuf::from("with space dir"), PathBuf::from("with space dir/file with spaces.txt")]);
    assert_eq!(fs::read(d2.join("with space dir/file with spaces.txt")).unwrap(), b"spaces\n");

    // Two includes together.
    let d3 = t.path().join("inc-two");
    ds.restore(&id, &d3, &["--include", "/big.bin", "--include", "/links"]).expect_ok();
    let top: Vec<_> = fs::read_dir(&d3).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(top.len(), 2, "{top:?}");
    assert_same_tree(&src.join("links"), &d3.join("links"), &CompareOpts::full());
    assert_eq!(scan_tree(&d3)[Path::new("big.bin")].hash, scan_tree(&src)[Path::new("big.bin")].hash);

    // An include that is not in the snapshot is an error, and writes nothing.
    let d4 = t.path().join("inc-missing");
    let o = ds.restore(&id, &d4, &["--include", "/no/such/thing"]);
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("/no/such/thing"), "{o}");

    // ls: top level, then recursive JSON of a subdirectory.
    let o = ds.run("ls", ["latest"]);
    o.expect_ok();
    let top: Vec<&str> = o.stdout.lines().collect();
    for want in ["/big.bin", "/docs", "/empty", "/sparse.img", "/with space dir", "/links", "/caf\u{fffd}"] {
        assert!(top.iter().any(|l| l.ends_with(want)), "ls lacks {want}:\n{o}");
    }
    assert!(!o.stdout.contains("/docs/a"), "non-recursive ls descended:\n{o}");
    assert!(top.iter().any(|l| l.starts_with('d') && l.ends_with("/docs")), "{o}");
    assert!(top.iter().any(|l| l.starts_with('-') && l.ends_with("/big.bin") && l.contains(&(20u64 << 20).to_string())), "{o}");

    let o = ds.run("ls", ["--json", "-r", &id[..12], "/"]);
    o.expect_ok();
    let entries = json_lines(&o.stdout);
    let by_path = |p: &str| entries.iter().find(|e| e["path"] == p).unwrap_or_else(|| panic!("ls -r --json lacks {p}\n{o}"));
    assert_eq!(by_path("/docs/a/b/c/deep.txt")["type"], "file");
    assert_eq!(by_path("/docs/a/b/c/deep.txt")["size"], 12);
    assert_eq!(by_path("/links/dangling")["type"], "symlink");
    assert_eq!(by_path("/links/dangling")["link_target"], "does/not/exist");
    assert_eq!(by_path("/owned/file")["uid"], 1234);
    assert_eq!(by_path("/owned/file")["gid"], 5678);
    assert_eq!(by_path("/modes/suid")["mode"], 0o4755);
    assert_eq!(by_path("/empty")["type"], "dir");
    let n_files = entries.iter().filter(|e| e["type"] == "file").count() as u64;
    assert_eq!(n_files, sum(&b, "files"));

    let o = ds.run("ls", ["latest", "/docs/a"]);
    o.expect_ok();
    assert!(o.stdout.contains("/docs/a/sibling.txt") && o.stdout.contains("/docs/a/b"), "{o}");
    assert!(!o.stdout.contains("deep.txt") && !o.stdout.contains("other.txt"), "{o}");
    let o = ds.run("ls", ["latest", "/nope"]);
    assert_eq!(o.code(), Some(1), "{o}");

    // snapshots --json: the snapshot, its tags and source path.
    let snaps = ds.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], id.as_str());
    assert_eq!(snaps[0]["tags"], serde_json::json!(["nightly", "e2e"]));
    assert_eq!(snaps[0]["paths"], serde_json::json!([fs::canonicalize(&src).unwrap().to_str().unwrap()]));
    assert_eq!(snaps[0]["summary"]["files"], b["summary"]["files"]);

    // LIFEBOAT_DATASTORE replaces --datastore, for backup and listing.
    let mut c = lb_cmd();
    c.env("LIFEBOAT_DATASTORE", &ds.path).args(["backup", "--json", "--tag", "via-env"]).arg(&src);
    let o = run_cmd(c);
    o.expect_ok();
    let second = o.json()["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(o.json()["parent"], id.as_str(), "{o}");
    let mut c = lb_cmd();
    c.env("LIFEBOAT_DATASTORE", &ds.path).args(["snapshots", "--json"]);
    let o = run_cmd(c);
    o.expect_ok();
    let list = o.json();
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![id.as_str(), second.as_str()]);
    assert_eq!(list[1]["tags"], serde_json::json!(["via-env"]));
    // Without either, the command refuses.
    let o = lb(["snapshots"]);
    assert_ne!(o.code(), Some(0), "{o}");
    assert!(o.stderr.contains("--datastore"), "{o}");

    // A unique id prefix selects the first snapshot (not "latest").
    let pfx = &id[..8];
    let d5 = t.path().join("by-prefix");
    ds.restore(pfx, &d5, &["--include", "docs"]).expect_ok();
    assert_same_tree(&src.join("docs"), &d5.join("docs"), &CompareOpts::full());
    let o = ds.run("ls", [&id[..6].to_uppercase(), "/docs/other.txt"]);
    o.expect_ok();
    assert!(o.stdout.contains("/docs/other.txt"), "{o}");
}
