//! Restores of snapshots built by hand, as a backup-only agent could
//! upload them: whatever the trees say, nothing is written outside the
//! target, and without `special` no set-ID bit or device node is made.

use lifeboat_ingest::{restore, Progress, RestoreOptions};
use lifeboat_store::{BlobId, BlobKind, BlobSink, Datastore, Node, NodeKind, Snapshot, Tree};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

fn dir_node(name: &[u8], subtree: BlobId) -> Node {
    Node { kind: NodeKind::Dir, mode: 0o755, subtree: Some(subtree), ..Node::file(name, 0o755, 0, 0, vec![]) }
}

fn link_node(name: &[u8], target: &[u8]) -> Node {
    Node { kind: NodeKind::Symlink, mode: 0o777, link_target: Some(target.to_vec()), ..Node::file(name, 0o777, 0, 0, vec![]) }
}

/// Commits one snapshot whose root tree is what `build` returns.
fn snapshot(ds: &Arc<Datastore>, build: impl FnOnce(&BlobSink) -> Vec<Node>) -> Snapshot {
    let sink = BlobSink::new(ds.clone()).unwrap();
    let nodes = build(&sink);
    let tree = sink.put(BlobKind::Tree, &Tree { nodes }.encode()).unwrap().id;
    let snap = Snapshot {
        time: chrono::Utc::now(),
        hostname: "crafted".into(),
        paths: vec!["/crafted".into()],
        tags: vec![],
        tree,
        parent: None,
        summary: Default::default(),
        program: "test".into(),
        kind: Default::default(),
        root: None,
    };
    let id = sink.commit_snapshot(snap.encode()).unwrap();
    ds.resolve_snapshot(&id.to_hex()).unwrap().1
}

fn file(sink: &BlobSink, name: &[u8], mode: u32, data: &[u8]) -> Node {
    let id = sink.put(BlobKind::SmallFile, data).unwrap().id;
    Node::file(name, mode, data.len() as u64, 0, vec![id])
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn crafted_trees_stay_inside_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(Datastore::init(&tmp.path().join("ds")).unwrap());
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let target = tmp.path().join("target");
    let opts = RestoreOptions { target: target.clone(), threads: 2, ..Default::default() };

    // 1. A symlink `a` to a directory outside, and a directory `a` with
    //    entries "through" it; names that are paths; a set-uid file; a
    //    device node.
    let s1 = snapshot(&ds, |sink| {
        let inner = sink.put(BlobKind::Tree, &Tree { nodes: vec![file(sink, b"x", 0o644, b"through")] }.encode()).unwrap().id;
        let mut dev = Node::file(b"null", 0o666, 0, 0, vec![]);
        dev.kind = NodeKind::CharDevice;
        dev.mode = libc::S_IFCHR | 0o666;
        dev.rdev = libc::makedev(1, 3);
        vec![
            link_node(b"a", outside.as_os_str().as_encoded_bytes()),
            dir_node(b"a", inner),
            file(sink, b"../escape", 0o644, b"no"),
            file(sink, b"b/c", 0o644, b"no"),
            file(sink, b"suid", 0o4755, b"#!/bin/sh\n"),
            dev,
        ]
    });
    let out = restore(&ds, &s1, &opts, &Progress::new()).unwrap();
    assert!(empty(&outside), "a crafted snapshot wrote outside the target");
    assert!(!tmp.path().join("escape").exists());
    let a = std::fs::symlink_metadata(target.join("a")).unwrap();
    assert!(a.file_type().is_symlink() || a.is_dir());
    assert!(out.warnings.iter().any(|w| w.contains("twice")), "{:?}", out.warnings);
    assert!(out.warnings.iter().any(|w| w.contains("unsafe name")), "{:?}", out.warnings);
    // Left out, and said so: the set-uid bit and the device node.
    assert_eq!(out.left_out, 2, "{:?}", out.warnings);
    assert_eq!(std::fs::metadata(target.join("suid")).unwrap().permissions().mode() & 0o7777, 0o755);
    assert!(!target.join("null").exists());

    // 2. The target holds a symlink `a` to outside (left by the first
    //    restore, or planted): a snapshot with a directory `a` replaces
    //    it instead of writing through it; a file over a symlink too.
    let _ = std::fs::remove_dir_all(target.join("a")).or_else(|_| std::fs::remove_file(target.join("a")));
    std::os::unix::fs::symlink(&outside, target.join("a")).unwrap();
    std::fs::write(outside.join("f"), b"outside").unwrap();
    std::os::unix::fs::symlink(outside.join("f"), target.join("f")).unwrap();
    let s2 = snapshot(&ds, |sink| {
        let deep = sink.put(BlobKind::Tree, &Tree { nodes: vec![file(sink, b"y", 0o644, b"deep")] }.encode()).unwrap().id;
        let inner = sink.put(BlobKind::Tree, &Tree { nodes: vec![file(sink, b"x", 0o644, b"inside"), dir_node(b"d", deep)] }.encode()).unwrap().id;
        vec![dir_node(b"a", inner), file(sink, b"f", 0o644, b"restored")]
    });
    let out = restore(&ds, &s2, &opts, &Progress::new()).unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "only the planted file is outside");
    assert_eq!(std::fs::read(outside.join("f")).unwrap(), b"outside");
    assert!(std::fs::symlink_metadata(target.join("a")).unwrap().is_dir());
    assert_eq!(std::fs::read(target.join("a/x")).unwrap(), b"inside");
    assert_eq!(std::fs::read(target.join("a/d/y")).unwrap(), b"deep");
    assert!(std::fs::symlink_metadata(target.join("f")).unwrap().is_file());
    assert_eq!(std::fs::read(target.join("f")).unwrap(), b"restored");

    // 3. With `special` (an admin's restore), the set-uid bit stays.
    let s3 = snapshot(&ds, |sink| vec![file(sink, b"suid", 0o4755, b"#!/bin/sh\n")]);
    let t3 = tmp.path().join("t3");
    let out = restore(&ds, &s3, &RestoreOptions { target: t3.clone(), special: true, owners: true, ..Default::default() }, &Progress::new()).unwrap();
    assert_eq!(out.left_out, 0);
    assert_eq!(std::fs::metadata(t3.join("suid")).unwrap().mode() & 0o7777, 0o4755);
}

