//! Strict fidelity: a tree holding everything a Linux file system can
//! (non-UTF-8 names, hard links across directories, sparse files, FIFOs,
//! sockets, device nodes, dangling symlinks, mode 000, mtimes before 1970
//! and to the nanosecond, xattrs in user.*, trusted.* and security.*,
//! access and default ACLs, file capabilities, chattr +i/+a/+d, a path
//! longer than PATH_MAX) is backed up, restored and compared field by
//! field; also through `ls --json`/`--long`, the FUSE mount, a restore
//! run again over the first, a restore as an unprivileged user, and a
//! backup killed mid-run.
//!
//! The trees live on a loop-mounted ext4 image, so trusted.* xattrs, ACLs
//! and inode flags are supported whatever file system /tmp is. Runs as
//! root (CI is root).

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString};
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// An ext4 file system in an image file, mounted with `-o loop`. On drop
/// the immutable/append-only flags the test set are cleared (so nothing
/// on it is left undeletable) and it is unmounted.
struct Ext4 {
    mp: PathBuf,
}

impl Ext4 {
    fn new(dir: &Path, size_mib: u64) -> Ext4 {
        let img = dir.join("fs.img");
        fs::File::create(&img).unwrap().set_len(size_mib << 20).unwrap();
        run_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-b", "4096", "-I", "256"]).arg(&img));
        let mp = dir.join("mnt");
        fs::create_dir_all(&mp).unwrap();
        run_ok(Command::new("mount").args(["-o", "loop,user_xattr,acl"]).arg(&img).arg(&mp));
        Ext4 { mp }
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("chattr").args(["-R", "-f", "-i", "-a"]).arg(&self.mp).status();
        let ok = Command::new("umount").arg(&self.mp).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
        }
    }
}

#[track_caller]
fn run_ok(c: &mut Command) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(o.status.success(), "{c:?} failed: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

#[track_caller]
fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let n = CString::new(name).unwrap();
    let rc = unsafe { libc::lsetxattr(cpath(path).as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(rc, 0, "setxattr {name} on {}: {}", path.display(), std::io::Error::last_os_error());
}

/// `cap_net_raw+ep` as the kernel stores it (VFS_CAP_REVISION_2).
const CAP_NET_RAW_EP: [u8; 20] = [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const SELINUX_LABEL: &[u8] = b"system_u:object_r:admin_home_t:s0\0";
const SPARSE_LEN: u64 = 8 << 20;
/// Data runs of the sparse file: (offset, length); the rest are holes.
const SPARSE_DATA: [(u64, u64); 2] = [(2 << 20, 256 << 10), (6 << 20, 64 << 10)];
/// Directory levels and name length of the deep path: 20 x 241 bytes.
const DEEP_LEVELS: usize = 20;
const DEEP_NAME: usize = 240;

fn deep_name(i: usize) -> Vec<u8> {
    let mut n = format!("{i:02}-").into_bytes();
    n.resize(DEEP_NAME, b'd');
    n
}

/// Creates DEEP_LEVELS nested directories under `base` (relative to
/// descriptors: the whole path is too long for any path call) and a file
/// with an xattr at the bottom. Returns the file's path length.
fn make_deep(base: &Path) -> usize {
    let mut dir = OwnedFd::from(fs::File::open(base).unwrap());
    let mut len = base.as_os_str().len();
    for i in 0..DEEP_LEVELS {
        let name = CString::new(deep_name(i)).unwrap();
        assert_eq!(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o750) }, 0, "{}", std::io::Error::last_os_error());
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        assert!(fd >= 0);
        dir = unsafe { OwnedFd::from_raw_fd(fd) };
        len += 1 + DEEP_NAME;
    }
    let name = c"bottom.txt";
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o640) };
    assert!(fd >= 0);
    let mut f = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::Write::write_all(&mut f, b"more than PATH_MAX bytes down\n").unwrap();
    let (n, v) = (c"user.deep", b"bottom");
    assert_eq!(unsafe { libc::fsetxattr(f.as_raw_fd(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) }, 0);
    let ts = libc::timespec { tv_sec: -123_456_789, tv_nsec: 987_654_321 };
    assert_eq!(unsafe { libc::futimens(f.as_raw_fd(), [ts, ts].as_ptr()) }, 0);
    len + 1 + name.to_bytes().len()
}

fn mknod(path: &Path, mode: u32, dev: libc::dev_t) {
    let rc = unsafe { libc::mknod(cpath(path).as_ptr(), mode, dev) };
    assert_eq!(rc, 0, "mknod {}: {}", path.display(), std::io::Error::last_os_error());
}

