//! `BlobSink`: the write side of one backup run. Many threads `put` blobs;
//! each is hashed, looked up (in this run's pending set, then the index),
//! compressed only if new, and appended to the run's open pack. Full packs
//! go to a sealer thread that fsyncs them and commits their index entries,
//! so CPU work never waits on the disk. The snapshot is committed in the
//! same index batch as the last pack: it exists only if all its data does.

use crate::blob::{self, BlobKind, RecordHeader};
use crate::datastore::Datastore;
use crate::error::{Result, StoreError};
use crate::id::BlobId;
use crate::index::{self, IndexBatch, PackInfo};
use crate::pack::PackWriter;
use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub id: BlobId,
    /// False when the blob was already in the datastore (dedup).
    pub added: bool,
    pub stored_len: u64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SinkStats {
    pub blobs_added: u64,
    pub bytes_added: u64,
    pub bytes_stored: u64,
    pub packs_committed: u64,
}

enum SealJob {
    Pack(PackWriter),
    Final { pack: Option<PackWriter>, snapshot: Option<(BlobId, Vec<u8>)>, reply: Sender<Result<()>> },
}

struct Pending {
    pack: Option<PackWriter>,
    /// Blobs written by this run whose pack is not yet visible in the
    /// index. Bounded by the packs in flight, not by the run's size.
    ids: HashSet<BlobId>,
}

struct Shared {
    ds: Arc<Datastore>,
    last_refresh: Mutex<std::time::Instant>,
    pending: Mutex<Pending>,
    failed: Mutex<Option<String>>,
    blobs_added: AtomicU64,
    bytes_added: AtomicU64,
    bytes_stored: AtomicU64,
    packs_committed: AtomicU64,
}

/// A pack is also sealed at this many blobs: what a run holds per pack
/// in flight (pending ids, locations, the index batch) then stays the same
/// for a million tiny files as for a thousand large ones.
const PACK_MAX_BLOBS: usize = 16 * 1024;

thread_local! {
    /// Each putting thread's compression output, reused blob after blob.
    static ENCODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}
const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

pub struct BlobSink {
    _lock: crate::fsutil::DatastoreLock,
    _registration: crate::fsutil::WriterRegistration,
    shared: Arc<Shared>,
    tx: Option<Sender<SealJob>>,
    sealer: Option<JoinHandle<()>>,
    level: i32,
    pack_target: u64,
}

impl BlobSink {
    pub fn new(ds: Arc<Datastore>) -> Result<Self> {
        let lock = crate::fsutil::DatastoreLock::shared(ds.root())?;
        // Registered before the index view we deduplicate against is
        // opened: see `WriterRegistration` and gc.rs.
        let registration = crate::fsutil::WriterRegistration::register(ds.root())?;
        ds.refresh_index()?;
        ds.remove_stale_partials()?;
        let level = ds.config().zstd_level;
        let pack_target = ds.config().pack_target;
        let shared = Arc::new(Shared {
            ds,
            last_refresh: Mutex::new(std::time::Instant::now()),
            pending: Mutex::new(Pending { pack: None, ids: HashSet::new() }),
            failed: Mutex::new(None),
            blobs_added: AtomicU64::new(0),
            bytes_added: AtomicU64::new(0),
            bytes_stored: AtomicU64::new(0),
            packs_committed: AtomicU64::new(0),
        });
        // One pack sealing while the next fills: back-pressure beyond that.
        let (tx, rx) = bounded::<SealJob>(1);
        let s2 = shared.clone();
        let sealer = std::thread::Builder::new()
            .name("pack-sealer".into())
            .spawn(move || sealer_loop(s2, rx))
            .map_err(|e| StoreError::io("spawn", "pack-sealer", e))?;
        Ok(BlobSink { _lock: lock, _registration: registration, shared, tx: Some(tx), sealer: Some(sealer), level, pack_target })
    }

    fn check_failed(&self) -> Result<()> {
        if let Some(msg) = self.shared.failed.lock().as_ref() {
            return Err(StoreError::Index { path: self.shared.ds.index_path(), message: format!("an earlier pack commit failed: {msg}") });
        }
        Ok(())
    }

