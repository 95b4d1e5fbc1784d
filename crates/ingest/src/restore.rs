//! Restore: the snapshot's trees are walked in parallel; files are
//! written with their modes, owners (as root), mtimes; symlinks, hard
//! links, empty directories, non-UTF-8 names, and sparse files (all-zero
//! chunks become holes). Directory metadata is set after its children.
//!
//! Snapshot content is untrusted (an agent uploads trees it built
//! itself), and the target may hold symlinks from an earlier restore.
//! So every entry is made relative to its parent directory's descriptor
//! (`mkdirat`, `openat`, `symlinkat`, `mknodat`, `linkat`) and no
//! symlink is ever followed: directories are entered with `O_NOFOLLOW`
//! (a symlink where a directory should be is replaced, not followed),
//! files are created `O_EXCL | O_NOFOLLOW`, metadata is set through the
//! open descriptor or with `AT_SYMLINK_NOFOLLOW`. A name is one path
//! component (no `/`, `.`, `..` or NUL) and the second entry of a
//! duplicated name is skipped. Nothing is written outside the target.
//!
//! Per entry the order is: content, owner, mode, extended attributes
//! (after chown, which drops `security.capability`; after chmod, which
//! would rewrite an ACL's mask), times. Inode flags go on at the very end,
//! deepest first, after the hard links: an immutable or append-only file
//! or directory refuses links, writes and new entries. A restore over an
//! earlier one clears those two flags where it finds them before it
//! writes.

use crate::attrs::{self, Entry};
use crate::error::{IngestError, Result};
use crate::progress::Progress;
use lifeboat_store::{BlobId, Datastore, Node, NodeKind, Snapshot, Tree};
use parking_lot::Mutex;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Where and how `restore` writes a snapshot. `Default` restores
/// everything into `target`, without owners or privileged bits and
/// attributes, with the default thread count.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// The target directory (created if missing), or with `target_dir`
    /// only its name in messages.
    pub target: PathBuf,
    /// The target already opened (`O_RDONLY | O_DIRECTORY`) by a caller
    /// that resolved it beneath a confinement root: the restore works
    /// below this descriptor and never looks `target` up.
    pub target_dir: Option<Arc<OwnedFd>>,
    /// Paths inside the snapshot ("/etc/hosts", "docs"); empty = all.
    pub includes: Vec<String>,
    /// Restore owners (uid/gid). `Default` leaves it off; callers turn it
    /// on when running as root (only root may give files to others).
    pub owners: bool,
    /// Recreate set-user/group-ID bits on files, device nodes, and
    /// extended attributes in the privileged namespaces (`trusted.*`,
    /// `security.*`: file capabilities, security labels) (an admin's
    /// restore, the local CLI). Without it they are left out, each named
    /// in the warnings.
    pub special: bool,
    /// Worker threads; 0 = a default from the core count.
    pub threads: usize,
}

/// What `restore` wrote.
#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreOutcome {
    /// Regular files written. A hard link made to a file written earlier
    /// in the run is not counted again.
    pub files: u64,
    /// Directories restored (created, or restored over), not counting
    /// the target itself.
    pub dirs: u64,
    /// Total size of the files written, holes of sparse files and ranges
    /// lost from the datastore (written as zeros) included.
    pub bytes: u64,
    /// Set-ID bits, privileged xattrs and device nodes not restored (see
    /// `RestoreOptions::special`).
    pub left_out: u64,
    /// The run's warnings (a copy of `Progress::messages`, so at most the
    /// first 1000): metadata that could not be set, entries left out,
    /// data lost from the datastore. The restore went on past each.
    pub warnings: Vec<String>,
}

/// A directory of the target being restored: its descriptor, and its
/// path for messages only.
struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

const RESTORE_BATCH: usize = 1024;

/// (dev, ino) of a file in the backup, as its node recorded them.
type Inode = (u64, u64);

