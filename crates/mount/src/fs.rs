//! The FUSE file system: node ids, directory listings, attributes, reads.
//!
//! Node ids (which FUSE also reports as `st_ino`) are a hash of the parent's
//! id and the entry name, so the same path always gets the same id: a plain
//! `readdir` can report `d_ino` without remembering anything, and an entry
//! the kernel has forgotten comes back under the same number. The table
//! from id to entry holds only what the kernel currently references
//! (counted lookups, dropped on `forget`).

use crate::reader::OpenFile;
use crate::vms::{partition_dir_name, GuestMounts, GuestNode, GuestState, VmDisk, VmSnap};
use bytes::Bytes;
use fuse3::raw::prelude::*;
use fuse3::{Errno, Inode, Result as FResult, Timestamp};
use futures_util::stream::{self, Stream};
use lifeboat_store::{BlobId, Datastore, Node, NodeKind, StoreError, Tree};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::num::NonZeroU32;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const ROOT: u64 = 1;
const SNAPSHOTS: u64 = 2;
const VMS: u64 = 3;
/// Hashed ids below this are moved up: the small ones are fixed.
const FIRST_HASHED: u64 = 16;

/// Snapshot contents never change: the kernel may cache them a while.
const TTL_TREE: Duration = Duration::from_secs(60);
/// The top level follows new (and removed) snapshots.
const TTL_TOP: Duration = Duration::from_secs(1);
/// How often the snapshot list is reread from a fresh index view.
const SNAPSHOT_REFRESH: Duration = Duration::from_secs(2);
/// Decoded tree pages kept, counted in nodes (a page holds at most 8192).
const PAGE_CACHE_NODES: usize = 64 * 1024;
const DIR_CACHE_ENTRIES: usize = 4096;
/// Entries prepared per readdir call: more than a kernel buffer takes,
/// few enough that listing a full page is not quadratic.
const LIST_BATCH: usize = 1024;
/// FOPEN_KEEP_CACHE: file contents never change, keep the page cache.
const FOPEN_KEEP_CACHE: u32 = 1 << 1;
const BLKSIZE: u32 = 4096;

#[derive(Clone)]
enum Obj {
    Root,
    Snapshots,
    /// The `latest` symlink with its target. The kernel caches symlink
    /// targets (FUSE_CACHE_SYMLINKS) with no attribute change to drop
    /// them, so each target is its own node: a new newest snapshot gives
    /// `latest` a new id once its 1 s entry TTL runs out.
    Latest(Arc<str>),
    Node(Arc<Node>),
    /// `vms/`: VM snapshots, then their disks, partitions and the guest's
    /// files (crate::vms).
    Vms,
    VmSnap(Arc<VmSnap>),
    VmDisk(Arc<VmDisk>),
    Guest(Arc<GuestNode>),
}

struct Entry {
    obj: Obj,
    parent: u64,
    name: Vec<u8>,
    lookups: u64,
}

struct SnapEntry {
    name: String,
    id: BlobId,
    node: Arc<Node>,
}

struct Snaps {
    at: Option<Instant>,
    list: Arc<Vec<SnapEntry>>,
    vms: Arc<Vec<Arc<VmSnap>>>,
}

#[derive(Default)]
struct PageCache {
    pages: HashMap<BlobId, (Arc<Vec<Node>>, u64)>,
    nodes: usize,
    tick: u64,
    /// A directory's tree id -> its page ids (itself when not paged).
    dirs: HashMap<BlobId, Arc<Vec<BlobId>>>,
}

/// One entry of a directory listing before it is handed to the kernel.
struct Proto {
    name: Vec<u8>,
    obj: Obj,
    /// The cookie that resumes after this entry.
    next: i64,
    /// "." and "..": not counted as lookups.
    dot: Option<u64>,
}

pub(crate) struct Inner {
    ds: Arc<Datastore>,
    table: Mutex<HashMap<u64, Entry>>,
    snaps: Mutex<Snaps>,
    cache: Mutex<PageCache>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    guests: Arc<GuestState>,
    uid: u32,
    gid: u32,
    mounted_at: Timestamp,
}

/// The file system served by `serve`.
pub struct SnapshotFs {
    inner: Arc<Inner>,
}

fn eio(e: StoreError) -> Errno {
    tracing::error!("{e}");
    Errno::from(libc::EIO)
}

fn ts(ns: i64) -> Timestamp {
    Timestamp::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32)
}

fn hashed_id(parent: u64, name: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&parent.to_le_bytes());
    h.update(name);
    let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap());
    if x < FIRST_HASHED {
        x + FIRST_HASHED
    } else {
        x
    }
}

