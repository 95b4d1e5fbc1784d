//! The backup pipeline: parallel walk + read + chunk + hash + compress,
//! directory trees built bottom-up, one snapshot committed at the end.

use crate::attrs::{self, Entry};
use crate::chunker::{read_up_to, Chunker};
use crate::error::{IngestError, Result};
use crate::exclude::Excludes;
use crate::fsat;
use crate::meta::{node_from, unchanged};
use crate::progress::Progress;
use crate::readahead::Readahead;
use lifeboat_api_types::BackupSelection;
use lifeboat_store::{BackupSummary, BlobId, BlobKind, BlobSink, Datastore, DirCursor, Node, NodeExt, NodeKind, RootDir, Snapshot, StoreError, Tree, TreeWriter};
use rayon::prelude::*;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

thread_local! {
    /// Each walker thread's file buffer, reused file after file: fresh
    /// buffers per file cost page faults and TLB shoot-downs that showed
    /// as a tenth of a backup's CPU.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A backup's inputs: what to read (`select`, shared with the CLI and
/// the API's `backup` job) and how.
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// Files and directories to back up, as given: `resolve_sources`
    /// makes them canonical, and a missing one fails the backup. A single
    /// directory's contents become the snapshot's root; otherwise the root
    /// holds one entry per source, named by its last component.
    pub sources: Vec<PathBuf>,
    /// The host name the snapshot records (`crate::hostname()` for this
    /// machine). With the source paths it picks the parent snapshot, so a
    /// different name means a full read.
    pub hostname: String,
    /// Worker threads; 0 = a default from the core count.
    pub threads: usize,
    /// Ignore any parent snapshot and read every file.
    pub force_full: bool,
    /// Tags, excludes, `--one-file-system`, `--exclude-nodump`.
    pub select: BackupSelection,
}

/// What `backup` committed.
#[derive(Debug)]
pub struct BackupOutcome {
    /// The id of the new snapshot.
    pub snapshot_id: BlobId,
    /// The snapshot as committed: root tree, parent, summary counters.
    pub snapshot: Snapshot,
    /// The run's warnings (a copy of `Progress::messages`, so at most the
    /// first 1000): entries skipped, stored without some metadata, or
    /// changed while read. The snapshot is committed all the same.
    pub warnings: Vec<String>,
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    dirs: AtomicU64,
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unchanged: AtomicU64,
    dirs_unchanged: AtomicU64,
    total_bytes: AtomicU64,
    bytes_read: AtomicU64,
}

/// Where a backup's blobs go and where its parent's trees come from:
/// the local datastore (`LocalTarget`, over a `BlobSink`) or an appliance
/// across the network (`lifeboat agent`, crates/remote). The walk, chunking
/// and hashing are the same for both.
pub trait BackupTarget: Sync {
    /// Stores `data` unless it is stored already; returns its id.
    fn put(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId>;
    /// A tree blob (plain bytes) of the parent snapshot.
    fn read_tree(&self, id: &BlobId) -> lifeboat_store::Result<Vec<u8>>;
}

/// The local datastore as a backup target.
pub struct LocalTarget<'a> {
    /// Where new blobs go. It registered this run as a writer of the
    /// datastore, and skips blobs the datastore already holds.
    pub sink: &'a BlobSink,
    /// The datastore the parent snapshot's trees are read from (the one
    /// `sink` writes to).
    pub ds: &'a Datastore,
}

impl BackupTarget for LocalTarget<'_> {
    fn put(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId> {
        Ok(self.sink.put(kind, data)?.id)
    }
    fn read_tree(&self, id: &BlobId) -> lifeboat_store::Result<Vec<u8>> {
        self.ds.read_blob(id)
    }
}

