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

    /// Reads the nodes of an encoded tree one at a time, without holding
    /// them all: a directory with a million entries costs its encoded
    /// size, not a million decoded nodes.
    pub fn cursor<'a>(id: &BlobId, bytes: &'a [u8]) -> Result<NodeCursor<'a>> {
        let bad = |reason: String| StoreError::BadTree { id: id.to_hex(), reason };
        match bytes.first() {
            Some(&TREE_VERSION) => {}
            Some(v) => return Err(bad(format!("unknown tree version {v}"))),
            None => return Err(bad("empty".into())),
        }
        let (count, rest) = postcard::take_from_bytes::<usize>(&bytes[1..]).map_err(|e| bad(e.to_string()))?;
        Ok(NodeCursor { id: *id, rest, left: count })
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| &self.nodes[i])
    }
}

pub struct NodeCursor<'a> {
    id: BlobId,
    rest: &'a [u8],
    left: usize,
}

impl NodeCursor<'_> {
    pub fn remaining(&self) -> usize {
        self.left
    }

    /// The next node, `Ok(None)` at the end.
    pub fn next_node(&mut self) -> Result<Option<Node>> {
        if self.left == 0 {
            return Ok(None);
        }
        let (node, rest) = postcard::take_from_bytes::<Node>(self.rest)
            .map_err(|e| StoreError::BadTree { id: self.id.to_hex(), reason: e.to_string() })?;
        self.rest = rest;
        self.left -= 1;
        Ok(Some(node))
    }
}

/// Builds an encoded tree from nodes pushed in name order, byte-identical
/// to `Tree::encode` of the same nodes, holding only encoded bytes.
pub struct TreeWriter {
    body: Vec<u8>,
    count: usize,
    last: Option<Vec<u8>>,
}

/// Room for the version byte and the node count (a varint of at most 10
/// bytes), filled in by `finish` so the encoding is never copied.
const HEAD_ROOM: usize = 11;

impl TreeWriter {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut body = Vec::with_capacity(bytes + HEAD_ROOM);
        body.resize(HEAD_ROOM, 0);
        TreeWriter { body, count: 0, last: None }
    }

    /// Appends a node; names must come in strictly increasing byte order.
    pub fn push(&mut self, node: &Node) {
        debug_assert!(self.last.as_deref().map_or(true, |l| l < node.name.as_slice()), "nodes out of order");
        postcard::to_io(node, &mut self.body).expect("node encodes");
        self.count += 1;
        if cfg!(debug_assertions) {
            self.last = Some(node.name.clone());
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        let mut head = vec![TREE_VERSION];
        postcard::to_io(&self.count, &mut head).expect("count encodes");
        let start = HEAD_ROOM - head.len();
        self.body[start..HEAD_ROOM].copy_from_slice(&head);
        self.body.drain(..start);
        self.body
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
    fn writer_and_cursor_match_whole_tree_encoding() {
        let mut nodes: Vec<Node> = (0..300u32).map(|i| node(format!("n{i:05}").as_bytes())).collect();
        nodes[7].link_target = Some(b"x".to_vec());
        let whole = Tree { nodes: nodes.clone() }.encode();
        let mut w = TreeWriter::with_capacity(0);
        for n in &nodes {
            w.push(n);
        }
        assert_eq!(w.finish(), whole);
        let id = BlobId::of(&whole);
        let mut c = Tree::cursor(&id, &whole).unwrap();
        assert_eq!(c.remaining(), 300);
        let mut back = Vec::new();
        while let Some(n) = c.next_node().unwrap() {
            back.push(n);
        }
        assert_eq!(back, nodes);
        assert!(Tree::cursor(&id, &whole[..whole.len() - 3]).unwrap().next_node().is_ok());
        let mut trunc = Tree::cursor(&id, &whole[..40]).unwrap();
        assert!((0..300).any(|_| trunc.next_node().is_err()));
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