/// What an entry's id is hashed from besides its parent: its name, and
/// for `latest` its target too.
fn node_key<'a>(name: &'a [u8], obj: &Obj) -> std::borrow::Cow<'a, [u8]> {
    match obj {
        Obj::Latest(t) => [name, b"\0", t.as_bytes()].concat().into(),
        _ => name.into(),
    }
}

/// The id an entry has (or will have once looked up); collisions aside.
fn entry_id(parent: u64, name: &[u8], obj: &Obj) -> u64 {
    match obj {
        Obj::Snapshots => SNAPSHOTS,
        Obj::Vms => VMS,
        _ => hashed_id(parent, &node_key(name, obj)),
    }
}

fn file_type(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

/// The entry of `list` listed as `name`, or the one whose listed name or
/// id starts with `name` (4 characters at least); None when several do.
fn find_listed<'a, T>(list: &'a [T], name: &[u8], key: impl Fn(&T) -> (&String, &BlobId)) -> Option<&'a T> {
    let q = std::str::from_utf8(name).ok()?;
    if let Some(s) = list.iter().find(|s| key(s).0 == q) {
        return Some(s);
    }
    let unique = |mut hits: Vec<&'a T>| if hits.len() == 1 { hits.pop() } else { None };
    if q.len() < 4 {
        return None;
    }
    if let Some(s) = unique(list.iter().filter(|s| key(s).0.starts_with(q)).collect()) {
        return Some(s);
    }
    let ql = q.to_ascii_lowercase();
    if !ql.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    unique(list.iter().filter(|s| key(s).1.to_hex().starts_with(&ql)).collect())
}

/// `2026-11-25T09-05-17_ab12cd34`: sortable, no ':' for shells.
pub fn snapshot_dir_name(time: &chrono::DateTime<chrono::Utc>, id: &BlobId) -> String {
    format!("{}_{}", time.format("%Y-%m-%dT%H-%M-%S"), id.short())
}

impl Obj {
    fn kind(&self) -> FileType {
        match self {
            Obj::Root | Obj::Snapshots | Obj::Vms | Obj::VmSnap(_) | Obj::VmDisk(_) => FileType::Directory,
            Obj::Latest(_) => FileType::Symlink,
            Obj::Node(n) => file_type(n.kind),
            Obj::Guest(g) => file_type(NodeKind::from_mode(std::os::unix::fs::MetadataExt::mode(&g.meta))),
        }
    }
    fn ttl(&self) -> Duration {
        match self {
            Obj::Node(_) | Obj::Guest(_) => TTL_TREE,
            _ => TTL_TOP,
        }
    }
}

impl Inner {
    fn attr(&self, ino: u64, obj: &Obj) -> FileAttr {
        let top = |kind, perm: u16, size: u64| FileAttr {
            ino,
            size,
            blocks: 0,
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
        };
        match obj {
            Obj::Root | Obj::Snapshots | Obj::Vms | Obj::VmSnap(_) | Obj::VmDisk(_) => top(FileType::Directory, 0o555, 0),
            Obj::Guest(g) => {
                use std::os::unix::fs::MetadataExt;
                let m = &g.meta;
                FileAttr {
                    ino,
                    size: m.size(),
                    blocks: m.blocks(),
                    atime: Timestamp::new(m.atime(), m.atime_nsec() as u32),
                    mtime: Timestamp::new(m.mtime(), m.mtime_nsec() as u32),
                    ctime: Timestamp::new(m.ctime(), m.ctime_nsec() as u32),
                    kind: file_type(NodeKind::from_mode(m.mode())),
                    perm: (m.mode() & 0o7777) as u16,
                    nlink: m.nlink() as u32,
                    uid: m.uid(),
                    gid: m.gid(),
                    rdev: m.rdev() as u32,
                    blksize: BLKSIZE,
                }
            }
            Obj::Latest(t) => top(FileType::Symlink, 0o777, t.len() as u64),
            Obj::Node(n) => {
                let kind = file_type(n.kind);
                let size = match n.kind {
                    NodeKind::Symlink => n.link_target.as_ref().map(|t| t.len() as u64).unwrap_or(n.size),
                    NodeKind::File | NodeKind::Dir => n.size,
                    _ => 0,
                };
                FileAttr {
                    ino,
                    size,
                    blocks: if n.kind == NodeKind::File { size.div_ceil(512) } else { 0 },
                    atime: ts(n.mtime_ns),
                    mtime: ts(n.mtime_ns),
                    ctime: ts(n.ctime_ns),
                    kind,
                    perm: (n.mode & 0o7777) as u16,
                    nlink: if kind == FileType::Directory { 2 } else { 1 },
                    uid: n.uid,
                    gid: n.gid,
                    rdev: n.rdev as u32,
                    blksize: BLKSIZE,
                }
            }
        }
    }

