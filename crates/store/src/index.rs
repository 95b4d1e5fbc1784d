//! The RocksDB index. RocksDB lets one process write at a time, yet two
//! backups must run side by side; so a writer holds the primary handle
//! only for the moment of a commit (open, write one synced batch, close),
//! and lookups go through a read-only handle that is reopened after each
//! commit to see what every writer has committed so far.

use crate::blob::{BlobKind, Encoding};
use crate::error::{Result, StoreError};
use crate::fsutil::FileLock;
use crate::id::{BlobId, PackId};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const CF_BLOBS: &str = "blobs";
pub const CF_PACKS: &str = "packs";
pub const CF_SNAPSHOTS: &str = "snapshots";
pub const CF_REFS: &str = "refs";
pub const CF_JOBS: &str = "jobs";
const CFS: [&str; 5] = [CF_BLOBS, CF_PACKS, CF_SNAPSHOTS, CF_REFS, CF_JOBS];
const LOCK_WAIT: Duration = Duration::from_secs(300);

/// Where a blob lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: PackId,
    /// Offset of the record header in the pack.
    pub offset: u64,
    /// Bytes of the record after its header.
    pub stored_len: u32,
    /// Bytes of the blob itself.
    pub plain_len: u32,
    /// What the blob is.
    pub kind: BlobKind,
    /// How its stored bytes are compressed.
    pub encoding: Encoding,
}

impl BlobLocation {
    /// Bytes of [`BlobLocation::encode`].
    pub const ENCODED_LEN: usize = 34;
    /// The index value's bytes.
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut b = [0u8; Self::ENCODED_LEN];
        b[..16].copy_from_slice(&self.pack.0);
        b[16..24].copy_from_slice(&self.offset.to_le_bytes());
        b[24..28].copy_from_slice(&self.stored_len.to_le_bytes());
        b[28..32].copy_from_slice(&self.plain_len.to_le_bytes());
        b[32] = self.kind as u8;
        b[33] = self.encoding as u8;
        b
    }
    /// Parses an index value; `None` if damaged.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != Self::ENCODED_LEN {
            return None;
        }
        let mut pack = [0u8; 16];
        pack.copy_from_slice(&b[..16]);
        Some(BlobLocation {
            pack: PackId(pack),
            offset: u64::from_le_bytes(b[16..24].try_into().ok()?),
            stored_len: u32::from_le_bytes(b[24..28].try_into().ok()?),
            plain_len: u32::from_le_bytes(b[28..32].try_into().ok()?),
            kind: BlobKind::from_u8(b[32])?,
            encoding: Encoding::from_u8(b[33])?,
        })
    }
}

/// What the index records per pack: its size and blob count, so `check`
/// can compare with the file and find orphans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackInfo {
    pub len: u64,
    pub blobs: u32,
}

impl PackInfo {
    fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..].copy_from_slice(&self.blobs.to_le_bytes());
        b
    }
    fn decode(b: &[u8]) -> Option<Self> {
        (b.len() == 12).then(|| PackInfo { len: u64::from_le_bytes(b[..8].try_into().unwrap()), blobs: u32::from_le_bytes(b[8..].try_into().unwrap()) })
    }
}

fn base_options() -> Options {
    let mut o = Options::default();
    o.set_keep_log_file_num(2);
    // No size-rolled info LOG: RocksDB's roller deletes old LOG files while
    // opening and fails the open if another process deleted one first,
    // which two backups committing side by side do. The plain logger
    // tolerates that race; each primary open starts a new LOG anyway.
    o.set_max_log_file_size(0);
    o.set_log_level(rocksdb::LogLevel::Warn);
    // Keys are hashes: compressing them buys nothing.
    o.set_compression_type(rocksdb::DBCompressionType::None);
    o.set_write_buffer_size(4 << 20);
    o.set_max_write_buffer_number(2);
    // Open every table file up front: a writer's compaction may delete
    // files a reader has not opened yet, and open fds keep them alive.
    o.set_max_open_files(-1);
    // RocksDB fallocates 4 MiB for each new MANIFEST; on a disk with just
    // that much free the preallocation succeeds, the next write fails and
    // the distribution's librocksdb aborts on an assertion instead of
    // returning the error. Our MANIFEST stays small: preallocate 64 KiB.
    o.set_manifest_preallocation_size(64 << 10);
    o
}

