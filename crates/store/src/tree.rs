//! Directory trees: one blob per directory, its entries sorted by name.
//! A tree's id is the hash of its encoding, so an unchanged directory
//! encodes to the same blob and costs nothing to store again.
//!
//! A large directory is split into pages (each an ordinary tree blob of a
//! run of entries) listed by a small paged-tree blob. Page boundaries are
//! content-defined (by a hash of the entry name), so adding one file to a
//! directory of a million rewrites one page, not the whole listing, and a
//! writer or reader holds one page at a time: memory follows tree depth,
//! not directory width.

use crate::error::{Result, StoreError};
use crate::id::BlobId;
use serde::{Deserialize, Serialize};

/// What a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix socket.
    Socket,
}

impl NodeKind {
    /// The kind a `stat` mode (`st_mode`) names.
    pub fn from_mode(mode: u32) -> NodeKind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => NodeKind::Dir,
            libc::S_IFLNK => NodeKind::Symlink,
            libc::S_IFREG => NodeKind::File,
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFCHR => NodeKind::CharDevice,
            libc::S_IFBLK => NodeKind::BlockDevice,
            _ => NodeKind::Socket,
        }
    }
}

/// One directory entry with everything restore needs and everything the
/// next backup needs to decide "unchanged" without reading the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Raw name bytes: names need not be UTF-8.
    pub name: Vec<u8>,
    /// What the entry is.
    pub kind: NodeKind,
    /// `st_mode` permission bits (with set-ID and sticky bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i64,
    /// Device of the source file system (hard links and unchanged detection).
    pub dev: u64,
    /// Inode number on the source.
    pub ino: u64,
    /// Hard link count on the source.
    pub nlink: u64,
    /// Device number of a device node.
    pub rdev: u64,
    /// File contents: the blobs in order (one for a small file).
    pub content: Vec<BlobId>,
    /// A directory's own tree.
    pub subtree: Option<BlobId>,
    /// A symlink's target bytes.
    pub link_target: Option<Vec<u8>>,
    /// Extended attributes and inode flags, when the entry has any. Not
    /// part of a node's own encoding: a page carries them in a section of
    /// its own (see `NodeExt`), so an entry without them encodes exactly
    /// as before they existed.
    #[serde(skip)]
    pub ext: Option<Box<NodeExt>>,
}

/// What an entry carries beyond `stat`: its extended attributes (POSIX
/// ACLs as `system.posix_acl_access`/`_default`, file capabilities as
/// `security.capability` and SELinux labels as `security.selinux` among
/// them, each as the kernel's raw value) and its inode flags (`chattr`).
///
/// A page whose entries have none is encoded as tree version 1, byte for
/// byte as before; one with some is version 3: the version-1 body, then
/// `(entry index, NodeExt)` records, then their byte length (u32 LE).
/// Older snapshots read unchanged, and a directory without xattrs or
/// flags keeps its tree id (and so its dedup) across the change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeExt {
    /// (name, value), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// `FS_IOC_GETFLAGS` bits (`FS_IMMUTABLE_FL`, `FS_APPEND_FL`,
    /// `FS_NODUMP_FL`, ...); 0 when none.
    pub flags: u32,
}

impl NodeExt {
    /// Nothing recorded.
    pub fn is_empty(&self) -> bool {
        self.xattrs.is_empty() && self.flags == 0
    }
}

impl Node {
    /// A regular file that did not come from a file system walk (a VM
    /// disk, a metadata document): owned by root, one link, `mtime_ns` as
    /// both mtime and ctime.
    pub fn file(name: &[u8], mode: u32, size: u64, mtime_ns: i64, content: Vec<BlobId>) -> Node {
        Node {
            name: name.to_vec(),
            kind: NodeKind::File,
            mode,
            uid: 0,
            gid: 0,
            size,
            mtime_ns,
            ctime_ns: mtime_ns,
            dev: 0,
            ino: 0,
            nlink: 1,
            rdev: 0,
            content,
            subtree: None,
            link_target: None,
            ext: None,
        }
    }

    /// The name, with bytes that are not UTF-8 replaced.
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A whole directory listing, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries in name order.
    pub nodes: Vec<Node>,
}

