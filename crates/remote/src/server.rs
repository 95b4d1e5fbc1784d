//! The appliance's side: upload sessions. A session is one agent run
//! into one datastore. It holds a `BlobSink` for its whole life, which
//! registers it as a writer (gc waits for it and keeps what it commits)
//! and commits the snapshot document at the end.

use crate::protocol::{BlobParams, CommitRequest, Committed, OpenSession, PackStored, ParentInfo, SessionInfo};
use crate::verify::verify_pack;
use lifeboat_store::{BlobId, BlobKind, BlobSink, Datastore, PackId, Snapshot, StoreError};
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the appliance refused an agent's request. [`RemoteError::http_status`]
/// and [`RemoteError::kind`] make the error document; the message tells
/// the agent's user what to do.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No such session: it expired (idle for [`SESSION_IDLE`]), was
    /// dropped, or the appliance restarted. HTTP 404; run the agent again.
    #[error("no upload session {id} (it expired, or the appliance restarted); run the agent again")]
    UnknownSession {
        /// The session id asked for.
        id: String,
    },
    /// The session was opened with another agent's token. HTTP 403.
    #[error("upload session {id} belongs to another agent")]
    NotOwner {
        /// The session id asked for.
        id: String,
    },
    /// Agents cannot back up into an encrypted datastore. HTTP 409.
    #[error("datastore {datastore} is encrypted; remote agents cannot back up into an encrypted datastore yet (the appliance would need the agent to hold its key): back up into an unencrypted datastore, or run `lifeboat backup` on the appliance")]
    Encrypted {
        /// The datastore's name.
        datastore: String,
    },
    /// The upload is not a sound pack of this session (bad header or
    /// record, a hash that does not match, a sequence number reused for
    /// another pack). HTTP 400; nothing of it is indexed.
    #[error("pack {pack} refused: {reason}")]
    BadPack {
        /// The pack id (hex).
        pack: String,
        /// What is wrong, and where (offset, blob).
        reason: String,
    },
    /// A tree in the pack names a blob neither in the pack nor in the
    /// datastore. HTTP 409; the pack is discarded.
    #[error("pack {pack} refused: tree {tree} names blob {blob}, which the datastore does not hold (upload it first; a concurrent gc may have removed it: run the agent again)")]
    MissingRef {
        /// The pack id (hex).
        pack: String,
        /// The tree naming the blob (hex).
        tree: String,
        /// The blob not found (hex).
        blob: String,
    },
    /// The commit's root tree is not a stored tree. HTTP 409.
    #[error("commit refused: root tree {tree} is not in the datastore; upload it before committing")]
    MissingRoot {
        /// The root tree id, as the request gave it.
        tree: String,
    },
    /// A tree read asked for a blob that is not a stored tree. HTTP 404.
    #[error("blob {id} is not a tree of this datastore")]
    NotATree {
        /// The blob id (hex).
        id: String,
    },
    /// The request is malformed or out of order (missing hostname or
    /// paths, too many ids, a bad id, a pack out of sequence), or the run
    /// was cancelled on the appliance. HTTP 400.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The session is committed: it takes no more packs. HTTP 409.
    #[error("upload session {id} is already committed")]
    Committed {
        /// The session id.
        id: String,
    },
    /// The session asked for a datastore the appliance does not have.
    /// HTTP 404.
    #[error("no datastore named {name} on the appliance; list them with GET /api/datastores")]
    UnknownDatastore {
        /// The name asked for.
        name: String,
    },
    /// A fault of the appliance, not the request (an actor unreachable, a
    /// worker that panicked). HTTP 500.
    #[error("internal error: {0}")]
    Internal(String),
    /// The datastore failed (I/O, corruption). HTTP 507 when its disk is
    /// full, else 500.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RemoteError {
    /// The HTTP status that fits: a route answers with it.
    pub fn http_status(&self) -> u16 {
        match self {
            RemoteError::UnknownSession { .. } | RemoteError::NotATree { .. } | RemoteError::UnknownDatastore { .. } => 404,
            RemoteError::NotOwner { .. } => 403,
            RemoteError::Encrypted { .. } | RemoteError::MissingRef { .. } | RemoteError::MissingRoot { .. } | RemoteError::Committed { .. } => 409,
            RemoteError::BadPack { .. } | RemoteError::BadRequest(_) => 400,
            RemoteError::Store(e) if e.is_disk_full() => 507,
            RemoteError::Store(_) | RemoteError::Internal(_) => 500,
        }
    }

    /// A short machine-readable kind for error documents.
    pub fn kind(&self) -> &'static str {
        match self {
            RemoteError::UnknownSession { .. } => "unknown-session",
            RemoteError::NotOwner { .. } => "forbidden",
            RemoteError::Encrypted { .. } => "encrypted-datastore",
            RemoteError::BadPack { .. } => "bad-pack",
            RemoteError::MissingRef { .. } => "missing-blob",
            RemoteError::MissingRoot { .. } => "missing-root",
            RemoteError::NotATree { .. } => "not-a-tree",
            RemoteError::BadRequest(_) => "bad-request",
            RemoteError::Committed { .. } => "committed",
            RemoteError::UnknownDatastore { .. } => "not-found",
            RemoteError::Internal(_) => "internal",
            RemoteError::Store(_) => "datastore",
        }
    }
}

