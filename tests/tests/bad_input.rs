//! What goes wrong in real life: wrong paths, wrong directories, future
//! formats, unknown snapshots, unreadable files, a full disk, Ctrl-C,
//! files changing under the backup, and a damaged pack.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn missing_source_is_an_error_naming_it() {
    let t = scratch("missing-src");
    let ds = Ds::init(t.path().join("ds"));
    let missing = t.path().join("no-such-dir");
    let o = ds.backup_raw(&missing, &[]);
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains(missing.to_str().unwrap()), "stderr does not name the path\n{o}");
    assert!(o.stderr.contains("does not exist"), "{o}");
    // One good and one missing source: still an error, nothing saved.
    let good = t.path().join("good");
    write_file(&good.join("f"), b"x");
    let mut c = ds.cmd("backup");
    c.arg(&good).arg(&missing);
    let o = run_cmd(c);
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("no-such-dir"), "{o}");
    assert!(ds.snapshots().is_empty());
    assert!(ds.packs().is_empty(), "a failed backup left packs: {:?}", ds.packs());
}

#[test]
fn not_a_datastore_suggests_init() {
    let t = scratch("not-ds");
    let plain = t.path().join("plain");
    write_file(&plain.join("some-file"), b"hello");
    let src = t.path().join("src");
    write_file(&src.join("f"), b"x");
    for dir in [plain.clone(), t.path().join("does-not-exist")] {
        for sub in [vec!["snapshots"], vec!["check"], vec!["ls", "latest"]] {
            let mut c = lb_cmd();
            c.arg(sub[0]).arg("--datastore").arg(&dir).args(&sub[1..]);
            let o = run_cmd(c);
            assert_eq!(o.code(), Some(1), "{o}");
            assert!(o.stderr.contains("not a Lifeboat datastore"), "{o}");
            assert!(o.stderr.contains(&format!("lifeboat datastore init {}", dir.display())), "no init hint\n{o}");
        }
    }
    let o = Ds::at(&plain).backup_raw(&src, &[]);
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("not a Lifeboat datastore"), "{o}");
    // Nothing was created in the non-datastore directory.
    let names: Vec<_> = fs::read_dir(&plain).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec!["some-file"]);
}

#[test]
fn future_format_version_is_refused() {
    let t = scratch("format");
    let ds = Ds::init(t.path().join("ds"));
    assert_eq!(ds.config()["format_version"], 1);
    let src = t.path().join("src");
    write_file(&src.join("f"), b"x");
    ds.set_config("format_version", serde_json::json!(99));
    for o in [ds.run("snapshots", [] as [&str; 0]), ds.backup_raw(&src, &[]), ds.check(true)] {
        assert_eq!(o.code(), Some(1), "{o}");
        assert!(o.stderr.contains("version 99"), "does not name the version\n{o}");
        assert!(o.stderr.contains("not supported"), "{o}");
    }
    assert!(ds.packs().is_empty());
    // A damaged config is named as such, not as a missing datastore.
    fs::write(ds.path.join("config.json"), b"{ not json").unwrap();
    let o = ds.run("snapshots", [] as [&str; 0]);
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("config.json") && o.stderr.contains("damaged"), "{o}");
}

#[test]
fn unknown_snapshot_and_init_into_non_empty_dir() {
    let t = scratch("unknown-snap");
    let ds = Ds::init(t.path().join("ds"));
    let dst = t.path().join("dst");
    // Empty datastore: "latest" has nothing to give.
    let o = ds.restore("latest", &dst, &[]);
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("no snapshots"), "{o}");

    let src = t.path().join("src");
    write_file(&src.join("f"), b"x");
    let id = ds.backup(&src, &[])["snapshot_id"].as_str().unwrap().to_string();
    let wrong = if id.starts_with("dead") { "beefbeef" } else { "deadbeef" };
    for o in [ds.restore(wrong, &dst, &[]), ds.run("ls", [wrong])] {
        assert_eq!(o.code(), Some(1), "{o}");
        assert!(o.stderr.contains(&format!("no snapshot matches '{wrong}'")), "{o}");
        assert!(o.stderr.contains("lifeboat snapshots"), "{o}");
    }
    let o = ds.restore("not-hex!", &dst, &[]);
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("not-hex!"), "{o}");
    assert!(!dst.exists(), "a failed restore created the target");

    // init refuses a non-empty directory and leaves it alone.
    let o = lb(args!["datastore", "init", &src]);
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("not empty"), "{o}");
    assert_eq!(fs::read_dir(&src).unwrap().count(), 1);
    assert!(!src.join("config.json").exists());
    // ...and an existing datastore.
    let o = lb(args!["datastore", "init", &ds.path]);
    assert_eq!(o.code(), Some(1), "{o}");
    assert_eq!(ds.snapshots().len(), 1);
    // An empty existing directory is fine.
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    Ds::init(&empty);
}