const TREE_VERSION: u8 = 1;
/// A page with an extended-metadata section (see `NodeExt`).
const TREE_VERSION_EXT: u8 = 3;
/// A paged tree: byte 2, then postcard `Vec<BlobId>` of its pages.
pub(crate) const TREE_PAGED: u8 = 2;
/// Page cut rules: at least `PAGE_MIN` entries, at most `PAGE_MAX`, and in
/// between a cut after an entry whose name hash has its low 11 bits zero.
pub const PAGE_MIN: usize = 1024;
pub const PAGE_MAX: usize = 8192;
const PAGE_MASK: u64 = (1 << 11) - 1;

fn cut_after(name: &[u8]) -> bool {
    // FNV-1a with murmur3's finalizer (FNV's low bits mix poorly): stable
    // across versions and platforms, which the page boundaries (and so
    // dedup of unchanged pages) depend on.
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in name {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    h & PAGE_MASK == 0
}

/// What a tree blob is: a page of nodes, or the list of a paged tree's
/// pages.
pub enum TreeBlob<'a> {
    /// One page of nodes, read in place.
    Page(NodeCursor<'a>),
    /// The page ids of a paged tree, in order.
    Paged(Vec<BlobId>),
}

impl Tree {
    /// Sorts by name and encodes: version byte + postcard.
    pub fn encode(mut self) -> Vec<u8> {
        self.nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let mut page = PageBuilder::new(self.nodes.len());
        for n in &self.nodes {
            page.push(n);
        }
        page.finish()
    }

    /// Decodes a single-page tree whole (a paged one is read through
    /// `Datastore::dir_cursor`).
    pub fn decode(id: &BlobId, bytes: &[u8]) -> Result<Self> {
        let mut c = match Self::parse(id, bytes)? {
            TreeBlob::Page(c) => c,
            TreeBlob::Paged(_) => return Err(StoreError::BadTree { id: id.to_hex(), reason: "paged tree: read it through the datastore".into() }),
        };
        let mut nodes = Vec::with_capacity(c.remaining().min(PAGE_MAX));
        while let Some(n) = c.next_node()? {
            nodes.push(n);
        }
        Ok(Tree { nodes })
    }

    /// Parses a tree blob: a page (read with the cursor) or a page list.
    pub fn parse<'a>(id: &BlobId, bytes: &'a [u8]) -> Result<TreeBlob<'a>> {
        if bytes.first() == Some(&TREE_PAGED) {
            let pages: Vec<BlobId> = postcard::from_bytes(&bytes[1..]).map_err(|e| StoreError::BadTree { id: id.to_hex(), reason: e.to_string() })?;
            return Ok(TreeBlob::Paged(pages));
        }
        Ok(TreeBlob::Page(Self::cursor(id, bytes)?))
    }

    /// Reads the nodes of an encoded tree one at a time, without holding
    /// them all: a directory with a million entries costs its encoded
    /// size, not a million decoded nodes.
    pub fn cursor<'a>(id: &BlobId, bytes: &'a [u8]) -> Result<NodeCursor<'a>> {
        Ok(NodeCursor { bytes, at: PageCursor::open(id, bytes)? })
    }

    /// The entry of this name, if any.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| &self.nodes[i])
    }
}

/// A position in an encoded page, kept apart from the page's bytes so
/// that whoever owns the bytes (`DirCursor`) can hold both.
#[derive(Clone, Debug)]
pub struct PageCursor {
    id: BlobId,
    /// Next node's offset, and the end of the nodes.
    pos: usize,
    body_end: usize,
    left: usize,
    /// Index of the next node in the page.
    index: u32,
    /// The extended section not yet consumed, and its next record.
    ext_pos: usize,
    ext_end: usize,
    next_ext: Option<(u32, NodeExt)>,
}

impl PageCursor {
    pub fn open(id: &BlobId, bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| StoreError::BadTree { id: id.to_hex(), reason };
        let (body_end, ext_end) = match bytes.first() {
            Some(&TREE_VERSION) => (bytes.len(), bytes.len()),
            Some(&TREE_VERSION_EXT) => {
                let short = || bad("extended section truncated".into());
                let len_at = bytes.len().checked_sub(4).filter(|&at| at >= 1).ok_or_else(short)?;
                let len = u32::from_le_bytes(bytes[len_at..].try_into().unwrap()) as usize;
                let start = len_at.checked_sub(len).filter(|&s| s >= 1).ok_or_else(short)?;
                (start, len_at)
            }
            Some(v) => return Err(bad(format!("unknown tree version {v}"))),
            None => return Err(bad("empty".into())),
        };
        let body = &bytes[1..body_end];
        let (count, rest) = postcard::take_from_bytes::<usize>(body).map_err(|e| bad(e.to_string()))?;
        Ok(PageCursor { id: *id, pos: body_end - rest.len(), body_end, left: count, index: 0, ext_pos: body_end, ext_end, next_ext: None })
    }

