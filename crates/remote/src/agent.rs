//! The agent's side: an `AgentSink` is the `BackupTarget` the ingest
//! pipeline writes into. `put` hashes the blob and queues it; whichever
//! worker fills a batch asks the appliance which of its blobs it lacks,
//! compresses those and appends them to the open pack; a single uploader
//! thread sends full packs in order. Batches are appended in the order
//! they were filled, so every blob lands in the same pack as, or an
//! earlier pack than, any tree naming it: the appliance accepts a tree
//! only when what it names is stored.

use crate::protocol::{BlobParams, CommitRequest, Committed, OpenSession, PackStored, SessionInfo};
use crossbeam_channel::{bounded, Receiver, Sender};
use lifeboat_ingest::{BackupTarget, ChunkParams, IngestError, Progress};
use lifeboat_store::RecordHeader;
use lifeboat_store::{BackupSummary, BlobId, BlobKind, PackId, StoreError};
use lifeboat_store::{PACK_HEADER_LEN, PACK_MAGIC};
use parking_lot::{Condvar, Mutex};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What can go wrong talking to the appliance.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The request did not get an answer (connection refused, reset, timed
    /// out) or the appliance is unavailable (HTTP 502/503/504): retried.
    #[error("{0}")]
    Connection(String),
    /// The appliance answered no: not retried.
    #[error("{message} (HTTP {status})")]
    Refused {
        /// The HTTP status of the answer; 0 when the request could not
        /// even be made (a client-side usage error), 200 when a success
        /// answer made no sense.
        status: u16,
        /// The appliance's error message, or what was wrong.
        message: String,
    },
}

/// The calls of the protocol; HTTP in the CLI, direct in tests.
pub trait Transport: Send + Sync {
    /// Where the appliance is, for messages.
    fn server(&self) -> String;
    /// Opens an upload session (`POST /api/agent/sessions`): the answer
    /// names the session, the datastore's blob parameters and the parent.
    fn open(&self, req: &OpenSession) -> Result<SessionInfo, TransportError>;
    /// For each id, whether the appliance lacks the blob, in order (at most
    /// [`crate::protocol::MISSING_QUERY_MAX`] ids a call).
    fn missing(&self, session: &str, ids: &[BlobId]) -> Result<Vec<bool>, TransportError>;
    /// Pack number `seq` of the run (0, 1, ...: the order to index them in).
    fn put_pack(&self, session: &str, pack: &PackId, seq: u64, bytes: &[u8]) -> Result<PackStored, TransportError>;
    /// The plain bytes of tree blob `id` of the datastore: the agent reads
    /// its parent snapshot's trees with it to skip unchanged files.
    fn read_tree(&self, session: &str, id: &BlobId) -> Result<Vec<u8>, TransportError>;
    /// Commits the snapshot; the session's last request. Safe to repeat:
    /// a committed session answers with the same snapshot id.
    fn commit(&self, session: &str, req: &CommitRequest) -> Result<Committed, TransportError>;
    /// Ends the session, committed or not; what it uploaded but did not
    /// commit stays unreferenced until gc.
    fn close(&self, session: &str) -> Result<(), TransportError>;
}

/// An agent's backup: the same inputs as one on the appliance, and where
/// it goes.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Sources, host name, threads, selection (`lifeboat_ingest::backup`'s).
    pub backup: lifeboat_ingest::BackupOptions,
    /// The appliance's datastore (None: its default).
    pub datastore: Option<String>,
    /// How long to keep retrying while the appliance cannot be reached.
    pub retry_for: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions { backup: Default::default(), datastore: None, retry_for: Duration::from_secs(600) }
    }
}

/// Counters of what went over the wire.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct UploadStats {
    /// Blob ids asked about in missing-blob queries.
    pub blobs_queried: u64,
    /// Blobs in the packs the appliance stored (the appliance's count).
    pub blobs_uploaded: u64,
    /// Bytes of the packs stored (compressed records with their headers),
    /// each pack counted once however often it was sent.
    pub bytes_uploaded: u64,
    /// Packs the appliance stored.
    pub packs_uploaded: u64,
    /// Requests that failed for want of a connection and were sent again.
    pub retries: u64,
}