/// The result of a session operation.
pub type Result<T> = std::result::Result<T, RemoteError>;

/// Packs uploaded by agents are sealed at this size at most, whatever the
/// datastore's pack target: a dropped connection resends at most this.
pub const AGENT_PACK_MAX: u64 = 16 << 20;
/// A session nobody touched for this long is dropped (its uploaded packs
/// stay, unreferenced until gc reclaims them).
pub const SESSION_IDLE: Duration = Duration::from_secs(3600);
const REFRESH_EVERY: Duration = Duration::from_millis(500);
/// Open sessions per agent at most: opening one more drops the agent's
/// least recently used (a crashed run's), so a crashing agent cannot pile
/// up writer registrations that hold gc back.
pub const SESSIONS_PER_AGENT: usize = 8;

/// Where a session's pack uploads stand.
#[derive(Default)]
struct PackOrder {
    /// The sequence number of the next pack to index.
    next: u64,
    /// Packs being handled now (a retry waits for the first try).
    busy: HashSet<PackId>,
    /// Answers for packs indexed, by sequence number: a retry whose first
    /// try went through gets the same answer.
    done: HashMap<u64, PackStored>,
}

/// How long an uploaded pack waits for the packs before it to arrive.
const TURN_WAIT: Duration = Duration::from_secs(900);

/// All open upload sessions of the appliance.
#[derive(Default)]
pub struct IngestSessions {
    sessions: Mutex<HashMap<String, Arc<UploadSession>>>,
}

/// One open upload session: one agent run into one datastore, from its
/// open to its commit or close.
pub struct UploadSession {
    /// The session id (32 hex digits), as [`SessionInfo::session`] gives it.
    pub id: String,
    /// Name of the agent (API token) that opened it.
    pub owner: String,
    /// Name of the datastore it writes into.
    pub datastore: String,
    ds: Arc<Datastore>,
    hostname: String,
    paths: Vec<String>,
    tags: Vec<String>,
    parent: Option<BlobId>,
    sink: parking_lot::RwLock<Option<BlobSink>>,
    /// Packs are verified and written as they come (an agent sends two at
    /// once), but indexed in the agent's order: see `put_pack`.
    order: Mutex<PackOrder>,
    turn: Condvar,
    committed: Mutex<Option<BlobId>>,
    last_used: Mutex<Instant>,
    last_refresh: Mutex<Instant>,
}

impl IngestSessions {
    /// No sessions yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens a session into `ds` (named `datastore`) for agent `owner`.
    pub fn open(&self, ds: Arc<Datastore>, datastore: &str, owner: &str, req: &OpenSession) -> Result<SessionInfo> {
        self.expire_idle();
        if ds.is_encrypted() {
            return Err(RemoteError::Encrypted { datastore: datastore.into() });
        }
        if req.hostname.is_empty() || req.paths.is_empty() {
            return Err(RemoteError::BadRequest("a session needs a hostname and at least one path".into()));
        }
        let mut paths = req.paths.clone();
        paths.sort();
        paths.dedup();
        // The sink registers the session as a writer before the parent is
        // chosen: gc then keeps everything the parent holds until we end.
        let sink = BlobSink::new(ds.clone())?;
        let parent = if req.force_full { None } else { ds.snapshots()?.into_iter().rev().find(|(_, s)| s.hostname == req.hostname && s.paths == paths) };
        let cfg = ds.config();
        let params = BlobParams {
            small_file_max: cfg.small_file_max,
            chunk_min: cfg.chunk_min,
            chunk_avg: cfg.chunk_avg,
            chunk_max: cfg.chunk_max,
            compression: cfg.compression,
            zstd_level: cfg.zstd_level,
            pack_target: cfg.pack_target.min(AGENT_PACK_MAX),
        };
        let id = PackId::random().to_hex();
        let info = SessionInfo {
            session: id.clone(),
            datastore: datastore.into(),
            params,
            parent: parent.as_ref().map(|(sid, s)| ParentInfo { snapshot: sid.to_hex(), tree: s.tree.to_hex(), ext_metadata: s.summary.ext_metadata }),
        };
        let session = UploadSession {
            id: id.clone(),
            owner: owner.into(),
            datastore: datastore.into(),
            ds,
            hostname: req.hostname.clone(),
            paths,
            tags: req.tags.clone(),
            parent: parent.map(|(sid, _)| sid),
            sink: parking_lot::RwLock::new(Some(sink)),
            order: Mutex::new(PackOrder::default()),
            turn: Condvar::new(),
            committed: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
            last_refresh: Mutex::new(Instant::now()),
        };
        tracing::info!(session = %id, owner, hostname = %req.hostname, "upload session opened");
        let mut all = self.sessions.lock();
        let mut mine: Vec<(Instant, String)> = all.values().filter(|s| s.owner == owner).map(|s| (*s.last_used.lock(), s.id.clone())).collect();
        if mine.len() >= SESSIONS_PER_AGENT {
            mine.sort();
            for (_, old) in &mine[..=mine.len() - SESSIONS_PER_AGENT] {
                tracing::info!(session = %old, owner, "upload session dropped: the agent opened too many");
                all.remove(old);
            }
        }
        all.insert(id, Arc::new(session));
        Ok(info)
    }

