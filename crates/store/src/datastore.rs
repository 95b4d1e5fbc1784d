//! A datastore on local disk: open/init, reading blobs, trees and
//! snapshots, and housekeeping of crashed writers' leftovers.

use crate::blob::{self, RecordError, RecordHeader};
use crate::config::DatastoreConfig;
use crate::crypto::{self, Crypto, EncryptionConfig, KeySource, MasterKey};
use crate::error::{Result, StoreError};
use crate::fsutil;
use crate::id::{BlobId, PackId};
use crate::index::{self, BlobLocation, IndexReader};
use crate::pack::{self, pack_path, partial_dir};
use crate::snapshot::Snapshot;
use crate::tree::{Node, PageCursor, Tree, TreeBlob};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const OPEN_PACKS_MAX: usize = 256;

/// Where a cursor reads tree blobs from.
enum TreeSource<'a> {
    Datastore(&'a Datastore),
    /// Other than through the index: gc reads doomed blobs, a remote
    /// agent fetches its parent's trees from the appliance.
    Fn(&'a dyn Fn(&BlobId) -> Result<Vec<u8>>),
}

impl TreeSource<'_> {
    fn read(&self, id: &BlobId) -> Result<Vec<u8>> {
        match self {
            TreeSource::Datastore(ds) => ds.read_blob(id),
            TreeSource::Fn(read) => read(id),
        }
    }
}

/// Iterates a directory's nodes across its pages.
pub struct DirCursor<'a> {
    source: TreeSource<'a>,
    /// The directory's page blobs, in order.
    pub pages: Vec<BlobId>,
    next_page: usize,
    bytes: Vec<u8>,
    /// Where in `bytes` (the current page) the next node is.
    at: Option<PageCursor>,
}

impl<'a> DirCursor<'a> {
    /// A cursor over tree `id` whose blobs (the listing and its pages)
    /// come from `read`, with no datastore at hand.
    pub fn open(id: &BlobId, read: &'a dyn Fn(&BlobId) -> Result<Vec<u8>>) -> Result<Self> {
        Self::open_from(id, TreeSource::Fn(read))
    }

    fn open_from(id: &BlobId, source: TreeSource<'a>) -> Result<Self> {
        let bytes = source.read(id)?;
        let pages = match Tree::parse(id, &bytes)? {
            TreeBlob::Paged(p) => p,
            TreeBlob::Page(_) => Vec::new(),
        };
        let mut c = DirCursor { source, pages, next_page: 0, bytes: Vec::new(), at: None };
        if c.pages.is_empty() {
            c.open_page(*id, bytes)?;
        }
        Ok(c)
    }

    fn open_page(&mut self, id: BlobId, bytes: Vec<u8>) -> Result<()> {
        self.at = Some(PageCursor::open(&id, &bytes)?);
        self.bytes = bytes;
        Ok(())
    }

    /// The next node in name order; `None` after the last.
    pub fn next_node(&mut self) -> Result<Option<Node>> {
        while self.at.as_ref().map_or(0, |a| a.remaining()) == 0 {
            let Some(&id) = self.pages.get(self.next_page) else { return Ok(None) };
            self.next_page += 1;
            let bytes = self.source.read(&id)?;
            if let TreeBlob::Paged(_) = Tree::parse(&id, &bytes)? {
                return Err(StoreError::BadTree { id: id.to_hex(), reason: "a page of a paged tree is itself paged".into() });
            }
            self.open_page(id, bytes)?;
        }
        self.at.as_mut().expect("a page is open").next_node(&self.bytes)
    }
}

/// A pack file under `packs/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackFile {
    /// The id its name carries.
    pub id: PackId,
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
}

/// A pack file under `partial/`: being written, or left by a writer
/// that died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialPack {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
    /// Its writer still holds it (a live run's pack, not a leftover).
    pub live: bool,
}