/// The tree. Times go on after everything inside a directory exists,
/// flags last (an immutable entry takes no new times).
fn build(src: &Path) {
    // Names that are not UTF-8, a directory among them.
    write_file(&src.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")), b"latin-1\n");
    write_file(&src.join(std::ffi::OsStr::from_bytes(b"\xff\xfe-dir")).join(std::ffi::OsStr::from_bytes(b"\x80inner")), b"inner\n");

    // Hard links across directories (a group of three).
    write_file(&src.join("hl/a/one"), &Rng::new(1).bytes(100_000));
    fs::create_dir_all(src.join("hl/b")).unwrap();
    fs::hard_link(src.join("hl/a/one"), src.join("hl/b/two")).unwrap();
    fs::hard_link(src.join("hl/a/one"), src.join("three")).unwrap();

    // A sparse file: holes at the start, between the runs, at the end.
    let f = fs::File::create(src.join("sparse.img")).unwrap();
    f.set_len(SPARSE_LEN).unwrap();
    for (i, (off, len)) in SPARSE_DATA.iter().enumerate() {
        std::os::unix::fs::FileExt::write_all_at(&f, &Rng::new(10 + i as u64).bytes(*len as usize), *off).unwrap();
    }
    drop(f);

    // Special files.
    fs::create_dir_all(src.join("special")).unwrap();
    let fifo = cpath(&src.join("special/fifo"));
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    drop(std::os::unix::net::UnixListener::bind(src.join("special/socket")).unwrap());
    mknod(&src.join("special/char"), libc::S_IFCHR | 0o620, libc::makedev(1, 3));
    mknod(&src.join("special/block"), libc::S_IFBLK | 0o600, libc::makedev(7, 200));
    std::os::unix::fs::symlink("no/such/target", src.join("special/dangling")).unwrap();
    set_xattr(&src.join("special/dangling"), "trusted.on-a-link", b"link attr");
    // user.* is for files and directories only.
    set_xattr(&src.join("special/fifo"), "trusted.on-a-fifo", b"fifo attr");

    // Modes and owners.
    write_file(&src.join("modes/nothing"), b"mode 000\n");
    chmod(&src.join("modes/nothing"), 0o000);
    write_file(&src.join("modes/locked/inside"), b"in a mode 000 directory\n");
    write_file(&src.join("modes/owned"), b"owned\n");
    lchown(&src.join("modes/owned"), 1234, 5678);
    write_file(&src.join("modes/suid"), b"setuid\n");
    chmod(&src.join("modes/suid"), 0o4755);

    // Extended attributes in every namespace, capabilities, a label.
    write_file(&src.join("xattrs/file"), b"with attributes\n");
    set_xattr(&src.join("xattrs/file"), "user.comment", b"hello");
    set_xattr(&src.join("xattrs/file"), "user.binary", &[0, 1, 2, 0xff, 0]);
    set_xattr(&src.join("xattrs/file"), "user.empty", b"");
    set_xattr(&src.join("xattrs/file"), "trusted.secret", b"root only");
    set_xattr(&src.join("xattrs/file"), "security.selinux", SELINUX_LABEL);
    set_xattr(&src.join("xattrs"), "trusted.dir", b"on a directory");
    write_file(&src.join("xattrs/ping"), b"\x7fELF pretend\n");
    chmod(&src.join("xattrs/ping"), 0o755);
    lchown(&src.join("xattrs/ping"), 0, 1234);
    set_xattr(&src.join("xattrs/ping"), "security.capability", &CAP_NET_RAW_EP);
    set_xattr(&src.join("xattrs/ping"), "user.big", &Rng::new(3).bytes(2000));

    // Access and default ACLs.
    write_file(&src.join("acl/file"), b"acl\n");
    run_ok(Command::new("setfacl").args(["-m", "u:1234:rw,g:5678:r,m::rw"]).arg(src.join("acl/file")));
    fs::create_dir_all(src.join("acl/dir")).unwrap();
    run_ok(Command::new("setfacl").args(["-m", "u:1234:rwx"]).arg(src.join("acl/dir")));
    run_ok(Command::new("setfacl").args(["-d", "-m", "u:1234:rx,g::r"]).arg(src.join("acl/dir")));
    // Created under the default ACL: inherits an access ACL.
    write_file(&src.join("acl/dir/inherited"), b"inherits\n");

    // Inode flags: targets of chattr below, hard-linked one included.
    write_file(&src.join("flags/immutable"), b"immutable\n");
    fs::hard_link(src.join("flags/immutable"), src.join("hl/b/immutable-link")).unwrap();
    write_file(&src.join("flags/append"), b"append only\n");
    write_file(&src.join("flags/nodump"), b"not for dump\n");
    write_file(&src.join("flags/frozen/child"), b"in an immutable directory\n");

    // Times: before 1970, to the nanosecond, deepest first.
    fix_times(src, 1_700_000_000);
    set_mtime(&src.join("modes/nothing"), -86_400 * 365 * 20, 1);
    set_mtime(&src.join("xattrs/file"), 1_234_567_890, 999_999_999);
    set_mtime(&src.join("special/dangling"), -1, 500_000_000);
    set_mtime(&src.join("sparse.img"), 1_600_000_000, 123_456_789);
    chmod(&src.join("modes/locked"), 0o000);
    set_mtime(&src.join("modes/locked"), 1_500_000_000, 42);
    set_mtime(&src.join("modes"), 1_500_000_001, 43);
    // After fix_times, which walks by path and could not go this deep.
    let deep_len = make_deep(src);
    assert!(deep_len > libc::PATH_MAX as usize, "deep path is {deep_len} bytes");

    run_ok(Command::new("chattr").arg("+i").arg(src.join("flags/immutable")).arg(src.join("flags/frozen")));
    run_ok(Command::new("chattr").arg("+a").arg(src.join("flags/append")));
    run_ok(Command::new("chattr").arg("+d").arg(src.join("flags/nodump")));

    // The source directory's own metadata (a share's root and its ACL):
    // a restore of the whole snapshot gives it to the target.
    set_xattr(src, "user.share", b"root of the share");
    run_ok(Command::new("setfacl").args(["-m", "u:1234:rwx,g:5678:rx", "-d", "-m", "u:1234:rwx"]).arg(src));
    chmod(src, 0o2770);
    set_mtime(src, 1_400_000_000, 7);
}

/// Everything compared about one entry.
#[derive(Clone, Debug, PartialEq)]
struct Info {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    rdev: u64,
    nlink: u64,
    content: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    flags: u32,
}

/// What is compared only loosely or by group.
struct Extra {
    ino: u64,
    allocated: u64,
    /// Data runs (SEEK_DATA/SEEK_HOLE) of a regular file.
    data_runs: Vec<(u64, u64)>,
}

/// The user's chattr flags (the rest describe the file system's layout).
const USER_FLAGS: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x400 | 0x4000 | 0x8000 | 0x10000 | 0x20000 | 0x80_0000;

fn xattrs_of(list: impl Fn(*mut libc::c_char, usize) -> isize, get: impl Fn(&CStr, *mut libc::c_void, usize) -> isize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 65536];
    let n = list(names.as_mut_ptr().cast(), names.len());
    assert!(n >= 0, "listxattr: {}", std::io::Error::last_os_error());
    let mut out = Vec::new();
    for name in names[..n as usize].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let c = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        let m = get(&c, v.as_mut_ptr().cast(), v.len());
        assert!(m >= 0, "getxattr {}: {}", String::from_utf8_lossy(name), std::io::Error::last_os_error());
        v.truncate(m as usize);
        out.push((name.to_vec(), v));
    }
    out.sort();
    out
}