/// Makes every directory and file below `p` world-readable.
fn open_up(p: &Path) {
    let m = fs::symlink_metadata(p).unwrap();
    if m.is_dir() {
        chmod(p, 0o755);
        for e in fs::read_dir(p).unwrap() {
            open_up(&e.unwrap().path());
        }
    } else if m.is_file() {
        chmod(p, 0o644);
    }
}

fn as_nobody(args: &[&std::ffi::OsStr]) -> Out {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(bin()).args(args);
    c.env_remove("LIFEBOAT_DATASTORE").env_remove("LIFEBOAT_FAILPOINTS");
    run_cmd(c)
}

#[test]
fn unreadable_file_and_dir_are_warnings_exit_3() {
    require_root();
    let t = scratch("unreadable");
    chmod(t.path(), 0o755);
    let src = t.path().join("src");
    gen_tree(&src, 5, TreeSpec { dirs: 5, files: 40, max_file: 64 << 10, big_files: 0, big_size: 0 });
    write_file(&src.join("dir00/locked.bin"), b"no one may read this");
    write_file(&src.join("locked-dir/inside"), b"nor this");
    write_file(&src.join("locked-dir/sub/deeper"), b"nor this");
    open_up(&src);
    chmod(&src.join("dir00/locked.bin"), 0o000);
    chmod(&src.join("locked-dir"), 0o000);

    // The datastore belongs to nobody, who runs the backup.
    let home = t.path().join("home");
    fs::create_dir(&home).unwrap();
    chmod(&home, 0o777);
    let dsp = home.join("ds");
    let o = as_nobody(&["datastore".as_ref(), "init".as_ref(), dsp.as_os_str()]);
    o.expect_ok();
    assert_eq!(fs::metadata(dsp.join("config.json")).unwrap().uid(), 65534);
    let ds = Ds::at(&dsp);

    let o = as_nobody(&["backup".as_ref(), "--json".as_ref(), "--datastore".as_ref(), dsp.as_os_str(), src.as_os_str()]);
    assert_eq!(o.code(), Some(3), "expected exit 3 (partial)\n{o}");
    let v = o.json();
    let warnings: Vec<String> = v["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_string()).collect();
    assert_eq!(sum(&v, "warnings"), 2, "{o}");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("dir00/locked.bin") && w.contains("permission denied")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("locked-dir") && w.contains("cannot read directory")), "{warnings:?}");
    let id = v["snapshot_id"].as_str().unwrap();
    assert_eq!(ds.snapshot_ids(), vec![id.to_string()]);

    // Without --json the warnings go to stderr, and the exit code stays 3.
    let o = as_nobody(&["backup".as_ref(), "--datastore".as_ref(), dsp.as_os_str(), src.as_os_str()]);
    assert_eq!(o.code(), Some(3), "{o}");
    assert!(o.stderr.contains("locked.bin") && o.stderr.contains("locked-dir"), "{o}");

    // Everything else restores (as root) exactly; the unreadable directory
    // is there, empty; the unreadable file is not.
    let dst = t.path().join("dst");
    ds.restore(id, &dst, &[]).expect_ok();
    let mut want = scan_tree(&src);
    want.retain(|p, _| p != Path::new("dir00/locked.bin") && (p == Path::new("locked-dir") || !p.starts_with("locked-dir")));
    let got = scan_tree(&dst);
    let d = diff_trees(&want, &got, &CompareOpts::full());
    assert!(d.is_empty(), "{d:#?}");
    assert!(got.contains_key(Path::new("locked-dir")));
    ds.assert_check_clean();
}

fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

