//! The blobs every `BlobSink` of one datastore in this process is storing
//! and has not committed yet, so that concurrent backups (the daemon's
//! jobs, agents' uploads) store shared data once instead of once per run.
//!
//! A blob pending in another sink is not yet durable: a sink that
//! references one ("borrows" it) must see it committed to the index
//! before its own snapshot is, which `BlobSink::commit_snapshot` ensures
//! by asking the owner to commit (`sink::settle_borrowed`). The registry
//! only says who stores what; it never vouches that the data exists.
//!
//! Processes do not share it: across processes, runs deduplicate against
//! each other's commits only, and gc reclaims the second copies.

use crate::id::BlobId;
use crate::sink::Shared;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// Which sink stores a pending blob.
pub(crate) type WriterId = u64;

pub(crate) struct Registry {
    /// Sharded so that lookups from many putting threads rarely meet.
    shards: Vec<Mutex<HashMap<BlobId, WriterId>>>,
    writers: Mutex<HashMap<WriterId, Weak<Shared>>>,
}

const SHARDS: usize = 32;

static NEXT_WRITER: AtomicU64 = AtomicU64::new(1);
/// One registry per datastore directory, alive while a sink uses it.
static REGISTRIES: Mutex<Vec<(PathBuf, Weak<Registry>)>> = Mutex::new(Vec::new());

impl Registry {
    /// The registry of the datastore at `root` (the same for every
    /// `Datastore` opened on that directory in this process).
    pub(crate) fn for_root(root: &Path) -> Arc<Registry> {
        // The same datastore may be opened by different spellings of its
        // path (the daemon's config, a CLI argument).
        let key = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let mut all = REGISTRIES.lock();
        all.retain(|(_, r)| r.strong_count() > 0);
        if let Some(r) = all.iter().find(|(p, _)| *p == key).and_then(|(_, r)| r.upgrade()) {
            return r;
        }
        let r = Arc::new(Registry { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), writers: Mutex::new(HashMap::new()) });
        all.push((key, Arc::downgrade(&r)));
        r
    }

    fn shard(&self, id: &BlobId) -> &Mutex<HashMap<BlobId, WriterId>> {
        &self.shards[id.0[0] as usize % SHARDS]
    }

    pub(crate) fn join(&self, writer: Weak<Shared>) -> WriterId {
        let me = NEXT_WRITER.fetch_add(1, Ordering::Relaxed);
        self.writers.lock().insert(me, writer);
        me
    }

    /// Forgets the writer and whatever it still had pending: its blobs
    /// are committed by now, or lost with it.
    pub(crate) fn leave(&self, me: WriterId) {
        self.writers.lock().remove(&me);
        self.purge(me);
    }

    /// Drops every entry of `me` (a failed writer: others must not take
    /// its blobs for stored any more).
    pub(crate) fn purge(&self, me: WriterId) {
        for s in &self.shards {
            s.lock().retain(|_, w| *w != me);
        }
    }

    pub(crate) fn owner(&self, id: &BlobId) -> Option<WriterId> {
        self.shard(id).lock().get(id).copied()
    }

    /// Takes `id` for `me`; when some writer has it already, that writer.
    pub(crate) fn claim(&self, id: BlobId, me: WriterId) -> Result<(), WriterId> {
        match self.shard(&id).lock().entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => Err(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(me);
                Ok(())
            }
        }
    }

    /// Drops `id` if `me` still has it.
    pub(crate) fn release(&self, id: &BlobId, me: WriterId) {
        let mut s = self.shard(id).lock();
        if s.get(id) == Some(&me) {
            s.remove(id);
        }
    }

    pub(crate) fn writer(&self, w: WriterId) -> Option<Arc<Shared>> {
        self.writers.lock().get(&w).and_then(Weak::upgrade)
    }

    /// Whether a writer besides `me` is running on this datastore.
    pub(crate) fn others(&self, me: WriterId) -> bool {
        self.writers.lock().keys().any(|w| *w != me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_claim_wins_and_leave_forgets_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::for_root(dir.path());
        // Another spelling of the same directory finds the same registry.
        assert!(Arc::ptr_eq(&r, &Registry::for_root(&dir.path().join("."))));
        let (a, b) = (r.join(Weak::new()), r.join(Weak::new()));
        let x = BlobId::of(b"x");
        assert_eq!(r.claim(x, a), Ok(()));
        assert_eq!(r.claim(x, b), Err(a));
        r.release(&x, b);
        assert_eq!(r.owner(&x), Some(a), "only the owner releases");
        assert!(r.others(a));
        r.leave(a);
        assert_eq!(r.owner(&x), None);
        assert!(!r.others(b));
    }
}