    fn get(&self, ino: u64) -> FResult<Obj> {
        match ino {
            ROOT => Ok(Obj::Root),
            SNAPSHOTS => Ok(Obj::Snapshots),
            VMS => Ok(Obj::Vms),
            _ => self.table.lock().get(&ino).map(|e| e.obj.clone()).ok_or_else(|| Errno::from(libc::ESTALE)),
        }
    }

    /// Records one kernel lookup of `name` under `parent`; returns its id.
    fn remember(&self, parent: u64, name: &[u8], obj: &Obj) -> u64 {
        match obj {
            Obj::Snapshots => return SNAPSHOTS,
            Obj::Vms => return VMS,
            _ => {}
        }
        let name = &*node_key(name, obj);
        let mut ino = hashed_id(parent, name);
        let mut t = self.table.lock();
        loop {
            match t.get_mut(&ino) {
                None => {
                    t.insert(ino, Entry { obj: obj.clone(), parent, name: name.to_vec(), lookups: 1 });
                    return ino;
                }
                Some(e) if e.parent == parent && e.name == name => {
                    e.lookups += 1;
                    return ino;
                }
                Some(_) => {
                    // A 64-bit hash collision: probe on. This entry's d_ino
                    // in a plain readdir will not match; nothing else breaks.
                    tracing::warn!("node id collision at {ino}");
                    ino = ino.wrapping_add(1).max(FIRST_HASHED);
                }
            }
        }
    }

    fn forget(&self, ino: u64, n: u64) {
        if ino < FIRST_HASHED {
            return;
        }
        let mut t = self.table.lock();
        if let Some(e) = t.get_mut(&ino) {
            e.lookups = e.lookups.saturating_sub(n);
            if e.lookups == 0 {
                t.remove(&ino);
            }
        }
    }

    /// The snapshot list, reread from a fresh index view now and then so
    /// a long-lived mount shows new backups.
    fn snapshots(&self) -> Result<Arc<Vec<SnapEntry>>, StoreError> {
        let mut s = self.snaps.lock();
        if let Some(at) = s.at {
            if at.elapsed() < SNAPSHOT_REFRESH {
                return Ok(s.list.clone());
            }
            if let Err(e) = self.ds.refresh_index() {
                tracing::warn!("cannot refresh the index view: {e}");
                s.at = Some(Instant::now());
                return Ok(s.list.clone());
            }
        }
        let all = self.ds.snapshots()?;
        let vms: Vec<Arc<VmSnap>> = all
            .iter()
            .filter(|(_, snap)| snap.kind == lifeboat_store::SnapshotKind::Vm)
            .map(|(id, snap)| {
                let vm: String = snap.vm_name().unwrap_or("").chars().map(|c| if c == '/' || c == '\0' { '_' } else { c }).collect();
                let name = if vm.is_empty() { snapshot_dir_name(&snap.time, id) } else { format!("{}_{vm}", snapshot_dir_name(&snap.time, id)) };
                Arc::new(VmSnap::new(*id, snap.clone(), name))
            })
            .collect();
        let list: Vec<SnapEntry> = all
            .into_iter()
            .map(|(id, snap)| {
                let ns = snap.time.timestamp_nanos_opt().unwrap_or(0);
                // A snapshot of one directory is that directory: its own
                // owner, mode, mtime and xattrs (ACLs) where it has them.
                let node = if let Some(rd) = &snap.root {
                    let mut n = rd.node(b"");
                    n.mode = libc::S_IFDIR | (rd.mode & 0o7777);
                    n.ctime_ns = n.mtime_ns;
                    n.nlink = 2;
                    n.subtree = Some(snap.tree);
                    n
                } else {
                    Node {
                        name: Vec::new(),
                        kind: NodeKind::Dir,
                        mode: libc::S_IFDIR | 0o755,
                        uid: self.uid,
                        gid: self.gid,
                        size: 0,
                        mtime_ns: ns,
                        ctime_ns: ns,
                        dev: 0,
                        ino: 0,
                        nlink: 2,
                        rdev: 0,
                        content: Vec::new(),
                        subtree: Some(snap.tree),
                        link_target: None,
                        ext: None,
                    }
                };
                SnapEntry { name: snapshot_dir_name(&snap.time, &id), id, node: Arc::new(node) }
            })
            .collect();
        s.list = Arc::new(list);
        s.vms = Arc::new(vms);
        s.at = Some(Instant::now());
        Ok(s.list.clone())
    }

