//! Shared helpers for the end-to-end tests: finding and running the
//! `lifeboat` binary, deterministic test trees, tree comparison, and Drop
//! guards for mounts and child processes.
#![allow(dead_code)]

pub mod appliance;
pub mod daemon;
pub mod guest;
pub mod loopdev;
pub mod tmux;

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- binary

/// The workspace root (the parent of this crate's directory).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `LIFEBOAT_BIN`, else target/release/lifeboat, else target/debug/lifeboat.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LIFEBOAT_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "LIFEBOAT_BIN={} does not exist", p.display());
        return p;
    }
    for profile in ["release", "debug"] {
        let p = workspace().join("target").join(profile).join("lifeboat");
        if p.is_file() {
            return p;
        }
    }
    panic!("lifeboat binary not found: set LIFEBOAT_BIN or run `cargo build --release -p lifeboat`");
}

/// A `lifeboat` command with a clean environment (no datastore or
/// failpoints inherited from the caller).
pub fn lb_cmd() -> Command {
    let mut c = Command::new(bin());
    c.env_remove("LIFEBOAT_DATASTORE").env_remove("LIFEBOAT_FAILPOINTS").env_remove("LIFEBOAT_LOG");
    for k in ["LIFEBOAT_PASSWORD", "LIFEBOAT_PASSWORD_FILE", "LIFEBOAT_KEY_FILE", "LIFEBOAT_NEW_PASSWORD"] {
        c.env_remove(k);
    }
    c.stdin(Stdio::null());
    c
}

#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub args: String,
}

impl Out {
    /// The exit code, or None when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn signal(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.status.signal()
    }
    pub fn ok(&self) -> bool {
        self.status.success()
    }
    /// Panics with the full output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "expected exit {code}\n{self}");
        self
    }
    #[track_caller]
    pub fn expect_ok(&self) -> &Self {
        self.expect_code(0)
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{self}"))
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "$ lifeboat {}\n=> {:?}\n--- stdout\n{}\n--- stderr\n{}", self.args, self.status, self.stdout, self.stderr)
    }
}

fn args_string(c: &Command) -> String {
    c.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}

/// Runs a prepared command to completion and captures its output.
pub fn run_cmd(mut c: Command) -> Out {
    let args = args_string(&c);
    let o = c.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", bin().display()));
    Out { status: o.status, stdout: String::from_utf8_lossy(&o.stdout).into_owned(), stderr: String::from_utf8_lossy(&o.stderr).into_owned(), args }
}

/// `lifeboat ARGS...`
pub fn lb<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = lb_cmd();
    c.args(args);
    run_cmd(c)
}

/// Builds an argument list from mixed strings and paths.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => {{
        let v: Vec<std::ffi::OsString> = vec![$(std::ffi::OsString::from($a)),*];
        v
    }};
}

/// A child process that is SIGKILLed and reaped on drop unless waited for.
pub struct ChildGuard {
    pub child: Option<Child>,
    pub args: String,
}