fn data_runs(fd: i32, size: u64) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    let mut pos = 0i64;
    while (pos as u64) < size {
        let start = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if start < 0 {
            break; // ENXIO: only a hole to the end
        }
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        runs.push((start as u64, end as u64));
        pos = end;
    }
    runs
}

/// Every entry below `root` by relative path (bytes), walked by
/// descriptor so the deep path is read like any other.
/// The root itself is the entry ".".
fn scan(root: &Path) -> BTreeMap<Vec<u8>, (Info, Extra)> {
    let mut out = BTreeMap::new();
    let parent = root.parent().expect("a directory with a parent");
    let fd = OwnedFd::from(fs::File::open(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display())));
    entry(&fd, root.file_name().unwrap().as_bytes(), b".".to_vec(), Vec::new(), &mut out);
    out
}

fn walk(dir: &OwnedFd, rel: Vec<u8>, out: &mut BTreeMap<Vec<u8>, (Info, Extra)>) {
    let mut names = Vec::new();
    let proc_dir = format!("/proc/self/fd/{}", dir.as_raw_fd());
    for e in fs::read_dir(&proc_dir).unwrap() {
        names.push(e.unwrap().file_name().as_bytes().to_vec());
    }
    names.sort();
    for name in names {
        let path = if rel.is_empty() { name.clone() } else { [rel.as_slice(), b"/", &name].concat() };
        entry(dir, &name, path.clone(), path, out);
    }
}

