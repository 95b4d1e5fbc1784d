//! Library-level cost of remote ingest, without the network: a local
//! backup of TREE, then an agent run through a direct (in-process)
//! transport into a second datastore, both timed.
//!   cargo run --release -p lifeboat-remote --example direct_vs_local -- TREE WORKDIR

use lifeboat_ingest::{BackupOptions, Progress};
use lifeboat_remote::protocol::*;
use lifeboat_remote::{run_agent_backup, AgentOptions, IngestSessions, RemoteError, Transport, TransportError};
use lifeboat_store::{BlobId, Datastore, PackId};
use std::sync::Arc;
use std::time::Instant;

struct Direct {
    ds: Arc<Datastore>,
    sessions: IngestSessions,
}

impl Direct {
    fn call<T>(&self, f: impl FnOnce() -> Result<T, RemoteError>) -> Result<T, TransportError> {
        f().map_err(|e| TransportError::Refused { status: e.http_status(), message: e.to_string() })
    }
}

impl Transport for Direct {
    fn server(&self) -> String {
        "direct".into()
    }
    fn open(&self, req: &OpenSession) -> Result<SessionInfo, TransportError> {
        self.call(|| self.sessions.open(self.ds.clone(), "default", "me", req))
    }
    fn missing(&self, session: &str, ids: &[BlobId]) -> Result<Vec<bool>, TransportError> {
        self.call(|| self.sessions.get(session, "me")?.missing(ids))
    }
    fn put_pack(&self, session: &str, pack: &PackId, seq: u64, bytes: &[u8]) -> Result<PackStored, TransportError> {
        self.call(|| self.sessions.get(session, "me")?.put_pack(pack, seq, bytes))
    }
    fn read_tree(&self, session: &str, id: &BlobId) -> Result<Vec<u8>, TransportError> {
        self.call(|| self.sessions.get(session, "me")?.read_tree(id))
    }
    fn commit(&self, session: &str, req: &CommitRequest) -> Result<Committed, TransportError> {
        self.call(|| self.sessions.get(session, "me")?.commit(req))
    }
    fn close(&self, session: &str) -> Result<(), TransportError> {
        self.call(|| self.sessions.close(session, "me"))
    }
}

fn cpu() -> f64 {
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(r.ru_utime) + t(r.ru_stime)
}

fn main() {
    let skip_local = std::env::var_os("SKIP_LOCAL").is_some();
    let args: Vec<String> = std::env::args().collect();
    let (tree, work) = (std::path::PathBuf::from(&args[1]), std::path::PathBuf::from(&args[2]));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let local = Arc::new(Datastore::init(&work.join("local")).unwrap());
    let (t, c) = (Instant::now(), cpu());
    let opts = BackupOptions { sources: vec![tree.clone()], hostname: "h".into(), ..Default::default() };
    if !skip_local {
        lifeboat_ingest::backup(local, &opts, &Progress::new()).unwrap();
    }
    let l = t.elapsed().as_secs_f64();
    println!("local backup: {l:.2} s, {:.2} CPU s", cpu() - c);
    let ds = Arc::new(Datastore::init(&work.join("remote")).unwrap());
    let tr: Arc<dyn Transport> = Arc::new(Direct { ds, sessions: IngestSessions::new() });
    let (t, c) = (Instant::now(), cpu());
    let o = run_agent_backup(tr, &AgentOptions { backup: BackupOptions { sources: vec![tree], hostname: "h".into(), ..Default::default() }, ..Default::default() }, &Progress::new()).unwrap();
    let r = t.elapsed().as_secs_f64();
    println!("agent (direct): {r:.2} s, {:.2} CPU s, ratio {:.2}, {:?}", cpu() - c, r / l, o.upload);
}