/// A hard link made once the whole tree is written: the link's path
/// (components beneath the target), the inode it joins, its node.
type DeferredLink = (Vec<Vec<u8>>, Inode, Node);

struct Restorer<'a> {
    ds: &'a Datastore,
    opts: &'a RestoreOptions,
    includes: Vec<Vec<Vec<u8>>>,
    progress: &'a Progress,
    /// The target directory: hard links are made from it at the end.
    root: &'a Dir,
    /// (dev, ino) of a multiply-linked file -> where it was written
    /// first, as components beneath the target.
    links: Mutex<HashMap<Inode, Vec<Vec<u8>>>>,
    deferred_links: Mutex<Vec<DeferredLink>>,
    /// Entries (components beneath the target) whose inode flags are set
    /// once everything else is written.
    deferred_flags: Mutex<Vec<(Vec<Vec<u8>>, u32)>>,
    files: AtomicU64,
    dirs: AtomicU64,
    bytes: AtomicU64,
    left_out: AtomicU64,
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

/// Writes the snapshot `snap` of `ds` (all of it, or `opts.includes`)
/// beneath the target, over whatever is there: existing directories are
/// restored into, other entries in the way are replaced, and entries the
/// snapshot does not name are left alone. (A directory where the snapshot
/// has a file or symlink is not removed: that entry fails.)
///
/// Blocks until done: call it from a thread that may block (not an async
/// executor). It runs its own pool of `opts.threads` workers plus one
/// thread that prefetches file data. Other threads may sample `progress`
/// meanwhile (it counts `files` and `bytes`; totals are the caller's to
/// set); setting `progress.cancel` stops the run with
/// `IngestError::Interrupted`, leaving what was written so far.
///
/// An include that names nothing is `IngestError::NotInSnapshot`, before
/// anything is written. A directory, file or symlink that cannot be
/// created or written is `IngestError::Target`. Data lost from the datastore (a damaged pack)
/// and metadata that cannot be set are warnings: the paths concerned are
/// named and the rest is restored.
pub fn restore(ds: &Datastore, snap: &Snapshot, opts: &RestoreOptions, progress: &Progress) -> Result<RestoreOutcome> {
    let includes: Vec<Vec<Vec<u8>>> = opts.includes.iter().map(|p| components(p)).collect();
    let root = ds.load_tree(&snap.tree)?;
    // An include that names nothing in the snapshot is a user error.
    for (inc, raw) in includes.iter().zip(&opts.includes) {
        if !path_exists(ds, &root, inc)? {
            return Err(IngestError::NotInSnapshot { path: raw.clone() });
        }
    }
    let target_err = |e: std::io::Error| IngestError::Target { path: opts.target.clone(), source: e };
    let fd = match &opts.target_dir {
        Some(fd) => fd.try_clone().map_err(target_err)?,
        None => {
            // The caller's own path (the local CLI): followed as given.
            std::fs::create_dir_all(&opts.target).map_err(target_err)?;
            OwnedFd::from(File::open(&opts.target).map_err(target_err)?)
        }
    };
    let root = Dir { fd, path: opts.target.clone() };
    std::thread::scope(|scope| {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<BlobId>>(PREFETCH_QUEUE);
        scope.spawn(move || {
            for ids in rx {
                ds.prefetch(&ids);
            }
        });
        restore_with(ds, snap, opts, includes, progress, tx, &root)
    })
}