fn cf_descriptors() -> Vec<ColumnFamilyDescriptor> {
    // One small block cache for all column families of a handle (the
    // default is 8 MiB per family); lookups are bloom-filtered anyway.
    let cache = rocksdb::Cache::new_lru_cache(8 << 20).expect("LRU cache");
    CFS.iter()
        .map(|n| {
            let mut o = base_options();
            let mut bo = rocksdb::BlockBasedOptions::default();
            bo.set_block_cache(&cache);
            bo.set_bloom_filter(10.0, false);
            bo.set_block_size(16 << 10);
            o.set_block_based_table_factory(&bo);
            ColumnFamilyDescriptor::new(*n, o)
        })
        .collect()
}

fn index_err(path: &Path, e: impl ToString) -> StoreError {
    let message = e.to_string();
    if message.contains("No space left on device") {
        return StoreError::DiskFull { path: path.to_path_buf() };
    }
    StoreError::Index { path: path.to_path_buf(), message }
}

/// RocksDB writes a WAL record, table files, a MANIFEST and an OPTIONS file
/// when a commit opens the index; on a nearly full disk the distribution's
/// librocksdb aborts the process (a failed assertion) instead of returning
/// an error. So a commit needs this much free space besides its own bytes.
const COMMIT_RESERVE: u64 = 1 << 20;
/// Deletions (gc) are how space comes back, so they ask for less.
const DELETE_RESERVE: u64 = 128 << 10;

fn ensure_space(path: &Path, batch: &IndexBatch) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let only_deletes = batch.packs.is_empty() && batch.blobs.is_empty() && batch.snapshots.is_empty() && batch.relocate_blobs.is_empty() && batch.restore_blobs.is_empty();
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return Ok(()) };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Ok(());
    }
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    // Written twice: to the WAL now, to a table file by the next open.
    let reserve = if only_deletes { DELETE_RESERVE } else { COMMIT_RESERVE };
    let need = reserve
        + 2 * (batch.blobs.len() as u64 * 80
            + batch.packs.len() as u64 * 40
            + batch.snapshots.iter().map(|s| s.1.len() as u64 + 48).sum::<u64>()
            + (batch.relocate_blobs.len() + batch.restore_blobs.len()) as u64 * 80
            + batch.refs.iter().map(|r| (r.0.len() + r.1.len()) as u64 + 16).sum::<u64>()
            + (batch.delete_blobs.len() + batch.delete_packs.len() + batch.delete_snapshots.len() + batch.delete_blobs_in.len() + batch.delete_refs.len()) as u64 * 48);
    if free < need {
        return Err(StoreError::DiskFull { path: path.to_path_buf() });
    }
    Ok(())
}

/// `index.lock` beside the index: commits hold it exclusively, read-only
/// opens shared. A read-only open that overlaps a commit (which flushes the
/// last WAL into a table file, deletes the WAL and switches MANIFEST) can
/// miss committed data without any error; once open, a reader has every
/// file it needs open and is safe. Best effort: without the lock (no
/// access to the file) the open goes ahead.
fn open_lock(index: &Path, op: libc::c_int) -> Option<FileLock> {
    FileLock::take(&index.with_extension("lock"), op).ok()
}

pub fn create(path: &Path) -> Result<()> {
    let mut o = base_options();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    let db = DB::open_cf_descriptors(&o, path, cf_descriptors()).map_err(|e| index_err(path, e))?;
    db.flush().map_err(|e| index_err(path, e))?;
    Ok(())
}

/// Read-only view of the index as of its opening.
pub struct IndexReader {
    db: DB,
    path: PathBuf,
}