/// How files become blobs; every writer of a datastore must agree (they
/// come from its config), or identical files would not deduplicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkParams {
    /// Files of at most this many bytes are stored whole, as one
    /// `SmallFile` blob (an empty file as none); larger ones are chunked.
    pub small_file_max: u64,
    /// Smallest content-defined chunk, in bytes (a file's last chunk may
    /// be shorter).
    pub chunk_min: u32,
    /// Average chunk size the cut points aim at, in bytes.
    pub chunk_avg: u32,
    /// Largest chunk, in bytes: a cut is forced there.
    pub chunk_max: u32,
}

impl From<&lifeboat_store::DatastoreConfig> for ChunkParams {
    fn from(c: &lifeboat_store::DatastoreConfig) -> Self {
        ChunkParams { small_file_max: c.small_file_max, chunk_min: c.chunk_min, chunk_avg: c.chunk_avg, chunk_max: c.chunk_max }
    }
}

struct Archiver<'a> {
    target: &'a dyn BackupTarget,
    excludes: Excludes,
    progress: &'a Progress,
    c: Counters,
    small_file_max: u64,
    chunker: Chunker,
    readahead: Readahead,
    one_file_system: bool,
    exclude_nodump: bool,
    /// An unchanged file's xattrs and flags are the parent's (false when
    /// the parent predates them).
    reuse_ext: bool,
}

/// The parent snapshot a backup compares against.
#[derive(Clone, Copy, Debug)]
pub struct ParentTree {
    /// The parent snapshot's root tree (`Snapshot::tree`).
    pub tree: BlobId,
    /// Its trees record xattrs and inode flags (`BackupSummary::ext_metadata`).
    pub ext_metadata: bool,
}

/// A directory's entry names in one buffer: a directory of 200,000
/// entries costs its name bytes plus 9 bytes each, not 200,000 strings.
#[derive(Default)]
struct NameList {
    bytes: Vec<u8>,
    ends: Vec<u32>,
    /// The listing says the entry is a regular file (worth reading ahead).
    regular: Vec<bool>,
}

impl NameList {
    fn push(&mut self, name: &[u8], regular: bool) {
        self.bytes.extend_from_slice(name);
        self.ends.push(self.bytes.len() as u32);
        self.regular.push(regular);
    }
    fn get(&self, i: u32) -> &[u8] {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }
    /// Indices in name byte order (the order of tree entries).
    fn sorted(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.ends.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.get(a).cmp(self.get(b)));
        order
    }
}

/// Entries of one directory processed together; bounds the decoded nodes
/// held per directory.
const DIR_BATCH: usize = 1024;

/// Threads that read files ahead of the walk (`readahead.rs`): enough
/// to keep a disk's queue full while they wait on inodes.
const READAHEAD_THREADS: usize = 4;

/// Worker threads when the caller asks for 0 (backup and restore): one
/// and a half per core, at least 2 and at most 16.
pub(crate) fn default_threads() -> usize {
    // File IO blocks; a few more threads than cores keep the CPUs busy on
    // a cold cache without thrashing a warm one.
    let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    (n + n / 2).clamp(2, 16)
}

/// Finds the parent: the newest snapshot of the same host and source set.
pub fn find_parent(ds: &Datastore, hostname: &str, paths: &[String]) -> Result<Option<(BlobId, Snapshot)>> {
    Ok(ds.snapshots()?.into_iter().rev().find(|(_, s)| s.hostname == hostname && s.paths == paths))
}

/// Canonical, sorted, deduplicated sources and their path strings (as a
/// snapshot records them). A missing source is an error, not a warning.
pub fn resolve_sources(given: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<String>)> {
    if given.is_empty() {
        return Err(IngestError::SourceMissing { path: PathBuf::from("(none given)") });
    }
    let mut sources = Vec::new();
    for s in given {
        let abs = std::fs::canonicalize(s).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => IngestError::SourceMissing { path: s.clone() },
            _ => IngestError::Source { path: s.clone(), source: e },
        })?;
        sources.push(abs);
    }
    sources.sort();
    sources.dedup();
    let mut paths: Vec<String> = sources.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    paths.sort();
    Ok((sources, paths))
}