    fn vm_snapshots(&self) -> Result<Arc<Vec<Arc<VmSnap>>>, StoreError> {
        self.snapshots()?;
        Ok(self.snaps.lock().vms.clone())
    }

    fn find_vm_snapshot(&self, name: &[u8]) -> Result<Option<Arc<VmSnap>>, StoreError> {
        let list = self.vm_snapshots()?;
        Ok(find_listed(&list, name, |s| (&s.name, &s.id)).cloned())
    }

    fn latest(&self) -> Option<Obj> {
        let list = self.snapshots().ok()?;
        list.last().map(|s| Obj::Latest(format!("snapshots/{}", s.name).into()))
    }

    fn find_snapshot(&self, name: &[u8]) -> Result<Option<Arc<Node>>, StoreError> {
        let list = self.snapshots()?;
        Ok(find_listed(&list, name, |s| (&s.name, &s.id)).map(|s| s.node.clone()))
    }

    fn dir_pages(&self, tree: &BlobId) -> Result<Arc<Vec<BlobId>>, StoreError> {
        if let Some(p) = self.cache.lock().dirs.get(tree) {
            return Ok(p.clone());
        }
        let bytes = self.ds.read_blob(tree)?;
        let pages = match Tree::parse(tree, &bytes)? {
            lifeboat_store::TreeBlob::Paged(p) => p,
            lifeboat_store::TreeBlob::Page(_) => {
                let nodes = Tree::decode(tree, &bytes)?.nodes;
                self.cache_page(*tree, Arc::new(nodes));
                vec![*tree]
            }
        };
        let pages = Arc::new(pages);
        let mut c = self.cache.lock();
        if c.dirs.len() >= DIR_CACHE_ENTRIES {
            c.dirs.clear();
        }
        c.dirs.insert(*tree, pages.clone());
        Ok(pages)
    }

    fn cache_page(&self, id: BlobId, nodes: Arc<Vec<Node>>) {
        let mut c = self.cache.lock();
        c.tick += 1;
        let tick = c.tick;
        let n = nodes.len();
        if let Some(old) = c.pages.insert(id, (nodes, tick)) {
            c.nodes -= old.0.len();
        }
        c.nodes += n;
        while c.nodes > PAGE_CACHE_NODES && c.pages.len() > 1 {
            let oldest = c.pages.iter().filter(|(k, _)| **k != id).min_by_key(|(_, v)| v.1).map(|(k, _)| *k);
            let Some(k) = oldest else { break };
            let (v, _) = c.pages.remove(&k).unwrap();
            c.nodes -= v.len();
        }
    }

    fn page(&self, id: &BlobId) -> Result<Arc<Vec<Node>>, StoreError> {
        {
            let mut c = self.cache.lock();
            c.tick += 1;
            let tick = c.tick;
            if let Some(v) = c.pages.get_mut(id) {
                v.1 = tick;
                return Ok(v.0.clone());
            }
        }
        let bytes = self.ds.read_blob(id)?;
        let nodes = Arc::new(Tree::decode(id, &bytes)?.nodes);
        self.cache_page(*id, nodes.clone());
        Ok(nodes)
    }