impl ChildGuard {
    pub fn spawn(mut c: Command) -> Self {
        let args = args_string(&c);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = c.spawn().unwrap_or_else(|e| panic!("cannot spawn lifeboat {args}: {e}"));
        ChildGuard { child: Some(child), args }
    }
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }
    /// Sends `sig` unless the child has already been reaped (its pid
    /// could belong to another process by then).
    pub fn signal(&mut self, sig: i32) {
        if self.running() {
            unsafe {
                libc::kill(self.pid(), sig);
            }
        }
    }
    /// True while the process has not exited (it may be a zombie).
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().unwrap().try_wait(), Ok(None))
    }
    pub fn wait(mut self) -> Out {
        let child = self.child.take().unwrap();
        let o = child.wait_with_output().expect("wait for lifeboat");
        Out { status: o.status, stdout: String::from_utf8_lossy(&o.stdout).into_owned(), stderr: String::from_utf8_lossy(&o.stderr).into_owned(), args: self.args.clone() }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ------------------------------------------------------------ datastore

pub struct Ds {
    pub path: PathBuf,
    /// Passed as LIFEBOAT_PASSWORD to every command (encrypted datastores).
    pub password: Option<String>,
}

impl Ds {
    /// `lifeboat datastore init PATH`, asserted to succeed.
    pub fn init(path: impl AsRef<Path>) -> Ds {
        let path = path.as_ref().to_path_buf();
        lb(args!["datastore", "init", &path]).expect_ok();
        assert!(path.join("config.json").is_file());
        Ds { path, password: None }
    }

    /// A datastore at `path` (not created).
    pub fn at(path: impl AsRef<Path>) -> Ds {
        Ds { path: path.as_ref().to_path_buf(), password: None }
    }

    /// `lifeboat datastore init --encrypt PATH` with passphrase `pw`; every
    /// later command gets it as LIFEBOAT_PASSWORD.
    pub fn init_encrypted(path: impl AsRef<Path>, pw: &str) -> Ds {
        let path = path.as_ref().to_path_buf();
        let mut c = lb_cmd();
        c.args(args!["datastore", "init", "--encrypt", &path]).env("LIFEBOAT_PASSWORD", pw);
        run_cmd(c).expect_ok();
        assert!(path.join("config.json").is_file());
        Ds { path, password: Some(pw.to_string()) }
    }

    pub fn config(&self) -> Value {
        serde_json::from_slice(&fs::read(self.path.join("config.json")).unwrap()).unwrap()
    }

    pub fn set_config(&self, key: &str, v: Value) {
        let mut c = self.config();
        c[key] = v;
        fs::write(self.path.join("config.json"), serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    }

    pub fn set_pack_target(&self, n: u64) {
        assert!(self.config().get("pack_target").is_some(), "config.json has no pack_target");
        self.set_config("pack_target", Value::from(n));
    }

    /// A command with `--datastore` after the subcommand.
    pub fn cmd(&self, sub: &str) -> Command {
        let mut c = lb_cmd();
        c.arg(sub).arg("--datastore").arg(&self.path);
        if let Some(pw) = &self.password {
            c.env("LIFEBOAT_PASSWORD", pw);
        }
        c
    }

    pub fn run<I, S>(&self, sub: &str, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.cmd(sub);
        c.args(args);
        run_cmd(c)
    }

    /// `backup --json EXTRA... SRC`; returns the output (not asserted).
    pub fn backup_raw(&self, src: &Path, extra: &[&str]) -> Out {
        let mut c = self.cmd("backup");
        c.arg("--json").args(extra).arg(src);
        run_cmd(c)
    }

    /// A backup that must succeed with exit 0; returns its JSON summary.
    #[track_caller]
    pub fn backup(&self, src: &Path, extra: &[&str]) -> Value {
        let o = self.backup_raw(src, extra);
        o.expect_ok();
        let v = o.json();
        assert_eq!(v["snapshot_id"].as_str().map(|s| s.len()), Some(64), "no snapshot id\n{o}");
        v
    }

    pub fn restore(&self, snap: &str, dst: &Path, extra: &[&str]) -> Out {
        let mut c = self.cmd("restore");
        c.arg(snap).arg(dst).args(extra);
        run_cmd(c)
    }

    pub fn check(&self, read_data: bool) -> Out {
        let mut c = self.cmd("check");
        if read_data {
            c.arg("--read-data");
        }
        run_cmd(c)
    }

    /// `check --read-data` exits 0, reports no damage.
    #[track_caller]
    pub fn assert_check_clean(&self) {
        let o = self.check(true);
        assert_eq!(o.code(), Some(0), "check --read-data found problems\n{o}");
        assert!(!o.stdout.contains("damaged:") && !o.stdout.contains("error:"), "check output mentions damage\n{o}");
        assert!(o.stdout.contains("no errors found"), "{o}");
    }

    pub fn snapshots(&self) -> Vec<Value> {
        let o = self.run("snapshots", ["--json"]);
        o.expect_ok();
        o.json().as_array().cloned().unwrap_or_else(|| panic!("snapshots --json is not an array\n{o}"))
    }

    pub fn snapshot_ids(&self) -> Vec<String> {
        self.snapshots().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
    }

    /// Sealed pack files under packs/: (path, size).
    pub fn packs(&self) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        for d in fs::read_dir(self.path.join("packs")).unwrap().flatten() {
            if !d.file_type().unwrap().is_dir() {
                continue;
            }
            for f in fs::read_dir(d.path()).unwrap().flatten() {
                if f.path().extension() == Some(OsStr::new("pack")) {
                    out.push((f.path(), f.metadata().unwrap().len()));
                }
            }
        }
        out.sort();
        out
    }

    /// The largest pack: the one holding a run's big file (small records
    /// may go to another of the run's open packs).
    pub fn largest_pack(&self) -> (PathBuf, u64) {
        self.packs().into_iter().max_by_key(|p| p.1).expect("a pack")
    }

    pub fn pack_bytes(&self) -> u64 {
        self.packs().iter().map(|p| p.1).sum()
    }

    pub fn partials(&self) -> Vec<PathBuf> {
        match fs::read_dir(self.path.join("partial")) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Restores `snap` into a fresh directory under `scratch` and asserts it
    /// equals `src` (everything: content, metadata, links, holes).
    #[track_caller]
    pub fn assert_restores(&self, snap: &str, src: &Path, scratch: &Path) {
        let dst = unique_dir(scratch, "restore");
        let o = self.restore(snap, &dst, &[]);
        assert_eq!(o.code(), Some(0), "restore of {snap} failed\n{o}");
        assert_same_tree(src, &dst, &CompareOpts::full());
        fs::remove_dir_all(&dst).unwrap();
    }
}

/// A new, not yet existing path `base/prefix-N`.
pub fn unique_dir(base: &Path, prefix: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = base.join(format!("{prefix}-{n}"));
        if !p.exists() {
            return p;
        }
    }
}

/// A fresh temporary directory for one test, removed on drop.
pub fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("lifeboat-e2e-{name}-")).tempdir().expect("tempdir")
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// These tests need root (chown, mount, setpriv); CI runs as root.
#[track_caller]
pub fn require_root() {
    assert!(is_root(), "the end-to-end tests must run as root (CI does); euid is {}", unsafe { libc::geteuid() });
}