/// Entry `name` of `dir`, recorded as `path`; a directory's entries go
/// below `children`.
fn entry(dir: &OwnedFd, name: &[u8], path: Vec<u8>, children: Vec<u8>, out: &mut BTreeMap<Vec<u8>, (Info, Extra)>) {
    let proc_dir = format!("/proc/self/fd/{}", dir.as_raw_fd());
    {
        let name = name.to_vec();
        let cname = CString::new(name.clone()).unwrap();
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstatat(dir.as_raw_fd(), cname.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) }, 0);
        let kind = st.st_mode & libc::S_IFMT;
        let mut info = Info {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            size: if kind == libc::S_IFREG { st.st_size as u64 } else { 0 },
            rdev: st.st_rdev,
            nlink: if kind == libc::S_IFDIR { 0 } else { st.st_nlink },
            content: None,
            link: None,
            xattrs: Vec::new(),
            flags: 0,
        };
        let mut extra = Extra { ino: st.st_ino, allocated: st.st_blocks as u64 * 512, data_runs: Vec::new() };
        let opened = match kind {
            libc::S_IFREG | libc::S_IFDIR => {
                let fd = unsafe { libc::openat(dir.as_raw_fd(), cname.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW) };
                assert!(fd >= 0, "open {}: {}", String::from_utf8_lossy(&path), std::io::Error::last_os_error());
                Some(unsafe { OwnedFd::from_raw_fd(fd) })
            }
            _ => None,
        };
        match &opened {
            Some(fd) => {
                let raw = fd.as_raw_fd();
                info.xattrs = xattrs_of(|b, n| unsafe { libc::flistxattr(raw, b, n) }, |c, b, n| unsafe { libc::fgetxattr(raw, c.as_ptr(), b, n) });
                let mut flags: libc::c_int = 0;
                // FS_IOC_GETFLAGS; a FUSE mount has none (ENOTTY).
                if unsafe { libc::ioctl(raw, 0x8008_6601, &mut flags) } == 0 {
                    info.flags = flags as u32 & USER_FLAGS;
                }
            }
            None => {
                let p = CString::new([proc_dir.as_bytes(), b"/", &name].concat()).unwrap();
                info.xattrs = xattrs_of(|b, n| unsafe { libc::llistxattr(p.as_ptr(), b, n) }, |c, b, n| unsafe { libc::lgetxattr(p.as_ptr(), c.as_ptr(), b, n) });
            }
        }
        match kind {
            libc::S_IFREG => {
                let mut f = fs::File::from(opened.unwrap());
                let mut data = Vec::new();
                f.read_to_end(&mut data).unwrap();
                extra.data_runs = data_runs(f.as_raw_fd(), info.size);
                info.content = Some(data);
            }
            libc::S_IFLNK => {
                let mut buf = vec![0u8; 4096];
                let n = unsafe { libc::readlinkat(dir.as_raw_fd(), cname.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
                buf.truncate(n as usize);
                info.link = Some(buf);
            }
            libc::S_IFDIR => walk(opened.as_ref().unwrap(), children, out),
            _ => {}
        }
        out.insert(path, (info, extra));
    }
}

fn show(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(p);
    if s.len() > 120 {
        format!("{}...{}", &s[..40], &s[s.len() - 60..])
    } else {
        s.into_owned()
    }
}

/// Hard-link groups: the sets of paths that share an inode.
fn link_groups(t: &BTreeMap<Vec<u8>, (Info, Extra)>) -> BTreeSet<Vec<Vec<u8>>> {
    let mut by_ino: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for (p, (i, e)) in t {
        if i.mode & libc::S_IFMT != libc::S_IFDIR && i.nlink > 1 {
            by_ino.entry(e.ino).or_default().push(p.clone());
        }
    }
    by_ino.into_values().collect()
}

/// Strict comparison of two scans (`what` names the copy in messages).
#[track_caller]
fn assert_identical(src: &BTreeMap<Vec<u8>, (Info, Extra)>, got: &BTreeMap<Vec<u8>, (Info, Extra)>, what: &str) {
    let a: Vec<String> = src.keys().map(|k| show(k)).collect();
    let b: Vec<String> = got.keys().map(|k| show(k)).collect();
    assert_eq!(a, b, "{what}: different entries");
    let mut diffs = Vec::new();
    for (p, (si, se)) in src {
        let (gi, ge) = &got[p];
        if si != gi {
            diffs.push(format!("{}:\n  source   {si:?}\n  {what} {gi:?}", show(p)));
        }
        if si.mode & libc::S_IFMT == libc::S_IFREG {
            // Holes kept: no more allocated than the source plus the
            // restore's 64 KiB hole granularity at the runs' edges.
            if ge.allocated > se.allocated + 256 * 1024 {
                diffs.push(format!("{}: {} bytes allocated, source {}", show(p), ge.allocated, se.allocated));
            }
        }
    }
    assert!(diffs.is_empty(), "{what} differs from the source:\n{}", diffs.join("\n"));
    assert_eq!(link_groups(src), link_groups(got), "{what}: hard-link groups");
}