impl IndexReader {
    /// Opens a read view of the index at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.join("CURRENT").exists() {
            return Err(StoreError::Index { path: path.to_path_buf(), message: "index is missing; rebuild it from the packs with `lifeboat datastore repair`".into() });
        }
        let _open = open_lock(path, libc::LOCK_SH);
        // A commit in another process replaces the MANIFEST and may delete
        // WAL and table files while we open: that open fails with "No such
        // file or directory" and a second look sees the new state.
        let mut attempt = 0;
        let db = loop {
            match DB::open_cf_descriptors_read_only(&base_options(), path, cf_descriptors(), false) {
                Ok(db) => break db,
                Err(e) if attempt < 50 && e.to_string().contains("No such file or directory") => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(2 * attempt));
                }
                Err(e) => return Err(index_err(path, e)),
            }
        };
        Ok(IndexReader { db, path: path.to_path_buf() })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family created at init")
    }

    /// Where a blob is, if indexed.
    pub fn blob(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        match self.db.get_pinned_cf(self.cf(CF_BLOBS), id.0).map_err(|e| index_err(&self.path, e))? {
            None => Ok(None),
            Some(v) => BlobLocation::decode(&v).map(Some).ok_or_else(|| index_err(&self.path, format!("blob {id}: damaged index entry"))),
        }
    }

    /// The blob is indexed.
    pub fn contains_blob(&self, id: &BlobId) -> Result<bool> {
        if !self.db.key_may_exist_cf(self.cf(CF_BLOBS), id.0) {
            return Ok(false);
        }
        Ok(self.db.get_pinned_cf(self.cf(CF_BLOBS), id.0).map_err(|e| index_err(&self.path, e))?.is_some())
    }

    /// Every (blob, location), in id order.
    pub fn for_each_blob(&self, mut f: impl FnMut(BlobId, BlobLocation) -> Result<()>) -> Result<()> {
        for item in self.db.iterator_cf(self.cf(CF_BLOBS), rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(|e| index_err(&self.path, e))?;
            let mut id = [0u8; 32];
            if k.len() != 32 {
                return Err(index_err(&self.path, "blob key of wrong length"));
            }
            id.copy_from_slice(&k);
            let loc = BlobLocation::decode(&v).ok_or_else(|| index_err(&self.path, "damaged blob entry"))?;
            f(BlobId(id), loc)?;
        }
        Ok(())
    }

    /// Every indexed pack.
    pub fn packs(&self) -> Result<Vec<(PackId, PackInfo)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_PACKS), rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(|e| index_err(&self.path, e))?;
            let mut id = [0u8; 16];
            if k.len() != 16 {
                return Err(index_err(&self.path, "pack key of wrong length"));
            }
            id.copy_from_slice(&k);
            let info = PackInfo::decode(&v).ok_or_else(|| index_err(&self.path, "damaged pack entry"))?;
            out.push((PackId(id), info));
        }
        Ok(out)
    }

    /// The value under a ref key, if any.
    pub fn get_ref(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(CF_REFS), key).map_err(|e| index_err(&self.path, e))
    }

    /// Entries of the `refs` column family whose key starts with `prefix`.
    pub fn refs_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.for_each_ref(prefix, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    /// Streams the `refs` entries under `prefix`, in key order.
    pub fn for_each_ref(&self, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        let mode = rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_REFS), mode) {
            let (k, v) = item.map_err(|e| index_err(&self.path, e))?;
            if !k.starts_with(prefix) {
                break;
            }
            f(&k, &v)?;
        }
        Ok(())
    }

    /// RocksDB's estimate of the number of blobs (sizes the GC mark set).
    pub fn estimate_blobs(&self) -> u64 {
        self.db.property_int_value_cf(self.cf(CF_BLOBS), "rocksdb.estimate-num-keys").ok().flatten().unwrap_or(0)
    }

    /// Raw snapshot documents, keyed by snapshot id.
    pub fn snapshots(&self) -> Result<Vec<(BlobId, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_SNAPSHOTS), rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(|e| index_err(&self.path, e))?;
            let mut id = [0u8; 32];
            if k.len() != 32 {
                return Err(index_err(&self.path, "snapshot key of wrong length"));
            }
            id.copy_from_slice(&k);
            out.push((BlobId(id), v.to_vec()));
        }
        Ok(out)
    }
}