    fn find_child(&self, tree: &BlobId, name: &[u8]) -> Result<Option<Node>, StoreError> {
        for p in self.dir_pages(tree)?.iter() {
            let nodes = self.page(p)?;
            match nodes.last() {
                None => continue,
                Some(last) if last.name.as_slice() < name => continue,
                Some(_) => {}
            }
            return Ok(nodes.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| nodes[i].clone()));
        }
        Ok(None)
    }

    fn parent_of(&self, ino: u64) -> u64 {
        match ino {
            ROOT | SNAPSHOTS | VMS => ROOT,
            _ => self.table.lock().get(&ino).map(|e| e.parent).unwrap_or(ROOT),
        }
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> FResult<Option<Obj>> {
        match self.get(parent)? {
            Obj::Root => Ok(match name {
                b"snapshots" => Some(Obj::Snapshots),
                b"latest" => self.latest(),
                b"vms" => Some(Obj::Vms),
                _ => None,
            }),
            Obj::Snapshots => Ok(self.find_snapshot(name).map_err(eio)?.map(Obj::Node)),
            Obj::Latest(_) => Err(libc::ENOTDIR.into()),
            Obj::Vms => Ok(self.find_vm_snapshot(name).map_err(eio)?.map(Obj::VmSnap)),
            Obj::VmSnap(v) => {
                let disks = v.disks(&self.ds)?;
                Ok(disks.into_iter().find(|d| d.as_bytes() == name).map(|disk| Obj::VmDisk(Arc::new(VmDisk { snap: v.clone(), disk }))))
            }
            Obj::VmDisk(d) => {
                let parts = self.guests.partitions(&self.ds, &d)?;
                match parts.iter().find(|p| partition_dir_name(p).as_bytes() == name) {
                    Some(p) => Ok(Some(Obj::Guest(self.guests.mount(&self.ds, &d, p)?))),
                    None => Ok(None),
                }
            }
            Obj::Guest(g) if g.meta.is_dir() => Ok(g.child(name)?.map(Obj::Guest)),
            Obj::Guest(_) => Err(libc::ENOTDIR.into()),
            Obj::Node(n) => match (n.kind, n.subtree) {
                (NodeKind::Dir, Some(t)) => Ok(self.find_child(&t, name).map_err(eio)?.map(|c| Obj::Node(Arc::new(c)))),
                (NodeKind::Dir, None) => Ok(None),
                _ => Err(libc::ENOTDIR.into()),
            },
        }
    }

    /// Entries of directory `ino` from cookie `offset` on: at most
    /// `LIST_BATCH` from one tree page (the kernel asks again for more).
    fn list(&self, ino: u64, offset: i64) -> FResult<Vec<Proto>> {
        let obj = self.get(ino)?;
        let mut out = Vec::new();
        if offset < 1 {
            out.push(Proto { name: b".".to_vec(), obj: obj.clone(), next: 1, dot: Some(ino) });
        }
        if offset < 2 {
            let p = self.parent_of(ino);
            out.push(Proto { name: b"..".to_vec(), obj: self.get(p).unwrap_or(Obj::Root), next: 2, dot: Some(p) });
        }
        let pos = (offset.max(2) - 2) as u64;
        match obj {
            Obj::Root => {
                let mut top = vec![(b"snapshots".to_vec(), Obj::Snapshots)];
                if let Some(l) = self.latest() {
                    top.push((b"latest".to_vec(), l));
                }
                top.push((b"vms".to_vec(), Obj::Vms));
                for (i, (name, obj)) in top.into_iter().enumerate().skip(pos as usize) {
                    out.push(Proto { name, obj, next: i as i64 + 3, dot: None });
                }
            }
            Obj::Snapshots => {
                let list = self.snapshots().map_err(eio)?;
                for (i, s) in list.iter().enumerate().skip(pos as usize) {
                    out.push(Proto { name: s.name.clone().into_bytes(), obj: Obj::Node(s.node.clone()), next: i as i64 + 3, dot: None });
                }
            }
            Obj::Latest(_) => return Err(libc::ENOTDIR.into()),
            Obj::Vms => {
                let list = self.vm_snapshots().map_err(eio)?;
                for (i, s) in list.iter().enumerate().skip(pos as usize) {
                    out.push(Proto { name: s.name.clone().into_bytes(), obj: Obj::VmSnap(s.clone()), next: i as i64 + 3, dot: None });
                }
            }
            Obj::VmSnap(v) => {
                for (i, disk) in v.disks(&self.ds)?.into_iter().enumerate().skip(pos as usize) {
                    out.push(Proto { name: disk.clone().into_bytes(), obj: Obj::VmDisk(Arc::new(VmDisk { snap: v.clone(), disk })), next: i as i64 + 3, dot: None });
                }
            }
            Obj::VmDisk(d) => {
                // A listing gives each partition's attributes, so each is
                // mounted now (they stay mounted until the mount ends).
                let parts = self.guests.partitions(&self.ds, &d)?;
                for (i, p) in parts.iter().enumerate().skip(pos as usize) {
                    let obj = Obj::Guest(self.guests.mount(&self.ds, &d, p)?);
                    out.push(Proto { name: partition_dir_name(p).into_bytes(), obj, next: i as i64 + 3, dot: None });
                }
            }
            Obj::Guest(g) if g.meta.is_dir() => {
                for (i, (name, c)) in g.entries()?.into_iter().enumerate().skip(pos as usize) {
                    out.push(Proto { name, obj: Obj::Guest(c), next: i as i64 + 3, dot: None });
                }
            }
            Obj::Guest(_) => return Err(libc::ENOTDIR.into()),
            Obj::Node(n) => {
                let Some(tree) = n.subtree else {
                    return if n.kind == NodeKind::Dir { Ok(out) } else { Err(libc::ENOTDIR.into()) };
                };
                // Position: page index in the high half, entry in the low.
                let pages = self.dir_pages(&tree).map_err(eio)?;
                let (mut pi, mut i) = ((pos >> 32) as usize, (pos & 0xffff_ffff) as usize);
                while pi < pages.len() {
                    let nodes = self.page(&pages[pi]).map_err(eio)?;
                    if i >= nodes.len() {
                        pi += 1;
                        i = 0;
                        continue;
                    }
                    for (j, c) in nodes.iter().enumerate().skip(i).take(LIST_BATCH) {
                        let (npi, nj) = if j + 1 < nodes.len() { (pi, j + 1) } else { (pi + 1, 0) };
                        let next = 2 + (((npi as u64) << 32) | nj as u64) as i64;
                        out.push(Proto { name: c.name.clone(), obj: Obj::Node(Arc::new(c.clone())), next, dot: None });
                    }
                    break;
                }
            }
        }
        Ok(out)
    }

    fn open_file(&self, ino: u64) -> FResult<u64> {
        let n = match self.get(ino)? {
            Obj::Node(n) => n,
            Obj::Guest(g) if g.meta.is_file() => {
                let f = g.open()?;
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.guests.files.lock().insert(fh, Arc::new(f));
                return Ok(fh);
            }
            Obj::Guest(g) if !g.meta.is_dir() => return Err(libc::EINVAL.into()),
            _ => return Err(libc::EISDIR.into()),
        };
        match n.kind {
            NodeKind::File => {}
            NodeKind::Dir => return Err(libc::EISDIR.into()),
            _ => return Err(libc::EINVAL.into()),
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.lock().insert(fh, Arc::new(OpenFile::new(n)));
        Ok(fh)
    }
}

impl SnapshotFs {
    /// The file system over every snapshot of `ds`.
    pub fn new(ds: Arc<Datastore>) -> Self {
        let now = SystemTime::now().into();
        SnapshotFs {
            inner: Arc::new(Inner {
                ds,
                table: Mutex::new(HashMap::new()),
                snaps: Mutex::new(Snaps { at: None, list: Arc::new(Vec::new()), vms: Arc::new(Vec::new()) }),
                cache: Mutex::new(PageCache::default()),
                files: Mutex::new(HashMap::new()),
                next_fh: AtomicU64::new(1),
                guests: Arc::new(GuestState::default()),
                uid: unsafe { libc::geteuid() },
                gid: unsafe { libc::getegid() },
                mounted_at: now,
            }),
        }
    }

    /// What `vms/` mounts, to unmount when the mount ends.
    pub fn guest_mounts(&self) -> GuestMounts {
        GuestMounts(self.inner.guests.clone())
    }

    /// Runs `f` on the blocking pool: datastore reads block (pread, zstd,
    /// RocksDB), and many readers must progress at once.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> FResult<T> + Send + 'static) -> FResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(|e| {
            tracing::error!("FUSE worker failed: {e}");
            Errno::from(libc::EIO)
        })?
    }
}