fn restore_with(
    ds: &Datastore,
    snap: &Snapshot,
    opts: &RestoreOptions,
    includes: Vec<Vec<Vec<u8>>>,
    progress: &Progress,
    prefetch: crossbeam_channel::Sender<Vec<BlobId>>,
    root: &Dir,
) -> Result<RestoreOutcome> {
    let r = Restorer {
        ds,
        opts,
        includes,
        progress,
        root,
        links: Mutex::new(HashMap::new()),
        deferred_links: Mutex::new(Vec::new()),
        deferred_flags: Mutex::new(Vec::new()),
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        left_out: AtomicU64::new(0),
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
    // A whole snapshot of one directory: the target becomes that
    // directory, so it takes the directory's own metadata at the end (as
    // `rsync -a src/ dst/` does); until then it is prepared like any
    // directory restored over (writable, no default ACL to inherit).
    let root_meta = snap.root.as_ref().filter(|_| r.includes.is_empty()).map(|rd| rd.node(b""));
    if root_meta.is_some() {
        r.prepare_existing_dir(&root.fd, &root.path);
    }
    pool.install(|| r.restore_tree(&snap.tree, root, &[]))?;
    // Hard links last: their first path is written by now. Both ends are
    // found again from the target's descriptor, without following.
    let deferred: Vec<_> = r.deferred_links.lock().drain(..).collect();
    for (rel, key, node) in deferred {
        let path = r.display(&rel);
        let Some((name, parent_rel)) = rel.split_last() else { continue };
        let parent = match open_dir_beneath(&root.fd, parent_rel) {
            Ok(fd) => Dir { fd, path: path.parent().map(Path::to_path_buf).unwrap_or_default() },
            Err(e) => {
                progress.warn(format!("{}: cannot link: {e}", path.display()));
                continue;
            }
        };
        let Ok(cname) = CString::new(name.as_slice()) else { continue };
        // The parent's mtime is restored already; adding the entry bumps it.
        let mtime = fstat(&parent.fd).ok().map(|st| libc::timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec });
        let first = r.links.lock().get(&key).cloned();
        match first {
            Some(first) => {
                let linked = first.split_last().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)).and_then(|(fname, fparent)| {
                    let fdir = open_dir_beneath(&root.fd, fparent)?;
                    let fname = CString::new(fname.as_slice()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
                    r.unlock_existing(&parent, &cname);
                    unsafe { libc::unlinkat(parent.fd.as_raw_fd(), cname.as_ptr(), 0) };
                    // Flags 0: a symlink is linked itself, never followed.
                    cvt(unsafe { libc::linkat(fdir.as_raw_fd(), fname.as_ptr(), parent.fd.as_raw_fd(), cname.as_ptr(), 0) })
                });
                if let Err(e) = linked {
                    progress.warn(format!("{}: cannot link to {}: {e}", path.display(), r.display(&first).display()));
                }
            }
            None => r.write_file(&parent, &cname, &path, &node)?,
        }
        if let Some(t) = mtime {
            let times = [t, t];
            unsafe { libc::futimens(parent.fd.as_raw_fd(), times.as_ptr()) };
        }
    }
    r.apply_deferred_flags();
    if let Some(n) = &root_meta {
        r.set_root_meta(n);
    }
    let warnings = progress.messages.lock().unwrap().clone();
    Ok(RestoreOutcome { files: r.files.load(Ordering::Relaxed), dirs: r.dirs.load(Ordering::Relaxed), bytes: r.bytes.load(Ordering::Relaxed), left_out: r.left_out.load(Ordering::Relaxed), warnings })
}

