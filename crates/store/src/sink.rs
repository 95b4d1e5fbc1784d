//! `BlobSink`: the write side of one backup run. Many threads `put` blobs;
//! each is hashed, looked up (in the pending registry of every run on
//! this datastore in the process, then the index), compressed only if
//! new, and appended to one of the run's open packs.
//! Full packs go to a sealer thread that fsyncs them and commits their
//! index entries a few packs at a time, so CPU work never waits on the
//! disk or the index. The snapshot entry is committed after the last
//! packs are, and after the blobs it took from other runs' pending packs
//! are committed by them: it exists only if all its data does.

use crate::blob::{self, BlobKind, Codec, RecordHeader};
use crate::config::Compression;
use crate::datastore::Datastore;
use crate::error::{Result, StoreError};
use crate::id::{BlobId, PackId};
use crate::index::{self, BlobLocation, IndexBatch};
use crate::pack::{PackWriter, SealedPack, WrittenPack};
use crate::pending::{Registry, WriterId};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// A pack built elsewhere and stored by [`BlobSink::store_built_pack`],
/// waiting for its index commit.
pub struct BuiltPack {
    id: PackId,
    len: u64,
    blobs: Vec<(BlobId, BlobLocation)>,
    path: std::path::PathBuf,
    /// `None` when an earlier try had stored it already; holds the pack's
    /// lock (gc leaves a locked pack alone) until it is indexed.
    sealed: Option<SealedPack>,
}

impl BuiltPack {
    /// True when an earlier try had stored this very pack.
    pub fn already_stored(&self) -> bool {
        self.sealed.is_none()
    }

    /// How many records it holds.
    pub fn blob_count(&self) -> u32 {
        self.blobs.len() as u32
    }

    /// Removes the pack again, if this call stored it (a copy an earlier
    /// try stored is gc's to judge).
    pub fn discard(self) {
        if self.sealed.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What [`BlobSink::put`] did with a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// The blob's id.
    pub id: BlobId,
    /// False when the blob was already in the datastore (dedup).
    pub added: bool,
    /// Bytes it took in the pack (0 when deduplicated).
    pub stored_len: u64,
}

/// What a sink has written so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct SinkStats {
    /// New blobs.
    pub blobs_added: u64,
    /// Their plain bytes.
    pub bytes_added: u64,
    /// Bytes they took in packs.
    pub bytes_stored: u64,
    /// Packs sealed and indexed.
    pub packs_committed: u64,
}

enum SealJob {
    Pack(PackWriter),
    /// Seal and commit everything written so far, plus `packs` and the
    /// snapshot record if any.
    Commit {
        packs: Vec<PackWriter>,
        snapshot: Option<(BlobId, Vec<u8>)>,
        reply: Sender<Result<()>>,
    },
}

/// A pack is also sealed at this many blobs: what a run holds per pack
/// in flight (pending ids, locations, the index batch) then stays the same
/// for a million tiny files as for a thousand large ones.
const PACK_MAX_BLOBS: usize = 16 * 1024;

/// Packs open at once, each appended to by one thread at a time. One
/// shared pack made every thread wait for the one copying into it, and a
/// thread preempted while holding it (workers outnumber cores) stalled
/// them all.
const PACK_SLOTS: usize = 4;

/// Full packs are made durable and committed to the index together, at
/// most every `COMMIT_PACKS` packs, `COMMIT_BLOBS` blobs or
/// `COMMIT_INTERVAL`, whichever comes first. Making packs durable flushes
/// the disk's cache, and a flush stalls the disk's other writes until
/// the data written before it is on stable storage: on the test VMs, a
/// sync once a second cut a stream of pack writes from 480 to 320 MB/s.
/// So flushes are rare; the price is that a crash loses up to that much
/// of a run's work (its data stays, unindexed, until gc takes it), and
/// that the ids of blobs not yet committed are held in memory, which
/// `COMMIT_BLOBS` bounds (at 128k, a million tiny files backed up with
/// 1.7x the peak memory of 100k larger ones; at 64k, 1.3x).
const COMMIT_PACKS: usize = 16;
const COMMIT_BLOBS: usize = 64 * 1024;
const COMMIT_INTERVAL: Duration = Duration::from_secs(60);