/// Hands directory entries to the kernel, counting an entry as looked up
/// only once the next one is asked for (or the listing ends): the entry
/// that does not fit the kernel's buffer is taken and dropped, and must
/// not be counted.
struct PlusEntries<'a> {
    inner: &'a Inner,
    parent: u64,
    items: std::vec::IntoIter<Proto>,
    pending: Option<(Vec<u8>, Obj)>,
}

impl Iterator for PlusEntries<'_> {
    type Item = FResult<DirectoryEntryPlus>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Some((name, obj)) = self.pending.take() {
            self.inner.remember(self.parent, &name, &obj);
        }
        let p = self.items.next()?;
        let ino = p.dot.unwrap_or_else(|| entry_id(self.parent, &p.name, &p.obj));
        let attr = self.inner.attr(ino, &p.obj);
        let ttl = p.obj.ttl();
        let kind = p.obj.kind();
        if p.dot.is_none() {
            self.pending = Some((p.name.clone(), p.obj));
        }
        Some(Ok(DirectoryEntryPlus { inode: ino, generation: 0, kind, name: OsString::from_vec(p.name), offset: p.next, attr, entry_ttl: ttl, attr_ttl: ttl }))
    }
}

impl Filesystem for SnapshotFs {
    async fn init(&self, _req: Request) -> FResult<ReplyInit> {
        Ok(ReplyInit::new(NonZeroU32::new(128 << 10).unwrap()))
    }

    async fn destroy(&self, _req: Request) {}

    async fn lookup(&self, _req: Request, parent: Inode, name: &OsStr) -> FResult<ReplyEntry> {
        let name = name.as_bytes().to_vec();
        self.blocking(move |inner| {
            let obj = inner.lookup(parent, &name)?.ok_or_else(|| Errno::from(libc::ENOENT))?;
            let ino = inner.remember(parent, &name, &obj);
            Ok(ReplyEntry { ttl: obj.ttl(), attr: inner.attr(ino, &obj), generation: 0 })
        })
        .await
    }