/// An open datastore: its config, index view and (if encrypted) keys. Shared across threads behind an `Arc`.
pub struct Datastore {
    root: PathBuf,
    config: DatastoreConfig,
    index: RwLock<Arc<IndexReader>>,
    open_packs: Mutex<HashMap<PackId, Arc<File>>>,
    /// Keys of an encrypted datastore, unlocked at open.
    crypto: Option<Crypto>,
}

impl Datastore {
    /// Creates a new, empty datastore at `root` (which must not exist or
    /// be an empty directory).
    pub fn init(root: &Path) -> Result<Self> {
        Self::init_with(root, DatastoreConfig::new())
    }

    /// Like [`Datastore::init`], with a config of the caller's.
    pub fn init_with(root: &Path, config: DatastoreConfig) -> Result<Self> {
        Self::create(root, config, None)
    }

    /// Creates a new encrypted datastore whose master key `key` unlocks.
    pub fn init_encrypted(root: &Path, config: DatastoreConfig, key: &KeySource) -> Result<Self> {
        Self::create(root, config, Some(key))
    }

    fn create(root: &Path, config: DatastoreConfig, key: Option<&KeySource>) -> Result<Self> {
        let mut config = config.for_new_datastore();
        if root.exists() {
            let mut entries = std::fs::read_dir(root).map_err(|e| StoreError::io("read", root, e))?;
            if entries.next().is_some() {
                return Err(StoreError::AlreadyExists { path: root.to_path_buf() });
            }
        }
        // The key slot first: a bad key (empty passphrase, unreadable key
        // file) leaves nothing behind.
        let master = match key {
            None => None,
            Some(k) => {
                let m = MasterKey::random();
                let slot = crypto::new_slot(&config.id, &m, k)?;
                config.features.retain(|f| f != crate::config::FEATURE_ENCRYPTION);
                config.features.push(crate::config::FEATURE_ENCRYPTION.into());
                config.encryption = Some(EncryptionConfig { cipher: crypto::CIPHER.into(), slots: vec![slot] });
                Some(m)
            }
        };
        for d in ["packs", "partial", "index", "writers"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| StoreError::io("create", &p, e))?;
        }
        // All 256 pack directories now, synced once: made on demand, each
        // of a first backup's packs cost another directory sync.
        for b in 0..=255u8 {
            let p = root.join("packs").join(format!("{b:02x}"));
            std::fs::create_dir(&p).map_err(|e| StoreError::io("create", &p, e))?;
        }
        fsutil::sync_dir(&root.join("packs"))?;
        index::create(&root.join("index"))?;
        // The config goes last: a directory without it is not a datastore,
        // so a crash during init leaves nothing half-usable.
        config.save(root)?;
        if let Some(parent) = root.parent() {
            let _ = fsutil::sync_dir(if parent.as_os_str().is_empty() { Path::new(".") } else { parent });
        }
        Self::open_inner(root, config, master.as_ref().map(Crypto::new))
    }

    /// Opens an unencrypted datastore; an encrypted one is refused with
    /// `KeyRequired` (use `open_with_key`).
    pub fn open(root: &Path) -> Result<Self> {
        Self::open_with(root, None)
    }

    /// Opens a datastore, unlocking it with `key` if it is encrypted (the
    /// key is ignored otherwise).
    pub fn open_with_key(root: &Path, key: &KeySource) -> Result<Self> {
        Self::open_with(root, Some(key))
    }

    /// Opens an existing datastore, unlocking it with `key` if it is encrypted.
    pub fn open_with(root: &Path, key: Option<&KeySource>) -> Result<Self> {
        let config = DatastoreConfig::load(root)?;
        let crypto = match (&config.encryption, key) {
            (None, _) => None,
            (Some(_), None) => return Err(StoreError::KeyRequired { path: root.to_path_buf() }),
            (Some(enc), Some(k)) => Some(Crypto::new(&crypto::unlock(root, &config.id, enc, k)?.0)),
        };
        Self::open_inner(root, config, crypto)
    }

    fn open_inner(root: &Path, config: DatastoreConfig, crypto: Option<Crypto>) -> Result<Self> {
        let index = IndexReader::open(&root.join("index"))?;
        Ok(Datastore { root: root.to_path_buf(), config, index: RwLock::new(Arc::new(index)), open_packs: Mutex::new(HashMap::new()), crypto })
    }

    /// Whether the datastore at `root` is encrypted (reads its config only).
    pub fn is_encrypted_at(root: &Path) -> Result<bool> {
        Ok(DatastoreConfig::load(root)?.is_encrypted())
    }

    /// Adds a key slot for `new_key`, unlocking the master key with `key`.
    /// Returns (new slot id, id of the slot `key` opened).
    pub fn add_key(root: &Path, key: &KeySource, new_key: &KeySource) -> Result<(String, String)> {
        let (_lock, mut config) = lock_config(root)?;
        let enc = config.encryption.as_ref().ok_or_else(|| not_encrypted(root))?;
        let (master, used) = crypto::unlock(root, &config.id, enc, key)?;
        let slot = crypto::new_slot(&config.id, &master, new_key)?;
        let id = slot.id.clone();
        config.encryption.as_mut().unwrap().slots.push(slot);
        config.save(root)?;
        Ok((id, used))
    }

    /// Removes key slot `slot_id`; `key` must unlock the datastore (with
    /// any slot, including the one removed). The last slot is never removed.
    pub fn remove_key(root: &Path, key: &KeySource, slot_id: &str) -> Result<()> {
        let (_lock, mut config) = lock_config(root)?;
        let enc = config.encryption.as_ref().ok_or_else(|| not_encrypted(root))?;
        crypto::unlock(root, &config.id, enc, key)?;
        let slots = &mut config.encryption.as_mut().unwrap().slots;
        if !slots.iter().any(|s| s.id == slot_id) {
            return Err(StoreError::KeySlot { path: root.to_path_buf(), reason: format!("no key slot {slot_id}; list them with `lifeboat datastore key list`") });
        }
        if slots.len() == 1 {
            return Err(StoreError::KeySlot { path: root.to_path_buf(), reason: format!("key slot {slot_id} is the last one; add another key first (without a key slot the data is lost)") });
        }
        slots.retain(|s| s.id != slot_id);
        config.save(root)
    }

    /// Which slot `key` opens (checks a key without opening the index).
    pub fn unlocking_slot(root: &Path, key: &KeySource) -> Result<String> {
        let config = DatastoreConfig::load(root)?;
        let enc = config.encryption.as_ref().ok_or_else(|| not_encrypted(root))?;
        Ok(crypto::unlock(root, &config.id, enc, key)?.1)
    }

    /// Blobs are sealed with the datastore's key.
    pub fn is_encrypted(&self) -> bool {
        self.crypto.is_some()
    }

    /// The id of a blob with these plain bytes: BLAKE3, keyed with the
    /// datastore's id key when it is encrypted. Every id computed for
    /// storing or verifying content must come from here.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        match &self.crypto {
            Some(c) => c.blob_id(data),
            None => BlobId::of(data),
        }
    }

    /// Stored bytes for a record: sealed (and the header flagged) when
    /// the datastore is encrypted.
    pub(crate) fn seal_record<'a>(&self, header: &mut RecordHeader, stored: std::borrow::Cow<'a, [u8]>) -> std::borrow::Cow<'a, [u8]> {
        match &self.crypto {
            None => stored,
            Some(c) => {
                header.encrypted = true;
                header.stored_len = (stored.len() + crypto::SEAL_OVERHEAD) as u32;
                std::borrow::Cow::Owned(c.seal(&header.aad(), &stored))
            }
        }
    }

    /// A record's plain bytes: authenticated and decrypted if sealed,
    /// decompressed, and checked against the id in its header.
    pub fn decode_record(&self, header: &RecordHeader, stored: Vec<u8>) -> std::result::Result<Vec<u8>, RecordError> {
        let stored = match (&self.crypto, header.encrypted) {
            (Some(c), true) => c.open(&header.aad(), &stored).map_err(RecordError::Authentication)?,
            (Some(_), false) => return Err(RecordError::NotSealed),
            (None, true) => return Err(RecordError::Sealed),
            (None, false) => stored,
        };
        let plain = blob::decode(header.encoding, stored, header.plain_len as usize)?;
        if self.blob_id(&plain) != header.id {
            return Err(RecordError::HashMismatch);
        }
        Ok(plain)
    }

    /// The snapshot document as kept in the index (sealed if encrypted).
    pub(crate) fn seal_doc(&self, id: &BlobId, doc: Vec<u8>) -> Vec<u8> {
        match &self.crypto {
            Some(c) => c.seal_doc(id, &doc),
            None => doc,
        }
    }

    /// The datastore directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Its `config.json`.
    pub fn config(&self) -> &DatastoreConfig {
        &self.config
    }
    /// Where its RocksDB index lives.
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

    /// Asks the kernel to read the records of `ids` into the page cache
    /// in the background (`POSIX_FADV_WILLNEED`), neighbouring records of
    /// a pack as one range: a restore about to need them then finds them
    /// there instead of waiting on one small read at a time. Best effort:
    /// unknown ids and unreadable packs are skipped (reading them later
    /// reports them properly).
    pub fn prefetch<'a>(&self, ids: impl IntoIterator<Item = &'a BlobId>) {
        /// Records closer than this are read as one range.
        const GAP: u64 = 256 << 10;
        let mut locs: Vec<(PackId, u64, u64)> =
            ids.into_iter().filter_map(|id| self.index().blob(id).ok().flatten()).map(|l| (l.pack, l.offset, l.offset + crate::blob::RECORD_HEADER_LEN as u64 + l.stored_len as u64)).collect();
        locs.sort_unstable();
        let mut i = 0;
        while i < locs.len() {
            let (pack, start, mut end) = locs[i];
            i += 1;
            while i < locs.len() && locs[i].0 == pack && locs[i].1 <= end + GAP {
                end = end.max(locs[i].2);
                i += 1;
            }
            if let Ok(f) = self.pack_file(&pack) {
                use std::os::fd::AsRawFd;
                // SAFETY: a plain syscall on a descriptor the Arc keeps open.
                unsafe { libc::posix_fadvise(f.as_raw_fd(), start as libc::off_t, (end - start) as libc::off_t, libc::POSIX_FADV_WILLNEED) };
            }
        }
    }

    /// Where a blob is stored; [`StoreError::MissingBlob`] if nowhere.
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

    /// `read_blob` into a buffer the caller reuses: a reader of many large
    /// blobs (an NBD export of a VM disk) saves an allocation per blob.
    pub fn read_blob_into(&self, id: &BlobId, buf: &mut Vec<u8>) -> Result<()> {
        let loc = self.locate(id)?;
        match self.read_blob_at_into(id, &loc, buf) {
            // Moved by a garbage collector: see read_blob.
            Err(_) if !pack_path(&self.root, &loc.pack).exists() => {
                *buf = self.read_blob(id)?;
                Ok(())
            }
            r => r,
        }
    }

    fn read_blob_at_into(&self, id: &BlobId, loc: &BlobLocation, buf: &mut Vec<u8>) -> Result<()> {
        let file = self.pack_file(&loc.pack)?;
        let header = pack::read_record_into(&file, &pack_path(&self.root, &loc.pack), loc, buf)?;
        let corrupt = |reason: String| StoreError::CorruptBlob { id: id.to_hex(), pack: loc.pack.to_hex(), reason };
        if header.id != *id {
            return Err(corrupt(format!("record at offset {} holds blob {}", loc.offset, header.id)));
        }
        // A raw record comes back as the same Vec: the allocation is kept.
        *buf = self.decode_record(&header, std::mem::take(buf)).map_err(|e| corrupt(e.to_string()))?;
        Ok(())
    }

    /// A blob's plain bytes from a known location, checked against its id.
    pub fn read_blob_at(&self, id: &BlobId, loc: &BlobLocation) -> Result<Vec<u8>> {
        let file = self.pack_file(&loc.pack)?;
        let (header, stored) = pack::read_record(&file, &pack_path(&self.root, &loc.pack), loc)?;
        let corrupt = |reason: String| StoreError::CorruptBlob { id: id.to_hex(), pack: loc.pack.to_hex(), reason };
        if header.id != *id {
            return Err(corrupt(format!("record at offset {} holds blob {}", loc.offset, header.id)));
        }
        self.decode_record(&header, stored).map_err(|e| corrupt(e.to_string()))
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
        DirCursor::open_from(id, TreeSource::Datastore(self))
    }

    /// A cursor that reads the listing and its pages with `read`.
    pub fn dir_cursor_with<'a>(&'a self, id: &BlobId, read: &'a dyn Fn(&BlobId) -> Result<Vec<u8>>) -> Result<DirCursor<'a>> {
        DirCursor::open(id, read)
    }

    /// Snapshots `repair` found losing data, with the paths in each that
    /// lost it (empty when the record cannot be read).
    pub fn damaged_snapshots(&self) -> Result<std::collections::HashMap<BlobId, Vec<String>>> {
        let prefix = crate::repair::REF_DAMAGED;
        let mut out = std::collections::HashMap::new();
        for (k, v) in self.index().refs_with_prefix(prefix)? {
            if let Ok(id) = <[u8; 32]>::try_from(&k[prefix.len()..]) {
                out.insert(BlobId(id), serde_json::from_slice(&v).unwrap_or_default());
            }
        }
        Ok(out)
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(BlobId, Snapshot)>> {
        let mut out = Vec::new();
        for (id, doc) in self.index().snapshots()? {
            let doc = match &self.crypto {
                Some(c) => c.open_doc(&id, &doc).map_err(|reason| StoreError::BadSnapshot { id: id.to_hex(), reason })?,
                None => doc,
            };
            let snap: Snapshot = serde_json::from_slice(&doc).map_err(|e| StoreError::BadSnapshot { id: id.to_hex(), reason: e.to_string() })?;
            out.push((id, snap));
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Finds a snapshot by `latest`, `vm:NAME` (the newest backup of that
    /// VM) or a unique id prefix.
    pub fn resolve_snapshot(&self, query: &str) -> Result<(BlobId, Snapshot)> {
        let mut all = self.snapshots()?;
        if query == "latest" {
            return all.pop().ok_or(StoreError::NoSnapshots);
        }
        if let Some(name) = query.strip_prefix("vm:") {
            // The newest backup of that VM (snapshots are in time order).
            return all.into_iter().rev().find(|(_, s)| s.vm_name() == Some(name) && s.paths.len() == 1).ok_or_else(|| StoreError::NoSuchSnapshot { query: query.to_string() });
        }
        let q = query.to_ascii_lowercase();
        let hits: Vec<_> = if q.is_empty() || !q.bytes().all(|b| b.is_ascii_hexdigit()) { Vec::new() } else { all.into_iter().filter(|(id, _)| id.to_hex().starts_with(&q)).collect() };
        match hits.len() {
            0 => Err(StoreError::NoSuchSnapshot { query: query.to_string() }),
            1 => Ok(hits.into_iter().next().unwrap()),
            n => Err(StoreError::AmbiguousSnapshot { query: query.to_string(), count: n }),
        }
    }

    /// Removes partial packs whose writer is gone (crashed or killed); a
    /// live writer holds a lock on its file. Returns bytes freed.
    pub fn remove_stale_partials(&self) -> Result<u64> {
        Ok(self.scan_partials(true)?.iter().filter(|p| !p.live).map(|p| p.len).sum())
    }

    /// Partial pack files present now.
    pub fn partial_packs(&self) -> Result<Vec<PartialPack>> {
        self.scan_partials(false)
    }

    /// A dead writer's file is removed while we hold its lock, so a
    /// writer that just created a file of that name cannot lose it.
    fn scan_partials(&self, remove_dead: bool) -> Result<Vec<PartialPack>> {
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
            out.push(PartialPack { path, len, live });
        }
        Ok(out)
    }

    /// Pack files on disk under `packs/`.
    pub fn pack_files(&self) -> Result<Vec<PackFile>> {
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
                out.push(PackFile { id, path, len });
            }
        }
        out.sort_by_key(|a| a.id);
        Ok(out)
    }
}