/// The sparse file's holes are holes in the copy: each hole of the source
/// is a hole there but for 128 KiB at its edges.
#[track_caller]
fn assert_holes_kept(t: &BTreeMap<Vec<u8>, (Info, Extra)>, what: &str) {
    let (_, e) = &t[b"sparse.img".as_slice()];
    let mut holes = Vec::new();
    let mut pos = 0;
    for &(off, len) in &SPARSE_DATA {
        holes.push((pos, off));
        pos = off + len;
    }
    holes.push((pos, SPARSE_LEN));
    for (start, end) in holes {
        let (lo, hi) = (start + (128 << 10), end.saturating_sub(128 << 10));
        for &(ds, de) in &e.data_runs {
            assert!(de <= lo || ds >= hi, "{what}: sparse.img has data {ds}..{de} inside the hole {start}..{end}; runs {:?}", e.data_runs);
        }
    }
    assert!(e.allocated < 1 << 20, "{what}: sparse.img allocates {} bytes", e.allocated);
}

fn xattr_of<'a>(t: &'a BTreeMap<Vec<u8>, (Info, Extra)>, path: &str, name: &str) -> Option<&'a [u8]> {
    t[path.as_bytes()].0.xattrs.iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v.as_slice())
}

fn json_lines(s: &str) -> BTreeMap<String, Value> {
    s.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str::<Value>(l).unwrap()).map(|v| (v["path"].as_str().unwrap().to_string(), v)).collect()
}