/// A datastore on a 30 MiB tmpfs; a 60 MiB backup must fail cleanly.
/// With a small pack target, packs are committed before the disk fills.
fn disk_full(name: &str, pack_target: Option<u64>) {
    require_root();
    let t = scratch(name);
    let mnt = Tmpfs::mount(&t.path().join("mnt"), "30m");
    let ds = Ds::init(mnt.dir.join("ds"));
    if let Some(n) = pack_target {
        ds.set_pack_target(n);
    }
    let a = t.path().join("a");
    gen_tree(&a, 21, TreeSpec { dirs: 4, files: 40, max_file: 64 << 10, big_files: 1, big_size: 1 << 20 });
    let id_a = ds.backup(&a, &[])["snapshot_id"].as_str().unwrap().to_string();

    let big = t.path().join("big");
    fs::create_dir(&big).unwrap();
    for i in 0..6 {
        write_random(&big.join(format!("r{i}")), 10 << 20, 1000 + i);
    }
    let o = ds.backup_raw(&big, &[]);
    assert_eq!(o.code(), Some(1), "a backup larger than the disk must fail\n{o}");
    let err = o.stderr.to_lowercase();
    assert!(err.contains("disk is full") || err.contains("disk full"), "stderr does not say the disk is full\n{o}");
    assert!(!o.stderr.contains("panicked"), "{o}");
    assert_eq!(ds.snapshot_ids(), vec![id_a.clone()], "no snapshot may be added");
    assert!(ds.partials().is_empty(), "partial packs left: {:?}", ds.partials());
    ds.assert_check_clean();
    ds.assert_restores(&id_a, &a, t.path());

    if pack_target.is_some() {
        // The failed run's committed packs fill the disk; gc gives the space
        // back, or (with too little room to even record that) says the disk
        // is full, cleanly. With a little more room it works.
        let free = free_bytes(&mnt.dir);
        let o = ds.run("gc", ["--json"]);
        eprintln!("gc with {free} bytes free: {:?}", o.status);
        match o.code() {
            Some(0) => {}
            Some(1) => {
                assert!(o.stderr.contains("disk is full"), "{o}");
                ds.assert_check_clean();
                let st = Command::new("mount").args(["-o", "remount,size=32m"]).arg(&mnt.dir).status().unwrap();
                assert!(st.success());
                let o = ds.run("gc", ["--json"]);
                o.expect_ok();
            }
            _ => panic!("gc on a full disk did not end cleanly ({} bytes free)\n{o}", free_bytes(&mnt.dir)),
        }
        assert!(free_bytes(&mnt.dir) > 10 << 20, "gc freed too little");
        ds.assert_check_clean();
        ds.assert_restores(&id_a, &a, t.path());
    }

    // A backup whose data is already stored needs next to no space.
    let again = ds.backup(&a, &["--force"]);
    assert!(sum(&again, "bytes_added") < 4096, "{again:#}");
    ds.assert_restores(again["snapshot_id"].as_str().unwrap(), &a, t.path());

    // On a nearly full disk every backup ends cleanly: saved, or refused
    // as "disk is full"; never a crash; the datastore stays sound.
    let filler = mnt.dir.join("filler");
    let mut saved = vec![];
    // Just above 4 MiB is where RocksDB's MANIFEST preallocation used to
    // eat the last bytes and abort the process.
    let near_manifest = [4u64 << 20 | 4 << 10, 4 << 20 | 8 << 10, 4 << 20 | 12 << 10, 4 << 20 | 16 << 10, 4 << 20 | 20 << 10];
    for (k, free) in near_manifest.into_iter().chain([4u64 << 20, 1 << 20, 256 << 10, 128 << 10, 64 << 10, 48 << 10, 32 << 10, 24 << 10, 16 << 10, 12 << 10, 8 << 10, 4 << 10, 0]).enumerate() {
        let _ = fs::remove_file(&filler);
        let avail = free_bytes(&mnt.dir);
        if avail > free {
            let f = fs::File::create(&filler).unwrap();
            use std::os::fd::AsRawFd;
            unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, (avail - free) as libc::off_t) };
        }
        let src = t.path().join(format!("near-full-{k}"));
        write_file(&src.join("f"), &Rng::new(k as u64).bytes(1000));
        let o = ds.backup_raw(&src, &[]);
        match o.code() {
            Some(0) => saved.push((o.json()["snapshot_id"].as_str().unwrap().to_string(), src)),
            Some(1) => assert!(o.stderr.contains("disk is full"), "{free} bytes free: not a disk-full error\n{o}"),
            _ => panic!("{free} bytes free: the backup did not end cleanly\n{o}"),
        }
        fs::remove_file(&filler).ok();
        assert!(ds.partials().is_empty(), "partial packs left: {:?}", ds.partials());
        ds.assert_check_clean();
    }
    assert!(!saved.is_empty(), "no backup fit even with 4 MiB free");
    for (id, src) in &saved {
        ds.assert_restores(id, src, t.path());
    }
    ds.assert_check_clean();
    drop(mnt);
}