/// The config, read under an exclusive `flock` on the datastore directory
/// itself, so that two key changes cannot both read the old slot list and
/// lose one's write. Nothing else locks the directory: backups and gc
/// are not held up.
fn lock_config(root: &Path) -> Result<(fsutil::FileLock, DatastoreConfig)> {
    DatastoreConfig::load(root)?; // a clear error when it is not a datastore (and never a lock file created in its place)
    let lock = fsutil::FileLock::take(root, libc::LOCK_EX)?;
    Ok((lock, DatastoreConfig::load(root)?))
}

fn not_encrypted(root: &Path) -> StoreError {
    StoreError::KeySlot { path: root.to_path_buf(), reason: "is not encrypted; it has no keys".into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobKind;
    use crate::sink::BlobSink;
    use crate::snapshot::{Snapshot, SnapshotKind};
    use std::os::unix::fs::FileExt;

    use crate::testutil::noise;

    #[test]
    fn snapshots_resolve_by_latest_vm_name_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Arc::new(Datastore::init(&dir.path().join("ds")).unwrap());
        let t0 = chrono::Utc::now();
        let mut ids = Vec::new();
        for (i, (kind, path)) in [(SnapshotKind::Vm, "vm:web"), (SnapshotKind::Vm, "vm:db"), (SnapshotKind::Vm, "vm:web"), (SnapshotKind::Files, "vm:web")].into_iter().enumerate() {
            let sink = BlobSink::new(ds.clone()).unwrap();
            let tree = sink.put(BlobKind::Tree, &crate::Tree { nodes: vec![] }.encode()).unwrap().id;
            let mut s = Snapshot::for_test(tree);
            s.time = t0 + chrono::Duration::seconds(i as i64);
            s.kind = kind;
            s.paths = vec![path.into()];
            ids.push(sink.commit_snapshot(s.encode()).unwrap());
        }
        ds.refresh_index().unwrap();
        // The newest backup of the VM, not a files snapshot of a path that
        // looks like one.
        assert_eq!(ds.resolve_snapshot("vm:web").unwrap().0, ids[2]);
        assert_eq!(ds.resolve_snapshot("vm:db").unwrap().0, ids[1]);
        assert_eq!(ds.resolve_snapshot("latest").unwrap().0, ids[3]);
        assert_eq!(ds.resolve_snapshot(&ids[0].to_hex()[..12]).unwrap().0, ids[0]);
        let e = ds.resolve_snapshot("vm:nope").unwrap_err();
        assert!(matches!(e, StoreError::NoSuchSnapshot { .. }) && e.to_string().contains("vm:nope"), "{e}");
    }

    #[test]
    fn encrypted_round_trip_wrong_key_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let kf = dir.path().join("key");
        std::fs::write(&kf, b"a key file with enough bytes in it").unwrap();
        let key = KeySource::KeyFile(kf.clone());
        let root = dir.path().join("ds");
        let ds = Arc::new(Datastore::init_encrypted(&root, DatastoreConfig::new(), &key).unwrap());
        assert!(ds.is_encrypted());
        let text = b"SECRET-CONTENT ".repeat(1000);
        let sink = BlobSink::new(ds.clone()).unwrap();
        let a = sink.put(BlobKind::SmallFile, &text).unwrap();
        assert!(a.added);
        assert_ne!(a.id, BlobId::of(&text), "ids are keyed");
        assert!(!sink.put(BlobKind::SmallFile, &text).unwrap().added, "dedup");
        let b = sink.put(BlobKind::SmallFile, &noise(3, 50_000)).unwrap().id;
        let snap = Snapshot {
            time: chrono::Utc::now(),
            hostname: "secret-host".into(),
            paths: vec!["/secret/path".into()],
            tags: vec![],
            tree: a.id,
            parent: None,
            summary: Default::default(),
            program: "test".into(),
            kind: Default::default(),
            root: None,
        };
        let sid = sink.commit_snapshot(snap.encode()).unwrap();
        ds.refresh_index().unwrap();
        assert_eq!(ds.read_blob(&a.id).unwrap(), text);
        assert_eq!(ds.snapshots().unwrap()[0].0, sid);
        assert_eq!(ds.snapshots().unwrap()[0].1.hostname, "secret-host");
        // The index holds the sealed document.
        let raw = ds.index().snapshots().unwrap();
        assert!(!raw[0].1.windows(11).any(|w| w == b"secret-host"));
        drop(ds);

        // No key, wrong key, right key.
        assert!(matches!(Datastore::open(&root), Err(StoreError::KeyRequired { .. })));
        let wrong = dir.path().join("wrong");
        std::fs::write(&wrong, b"another key").unwrap();
        let e = Datastore::open_with_key(&root, &KeySource::KeyFile(wrong)).err().unwrap();
        assert!(e.to_string().contains("does not unlock datastore"), "{e}");
        assert!(matches!(Datastore::open_with_key(&root, &KeySource::passphrase("x")), Err(StoreError::WrongKey { .. })));
        let ds = Datastore::open_with_key(&root, &key).unwrap();
        assert_eq!(ds.read_blob(&a.id).unwrap(), text);

        // A flipped byte in the sealed bytes: an error naming the blob.
        let loc = ds.locate(&b).unwrap();
        let f = std::fs::OpenOptions::new().read(true).write(true).open(crate::pack::pack_path(&root, &loc.pack)).unwrap();
        let at = loc.offset + crate::blob::RECORD_HEADER_LEN as u64 + 100;
        let mut byte = [0u8];
        f.read_exact_at(&mut byte, at).unwrap();
        f.write_all_at(&[byte[0] ^ 0x20], at).unwrap();
        let ds = Datastore::open_with_key(&root, &key).unwrap();
        let e = ds.read_blob(&b).unwrap_err();
        assert!(matches!(e, StoreError::CorruptBlob { .. }) && e.to_string().contains("authentication failed"), "{e}");
        assert!(e.to_string().contains(&b.to_hex()), "{e}");
        let rep = crate::check::check(&ds, crate::check::CheckDepth::ReadData, &|_| {}).unwrap();
        assert!(!rep.ok() && rep.errors.iter().any(|m| m.contains("authentication failed")), "{rep:?}");

        // Key rotation: add a passphrase, remove the key file slot.
        let (new_slot, used) = Datastore::add_key(&root, &key, &KeySource::passphrase("pw")).unwrap();
        Datastore::remove_key(&root, &KeySource::passphrase("pw"), &used).unwrap();
        assert!(matches!(Datastore::open_with_key(&root, &key), Err(StoreError::WrongKey { .. })));
        let e = Datastore::remove_key(&root, &KeySource::passphrase("pw"), &new_slot).unwrap_err();
        assert!(e.to_string().contains("last one"), "{e}");
        let ds = Datastore::open_with_key(&root, &KeySource::passphrase("pw")).unwrap();
        assert_eq!(ds.read_blob(&a.id).unwrap(), text);
    }

    #[test]
    fn unknown_feature_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        Datastore::init(&root).unwrap();
        let p = root.join("config.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        v["features"] = serde_json::json!(["time-travel"]);
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        let e = Datastore::open(&root).err().unwrap();
        assert!(matches!(e, StoreError::UnsupportedFeature { .. }) && e.to_string().contains("time-travel"), "{e}");
    }
}