    /// The session `id`, if `owner` opened it.
    pub fn get(&self, id: &str, owner: &str) -> Result<Arc<UploadSession>> {
        let s = self.sessions.lock().get(id).cloned().ok_or_else(|| RemoteError::UnknownSession { id: id.into() })?;
        if s.owner != owner {
            return Err(RemoteError::NotOwner { id: id.into() });
        }
        *s.last_used.lock() = Instant::now();
        Ok(s)
    }

    /// Ends a session without a snapshot (the agent gave up, or is done).
    pub fn close(&self, id: &str, owner: &str) -> Result<()> {
        self.get(id, owner)?;
        if let Some(s) = self.sessions.lock().remove(id) {
            if let Some(sink) = s.sink.write().take() {
                sink.abort();
            }
        }
        Ok(())
    }

    /// Open sessions: (id, owner, hostname, idle for).
    pub fn list(&self) -> Vec<(String, String, String, Duration)> {
        self.sessions.lock().values().map(|s| (s.id.clone(), s.owner.clone(), s.hostname.clone(), s.last_used.lock().elapsed())).collect()
    }

    /// Drops every session of `owner` (its token was revoked).
    pub fn close_owner(&self, owner: &str) {
        self.sessions.lock().retain(|_, s| s.owner != owner);
    }

    /// Drops sessions idle for longer than `SESSION_IDLE`.
    pub fn expire_idle(&self) {
        self.sessions.lock().retain(|id, s| {
            let keep = s.last_used.lock().elapsed() < SESSION_IDLE;
            if !keep {
                tracing::info!(session = %id, "upload session expired");
            }
            keep
        });
    }
}

impl UploadSession {
    fn refresh_if_stale(&self) -> Result<()> {
        let mut last = self.last_refresh.lock();
        if last.elapsed() >= REFRESH_EVERY {
            *last = Instant::now();
            self.ds.refresh_index()?;
        }
        Ok(())
    }

    /// For each id, whether the datastore lacks it.
    pub fn missing(&self, ids: &[BlobId]) -> Result<Vec<bool>> {
        if ids.len() > crate::protocol::MISSING_QUERY_MAX {
            return Err(RemoteError::BadRequest(format!("at most {} ids per query", crate::protocol::MISSING_QUERY_MAX)));
        }
        self.refresh_if_stale()?;
        let index = self.ds.index();
        ids.iter().map(|id| Ok(!index.contains_blob(id)?)).collect()
    }

    /// Verifies, writes, fsyncs and indexes pack number `seq` of the run.
    /// Packs are verified and written as they arrive, but indexed in `seq`
    /// order, each only once every blob its trees name is indexed: so a
    /// tree is never in the index before what it names, whichever upload
    /// finishes first. Idempotent: a pack already indexed (an earlier try
    /// whose answer was lost) gets the same answer again.
    pub fn put_pack(&self, pack: &PackId, seq: u64, bytes: &[u8]) -> Result<PackStored> {
        if self.committed.lock().is_some() {
            return Err(RemoteError::Committed { id: self.id.clone() });
        }
        {
            let mut o = self.order.lock();
            loop {
                if let Some(done) = o.done.get(&seq) {
                    return if done.pack == pack.to_hex() {
                        Ok(PackStored { already_stored: true, ..done.clone() })
                    } else {
                        Err(RemoteError::BadPack { pack: pack.to_hex(), reason: format!("pack number {seq} of this run was pack {}", done.pack) })
                    };
                }
                if !o.busy.contains(pack) {
                    break;
                }
                self.turn.wait(&mut o);
            }
            o.busy.insert(*pack);
        }
        let res = self.put_pack_inner(pack, seq, bytes);
        let mut o = self.order.lock();
        o.busy.remove(pack);
        if let Ok(stored) = &res {
            o.done.insert(seq, stored.clone());
        }
        self.turn.notify_all();
        res
    }

