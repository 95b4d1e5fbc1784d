//! Builders the unit tests share.

use crate::blob::BlobKind;
use crate::datastore::Datastore;
use crate::id::BlobId;
use crate::sink::BlobSink;
use crate::snapshot::Snapshot;
use crate::tree::{Node, Tree};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `n` incompressible bytes, the same for the same seed.
pub fn noise(seed: u8, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    blake3::Hasher::new().update(&[seed]).finalize_xof().fill(&mut v);
    v
}

/// A new datastore under `dir` with one snapshot of three 1000-byte
/// incompressible files `f0`..`f2`, all in one pack: (datastore, the
/// files' blob ids, the pack's path).
pub fn one_pack(dir: &Path) -> (Arc<Datastore>, Vec<BlobId>, PathBuf) {
    let ds = Arc::new(Datastore::init(&dir.join("ds")).unwrap());
    let sink = BlobSink::new(ds.clone()).unwrap();
    let ids: Vec<BlobId> = (0..3).map(|i| sink.put(BlobKind::SmallFile, &noise(i, 1000)).unwrap().id).collect();
    let nodes = ids.iter().enumerate().map(|(i, id)| Node::file(format!("f{i}").as_bytes(), 0o644, 0, 0, vec![*id])).collect();
    let tree = sink.put(BlobKind::Tree, &Tree { nodes }.encode()).unwrap().id;
    sink.commit_snapshot(Snapshot::for_test(tree).encode()).unwrap();
    let packs = ds.pack_files().unwrap();
    assert_eq!(packs.len(), 1);
    (ds, ids, packs[0].path.clone())
}

/// Flips the bits of `mask` in the byte at `at` of the file at `path`.
pub fn flip_byte(path: &Path, at: usize, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= mask;
    std::fs::write(path, &bytes).unwrap();
}

/// Where a blob's record starts in its pack.
pub fn offset_of(ds: &Datastore, id: &BlobId) -> usize {
    ds.index().blob(id).unwrap().unwrap().offset as usize
}