#[test]
fn everything_a_file_carries_comes_back() {
    require_root();
    let t = scratch("fidelity");
    let fsys = Ext4::new(t.path(), 256);
    let src = fsys.mp.join("src");
    fs::create_dir(&src).unwrap();
    build(&src);
    let want = scan(&src);

    // The source really has what the test is about.
    assert!(want.len() > 30 + DEEP_LEVELS, "{} entries", want.len());
    assert_eq!(want[b"flags/immutable".as_slice()].0.flags & 0x10, 0x10, "chattr +i did not take");
    assert_eq!(want[b"flags/append".as_slice()].0.flags & 0x20, 0x20);
    assert_eq!(want[b"flags/nodump".as_slice()].0.flags & 0x40, 0x40);
    assert_eq!(xattr_of(&want, "xattrs/ping", "security.capability"), Some(&CAP_NET_RAW_EP[..]));
    assert!(xattr_of(&want, "acl/dir", "system.posix_acl_default").is_some());
    assert!(xattr_of(&want, "acl/dir/inherited", "system.posix_acl_access").is_some());
    assert!(want[b"sparse.img".as_slice()].1.allocated < 1 << 20, "the source is not sparse");
    assert_eq!(link_groups(&want).len(), 2);
    let deep: Vec<&Vec<u8>> = want.keys().filter(|k| k.ends_with(b"bottom.txt")).collect();
    assert_eq!(deep.len(), 1);
    assert!(deep[0].len() > libc::PATH_MAX as usize);

    let ds = Ds::init(t.path().join("ds"));
    let b = ds.backup(&src, &[]);
    assert_eq!(sum(&b, "warnings"), 0, "{b:#}");
    assert!(b["warnings"].as_array().unwrap().is_empty(), "{b:#}");

    // Restore: identical in every compared field.
    let dst = fsys.mp.join("restored");
    ds.restore("latest", &dst, &[]).expect_ok();
    let got = scan(&dst);
    assert_identical(&want, &got, "restore");
    assert_holes_kept(&got, "restore");
    // Spot checks that do not depend on the comparison above.
    assert_eq!(xattr_of(&got, "xattrs/ping", "security.capability"), Some(&CAP_NET_RAW_EP[..]));
    assert_eq!(xattr_of(&got, "xattrs/file", "trusted.secret"), Some(&b"root only"[..]));
    assert_eq!(xattr_of(&got, "special/dangling", "trusted.on-a-link"), Some(&b"link attr"[..]));
    assert_eq!(xattr_of(&got, "acl/dir", "system.posix_acl_default"), xattr_of(&want, "acl/dir", "system.posix_acl_default"));
    assert_eq!(xattr_of(&got, ".", "user.share"), Some(&b"root of the share"[..]));
    assert!(xattr_of(&got, ".", "system.posix_acl_default").is_some(), "the target lacks the source directory's default ACL");
    assert_eq!((got[b".".as_slice()].0.mode & 0o7777, got[b".".as_slice()].0.mtime), (0o2770, (1_400_000_000, 7)));
    assert_eq!(got[b"flags/immutable".as_slice()].0.flags & 0x10, 0x10);
    assert_eq!(got[b"flags/frozen".as_slice()].0.flags & 0x10, 0x10);
    assert_eq!(got[b"flags/append".as_slice()].0.flags & 0x20, 0x20);
    assert_eq!(got[b"xattrs/file".as_slice()].0.mtime, (1_234_567_890, 999_999_999));
    let bottom = &got[deep[0]].0;
    assert_eq!(bottom.xattrs, vec![(b"user.deep".to_vec(), b"bottom".to_vec())]);
    assert_eq!(bottom.mtime, (-123_456_789, 987_654_321));
    assert_eq!(got[b"special/socket".as_slice()].0.mode & libc::S_IFMT, libc::S_IFSOCK);
    assert_eq!(got[b"special/block".as_slice()].0.rdev, libc::makedev(7, 200));

    // Again over the first restore (immutable and append-only files and an
    // immutable directory in the way): the same result, no warnings.
    let o = ds.restore("latest", &dst, &[]);
    o.expect_ok();
    assert!(!o.stderr.contains("warning"), "{o}");
    assert_identical(&want, &scan(&dst), "second restore");

    // An include below the deep path restores just that branch.
    let part = fsys.mp.join("partial");
    let inc: String = (0..DEEP_LEVELS).map(|i| String::from_utf8(deep_name(i)).unwrap()).collect::<Vec<_>>().join("/") + "/bottom.txt";
    ds.restore("latest", &part, &["--include", &inc]).expect_ok();
    let p = scan(&part);
    assert_eq!(p.len(), DEEP_LEVELS + 2, "the target, the deep chain and bottom.txt");
    let (pi, _) = p.iter().find(|(k, _)| k.ends_with(b"bottom.txt")).unwrap().1;
    assert_eq!(pi, &want[deep[0]].0);

    // ls --json and --long show xattrs, ACLs and flags.
    let o = ds.run("ls", ["latest", "/", "-r", "--json"]);
    o.expect_ok();
    let ls = json_lines(&o.stdout);
    assert_eq!(ls["/flags/immutable"]["flags"], "i");
    assert_eq!(ls["/flags/append"]["flags"], "a");
    assert_eq!(ls["/flags/nodump"]["flags"], "d");
    assert_eq!(ls["/flags/frozen"]["flags"], "i");
    assert_eq!(ls["/acl/file"]["acl_access"], "user::rw-,user:1234:rw-,group::r--,group:5678:r--,mask::rw-,other::r--");
    assert_eq!(ls["/acl/dir"]["acl_default"], "user::rwx,user:1234:r-x,group::r--,mask::r-x,other::r-x");
    assert_eq!(ls["/modes/nothing"]["mtime_ns"], Value::from(-86_400i64 * 365 * 20 * 1_000_000_000 + 1));
    let xs = ls["/xattrs/file"]["xattrs"].as_array().unwrap();
    let names: Vec<&str> = xs.iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["security.selinux", "trusted.secret", "user.binary", "user.comment", "user.empty"]);
    assert_eq!(xs[3]["value"], "hello");
    assert_eq!(xs[2]["hex"], "000102ff00");
    assert_eq!(xs[0]["value"], "system_u:object_r:admin_home_t:s0");
    let cap = ls["/xattrs/ping"]["xattrs"].as_array().unwrap().iter().find(|x| x["name"] == "security.capability").cloned().unwrap();
    assert_eq!(cap["hex"], "0100000200200000000000000000000000000000");
    assert!(ls["/sparse.img"]["xattrs"].as_array().unwrap().is_empty());
    let o = ds.run("ls", ["latest", "/xattrs", "--long"]);
    o.expect_ok();
    assert!(o.stdout.contains("xattr user.comment=\"hello\""), "{o}");
    assert!(o.stdout.contains("xattr security.capability=0x0100000200200000000000000000000000000000"), "{o}");
    assert!(o.stdout.contains("mtime: 2009-02-13 23:31:30.999999999"), "{o}");
    let o = ds.run("ls", ["latest", "/flags", "-l"]);
    assert!(o.stdout.contains("    flags: i\n") && o.stdout.contains("    flags: a\n"), "{o}");

    // --exclude-nodump leaves the nodump file out (and says nothing: it
    // was asked for).
    let b2 = ds.backup(&src, &["--exclude-nodump"]);
    assert_eq!(sum(&b2, "warnings"), 0, "{b2:#}");
    let o = ds.run("ls", ["latest", "/flags"]);
    assert!(!o.stdout.contains("/flags/nodump") && o.stdout.contains("/flags/append"), "{o}");
    let first = b["snapshot_id"].as_str().unwrap();

    // Through the FUSE mount: the same xattrs (getxattr/listxattr), content
    // and metadata (no inode flags: FUSE has no ioctl for them).
    let mp = t.path().join("fuse");
    fs::create_dir_all(&mp).unwrap();
    let mut c = ds.cmd("mount");
    c.arg(&mp);
    let _m = Mounted::start(c, &mp);
    let snap_dir =
        fs::read_dir(mp.join("snapshots")).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_string_lossy().ends_with(&first[..8])).expect("the first snapshot in the mount");
    let seen = scan(&snap_dir);
    let mut diffs = Vec::new();
    for (p, (si, _)) in &want {
        match seen.get(p) {
            None => diffs.push(format!("{} missing", show(p))),
            Some((gi, _)) => {
                if si.xattrs != gi.xattrs || si.content != gi.content || si.mode != gi.mode || si.mtime != gi.mtime || si.link != gi.link {
                    diffs.push(format!("{}:\n  source {si:?}\n  mount  {gi:?}", show(p)));
                }
            }
        }
    }
    assert!(diffs.is_empty(), "the mount differs:\n{}", diffs.join("\n"));
    let o = run_ok(Command::new("getfattr").args(["--absolute-names", "-d", "-m", "-", "-e", "text"]).arg(snap_dir.join("xattrs/file")));
    assert!(o.contains("user.comment=\"hello\"") && o.contains("trusted.secret=\"root only\""), "{o}");
    let o = run_ok(Command::new("getfacl").args(["--absolute-names", "--numeric"]).arg(snap_dir.join("acl/dir")));
    assert!(o.contains("user:1234:rwx") && o.contains("default:user:1234:r-x"), "{o}");
}