/// What `archive` walked.
#[derive(Debug)]
pub struct Archived {
    /// The root tree.
    pub tree: BlobId,
    /// The source directory's own metadata (one directory as the source).
    pub root: Option<RootDir>,
    /// The walk's counters (the blob counters and duration are the
    /// caller's to fill in).
    pub summary: BackupSummary,
}

/// Walks `sources` (from `resolve_sources`) into `target`: every file
/// read, chunked, hashed and put, unless the parent's tree says it is
/// unchanged.
/// `select`'s tags are the caller's to record; the walk uses the rest.
pub fn archive(target: &dyn BackupTarget, sources: &[PathBuf], parent: Option<ParentTree>, params: ChunkParams, select: &BackupSelection, threads: usize, progress: &Progress) -> Result<Archived> {
    let arch = Archiver {
        target,
        excludes: Excludes::new(&select.excludes)?,
        progress,
        c: Counters::default(),
        small_file_max: params.small_file_max,
        chunker: Chunker::new(params.chunk_min, params.chunk_avg, params.chunk_max),
        readahead: Readahead::start(READAHEAD_THREADS),
        one_file_system: select.one_file_system,
        exclude_nodump: select.exclude_nodump,
        reuse_ext: parent.is_some_and(|p| p.ext_metadata),
    };
    let threads = if threads == 0 { default_threads() } else { threads };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("backup-{i}"))
        .build()
        .map_err(|e| IngestError::Source { path: PathBuf::from("thread pool"), source: std::io::Error::other(e) })?;
    let (tree, root) = pool.install(|| arch.archive_roots(sources, parent.map(|p| p.tree)))?;
    if progress.cancelled() {
        return Err(IngestError::Interrupted);
    }
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let summary = BackupSummary {
        files: get(&arch.c.files),
        dirs: get(&arch.c.dirs),
        files_new: get(&arch.c.files_new),
        files_changed: get(&arch.c.files_changed),
        files_unchanged: get(&arch.c.files_unchanged),
        dirs_unchanged: get(&arch.c.dirs_unchanged),
        total_bytes: get(&arch.c.total_bytes),
        bytes_read: get(&arch.c.bytes_read),
        warnings: progress.warnings.load(Ordering::Relaxed),
        ext_metadata: true,
        ..Default::default()
    };
    Ok(Archived { tree, root, summary })
}

/// Backs `opts.sources` up into the local datastore `ds` and commits one
/// snapshot. The parent is the newest snapshot of the same host name and
/// source paths (none with `force_full`); a file whose size, mtime,
/// ctime and inode match the parent's record is taken as unchanged: not
/// read, and given the parent's content (and, when the parent records
/// them, its xattrs and flags).
///
/// Blocks until done: call it from a thread that may block (not an async
/// executor). It runs its own pool of `opts.threads` workers plus a few
/// read-ahead threads. Other threads may sample `progress` meanwhile, and
/// setting `progress.cancel` stops the run with `IngestError::Interrupted`.
///
/// Entries that cannot be read are warnings (`BackupOutcome::warnings`),
/// not errors. On any error nothing is committed; blobs already stored
/// stay, unreferenced, until gc.
pub fn backup(ds: Arc<Datastore>, opts: &BackupOptions, progress: &Progress) -> Result<BackupOutcome> {
    let start = Instant::now();
    let time = chrono::Utc::now();
    let (sources, paths) = resolve_sources(&opts.sources)?;

    // The sink registers this run as a writer and refreshes the index
    // view first: the parent's blobs are reused without a lookup, so the
    // parent must be chosen from a view a concurrent gc waits for.
    let sink = BlobSink::new(ds.clone())?;
    let parent = if opts.force_full { None } else { find_parent(&ds, &opts.hostname, &paths)? };
    let parent_tree = parent.as_ref().map(|(_, p)| ParentTree { tree: p.tree, ext_metadata: p.summary.ext_metadata });

    let target = LocalTarget { sink: &sink, ds: &ds };
    let params = ChunkParams::from(ds.config());
    let Archived { tree, root, mut summary } = match archive(&target, &sources, parent_tree, params, &opts.select, opts.threads, progress) {
        Ok(r) => r,
        Err(e) => {
            sink.abort();
            return Err(e);
        }
    };

    let stats = sink.stats();
    summary.bytes_added = stats.bytes_added;
    summary.bytes_stored = stats.bytes_stored;
    summary.blobs_added = stats.blobs_added;
    summary.duration_ms = start.elapsed().as_millis() as u64;
    let snapshot = Snapshot {
        time,
        hostname: opts.hostname.clone(),
        paths,
        tags: opts.select.tags.clone(),
        tree,
        parent: parent.map(|(id, _)| id),
        summary,
        program: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
        kind: Default::default(),
        root,
    };
    let snapshot_id = sink.commit_snapshot(snapshot.encode())?;
    let warnings = progress.messages.lock().unwrap().clone();
    Ok(BackupOutcome { snapshot_id, snapshot, warnings })
}

