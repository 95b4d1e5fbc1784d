//! Restore: the snapshot's trees are walked in parallel; files are
//! written with their modes, owners (as root), mtimes; symlinks, hard
//! links, empty directories, non-UTF-8 names, and sparse files (all-zero
//! chunks become holes). Directory metadata is set after its children.

use crate::error::{IngestError, Result};
use crate::progress::Progress;
use lifeboat_store::{BlobId, Datastore, Node, NodeKind, Snapshot, Tree};
use parking_lot::Mutex;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Paths inside the snapshot ("/etc/hosts", "docs"); empty = all.
    pub includes: Vec<String>,
    /// Restore owners (uid/gid); default true when running as root.
    pub owners: bool,
    pub threads: usize,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreOutcome {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub warnings: Vec<String>,
}

const RESTORE_BATCH: usize = 1024;

struct Restorer<'a> {
    ds: &'a Datastore,
    opts: &'a RestoreOptions,
    includes: Vec<Vec<Vec<u8>>>,
    progress: &'a Progress,
    /// (dev, ino) of a multiply-linked file -> where it was written first.
    links: Mutex<HashMap<(u64, u64), PathBuf>>,
    deferred_links: Mutex<Vec<(PathBuf, (u64, u64), Node)>>,
    files: AtomicU64,
    dirs: AtomicU64,
    bytes: AtomicU64,
    umask: u32,
    euid: u32,
    egid: u32,
    /// To the thread that reads ahead the records of the next files.
    prefetch: crossbeam_channel::Sender<Vec<BlobId>>,
}

/// Batches of blobs the prefetch thread may be behind by.
const PREFETCH_QUEUE: usize = 64;

fn components(p: &str) -> Vec<Vec<u8>> {
    p.split('/').filter(|c| !c.is_empty() && *c != ".").map(|c| c.as_bytes().to_vec()).collect()
}

pub fn restore(ds: &Datastore, snap: &Snapshot, opts: &RestoreOptions, progress: &Progress) -> Result<RestoreOutcome> {
    let includes: Vec<Vec<Vec<u8>>> = opts.includes.iter().map(|p| components(p)).collect();
    let root = ds.load_tree(&snap.tree)?;
    // An include that names nothing in the snapshot is a user error.
    for (inc, raw) in includes.iter().zip(&opts.includes) {
        if !path_exists(ds, &root, inc)? {
            return Err(IngestError::NotInSnapshot { path: raw.clone() });
        }
    }
    std::fs::create_dir_all(&opts.target).map_err(|e| IngestError::Target { path: opts.target.clone(), source: e })?;
    std::thread::scope(|scope| {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<BlobId>>(PREFETCH_QUEUE);
        scope.spawn(move || {
            for ids in rx {
                ds.prefetch(&ids);
            }
        });
        restore_with(ds, snap, opts, includes, progress, tx)
    })
}