/// Other processes' commits become visible when our read view is
/// reopened: after each of our own commits, and when the index changed,
/// at most this long after. Concurrent backups so deduplicate against
/// each other even when one of them rarely commits.
const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// See `BlobSink::codec_now`. With one buffer in flight per open pack, 3
/// means most packs are waiting for the disk. Lower thresholds traded
/// more CPU than they saved in writes on the 2-core test VMs.
const AUTO_BACKLOG: usize = 3;

thread_local! {
    /// Each putting thread's compression output, reused blob after blob.
    static ENCODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub(crate) struct Shared {
    ds: Arc<Datastore>,
    /// Blob ids written by this run (and by the process's other runs on
    /// the datastore) whose packs are not yet in the index. Bounded by
    /// the packs in flight, not by the runs' size.
    registry: Arc<Registry>,
    me: WriterId,
    /// Blobs this run references that were pending in another run when
    /// it looked, with that run: they must be committed before our
    /// snapshot is. Pruned as they show up in our index view.
    borrowed: Mutex<HashMap<BlobId, WriterId>>,
    /// The sealer's queue, here so that another run can make us commit
    /// what it borrowed; taken when the run ends.
    tx: Mutex<Option<Sender<SealJob>>>,
    /// The run's open packs; a putting thread appends to the first slot
    /// it can lock.
    slots: Vec<Mutex<Option<PackWriter>>>,
    failed: Mutex<Option<String>>,
    blobs_added: AtomicU64,
    bytes_added: AtomicU64,
    bytes_stored: AtomicU64,
    packs_committed: AtomicU64,
}

/// The write side of one backup run: see the module doc.
pub struct BlobSink {
    _lock: crate::fsutil::DatastoreLock,
    _registration: crate::fsutil::WriterRegistration,
    shared: Arc<Shared>,
    sealer: Option<JoinHandle<()>>,
    compression: Compression,
    zstd_level: i32,
    pack_target: u64,
}

impl BlobSink {
    /// Starts a run on the datastore: registers it as a writer (gc waits for it) and starts its sealer thread.
    pub fn new(ds: Arc<Datastore>) -> Result<Self> {
        let lock = crate::fsutil::DatastoreLock::shared(ds.root())?;
        // Registered before the index view we deduplicate against is
        // opened: see `WriterRegistration` and gc.rs.
        let registration = crate::fsutil::WriterRegistration::register(ds.root())?;
        ds.refresh_index()?;
        ds.remove_stale_partials()?;
        let (compression, zstd_level) = (ds.config().compression, ds.config().zstd_level);
        let pack_target = ds.config().pack_target;
        let registry = Registry::for_root(ds.root());
        // Every slot's pack may fill while one is sealed: back-pressure
        // beyond that.
        let (tx, rx) = bounded::<SealJob>(PACK_SLOTS);
        let shared = Arc::new_cyclic(|weak| Shared {
            ds,
            me: registry.join(weak.clone()),
            registry: registry.clone(),
            borrowed: Mutex::new(HashMap::new()),
            tx: Mutex::new(Some(tx)),
            slots: (0..PACK_SLOTS).map(|_| Mutex::new(None)).collect(),
            failed: Mutex::new(None),
            blobs_added: AtomicU64::new(0),
            bytes_added: AtomicU64::new(0),
            bytes_stored: AtomicU64::new(0),
            packs_committed: AtomicU64::new(0),
        });
        let s2 = shared.clone();
        let sealer = std::thread::Builder::new().name("pack-sealer".into()).spawn(move || sealer_loop(s2, rx)).map_err(|e| {
            shared.registry.leave(shared.me);
            StoreError::io("spawn", "pack-sealer", e)
        })?;
        Ok(BlobSink { _lock: lock, _registration: registration, shared, sealer: Some(sealer), compression, zstd_level, pack_target })
    }

    fn check_failed(&self) -> Result<()> {
        if let Some(msg) = self.shared.failed.lock().as_ref() {
            return Err(StoreError::Index { path: self.shared.ds.index_path(), message: format!("an earlier pack commit failed: {msg}") });
        }
        Ok(())
    }

    /// The datastore this sink writes into (to read a parent's blobs).
    pub fn datastore(&self) -> &Arc<Datastore> {
        &self.shared.ds
    }

    /// True when the blob is already stored or being stored by this run
    /// or another run on the datastore in this process (whose commit our
    /// snapshot then waits for).
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        match self.shared.registry.owner(id) {
            Some(w) if w == self.shared.me => return Ok(true),
            Some(w) => {
                self.shared.borrowed.lock().insert(*id, w);
                return Ok(true);
            }
            None => {}
        }
        self.shared.ds.index().contains_blob(id)
    }

    /// Stores a blob unless the datastore (or a run in flight) has it already.
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
            let encoding = blob::encode_into(data, self.codec_now(), &mut out);
            let stored: &[u8] = if encoding == blob::Encoding::Raw { data } else { &out };
            self.append_new(kind, id, data, encoding, stored)
        })
    }

    /// The codec for the next blob. `Auto` compresses harder only while
    /// the disk is clearly behind (`AUTO_BACKLOG` buffers wait for it):
    /// then every byte saved is time saved, and the CPU would otherwise
    /// wait on the disk anyway.
    fn codec_now(&self) -> Codec {
        match self.compression {
            Compression::None => Codec::None,
            Compression::Lz4 => Codec::Lz4,
            Compression::Zstd => Codec::Zstd(self.zstd_level),
            Compression::Auto if crate::pack::write_backlog() >= AUTO_BACKLOG => Codec::Zstd(self.zstd_level),
            Compression::Auto => Codec::Lz4,
        }
    }

    fn append_new(&self, kind: BlobKind, id: BlobId, data: &[u8], encoding: blob::Encoding, stored: &[u8]) -> Result<PutOutcome> {
        let mut header = RecordHeader { kind, encoding, plain_len: data.len() as u32, stored_len: stored.len() as u32, id, encrypted: false };
        let stored = self.shared.ds.seal_record(&mut header, std::borrow::Cow::Borrowed(stored));
        if let Err(w) = self.shared.registry.claim(id, self.shared.me) {
            // Another thread of ours, or another run, stores it.
            if w != self.shared.me {
                self.shared.borrowed.lock().insert(id, w);
            }
            return Ok(PutOutcome { id, added: false, stored_len: 0 });
        }
        let full = match self.append_to_a_pack(header, &stored) {
            Ok(full) => full,
            Err(e) => {
                self.shared.registry.release(&id, self.shared.me);
                return Err(e);
            }
        };
        self.shared.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.shared.bytes_added.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.shared.bytes_stored.fetch_add(stored.len() as u64, Ordering::Relaxed);
        if let Some(w) = full {
            let tx = self.shared.tx.lock().clone().ok_or(StoreError::Interrupted)?;
            tx.send(SealJob::Pack(w)).map_err(|_| StoreError::Interrupted)?;
        }
        Ok(PutOutcome { id, added: true, stored_len: stored.len() as u64 })
    }

    /// Appends a record to the first open pack no other thread is using
    /// (waiting for one only when all are busy); returns the pack if that
    /// filled it.
    fn append_to_a_pack(&self, header: RecordHeader, stored: &[u8]) -> Result<Option<PackWriter>> {
        let slots = &self.shared.slots;
        let mut slot = slots.iter().find_map(|s| s.try_lock());
        if slot.is_none() {
            // All busy: wait on one, spreading the waiters.
            slot = Some(slots[header.id.0[1] as usize % slots.len()].lock());
        }
        let mut slot = slot.expect("a slot");
        if slot.is_none() {
            *slot = Some(PackWriter::create(self.shared.ds.root())?);
        }
        let w = slot.as_mut().unwrap();
        if let Err(e) = w.append(header, stored) {
            // A failed write leaves the pack unusable: drop it whole, and
            // with it the run (other threads may have counted on its blobs).
            if let Some(w) = slot.take() {
                w.discard();
            }
            self.fail(&e);
            return Err(e);
        }
        Ok(if w.len() >= self.pack_target || w.blob_count() >= PACK_MAX_BLOBS { slot.take() } else { None })
    }

    fn fail(&self, e: &StoreError) {
        self.shared.fail(e.to_string());
    }

    /// What the run has written so far.
    pub fn stats(&self) -> SinkStats {
        SinkStats {
            blobs_added: self.shared.blobs_added.load(Ordering::Relaxed),
            bytes_added: self.shared.bytes_added.load(Ordering::Relaxed),
            bytes_stored: self.shared.bytes_stored.load(Ordering::Relaxed),
            packs_committed: self.shared.packs_committed.load(Ordering::Relaxed),
        }
    }

    /// Seals and commits the last packs, then the snapshot document
    /// (stored as a blob and listed in the index).
    pub fn commit_snapshot(mut self, snapshot_doc: Vec<u8>) -> Result<BlobId> {
        let id = self.put(BlobKind::Snapshot, &snapshot_doc)?.id;
        // What we took from other runs first: a blob they lost is one we
        // may hold ourselves after all, committed below.
        settle_borrowed(&self.shared)?;
        // Everything but the snapshot record is durable and indexed first,
        // so the failpoint stands where a crash leaves the most behind.
        self.commit_written(None)?;
        crate::failpoint::hit("snapshot-commit")?;
        let doc = self.shared.ds.seal_doc(&id, snapshot_doc);
        self.finish(Some((id, doc)))?;
        Ok(id)
    }

    /// Stores a whole pack built elsewhere (a remote agent's, verified
    /// record by record by the caller; `blobs` are its records'
    /// locations): durable in `packs/`, not yet in the index. Storing it
    /// again (a retried upload: same id) finds the first copy, if it is
    /// the same length. [`BlobSink::index_built_pack`] makes its blobs
    /// visible; [`BuiltPack::discard`] takes it back.
    pub fn store_built_pack(&self, id: PackId, bytes: &[u8], blobs: Vec<(BlobId, BlobLocation)>) -> Result<BuiltPack> {
        self.check_failed()?;
        let root = self.shared.ds.root();
        let path = crate::pack::pack_path(root, &id);
        let len = bytes.len() as u64;
        let sealed = match std::fs::metadata(&path) {
            Ok(m) if m.len() == len => None,
            Ok(m) => return Err(StoreError::CorruptPack { pack: id.to_hex(), reason: format!("a different pack with this id ({} bytes, not {len}) is already stored", m.len()) }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(crate::pack::store_built(root, id, bytes, blobs.clone())?),
            Err(e) => return Err(StoreError::io("stat", &path, e)),
        };
        Ok(BuiltPack { id, len, blobs, path, sealed })
    }

    /// Commits a built pack's blobs to the index, then reopens the view
    /// so that this and later runs deduplicate against them.
    pub fn index_built_pack(&self, pack: BuiltPack) -> Result<()> {
        self.check_failed()?;
        let mut batch = IndexBatch::default();
        batch.add_pack(pack.id, pack.len, &pack.blobs);
        index::commit(&self.shared.ds.index_path(), batch)?;
        self.shared.packs_committed.fetch_add(1, Ordering::Relaxed);
        // In the index now: its lock can go.
        drop(pack.sealed);
        self.shared.ds.refresh_index()
    }

    /// Seals and commits whatever is written, without a snapshot.
    pub fn flush(mut self) -> Result<()> {
        self.finish(None)
    }

    fn take_open_packs(&self) -> Vec<PackWriter> {
        self.shared.take_open_packs()
    }

    fn commit_written(&mut self, snapshot: Option<(BlobId, Vec<u8>)>) -> Result<()> {
        self.shared.commit_written(snapshot)
    }

    /// Ends the sealer (once every queue handle is gone) and takes the
    /// run out of the registry.
    fn stop_sealer(&mut self) {
        self.shared.tx.lock().take();
        if let Some(h) = self.sealer.take() {
            let _ = h.join();
        }
        self.shared.registry.leave(self.shared.me);
    }

    fn finish(&mut self, snapshot: Option<(BlobId, Vec<u8>)>) -> Result<()> {
        let res = self.commit_written(snapshot);
        self.stop_sealer();
        self.check_failed()?;
        res
    }

    /// Stops the run: the open packs are deleted; packs already sealed
    /// stay (unreferenced until GC reclaims them). While other runs on the
    /// datastore may have taken blobs from the open packs, those are
    /// committed instead, so that the others' snapshots can name them.
    pub fn abort(mut self) {
        self.abort_inner();
    }

    fn abort_inner(&mut self) {
        if self.sealer.is_none() {
            return;
        }
        let keep = self.shared.failed.lock().is_none() && self.shared.registry.others(self.shared.me);
        if !keep || self.commit_written(None).is_err() {
            for w in self.take_open_packs() {
                w.discard();
            }
        }
        self.stop_sealer();
    }
}