/// A restore that cannot set everything (an unprivileged user: no
/// trusted.* xattrs, capabilities, immutable flags or device nodes) says
/// what it could not set and exits 3, after restoring the rest.
#[test]
fn an_unprivileged_restore_names_what_it_could_not_set() {
    require_root();
    let t = scratch("fidelity-user");
    let fsys = Ext4::new(t.path(), 128);
    let src = fsys.mp.join("src");
    fs::create_dir(&src).unwrap();
    build(&src);
    let ds = Ds::init(t.path().join("ds"));
    ds.backup(&src, &[]);
    // The datastore and a target the user may use.
    chmod(t.path(), 0o755);
    run_ok(Command::new("chmod").args(["-R", "a+rwX"]).arg(&ds.path));
    let dst = fsys.mp.join("user-restore");
    fs::create_dir(&dst).unwrap();
    lchown(&dst, 65534, 65534);
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(bin()).arg("restore").arg("--datastore").arg(&ds.path).arg("latest").arg(&dst);
    let o = run_cmd(c);
    assert_eq!(o.code(), Some(3), "{o}");
    for what in [
        "xattrs/file: cannot set extended attribute trusted.secret",
        "xattrs/ping: cannot set extended attribute security.capability",
        "flags/frozen: cannot set inode flags i",
        "special/char: cannot create special file",
    ] {
        assert!(o.stderr.contains(what), "no warning '{what}'\n{o}");
    }
    // flags/immutable and hl/b/immutable-link are one inode: the warning
    // names whichever of its names the restore made first.
    assert!(o.stderr.contains("flags/immutable: cannot set inode flags i") || o.stderr.contains("hl/b/immutable-link: cannot set inode flags i"), "no warning for the immutable file\n{o}");
    // What the user may set is set.
    let got = scan(&dst);
    assert_eq!(xattr_of(&got, "xattrs/file", "user.comment"), Some(&b"hello"[..]));
    assert!(xattr_of(&got, "acl/dir", "system.posix_acl_default").is_some());
    assert_eq!(got[b"flags/nodump".as_slice()].0.flags & 0x40, 0x40, "nodump needs no privilege");
    assert_eq!(got[b"xattrs/file".as_slice()].0.content.as_deref(), Some(&b"with attributes\n"[..]));
}