    pub fn remaining(&self) -> usize {
        self.left
    }

    /// The next node of `bytes` (the page this cursor was opened on),
    /// `Ok(None)` at the end.
    pub fn next_node(&mut self, bytes: &[u8]) -> Result<Option<Node>> {
        if self.left == 0 {
            return Ok(None);
        }
        let bad = |reason: String| StoreError::BadTree { id: self.id.to_hex(), reason };
        let body = &bytes[self.pos..self.body_end];
        let (mut node, rest) = postcard::take_from_bytes::<Node>(body).map_err(|e| bad(e.to_string()))?;
        self.pos = self.body_end - rest.len();
        self.left -= 1;
        if self.next_ext.is_none() && self.ext_pos < self.ext_end {
            let ext = &bytes[self.ext_pos..self.ext_end];
            let (rec, rest) = postcard::take_from_bytes::<(u32, NodeExt)>(ext).map_err(|e| bad(e.to_string()))?;
            if rec.0 < self.index {
                return Err(bad("extended records out of order".into()));
            }
            self.ext_pos = self.ext_end - rest.len();
            self.next_ext = Some(rec);
        }
        if self.next_ext.as_ref().is_some_and(|(i, _)| *i == self.index) {
            node.ext = self.next_ext.take().map(|(_, e)| Box::new(e));
        }
        self.index += 1;
        Ok(Some(node))
    }
}

/// The nodes of one encoded page, in order.
pub struct NodeCursor<'a> {
    bytes: &'a [u8],
    at: PageCursor,
}

impl NodeCursor<'_> {
    /// Nodes not yet read.
    pub fn remaining(&self) -> usize {
        self.at.remaining()
    }

    /// The next node, `Ok(None)` at the end.
    pub fn next_node(&mut self) -> Result<Option<Node>> {
        self.at.next_node(self.bytes)
    }
}

/// Builds an encoded tree from nodes pushed in name order, holding at most
/// one page of encoded nodes. A directory that fits one page encodes
/// byte-identical to `Tree::encode`; a larger one is stored page by page
/// through `store_page` and encodes to its page list.
pub struct TreeWriter {
    page: PageBuilder,
    pages: Vec<BlobId>,
    last: Option<Vec<u8>>,
}

/// Room for the version byte and the node count (a varint of at most 10
/// bytes), filled in when a page is finished so it is never copied.
const HEAD_ROOM: usize = 11;

/// One page being encoded: the nodes' bytes after room for the head, and
/// the extended records of those that have any.
struct PageBuilder {
    body: Vec<u8>,
    count: usize,
    ext: Vec<u8>,
}

impl PageBuilder {
    fn new(entries_hint: usize) -> Self {
        Self::with_bytes(entries_hint.min(PAGE_MAX) * 80 + HEAD_ROOM)
    }

    fn with_bytes(capacity: usize) -> Self {
        let mut body = Vec::with_capacity(capacity);
        body.resize(HEAD_ROOM, 0);
        PageBuilder { body, count: 0, ext: Vec::new() }
    }

    fn push(&mut self, node: &Node) {
        postcard::to_io(node, &mut self.body).expect("node encodes");
        if let Some(ext) = node.ext.as_deref().filter(|e| !e.is_empty()) {
            postcard::to_io(&(self.count as u32, ext), &mut self.ext).expect("extended record encodes");
        }
        self.count += 1;
    }

    fn finish(self) -> Vec<u8> {
        let PageBuilder { body: mut page, count, ext } = self;
        let version = if ext.is_empty() { TREE_VERSION } else { TREE_VERSION_EXT };
        let mut head = vec![version];
        postcard::to_io(&count, &mut head).expect("count encodes");
        let start = HEAD_ROOM - head.len();
        page[start..HEAD_ROOM].copy_from_slice(&head);
        page.drain(..start);
        if !ext.is_empty() {
            page.extend_from_slice(&ext);
            page.extend_from_slice(&(ext.len() as u32).to_le_bytes());
        }
        page
    }
}