fn restore_with(
    ds: &Datastore,
    snap: &Snapshot,
    opts: &RestoreOptions,
    includes: Vec<Vec<Vec<u8>>>,
    progress: &Progress,
    prefetch: crossbeam_channel::Sender<Vec<BlobId>>,
) -> Result<RestoreOutcome> {
    let r = Restorer {
        ds,
        opts,
        includes,
        progress,
        links: Mutex::new(HashMap::new()),
        deferred_links: Mutex::new(Vec::new()),
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        umask: current_umask(),
        euid: unsafe { libc::geteuid() },
        egid: unsafe { libc::getegid() },
        prefetch,
    };
    let threads = if opts.threads == 0 { crate::backup::default_threads() } else { opts.threads };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("restore-{i}"))
        .build()
        .map_err(|e| IngestError::Target { path: opts.target.clone(), source: std::io::Error::other(e) })?;
    pool.install(|| r.restore_tree(&snap.tree, &opts.target, &mut Vec::new()))?;
    // Hard links last: their first path is written by now.
    for (path, key, node) in r.deferred_links.lock().drain(..) {
        let first = r.links.lock().get(&key).cloned();
        // The parent's mtime is restored already; adding the entry bumps it.
        let parent = path.parent().and_then(|p| Some((p, std::fs::metadata(p).ok()?.modified().ok()?)));
        match first {
            Some(first) => {
                let _ = std::fs::remove_file(&path);
                if let Err(e) = std::fs::hard_link(&first, &path) {
                    progress.warn(format!("{}: cannot link to {}: {e}", path.display(), first.display()));
                }
            }
            None => r.write_file(&path, &node)?,
        }
        if let Some((dir, mtime)) = parent {
            let t = std::fs::FileTimes::new().set_modified(mtime).set_accessed(mtime);
            let _ = File::open(dir).and_then(|d| d.set_times(t));
        }
    }
    let warnings = progress.messages.lock().unwrap().clone();
    Ok(RestoreOutcome {
        files: r.files.load(Ordering::Relaxed),
        dirs: r.dirs.load(Ordering::Relaxed),
        bytes: r.bytes.load(Ordering::Relaxed),
        warnings,
    })
}

fn path_exists(ds: &Datastore, root: &Tree, comps: &[Vec<u8>]) -> Result<bool> {
    let mut tree = root.clone();
    for (i, c) in comps.iter().enumerate() {
        let Some(n) = tree.find(c) else { return Ok(false) };
        if i + 1 == comps.len() {
            return Ok(true);
        }
        match (n.kind, n.subtree) {
            (NodeKind::Dir, Some(id)) => tree = ds.load_tree(&id)?,
            _ => return Ok(false),
        }
    }
    Ok(true)
}

enum Wanted {
    No,
    /// On the way to an included path: create the directory, filter below.
    Partly,
    All,
}