    /// True when the blob is already stored or being stored by this run.
    /// The datastore this sink writes into (to read a parent's blobs).
    pub fn datastore(&self) -> &Arc<Datastore> {
        &self.shared.ds
    }

    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        if self.shared.pending.lock().ids.contains(id) {
            return Ok(true);
        }
        self.refresh_if_stale()?;
        self.shared.ds.index().contains_blob(id)
    }

    /// Another process's commits become visible when our reader is
    /// reopened; besides after each of our own commits, that happens at
    /// least every `REFRESH_EVERY`, so concurrent backups deduplicate
    /// against each other even when one of them rarely commits.
    fn refresh_if_stale(&self) -> Result<()> {
        let Some(mut last) = self.shared.last_refresh.try_lock() else {
            return Ok(());
        };
        if last.elapsed() >= REFRESH_EVERY {
            *last = std::time::Instant::now();
            self.shared.ds.refresh_index()?;
        }
        Ok(())
    }

    pub fn put(&self, kind: BlobKind, data: &[u8]) -> Result<PutOutcome> {
        let id = self.shared.ds.blob_id(data);
        self.put_with_id(kind, id, data)
    }

    /// Stores `data` under `id`, which must be `Datastore::blob_id(data)`
    /// (already computed).
    pub fn put_with_id(&self, kind: BlobKind, id: BlobId, data: &[u8]) -> Result<PutOutcome> {
        self.check_failed()?;
        if self.contains(&id)? {
            return Ok(PutOutcome { id, added: false, stored_len: 0 });
        }
        ENCODED.with(|out| {
            let mut out = out.borrow_mut();
            let encoding = blob::encode_into(data, self.level, &mut out);
            let stored: &[u8] = if encoding == blob::Encoding::Zstd { &out } else { data };
            self.append_new(kind, id, data, encoding, stored)
        })
    }

    fn append_new(&self, kind: BlobKind, id: BlobId, data: &[u8], encoding: blob::Encoding, stored: &[u8]) -> Result<PutOutcome> {
        let mut header =
            RecordHeader { kind, encoding, plain_len: data.len() as u32, stored_len: stored.len() as u32, id, encrypted: false };
        let stored = self.shared.ds.seal_record(&mut header, std::borrow::Cow::Borrowed(stored));
        let full = {
            let mut p = self.shared.pending.lock();
            if !p.ids.insert(id) {
                return Ok(PutOutcome { id, added: false, stored_len: 0 });
            }
            if p.pack.is_none() {
                match PackWriter::create(self.shared.ds.root()) {
                    Ok(w) => p.pack = Some(w),
                    Err(e) => {
                        p.ids.remove(&id);
                        return Err(e);
                    }
                }
            }
            let w = p.pack.as_mut().unwrap();
            if let Err(e) = w.append(header, &stored) {
                // A failed write leaves the pack unusable: drop it whole.
                if let Some(w) = p.pack.take() {
                    w.discard();
                }
                return Err(e);
            }
            if w.len() >= self.pack_target || w.blob_count() >= PACK_MAX_BLOBS {
                p.pack.take()
            } else {
                None
            }
        };
        self.shared.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.shared.bytes_added.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.shared.bytes_stored.fetch_add(stored.len() as u64, Ordering::Relaxed);
        if let Some(w) = full {
            self.tx.as_ref().expect("sink open").send(SealJob::Pack(w)).map_err(|_| StoreError::Interrupted)?;
        }
        Ok(PutOutcome { id, added: true, stored_len: stored.len() as u64 })
    }

    pub fn stats(&self) -> SinkStats {
        SinkStats {
            blobs_added: self.shared.blobs_added.load(Ordering::Relaxed),
            bytes_added: self.shared.bytes_added.load(Ordering::Relaxed),
            bytes_stored: self.shared.bytes_stored.load(Ordering::Relaxed),
            packs_committed: self.shared.packs_committed.load(Ordering::Relaxed),
        }
    }

    /// Seals the last pack and commits it together with the snapshot
    /// document (stored as a blob and listed in the index).
    pub fn commit_snapshot(mut self, snapshot_doc: Vec<u8>) -> Result<BlobId> {
        let id = self.put(BlobKind::Snapshot, &snapshot_doc)?.id;
        crate::failpoint::hit("snapshot-commit")?;
        let doc = self.shared.ds.seal_doc(&id, snapshot_doc);
        self.finish(Some((id, doc)))?;
        Ok(id)
    }

    /// Seals and commits whatever is written, without a snapshot.
    pub fn flush(mut self) -> Result<()> {
        self.finish(None)
    }

    fn finish(&mut self, snapshot: Option<(BlobId, Vec<u8>)>) -> Result<()> {
        let pack = self.shared.pending.lock().pack.take();
        let (rtx, rrx) = bounded(1);
        let tx = self.tx.take().expect("sink open");
        tx.send(SealJob::Final { pack, snapshot, reply: rtx }).map_err(|_| StoreError::Interrupted)?;
        drop(tx);
        let res = rrx.recv().unwrap_or(Err(StoreError::Interrupted));
        if let Some(h) = self.sealer.take() {
            let _ = h.join();
        }
        self.check_failed()?;
        res
    }

    /// Stops the run: the open pack is deleted; packs already committed
    /// stay (unreferenced until GC reclaims them).
    pub fn abort(mut self) {
        self.abort_inner();
    }

    fn abort_inner(&mut self) {
        if let Some(w) = self.shared.pending.lock().pack.take() {
            w.discard();
        }
        self.tx.take();
        if let Some(h) = self.sealer.take() {
            let _ = h.join();
        }
    }
}