/// A key of the `refs` column family: a prefix ("gc/blob/", "forget/",
/// ...) followed by raw id bytes.
pub fn ref_key(prefix: &[u8], id: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(id);
    k
}

/// One atomic change to the index.
///
/// The conditional parts are decided inside the commit, under the index
/// lock that serializes all commits, against the index as it is then: a
/// garbage collector planning from an older view must never drop or move
/// an entry another process has rewritten since.
#[derive(Default)]
pub struct IndexBatch {
    pub packs: Vec<(PackId, PackInfo)>,
    pub blobs: Vec<(BlobId, BlobLocation)>,
    pub snapshots: Vec<(BlobId, Vec<u8>)>,
    pub delete_snapshots: Vec<BlobId>,
    pub delete_blobs: Vec<BlobId>,
    pub delete_packs: Vec<PackId>,
    /// Delete the entry only while it still points into this pack.
    pub delete_blobs_in: Vec<(BlobId, PackId)>,
    /// Move the entry to a new location only while it still points into
    /// the old pack.
    pub relocate_blobs: Vec<(BlobId, PackId, BlobLocation)>,
    /// Add the entry only when the blob has none.
    pub restore_blobs: Vec<(BlobId, BlobLocation)>,
    pub refs: Vec<(Vec<u8>, Vec<u8>)>,
    pub delete_refs: Vec<Vec<u8>>,
}

impl IndexBatch {
    /// A new pack of `len` bytes and its blobs, all indexed by this batch.
    pub fn add_pack(&mut self, id: PackId, len: u64, blobs: &[(BlobId, BlobLocation)]) {
        self.packs.push((id, PackInfo { len, blobs: blobs.len() as u32 }));
        self.blobs.extend_from_slice(blobs);
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.packs.len()
            + self.blobs.len()
            + self.snapshots.len()
            + self.delete_snapshots.len()
            + self.delete_blobs.len()
            + self.delete_packs.len()
            + self.delete_blobs_in.len()
            + self.relocate_blobs.len()
            + self.restore_blobs.len()
            + self.refs.len()
            + self.delete_refs.len()
    }
}

/// An index change too large for one batch, committed as a series of
/// batches of at most `chunk` entries. Each batch must leave the index
/// consistent on its own; `failpoint` fires before each commit.
pub struct ChunkedBatch<'a> {
    path: &'a Path,
    batch: IndexBatch,
    chunk: usize,
    failpoint: Option<&'static str>,
}

impl<'a> ChunkedBatch<'a> {
    pub fn new(path: &'a Path, chunk: usize) -> Self {
        ChunkedBatch { path, batch: IndexBatch::default(), chunk, failpoint: None }
    }

    pub fn with_failpoint(mut self, name: &'static str) -> Self {
        self.failpoint = Some(name);
        self
    }

    /// Adds to the current batch, committing it once it is full.
    pub fn add(&mut self, f: impl FnOnce(&mut IndexBatch)) -> Result<()> {
        f(&mut self.batch);
        if self.batch.len() >= self.chunk {
            self.flush()?;
        }
        Ok(())
    }

    /// Commits what is pending, if anything.
    pub fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        if let Some(name) = self.failpoint {
            crate::failpoint::hit(name)?;
        }
        commit(self.path, std::mem::take(&mut self.batch))
    }
}