impl Restorer<'_> {
    fn wanted(&self, rel: &[Vec<u8>]) -> Wanted {
        if self.includes.is_empty() {
            return Wanted::All;
        }
        let mut partly = false;
        for inc in &self.includes {
            if rel.len() >= inc.len() && rel[..inc.len()] == inc[..] {
                return Wanted::All;
            }
            if inc.len() > rel.len() && inc[..rel.len()] == rel[..] {
                partly = true;
            }
        }
        if partly {
            Wanted::Partly
        } else {
            Wanted::No
        }
    }

    /// Restores a directory's entries, decoding them in batches from the
    /// encoded tree so a huge directory never sits decoded in memory.
    fn restore_tree(&self, id: &BlobId, dir: &Path, rel: &mut Vec<Vec<u8>>) -> Result<()> {
        // Lost data (a damaged pack, blobs `repair` dropped) costs the
        // paths it belongs to, named, and the rest is still restored.
        let mut cursor = match self.ds.dir_cursor(id) {
            Ok(c) => c,
            Err(e) if e.is_data_loss() => {
                self.progress.warn(format!("{}: directory listing lost: {e}", dir.display()));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let run = |n: &Node| -> Result<()> {
            let mut rel = rel.clone();
            rel.push(n.name.clone());
            self.restore_node(n, &dir.join(OsStr::from_bytes(&n.name)), &mut rel)
        };
        let mut batch = Vec::with_capacity(RESTORE_BATCH);
        loop {
            batch.clear();
            while batch.len() < RESTORE_BATCH {
                match cursor.next_node() {
                    Ok(Some(n)) => batch.push(n),
                    Ok(None) => break,
                    Err(e) if e.is_data_loss() => {
                        self.progress.warn(format!("{}: part of the directory listing lost: {e}", dir.display()));
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if batch.is_empty() {
                return Ok(());
            }
            self.prefetch(&batch);
            // Every entry may go to another thread: a sub-directory kept
            // on this one would wait for its siblings (rayon only splits
            // when a thread is idle, so this costs small directories next
            // to nothing).
            batch.par_iter().try_for_each(run)?;
        }
    }

    /// Hands the contents of a batch's files to the prefetch thread: their
    /// records are read in the background, whole ranges of packs at a
    /// time, while the batch's first files are written.
    fn prefetch(&self, batch: &[Node]) {
        let ids: Vec<BlobId> =
            batch.iter().filter(|n| n.kind == NodeKind::File).flat_map(|n| n.content.iter().copied()).collect();
        if !ids.is_empty() {
            // Behind already: skip rather than wait.
            let _ = self.prefetch.try_send(ids);
        }
    }

    fn restore_node(&self, n: &Node, path: &Path, rel: &mut Vec<Vec<u8>>) -> Result<()> {
        if self.progress.cancelled() {
            return Err(IngestError::Interrupted);
        }
        if n.name.is_empty() || n.name == b"." || n.name == b".." || n.name.contains(&b'/') {
            self.progress.warn(format!("{}: unsafe name in snapshot; skipped", path.display()));
            return Ok(());
        }
        let wanted = self.wanted(rel);
        if matches!(wanted, Wanted::No) {
            return Ok(());
        }
        if matches!(wanted, Wanted::Partly) && n.kind != NodeKind::Dir {
            return Ok(());
        }
        let target_err = |e: std::io::Error| IngestError::Target { path: path.to_path_buf(), source: e };
        match n.kind {
            NodeKind::Dir => {
                match std::fs::create_dir(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
                    Err(e) => return Err(target_err(e)),
                }
                if let Some(id) = n.subtree {
                    self.restore_tree(&id, path, rel)?;
                }
                self.dirs.fetch_add(1, Ordering::Relaxed);
                self.set_meta_path(path, n, false);
            }
            NodeKind::File => {
                if n.nlink > 1 {
                    let key = (n.dev, n.ino);
                    let mut links = self.links.lock();
                    if links.contains_key(&key) {
                        self.deferred_links.lock().push((path.to_path_buf(), key, n.clone()));
                        return Ok(());
                    }
                    links.insert(key, path.to_path_buf());
                }
                self.write_file(path, n)?;
            }
            NodeKind::Symlink => {
                let target = OsStr::from_bytes(n.link_target.as_deref().unwrap_or_default());
                let _ = std::fs::remove_file(path);
                std::os::unix::fs::symlink(target, path).map_err(target_err)?;
                self.set_meta_path(path, n, true);
            }
            NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice | NodeKind::Socket => {
                if n.kind == NodeKind::Socket {
                    return Ok(()); // sockets are recreated by their servers
                }
                let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| target_err(std::io::ErrorKind::InvalidInput.into()))?;
                let _ = std::fs::remove_file(path);
                if unsafe { libc::mknod(c.as_ptr(), n.mode, n.rdev as libc::dev_t) } != 0 {
                    self.progress.warn(format!("{}: cannot create special file: {}", path.display(), std::io::Error::last_os_error()));
                    return Ok(());
                }
                self.set_meta_path(path, n, false);
            }
        }
        Ok(())
    }

    fn write_file(&self, path: &Path, n: &Node) -> Result<()> {
        let target_err = |e: std::io::Error| IngestError::Target { path: path.to_path_buf(), source: e };
        let mode = n.mode & 0o7777;
        // The common case, a fresh target, costs open + write + futimens:
        // the mode goes in with the create and a new file already has our
        // owner. Only an existing file gets chmod/chown afterwards.
        let (f, existed) = match OpenOptions::new().write(true).create_new(true).mode(mode).open(path) {
            Ok(f) => (f, false),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(path);
                (OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(target_err)?, true)
            }
            Err(e) => return Err(target_err(e)),
        };
        let mut off = 0u64;
        let mut written_end = 0u64;
        for id in &n.content {
            let data = match self.ds.read_blob(id) {
                Ok(d) => d,
                Err(e) if e.is_data_loss() => {
                    self.progress.warn(format!("{}: data lost from offset {off}: {e}; the rest of the file is zeros", path.display()));
                    off = n.size.max(off);
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(end) = write_sparse(&f, &data, off).map_err(target_err)? {
                written_end = end;
            }
            off += data.len() as u64;
            self.progress.add(&self.progress.bytes, data.len() as u64);
        }
        if off > written_end {
            // A trailing hole: extend the file over it.
            f.set_len(off).map_err(target_err)?;
        }
        self.set_meta_file(&f, path, n, existed || mode & self.umask != 0);
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(off, Ordering::Relaxed);
        self.progress.add(&self.progress.files, 1);
        Ok(())
    }

    fn set_meta_file(&self, f: &File, path: &Path, n: &Node, needs_chmod: bool) {
        if self.opts.owners && (n.uid != self.euid || n.gid != self.egid) {
            if let Err(e) = std::os::unix::fs::fchown(f, Some(n.uid), Some(n.gid)) {
                self.progress.warn(format!("{}: cannot set owner: {e}", path.display()));
            }
        }
        // chown clears set-id bits, so the mode goes on after it.
        if needs_chmod || (self.opts.owners && n.mode & 0o6000 != 0) {
            if let Err(e) = f.set_permissions(std::fs::Permissions::from_mode(n.mode & 0o7777)) {
                self.progress.warn(format!("{}: cannot set mode: {e}", path.display()));
            }
        }
        let t = std::fs::FileTimes::new().set_modified(to_systime(n.mtime_ns)).set_accessed(to_systime(n.mtime_ns));
        if let Err(e) = f.set_times(t) {
            self.progress.warn(format!("{}: cannot set mtime: {e}", path.display()));
        }
    }

    fn set_meta_path(&self, path: &Path, n: &Node, symlink: bool) {
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return };
        unsafe {
            if self.opts.owners {
                libc::lchown(c.as_ptr(), n.uid, n.gid);
            }
            if !symlink {
                libc::chmod(c.as_ptr(), n.mode & 0o7777);
            }
            let ts = libc::timespec { tv_sec: n.mtime_ns.div_euclid(1_000_000_000), tv_nsec: n.mtime_ns.rem_euclid(1_000_000_000) };
            let times = [ts, ts];
            libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW);
        }
    }
}

/// The process umask (read by setting and restoring it; restore runs
/// before any worker thread creates files).
fn current_umask() -> u32 {
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m as u32
    }
}

fn to_systime(ns: i64) -> std::time::SystemTime {
    if ns >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns as u64)
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::from_nanos(ns.unsigned_abs())
    }
}

