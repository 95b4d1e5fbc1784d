//! Reading one open file: a lazily built chunk offset table and a few
//! decoded chunks kept per handle. Blocking: call from a blocking thread.

use lifeboat_store::{BlobId, Datastore, Node, Result};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Decoded chunks kept per open file: enough for sequential reads and
/// the kernel's readahead running a little ahead of them.
const CHUNKS_KEPT: usize = 4;

pub struct OpenFile {
    pub node: Arc<Node>,
    /// `ends[i]` is the file offset just past chunk `i`.
    ends: OnceLock<Arc<[u64]>>,
    chunks: Mutex<VecDeque<(usize, Arc<Vec<u8>>)>>,
    /// Chunks read and decompressed through this handle.
    pub decoded: AtomicU64,
}

impl OpenFile {
    pub fn new(node: Arc<Node>) -> Self {
        OpenFile { node, ends: OnceLock::new(), chunks: Mutex::new(VecDeque::with_capacity(CHUNKS_KEPT)), decoded: AtomicU64::new(0) }
    }

    /// The offset table from the index (plain lengths; nothing is read
    /// from packs or decompressed).
    fn ends(&self, ds: &Datastore) -> Result<Arc<[u64]>> {
        if let Some(e) = self.ends.get() {
            return Ok(e.clone());
        }
        let mut ends = Vec::with_capacity(self.node.content.len());
        let mut at = 0u64;
        for id in &self.node.content {
            at += ds.locate(id)?.plain_len as u64;
            ends.push(at);
        }
        if at != self.node.size {
            tracing::warn!("{}: chunks hold {at} bytes but the file's size is {}; reading what the chunks hold", self.node.name_lossy(), self.node.size);
        }
        let ends: Arc<[u64]> = ends.into();
        Ok(self.ends.get_or_init(|| ends).clone())
    }

    fn chunk(&self, ds: &Datastore, i: usize, id: &BlobId) -> Result<Arc<Vec<u8>>> {
        {
            let mut c = self.chunks.lock();
            if let Some(pos) = c.iter().position(|(n, _)| *n == i) {
                let hit = c.remove(pos).unwrap();
                let data = hit.1.clone();
                c.push_front(hit);
                return Ok(data);
            }
        }
        // Decoded outside the lock: other readers of this handle go on.
        let data = Arc::new(ds.read_blob(id)?);
        self.decoded.fetch_add(1, Ordering::Relaxed);
        let mut c = self.chunks.lock();
        if !c.iter().any(|(n, _)| *n == i) {
            if c.len() >= CHUNKS_KEPT {
                c.pop_back();
            }
            c.push_front((i, data.clone()));
        }
        Ok(data)
    }

    /// Up to `size` bytes at `offset`; short only at the end of the file.
    pub fn read(&self, ds: &Datastore, offset: u64, size: u32) -> Result<Vec<u8>> {
        let ends = self.ends(ds)?;
        let file_end = ends.last().copied().unwrap_or(0).min(self.node.size);
        if offset >= file_end || size == 0 {
            return Ok(Vec::new());
        }
        let end = (offset + size as u64).min(file_end);
        let mut out = Vec::with_capacity((end - offset) as usize);
        // First chunk whose end lies past `offset`.
        let mut i = ends.partition_point(|&e| e <= offset);
        let mut pos = offset;
        while pos < end {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            let data = self.chunk(ds, i, &self.node.content[i])?;
            let from = (pos - start) as usize;
            let to = ((end.min(ends[i])) - start) as usize;
            if to > data.len() {
                return Err(lifeboat_store::StoreError::CorruptBlob {
                    id: self.node.content[i].to_hex(),
                    pack: ds.locate(&self.node.content[i]).map(|l| l.pack.to_hex()).unwrap_or_default(),
                    reason: format!("chunk holds {} bytes, the index says {}", data.len(), ends[i] - start),
                });
            }
            out.extend_from_slice(&data[from..to]);
            pos = start + to as u64;
            i += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_store::{BlobKind, BlobSink};

    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A file of ten chunks of uneven sizes in a real datastore.
    fn setup() -> (tempfile::TempDir, Arc<Datastore>, Arc<Node>, Vec<u8>) {
        let t = tempfile::tempdir().unwrap();
        let ds = Arc::new(Datastore::init(&t.path().join("ds")).unwrap());
        let sink = BlobSink::new(ds.clone()).unwrap();
        let (mut whole, mut content) = (Vec::new(), Vec::new());
        for i in 0..10u64 {
            let c = bytes(i + 1, 1000 + 7919 * i as usize);
            content.push(sink.put(BlobKind::FileChunk, &c).unwrap().id);
            whole.extend_from_slice(&c);
        }
        sink.flush().unwrap();
        ds.refresh_index().unwrap();
        let node = Node::file(b"f", 0o100644, whole.len() as u64, 0, content);
        (t, ds, Arc::new(node), whole)
    }

    #[test]
    fn reads_match_and_decode_only_the_chunks_they_touch() {
        let (_t, ds, node, whole) = setup();
        let f = OpenFile::new(node);
        // Inside chunk 5 only: one chunk decoded.
        let start5: usize = (0..5).map(|i| 1000 + 7919 * i).sum();
        assert_eq!(f.read(&ds, start5 as u64 + 10, 100).unwrap(), &whole[start5 + 10..start5 + 110]);
        assert_eq!(f.decoded.load(Ordering::Relaxed), 1);
        // Again: served from the handle's cache.
        f.read(&ds, start5 as u64 + 500, 100).unwrap();
        assert_eq!(f.decoded.load(Ordering::Relaxed), 1);
        // Across the 5/6 boundary: one more.
        let end5 = start5 + 1000 + 7919 * 5;
        assert_eq!(f.read(&ds, end5 as u64 - 3, 6).unwrap(), &whole[end5 - 3..end5 + 3]);
        assert_eq!(f.decoded.load(Ordering::Relaxed), 2);
        // Every range, including past the end, equals the plain bytes.
        let n = whole.len() as u64;
        for (off, len) in [(0, 1), (0, n as u32), (n - 1, 10), (n, 5), (n + 100, 5), (999, 2), (1000, 1), (12345, 40000)] {
            let want = &whole[(off.min(n)) as usize..((off + len as u64).min(n)) as usize];
            assert_eq!(f.read(&ds, off, len).unwrap(), want, "{off}+{len}");
        }
    }

    #[test]
    fn empty_file_reads_nothing() {
        let (_t, ds, node, _) = setup();
        let mut n = (*node).clone();
        n.content.clear();
        n.size = 0;
        let f = OpenFile::new(Arc::new(n));
        assert!(f.read(&ds, 0, 4096).unwrap().is_empty());
    }
}