// ---------------------------------------------------------------- data

/// xorshift64*: fast, deterministic, good enough to defeat compression.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
        if r.0 == 0 {
            r.0 = 1;
        }
        for _ in 0..4 {
            r.next();
        }
        r
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let v = self.next().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&v[..n]);
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
    /// Compressible text: words from a small vocabulary.
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: &[&str] = &["lifeboat", "backup", "restore", "snapshot", "the", "of", "pack", "blob", "index", "tree", "disk", "data"];
        let mut v = Vec::with_capacity(n + 16);
        while v.len() < n {
            v.extend_from_slice(WORDS[self.below(WORDS.len() as u64) as usize].as_bytes());
            v.push(if self.below(12) == 0 { b'\n' } else { b' ' });
        }
        v.truncate(n);
        v
    }
}

/// Writes `len` pseudo-random bytes from `seed` into `path`, streaming.
pub fn write_random(path: &Path, len: u64, seed: u64) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

pub fn write_file(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Sets atime and mtime (seconds + nanoseconds) without following symlinks.
pub fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let ts = libc::timespec { tv_sec: secs, tv_nsec: nsec };
    let times = [ts, ts];
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, cpath(path).as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0, "utimensat {}: {}", path.display(), std::io::Error::last_os_error());
}

pub fn lchown(path: &Path, uid: u32, gid: u32) {
    let r = unsafe { libc::lchown(cpath(path).as_ptr(), uid, gid) };
    assert_eq!(r, 0, "lchown {}: {}", path.display(), std::io::Error::last_os_error());
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Gives every entry below `root` (not `root` itself) a fixed mtime derived
/// from its path, deepest first so directory times stick.
pub fn fix_times(root: &Path, base_secs: i64) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(&p, out);
            }
            out.push(p);
        }
    }
    let mut all = Vec::new();
    walk(root, &mut all);
    for p in all {
        let h = lifeboat_store::BlobId::of(p.strip_prefix(root).unwrap().as_os_str().as_bytes());
        let x = u64::from_le_bytes(h.0[..8].try_into().unwrap());
        set_mtime(&p, base_secs + (x % 1_000_000) as i64, (x >> 32) as i64 % 1_000_000_000);
    }
}