impl Archiver<'_> {
    /// One source directory: its contents form the root, and its own
    /// metadata is returned beside it. Several sources (or a file): the
    /// root holds one entry per source, by name.
    fn archive_roots(&self, sources: &[PathBuf], parent: Option<BlobId>) -> Result<(BlobId, Option<RootDir>)> {
        let source_err = |path: &Path| {
            let path = path.to_path_buf();
            move |e| IngestError::Source { path, source: e }
        };
        if sources.len() == 1 {
            let meta = std::fs::symlink_metadata(&sources[0]).map_err(source_err(&sources[0]))?;
            if meta.is_dir() {
                let fd = fsat::open_dir(&sources[0]).map_err(source_err(&sources[0]))?;
                let st = fsat::fstat(fd.as_fd()).map_err(source_err(&sources[0]))?;
                let mut node = node_from(Vec::new(), &st);
                node.ext = self.read_ext(Entry::Fd(fd.as_fd()), Some(fd.as_fd()), &sources[0]);
                return Ok((self.archive_dir(&fd, &sources[0], parent, st.st_dev)?, Some(RootDir::of(&node))));
            }
        }
        let mut names: Vec<(Vec<u8>, &PathBuf)> = Vec::new();
        for s in sources {
            let name = s.file_name().unwrap_or(OsStr::new("root")).as_bytes().to_vec();
            if let Some((_, other)) = names.iter().find(|(n, _)| *n == name) {
                return Err(IngestError::SourceNameClash { a: (*other).clone(), b: s.clone(), name: String::from_utf8_lossy(&name).into() });
            }
            names.push((name, s));
        }
        let read = |id: &BlobId| self.target.read_tree(id);
        let parent_tree = parent.and_then(|id| match load_tree(&id, &read) {
            Ok(t) => Some(t),
            Err(e) => {
                self.progress.warn(format!("parent snapshot's root tree unreadable ({e}); reading in full"));
                None
            }
        });
        let results: Vec<Result<Option<Node>>> = names
            .par_iter()
            .map(|(name, path)| {
                let old = parent_tree.as_ref().and_then(|t| t.find(name));
                // A source is looked up in its parent directory like any
                // entry ("/" as "." in itself).
                let (dir, lookup) = match (path.parent(), path.file_name()) {
                    (Some(p), Some(n)) => (p, CString::new(n.as_bytes()).expect("a path has no NUL")),
                    _ => (path.as_path(), CString::new(".").unwrap()),
                };
                let fd = fsat::open_dir(dir).map_err(source_err(dir))?;
                let dev = fsat::stat_at(fd.as_fd(), &lookup).map_err(source_err(path))?.st_dev;
                self.archive_entry(fd.as_fd(), &lookup, path, name.clone(), old, dev)
            })
            .collect();
        let mut nodes = Vec::new();
        for r in results {
            if let Some(n) = r? {
                nodes.push(n);
            }
        }
        Ok((self.target.put(BlobKind::Tree, &Tree { nodes }.encode())?, None))
    }

    /// Archives the contents of the open directory `dir` (at `path`, for
    /// messages and excludes); returns its tree id. `fs_dev` is the device
    /// of the source it belongs to (`--one-file-system`).
    ///
    /// Entries are taken in name order, in batches: the parent's nodes are
    /// merge-joined from its encoded tree and the new nodes are encoded as
    /// each batch completes, so a directory with a million entries holds
    /// encoded bytes, never a million decoded nodes.
    fn archive_dir(&self, dir: &OwnedFd, path: &Path, parent: Option<BlobId>, fs_dev: u64) -> Result<BlobId> {
        if self.progress.cancelled() {
            return Err(IngestError::Interrupted);
        }
        let mut names = NameList::default();
        // d_type from the listing: no extra syscall on the usual
        // file systems.
        if let Err(e) = fsat::list_dir(dir.as_fd(), |name, regular| names.push(name, regular)) {
            self.progress.warn(format!("{}: error while listing: {e}; entries after it not backed up", path.display()));
        }
        let order = names.sorted();

        let read = |id: &BlobId| self.target.read_tree(id);
        let cursor = match parent.map(|id| DirCursor::open(&id, &read)) {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                self.progress.warn(format!("{}: parent snapshot's tree unreadable ({e}); reading in full", path.display()));
                None
            }
            None => None,
        };
        let mut parent = ParentListing { cursor, pending: None };
        let mut out = TreeWriter::new(order.len());
        // TreeWriter speaks StoreError; a target's other errors (a remote
        // appliance's) ride through it and are taken back out below.
        let target_error = std::sync::Mutex::new(None);
        let mut store_page = |page: Vec<u8>| {
            self.target.put(BlobKind::Tree, &page).map_err(|e| match e {
                IngestError::Store(e) => e,
                other => {
                    *target_error.lock().unwrap() = Some(other);
                    StoreError::Interrupted
                }
            })
        };
        // Each batch is joined with the parent's nodes one batch ahead, so
        // its new files are read ahead while the batch before is worked on.
        let mut batches = order.chunks(DIR_BATCH);
        let mut next = batches.next().map(|b| self.prepare_batch(path, &names, b, &mut parent));
        while let Some((batch, olds)) = next.take() {
            next = batches.next().map(|b| self.prepare_batch(path, &names, b, &mut parent));
            let run = |(name, old): (&&[u8], &Option<Node>)| {
                let lookup = CString::new(*name).expect("a listed name has no NUL");
                self.archive_entry(dir.as_fd(), &lookup, &path.join(OsStr::from_bytes(name)), name.to_vec(), old.as_ref(), fs_dev)
            };
            // Every entry may go to another thread: a sub-directory kept on
            // this one would wait for its siblings, and a whole subtree could
            // hold up the walk while the other threads sit idle (a root of
            // four directories was walked one directory at a time). Rayon
            // only splits when a thread is idle, so small directories cost
            // next to nothing extra.
            let results: Vec<Result<Option<Node>>> = batch.par_iter().zip(olds.par_iter()).map(run).collect();
            for r in results {
                if let Some(n) = r? {
                    if let Err(e) = out.push(&n, &mut store_page) {
                        return Err(target_error.lock().unwrap().take().unwrap_or(e.into()));
                    }
                }
            }
        }
        self.progress.add(&self.progress.dirs, 1);
        let tree = match out.finish(&mut store_page) {
            Ok(t) => t,
            Err(e) => return Err(target_error.lock().unwrap().take().unwrap_or(e.into())),
        };
        self.target.put(BlobKind::Tree, &tree)
    }

    /// A batch's names (indices into `names`) with their nodes in the
    /// parent snapshot, and read-ahead hints for its new files.
    fn prepare_batch<'n>(&self, dir: &Path, names: &'n NameList, batch: &[u32], parent: &mut ParentListing) -> (Vec<&'n [u8]>, Vec<Option<Node>>) {
        let batch_names: Vec<&[u8]> = batch.iter().map(|&i| names.get(i)).collect();
        let olds: Vec<Option<Node>> = batch_names.iter().map(|name| parent.find(name, dir, self.progress)).collect();
        // Files the parent knows may be unchanged and not read at all;
        // the rest will be. (Read-ahead opens by path: none beyond
        // PATH_MAX, where it could only fail.)
        if dir.as_os_str().len() + 256 < libc::PATH_MAX as usize {
            for ((&i, name), old) in batch.iter().zip(&batch_names).zip(&olds) {
                if old.is_none() && names.regular[i as usize] && !self.progress.cancelled() {
                    self.readahead.hint(dir.join(OsStr::from_bytes(name)));
                }
            }
        }
        (batch_names, olds)
    }

    /// Archives the entry `lookup` of the open directory `dir` as a node
    /// named `name`; `path` is where it is, for messages and excludes.
    fn archive_entry(&self, dir: BorrowedFd<'_>, lookup: &CStr, path: &Path, name: Vec<u8>, old: Option<&Node>, fs_dev: u64) -> Result<Option<Node>> {
        if self.progress.cancelled() {
            return Err(IngestError::Interrupted);
        }
        if self.excludes.excluded(path) {
            return Ok(None);
        }
        let st = match fsat::stat_at(dir, lookup) {
            Ok(st) => st,
            Err(e) => {
                self.progress.warn(format!("{}: {}; skipped", path.display(), describe(&e)));
                return Ok(None);
            }
        };
        let mut node = node_from(name, &st);
        match node.kind {
            NodeKind::Dir => {
                if self.one_file_system && st.st_dev != fs_dev {
                    // A mount point: kept as an empty directory, so a
                    // restore has somewhere to mount it again.
                    self.c.dirs.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("{}: another file system; not descended into (--one-file-system)", path.display());
                    node.subtree = Some(self.target.put(BlobKind::Tree, &Tree::default().encode())?);
                    return Ok(Some(node));
                }
                let fd = match fsat::open_dir_at(dir, lookup) {
                    Ok(fd) => fd,
                    Err(e) => {
                        self.c.dirs.fetch_add(1, Ordering::Relaxed);
                        self.progress.warn(format!("{}: cannot read directory: {}; stored empty", path.display(), describe(&e)));
                        node.subtree = Some(self.target.put(BlobKind::Tree, &Tree::default().encode())?);
                        return Ok(Some(node));
                    }
                };
                node.ext = self.read_ext(Entry::Fd(fd.as_fd()), Some(fd.as_fd()), path);
                if self.nodump(&node) {
                    return Ok(None);
                }
                self.c.dirs.fetch_add(1, Ordering::Relaxed);
                let old_tree = old.filter(|o| o.kind == NodeKind::Dir).and_then(|o| o.subtree);
                let id = self.archive_dir(&fd, path, old_tree, fs_dev)?;
                if old.and_then(|o| o.subtree) == Some(id) {
                    self.c.dirs_unchanged.fetch_add(1, Ordering::Relaxed);
                }
                node.subtree = Some(id);
            }
            NodeKind::Symlink => match fsat::read_link_at(dir, lookup) {
                Ok(t) => {
                    node.link_target = Some(t);
                    node.ext = self.read_ext(Entry::At(dir, lookup), None, path);
                }
                Err(e) => {
                    self.progress.warn(format!("{}: cannot read link: {}; skipped", path.display(), describe(&e)));
                    return Ok(None);
                }
            },
            NodeKind::File => {
                match old {
                    Some(o) if unchanged(o, &node) => {
                        node.content = o.content.clone();
                        node.ext = if self.reuse_ext { o.ext.clone() } else { self.read_ext_unopened_file(dir, lookup, path) };
                        if self.nodump(&node) {
                            return Ok(None);
                        }
                        self.c.files_unchanged.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        let f = match fsat::open_file_at(dir, lookup) {
                            Ok(fd) => File::from(fd),
                            Err(e) => {
                                self.progress.warn(format!("{}: {}; skipped", path.display(), describe(&e)));
                                return Ok(None);
                            }
                        };
                        node.ext = self.read_ext(Entry::Fd(f.as_fd()), Some(f.as_fd()), path);
                        if self.nodump(&node) {
                            return Ok(None);
                        }
                        if old.is_some() {
                            self.c.files_changed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            self.c.files_new.fetch_add(1, Ordering::Relaxed);
                        }
                        match self.read_file(f, path, &mut node) {
                            Ok(()) => {}
                            Err(ReadError::Skip(msg)) => {
                                self.progress.warn(msg);
                                return Ok(None);
                            }
                            Err(ReadError::Fatal(e)) => return Err(e),
                        }
                    }
                }
                self.c.files.fetch_add(1, Ordering::Relaxed);
                self.c.total_bytes.fetch_add(node.size, Ordering::Relaxed);
                self.progress.add(&self.progress.files, 1);
                self.progress.add(&self.progress.bytes, node.size);
            }
            // Device nodes, FIFOs, sockets: never opened (a device's open
            // can have effects, a FIFO's can block), so no inode flags.
            _ => node.ext = self.read_ext(Entry::At(dir, lookup), None, path),
        }
        Ok(Some(node))
    }

    /// The entry's xattrs and (through `fd`, when it could be opened)
    /// inode flags. What cannot be read is a warning: the entry is stored
    /// without it, never silently.
    fn read_ext(&self, e: Entry<'_>, fd: Option<BorrowedFd<'_>>, path: &Path) -> Option<Box<NodeExt>> {
        let xattrs = attrs::read_xattrs(e).unwrap_or_else(|err| {
            self.progress.warn(format!("{}: cannot read extended attributes: {err}; stored without them", path.display()));
            Vec::new()
        });
        let flags = fd.map_or(0, |fd| {
            attrs::read_flags(fd).unwrap_or_else(|err| {
                self.progress.warn(format!("{}: cannot read inode flags: {err}; stored without them", path.display()));
                0
            })
        });
        let ext = NodeExt { xattrs, flags };
        (!ext.is_empty()).then(|| Box::new(ext))
    }

    /// An unchanged file's xattrs and flags when the parent does not have
    /// them: opened for the flags (not read).
    fn read_ext_unopened_file(&self, dir: BorrowedFd<'_>, lookup: &CStr, path: &Path) -> Option<Box<NodeExt>> {
        match fsat::open_file_at(dir, lookup) {
            Ok(fd) => self.read_ext(Entry::Fd(fd.as_fd()), Some(fd.as_fd()), path),
            Err(_) => self.read_ext(Entry::At(dir, lookup), None, path),
        }
    }

    /// `--exclude-nodump` and the entry has the nodump flag.
    fn nodump(&self, node: &Node) -> bool {
        self.exclude_nodump && node.ext.as_ref().is_some_and(|e| e.flags & attrs::NODUMP != 0)
    }

    /// Reads and stores a file's content into `node.content`: whole as one
    /// blob up to `small_file_max`, content-defined chunks beyond. Both go
    /// through this thread's read buffer.
    fn read_file(&self, f: File, path: &Path, node: &mut Node) -> Result<(), ReadError> {
        READ_BUFFER.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => self.read_file_with(f, path, node, &mut buf),
            // Only if a put re-entered the walk on this thread.
            Err(_) => self.read_file_with(f, path, node, &mut Vec::new()),
        })
    }

    fn read_file_with(&self, mut f: File, path: &Path, node: &mut Node, buf: &mut Vec<u8>) -> Result<(), ReadError> {
        let skip = |e: std::io::Error| ReadError::Skip(format!("{}: {}; skipped", path.display(), describe(&e)));
        // Opened by name after the stat: still the same regular file?
        let st = fsat::fstat(f.as_fd()).map_err(skip)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_ino != node.ino {
            return Err(ReadError::Skip(format!("{}: replaced while being backed up; skipped", path.display())));
        }
        let small_max = usize::try_from(self.small_file_max).unwrap_or(usize::MAX - 1);
        let first = if node.size <= self.small_file_max { read_up_to(&mut f, buf, small_max + 1, node.size).map_err(skip)? } else { 0 };
        node.content.clear();
        let read = if first <= small_max && node.size <= self.small_file_max {
            if first > 0 {
                node.content.push(self.put(BlobKind::SmallFile, &buf[..first])?);
            }
            self.progress.add(&self.progress.bytes_read, first as u64);
            first as u64
        } else {
            // Large, or grew past the small-file limit while we read: chunk
            // it, starting with what is already read.
            let mut chunk = |data: &[u8]| {
                if self.progress.cancelled() {
                    return Err(ReadError::Fatal(IngestError::Interrupted));
                }
                node.content.push(self.put(BlobKind::FileChunk, data)?);
                self.progress.add(&self.progress.bytes_read, data.len() as u64);
                Ok(())
            };
            let read_error = |e: std::io::Error| ReadError::Skip(format!("{}: read error: {e}; skipped", path.display()));
            self.chunker.chunk(&mut f, buf, first, node.size, read_error, &mut chunk)?
        };
        self.c.bytes_read.fetch_add(read, Ordering::Relaxed);
        self.finish_read(path, &f, node, read)
    }

    /// A file that changed while being read is stored as read, with a
    /// warning; its recorded mtime stays the one from before the read, so
    /// the next backup reads it again.
    fn finish_read(&self, path: &Path, f: &File, node: &mut Node, read: u64) -> Result<(), ReadError> {
        if let Ok(after) = f.metadata() {
            let mtime_after = after.mtime() * 1_000_000_000 + after.mtime_nsec();
            if after.size() != read || mtime_after != node.mtime_ns {
                self.progress.warn(format!("{}: changed while being read; stored as read ({read} bytes)", path.display()));
            }
        }
        node.size = read;
        Ok(())
    }

    fn put(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId, ReadError> {
        self.target.put(kind, data).map_err(ReadError::Fatal)
    }
}