/// What a successful agent backup made.
#[derive(Debug)]
pub struct AgentOutcome {
    /// The committed snapshot's id (hex).
    pub snapshot_id: String,
    /// The parent snapshot's id (hex) the run compared against; `None`
    /// for a full run.
    pub parent: Option<String>,
    /// The counters committed with the snapshot; `bytes_added`,
    /// `bytes_stored` and `blobs_added` count what this agent uploaded.
    pub summary: BackupSummary,
    /// What went over the wire.
    pub upload: UploadStats,
    /// The walk's warnings (files it could not read and the like).
    pub warnings: Vec<String>,
}

/// Blobs per missing-blob query, and the plain bytes a batch holds at most.
const BATCH_BLOBS: usize = 512;
const BATCH_BYTES: usize = 8 << 20;
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs one backup into the appliance: open a session, walk and upload,
/// commit. On failure the session is closed (what was uploaded stays,
/// unreferenced, until gc) and nothing is committed.
pub fn run_agent_backup(transport: Arc<dyn Transport>, opts: &AgentOptions, progress: &Progress) -> Result<AgentOutcome, IngestError> {
    let start = Instant::now();
    let time = chrono::Utc::now();
    let (sources, paths) = lifeboat_ingest::resolve_sources(&opts.backup.sources)?;
    let retry = Arc::new(Retry { transport: transport.clone(), retry_for: opts.retry_for, cancel: progress.cancel.clone(), retries: AtomicU64::new(0) });
    let req = OpenSession { datastore: opts.datastore.clone(), hostname: opts.backup.hostname.clone(), paths, tags: opts.backup.select.tags.clone(), force_full: opts.backup.force_full };
    let info = retry.call("open a session", || transport.open(&req))?;
    tracing::info!(session = %info.session, parent = ?info.parent, "upload session open");
    let parent = match &info.parent {
        Some(p) => Some(lifeboat_ingest::ParentTree {
            tree: BlobId::from_hex(&p.tree).ok_or_else(|| retry.remote(format!("parent tree id {:?} is not 64 hex digits", p.tree)))?,
            ext_metadata: p.ext_metadata,
        }),
        None => None,
    };
    let sink = AgentSink::new(retry.clone(), &info);
    let p = info.params;
    let params = ChunkParams { small_file_max: p.small_file_max, chunk_min: p.chunk_min, chunk_avg: p.chunk_avg, chunk_max: p.chunk_max };
    let walked = lifeboat_ingest::archive(&sink, &sources, parent, params, &opts.backup.select, opts.backup.threads, progress);
    let lifeboat_ingest::Archived { tree, root, mut summary } = match walked.and_then(|r| sink.finish().map(|_| r)) {
        Ok(r) => r,
        Err(e) => {
            sink.abandon();
            let _ = transport.close(&info.session);
            return Err(e);
        }
    };
    let mut upload = sink.stats();
    summary.bytes_added = sink.bytes_added.load(Ordering::Relaxed);
    summary.bytes_stored = upload.bytes_uploaded;
    summary.blobs_added = upload.blobs_uploaded;
    summary.duration_ms = start.elapsed().as_millis() as u64;
    let commit = CommitRequest { tree: tree.to_hex(), time, summary: summary.clone(), root };
    let done = retry.call("commit the snapshot", || transport.commit(&info.session, &commit));
    let done = match done {
        Ok(d) => d,
        Err(e) => {
            let _ = transport.close(&info.session);
            return Err(e);
        }
    };
    let _ = transport.close(&info.session);
    upload.retries = retry.retries.load(Ordering::Relaxed);
    let warnings = progress.messages.lock().unwrap().clone();
    Ok(AgentOutcome { snapshot_id: done.snapshot, parent: info.parent.map(|p| p.snapshot), summary, upload, warnings })
}