/// Spec for a generated tree of ordinary files.
#[derive(Clone, Copy, Debug)]
pub struct TreeSpec {
    pub dirs: usize,
    pub files: usize,
    /// Largest ordinary file; sizes are mostly small, log-spread.
    pub max_file: u64,
    /// Large files (chunked) on top: count and size.
    pub big_files: usize,
    pub big_size: u64,
}

impl TreeSpec {
    pub fn small() -> Self {
        TreeSpec { dirs: 12, files: 150, max_file: 256 << 10, big_files: 1, big_size: 3 << 20 }
    }
}

/// Generates a deterministic tree under `root` (created): nested
/// directories, an empty directory, files of mixed sizes, mostly random
/// bytes with some compressible text. Returns the total file bytes.
pub fn gen_tree(root: &Path, seed: u64, spec: TreeSpec) -> u64 {
    let mut rng = Rng::new(seed);
    fs::create_dir_all(root).unwrap();
    let mut dirs = vec![root.to_path_buf()];
    for i in 0..spec.dirs {
        let parent = dirs[rng.below(dirs.len() as u64) as usize].clone();
        let d = parent.join(format!("dir{i:02}"));
        fs::create_dir_all(&d).unwrap();
        dirs.push(d);
    }
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    let mut total = 0;
    for i in 0..spec.files {
        let d = &dirs[rng.below(dirs.len() as u64) as usize];
        // log-uniform size between 0 and max_file
        let bits = 64 - spec.max_file.leading_zeros() as u64;
        let size = if rng.below(20) == 0 {
            0
        } else {
            let b = rng.below(bits + 1);
            rng.below(1 << b).min(spec.max_file)
        };
        let (name, data) = if rng.below(4) == 0 { (format!("note{i:03}.txt"), rng.text(size as usize)) } else { (format!("file{i:03}.bin"), rng.bytes(size as usize)) };
        total += data.len() as u64;
        write_file(&d.join(name), &data);
    }
    for i in 0..spec.big_files {
        let d = &dirs[rng.below(dirs.len() as u64) as usize];
        write_random(&d.join(format!("big{i}.dat")), spec.big_size, seed.wrapping_mul(0x9E37_79B9).wrapping_add(0xB16 + i as u64));
        total += spec.big_size;
    }
    total
}

/// Sum of regular file sizes below `root`.
pub fn tree_bytes(root: &Path) -> u64 {
    scan_tree(root).values().filter(|e| e.kind == Kind::File).map(|e| e.size).sum()
}

/// Recursive copy with `cp -a` (keeps everything, including hard links).
pub fn copy_tree(src: &Path, dst: &Path) {
    let st = Command::new("cp").arg("-a").arg(src).arg(dst).status().unwrap();
    assert!(st.success(), "cp -a {} {}", src.display(), dst.display());
}

// ---------------------------------------------------------- comparison

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub hash: Option<lifeboat_store::BlobId>,
    pub link: Option<OsString>,
    pub ino: u64,
    pub nlink: u64,
    pub blocks: u64,
}