fn cvt(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

fn openat(dir: &OwnedFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> std::io::Result<OwnedFd> {
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Enters `name` in `dir` if it is a directory; a symlink gives ELOOP
/// (or ENOTDIR), never its target.
fn open_subdir(dir: &OwnedFd, name: &CStr) -> std::io::Result<OwnedFd> {
    openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)
}

/// The directory at `rel` (components written by this restore) beneath
/// `root`, entered one component at a time without following symlinks.
fn open_dir_beneath(root: &OwnedFd, rel: &[Vec<u8>]) -> std::io::Result<OwnedFd> {
    let mut dir = root.try_clone()?;
    for c in rel {
        let c = CString::new(c.as_slice()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        dir = open_subdir(&dir, &c)?;
    }
    Ok(dir)
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
    fn restore_tree(&self, id: &BlobId, dir: &Dir, rel: &[Vec<u8>]) -> Result<()> {
        // Lost data (a damaged pack, blobs `repair` dropped) costs the
        // paths it belongs to, named, and the rest is still restored.
        let mut cursor = match self.ds.dir_cursor(id) {
            Ok(c) => c,
            Err(e) if e.is_data_loss() => {
                self.progress.warn(format!("{}: directory listing lost: {e}", dir.path.display()));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let run = |n: &Node| -> Result<()> {
            let mut rel = rel.to_vec();
            rel.push(n.name.clone());
            self.restore_node(n, dir, &rel)
        };
        let mut batch: Vec<Node> = Vec::with_capacity(RESTORE_BATCH);
        // A crafted tree may name an entry twice (a symlink `a`, then a
        // directory `a` with entries "through" it): the first one wins.
        // Trees are sorted, so a repeat follows its first at once.
        let mut last: Option<Vec<u8>> = None;
        loop {
            batch.clear();
            while batch.len() < RESTORE_BATCH {
                match cursor.next_node() {
                    Ok(Some(n)) => {
                        if last.as_deref() == Some(n.name.as_slice()) {
                            self.progress.warn(format!("{}: the snapshot names this entry twice; the second one is skipped", dir.path.join(OsStr::from_bytes(&n.name)).display()));
                            continue;
                        }
                        last = Some(n.name.clone());
                        batch.push(n)
                    }
                    Ok(None) => break,
                    Err(e) if e.is_data_loss() => {
                        self.progress.warn(format!("{}: part of the directory listing lost: {e}", dir.path.display()));
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
        let ids: Vec<BlobId> = batch.iter().filter(|n| n.kind == NodeKind::File).flat_map(|n| n.content.iter().copied()).collect();
        if !ids.is_empty() {
            // Behind already: skip rather than wait.
            let _ = self.prefetch.try_send(ids);
        }
    }

    /// `rel` under the target, for messages.
    fn display(&self, rel: &[Vec<u8>]) -> PathBuf {
        let mut p = self.root.path.clone();
        for c in rel {
            p.push(OsStr::from_bytes(c));
        }
        p
    }

    fn leave_out(&self, path: &Path, what: &str) {
        self.left_out.fetch_add(1, Ordering::Relaxed);
        self.progress.warn(format!("{}: {what} not restored: only an admin's restore recreates it", path.display()));
    }

    fn restore_node(&self, n: &Node, parent: &Dir, rel: &[Vec<u8>]) -> Result<()> {
        if self.progress.cancelled() {
            return Err(IngestError::Interrupted);
        }
        let path = parent.path.join(OsStr::from_bytes(&n.name));
        let name = match CString::new(n.name.as_slice()) {
            Ok(c) if !n.name.is_empty() && n.name != b"." && n.name != b".." && !n.name.contains(&b'/') => c,
            _ => {
                self.progress.warn(format!("{}: unsafe name in snapshot; skipped", path.display()));
                return Ok(());
            }
        };
        let wanted = self.wanted(rel);
        if matches!(wanted, Wanted::No) {
            return Ok(());
        }
        if matches!(wanted, Wanted::Partly) && n.kind != NodeKind::Dir {
            return Ok(());
        }
        let target_err = |e: std::io::Error| IngestError::Target { path: path.clone(), source: e };
        let pfd = parent.fd.as_raw_fd();
        match n.kind {
            NodeKind::Dir => {
                // Made private; its own mode goes on after its children.
                let mut existed = false;
                if unsafe { libc::mkdirat(pfd, name.as_ptr(), 0o700) } != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::AlreadyExists {
                        return Err(target_err(e));
                    }
                    existed = true;
                }
                let fd = match open_subdir(&parent.fd, &name) {
                    Ok(fd) => fd,
                    // Something else is there (a symlink, maybe from an
                    // earlier restore): replaced, never entered.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                        self.unlock_existing(parent, &name);
                        cvt(unsafe { libc::unlinkat(pfd, name.as_ptr(), 0) }).map_err(target_err)?;
                        cvt(unsafe { libc::mkdirat(pfd, name.as_ptr(), 0o700) }).map_err(target_err)?;
                        open_subdir(&parent.fd, &name).map_err(target_err)?
                    }
                    Err(e) => return Err(target_err(e)),
                };
                if existed {
                    self.prepare_existing_dir(&fd, &path);
                }
                let dir = Dir { fd, path };
                if let Some(id) = n.subtree {
                    self.restore_tree(&id, &dir, rel)?;
                }
                self.dirs.fetch_add(1, Ordering::Relaxed);
                // Set-ID bits on a directory grant no privilege (setgid
                // only passes its group on to new entries), so they stay.
                self.set_meta_file(&File::from(dir.fd), &dir.path, n, n.mode & 0o7777, true, existed);
                self.defer_flags(n, rel);
            }
            NodeKind::File => {
                if n.nlink > 1 {
                    let key = (n.dev, n.ino);
                    let mut links = self.links.lock();
                    if links.contains_key(&key) {
                        self.deferred_links.lock().push((rel.to_vec(), key, n.clone()));
                        return Ok(());
                    }
                    links.insert(key, rel.to_vec());
                }
                self.write_file(parent, &name, &path, n)?;
                self.defer_flags(n, rel);
            }
            NodeKind::Symlink => {
                let Ok(target) = CString::new(n.link_target.as_deref().unwrap_or_default()) else {
                    self.progress.warn(format!("{}: symlink target with a NUL byte in snapshot; skipped", path.display()));
                    return Ok(());
                };
                self.unlock_existing(parent, &name);
                unsafe { libc::unlinkat(pfd, name.as_ptr(), 0) };
                cvt(unsafe { libc::symlinkat(target.as_ptr(), pfd, name.as_ptr()) }).map_err(target_err)?;
                self.set_meta_at(parent, &name, n, true);
            }
            NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice | NodeKind::Socket => {
                // A socket comes back as the inode it was (what `ls` and
                // permissions see); its server binds a new one anyway.
                if n.kind != NodeKind::Fifo && !self.opts.special {
                    self.leave_out(&path, "device node");
                    return Ok(());
                }
                self.unlock_existing(parent, &name);
                unsafe { libc::unlinkat(pfd, name.as_ptr(), 0) };
                let mode = if self.opts.special { n.mode } else { n.mode & !0o6000 };
                if unsafe { libc::mknodat(pfd, name.as_ptr(), mode, n.rdev as libc::dev_t) } != 0 {
                    self.progress.warn(format!("{}: cannot create special file: {}", path.display(), std::io::Error::last_os_error()));
                    return Ok(());
                }
                self.set_meta_at(parent, &name, n, false);
            }
        }
        Ok(())
    }

    fn write_file(&self, parent: &Dir, name: &CStr, path: &Path, n: &Node) -> Result<()> {
        let target_err = |e: std::io::Error| IngestError::Target { path: path.to_path_buf(), source: e };
        let mut mode = n.mode & 0o7777;
        if mode & 0o6000 != 0 && !self.opts.special {
            self.leave_out(path, "set-user/group-ID bit");
            mode &= !0o6000;
        }
        // The common case, a fresh target, costs open + write + futimens:
        // the mode goes in with the create and a new file already has our
        // owner. Only an existing file gets chmod/chown afterwards.
        // O_EXCL | O_NOFOLLOW: a symlink in the way is replaced, never
        // written through.
        let create = || openat(&parent.fd, name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW, mode);
        let (f, existed) = match create() {
            Ok(f) => (File::from(f), false),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                self.unlock_existing(parent, name);
                unsafe { libc::unlinkat(parent.fd.as_raw_fd(), name.as_ptr(), 0) };
                (File::from(create().map_err(target_err)?), true)
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
        self.set_meta_file(&f, path, n, mode, existed || mode & self.umask != 0, false);
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(off, Ordering::Relaxed);
        self.progress.add(&self.progress.files, 1);
        Ok(())
    }

    /// Owner, `mode` and mtime through an open descriptor (a file, or a
    /// directory once its children are written).
    fn set_meta_file(&self, f: &File, path: &Path, n: &Node, mode: u32, needs_chmod: bool, existed: bool) {
        if self.opts.owners && (n.uid != self.euid || n.gid != self.egid) {
            if let Err(e) = std::os::unix::fs::fchown(f, Some(n.uid), Some(n.gid)) {
                self.progress.warn(format!("{}: cannot set owner: {e}", path.display()));
            }
        }
        // chown clears set-id bits, so the mode goes on after it.
        if needs_chmod || (self.opts.owners && mode & 0o6000 != 0) {
            if let Err(e) = f.set_permissions(std::fs::Permissions::from_mode(mode)) {
                self.progress.warn(format!("{}: cannot set mode: {e}", path.display()));
            }
        }
        self.set_xattrs(Entry::Fd(f.as_fd()), path, n, existed);
        let t = std::fs::FileTimes::new().set_modified(to_systime(n.mtime_ns)).set_accessed(to_systime(n.mtime_ns));
        if let Err(e) = f.set_times(t) {
            self.progress.warn(format!("{}: cannot set mtime: {e}", path.display()));
        }
    }

    /// The same for entries that cannot be opened (symlinks, special
    /// files), by name in their parent and without following.
    fn set_meta_at(&self, parent: &Dir, name: &CStr, n: &Node, symlink: bool) {
        let pfd = parent.fd.as_raw_fd();
        unsafe {
            if self.opts.owners {
                libc::fchownat(pfd, name.as_ptr(), n.uid, n.gid, libc::AT_SYMLINK_NOFOLLOW);
            }
            if !symlink {
                // Special files only: set-ID bits are stripped from them
                // unless `special` (they mean nothing there anyway).
                let mode = if self.opts.special { n.mode & 0o7777 } else { n.mode & 0o1777 };
                libc::fchmodat(pfd, name.as_ptr(), mode, libc::AT_SYMLINK_NOFOLLOW);
            }
        }
        let path = parent.path.join(OsStr::from_bytes(name.to_bytes()));
        self.set_xattrs(Entry::At(parent.fd.as_fd(), name), &path, n, false);
        unsafe {
            let ts = libc::timespec { tv_sec: n.mtime_ns.div_euclid(1_000_000_000), tv_nsec: n.mtime_ns.rem_euclid(1_000_000_000) };
            let times = [ts, ts];
            libc::utimensat(pfd, name.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW);
        }
    }
}

impl Restorer<'_> {
    /// Sets the node's extended attributes (ACLs, capabilities, labels
    /// among them). On a directory that was there before, attributes the
    /// snapshot does not name are removed. Each one that cannot be set is
    /// a warning (a non-root restore cannot set `trusted.*`, a file system
    /// may refuse a namespace).
    fn set_xattrs(&self, e: Entry<'_>, path: &Path, n: &Node, existed: bool) {
        let wanted: &[(Vec<u8>, Vec<u8>)] = n.ext.as_ref().map_or(&[], |x| &x.xattrs);
        if existed {
            if let Ok(current) = attrs::read_xattrs(e) {
                for (name, _) in current.iter().filter(|(c, _)| !wanted.iter().any(|(w, _)| w == c)) {
                    if let Err(err) = attrs::remove_xattr(e, name) {
                        self.progress.warn(format!("{}: cannot remove extended attribute {}: {err}", path.display(), String::from_utf8_lossy(name)));
                    }
                }
            }
        }
        for (name, value) in wanted {
            // Privileged namespaces: file capabilities grant privilege like
            // set-ID bits, and trusted.* / security.* steer the kernel
            // (overlayfs redirects, security labels). Only an admin's
            // restore sets them from a snapshot.
            if !self.opts.special && (name.starts_with(b"trusted.") || name.starts_with(b"security.")) {
                self.leave_out(path, &format!("extended attribute {}", String::from_utf8_lossy(name)));
                continue;
            }
            if let Err(err) = attrs::write_xattr(e, name, value) {
                self.progress.warn(format!("{}: cannot set extended attribute {}: {err}", path.display(), String::from_utf8_lossy(name)));
            }
        }
    }

    fn defer_flags(&self, n: &Node, rel: &[Vec<u8>]) {
        if let Some(flags) = n.ext.as_ref().map(|x| x.flags).filter(|&f| f != 0) {
            self.deferred_flags.lock().push((rel.to_vec(), flags));
        }
    }

    /// Inode flags, deepest entries first: a directory made immutable
    /// before its children's flags are set would still allow that, but
    /// the order keeps the rule simple ("nothing changes below a flagged
    /// directory once it is flagged").
    fn apply_deferred_flags(&self) {
        let mut todo = std::mem::take(&mut *self.deferred_flags.lock());
        todo.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.len()));
        for (rel, flags) in todo {
            let path = self.display(&rel);
            let Some((name, parent_rel)) = rel.split_last() else { continue };
            let set = open_dir_beneath(&self.root.fd, parent_rel)
                .and_then(|dir| {
                    let name = CString::new(name.as_slice()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
                    openat(&dir, &name, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0)
                })
                .and_then(|fd| attrs::write_flags(fd.as_fd(), flags));
            if let Err(e) = set {
                self.progress.warn(format!("{}: cannot set inode flags {}: {e}", path.display(), attrs::flag_letters(flags)));
            }
        }
    }

    /// The target directory's owner, mode, xattrs, mtime and, last of
    /// all, inode flags from the snapshot's source directory.
    fn set_root_meta(&self, n: &Node) {
        let fd = match self.root.fd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                self.progress.warn(format!("{}: cannot set the directory's own metadata: {e}", self.root.path.display()));
                return;
            }
        };
        let f = File::from(fd);
        self.set_meta_file(&f, &self.root.path, n, n.mode & 0o7777, true, true);
        if let Some(flags) = n.ext.as_ref().map(|x| x.flags).filter(|&f| f != 0) {
            if let Err(e) = attrs::write_flags(f.as_fd(), flags) {
                self.progress.warn(format!("{}: cannot set inode flags {}: {e}", self.root.path.display(), attrs::flag_letters(flags)));
            }
        }
    }

    /// Before an entry in the way is replaced: an immutable or append-only
    /// file (an earlier restore's) cannot be unlinked until the flag is off.
    fn unlock_existing(&self, parent: &Dir, name: &CStr) {
        // Only files and directories have flags; a symlink gives ELOOP.
        if let Ok(fd) = openat(&parent.fd, name, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0) {
            self.unlock(&fd, &parent.path.join(OsStr::from_bytes(name.to_bytes())));
        }
    }

    fn unlock(&self, fd: &OwnedFd, path: &Path) {
        match attrs::read_flags(fd.as_fd()) {
            Ok(f) if f & attrs::LOCKING != 0 => {
                if let Err(e) = attrs::write_flags(fd.as_fd(), f & !attrs::LOCKING) {
                    self.progress.warn(format!("{}: cannot clear inode flags {} to restore over it: {e}", path.display(), attrs::flag_letters(f & attrs::LOCKING)));
                }
            }
            _ => {}
        }
    }

    /// A directory already in the target (a restore run again): writable
    /// again, and without the default ACL an earlier restore gave it, so
    /// new entries do not inherit an ACL their snapshot does not have (it
    /// goes back on with the directory's own attributes, after them).
    fn prepare_existing_dir(&self, fd: &OwnedFd, path: &Path) {
        self.unlock(fd, path);
        let _ = attrs::remove_xattr(Entry::Fd(fd.as_fd()), b"system.posix_acl_default");
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