impl Drop for BlobSink {
    fn drop(&mut self) {
        self.abort_inner();
    }
}

impl Shared {
    fn fail(&self, msg: String) {
        let mut f = self.failed.lock();
        if f.is_none() {
            *f = Some(msg);
            // What we have pending may never be stored: other runs must
            // store it themselves from now on.
            self.registry.purge(self.me);
        }
    }

    fn take_open_packs(&self) -> Vec<PackWriter> {
        self.slots.iter().filter_map(|s| s.lock().take()).collect()
    }

    /// Seals and commits the open and written packs (and the snapshot).
    /// Also called by other runs, to settle what they borrowed from us.
    fn commit_written(&self, snapshot: Option<(BlobId, Vec<u8>)>) -> Result<()> {
        let tx = self.tx.lock().clone().ok_or(StoreError::Interrupted)?;
        let packs = self.take_open_packs();
        let (rtx, rrx) = bounded(1);
        tx.send(SealJob::Commit { packs, snapshot, reply: rtx }).map_err(|_| StoreError::Interrupted)?;
        drop(tx);
        rrx.recv().unwrap_or(Err(StoreError::Interrupted))
    }

    /// Drops borrowed blobs that our index view now has.
    fn prune_borrowed(&self) -> Result<()> {
        // Looked up outside the lock (putting threads take it), and never
        // taken out of the map meanwhile: `settle_borrowed` must see every
        // id not known to be indexed.
        let ids: Vec<BlobId> = self.borrowed.lock().keys().copied().collect();
        if ids.is_empty() {
            return Ok(());
        }
        let index = self.ds.index();
        let mut indexed = Vec::new();
        for id in ids {
            if index.contains_blob(&id)? {
                indexed.push(id);
            }
        }
        let mut b = self.borrowed.lock();
        for id in &indexed {
            b.remove(id);
        }
        Ok(())
    }
}

