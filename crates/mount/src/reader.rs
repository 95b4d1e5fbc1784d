//! Reading one open file: a lazily built chunk offset table and a few
//! decoded chunks kept per handle. Blocking: call from a blocking thread.

use lifeboat_store::{BlobId, Datastore, Node, Result};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

/// Decoded chunks kept per open file: enough for sequential reads and
/// the kernel's readahead running a little ahead of them.
const CHUNKS_KEPT: usize = 4;

pub struct OpenFile {
    pub node: Arc<Node>,
    /// `ends[i]` is the file offset just past chunk `i`.
    ends: OnceLock<Arc<[u64]>>,
    chunks: Mutex<VecDeque<(usize, Arc<Vec<u8>>)>>,
}

impl OpenFile {
    pub fn new(node: Arc<Node>) -> Self {
        OpenFile { node, ends: OnceLock::new(), chunks: Mutex::new(VecDeque::with_capacity(CHUNKS_KEPT)) }
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
            tracing::warn!(
                "{}: chunks hold {at} bytes but the file's size is {}; reading what the chunks hold",
                self.node.name_lossy(),
                self.node.size
            );
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
