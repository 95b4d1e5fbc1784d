//! Garbage collection: mark every blob reachable from a snapshot, then
//! delete packs that hold nothing reachable, packs no index entry names
//! (left by crashed runs) and dead partial packs. It holds the datastore
//! lock exclusively, so it waits for running backups and they wait for it.
//!
//! Packs that are only partly garbage are kept and reported; rewriting
//! them (repack) is future work, as is an on-disk mark set for
//! datastores with billions of blobs.

use crate::datastore::Datastore;
use crate::error::Result;
use crate::fsutil::DatastoreLock;
use crate::id::{BlobId, PackId};
use crate::index::{self, IndexBatch};
use crate::pack::pack_path;
use crate::tree::NodeKind;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    pub snapshots: u64,
    pub reachable_blobs: u64,
    pub packs_deleted: u64,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub partly_used_packs: u64,
    pub garbage_in_partly_used: u64,
    pub dry_run: bool,
}

pub fn gc(ds: &Datastore, dry_run: bool) -> Result<GcReport> {
    let _lock = DatastoreLock::exclusive(ds.root())?;
    ds.refresh_index()?;
    let index = ds.index();
    let mut rep = GcReport { dry_run, ..Default::default() };

    // Mark.
    let mut reachable: HashSet<BlobId> = HashSet::new();
    let snaps = ds.snapshots()?;
    rep.snapshots = snaps.len() as u64;
    for (sid, snap) in &snaps {
        reachable.insert(*sid);
        let mut stack = vec![snap.tree];
        while let Some(t) = stack.pop() {
            if !reachable.insert(t) {
                continue;
            }
            let (tree, pages) = ds.load_tree_and_pages(&t)?;
            reachable.extend(pages);
            for n in tree.nodes {
                reachable.extend(n.content.iter().copied());
                if n.kind == NodeKind::Dir {
                    if let Some(st) = n.subtree {
                        stack.push(st);
                    }
                }
            }
        }
    }
    rep.reachable_blobs = reachable.len() as u64;

    // Sweep: a pack goes when none of the blobs the index places in it is
    // reachable.
    let packs = index.packs()?;
    let mut live: HashMap<PackId, u64> = HashMap::new();
    let mut dead: HashMap<PackId, Vec<(BlobId, u64)>> = HashMap::new();
    index.for_each_blob(|id, loc| {
        if reachable.contains(&id) {
            *live.entry(loc.pack).or_default() += 1;
        } else {
            dead.entry(loc.pack).or_default().push((id, loc.stored_len as u64 + crate::blob::RECORD_HEADER_LEN as u64));
        }
        Ok(())
    })?;
    let mut batch = IndexBatch::default();
    let mut files = Vec::new();
    for (pack, info) in &packs {
        if live.get(pack).copied().unwrap_or(0) > 0 {
            if let Some(d) = dead.get(pack) {
                rep.partly_used_packs += 1;
                rep.garbage_in_partly_used += d.iter().map(|(_, n)| n).sum::<u64>();
            }
            continue;
        }
        if let Some(d) = dead.remove(pack) {
            rep.blobs_deleted += d.len() as u64;
            batch.delete_blobs.extend(d.into_iter().map(|(id, _)| id));
        }
        batch.delete_packs.push(*pack);
        rep.packs_deleted += 1;
        rep.bytes_freed += info.len;
        files.push(pack_path(ds.root(), pack));
    }
    // Pack files the index does not know: a run died between sealing and
    // committing. No writer runs now (we hold the lock exclusively).
    let known: HashSet<PackId> = packs.iter().map(|(id, _)| *id).collect();
    for (id, path, len) in ds.pack_files()? {
        if !known.contains(&id) {
            rep.packs_deleted += 1;
            rep.bytes_freed += len;
            files.push(path);
        }
    }
    if dry_run {
        return Ok(rep);
    }
    if !batch.delete_packs.is_empty() {
        // Index first: a crash after this leaves files no one names,
        // which the next gc deletes.
        index::commit(&ds.index_path(), batch)?;
        ds.refresh_index()?;
    }
    for f in files {
        crate::failpoint::hit("gc-delete")?;
        let _ = std::fs::remove_file(&f);
    }
    rep.bytes_freed += ds.remove_stale_partials()?;
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobKind;
    use crate::config::DatastoreConfig;
    use crate::sink::BlobSink;
    use crate::snapshot::Snapshot;
    use crate::tree::{Node, Tree};
    use std::sync::Arc;

    fn file_node(name: &str, content: Vec<BlobId>) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            dev: 0,
            ino: 0,
            nlink: 1,
            rdev: 0,
            content,
            subtree: None,
            link_target: None,
        }
    }

    fn noise(seed: u8, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        blake3::Hasher::new().update(&[seed]).finalize_xof().fill(&mut v);
        v
    }

    #[test]
    fn gc_frees_what_no_snapshot_needs_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatastoreConfig { pack_target: 64 << 10, ..DatastoreConfig::new() };
        let ds = Arc::new(Datastore::init_with(&dir.path().join("ds"), cfg).unwrap());

        // A snapshot that keeps one blob.
        let sink = BlobSink::new(ds.clone()).unwrap();
        let kept = sink.put(BlobKind::SmallFile, &noise(1, 100_000)).unwrap().id;
        let tree = sink.put(BlobKind::Tree, &Tree { nodes: vec![file_node("k", vec![kept])] }.encode()).unwrap().id;
        let snap = Snapshot {
            time: chrono::Utc::now(),
            hostname: "h".into(),
            paths: vec!["/x".into()],
            tags: vec![],
            tree,
            parent: None,
            summary: Default::default(),
            program: "test".into(),
        };
        sink.commit_snapshot(snap.encode()).unwrap();

        // A run that committed packs and then failed: no snapshot.
        let sink = BlobSink::new(ds.clone()).unwrap();
        let mut lost = Vec::new();
        for i in 0..8u8 {
            lost.push(sink.put(BlobKind::SmallFile, &noise(10 + i, 100_000)).unwrap().id);
        }
        sink.flush().unwrap();
        ds.refresh_index().unwrap();
        let before: u64 = ds.pack_files().unwrap().iter().map(|p| p.2).sum();

        let dry = gc(&ds, true).unwrap();
        assert!(dry.bytes_freed >= 8 * 100_000, "{dry:?}");
        assert_eq!(ds.pack_files().unwrap().iter().map(|p| p.2).sum::<u64>(), before, "dry run deletes nothing");

        let rep = gc(&ds, false).unwrap();
        assert_eq!(rep.bytes_freed, dry.bytes_freed);
        let after: u64 = ds.pack_files().unwrap().iter().map(|p| p.2).sum();
        assert_eq!(before - after, rep.bytes_freed);
        assert!(ds.index().blob(&lost[0]).unwrap().is_none());
        assert_eq!(ds.read_blob(&kept).unwrap(), noise(1, 100_000));
        let check = crate::check::check(&ds, true, &|_| {}).unwrap();
        assert!(check.ok(), "{check:?}");
    }
}