/// Opens the primary handle (waiting while another process commits),
/// writes the batch with fsync, and closes again.
pub fn commit(path: &Path, batch: IndexBatch) -> Result<()> {
    crate::failpoint::hit("index-commit")?;
    ensure_space(path, &batch)?;
    let _open = open_lock(path, libc::LOCK_EX);
    let db = open_primary(path)?;
    let cf = |n| db.cf_handle(n).expect("column family created at init");
    let mut wb = WriteBatch::default();
    for (id, info) in &batch.packs {
        wb.put_cf(cf(CF_PACKS), id.0, info.encode());
    }
    for (id, loc) in &batch.blobs {
        wb.put_cf(cf(CF_BLOBS), id.0, loc.encode());
    }
    for (id, doc) in &batch.snapshots {
        wb.put_cf(cf(CF_SNAPSHOTS), id.0, doc);
    }
    for id in &batch.delete_snapshots {
        wb.delete_cf(cf(CF_SNAPSHOTS), id.0);
    }
    for id in &batch.delete_blobs {
        wb.delete_cf(cf(CF_BLOBS), id.0);
    }
    for id in &batch.delete_packs {
        wb.delete_cf(cf(CF_PACKS), id.0);
    }
    let current = |id: &BlobId| -> Result<Option<BlobLocation>> { Ok(db.get_pinned_cf(cf(CF_BLOBS), id.0).map_err(|e| index_err(path, e))?.and_then(|v| BlobLocation::decode(&v))) };
    for (id, pack) in &batch.delete_blobs_in {
        if current(id)?.is_some_and(|l| l.pack == *pack) {
            wb.delete_cf(cf(CF_BLOBS), id.0);
        }
    }
    for (id, old, loc) in &batch.relocate_blobs {
        if current(id)?.is_some_and(|l| l.pack == *old) {
            wb.put_cf(cf(CF_BLOBS), id.0, loc.encode());
        }
    }
    for (id, loc) in &batch.restore_blobs {
        if current(id)?.is_none() {
            wb.put_cf(cf(CF_BLOBS), id.0, loc.encode());
        }
    }
    for (k, v) in &batch.refs {
        wb.put_cf(cf(CF_REFS), k, v);
    }
    for k in &batch.delete_refs {
        wb.delete_cf(cf(CF_REFS), k);
    }
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    db.write_opt(wb, &wo).map_err(|e| index_err(path, e))?;
    // Flush the memtables while they are in memory anyway: the WAL is
    // then obsolete, and the next opens (every reader's view after this
    // commit, the next writer) have nothing to replay. Replaying each
    // commit's WAL in each open cost more than the commit itself (a
    // backup of 100k files spent ~4 s in read-only reopens).
    for name in CFS {
        db.flush_cf(cf(name)).map_err(|e| index_err(path, e))?;
    }
    crate::failpoint::hit("index-committed")?;
    Ok(())
}

fn open_primary(path: &Path) -> Result<DB> {
    let start = Instant::now();
    let mut wait = Duration::from_millis(2);
    loop {
        match DB::open_cf_descriptors(&base_options(), path, cf_descriptors()) {
            Ok(db) => return Ok(db),
            Err(e) => {
                let msg = e.to_string();
                // Only lock contention is waited out; any other error (permission
                // denied on LOCK, damage) is reported at once.
                let locked = msg.contains("lock") && msg.contains("Resource temporarily unavailable");
                if !locked {
                    return Err(index_err(path, msg));
                }
                if start.elapsed() > LOCK_WAIT {
                    return Err(StoreError::IndexLocked { path: path.to_path_buf(), secs: LOCK_WAIT.as_secs() });
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(50));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_round_trip() {
        let loc = BlobLocation { pack: PackId([7; 16]), offset: 1 << 40, stored_len: 5, plain_len: 9, kind: BlobKind::Tree, encoding: Encoding::Zstd };
        assert_eq!(BlobLocation::decode(&loc.encode()), Some(loc));
        assert_eq!(BlobLocation::decode(&[0u8; 3]), None);
    }

    #[test]
    fn commit_is_seen_by_a_new_reader_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index");
        create(&p).unwrap();
        let before = IndexReader::open(&p).unwrap();
        let id = BlobId::of(b"abc");
        let loc = BlobLocation { pack: PackId([1; 16]), offset: 32, stored_len: 3, plain_len: 3, kind: BlobKind::SmallFile, encoding: Encoding::Raw };
        commit(&p, IndexBatch { blobs: vec![(id, loc)], ..Default::default() }).unwrap();
        assert!(!before.contains_blob(&id).unwrap());
        let after = IndexReader::open(&p).unwrap();
        assert_eq!(after.blob(&id).unwrap(), Some(loc));
    }
}
