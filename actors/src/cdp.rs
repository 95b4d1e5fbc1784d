//! CDP in the daemon: the protections running now. Each is a
//! `cdp-protect` job whose work (`work::cdp_protect`, over
//! `lifeboat_cdp::Replica`) runs on the blocking pool for as long as the
//! protection lasts; while it runs it is registered here with its
//! journals and its cancel flag. The API reads a live journal through
//! this registry (RocksDB allows one opener: the protection's), and at
//! shutdown the daemon stops every protection so its sessions end
//! cleanly.

use crate::events::Publish;
use actix::Recipient;
use lifeboat_api_types::{CdpBookmark, CdpVmInfo, Event};
use lifeboat_cdp::{open_journal, Journal, ProtectedVm};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

struct LiveReplica {
    job: String,
    journals: Vec<(String, Arc<Journal>)>,
    cancel: Arc<AtomicBool>,
}

/// The protections in progress, by (datastore, VM), shared by their jobs
/// and the API; and the journals readers hold open (exports of a moment).
/// The journals map keeps an entry after its journal is closed: it marks
/// the journal as one this daemon held (see `until_closed`); there is one
/// per protected disk at most.
#[derive(Clone, Default)]
pub struct Replicas(Arc<Mutex<BTreeMap<(String, String), LiveReplica>>>, Arc<Mutex<HashMap<PathBuf, Weak<Journal>>>>, Arc<Mutex<Option<Recipient<Publish>>>>);

/// A protection's place in [`Replicas`]; dropping it takes it off.
pub struct ReplicaGuard {
    replicas: Replicas,
    key: (String, String),
}

impl Drop for ReplicaGuard {
    fn drop(&mut self) {
        self.replicas.0.lock().remove(&self.key);
    }
}

/// Opens with `open`; for a journal this daemon held before (`ours`),
/// waits (up to 10 s) while it is in use. Every opener in the daemon goes
/// through [`Replicas`], which shares an open journal, so "in use" for
/// one of ours means its last holder let go and is still closing it (an
/// export was just dropped): RocksDB keeps its lock until then. A journal
/// another process holds is reported at once.
fn until_closed<T>(ours: bool, open: impl Fn() -> lifeboat_cdp::Result<T>) -> lifeboat_cdp::Result<T> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Err(lifeboat_cdp::CdpError::InUse(_)) if ours && Instant::now() < end => std::thread::sleep(Duration::from_millis(50)),
            r => return r,
        }
    }
}

impl Replicas {
    /// Where bookmarks are announced (the daemon's event stream).
    pub fn with_events(self, events: Recipient<Publish>) -> Self {
        *self.2.lock() = Some(events);
        self
    }

    /// Announces a bookmark of `vm` on the event stream.
    pub fn bookmarked(&self, datastore: &str, vm: &str, bookmark: &CdpBookmark) {
        if let Some(ev) = self.2.lock().as_ref() {
            ev.do_send(Publish(Event::CdpBookmark { datastore: datastore.to_string(), vm: vm.to_string(), bookmark: bookmark.clone() }));
        }
    }

    /// Lists the protection of `vm` in `datastore` by `job` until the
    /// guard is dropped; `cancel` is the job's flag, set at shutdown.
    pub fn register(&self, datastore: &str, vm: &str, job: &str, journals: Vec<(String, Arc<Journal>)>, cancel: Arc<AtomicBool>) -> ReplicaGuard {
        let key = (datastore.to_string(), vm.to_string());
        // An export of a moment may outlive the protection; it keeps the
        // journal open, and later readers share it (RocksDB allows one opener).
        let mut readers = self.1.lock();
        for (_, j) in &journals {
            readers.insert(j.dir().to_path_buf(), Arc::downgrade(j));
        }
        drop(readers);
        self.0.lock().insert(key.clone(), LiveReplica { job: job.to_string(), journals, cancel });
        ReplicaGuard { replicas: self.clone(), key }
    }

    /// The live journal of `disk` of `vm`, if a protection of it runs.
    pub fn journal(&self, datastore: &str, vm: &str, disk: &str) -> Option<Arc<Journal>> {
        let live = self.0.lock();
        let r = live.get(&(datastore.to_string(), vm.to_string()))?;
        r.journals.iter().find(|(d, _)| d == disk).map(|(_, j)| j.clone())
    }

    /// The job protecting `vm`, if one runs.
    pub fn job(&self, datastore: &str, vm: &str) -> Option<String> {
        self.0.lock().get(&(datastore.to_string(), vm.to_string())).map(|r| r.job.clone())
    }

    /// A disk's journal: the protection's own while one runs, else the
    /// one a reader holds open, else opened from its directory (closed
    /// when the last reader drops it).
    pub fn open(&self, datastore: &str, vm: &str, disk: &str, dir: &Path) -> lifeboat_cdp::Result<Arc<Journal>> {
        if let Some(j) = self.journal(datastore, vm, disk) {
            return Ok(j);
        }
        self.shared(dir, || open_journal(dir, vm).map(Arc::new))
    }

    /// The protected VMs of a datastore (its `cdp/` directory), with what
    /// runs now; a VM whose files cannot be read is left out, with a warning.
    pub fn infos(&self, datastore: &str, root: &Path) -> Vec<CdpVmInfo> {
        let cdp = root.join("cdp");
        let mut out = Vec::new();
        for name in ProtectedVm::list(&cdp) {
            let info = ProtectedVm::at(&cdp, &name).and_then(|pvm| pvm.info(datastore, &|disk, dir| self.open(datastore, &name, disk, dir)));
            match info {
                Ok(mut i) => {
                    i.job = self.job(datastore, &name);
                    i.protecting = i.job.is_some();
                    out.push(i);
                }
                Err(e) => tracing::warn!(datastore, vm = %name, "reading the CDP files: {e}"),
            }
        }
        out
    }

    /// Opens or creates a journal for a protection that starts, sharing
    /// one a reader holds open (RocksDB allows one opener per journal),
    /// and lists it for later readers, so a request reading the journal
    /// while the protection starts cannot lock it out.
    pub fn open_or_create(&self, dir: &Path, vm: &str, size: u64) -> lifeboat_cdp::Result<Arc<Journal>> {
        self.shared(dir, || lifeboat_cdp::open_or_create(dir, vm, size))
    }

    /// The journal in `dir` a reader holds open, else the one `open`
    /// gives (listed for later readers).
    fn shared(&self, dir: &Path, open: impl Fn() -> lifeboat_cdp::Result<Arc<Journal>>) -> lifeboat_cdp::Result<Arc<Journal>> {
        let mut readers = self.1.lock();
        if let Some(j) = readers.get(dir).and_then(Weak::upgrade) {
            return Ok(j);
        }
        let j = until_closed(readers.contains_key(dir), open)?;
        readers.insert(dir.to_path_buf(), Arc::downgrade(&j));
        Ok(j)
    }

    /// Stops every protection and waits (up to `wait`) until each has
    /// ended its sessions and closed its journals; returns how many ran.
    /// Blocks: call it off the async runtime.
    pub fn stop_all(&self, wait: Duration) -> usize {
        let n = {
            let live = self.0.lock();
            for r in live.values() {
                r.cancel.store(true, Ordering::Relaxed);
            }
            live.len()
        };
        let end = Instant::now() + wait;
        while !self.0.lock().is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }
}