/// How long to wait between rounds of asking other runs to commit what we
/// borrowed: a blob they have claimed may still be on its way into a pack.
const SETTLE_RETRY: Duration = Duration::from_millis(20);

/// Makes sure every blob this run took from another run's pending packs
/// is committed to the index, asking those runs to commit now. A blob
/// that is neither indexed nor pending any more was lost with a run that
/// failed: then the snapshot cannot be committed (we do not have the
/// data to store it ourselves).
fn settle_borrowed(shared: &Shared) -> Result<()> {
    for round in 0u64.. {
        if round > 0 {
            std::thread::sleep(SETTLE_RETRY);
        }
        shared.ds.refresh_index()?;
        shared.prune_borrowed()?;
        let borrowed: Vec<(BlobId, WriterId)> = shared.borrowed.lock().iter().map(|(id, w)| (*id, *w)).collect();
        if borrowed.is_empty() {
            return Ok(());
        }
        let mut owners = std::collections::BTreeSet::new();
        for (id, _) in &borrowed {
            match shared.registry.owner(id) {
                // We store it ourselves now (its first owner failed).
                Some(w) if w == shared.me => {
                    shared.borrowed.lock().remove(id);
                }
                Some(w) => {
                    owners.insert(w);
                    shared.borrowed.lock().insert(*id, w);
                }
                None => {
                    // Committed just after our view was reopened, or lost.
                    shared.ds.refresh_index()?;
                    if shared.ds.index().contains_blob(id)? {
                        shared.borrowed.lock().remove(id);
                        continue;
                    }
                    return Err(StoreError::SharedBlobLost { id: id.to_hex(), path: shared.ds.root().to_path_buf() });
                }
            }
        }
        for w in owners {
            if let Some(other) = shared.registry.writer(w) {
                // An error of theirs fails their run and shows here as
                // the blob lost on the next round.
                let _ = other.commit_written(None);
            }
        }
    }
    Ok(())
}