impl Drop for BlobSink {
    fn drop(&mut self) {
        self.abort_inner();
    }
}

fn sealer_loop(shared: Arc<Shared>, rx: Receiver<SealJob>) {
    for job in rx {
        let failed = shared.failed.lock().clone();
        match job {
            SealJob::Pack(w) => {
                if failed.is_some() {
                    w.discard();
                    continue;
                }
                if let Err(e) = seal_and_commit(&shared, Some(w), None) {
                    *shared.failed.lock() = Some(e.to_string());
                }
            }
            SealJob::Final { pack, snapshot, reply } => {
                let res = match failed {
                    Some(msg) => {
                        if let Some(w) = pack {
                            w.discard();
                        }
                        Err(StoreError::Index { path: shared.ds.index_path(), message: format!("an earlier pack commit failed: {msg}") })
                    }
                    None => seal_and_commit(&shared, pack, snapshot),
                };
                let _ = reply.send(res);
            }
        }
    }
}

fn seal_and_commit(shared: &Shared, pack: Option<PackWriter>, snapshot: Option<(BlobId, Vec<u8>)>) -> Result<()> {
    let root = shared.ds.root();
    let mut batch = IndexBatch::default();
    let mut sealed = None;
    if let Some(w) = pack.filter(|w| !w.is_empty()) {
        let s = w.seal(root)?;
        batch.packs.push((s.id, PackInfo { len: s.len, blobs: s.blobs.len() as u32 }));
        batch.blobs = s.blobs.clone();
        sealed = Some(s);
    }
    if let Some(snap) = snapshot {
        batch.snapshots.push(snap);
    }
    if batch.packs.is_empty() && batch.snapshots.is_empty() {
        return Ok(());
    }
    let ids: Vec<BlobId> = batch.blobs.iter().map(|(id, _)| *id).collect();
    index::commit(&shared.ds.index_path(), batch)?;
    drop(sealed); // releases the pack lock: it is in the index now
    shared.packs_committed.fetch_add(1, Ordering::Relaxed);
    shared.ds.refresh_index()?;
    *shared.last_refresh.lock() = std::time::Instant::now();
    let mut p = shared.pending.lock();
    for id in ids {
        p.ids.remove(&id);
    }
    Ok(())
}