#[test]
fn disk_full_keeps_the_datastore_intact() {
    disk_full("diskfull", None);
}

#[test]
fn disk_full_after_committed_packs() {
    disk_full("diskfull-small-packs", Some(256 << 10));
}

/// Waits for the child up to `limit`, then kills it (and fails).
fn wait_limit(mut c: ChildGuard, limit: Duration) -> Out {
    let start = Instant::now();
    while c.running() {
        assert!(start.elapsed() < limit, "lifeboat {} did not exit within {limit:?}", c.args);
        std::thread::sleep(Duration::from_millis(10));
    }
    c.wait()
}

#[test]
fn sigint_stops_without_a_snapshot() {
    let t = scratch("sigint");
    let ds = Ds::init(t.path().join("ds"));
    ds.set_pack_target(1 << 20);
    let a = t.path().join("a");
    gen_tree(&a, 31, TreeSpec::small());
    let id_a = ds.backup(&a, &[])["snapshot_id"].as_str().unwrap().to_string();

    let big = t.path().join("big");
    fs::create_dir(&big).unwrap();
    for i in 0..30 {
        write_random(&big.join(format!("part{i:02}")), 10 << 20, 500 + i);
    }
    let mut c = ds.cmd("backup");
    c.arg(&big);
    let mut child = ChildGuard::spawn(c);
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.running(), "the backup finished before it could be interrupted; make the tree bigger");
    let sent = Instant::now();
    child.signal(libc::SIGINT);
    let o = wait_limit(child, Duration::from_secs(30));
    assert_eq!(o.code(), Some(130), "{o}");
    assert!(o.stderr.contains("interrupted"), "{o}");
    assert!(sent.elapsed() < Duration::from_secs(10), "took {:?} to stop", sent.elapsed());
    assert_eq!(ds.snapshot_ids(), vec![id_a.clone()]);
    assert!(ds.partials().is_empty(), "partial packs left: {:?}", ds.partials());
    ds.assert_check_clean();
    ds.assert_restores(&id_a, &a, t.path());

    // SIGTERM too.
    let mut c = ds.cmd("backup");
    c.arg(&big);
    let mut child = ChildGuard::spawn(c);
    std::thread::sleep(Duration::from_millis(100));
    assert!(child.running(), "the second backup finished within 100 ms");
    child.signal(libc::SIGTERM);
    let o = wait_limit(child, Duration::from_secs(30));
    assert_eq!(o.code(), Some(130), "{o}");
    assert_eq!(ds.snapshot_ids(), vec![id_a]);
    ds.assert_check_clean();
}