/// Every entry below `root` keyed by its relative path (raw bytes).
pub fn scan_tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for e in rd {
            let e = e.unwrap();
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_file() {
                Kind::File
            } else if ft.is_dir() {
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink
            } else {
                Kind::Other
            };
            let hash = (kind == Kind::File).then(|| lifeboat_store::BlobId::of(&fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))));
            let link = (kind == Kind::Symlink).then(|| fs::read_link(&p).unwrap().into_os_string());
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                Entry {
                    kind,
                    mode: m.mode(),
                    uid: m.uid(),
                    gid: m.gid(),
                    size: m.size(),
                    mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                    hash,
                    link,
                    ino: m.ino(),
                    nlink: m.nlink(),
                    blocks: m.blocks(),
                },
            );
            if kind == Kind::Dir {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[derive(Clone, Copy, Debug)]
pub struct CompareOpts {
    pub mtime: bool,
    pub dir_mtime: bool,
    pub owners: bool,
    pub mode: bool,
    pub hard_links: bool,
}

impl CompareOpts {
    pub fn full() -> Self {
        CompareOpts { mtime: true, dir_mtime: true, owners: true, mode: true, hard_links: true }
    }
    pub fn content_only() -> Self {
        CompareOpts { mtime: false, dir_mtime: false, owners: false, mode: false, hard_links: false }
    }
}

/// Differences between two trees; empty when equal under `o`.
pub fn diff_trees(a: &BTreeMap<PathBuf, Entry>, b: &BTreeMap<PathBuf, Entry>, o: &CompareOpts) -> Vec<String> {
    let mut d = Vec::new();
    for (p, x) in a {
        let Some(y) = b.get(p) else {
            d.push(format!("{}: missing from restored tree", p.display()));
            continue;
        };
        let mut bad = |what: &str, l: String, r: String| d.push(format!("{}: {what} differs: {l} vs {r}", p.display()));
        if x.kind != y.kind {
            bad("type", format!("{:?}", x.kind), format!("{:?}", y.kind));
            continue;
        }
        if o.mode && x.kind != Kind::Symlink && x.mode != y.mode {
            bad("mode", format!("{:o}", x.mode), format!("{:o}", y.mode));
        }
        if o.owners && (x.uid, x.gid) != (y.uid, y.gid) {
            bad("owner", format!("{}:{}", x.uid, x.gid), format!("{}:{}", y.uid, y.gid));
        }
        if x.kind == Kind::File {
            if x.size != y.size {
                bad("size", x.size.to_string(), y.size.to_string());
            }
            if x.hash != y.hash {
                bad("content", format!("{:?}", x.hash), format!("{:?}", y.hash));
            }
        }
        if x.link != y.link {
            bad("symlink target", format!("{:?}", x.link), format!("{:?}", y.link));
        }
        let check_time = if x.kind == Kind::Dir { o.dir_mtime } else { o.mtime };
        if check_time && x.mtime_ns != y.mtime_ns {
            bad("mtime", x.mtime_ns.to_string(), y.mtime_ns.to_string());
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            d.push(format!("{}: extra in restored tree", p.display()));
        }
    }
    if o.hard_links {
        // Files that share an inode in `a` must share one in `b`, and only those.
        let group = |t: &BTreeMap<PathBuf, Entry>| {
            let mut g: HashMap<u64, Vec<PathBuf>> = HashMap::new();
            for (p, e) in t {
                if e.kind == Kind::File {
                    g.entry(e.ino).or_default().push(p.clone());
                }
            }
            let mut v: Vec<Vec<PathBuf>> = g.into_values().filter(|v| v.len() > 1).collect();
            v.iter_mut().for_each(|x| x.sort());
            v.sort();
            v
        };
        let (ga, gb) = (group(a), group(b));
        if ga != gb {
            d.push(format!("hard link groups differ: {ga:?} vs {gb:?}"));
        }
    }
    d
}

#[track_caller]
pub fn assert_same_tree(src: &Path, dst: &Path, o: &CompareOpts) {
    let a = scan_tree(src);
    let b = scan_tree(dst);
    assert!(!a.is_empty(), "source tree {} is empty", src.display());
    let d = diff_trees(&a, &b, o);
    assert!(d.is_empty(), "{} and {} differ ({} differences):\n{}", src.display(), dst.display(), d.len(), d.iter().take(40).cloned().collect::<Vec<_>>().join("\n"));
}

// --------------------------------------------------------------- mounts

/// A tmpfs mounted on a directory; unmounted on drop, even after a panic.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status().expect("run mount");
        assert!(st.success(), "mount -t tmpfs on {} failed (root needed)", dir.display());
        Tmpfs { dir: dir.to_path_buf() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.dir).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Waits until `f` holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

/// A summary field of a backup's JSON as u64.
#[track_caller]
pub fn sum(v: &Value, key: &str) -> u64 {
    v["summary"][key].as_u64().unwrap_or_else(|| panic!("summary has no {key}: {v}"))
}

/// The records of a pack file: (offset, kind byte, stored length).
pub fn pack_records(path: &Path) -> Vec<(u64, u8, u64)> {
    let data = fs::read(path).unwrap();
    assert_eq!(&data[..6], b"LBPACK");
    let mut out = Vec::new();
    let mut off = 32usize;
    while off + 48 <= data.len() {
        let kind = data[off];
        let stored = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap()) as usize;
        out.push((off as u64, kind, stored as u64));
        off += 48 + stored;
    }
    assert_eq!(off, data.len(), "pack records do not add up");
    out
}
