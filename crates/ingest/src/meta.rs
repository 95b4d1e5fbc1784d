//! Turning `stat` results into tree nodes.

use lifeboat_store::{Node, NodeKind};
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

pub fn kind_of(m: &Metadata) -> NodeKind {
    let ft = m.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_file() {
        NodeKind::File
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else {
        NodeKind::Socket
    }
}

pub fn node_from(name: Vec<u8>, m: &Metadata) -> Node {
    let kind = kind_of(m);
    Node {
        name,
        kind,
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: if kind == NodeKind::File { m.size() } else { 0 },
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        dev: m.dev(),
        ino: m.ino(),
        nlink: m.nlink(),
        rdev: m.rdev(),
        content: Vec::new(),
        subtree: None,
        link_target: None,
    }
}

/// A file is taken as unchanged when size, mtime, ctime and inode all
/// match the parent's record (restic's rule, plus ctime).
pub fn unchanged(old: &Node, new: &Node) -> bool {
    old.kind == NodeKind::File
        && new.kind == NodeKind::File
        && old.size == new.size
        && old.mtime_ns == new.mtime_ns
        && old.ctime_ns == new.ctime_ns
        && old.ino == new.ino
}