#[test]
fn file_growing_during_backup() {
    let t = scratch("growing");
    let src = t.path().join("src");
    gen_tree(&src, 41, TreeSpec { dirs: 3, files: 30, max_file: 64 << 10, big_files: 0, big_size: 0 });
    let log = src.join("growing.log");
    write_random(&log, 30 << 20, 77);
    let ds = Ds::init(t.path().join("ds"));

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, log) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            let f = fs::OpenOptions::new().append(true).open(&log).unwrap();
            let mut rng = Rng::new(3);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 200 << 20 {
                let chunk = rng.bytes(16 << 10);
                use std::io::Write;
                (&f).write_all(&chunk).unwrap();
                n += chunk.len() as u64;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let o = ds.backup_raw(&src, &[]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(matches!(o.code(), Some(0) | Some(3)), "{o}");
    let v = o.json();
    if o.code() == Some(3) {
        let w = v["warnings"].as_array().unwrap();
        assert!(w.iter().all(|w| w.as_str().unwrap().contains("growing.log") && w.as_str().unwrap().contains("changed while being read")), "{o}");
    }
    ds.assert_check_clean();

    // What was stored is a prefix of the file as it is now (appends only).
    let id = v["snapshot_id"].as_str().unwrap();
    let dst = t.path().join("dst");
    ds.restore(id, &dst, &[]).expect_ok();
    let stored = fs::read(dst.join("growing.log")).unwrap();
    let now = fs::read(&log).unwrap();
    assert!(stored.len() >= 30 << 20, "stored {} bytes", stored.len());
    assert!(now.starts_with(&stored), "stored growing.log ({} bytes) is not a prefix of the file", stored.len());
    let mut want = scan_tree(&src);
    want.remove(Path::new("growing.log"));
    let mut got = scan_tree(&dst);
    got.remove(Path::new("growing.log"));
    let mut o = CompareOpts::full();
    o.dir_mtime = false; // the root's mtime is not restored anyway
    let d = diff_trees(&want, &got, &o);
    assert!(d.is_empty(), "{d:#?}");
}

#[test]
fn corrupt_pack_is_detected_and_never_restored_as_garbage() {
    let t = scratch("corrupt");
    let src = t.path().join("src");
    gen_tree(&src, 51, TreeSpec { dirs: 3, files: 25, max_file: 32 << 10, big_files: 0, big_size: 0 });
    write_random(&src.join("big.bin"), 8 << 20, 5);
    let ds = Ds::init(t.path().join("ds"));
    let b = ds.backup(&src, &[]);
    let id = b["snapshot_id"].as_str().unwrap().to_string();
    ds.assert_check_clean();

    // Flip bytes in the middle of the data of the file chunk nearest the
    // middle of its pack.
    let (pack, len) = ds.largest_pack();
    let recs = pack_records(&pack);
    let chunk = recs.iter().filter(|r| r.1 == 1).min_by_key(|r| (r.0 as i64 - len as i64 / 2).abs()).copied().expect("a file chunk record");
    let at = chunk.0 + 48 + chunk.2 / 2;
    let f = fs::OpenOptions::new().read(true).write(true).open(&pack).unwrap();
    let mut buf = [0u8; 16];
    f.read_exact_at(&mut buf, at).unwrap();
    for b in &mut buf {
        *b ^= 0x5a;
    }
    f.write_all_at(&buf, at).unwrap();
    drop(f);

    let o = ds.check(true);
    assert_eq!(o.code(), Some(1), "{o}");
    let damaged: Vec<&str> = o.stdout.lines().filter(|l| l.starts_with("damaged:")).collect();
    assert!(!damaged.is_empty(), "no damaged: line\n{o}");
    assert!(damaged.iter().all(|l| l.contains("/big.bin") && l.contains(&id[..8])), "damage names the wrong paths\n{o}");
    let pack_id = pack.file_stem().unwrap().to_str().unwrap();
    assert!(o.stdout.contains(pack_id), "check does not name the pack\n{o}");

    // Restoring the damaged snapshot salvages everything else: exit 3,
    // a warning naming the file, blob and pack; the damaged file holds a
    // true prefix and zeros after it, never wrong bytes.
    let dst = t.path().join("dst");
    let o = ds.restore(&id, &dst, &[]);
    assert_eq!(o.code(), Some(3), "restore of a damaged snapshot must report partial success\n{o}");
    assert!(o.stderr.contains("big.bin") && o.stderr.contains("blob") && o.stderr.contains(pack_id) && o.stderr.contains("corrupt"), "{o}");
    let orig = fs::read(src.join("big.bin")).unwrap();
    let got = fs::read(dst.join("big.bin")).unwrap();
    assert_eq!(got.len(), orig.len(), "damaged file keeps its size");
    let good = got.iter().zip(&orig).take_while(|(a, b)| a == b).count();
    assert!(good < orig.len(), "the damaged chunk cannot have been restored");
    assert!(got[good..].iter().all(|b| *b == 0), "bytes after the lost chunk must be zeros, not garbage");
    fs::remove_file(dst.join("big.bin")).unwrap();
    let mut rest = scan_tree(&src);
    rest.remove(Path::new("big.bin"));
    let restored = {
        let mut r = scan_tree(&dst);
        r.remove(Path::new("big.bin"));
        r
    };
    let diff = diff_trees(&rest, &restored, &CompareOpts::content_only());
    assert!(diff.is_empty(), "undamaged files differ: {diff:?}");
    // Undamaged parts still restore.
    let small: PathBuf = scan_tree(&src).iter().find(|(p, e)| e.kind == Kind::File && e.size > 0 && p.parent() != Some(Path::new(""))).map(|(p, _)| p.clone()).unwrap();
    let dst2 = t.path().join("dst2");
    ds.restore(&id, &dst2, &["--include", small.to_str().unwrap()]).expect_ok();
    assert_eq!(fs::read(dst2.join(&small)).unwrap(), fs::read(src.join(&small)).unwrap());
}
