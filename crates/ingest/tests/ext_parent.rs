//! An unchanged file takes its xattrs and flags from the parent snapshot
//! only when the parent recorded them: on top of a snapshot made before
//! they were kept (`BackupSummary::ext_metadata` false), they are read.

use lifeboat_ingest::{backup, BackupOptions, Progress};
use lifeboat_store::{BlobKind, BlobSink, Datastore, Snapshot, Tree};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
}

/// Commits a copy of `snap` whose root tree has no extended metadata (as
/// an older version wrote it), marked `ext_metadata` as given, a
/// nanosecond newer so the next backup takes it as its parent.
fn strip_ext(ds: &Arc<Datastore>, snap: &Snapshot, ext_metadata: bool) {
    let mut tree = ds.load_tree(&snap.tree).unwrap();
    for n in &mut tree.nodes {
        n.ext = None;
    }
    let sink = BlobSink::new(ds.clone()).unwrap();
    let root = sink.put(BlobKind::Tree, &tree.encode()).unwrap().id;
    let mut old = snap.clone();
    old.tree = root;
    old.time = snap.time + chrono::Duration::nanoseconds(1);
    old.summary.ext_metadata = ext_metadata;
    sink.commit_snapshot(old.encode()).unwrap();
}

fn xattrs_in(ds: &Datastore, snap: &Snapshot) -> Vec<(Vec<u8>, Vec<u8>)> {
    let tree = ds.load_tree(&snap.tree).unwrap();
    tree.find(b"f").unwrap().ext.as_ref().map(|e| e.xattrs.clone()).unwrap_or_default()
}

#[test]
fn unchanged_files_get_their_xattrs_read_on_top_of_an_older_parent() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"unchanged").unwrap();
    set_xattr(&src.join("f"), "user.kept", b"yes");
    let want = vec![(b"user.kept".to_vec(), b"yes".to_vec())];
    let opts = BackupOptions { sources: vec![src.clone()], hostname: "h".into(), threads: 2, ..Default::default() };

    for parent_has_ext in [false, true] {
        let ds = Arc::new(Datastore::init(&dir.path().join(format!("ds-{parent_has_ext}"))).unwrap());
        let first = backup(ds.clone(), &opts, &Progress::new()).unwrap();
        assert!(first.snapshot.summary.ext_metadata);
        assert_eq!(xattrs_in(&ds, &first.snapshot), want);
        strip_ext(&ds, &first.snapshot, parent_has_ext);
        let (_, stripped) = ds.snapshots().unwrap().pop().unwrap();
        assert!(xattrs_in(&ds, &stripped).is_empty());

        let next = backup(ds.clone(), &opts, &Progress::new()).unwrap();
        assert_eq!(next.snapshot.parent, ds.snapshots().unwrap().iter().find(|(_, s)| s.tree == stripped.tree).map(|(id, _)| *id));
        assert_eq!(next.snapshot.summary.files_unchanged, 1, "the file must be taken as unchanged");
        if parent_has_ext {
            // Trusted: what the parent says (nothing) is kept, unread.
            assert!(xattrs_in(&ds, &next.snapshot).is_empty());
        } else {
            assert_eq!(xattrs_in(&ds, &next.snapshot), want, "an older parent's unchanged file lost its xattrs");
        }
    }
}

#[test]
fn old_tree_pages_still_decode() {
    // A tree page as the format was before extended metadata: version 1,
    // and no section after the nodes. Decoded by the current reader.
    let tree = Tree { nodes: vec![lifeboat_store::Node::file(b"a", 0o644, 1, 5, vec![])] };
    let bytes = tree.clone().encode();
    assert_eq!(bytes[0], 1);
    let back = Tree::decode(&lifeboat_store::BlobId::of(&bytes), &bytes).unwrap();
    assert_eq!(back, tree);
}
