//! The agent and the appliance's sessions together, in one process,
//! through a direct `Transport` (optionally one that drops connections).

use lifeboat_ingest::{Progress, RestoreOptions};
use lifeboat_remote::protocol::*;
use lifeboat_remote::{run_agent_backup, AgentOptions, IngestSessions, RemoteError, Transport, TransportError};
use lifeboat_store::{BlobId, Datastore, DatastoreConfig, KeySource, PackId};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Calls the sessions directly. With `drop_every` = n, every n-th call
/// fails as a lost connection: half of them before the appliance sees the
/// request, half after it handled it (the answer lost).
struct Direct {
    ds: Arc<Datastore>,
    sessions: IngestSessions,
    owner: String,
    drop_every: u64,
    calls: AtomicU64,
}

impl Direct {
    fn new(ds: Arc<Datastore>, owner: &str, drop_every: u64) -> Self {
        Direct { ds, sessions: IngestSessions::new(), owner: owner.into(), drop_every, calls: AtomicU64::new(0) }
    }
    fn call<T>(&self, f: impl FnOnce() -> Result<T, RemoteError>) -> Result<T, TransportError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let drop_now = self.drop_every > 0 && n.is_multiple_of(self.drop_every);
        if drop_now && n.is_multiple_of(2) {
            return Err(TransportError::Connection("connection reset (before)".into()));
        }
        let r = f().map_err(|e| TransportError::Refused { status: e.http_status(), message: e.to_string() });
        if drop_now {
            return Err(TransportError::Connection("connection reset (answer lost)".into()));
        }
        r
    }
}

impl Transport for Direct {
    fn server(&self) -> String {
        "direct".into()
    }
    fn open(&self, req: &OpenSession) -> Result<SessionInfo, TransportError> {
        self.call(|| self.sessions.open(self.ds.clone(), "default", &self.owner, req))
    }
    fn missing(&self, session: &str, ids: &[BlobId]) -> Result<Vec<bool>, TransportError> {
        self.call(|| self.sessions.get(session, &self.owner)?.missing(ids))
    }
    fn put_pack(&self, session: &str, pack: &PackId, seq: u64, bytes: &[u8]) -> Result<PackStored, TransportError> {
        self.call(|| self.sessions.get(session, &self.owner)?.put_pack(pack, seq, bytes))
    }
    fn read_tree(&self, session: &str, id: &BlobId) -> Result<Vec<u8>, TransportError> {
        self.call(|| self.sessions.get(session, &self.owner)?.read_tree(id))
    }
    fn commit(&self, session: &str, req: &CommitRequest) -> Result<Committed, TransportError> {
        self.call(|| self.sessions.get(session, &self.owner)?.commit(req))
    }
    fn close(&self, session: &str) -> Result<(), TransportError> {
        self.call(|| self.sessions.close(session, &self.owner))
    }
}

fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut v);
    v
}

/// A tree with small files, a chunked large file, a symlink, nested dirs.
fn make_tree(root: &Path, seed: u64) {
    for d in 0..6u64 {
        let dir = root.join(format!("dir{d}")).join("sub");
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..40u64 {
            let body = if f % 3 == 0 { format!("text file {f} of dir {d}\n").repeat(50).into_bytes() } else { noise(seed * 1000 + d * 100 + f, 3000 + f as usize * 7) };
            std::fs::write(dir.join(format!("f{f}.dat")), body).unwrap();
        }
    }
    std::fs::write(root.join("big.bin"), noise(seed, 5 << 20)).unwrap();
    std::fs::write(root.join("shared.txt"), b"the same on every host\n".repeat(1000)).unwrap();
    std::os::unix::fs::symlink("dir0/sub/f1.dat", root.join("link")).unwrap();
}

fn opts(src: &Path, host: &str) -> AgentOptions {
    AgentOptions { backup: lifeboat_ingest::BackupOptions { sources: vec![src.to_path_buf()], hostname: host.into(), ..Default::default() }, retry_for: Duration::from_secs(20), ..Default::default() }
}

