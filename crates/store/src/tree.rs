//! Directory trees: one blob per directory, its entries sorted by name.
//! A tree's id is the hash of its encoding, so an unchanged directory
//! encodes to the same blob and costs nothing to store again.

use crate::error::{Result, StoreError};
use crate::id::BlobId;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// One directory entry with everything restore needs and everything the
/// next backup needs to decide "unchanged" without reading the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Raw name bytes: names need not be UTF-8.
    pub name: Vec<u8>,
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub rdev: u64,
    /// File contents: the blobs in order (one for a small file).
    pub content: Vec<BlobId>,
    /// A directory's own tree.
    pub subtree: Option<BlobId>,
    pub link_target: Option<Vec<u8>>,
}

impl Node {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

const TREE_VERSION: u8 = 1;

impl Tree {
    /// Sorts by name and encodes: version byte + postcard.
    pub fn encode(mut self) -> Vec<u8> {
        self.nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let mut out = vec![TREE_VERSION];
        postcard::to_io(&self, &mut out).expect("tree encodes");
        out
    }

    pub fn decode(id: &BlobId, bytes: &[u8]) -> Result<Self> {
        match bytes.first() {
            Some(&TREE_VERSION) => postcard::from_bytes(&bytes[1..])
                .map_err(|e| StoreError::BadTree { id: id.to_hex(), reason: e.to_string() }),
            Some(v) => Err(StoreError::BadTree { id: id.to_hex(), reason: format!("unknown tree version {v}") }),
            None => Err(StoreError::BadTree { id: id.to_hex(), reason: "empty".into() }),
        }
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &[u8]) -> Node {
        Node {
            name: name.to_vec(),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 3,
            mtime_ns: 1,
            ctime_ns: 2,
            dev: 1,
            ino: 3,
            nlink: 1,
            rdev: 0,
            content: vec![BlobId::of(b"abc")],
            subtree: None,
            link_target: None,
        }
    }

    #[test]
    fn encode_sorts_and_round_trips_non_utf8_names() {
        let t = Tree { nodes: vec![node(b"zz"), node(b"\xff\xfe"), node(b"a")] };
        let bytes = t.encode();
        let id = BlobId::of(&bytes);
        let back = Tree::decode(&id, &bytes).unwrap();
        let names: Vec<_> = back.nodes.iter().map(|n| n.name.clone()).collect();
        assert_eq!(names, vec![b"a".to_vec(), b"zz".to_vec(), b"\xff\xfe".to_vec()]);
        assert!(back.find(b"\xff\xfe").is_some());
        assert!(back.find(b"b").is_none());
    }

    #[test]
    fn same_entries_same_id() {
        let a = Tree { nodes: vec![node(b"x"), node(b"y")] }.encode();
        let b = Tree { nodes: vec![node(b"y"), node(b"x")] }.encode();
        assert_eq!(BlobId::of(&a), BlobId::of(&b));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let id = BlobId::of(b"");
        assert!(Tree::decode(&id, &[]).is_err());
        assert!(Tree::decode(&id, &[9, 1, 2]).is_err());
        assert!(Tree::decode(&id, &[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