/// `--one-file-system` keeps a mount point below the source as an empty
/// directory; without it the mounted tree is backed up.
#[test]
fn one_file_system_stops_at_mount_points() {
    require_root();
    let t = scratch("fidelity-xdev");
    let src = t.path().join("src");
    write_file(&src.join("top.txt"), b"top\n");
    let inner = Tmpfs::mount(&src.join("mnt"), "4m");
    write_file(&inner.dir.join("on-tmpfs.txt"), b"another file system\n");
    let ds = Ds::init(t.path().join("ds"));

    let b = ds.backup(&src, &["--one-file-system"]);
    assert_eq!(sum(&b, "warnings"), 0, "{b:#}");
    let o = ds.run("ls", ["latest", "/", "-r"]);
    assert!(o.stdout.contains("/top.txt") && o.stdout.contains("/mnt\n"), "{o}");
    assert!(!o.stdout.contains("on-tmpfs.txt"), "descended into the mount point\n{o}");

    ds.backup(&src, &[]);
    let o = ds.run("ls", ["latest", "/", "-r"]);
    assert!(o.stdout.contains("/mnt/on-tmpfs.txt"), "{o}");
}

/// What cannot be read is a warning in the CLI output, the JSON summary
/// and the exit code, never a silent skip.
#[test]
fn what_cannot_be_backed_up_is_a_warning() {
    require_root();
    let t = scratch("fidelity-warn");
    let src = t.path().join("src");
    write_file(&src.join("ok.txt"), b"fine\n");
    fs::create_dir_all(src.join("gone")).unwrap();
    // A directory the backup cannot enter: an unprivileged run over a
    // mode-000 directory (root reads everything).
    write_file(&src.join("closed/inside.txt"), b"unreadable\n");
    run_ok(Command::new("chmod").args(["-R", "a+rwX"]).arg(t.path()));
    chmod(&src.join("closed"), 0o000);
    let ds = Ds::init(t.path().join("ds"));
    run_ok(Command::new("chmod").args(["-R", "a+rwX"]).arg(&ds.path));
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(bin()).arg("backup").arg("--json").arg("--datastore").arg(&ds.path).arg(&src);
    let o = run_cmd(c);
    assert_eq!(o.code(), Some(3), "{o}");
    let v = o.json();
    assert_eq!(sum(&v, "warnings"), 1, "{v:#}");
    let w = v["warnings"][0].as_str().unwrap();
    assert!(w.contains("closed") && w.contains("permission denied"), "{w}");
}

/// A backup of the fidelity tree killed mid-run leaves the datastore
/// clean, and the next backup restores identical.
#[test]
fn killed_backup_of_the_tree_leaves_check_clean() {
    require_root();
    let t = scratch("fidelity-crash");
    let fsys = Ext4::new(t.path(), 128);
    let src = fsys.mp.join("src");
    fs::create_dir(&src).unwrap();
    build(&src);
    let ds = Ds::init(t.path().join("ds"));
    let mut c = ds.cmd("backup");
    c.env("LIFEBOAT_FAILPOINTS", "index-commit=abort@1").arg(&src);
    let o = run_cmd(c);
    assert_eq!(o.code(), Some(137), "the failpoint did not kill the backup\n{o}");
    assert!(ds.snapshot_ids().is_empty());
    let check = ds.check(true);
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(!check.stdout.contains("damaged:"), "{check}");
    ds.backup(&src, &[]);
    ds.assert_check_clean();
    let dst = fsys.mp.join("restored");
    ds.restore("latest", &dst, &[]).expect_ok();
    assert_identical(&scan(&src), &scan(&dst), "restore after a crash");
}

/// Whether `mp` is a mount point now (per /proc/self/mountinfo).
fn is_mounted(mp: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(mp.to_string_lossy().as_ref()))
}

/// A running `lifeboat mount`, unmounted and stopped on drop.
struct Mounted {
    mp: PathBuf,
    _child: ChildGuard,
}

impl Mounted {
    fn start(cmd: Command, mp: &Path) -> Mounted {
        let mut child = ChildGuard::spawn(cmd);
        let mp = fs::canonicalize(mp).unwrap();
        let up = wait_until(Duration::from_secs(20), || !child.running() || (is_mounted(&mp) && mp.join("snapshots").is_dir()));
        assert!(child.running(), "lifeboat mount exited\n{}", child.wait());
        assert!(up, "{} not mounted after 20 s", mp.display());
        Mounted { mp, _child: child }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.mp) && !Command::new("fusermount3").arg("-u").arg("-z").arg(&self.mp).status().is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
        }
    }
}