    fn put_pack_inner(&self, pack: &PackId, seq: u64, bytes: &[u8]) -> Result<PackStored> {
        let bad = |reason: String| RemoteError::BadPack { pack: pack.to_hex(), reason };
        let v = verify_pack(&self.ds, pack, bytes).map_err(bad)?;
        // Same id already stored: the same agent's same pack, written by
        // an earlier try that did not get as far as the index.
        let built = {
            let sink = self.sink.read();
            let sink = sink.as_ref().ok_or_else(|| RemoteError::Committed { id: self.id.clone() })?;
            sink.store_built_pack(*pack, bytes, v.blobs).map_err(|e| match e {
                StoreError::CorruptPack { reason, .. } => bad(reason),
                e => e.into(),
            })?
        };
        // Our turn: every earlier pack of the run is indexed.
        {
            let deadline = std::time::Instant::now() + TURN_WAIT;
            let mut o = self.order.lock();
            while o.next < seq {
                if self.turn.wait_until(&mut o, deadline).timed_out() {
                    return Err(RemoteError::BadRequest(format!("pack number {seq} came, but pack number {} never did", o.next)));
                }
            }
            if o.next > seq {
                return Err(RemoteError::BadRequest(format!("pack number {seq} of this run is already indexed")));
            }
        }
        self.refresh_if_stale()?;
        let index = self.ds.index();
        for (tree, blob) in &v.external_refs {
            if !index.contains_blob(blob)? {
                // Maybe committed by another writer a moment ago.
                self.ds.refresh_index()?;
                if !self.ds.index().contains_blob(blob)? {
                    built.discard();
                    return Err(RemoteError::MissingRef { pack: pack.to_hex(), tree: tree.to_hex(), blob: blob.to_hex() });
                }
            }
        }
        let (count, stored_already) = (built.blob_count(), built.already_stored());
        {
            let sink = self.sink.read();
            let sink = sink.as_ref().ok_or_else(|| RemoteError::Committed { id: self.id.clone() })?;
            sink.index_built_pack(built)?;
        }
        *self.last_refresh.lock() = Instant::now();
        self.order.lock().next = seq + 1;
        Ok(PackStored { pack: pack.to_hex(), blobs: count, already_stored: stored_already })
    }

    /// A tree blob's plain bytes (the agent walks its parent with them).
    pub fn read_tree(&self, id: &BlobId) -> Result<Vec<u8>> {
        let not_tree = || RemoteError::NotATree { id: id.to_hex() };
        self.refresh_if_stale()?;
        let loc = self.ds.index().blob(id)?.ok_or_else(not_tree)?;
        if loc.kind != BlobKind::Tree {
            return Err(not_tree());
        }
        Ok(self.ds.read_blob(id)?)
    }

    /// Commits the snapshot. Its root tree must be stored; everything below
    /// it then is (see the crate doc). Answering again with the same id if
    /// already committed makes a retried commit safe.
    pub fn commit(&self, req: &CommitRequest) -> Result<Committed> {
        let mut committed = self.committed.lock();
        if let Some(id) = *committed {
            return Ok(Committed { snapshot: id.to_hex() });
        }
        let tree = BlobId::from_hex(&req.tree).ok_or_else(|| RemoteError::BadRequest(format!("tree id {:?} is not 64 hex digits", req.tree)))?;
        self.ds.refresh_index()?;
        match self.ds.index().blob(&tree)? {
            Some(loc) if loc.kind == BlobKind::Tree => {}
            _ => return Err(RemoteError::MissingRoot { tree: req.tree.clone() }),
        }
        let snapshot = Snapshot {
            time: req.time,
            hostname: self.hostname.clone(),
            paths: self.paths.clone(),
            tags: self.tags.clone(),
            tree,
            parent: self.parent,
            summary: req.summary.clone(),
            program: format!("lifeboat agent {} (agent {})", env!("CARGO_PKG_VERSION"), self.owner),
            kind: Default::default(),
            root: req.root.clone(),
        };
        let sink = self.sink.write().take().ok_or_else(|| RemoteError::Committed { id: self.id.clone() })?;
        let id = sink.commit_snapshot(snapshot.encode())?;
        *committed = Some(id);
        tracing::info!(session = %self.id, snapshot = %id, hostname = %self.hostname, "agent snapshot committed");
        Ok(Committed { snapshot: id.to_hex() })
    }
}