const SPARSE_BLOCK: usize = 64 << 10;

/// Writes `data` at `off`, leaving aligned all-zero blocks as holes so
/// sparse files stay sparse. Small writes go out whole. Returns the end
/// offset of the last byte written, if any.
fn write_sparse(f: &File, data: &[u8], off: u64) -> std::io::Result<Option<u64>> {
    if data.len() < SPARSE_BLOCK {
        f.write_all_at(data, off)?;
        return Ok(Some(off + data.len() as u64));
    }
    let mut run_start: Option<usize> = None;
    let mut last_end = None;
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + SPARSE_BLOCK).min(data.len());
        if is_zero(&data[pos..end]) {
            if let Some(s) = run_start.take() {
                f.write_all_at(&data[s..pos], off + s as u64)?;
                last_end = Some(off + pos as u64);
            }
        } else if run_start.is_none() {
            run_start = Some(pos);
        }
        pos = end;
    }
    if let Some(s) = run_start {
        f.write_all_at(&data[s..], off + s as u64)?;
        last_end = Some(off + data.len() as u64);
    }
    Ok(last_end)
}

fn is_zero(b: &[u8]) -> bool {
    let (pre, mid, post) = unsafe { b.align_to::<u128>() };
    pre.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0) && post.iter().all(|&x| x == 0)
}
