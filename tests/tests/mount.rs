//! `lifeboat mount`: the real binary mounts a datastore with FUSE and the
//! test reads it through the kernel like any program would: whole trees
//! compared with their source (content, sizes, modes, owners, mtimes,
//! symlinks, special files), a large chunked file read at random offsets
//! by several threads at once, snapshot naming and `latest`, a backup made
//! while mounted showing up, a non-root reader, and clean unmounts on
//! SIGTERM / SIGINT (also with a file held open).

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIG: u64 = 24 << 20;

/// Whether `mp` is a mount point now (per /proc/self/mountinfo).
fn is_mounted(mp: &Path) -> bool {
    let want = fs::canonicalize(mp).unwrap_or_else(|_| mp.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().any(|l| l.split(' ').nth(4).map(|p| p.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")) == Some(want.to_string_lossy().into_owned()))
}

/// A running `lifeboat mount`. Dropping it (also after a failed assert)
/// unmounts lazily and kills the process, so no test leaves a mount.
struct Mounted {
    mp: PathBuf,
    child: Option<ChildGuard>,
}

impl Mounted {
    #[track_caller]
    fn start(cmd: Command, mp: &Path) -> Mounted {
        let mut child = ChildGuard::spawn(cmd);
        let mut m = Mounted { mp: fs::canonicalize(mp).unwrap(), child: None };
        let up = wait_until(Duration::from_secs(20), || !child.running() || (is_mounted(&m.mp) && m.mp.join("snapshots").is_dir()));
        if !child.running() {
            panic!("lifeboat mount exited before mounting\n{}", child.wait());
        }
        m.child = Some(child);
        assert!(up, "{} not mounted after 20 s", m.mp.display());
        m
    }

    fn child(&mut self) -> &mut ChildGuard {
        self.child.as_mut().unwrap()
    }

    /// Sends `sig`, waits for the process to exit; returns its output.
    #[track_caller]
    fn stop_with(mut self, sig: i32) -> Out {
        self.child().signal(sig);
        let exited = wait_until(Duration::from_secs(20), || !self.child().running());
        let child = self.child.take().unwrap();
        assert!(exited, "lifeboat mount still running 20 s after signal {sig}");
        child.wait()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.mp) {
            let ok = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.mp).status().map(|s| s.success()).unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
            }
        }
        // The child guard kills and reaps the process.
    }
}

fn mount(ds: &Ds, mp: &Path, extra: &[&str]) -> Mounted {
    fs::create_dir_all(mp).unwrap();
    let mut c = ds.cmd("mount");
    c.args(extra).arg(mp);
    Mounted::start(c, mp)
}