/// Restores `snap` and compares every file, link and mode with `src`.
fn assert_restores_identical(ds: &Datastore, snap: &str, src: &Path, scratch: &Path) {
    ds.refresh_index().unwrap();
    let (_, s) = ds.resolve_snapshot(snap).unwrap();
    let out = scratch.join(format!("restore-{snap}"));
    let ro = RestoreOptions { target: out.clone(), includes: vec![], owners: false, threads: 2, ..Default::default() };
    lifeboat_ingest::restore(ds, &s, &ro, &Progress::new()).unwrap();
    compare(src, &out);
}

fn compare(a: &Path, b: &Path) {
    let mut names: Vec<_> = std::fs::read_dir(a).unwrap().map(|e| e.unwrap().file_name()).collect();
    let mut other: Vec<_> = std::fs::read_dir(b).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    other.sort();
    assert_eq!(names, other, "entries of {}", a.display());
    for n in names {
        let (pa, pb) = (a.join(&n), b.join(&n));
        let (ma, mb) = (std::fs::symlink_metadata(&pa).unwrap(), std::fs::symlink_metadata(&pb).unwrap());
        assert_eq!(ma.mode(), mb.mode(), "{}", pa.display());
        if ma.is_dir() {
            compare(&pa, &pb);
        } else if ma.file_type().is_symlink() {
            assert_eq!(std::fs::read_link(&pa).unwrap(), std::fs::read_link(&pb).unwrap());
        } else {
            assert_eq!(ma.mtime(), mb.mtime(), "{}", pa.display());
            assert!(std::fs::read(&pa).unwrap() == std::fs::read(&pb).unwrap(), "{} differs", pa.display());
        }
    }
}

#[test]
fn two_agents_one_datastore_then_incremental() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Arc::new(Datastore::init(&dir.path().join("ds")).unwrap());
    let (a, b) = (dir.path().join("host-a"), dir.path().join("host-b"));
    make_tree(&a, 1);
    make_tree(&b, 2);
    let ta: Arc<dyn Transport> = Arc::new(Direct::new(ds.clone(), "agent-a", 0));
    let tb: Arc<dyn Transport> = Arc::new(Direct::new(ds.clone(), "agent-b", 0));
    let (oa, ob) = std::thread::scope(|s| {
        let ha = s.spawn(|| run_agent_backup(ta.clone(), &opts(&a, "host-a"), &Progress::new()).unwrap());
        let hb = s.spawn(|| run_agent_backup(tb.clone(), &opts(&b, "host-b"), &Progress::new()).unwrap());
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert!(oa.parent.is_none() && oa.upload.packs_uploaded > 0);
    assert_eq!(oa.summary.files, 6 * 40 + 2);
    assert_restores_identical(&ds, &oa.snapshot_id, &a, dir.path());
    assert_restores_identical(&ds, &ob.snapshot_id, &b, dir.path());
    let rep = lifeboat_store::check(&ds, lifeboat_store::CheckDepth::ReadData, &|_| {}).unwrap();
    assert!(rep.ok(), "{rep:?}");

    // Second run of host a: the parent is found, nothing is read again,
    // and nothing but a snapshot is uploaded.
    std::fs::write(a.join("dir1/sub/new.txt"), b"a new file").unwrap();
    let again = run_agent_backup(ta.clone(), &opts(&a, "host-a"), &Progress::new()).unwrap();
    assert_eq!(again.parent.as_deref(), Some(oa.snapshot_id.as_str()));
    assert_eq!(again.summary.files_new, 1);
    assert_eq!(again.summary.files_unchanged, again.summary.files - 1);
    assert!(again.summary.bytes_read < 100, "{:?}", again.summary);
    assert_restores_identical(&ds, &again.snapshot_id, &a, dir.path());
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(rc, 0, "setxattr {name} on {}: {}", path.display(), std::io::Error::last_os_error());
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (rc >= 0).then(|| buf[..rc as usize].to_vec())
}

/// The agent walks with crates/ingest's `archive` and uploads its trees
/// as they are: extended attributes (and so ACLs, capabilities) travel
/// in them, pass the appliance's tree checks, and come back on restore.
#[test]
fn extended_attributes_survive_an_agent_backup() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Arc::new(Datastore::init(&dir.path().join("ds")).unwrap());
    let src = dir.path().join("src");
    make_tree(&src, 4);
    set_xattr(&src.join("shared.txt"), "user.origin", b"agent host");
    set_xattr(&src.join("dir2"), "user.dir-attr", &[0, 1, 2, 255]);
    set_xattr(&src, "user.source-root", b"the source directory itself");
    let t: Arc<dyn Transport> = Arc::new(Direct::new(ds.clone(), "agent-x", 0));
    let out = run_agent_backup(t, &opts(&src, "host-x"), &Progress::new()).unwrap();
    ds.refresh_index().unwrap();
    let (_, snap) = ds.resolve_snapshot(&out.snapshot_id).unwrap();
    let root = ds.load_tree(&snap.tree).unwrap();
    let node = root.find(b"shared.txt").unwrap();
    let ext = node.ext.as_ref().expect("the agent's tree has the xattr");
    assert_eq!(ext.xattrs, vec![(b"user.origin".to_vec(), b"agent host".to_vec())]);
    assert!(root.find(b"big.bin").unwrap().ext.is_none());

    let target = dir.path().join("restored");
    let ro = RestoreOptions { target: target.clone(), owners: false, threads: 2, ..Default::default() };
    let r = lifeboat_ingest::restore(&ds, &snap, &ro, &Progress::new()).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(get_xattr(&target.join("shared.txt"), "user.origin").as_deref(), Some(&b"agent host"[..]));
    assert_eq!(get_xattr(&target.join("dir2"), "user.dir-attr").as_deref(), Some(&[0u8, 1, 2, 255][..]));
    assert_eq!(get_xattr(&target, "user.source-root").as_deref(), Some(&b"the source directory itself"[..]), "the source directory's own xattr did not cross the agent protocol");
    assert_eq!(get_xattr(&target.join("big.bin"), "user.origin"), None);
    compare(&src, &target);
}