impl TreeWriter {
    /// A writer for a directory of about `entries_hint` entries.
    pub fn new(entries_hint: usize) -> Self {
        TreeWriter { page: PageBuilder::new(entries_hint), pages: Vec::new(), last: None }
    }

    /// Appends a node; names must come in strictly increasing byte order.
    pub fn push(&mut self, node: &Node, store_page: &mut dyn FnMut(Vec<u8>) -> Result<BlobId>) -> Result<()> {
        debug_assert!(self.last.as_deref().is_none_or(|l| l < node.name.as_slice()), "nodes out of order");
        self.page.push(node);
        if cfg!(debug_assertions) {
            self.last = Some(node.name.clone());
        }
        if self.page.count >= PAGE_MAX || (self.page.count >= PAGE_MIN && cut_after(&node.name)) {
            let page = self.take_page();
            self.pages.push(store_page(page)?);
        }
        Ok(())
    }

    fn take_page(&mut self) -> Vec<u8> {
        let cap = self.page.body.capacity();
        std::mem::replace(&mut self.page, PageBuilder::with_bytes(cap)).finish()
    }

    /// The encoded tree: the nodes themselves, or the list of pages.
    pub fn finish(mut self, store_page: &mut dyn FnMut(Vec<u8>) -> Result<BlobId>) -> Result<Vec<u8>> {
        if self.pages.is_empty() {
            return Ok(self.take_page());
        }
        if self.page.count > 0 {
            let page = self.take_page();
            self.pages.push(store_page(page)?);
        }
        let mut out = vec![TREE_PAGED];
        postcard::to_io(&self.pages, &mut out).expect("page list encodes");
        Ok(out)
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
            ext: None,
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
        let mut w = TreeWriter::new(0);
        let mut no_pages = |_: Vec<u8>| -> Result<BlobId> { panic!("300 nodes fit one page") };
        for n in &nodes {
            w.push(n, &mut no_pages).unwrap();
        }
        assert_eq!(w.finish(&mut no_pages).unwrap(), whole);
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
    fn big_directories_are_paged_and_an_insert_rewrites_one_page() {
        let write = |nodes: &[Node], store: &mut std::collections::HashMap<BlobId, Vec<u8>>| {
            let mut put = |b: Vec<u8>| -> Result<BlobId> {
                let id = BlobId::of(&b);
                store.insert(id, b);
                Ok(id)
            };
            let mut w = TreeWriter::new(nodes.len());
            for n in nodes {
                w.push(n, &mut put).unwrap();
            }
            w.finish(&mut put).unwrap()
        };
        let mut nodes: Vec<Node> = (0..40_000u32).map(|i| node(format!("f{i:07}").as_bytes())).collect();
        let mut store = std::collections::HashMap::new();
        let top = write(&nodes, &mut store);
        let pages = match Tree::parse(&BlobId::of(&top), &top).unwrap() {
            TreeBlob::Paged(p) => p,
            TreeBlob::Page(_) => panic!("40k entries must be paged"),
        };
        assert!(pages.len() >= 40_000 / PAGE_MAX, "{} pages", pages.len());
        // Reading the pages in order gives every node back.
        let mut back = Vec::new();
        for p in &pages {
            let mut c = Tree::cursor(p, &store[p]).unwrap();
            assert!(c.remaining() <= PAGE_MAX);
            while let Some(n) = c.next_node().unwrap() {
                back.push(n);
            }
        }
        assert_eq!(back, nodes);
        // One new entry in the middle: all pages but one are shared.
        nodes.insert(20_000, node(b"f0019999x"));
        let mut store2 = std::collections::HashMap::new();
        let top2 = write(&nodes, &mut store2);
        assert_ne!(top, top2);
        let new_pages = store2.keys().filter(|k| !store.contains_key(*k)).count();
        // Usually one; two when the new name is itself a cut point or a
        // page had been cut at PAGE_MAX.
        assert!((1..=2).contains(&new_pages), "an insert rewrote {new_pages} pages");
    }

    fn with_ext(name: &[u8], i: u8) -> Node {
        let mut n = node(name);
        n.ext = Some(Box::new(NodeExt { xattrs: vec![(b"user.a".to_vec(), vec![i; 3]), (b"system.posix_acl_access".to_vec(), vec![2, 0, 0, 0])], flags: 0x10 * i as u32 }));
        n
    }

    #[test]
    fn a_page_without_extended_metadata_encodes_as_version_1() {
        // Byte for byte what the format was before NodeExt: tree ids of
        // unchanged plain directories stay the same across the upgrade.
        let bytes = Tree { nodes: vec![node(b"a"), node(b"b")] }.encode();
        assert_eq!(bytes[0], TREE_VERSION);
        #[derive(Serialize)]
        struct OldNode<'a>(&'a [u8], NodeKind, u32, u32, u32, u64, i64, i64, u64, u64, u64, u64, &'a [BlobId], Option<BlobId>, Option<&'a [u8]>);
        fn old(n: &Node) -> OldNode<'_> {
            OldNode(&n.name, n.kind, n.mode, n.uid, n.gid, n.size, n.mtime_ns, n.ctime_ns, n.dev, n.ino, n.nlink, n.rdev, &n.content, n.subtree, n.link_target.as_deref())
        }
        let (a, b) = (node(b"a"), node(b"b"));
        let mut expected = vec![1u8];
        postcard::to_io(&vec![old(&a), old(&b)], &mut expected).unwrap();
        assert_eq!(bytes, expected);
        // An empty NodeExt is no extended metadata.
        let mut n = node(b"a");
        n.ext = Some(Box::default());
        assert_eq!(Tree { nodes: vec![n, node(b"b")] }.encode(), bytes);
    }

    #[test]
    fn extended_metadata_round_trips_through_encode_writer_and_cursor() {
        let nodes = vec![with_ext(b"a", 1), node(b"b"), node(b"c"), with_ext(b"d", 2), with_ext(b"e", 3)];
        let whole = Tree { nodes: nodes.clone() }.encode();
        assert_eq!(whole[0], TREE_VERSION_EXT);
        let mut w = TreeWriter::new(0);
        let mut no_pages = |_: Vec<u8>| -> Result<BlobId> { panic!("fits one page") };
        for n in &nodes {
            w.push(n, &mut no_pages).unwrap();
        }
        assert_eq!(w.finish(&mut no_pages).unwrap(), whole);
        let id = BlobId::of(&whole);
        assert_eq!(Tree::decode(&id, &whole).unwrap().nodes, nodes);
        // Damage in the extended section is an error, never a panic.
        for cut in [1, 4, 9, whole.len() - 2] {
            let mut bad = whole.clone();
            let n = bad.len();
            bad.truncate(n - cut);
            let _ = Tree::decode(&id, &bad);
        }
        let mut bad = whole.clone();
        let n = bad.len();
        bad[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Tree::decode(&id, &bad).is_err());
    }

    #[test]
    fn extended_metadata_survives_paging() {
        let nodes: Vec<Node> = (0..20_000u32).map(|i| if i % 7 == 0 { with_ext(format!("f{i:07}").as_bytes(), (i % 5) as u8 + 1) } else { node(format!("f{i:07}").as_bytes()) }).collect();
        let mut store = std::collections::HashMap::new();
        let mut put = |b: Vec<u8>| -> Result<BlobId> {
            let id = BlobId::of(&b);
            store.insert(id, b);
            Ok(id)
        };
        let mut w = TreeWriter::new(nodes.len());
        for n in &nodes {
            w.push(n, &mut put).unwrap();
        }
        let top = w.finish(&mut put).unwrap();
        let TreeBlob::Paged(pages) = Tree::parse(&BlobId::of(&top), &top).unwrap() else { panic!("must be paged") };
        let mut back = Vec::new();
        for p in &pages {
            back.extend(Tree::decode(p, &store[p]).unwrap().nodes);
        }
        assert_eq!(back, nodes);
        // The datastore's cursor over the paged listing reads the same.
        store.insert(BlobId::of(&top), top.clone());
        let read = |id: &BlobId| -> Result<Vec<u8>> { Ok(store[id].clone()) };
        let mut c = crate::datastore::DirCursor::open(&BlobId::of(&top), &read).unwrap();
        let mut via_cursor = Vec::new();
        while let Some(n) = c.next_node().unwrap() {
            via_cursor.push(n);
        }
        assert_eq!(via_cursor, nodes);
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