/// A tree with every kind of entry the mount shows: generated files in
/// nested directories, a 24 MiB chunked file, symlinks, odd modes and
/// owners, a non-UTF-8 name, a fifo, fixed mtimes.
fn build_source(src: &Path) {
    gen_tree(&src.join("gen"), 11, TreeSpec { dirs: 8, files: 80, max_file: 300 << 10, big_files: 0, big_size: 0 });
    write_random(&src.join("big.dat"), BIG, 4242);
    write_file(&src.join("docs/readme.txt"), b"read me\n");
    write_file(&src.join("docs/empty"), b"");
    fs::create_dir_all(src.join("empty-dir")).unwrap();
    write_file(&src.join(OsStr::from_bytes(b"caf\xe9.txt")), b"latin-1 name\n");
    std::os::unix::fs::symlink("docs/readme.txt", src.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", src.join("link-dangling")).unwrap();
    write_file(&src.join("modes/private"), b"secret\n");
    chmod(&src.join("modes/private"), 0o600);
    write_file(&src.join("modes/script.sh"), b"#!/bin/sh\necho hi\n");
    chmod(&src.join("modes/script.sh"), 0o755);
    write_file(&src.join("modes/owned"), b"owned by 1234\n");
    lchown(&src.join("modes/owned"), 1234, 5678);
    chmod(&src.join("modes/owned"), 0o4750);
    let fifo = std::ffi::CString::new(src.join("modes/fifo").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    // Enough entries for a paged directory listing (pages of 1024-8192).
    for i in 0..5000 {
        write_file(&src.join("many").join(format!("entry-{i:05}")), format!("{i}\n").as_bytes());
    }
    fix_times(src, 1_700_000_000);
}

fn snapshot_dirs(mp: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(mp.join("snapshots")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn valid_snapshot_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() == 28
        && n.chars().enumerate().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 => c == '-',
            19 => c == '_',
            20..=27 => c.is_ascii_hexdigit(),
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn mounted_snapshot_equals_source() {
    require_root();
    let t = scratch("mount-tree");
    let src = t.path().join("src");
    build_source(&src);
    let ds = Ds::init(t.path().join("ds"));
    let id = ds.backup(&src, &[])["snapshot_id"].as_str().unwrap().to_string();
    let mp = t.path().join("mnt");
    let m = mount(&ds, &mp, &[]);

    // Top level: snapshots/, latest -> snapshots/<time>_<id8>, and vms/
    // (VM snapshots only; tests/tests/vm_files.rs looks inside).
    let names = snapshot_dirs(&mp);
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(valid_snapshot_name(&names[0]), "odd snapshot dir name {}", names[0]);
    assert!(names[0].ends_with(&id[..8]), "{} does not end with the id prefix {}", names[0], &id[..8]);
    assert_eq!(fs::read_link(mp.join("latest")).unwrap(), Path::new("snapshots").join(&names[0]));
    let mut top: Vec<_> = fs::read_dir(&mp).unwrap().map(|e| e.unwrap().file_name()).collect();
    top.sort();
    assert_eq!(top, vec![OsStr::new("latest"), OsStr::new("snapshots"), OsStr::new("vms")]);
    assert_eq!(fs::read_dir(mp.join("vms")).unwrap().count(), 0, "a file snapshot listed under vms/");

    // Everything, field by field, through `latest` and through the listed name.
    let opts = CompareOpts { mtime: true, dir_mtime: true, owners: true, mode: true, hard_links: false };
    assert_eq!(fs::read_dir(mp.join("latest/many")).unwrap().count(), 5000);
    assert_eq!(fs::read(mp.join("latest/many/entry-04999")).unwrap(), b"4999\n");
    assert_same_tree(&src, &mp.join("latest"), &opts);
    assert_same_tree(&src, &mp.join("snapshots").join(&names[0]), &opts);

    // Symlink sizes are their target lengths; directories list in order.
    let l = fs::symlink_metadata(mp.join("latest/link-rel")).unwrap();
    assert_eq!(l.len(), "docs/readme.txt".len() as u64);
    assert_eq!(fs::read(mp.join("latest/link-rel")).unwrap(), b"read me\n", "symlinks resolve inside the mount");

    // A snapshot is found by a unique id prefix and by its full id too.
    for q in [&id[..12], id.as_str()] {
        assert_eq!(fs::read(mp.join("snapshots").join(q).join("docs/readme.txt")).unwrap(), b"read me\n", "lookup by {q}");
    }
    assert!(!mp.join("snapshots/ffffffffffff0000").exists() || id.starts_with("ffffffffffff0000"));

    // Read-only.
    let e = fs::write(mp.join("latest/docs/new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = fs::OpenOptions::new().write(true).open(mp.join("latest/docs/readme.txt")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    assert!(fs::create_dir(mp.join("latest/newdir")).is_err());
    assert!(fs::remove_file(mp.join("latest/docs/readme.txt")).is_err());

    let o = m.stop_with(libc::SIGTERM);
    o.expect_ok();
    assert!(!is_mounted(&mp), "still mounted after SIGTERM\n{o}");
    assert!(o.stderr.contains("mounted") && o.stderr.contains("Ctrl-C"), "{o}");
}

#[test]
fn big_file_random_reads_from_many_threads() {
    require_root();
    let t = scratch("mount-big");
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big.dat"), BIG, 777);
    gen_tree(&src.join("more"), 3, TreeSpec { dirs: 4, files: 40, max_file: 2 << 20, big_files: 2, big_size: 5 << 20 });
    let ds = Ds::init(t.path().join("ds"));
    ds.backup(&src, &[]);
    let mp = t.path().join("mnt");
    let m = mount(&ds, &mp, &[]);
    let want = fs::read(src.join("big.dat")).unwrap();
    let big = mp.join("latest/big.dat");
    assert_eq!(fs::metadata(&big).unwrap().len(), BIG);

    // ~200 random ranges on one handle: chunk boundaries, tiny and
    // multi-chunk reads, the last bytes, past the end.
    let f = fs::File::open(&big).unwrap();
    let mut rng = Rng::new(99);
    for i in 0..200 {
        let len = match i % 4 {
            0 => rng.range(1, 64) as usize,
            1 => rng.range(1, 128 << 10) as usize,
            2 => rng.range(1, 3 << 20) as usize,
            _ => rng.range(4096, 9 << 20) as usize,
        };
        let off = rng.below(BIG) as usize;
        let mut buf = vec![0u8; len];
        let n = read_full_at(&f, &mut buf, off as u64);
        let end = (off + len).min(BIG as usize);
        assert_eq!(n, end - off, "short read at {off}+{len}");
        assert!(buf[..n] == want[off..end], "bytes differ at {off}+{len}");
    }
    let mut tail = [0u8; 100];
    assert_eq!(read_full_at(&f, &mut tail, BIG - 10), 10);
    assert_eq!(&tail[..10], &want[want.len() - 10..]);
    assert_eq!(f.read_at(&mut tail, BIG + 5).unwrap(), 0, "past the end reads nothing");
    drop(f);

    // Six threads at once: random ranges of big.dat, each through its own
    // handle, and whole-file hashes of everything else.
    let want = std::sync::Arc::new(want);
    let mut threads = Vec::new();
    for k in 0..4u64 {
        let (big, want) = (big.clone(), want.clone());
        threads.push(std::thread::spawn(move || {
            let f = fs::File::open(&big).unwrap();
            let mut rng = Rng::new(1000 + k);
            for _ in 0..60 {
                let len = rng.range(1, 2 << 20) as usize;
                let off = rng.below(BIG) as usize;
                let mut buf = vec![0u8; len];
                let n = read_full_at(&f, &mut buf, off as u64);
                let end = (off + len).min(BIG as usize);
                assert_eq!(n, end - off);
                assert!(buf[..n] == want[off..end], "thread {k}: bytes differ at {off}+{len}");
            }
        }));
    }
    for k in 0..2 {
        let (src, mp) = (src.clone(), mp.clone());
        threads.push(std::thread::spawn(move || {
            let a = scan_tree(&src.join("more"));
            let b = scan_tree(&mp.join("latest/more"));
            let d = diff_trees(&a, &b, &CompareOpts::full_no_links());
            assert!(d.is_empty(), "hashing thread {k}: {d:?}");
        }));
    }
    for th in threads {
        th.join().expect("a reader thread failed");
    }

    // Sequential read of the whole file (readahead path) hashes the same.
    let mut all = Vec::new();
    fs::File::open(&big).unwrap().read_to_end(&mut all).unwrap();
    assert!(all == *want, "sequential read differs");

    let o = m.stop_with(libc::SIGINT);
    o.expect_ok();
    assert!(!is_mounted(&mp));
}

fn read_full_at(f: &fs::File, buf: &mut [u8], mut off: u64) -> usize {
    let mut got = 0;
    while got < buf.len() {
        let n = f.read_at(&mut buf[got..], off).unwrap();
        if n == 0 {
            break;
        }
        got += n;
        off += n as u64;
    }
    got
}

trait NoLinks {
    fn full_no_links() -> Self;
}
impl NoLinks for CompareOpts {
    fn full_no_links() -> Self {
        CompareOpts { hard_links: false, ..CompareOpts::full() }
    }
}

#[test]
fn snapshots_latest_and_a_backup_made_while_mounted() {
    require_root();
    let t = scratch("mount-snaps");
    chmod(t.path(), 0o755);
    let src = t.path().join("src");
    write_file(&src.join("a.txt"), b"version one\n");
    write_file(&src.join("public.txt"), b"anyone may read\n");
    write_file(&src.join("secret.txt"), b"root only\n");
    chmod(&src.join("secret.txt"), 0o600);
    let ds = Ds::init(t.path().join("ds"));
    let first = ds.backup(&src, &[])["snapshot_id"].as_str().unwrap().to_string();
    let mp = t.path().join("mnt");
    // Through LIFEBOAT_DATASTORE, with --allow-other for the non-root reader.
    fs::create_dir_all(&mp).unwrap();
    let mut c = lb_cmd();
    c.env("LIFEBOAT_DATASTORE", &ds.path).args(["mount", "--allow-other"]).arg(&mp);
    let m = Mounted::start(c, &mp);
    assert_eq!(fs::read(mp.join("latest/a.txt")).unwrap(), b"version one\n");

    // A second backup while mounted shows up, and `latest` moves to it.
    std::thread::sleep(Duration::from_millis(1100)); // a different second in the name
    write_file(&src.join("a.txt"), b"version two, longer\n");
    let second = ds.backup(&src, &[])["snapshot_id"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(10), || snapshot_dirs(&mp).len() == 2), "new snapshot not shown: {:?}", snapshot_dirs(&mp));
    let names = snapshot_dirs(&mp);
    assert!(names[0].ends_with(&first[..8]) && names[1].ends_with(&second[..8]), "{names:?}");
    assert!(wait_until(Duration::from_secs(5), || fs::read_link(mp.join("latest")).ok() == Some(Path::new("snapshots").join(&names[1]))));
    assert_eq!(fs::read(mp.join("snapshots").join(&names[0]).join("a.txt")).unwrap(), b"version one\n");
    assert_eq!(fs::read(mp.join("snapshots").join(&names[1]).join("a.txt")).unwrap(), b"version two, longer\n");
    assert_eq!(fs::read(mp.join("latest/a.txt")).unwrap(), b"version two, longer\n");
    // By time prefix (unique) too.
    let by_time = &names[1][..19];
    assert_eq!(fs::read(mp.join("snapshots").join(by_time).join("a.txt")).unwrap(), b"version two, longer\n");

    // A non-root user reads what the modes allow, and no more.
    let cat = |p: &Path| Command::new("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"]).arg(p).output().unwrap();
    let o = cat(&mp.join("latest/public.txt"));
    assert!(o.status.success(), "nobody cannot read a 0644 file: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, b"anyone may read\n");
    let o = cat(&mp.join("latest/secret.txt"));
    assert!(!o.status.success(), "nobody read a 0600 root file");
    assert!(String::from_utf8_lossy(&o.stderr).contains("Permission denied"), "{}", String::from_utf8_lossy(&o.stderr));

    // SIGTERM with a file held open (a plain unmount fails with EBUSY):
    // still a clean exit and no mount left behind.
    let held = fs::File::open(mp.join("latest/a.txt")).unwrap();
    let o = m.stop_with(libc::SIGTERM);
    drop(held);
    o.expect_ok();
    assert!(!is_mounted(&mp), "still mounted\n{o}");
    assert!(o.stderr.contains("lazily"), "{o}");
}

#[test]
fn mount_bad_input() {
    require_root();
    let t = scratch("mount-bad");
    let ds = Ds::init(t.path().join("ds"));

    let missing = t.path().join("no/such/dir");
    let o = ds.run("mount", [&missing]);
    o.expect_code(1);
    assert!(o.stderr.contains(&*missing.to_string_lossy()) && o.stderr.contains("does not exist"), "{o}");

    let file = t.path().join("a-file");
    write_file(&file, b"x");
    let o = ds.run("mount", [&file]);
    o.expect_code(1);
    assert!(o.stderr.contains(&*file.to_string_lossy()) && o.stderr.contains("not a directory"), "{o}");

    let full = t.path().join("full");
    write_file(&full.join("something"), b"x");
    let o = ds.run("mount", [&full]);
    o.expect_code(1);
    assert!(o.stderr.contains(&*full.to_string_lossy()) && o.stderr.contains("not empty"), "{o}");
    assert!(!is_mounted(&full));

    let empty = t.path().join("mnt");
    fs::create_dir_all(&empty).unwrap();
    let o = lb(args!["mount", "--datastore", t.path().join("not-a-ds"), &empty]);
    o.expect_code(1);
    assert!(o.stderr.contains("not a Lifeboat datastore"), "{o}");
    let o = lb(args!["mount", &empty]);
    assert_eq!(o.code(), Some(2), "no datastore given\n{o}");
    assert!(!is_mounted(&empty));

    // A datastore without snapshots mounts: an empty snapshots/, no latest.
    let m = mount(&ds, &empty, &[]);
    assert!(snapshot_dirs(&empty).is_empty());
    assert!(fs::symlink_metadata(empty.join("latest")).is_err());
    assert!(fs::metadata(empty.join("snapshots/0123abcd")).is_err());
    m.stop_with(libc::SIGTERM).expect_ok();
    assert!(!is_mounted(&empty));
}