/// Sends a request again while the connection is the problem, with
/// growing pauses, until `retry_for` has passed without success.
struct Retry {
    transport: Arc<dyn Transport>,
    retry_for: Duration,
    cancel: Arc<std::sync::atomic::AtomicBool>,
    retries: AtomicU64,
}

impl Retry {
    fn remote(&self, message: String) -> IngestError {
        IngestError::Remote { server: self.transport.server(), message }
    }

    fn call<T>(&self, what: &str, f: impl Fn() -> Result<T, TransportError>) -> Result<T, IngestError> {
        let mut failing_since: Option<Instant> = None;
        let mut pause = Duration::from_millis(200);
        loop {
            match f() {
                Ok(v) => {
                    if failing_since.is_some() {
                        tracing::info!("{}: connection back; {what} went through", self.transport.server());
                    }
                    return Ok(v);
                }
                Err(TransportError::Refused { status, message }) => {
                    return Err(self.remote(format!("cannot {what}: {message} (HTTP {status})")));
                }
                Err(TransportError::Connection(msg)) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.retry_for {
                        return Err(self
                            .remote(format!("cannot {what}: {msg}; gave up after retrying for {} s (is the appliance up and reachable? raise --retry-for to wait longer)", self.retry_for.as_secs())));
                    }
                    if self.cancel.load(Ordering::Relaxed) {
                        return Err(IngestError::Interrupted);
                    }
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("{}: cannot {what} ({msg}); retrying in {} ms", self.transport.server(), pause.as_millis());
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

struct Batch {
    seq: u64,
    items: Vec<(BlobKind, BlobId, Vec<u8>)>,
    bytes: usize,
}

struct Queue {
    /// Blobs queued or in a pack not yet acknowledged: never asked about
    /// or packed twice. Bounded by the batches and packs in flight.
    pending: HashSet<BlobId>,
    open: Batch,
    next_seq: u64,
}

/// A pack being built in memory, in the datastore's pack format.
struct PackBuf {
    id: PackId,
    /// Its place in the run's order of packs, set when it is sent.
    seq: u64,
    bytes: Vec<u8>,
    ids: Vec<BlobId>,
}

impl PackBuf {
    fn new(cap: usize) -> Self {
        let id = PackId::random();
        let mut bytes = Vec::with_capacity(cap);
        bytes.extend_from_slice(PACK_MAGIC);
        bytes.extend_from_slice(&id.0);
        bytes.extend_from_slice(&[0u8; 8]);
        debug_assert_eq!(bytes.len() as u64, PACK_HEADER_LEN);
        PackBuf { id, seq: 0, bytes, ids: Vec::new() }
    }
}

struct Appender {
    /// The batch whose turn it is to append.
    next: u64,
    pack: Option<PackBuf>,
    /// Packs sent so far (the next one's sequence number).
    packs_sent: u64,
}

struct Shared {
    session: String,
    params: BlobParams,
    queue: Mutex<Queue>,
    appender: Mutex<Appender>,
    turn: Condvar,
    failed: Mutex<Option<String>>,
    stats: Mutex<UploadStats>,
}

/// The ingest pipeline's [`BackupTarget`] on the agent: queues blobs,
/// asks the appliance which it lacks, packs and uploads those. Made and
/// driven by [`run_agent_backup`] only.
pub struct AgentSink {
    retry: Arc<Retry>,
    shared: Arc<Shared>,
    tx: Mutex<Option<Sender<PackBuf>>>,
    uploaders: Mutex<Vec<std::thread::JoinHandle<()>>>,
    bytes_added: AtomicU64,
}

/// Uploads in flight at once: the appliance verifies and writes one pack
/// while it fsyncs and indexes the one before.
const UPLOADERS: usize = 2;
/// Packs waiting for an uploader: the upload overlaps the walk, and memory
/// stays bounded (open + queued + in flight, 16 MiB each at most).
const PACKS_QUEUED: usize = 1;

impl AgentSink {
    fn new(retry: Arc<Retry>, info: &SessionInfo) -> AgentSink {
        let shared = Arc::new(Shared {
            session: info.session.clone(),
            params: info.params,
            queue: Mutex::new(Queue { pending: HashSet::new(), open: Batch { seq: 0, items: Vec::new(), bytes: 0 }, next_seq: 1 }),
            appender: Mutex::new(Appender { next: 0, pack: None, packs_sent: 0 }),
            turn: Condvar::new(),
            failed: Mutex::new(None),
            stats: Mutex::new(UploadStats::default()),
        });
        let (tx, rx) = bounded::<PackBuf>(PACKS_QUEUED);
        let uploaders = (0..UPLOADERS)
            .map(|i| {
                let (r2, s2, rx) = (retry.clone(), shared.clone(), rx.clone());
                std::thread::Builder::new().name(format!("pack-upload-{i}")).spawn(move || upload_loop(&r2, &s2, rx)).expect("spawn a pack uploader")
            })
            .collect();
        AgentSink { retry, shared, tx: Mutex::new(Some(tx)), uploaders: Mutex::new(uploaders), bytes_added: AtomicU64::new(0) }
    }

    fn stats(&self) -> UploadStats {
        *self.shared.stats.lock()
    }

    fn check_failed(&self) -> Result<(), IngestError> {
        match self.shared.failed.lock().as_ref() {
            Some(msg) => Err(self.retry.remote(msg.clone())),
            None => Ok(()),
        }
    }

    fn fail(&self, e: &IngestError) {
        let mut f = self.shared.failed.lock();
        if f.is_none() {
            *f = Some(e.to_string());
        }
    }

    /// Asks about a batch, compresses what is missing and appends it to the
    /// pack on the batch's turn. The turn passes on even after an error, so
    /// no worker waits forever.
    fn process(&self, batch: Batch) -> Result<(), IngestError> {
        let res = self.query_and_encode(&batch.items);
        let mut a = self.shared.appender.lock();
        while a.next != batch.seq {
            self.shared.turn.wait(&mut a);
        }
        let res = res.and_then(|records| self.append(&mut a, records));
        a.next += 1;
        self.shared.turn.notify_all();
        drop(a);
        if let Err(e) = &res {
            self.fail(e);
        }
        res
    }

    fn query_and_encode(&self, items: &[(BlobKind, BlobId, Vec<u8>)]) -> Result<Vec<(RecordHeader, Vec<u8>)>, IngestError> {
        self.check_failed()?;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<BlobId> = items.iter().map(|i| i.1).collect();
        let t = &self.retry.transport;
        let missing = self.retry.call("ask which blobs are missing", || t.missing(&self.shared.session, &ids))?;
        if missing.len() != ids.len() {
            return Err(self.retry.remote(format!("answered {} of {} ids", missing.len(), ids.len())));
        }
        let mut records = Vec::new();
        let mut present = Vec::new();
        for ((kind, id, data), lacks) in items.iter().zip(missing) {
            if !lacks {
                present.push(*id);
                continue;
            }
            let (encoding, stored) = lifeboat_store::encode_plain(data, self.shared.params.codec());
            let header = RecordHeader { kind: *kind, encoding, plain_len: data.len() as u32, stored_len: stored.len() as u32, id: *id, encrypted: false };
            self.bytes_added.fetch_add(data.len() as u64, Ordering::Relaxed);
            records.push((header, stored.into_owned()));
        }
        if !present.is_empty() {
            let mut q = self.shared.queue.lock();
            for id in &present {
                q.pending.remove(id);
            }
        }
        self.shared.stats.lock().blobs_queried += ids.len() as u64;
        Ok(records)
    }

    fn append(&self, a: &mut Appender, records: Vec<(RecordHeader, Vec<u8>)>) -> Result<(), IngestError> {
        let target = self.shared.params.pack_target.max(1 << 20) as usize;
        for (header, stored) in records {
            let p = a.pack.get_or_insert_with(|| PackBuf::new(target + (1 << 20)));
            p.bytes.extend_from_slice(&header.encode());
            p.bytes.extend_from_slice(&stored);
            p.ids.push(header.id);
            if p.bytes.len() >= target {
                let mut full = a.pack.take().unwrap();
                full.seq = a.packs_sent;
                a.packs_sent += 1;
                self.send(full)?;
            }
        }
        Ok(())
    }

    fn send(&self, pack: PackBuf) -> Result<(), IngestError> {
        let tx = self.tx.lock().clone();
        match tx {
            Some(tx) => tx.send(pack).map_err(|_| self.stopped()),
            None => Err(self.stopped()),
        }
    }

    fn stopped(&self) -> IngestError {
        match self.shared.failed.lock().as_ref() {
            Some(msg) => self.retry.remote(msg.clone()),
            None => IngestError::Interrupted,
        }
    }

    /// Sends what is queued and waits until every pack is stored.
    fn finish(&self) -> Result<(), IngestError> {
        let last = {
            let mut q = self.shared.queue.lock();
            let seq = q.next_seq;
            q.next_seq += 1;
            std::mem::replace(&mut q.open, Batch { seq, items: Vec::new(), bytes: 0 })
        };
        self.process(last)?;
        let pack = {
            let mut a = self.shared.appender.lock();
            let seq = a.packs_sent;
            a.packs_sent += 1;
            a.pack.take().map(|mut p| {
                p.seq = seq;
                p
            })
        };
        if let Some(p) = pack {
            self.send(p)?;
        }
        self.tx.lock().take();
        for h in self.uploaders.lock().drain(..) {
            let _ = h.join();
        }
        self.check_failed()
    }

    fn abandon(&self) {
        self.fail(&IngestError::Interrupted);
        self.tx.lock().take();
        for h in self.uploaders.lock().drain(..) {
            let _ = h.join();
        }
    }
}

/// An uploader: takes the next pack, sends it until it is stored. Packs
/// are taken in order; the appliance indexes them in order.
fn upload_loop(retry: &Retry, shared: &Shared, rx: Receiver<PackBuf>) {
    for pack in rx {
        if shared.failed.lock().is_some() {
            continue;
        }
        // Tests hold uploads here (`agent-pack-upload=sleep500`) so that a
        // link cut lands mid-run.
        let _ = lifeboat_store::failpoint::hit("agent-pack-upload");
        let t = &retry.transport;
        match retry.call("upload a pack", || t.put_pack(&shared.session, &pack.id, pack.seq, &pack.bytes)) {
            Ok(stored) => {
                let mut s = shared.stats.lock();
                s.packs_uploaded += 1;
                s.blobs_uploaded += stored.blobs as u64;
                s.bytes_uploaded += pack.bytes.len() as u64;
                drop(s);
                let mut q = shared.queue.lock();
                for id in &pack.ids {
                    q.pending.remove(id);
                }
            }
            Err(e) => {
                let mut f = shared.failed.lock();
                if f.is_none() {
                    *f = Some(e.to_string());
                }
            }
        }
    }
}

impl BackupTarget for AgentSink {
    fn put(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId, IngestError> {
        self.check_failed()?;
        let id = BlobId::of(data);
        let full = {
            let mut q = self.shared.queue.lock();
            if !q.pending.insert(id) {
                return Ok(id);
            }
            q.open.items.push((kind, id, data.to_vec()));
            q.open.bytes += data.len();
            if q.open.items.len() >= BATCH_BLOBS || q.open.bytes >= BATCH_BYTES {
                let seq = q.next_seq;
                q.next_seq += 1;
                Some(std::mem::replace(&mut q.open, Batch { seq, items: Vec::new(), bytes: 0 }))
            } else {
                None
            }
        };
        if let Some(batch) = full {
            self.process(batch)?;
        }
        Ok(id)
    }

    fn read_tree(&self, id: &BlobId) -> lifeboat_store::Result<Vec<u8>> {
        let t = &self.retry.transport;
        self.retry.call("read a tree of the parent snapshot", || t.read_tree(&self.shared.session, id)).map_err(|e| StoreError::Io {
            op: "fetch",
            path: PathBuf::from(format!("tree {id}")),
            source: std::io::Error::other(e.to_string()),
        })
    }
}