    async fn forget(&self, _req: Request, inode: Inode, nlookup: u64) {
        self.inner.forget(inode, nlookup);
    }

    async fn batch_forget(&self, _req: Request, inodes: &[(Inode, u64)]) {
        for &(ino, n) in inodes {
            self.inner.forget(ino, n);
        }
    }

    async fn getattr(&self, _req: Request, inode: Inode, _fh: Option<u64>, _flags: u32) -> FResult<ReplyAttr> {
        // Everything needed is in the table: no datastore read.
        let obj = self.inner.get(inode)?;
        Ok(ReplyAttr { ttl: obj.ttl(), attr: self.inner.attr(inode, &obj) })
    }

    async fn setattr(&self, _req: Request, _inode: Inode, _fh: Option<u64>, _set_attr: SetAttr) -> FResult<ReplyAttr> {
        Err(libc::EROFS.into())
    }

    async fn readlink(&self, _req: Request, inode: Inode) -> FResult<ReplyData> {
        self.blocking(move |inner| match inner.get(inode)? {
            Obj::Latest(t) => Ok(ReplyData { data: Bytes::copy_from_slice(t.as_bytes()) }),
            Obj::Node(n) => match (&n.kind, &n.link_target) {
                (NodeKind::Symlink, Some(t)) => Ok(ReplyData { data: Bytes::from(t.clone()) }),
                _ => Err(libc::EINVAL.into()),
            },
            Obj::Guest(g) if g.meta.file_type().is_symlink() => {
                let t = std::fs::read_link(g.path()).map_err(|e| Errno::from(e.raw_os_error().unwrap_or(libc::EIO)))?;
                Ok(ReplyData { data: Bytes::from(t.into_os_string().into_vec()) })
            }
            _ => Err(libc::EINVAL.into()),
        })
        .await
    }

    async fn open(&self, _req: Request, inode: Inode, flags: u32) -> FResult<ReplyOpen> {
        if flags as i32 & libc::O_ACCMODE != libc::O_RDONLY || flags as i32 & libc::O_TRUNC != 0 {
            return Err(libc::EROFS.into());
        }
        let fh = self.inner.open_file(inode)?;
        Ok(ReplyOpen { fh, flags: FOPEN_KEEP_CACHE })
    }

    async fn read(&self, _req: Request, _inode: Inode, fh: u64, offset: u64, size: u32) -> FResult<ReplyData> {
        let guest = self.inner.guests.files.lock().get(&fh).cloned();
        if let Some(f) = guest {
            return self.blocking(move |_| crate::vms::read_at(&f, offset, size).map(|data| ReplyData { data: Bytes::from(data) })).await;
        }
        let file = self.inner.files.lock().get(&fh).cloned().ok_or_else(|| Errno::from(libc::EBADF))?;
        self.blocking(move |inner| {
            let data = file.read(&inner.ds, offset, size).map_err(|e| {
                tracing::error!("read of {} at {offset}: {e}", file.node.name_lossy());
                Errno::from(libc::EIO)
            })?;
            Ok(ReplyData { data: Bytes::from(data) })
        })
        .await
    }

    async fn release(&self, _req: Request, _inode: Inode, fh: u64, _flags: u32, _lock_owner: u64, _flush: bool) -> FResult<()> {
        self.inner.files.lock().remove(&fh);
        self.inner.guests.files.lock().remove(&fh);
        Ok(())
    }

    async fn flush(&self, _req: Request, _inode: Inode, _fh: u64, _lock_owner: u64) -> FResult<()> {
        Ok(())
    }

    async fn statfs(&self, _req: Request, _inode: Inode) -> FResult<ReplyStatFs> {
        Ok(ReplyStatFs { blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, bsize: BLKSIZE, namelen: 255, frsize: BLKSIZE })
    }

    async fn opendir(&self, _req: Request, inode: Inode, _flags: u32) -> FResult<ReplyOpen> {
        match self.inner.get(inode)? {
            Obj::Root | Obj::Snapshots | Obj::Vms | Obj::VmSnap(_) | Obj::VmDisk(_) => Ok(ReplyOpen { fh: 0, flags: 0 }),
            Obj::Guest(g) if g.meta.is_dir() => Ok(ReplyOpen { fh: 0, flags: 0 }),
            Obj::Node(n) if n.kind == NodeKind::Dir => Ok(ReplyOpen { fh: 0, flags: 0 }),
            _ => Err(libc::ENOTDIR.into()),
        }
    }

    async fn releasedir(&self, _req: Request, _inode: Inode, _fh: u64, _flags: u32) -> FResult<()> {
        Ok(())
    }