/// A directory's nodes in the parent snapshot, merge-joined in name order
/// with the directory's sorted entries.
struct ParentListing<'r> {
    cursor: Option<DirCursor<'r>>,
    pending: Option<Node>,
}

impl ParentListing<'_> {
    /// The parent's node named `name`; names must come in ascending order.
    fn find(&mut self, name: &[u8], dir: &Path, progress: &Progress) -> Option<Node> {
        loop {
            if self.pending.is_none() {
                self.pending = match self.cursor.as_mut().map(|c| c.next_node()) {
                    Some(Ok(n)) => n,
                    Some(Err(e)) => {
                        progress.warn(format!("{}: parent snapshot's tree damaged ({e}); reading the rest in full", dir.display()));
                        self.cursor = None;
                        None
                    }
                    None => None,
                };
            }
            match &self.pending {
                Some(o) if o.name.as_slice() < name => self.pending = None,
                Some(o) if o.name.as_slice() == name => return self.pending.take(),
                _ => return None,
            }
        }
    }
}

enum ReadError {
    /// Warn, count, leave the file out, go on.
    Skip(String),
    /// Stop the run (datastore error, cancel).
    Fatal(IngestError),
}

/// A whole directory listing through `read` (the roots of a multi-source
/// snapshot: one entry per source, never paged in practice).
fn load_tree(id: &BlobId, read: &dyn Fn(&BlobId) -> lifeboat_store::Result<Vec<u8>>) -> lifeboat_store::Result<Tree> {
    let mut c = DirCursor::open(id, read)?;
    let mut nodes = Vec::new();
    while let Some(n) = c.next_node()? {
        nodes.push(n);
    }
    Ok(Tree { nodes })
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "vanished during backup".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        ReadError::Fatal(e.into())
    }
}