#[test]
fn a_target_descriptor_is_used_not_the_path() {
    // The caller resolved and opened the target; its path (for messages)
    // now leads elsewhere. The restore goes to the descriptor.
    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(Datastore::init(&tmp.path().join("ds")).unwrap());
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let fd = std::os::fd::OwnedFd::from(std::fs::File::open(&real).unwrap());
    let decoy = tmp.path().join("decoy");
    let s = snapshot(&ds, |sink| vec![file(sink, b"x", 0o644, b"data")]);
    let opts = RestoreOptions { target: decoy.clone(), target_dir: Some(Arc::new(fd)), ..Default::default() };
    restore(&ds, &s, &opts, &Progress::new()).unwrap();
    assert_eq!(std::fs::read(real.join("x")).unwrap(), b"data");
    assert!(!decoy.exists());
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (rc >= 0).then(|| buf[..rc as usize].to_vec())
}

#[test]
fn privileged_xattrs_only_in_an_admins_restore() {
    // A snapshot may carry file capabilities and trusted.* / security.*
    // attributes (an agent's upload: anything). Without `special` they
    // are left out and named; user.* attributes and ACLs are restored.
    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(Datastore::init(&tmp.path().join("ds")).unwrap());
    let s = snapshot(&ds, |sink| {
        let mut f = file(sink, b"f", 0o755, b"binary");
        f.ext = Some(Box::new(lifeboat_store::NodeExt {
            xattrs: vec![
                (b"security.capability".to_vec(), vec![1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                (b"trusted.overlay.redirect".to_vec(), b"/etc".to_vec()),
                (b"user.note".to_vec(), b"fine".to_vec()),
            ],
            flags: 0,
        }));
        vec![f]
    });
    let t1 = tmp.path().join("t1");
    let out = restore(&ds, &s, &RestoreOptions { target: t1.clone(), owners: true, ..Default::default() }, &Progress::new()).unwrap();
    assert_eq!(out.left_out, 2, "{:?}", out.warnings);
    assert!(out.warnings.iter().any(|w| w.contains("security.capability")), "{:?}", out.warnings);
    assert!(out.warnings.iter().any(|w| w.contains("trusted.overlay.redirect")), "{:?}", out.warnings);
    assert_eq!(xattr(&t1.join("f"), "user.note").as_deref(), Some(&b"fine"[..]));
    assert_eq!(xattr(&t1.join("f"), "security.capability"), None);
    assert_eq!(xattr(&t1.join("f"), "trusted.overlay.redirect"), None);

    // An admin's restore (as root, like CI) sets them all.
    let t2 = tmp.path().join("t2");
    let out = restore(&ds, &s, &RestoreOptions { target: t2.clone(), owners: true, special: true, ..Default::default() }, &Progress::new()).unwrap();
    assert_eq!(out.left_out, 0);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert!(xattr(&t2.join("f"), "security.capability").is_some());
    assert_eq!(xattr(&t2.join("f"), "trusted.overlay.redirect").as_deref(), Some(&b"/etc"[..]));
}