    async fn readdir<'a>(&'a self, _req: Request, parent: Inode, _fh: u64, offset: i64) -> FResult<ReplyDirectory<impl Stream<Item = FResult<DirectoryEntry>> + Send + 'a>> {
        let items = self.blocking(move |inner| inner.list(parent, offset)).await?;
        let entries = items.into_iter().map(move |p| {
            let inode = p.dot.unwrap_or_else(|| entry_id(parent, &p.name, &p.obj));
            Ok(DirectoryEntry { inode, kind: p.obj.kind(), name: OsString::from_vec(p.name), offset: p.next })
        });
        Ok(ReplyDirectory { entries: stream::iter(entries) })
    }

    async fn readdirplus<'a>(
        &'a self,
        _req: Request,
        parent: Inode,
        _fh: u64,
        offset: u64,
        _lock_owner: u64,
    ) -> FResult<ReplyDirectoryPlus<impl Stream<Item = FResult<DirectoryEntryPlus>> + Send + 'a>> {
        let items = self.blocking(move |inner| inner.list(parent, offset as i64)).await?;
        let it = PlusEntries { inner: &self.inner, parent, items: items.into_iter(), pending: None };
        Ok(ReplyDirectoryPlus { entries: stream::iter(it) })
    }

    async fn access(&self, _req: Request, _inode: Inode, mask: u32) -> FResult<()> {
        if mask as i32 & libc::W_OK != 0 {
            return Err(libc::EROFS.into());
        }
        Ok(())
    }

    /// The backed-up entry's extended attributes (ACLs, capabilities,
    /// SELinux labels among them) as stored; a snapshot directory has
    /// its source directory's; a guest file under vms/ its own.
    async fn getxattr(&self, _req: Request, inode: Inode, name: &OsStr, size: u32) -> FResult<ReplyXAttr> {
        let obj = self.inner.get(inode)?;
        if let Obj::Guest(g) = obj {
            let name = name.as_bytes().to_vec();
            let value = self.blocking(move |_| g.xattr(&name)).await?;
            return xattr_reply(value, size);
        }
        let value = xattrs_of(&obj).iter().find(|(k, _)| k.as_slice() == name.as_bytes()).map(|(_, v)| v.clone());
        xattr_reply(value.ok_or_else(|| Errno::from(libc::ENODATA))?, size)
    }

    async fn listxattr(&self, _req: Request, inode: Inode, size: u32) -> FResult<ReplyXAttr> {
        let obj = self.inner.get(inode)?;
        if let Obj::Guest(g) = obj {
            let names = self.blocking(move |_| g.xattr_names()).await?;
            return xattr_reply(names, size);
        }
        let mut names = Vec::new();
        for (k, _) in xattrs_of(&obj) {
            names.extend_from_slice(k);
            names.push(0);
        }
        xattr_reply(names, size)
    }
}

fn xattrs_of(obj: &Obj) -> &[(Vec<u8>, Vec<u8>)] {
    match obj {
        Obj::Node(n) => n.ext.as_ref().map_or(&[], |e| &e.xattrs),
        _ => &[],
    }
}

/// getxattr/listxattr's size protocol: 0 asks the size, a smaller buffer
/// is ERANGE.
fn xattr_reply(data: Vec<u8>, size: u32) -> FResult<ReplyXAttr> {
    if size == 0 {
        Ok(ReplyXAttr::Size(data.len() as u32))
    } else if (size as usize) < data.len() {
        Err(libc::ERANGE.into())
    } else {
        Ok(ReplyXAttr::Data(Bytes::from(data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_sort_by_time_and_avoid_colons() {
        let id = BlobId::of(b"x");
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-25T09:05:17.5Z").unwrap().with_timezone(&chrono::Utc);
        let n = snapshot_dir_name(&t, &id);
        assert_eq!(n, format!("2026-11-25T09-05-17_{}", &id.to_hex()[..8]));
        assert!(!n.contains(':'));
    }

    #[test]
    fn ids_are_stable_and_clear_of_the_fixed_ones() {
        assert_eq!(hashed_id(7, b"a"), hashed_id(7, b"a"));
        assert_ne!(hashed_id(7, b"a"), hashed_id(8, b"a"));
        let l1 = Obj::Latest("snapshots/a".into());
        let l2 = Obj::Latest("snapshots/b".into());
        assert_ne!(entry_id(ROOT, b"latest", &l1), entry_id(ROOT, b"latest", &l2));
        assert_eq!(entry_id(ROOT, b"snapshots", &Obj::Snapshots), SNAPSHOTS);
        assert!((0..10_000u64).all(|i| hashed_id(i, b"n") >= FIRST_HASHED));
    }
}
