//! A datastore on local disk: open/init, reading blobs, trees and
//! snapshots, and housekeeping of crashed writers' leftovers.

use crate::blob::{self, RecordHeader};
use crate::config::DatastoreConfig;
use crate::error::{Result, StoreError};
use crate::fsutil;
use crate::id::{BlobId, PackId};
use crate::index::{self, BlobLocation, IndexReader};
use crate::pack::{self, pack_path, partial_dir};
use crate::snapshot::Snapshot;
use crate::tree::{Node, Tree, TreeBlob};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const OPEN_PACKS_MAX: usize = 256;

/// Iterates a directory's nodes across its pages.
pub struct DirCursor<'a> {
    ds: &'a Datastore,
    /// Reads blobs other than through the index (gc reads doomed ones).
    read: Option<&'a dyn Fn(&BlobId) -> Result<Vec<u8>>>,
    pub pages: Vec<BlobId>,
    next_page: usize,
    page_id: BlobId,
    bytes: Vec<u8>,
    pos: usize,
    left: usize,
}

impl DirCursor<'_> {
    fn open_page(&mut self, id: BlobId, bytes: Vec<u8>) -> Result<()> {
        let c = Tree::cursor(&id, &bytes)?;
        self.left = c.remaining();
        self.pos = bytes.len() - c.rest_len();
        self.bytes = bytes;
        self.page_id = id;
        Ok(())
    }

    pub fn next_node(&mut self) -> Result<Option<Node>> {
        while self.left == 0 {
            let Some(&id) = self.pages.get(self.next_page) else { return Ok(None) };
            self.next_page += 1;
            let bytes = match self.read {
                Some(read) => read(&id)?,
                None => self.ds.read_blob(&id)?,
            };
            if let TreeBlob::Paged(_) = Tree::parse(&id, &bytes)? {
                return Err(StoreError::BadTree { id: id.to_hex(), reason: "a page of a paged tree is itself paged".into() });
            }
            self.open_page(id, bytes)?;
        }
        let (node, rest) = postcard::take_from_bytes::<Node>(&self.bytes[self.pos..])
            .map_err(|e| StoreError::BadTree { id: self.page_id.to_hex(), reason: e.to_string() })?;
        self.pos = self.bytes.len() - rest.len();
        self.left -= 1;
        Ok(Some(node))
    }
}

pub struct Datastore {
    root: PathBuf,
    config: DatastoreConfig,
    index: RwLock<Arc<IndexReader>>,
    open_packs: Mutex<HashMap<PackId, Arc<File>>>,
}

impl Datastore {
    /// Creates a new, empty datastore at `root` (which must not exist or
    /// be an empty directory).
    pub fn init(root: &Path) -> Result<Self> {
        Self::init_with(root, DatastoreConfig::new())
    }