/// Seals packs as they fill, commits them a few at a time, and keeps the
/// run's read view of the index fresh (off the workers' path: reopening
/// it takes tens of milliseconds).
fn sealer_loop(shared: Arc<Shared>, rx: Receiver<SealJob>) {
    // Full packs, written but not yet durable: sealed together when
    // committed (`pack::seal_all`).
    let mut written: Vec<WrittenPack> = Vec::new();
    let mut last_commit = Instant::now();
    let mut view = IndexView::now(&shared.ds);
    let fail = |e: StoreError| shared.fail(e.to_string());
    loop {
        let job = match rx.recv_timeout(REFRESH_EVERY) {
            Ok(job) => Some(job),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let failed = shared.failed.lock().clone();
        match job {
            Some(SealJob::Pack(w)) => {
                if failed.is_some() {
                    w.discard();
                    continue;
                }
                match w.complete() {
                    Ok(p) => written.push(p),
                    Err(e) => fail(e),
                }
            }
            Some(SealJob::Commit { packs, snapshot, reply }) => {
                let res = match failed {
                    Some(msg) => {
                        packs.into_iter().for_each(PackWriter::discard);
                        Err(StoreError::Index { path: shared.ds.index_path(), message: format!("an earlier pack commit failed: {msg}") })
                    }
                    None => {
                        let res = packs
                            .into_iter()
                            .filter(|w| !w.is_empty())
                            .try_for_each(|w| w.complete().map(|p| written.push(p)))
                            .and_then(|()| seal_and_commit(&shared, std::mem::take(&mut written), snapshot));
                        match res {
                            Ok(v) => {
                                view = v;
                                last_commit = Instant::now();
                                Ok(())
                            }
                            Err(e) => {
                                // Another run may have asked for this
                                // commit: the run that owns the lost packs
                                // must learn of it too.
                                shared.fail(e.to_string());
                                Err(e)
                            }
                        }
                    }
                };
                let _ = reply.send(res);
                continue;
            }
            None => {}
        }
        let blobs: usize = written.iter().map(WrittenPack::blob_count).sum();
        if !written.is_empty() && (written.len() >= COMMIT_PACKS || blobs >= COMMIT_BLOBS || last_commit.elapsed() >= COMMIT_INTERVAL) {
            match seal_and_commit(&shared, std::mem::take(&mut written), None).and_then(|v| shared.prune_borrowed().map(|()| v)) {
                Ok(v) => view = v,
                Err(e) => fail(e),
            }
            last_commit = Instant::now();
        } else if view.taken.elapsed() >= REFRESH_EVERY && view.changed(&shared.ds) {
            view = IndexView::now(&shared.ds);
            if let Err(e) = shared.ds.refresh_index().and_then(|()| shared.prune_borrowed()) {
                fail(e);
            }
        }
    }
    // The run was aborted: packs already written are kept and indexed as
    // if the abort had come a little later (best effort; if this fails,
    // gc removes what reached packs/ as orphans).
    if !written.is_empty() {
        let _ = seal_and_commit(&shared, written, None);
    }
}

/// When our read view of the index was last reopened, and the index
/// directory's modification time then: every commit (ours or another
/// process's) creates files there, so an unchanged time means nothing to
/// reopen for.
struct IndexView {
    taken: Instant,
    mtime: Option<SystemTime>,
}

impl IndexView {
    fn now(ds: &Datastore) -> Self {
        IndexView { taken: Instant::now(), mtime: Self::mtime(ds) }
    }
    fn mtime(ds: &Datastore) -> Option<SystemTime> {
        std::fs::metadata(ds.index_path()).and_then(|m| m.modified()).ok()
    }
    fn changed(&self, ds: &Datastore) -> bool {
        self.mtime.is_none() || Self::mtime(ds) != self.mtime
    }
}

/// Makes written packs durable and commits them (and the snapshot
/// document, if any) in one index batch, reopens our read view, then
/// drops their ids from the pending set.
fn seal_and_commit(shared: &Shared, written: Vec<WrittenPack>, snapshot: Option<(BlobId, Vec<u8>)>) -> Result<IndexView> {
    let sealed = crate::pack::seal_all(shared.ds.root(), written)?;
    let mut batch = IndexBatch::default();
    for s in &sealed {
        batch.add_pack(s.id, s.len, &s.blobs);
    }
    if let Some(snap) = snapshot {
        batch.snapshots.push(snap);
    }
    if batch.packs.is_empty() && batch.snapshots.is_empty() {
        return Ok(IndexView::now(&shared.ds));
    }
    let ids: Vec<BlobId> = batch.blobs.iter().map(|(id, _)| *id).collect();
    index::commit(&shared.ds.index_path(), batch)?;
    shared.packs_committed.fetch_add(sealed.len() as u64, Ordering::Relaxed);
    // Releases the packs' locks: they are in the index now.
    drop(sealed);
    // Taken before the reopen: a commit landing in between shows as a
    // change next time.
    let view = IndexView::now(&shared.ds);
    shared.ds.refresh_index()?;
    for id in &ids {
        shared.registry.release(id, shared.me);
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatastoreConfig;
    use crate::snapshot::Snapshot;
    use crate::tree::{Node, Tree};

    use crate::testutil::noise;

    fn datastore(dir: &std::path::Path) -> Arc<Datastore> {
        let cfg = DatastoreConfig { pack_target: 256 << 10, ..DatastoreConfig::new() };
        Arc::new(Datastore::init_with(&dir.join("ds"), cfg).unwrap())
    }

    /// Commits a snapshot of files with the contents `blobs` (already
    /// put, as a backup puts each once).
    fn commit(sink: BlobSink, blobs: &[Vec<u8>]) -> Result<BlobId> {
        let mut nodes = Vec::new();
        for (i, b) in blobs.iter().enumerate() {
            let id = sink.datastore().blob_id(b);
            nodes.push(Node::file(format!("f{i:03}").as_bytes(), 0o644, 0, 0, vec![id]));
        }
        let tree = sink.put(BlobKind::Tree, &Tree { nodes }.encode())?.id;
        let snap = Snapshot::for_test(tree);
        sink.commit_snapshot(snap.encode())
    }

    fn pack_bytes(ds: &Datastore) -> u64 {
        ds.pack_files().unwrap().iter().map(|p| p.len).sum()
    }

    #[test]
    fn concurrent_runs_in_one_process_store_shared_blobs_once() {
        let dir = tempfile::tempdir().unwrap();
        let ds = datastore(dir.path());
        let blobs: Vec<Vec<u8>> = (0..40).map(|i| noise(i, 50_000)).collect();
        let a = BlobSink::new(ds.clone()).unwrap();
        let b = BlobSink::new(ds.clone()).unwrap();
        // `a` stores the blobs first, but commits nothing yet.
        for x in &blobs {
            assert!(a.put(BlobKind::SmallFile, x).unwrap().added);
        }
        // `b` takes them from `a`'s pending packs, and its snapshot
        // commits only once `a` has committed them.
        for x in &blobs {
            assert!(!b.put(BlobKind::SmallFile, x).unwrap().added);
        }
        assert_eq!(b.stats().bytes_added, 0);
        commit(b, &blobs).unwrap();
        ds.refresh_index().unwrap();
        for x in &blobs {
            assert_eq!(ds.read_blob(&ds.blob_id(x)).unwrap(), *x);
        }
        commit(a, &blobs).unwrap();
        let stored = pack_bytes(&ds);
        assert!(stored < 41 * 50_000 + 64 * 1024, "{stored} pack bytes for 40 x 50,000 bytes shared");
        let check = crate::check::check(&ds, crate::check::CheckDepth::ReadData, &|_| {}).unwrap();
        assert!(check.ok(), "{check:?}");
    }

    #[test]
    fn an_aborted_run_commits_what_another_run_took_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let ds = datastore(dir.path());
        let blobs: Vec<Vec<u8>> = (0..10).map(|i| noise(100 + i, 30_000)).collect();
        let a = BlobSink::new(ds.clone()).unwrap();
        let b = BlobSink::new(ds.clone()).unwrap();
        for x in &blobs {
            a.put(BlobKind::SmallFile, x).unwrap();
        }
        for x in &blobs {
            assert!(!b.put(BlobKind::SmallFile, x).unwrap().added);
        }
        a.abort();
        let snap = commit(b, &blobs).unwrap();
        ds.refresh_index().unwrap();
        assert!(ds.snapshots().unwrap().iter().any(|(id, _)| *id == snap));
        for x in &blobs {
            assert_eq!(ds.read_blob(&ds.blob_id(x)).unwrap(), *x);
        }
        let check = crate::check::check(&ds, crate::check::CheckDepth::ReadData, &|_| {}).unwrap();
        assert!(check.ok(), "{check:?}");
    }

    #[test]
    fn a_lost_borrowed_blob_fails_the_snapshot_commit() {
        let dir = tempfile::tempdir().unwrap();
        let ds = datastore(dir.path());
        let x = noise(7, 10_000);
        let a = BlobSink::new(ds.clone()).unwrap();
        let b = BlobSink::new(ds.clone()).unwrap();
        a.put(BlobKind::SmallFile, &x).unwrap();
        assert!(!b.put(BlobKind::SmallFile, &x).unwrap().added);
        // `a` fails: its open pack is thrown away, and with it the blob.
        a.fail(&StoreError::Interrupted);
        drop(a);
        let e = commit(b, std::slice::from_ref(&x)).unwrap_err();
        assert!(matches!(e, StoreError::SharedBlobLost { .. }), "{e}");
        ds.refresh_index().unwrap();
        assert!(ds.snapshots().unwrap().is_empty());
        let check = crate::check::check(&ds, crate::check::CheckDepth::ReadData, &|_| {}).unwrap();
        assert!(check.ok(), "{check:?}");
    }
}
