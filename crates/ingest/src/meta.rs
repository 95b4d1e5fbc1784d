//! Turning `stat` results into tree nodes.

use lifeboat_store::{Node, NodeKind};

/// The tree node of the entry `name`, from its `lstat`: type and mode,
/// owner, size (0 unless a regular file), mtime and ctime in nanoseconds
/// since the epoch, and device, inode and link count (for hard links and
/// `unchanged`). Content, subtree, link target and extended metadata are
/// left empty for the caller to fill in.
pub fn node_from(name: Vec<u8>, st: &libc::stat) -> Node {
    let kind = NodeKind::from_mode(st.st_mode);
    Node {
        name,
        kind,
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        size: if kind == NodeKind::File { st.st_size as u64 } else { 0 },
        mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
        ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec,
        dev: st.st_dev,
        ino: st.st_ino,
        nlink: st.st_nlink,
        rdev: st.st_rdev,
        content: Vec::new(),
        subtree: None,
        link_target: None,
        ext: None,
    }
}

/// A file is taken as unchanged when size, mtime, ctime and inode all
/// match the parent's record (restic's rule, plus ctime). Setting an
/// xattr, an ACL or an inode flag changes ctime, so an unchanged file's
/// extended metadata is the parent's too.
pub fn unchanged(old: &Node, new: &Node) -> bool {
    old.kind == NodeKind::File && new.kind == NodeKind::File && old.size == new.size && old.mtime_ns == new.mtime_ns && old.ctime_ns == new.ctime_ns && old.ino == new.ino
}