#[test]
fn dropped_connections_are_retried_and_the_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Arc::new(Datastore::init_with(&dir.path().join("ds"), DatastoreConfig { pack_target: 1 << 20, ..DatastoreConfig::new() }).unwrap());
    let src = dir.path().join("src");
    make_tree(&src, 3);
    let t: Arc<dyn Transport> = Arc::new(Direct::new(ds.clone(), "flaky", 3));
    let out = run_agent_backup(t.clone(), &opts(&src, "flaky-host"), &Progress::new()).unwrap();
    assert!(out.upload.retries > 0 && out.upload.packs_uploaded > 3, "{:?}", out.upload);
    assert_restores_identical(&ds, &out.snapshot_id, &src, dir.path());
    assert_eq!(ds.snapshots().unwrap().len(), 1, "a retried commit commits once");
    let rep = lifeboat_store::check(&ds, lifeboat_store::CheckDepth::ReadData, &|_| {}).unwrap();
    assert!(rep.ok(), "{rep:?}");
}

#[test]
fn bad_packs_trees_with_missing_blobs_and_encrypted_datastores_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Arc::new(Datastore::init(&dir.path().join("ds")).unwrap());
    let sessions = IngestSessions::new();
    let req = OpenSession { datastore: None, hostname: "h".into(), paths: vec!["/x".into()], tags: vec![], force_full: false };
    let info = sessions.open(ds.clone(), "default", "me", &req).unwrap();
    assert!(matches!(sessions.get(&info.session, "someone-else"), Err(RemoteError::NotOwner { .. })));
    let s = sessions.get(&info.session, "me").unwrap();

    let pack = |records: &[(lifeboat_store::BlobKind, &[u8], Option<BlobId>)]| {
        let id = PackId::random();
        let mut b = lifeboat_store::PACK_MAGIC.to_vec();
        b.extend_from_slice(&id.0);
        b.extend_from_slice(&[0u8; 8]);
        for (kind, data, claimed) in records {
            let h = lifeboat_store::RecordHeader {
                kind: *kind,
                encoding: lifeboat_store::Encoding::Raw,
                plain_len: data.len() as u32,
                stored_len: data.len() as u32,
                id: claimed.unwrap_or(BlobId::of(data)),
                encrypted: false,
            };
            b.extend_from_slice(&h.encode());
            b.extend_from_slice(data);
        }
        (id, b)
    };
    use lifeboat_store::BlobKind::*;
    // Content that does not match its id.
    let (id, b) = pack(&[(SmallFile, b"hello", Some(BlobId::of(b"other")))]);
    let e = s.put_pack(&id, 0, &b).unwrap_err();
    assert!(e.to_string().contains("does not match its hash"), "{e}");
    // A tree naming a blob nobody uploaded.
    let ghost = BlobId::of(b"ghost");
    let tree = lifeboat_store::Tree { nodes: vec![lifeboat_store::Node::file(b"f", 0o644, 5, 0, vec![ghost])] }.encode();
    let (id, b) = pack(&[(Tree, &tree, None)]);
    let e = s.put_pack(&id, 0, &b).unwrap_err();
    assert!(!lifeboat_store::pack_path(ds.root(), &id).exists(), "a refused pack is not left behind");
    assert!(matches!(e, RemoteError::MissingRef { .. }) && e.to_string().contains(&ghost.to_hex()), "{e}");
    // The same tree with its content in the same pack is fine, and a
    // second upload of the same pack is answered as stored.
    let tree = lifeboat_store::Tree { nodes: vec![lifeboat_store::Node::file(b"f", 0o644, 5, 0, vec![BlobId::of(b"hello")])] }.encode();
    let (id, b) = pack(&[(SmallFile, b"hello", None), (Tree, &tree, None)]);
    assert!(!s.put_pack(&id, 0, &b).unwrap().already_stored);
    assert!(s.put_pack(&id, 0, &b).unwrap().already_stored);
    assert_eq!(s.missing(&[BlobId::of(b"hello"), ghost]).unwrap(), vec![false, true]);
    // Snapshots cannot be uploaded as data; the root must exist to commit.
    let (id, b) = pack(&[(Snapshot, b"{}", None)]);
    assert!(s.put_pack(&id, 1, &b).unwrap_err().to_string().contains("agents upload file data and trees only"));
    let commit = |tree: BlobId| CommitRequest { tree: tree.to_hex(), time: chrono::Utc::now(), summary: Default::default(), root: None };
    assert!(matches!(s.commit(&commit(ghost)), Err(RemoteError::MissingRoot { .. })));
    let c1 = s.commit(&commit(BlobId::of(&tree))).unwrap();
    assert_eq!(s.commit(&commit(BlobId::of(&tree))).unwrap(), c1);
    ds.refresh_index().unwrap();
    assert_eq!(ds.snapshots().unwrap().len(), 1);

    // An agent that keeps opening sessions (crashing runs) loses its
    // oldest ones, not its ability to open more.
    let first = sessions.open(ds.clone(), "default", "crashy", &req).unwrap().session;
    for _ in 0..lifeboat_remote::server::SESSIONS_PER_AGENT {
        std::thread::sleep(Duration::from_millis(2));
        sessions.open(ds.clone(), "default", "crashy", &req).unwrap();
    }
    assert!(matches!(sessions.get(&first, "crashy"), Err(RemoteError::UnknownSession { .. })));
    assert_eq!(sessions.list().iter().filter(|s| s.1 == "crashy").count(), lifeboat_remote::server::SESSIONS_PER_AGENT);

    // Encrypted datastores are refused up front.
    let kf = dir.path().join("key");
    std::fs::write(&kf, b"a key file with enough bytes in it").unwrap();
    let eds = Arc::new(Datastore::init_encrypted(&dir.path().join("eds"), DatastoreConfig::new(), &KeySource::KeyFile(kf)).unwrap());
    let e = sessions.open(eds, "secret", "me", &req).err().unwrap();
    assert!(matches!(e, RemoteError::Encrypted { .. }) && e.to_string().contains("encrypted"), "{e}");
}