    pub fn init_with(root: &Path, config: DatastoreConfig) -> Result<Self> {
        if root.exists() {
            let mut entries = std::fs::read_dir(root).map_err(|e| StoreError::io("read", root, e))?;
            if entries.next().is_some() {
                return Err(StoreError::AlreadyExists { path: root.to_path_buf() });
            }
        }
        for d in ["packs", "partial", "index", "writers"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| StoreError::io("create", &p, e))?;
        }
        index::create(&root.join("index"))?;
        // The config goes last: a directory without it is not a datastore,
        // so a crash during init leaves nothing half-usable.
        config.save(root)?;
        if let Some(parent) = root.parent() {
            let _ = fsutil::sync_dir(if parent.as_os_str().is_empty() { Path::new(".") } else { parent });
        }
        Self::open(root)
    }

    pub fn open(root: &Path) -> Result<Self> {
        let config = DatastoreConfig::load(root)?;
        let index = IndexReader::open(&root.join("index"))?;
        Ok(Datastore {
            root: root.to_path_buf(),
            config,
            index: RwLock::new(Arc::new(index)),
            open_packs: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> &DatastoreConfig {
        &self.config
    }
    pub fn index_path(&self) -> PathBuf {
        self.root.join("index")
    }

    /// The current read-only view of the index.
    pub fn index(&self) -> Arc<IndexReader> {
        self.index.read().clone()
    }

    /// Reopens the read-only view to see what was committed since.
    pub fn refresh_index(&self) -> Result<()> {
        let fresh = IndexReader::open(&self.index_path())?;
        *self.index.write() = Arc::new(fresh);
        Ok(())
    }

    fn pack_file(&self, id: &PackId) -> Result<Arc<File>> {
        if let Some(f) = self.open_packs.lock().get(id) {
            return Ok(f.clone());
        }
        let path = pack_path(&self.root, id);
        let f = Arc::new(File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::CorruptPack { pack: id.to_hex(), reason: format!("pack file {} is missing", path.display()) }
            } else {
                StoreError::io("open", &path, e)
            }
        })?);
        let mut open = self.open_packs.lock();
        if open.len() >= OPEN_PACKS_MAX {
            open.clear();
        }
        open.insert(*id, f.clone());
        Ok(f)
    }

    pub fn locate(&self, id: &BlobId) -> Result<BlobLocation> {
        self.index().blob(id)?.ok_or_else(|| StoreError::MissingBlob { id: id.to_hex() })
    }

    /// Reads a blob and checks its hash: a damaged pack yields an error
    /// naming the blob, never wrong bytes.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        match self.read_blob_at(id, &loc) {
            // A garbage collector may have moved the blob (repack) and
            // deleted the pack our older index view names: look again.
            Err(e) if !pack_path(&self.root, &loc.pack).exists() => {
                self.refresh_index()?;
                match self.index().blob(id)? {
                    Some(now) if now != loc => self.read_blob_at(id, &now),
                    _ => Err(e),
                }
            }
            r => r,
        }
    }

    pub fn read_blob_at(&self, id: &BlobId, loc: &BlobLocation) -> Result<Vec<u8>> {
        let file = self.pack_file(&loc.pack)?;
        let (header, stored) = pack::read_record(&file, &pack_path(&self.root, &loc.pack), loc)?;
        let corrupt = |reason: String| StoreError::CorruptBlob { id: id.to_hex(), pack: loc.pack.to_hex(), reason };
        if header.id != *id {
            return Err(corrupt(format!("record at offset {} holds blob {}", loc.offset, header.id)));
        }
        self.verify_record(&header, stored).map_err(corrupt)
    }

    /// Decodes a record's stored bytes and checks them against the id in
    /// its header: the one place where stored bytes become plain bytes.
    pub fn verify_record(&self, header: &RecordHeader, stored: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
        let plain = blob::decode(header.encoding, stored, header.plain_len as usize)?;
        if BlobId::of(&plain) != header.id {
            return Err("content does not match its hash".into());
        }
        Ok(plain)
    }

    /// A whole directory listing in memory (paged or not). For walking a
    /// directory of any size with bounded memory use `dir_cursor`.
    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        Ok(self.load_tree_and_pages(id)?.0)
    }

    /// The listing and the ids of its pages (empty when not paged): GC
    /// and check must account for the pages too.
    pub fn load_tree_and_pages(&self, id: &BlobId) -> Result<(Tree, Vec<BlobId>)> {
        let mut c = self.dir_cursor(id)?;
        let mut nodes = Vec::new();
        while let Some(n) = c.next_node()? {
            nodes.push(n);
        }
        Ok((Tree { nodes }, c.pages))
    }

    /// Reads a directory's entries in order, one page in memory at a time.
    pub fn dir_cursor(&self, id: &BlobId) -> Result<DirCursor<'_>> {
        self.dir_cursor_inner(id, None)
    }

    /// A cursor that reads the listing and its pages with `read`.
    pub fn dir_cursor_with<'a>(&'a self, id: &BlobId, read: &'a dyn Fn(&BlobId) -> Result<Vec<u8>>) -> Result<DirCursor<'a>> {
        self.dir_cursor_inner(id, Some(read))
    }

    fn dir_cursor_inner<'a>(&'a self, id: &BlobId, read: Option<&'a dyn Fn(&BlobId) -> Result<Vec<u8>>>) -> Result<DirCursor<'a>> {
        let bytes = match read {
            Some(read) => read(id)?,
            None => self.read_blob(id)?,
        };
        let pages = match Tree::parse(id, &bytes)? {
            TreeBlob::Paged(p) => p,
            TreeBlob::Page(_) => Vec::new(),
        };
        let mut c = DirCursor { ds: self, read, pages, next_page: 0, page_id: *id, bytes: Vec::new(), pos: 0, left: 0 };
        if c.pages.is_empty() {
            c.open_page(*id, bytes)?;
        }
        Ok(c)
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(BlobId, Snapshot)>> {
        let mut out = Vec::new();
        for (id, doc) in self.index().snapshots()? {
            let snap: Snapshot = serde_json::from_slice(&doc)
                .map_err(|e| StoreError::BadSnapshot { id: id.to_hex(), reason: e.to_string() })?;
            out.push((id, snap));
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Finds a snapshot by `latest` or a unique id prefix.
    pub fn resolve_snapshot(&self, query: &str) -> Result<(BlobId, Snapshot)> {
        let mut all = self.snapshots()?;
        if query == "latest" {
            return all.pop().ok_or(StoreError::NoSnapshots);
        }
        let q = query.to_ascii_lowercase();
        let hits: Vec<_> = if q.is_empty() || !q.bytes().all(|b| b.is_ascii_hexdigit()) {
            Vec::new()
        } else {
            all.into_iter().filter(|(id, _)| id.to_hex().starts_with(&q)).collect()
        };
        match hits.len() {
            0 => Err(StoreError::NoSuchSnapshot { query: query.to_string() }),
            1 => Ok(hits.into_iter().next().unwrap()),
            n => Err(StoreError::AmbiguousSnapshot { query: query.to_string(), count: n }),
        }
    }

    /// Removes partial packs whose writer is gone (crashed or killed); a
    /// live writer holds a lock on its file. Returns bytes freed.
    pub fn remove_stale_partials(&self) -> Result<u64> {
        Ok(self.scan_partials(true)?.iter().filter(|p| !p.2).map(|p| p.1).sum())
    }

    /// Partial pack files present now: (path, size, still being written).
    pub fn partial_packs(&self) -> Result<Vec<(PathBuf, u64, bool)>> {
        self.scan_partials(false)
    }

    /// A dead writer's file is removed while we hold its lock, so a
    /// writer that just created a file of that name cannot lose it.
    fn scan_partials(&self, remove_dead: bool) -> Result<Vec<(PathBuf, u64, bool)>> {
        let dir = partial_dir(&self.root);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io("read", &dir, e)),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            let Ok(f) = File::options().read(true).open(&path) else { continue };
            let live = !fsutil::try_lock_exclusive(&f).unwrap_or(false);
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if !live && remove_dead {
                let _ = std::fs::remove_file(&path);
            }
            out.push((path, len, live));
        }
        Ok(out)
    }

    /// Pack files on disk under `packs/`.
    pub fn pack_files(&self) -> Result<Vec<(PackId, PathBuf, u64)>> {
        let top = self.root.join("packs");
        let mut out = Vec::new();
        for d in std::fs::read_dir(&top).map_err(|e| StoreError::io("read", &top, e))?.flatten() {
            if !d.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            for f in std::fs::read_dir(d.path()).map_err(|e| StoreError::io("read", d.path(), e))?.flatten() {
                let path = f.path();
                let Some(id) = path.file_stem().and_then(|s| s.to_str()).and_then(PackId::from_hex) else { continue };
                if path.extension().and_then(|e| e.to_str()) != Some("pack") {
                    continue;
                }
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                out.push((id, path, len));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}
