//! VM disks in the datastore.
//!
//! A backed-up VM is an ordinary snapshot (kind `vm`) whose root tree
//! holds `vm.json` (the metadata document) and one file per disk,
//! `<disk id>.raw`, whose content is the disk cut into fixed 4 MiB chunks
//! (blobs of kind VmChunk). An all-zero chunk is the blob of 4 MiB of
//! zeros: stored once in the whole datastore and recognized by its id, so
//! it costs nothing per disk and restore and export treat it as a hole.
//! Because a disk is a file in a tree, everything built for files works
//! for VMs unchanged: dedup with all other data, gc, check, repair,
//! `restore` (to a raw file) and `mount`.
//!
//! An incremental backup reads only the chunks QEMU's dirty bitmap marks
//! and takes every other chunk id from the parent snapshot's disk.

use lifeboat_nbd::client::{ClientError, NbdClient, STATE_DIRTY, STATE_ZERO};
use lifeboat_store::{BlobId, BlobKind, BlobSink, Datastore, Node, StoreError};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Size of a disk chunk in bytes (4 MiB); a disk's last chunk may be
/// shorter. Changing it would make every existing chunk id useless for
/// dedup and incremental backups.
pub const CHUNK: u64 = 4 << 20;
/// Name of the metadata document in a VM snapshot's root tree.
pub const METADATA_FILE: &str = "vm.json";

/// Why backing up or restoring a disk failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading the disk from the NBD export failed.
    #[error(transparent)]
    Nbd(#[from] ClientError),
    /// Storing or reading a chunk in the datastore failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the restored raw file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file being written.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A parent chunk an incremental backup would patch has the wrong
    /// length: the parent is damaged, so patching it would store a
    /// wrong disk.
    #[error("chunk {index} of the parent backup (blob {id}) holds {got} bytes, not {expected}; back up with --full and run `lifeboat check --read-data`")]
    ParentChunk {
        /// The chunk's index in the disk (0-based).
        index: u64,
        /// The parent chunk's blob id, hex.
        id: String,
        /// Bytes the stored blob holds.
        got: u64,
        /// Bytes the chunk must hold.
        expected: u64,
    },
}

/// The id of an all-zero chunk of `len` bytes.
pub fn zero_id(len: u64) -> BlobId {
    thread_local! {
        static FULL: BlobId = BlobId::of(&vec![0u8; CHUNK as usize]);
    }
    if len == CHUNK {
        FULL.with(|z| *z)
    } else {
        BlobId::of(&vec![0u8; len as usize])
    }
}

fn chunk_len(size: u64, i: u64) -> u64 {
    (size - i * CHUNK).min(CHUNK)
}

/// What [`backup_disk`] did for one disk, reported in the job result
/// (missing fields read as zero / `None`).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DiskStats {
    /// The disk's size in bytes.
    pub size: u64,
    /// Chunks the disk has (`size` / [`CHUNK`], rounded up).
    pub chunks: u64,
    /// Read over NBD.
    pub chunks_read: u64,
    /// Taken from the parent without reading (not dirty).
    pub chunks_reused: u64,
    /// Dirty in part: only the dirty ranges were read over NBD, the rest
    /// came from the parent's chunk in the datastore (counted in
    /// `chunks_read`; `bytes_read` counts the ranges).
    pub chunks_patched: u64,
    /// Known zero from block status, not read.
    pub chunks_zero: u64,
    /// Bytes read over NBD (whole chunks, plus the dirty ranges of
    /// patched ones).
    pub bytes_read: u64,
    /// Chunks that were new to the datastore (the rest deduplicated).
    pub chunks_added: u64,
    /// Plain (uncompressed) bytes of those new chunks.
    pub bytes_added: u64,
    /// Set when an incremental read was asked for but done in full.
    pub full_reason: Option<String>,
}

/// Per-chunk flags from a map of extents.
fn per_chunk(map: &[(u64, u64, u32)], size: u64, all: impl Fn(u32) -> bool, any: impl Fn(u32) -> bool) -> (Vec<bool>, Vec<bool>) {
    let n = size.div_ceil(CHUNK) as usize;
    let mut all_v = vec![true; n];
    let mut any_v = vec![false; n];
    for &(off, len, flags) in map {
        let first = (off / CHUNK) as usize;
        let last = ((off + len - 1) / CHUNK) as usize;
        for i in first..=last.min(n.saturating_sub(1)) {
            if !all(flags) {
                all_v[i] = false;
            }
            if any(flags) {
                any_v[i] = true;
            }
        }
    }
    (all_v, any_v)
}

/// The dirty byte ranges of each chunk, relative to the chunk's start.
fn dirty_ranges(map: &[(u64, u64, u32)], size: u64) -> Vec<Vec<(u64, u64)>> {
    let mut out = vec![Vec::new(); size.div_ceil(CHUNK) as usize];
    for &(off, len, flags) in map {
        if flags & STATE_DIRTY == 0 {
            continue;
        }
        let end = (off + len).min(size);
        let mut pos = off;
        while pos < end {
            let i = pos / CHUNK;
            let stop = end.min((i + 1) * CHUNK);
            let r: &mut Vec<(u64, u64)> = &mut out[i as usize];
            match r.last_mut() {
                Some(last) if last.0 + last.1 == pos - i * CHUNK => last.1 += stop - pos,
                _ => r.push((pos - i * CHUNK, stop - pos)),
            }
            pos = stop;
        }
    }
    out
}

/// A chunk dirty in less than this part is patched: its dirty ranges read
/// over NBD onto the parent's chunk. A guest that writes a little all over
/// its disk then costs its own I/O for what it wrote, not 4 MiB per write.
const PATCH_BELOW: u64 = CHUNK / 2;

/// Reads one disk from an NBD export into the datastore. With `parent`
/// (the same disk in the previous snapshot, same size) and
/// `dirty_context`, only dirty chunks are read.
pub fn backup_disk(sink: &BlobSink, nbd: &mut NbdClient, name: &str, parent: Option<&Node>, dirty_context: Option<&str>, bytes_done: &AtomicU64) -> Result<(Node, DiskStats), ImageError> {
    let size = nbd.size();
    let n = size.div_ceil(CHUNK);
    let mut st = DiskStats { size, chunks: n, ..Default::default() };
    let (zero, _) = per_chunk(&nbd.map("base:allocation")?, size, |f| f & STATE_ZERO != 0, |_| false);
    let parent = parent.filter(|p| p.size == size && p.content.len() as u64 == n);
    let dirty = match (parent, dirty_context) {
        (Some(_), Some(ctx)) => Some(dirty_ranges(&nbd.map(ctx)?, size)),
        (None, Some(_)) => {
            st.full_reason = Some("no parent backup of this disk with the same size".into());
            None
        }
        _ => None,
    };
    let content: Mutex<Vec<Option<BlobId>>> = Mutex::new(vec![None; n as usize]);
    let (tx, rx) = crossbeam_channel::bounded::<(usize, Vec<u8>)>(4);
    let failed: Mutex<Option<StoreError>> = Mutex::new(None);
    let added = AtomicU64::new(0);
    let added_bytes = AtomicU64::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
    let read_result = std::thread::scope(|s| -> Result<(), ImageError> {
        for _ in 0..workers {
            let rx = rx.clone();
            let (content, failed, added, added_bytes) = (&content, &failed, &added, &added_bytes);
            s.spawn(move || {
                for (i, data) in rx {
                    let res = if data.iter().all(|b| *b == 0) {
                        Ok(zero_id(data.len() as u64))
                    } else {
                        sink.put(BlobKind::VmChunk, &data).map(|o| {
                            if o.added {
                                added.fetch_add(1, Ordering::Relaxed);
                                added_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                            }
                            o.id
                        })
                    };
                    match res {
                        Ok(id) => content.lock().unwrap()[i] = Some(id),
                        Err(e) => {
                            failed.lock().unwrap().get_or_insert(e);
                        }
                    }
                }
            });
        }
        drop(rx);
        for i in 0..n {
            let len = chunk_len(size, i);
            if let (Some(d), Some(p)) = (&dirty, parent) {
                let ranges = &d[i as usize];
                if ranges.is_empty() {
                    content.lock().unwrap()[i as usize] = Some(p.content[i as usize]);
                    st.chunks_reused += 1;
                    bytes_done.fetch_add(len, Ordering::Relaxed);
                    continue;
                }
                let dirty_bytes: u64 = ranges.iter().map(|r| r.1).sum();
                if dirty_bytes < PATCH_BELOW && !zero[i as usize] {
                    if failed.lock().unwrap().is_some() {
                        break;
                    }
                    let base = p.content[i as usize];
                    let mut data = if base == zero_id(len) { vec![0u8; len as usize] } else { sink.datastore().read_blob(&base)? };
                    if data.len() as u64 != len {
                        return Err(ImageError::ParentChunk { index: i, id: base.to_hex(), got: data.len() as u64, expected: len });
                    }
                    for &(o, l) in ranges {
                        let part = nbd.read(i * CHUNK + o, l as u32)?;
                        data[o as usize..(o + l) as usize].copy_from_slice(&part);
                    }
                    st.chunks_read += 1;
                    st.chunks_patched += 1;
                    st.bytes_read += dirty_bytes;
                    bytes_done.fetch_add(len, Ordering::Relaxed);
                    if tx.send((i as usize, data)).is_err() {
                        break;
                    }
                    continue;
                }
            }
            if zero[i as usize] {
                content.lock().unwrap()[i as usize] = Some(zero_id(len));
                st.chunks_zero += 1;
                bytes_done.fetch_add(len, Ordering::Relaxed);
                continue;
            }
            if failed.lock().unwrap().is_some() {
                break;
            }
            let data = nbd.read(i * CHUNK, len as u32)?;
            st.chunks_read += 1;
            st.bytes_read += len;
            bytes_done.fetch_add(len, Ordering::Relaxed);
            if tx.send((i as usize, data)).is_err() {
                break;
            }
        }
        drop(tx);
        Ok(())
    });
    read_result?;
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e.into());
    }
    // The zero blob itself must exist once in the datastore.
    let content: Vec<BlobId> = content.into_inner().unwrap().into_iter().map(|c| c.expect("every chunk decided")).collect();
    let mut zero_lens: Vec<u64> = Vec::new();
    for i in 0..n {
        let len = chunk_len(size, i);
        if content[i as usize] == zero_id(len) && !zero_lens.contains(&len) {
            zero_lens.push(len);
            sink.put(BlobKind::VmChunk, &vec![0u8; len as usize])?;
        }
    }
    st.chunks_added = added.into_inner();
    st.bytes_added = added_bytes.into_inner();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
    let node = Node::file(name.as_bytes(), 0o100600, size, now, content);
    Ok((node, st))
}

/// Writes a backed-up disk to a raw file, sparse: zero chunks become
/// holes. The file is created (it must not exist) and sized exactly.
pub fn restore_raw(ds: &Datastore, disk: &Node, dst: &Path) -> Result<(), ImageError> {
    let io = |e| ImageError::Io { path: dst.display().to_string(), source: e };
    let f = File::options().write(true).create_new(true).open(dst).map_err(io)?;
    let mut off = 0u64;
    for (i, id) in disk.content.iter().enumerate() {
        let len = chunk_len(disk.size, i as u64);
        if *id != zero_id(len) {
            let data = ds.read_blob(id)?;
            f.write_all_at(&data, off).map_err(io)?;
        }
        off += len;
    }
    f.set_len(disk.size).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

/// A backed-up disk served straight from the datastore (instant restore,
/// the verification lab): reads decode only the chunks they touch; zero
/// chunks are holes. Read-only: put a `CowOverlay` on top to boot from it.
pub struct DatastoreDisk {
    ds: std::sync::Arc<Datastore>,
    size: u64,
    chunks: Vec<BlobId>,
    /// Which chunks are the zero blob: decided once, as a short last
    /// chunk's zero id costs a hash of its length.
    zero: Vec<bool>,
    /// The chunks decoded last. A client reads in pieces far smaller than
    /// a chunk, many at once (nbdcopy keeps 64 requests in flight): each
    /// chunk is read and verified once, by the first request, while the
    /// others wait on its cell instead of decoding it again.
    cache: Mutex<std::collections::VecDeque<(u64, std::sync::Arc<ChunkCell>)>>,
    /// Chunks to load ahead of a sequential reader, by background threads.
    prefetch: Option<crossbeam_channel::Sender<(BlobId, std::sync::Arc<ChunkCell>)>>,
    loaders: Vec<std::thread::JoinHandle<()>>,
    buffers: BufferPool,
    /// Chunks decoded from the datastore so far (read-ahead included).
    decoded: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Drop for DatastoreDisk {
    /// Joins the loaders: they hold the datastore, and a process that exits
    /// while they still do tears RocksDB down under them (an abort).
    fn drop(&mut self) {
        self.prefetch = None;
        for t in self.loaders.drain(..) {
            let _ = t.join();
        }
    }
}

/// How many chunks past the one being read are kept loading ahead: enough
/// that a sequential reader finds its next chunk decoded, at 4 MiB each.
const READ_AHEAD: u64 = 4;

/// Decoded chunk bytes: reads hand out slices of them without copying.
type ChunkCell = std::sync::OnceLock<Result<bytes::Bytes, String>>;

/// Chunk buffers handed back when the last reader lets go of them. A
/// fresh 4 MiB buffer per chunk cost more in page faults (and the kernel's
/// zeroing of new pages) than reading the chunk did.
#[derive(Clone, Default)]
struct BufferPool(std::sync::Arc<Mutex<Vec<Vec<u8>>>>);

/// Enough for the cached chunks, those loading ahead, and the slices in
/// flight to clients.
const POOLED_BUFFERS: usize = 32;

struct PooledBuffer {
    buf: Vec<u8>,
    pool: BufferPool,
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let mut p = self.pool.0.lock().unwrap();
        if p.len() < POOLED_BUFFERS {
            p.push(std::mem::take(&mut self.buf));
        }
    }
}

fn load_chunk(ds: &Datastore, id: &BlobId, pool: &BufferPool, decoded: &std::sync::atomic::AtomicU64) -> Result<bytes::Bytes, String> {
    decoded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut buf = pool.0.lock().unwrap().pop().unwrap_or_default();
    ds.read_blob_into(id, &mut buf).map_err(|e| e.to_string())?;
    Ok(bytes::Bytes::from_owner(PooledBuffer { buf, pool: pool.clone() }))
}

const CACHED_CHUNKS: usize = 16;

type ChunkCache = std::collections::VecDeque<(u64, std::sync::Arc<ChunkCell>)>;

impl DatastoreDisk {
    /// Serves `disk` (a disk file node of a VM snapshot, as
    /// [`backup_disk`] made it) from `ds`. Starts two read-ahead threads,
    /// which end when this value drops.
    pub fn new(ds: std::sync::Arc<Datastore>, disk: &Node) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<(BlobId, std::sync::Arc<ChunkCell>)>(2 * READ_AHEAD as usize);
        let buffers = BufferPool::default();
        let decoded = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let loaders = (0..2)
            .map(|_| {
                let (rx, ds, pool, decoded) = (rx.clone(), ds.clone(), buffers.clone(), decoded.clone());
                // The threads end when the disk (the sender) is dropped.
                std::thread::spawn(move || {
                    for (id, cell) in rx {
                        cell.get_or_init(|| load_chunk(&ds, &id, &pool, &decoded));
                    }
                })
            })
            .collect();
        let zero = (0..disk.content.len() as u64).map(|i| disk.content[i as usize] == zero_id(chunk_len(disk.size, i))).collect();
        DatastoreDisk { ds, size: disk.size, chunks: disk.content.clone(), zero, cache: Mutex::new(Default::default()), prefetch: Some(tx), loaders, buffers, decoded }
    }

    /// Chunks decoded from the datastore so far (read-ahead included; a
    /// chunk evicted and read again counts twice).
    pub fn chunks_decoded(&self) -> u64 {
        self.decoded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Chunks that hold data (not holes): what one full read decodes.
    pub fn data_chunks(&self) -> u64 {
        self.zero.iter().filter(|z| !**z).count() as u64
    }

    fn is_zero(&self, i: u64) -> bool {
        self.zero[i as usize]
    }

    fn insert(c: &mut ChunkCache, i: u64, cell: std::sync::Arc<ChunkCell>) {
        if c.len() >= CACHED_CHUNKS {
            c.pop_front();
        }
        c.push_back((i, cell));
    }

    /// Queue the chunks after `i` that are neither cached nor loading, so a
    /// sequential reader never waits for a chunk it is about to reach.
    fn read_ahead(&self, c: &mut ChunkCache, i: u64) {
        let n = self.chunks.len() as u64;
        for j in (i + 1..=i + READ_AHEAD).filter(|j| *j < n) {
            if self.is_zero(j) || c.iter().any(|(k, _)| *k == j) {
                continue;
            }
            let ahead = std::sync::Arc::new(ChunkCell::new());
            let Some(tx) = &self.prefetch else { return };
            if tx.try_send((self.chunks[j as usize], ahead.clone())).is_err() {
                break; // the loaders are busy: try again on the next read
            }
            Self::insert(c, j, ahead);
        }
    }

    fn chunk(&self, i: u64) -> std::io::Result<bytes::Bytes> {
        let cell = {
            let mut c = self.cache.lock().unwrap();
            let cell = match c.iter().find(|(k, _)| *k == i) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = std::sync::Arc::new(ChunkCell::new());
                    Self::insert(&mut c, i, cell.clone());
                    cell
                }
            };
            self.read_ahead(&mut c, i);
            cell
        };
        let r = cell.get_or_init(|| load_chunk(&self.ds, &self.chunks[i as usize], &self.buffers, &self.decoded));
        match r {
            Ok(d) => Ok(d.clone()),
            Err(e) => {
                // Do not keep a failure: the next read tries again.
                self.cache.lock().unwrap().retain(|(k, _)| *k != i);
                Err(std::io::Error::other(e.clone()))
            }
        }
    }

    /// A decoded chunk, if it is cached and done loading.
    fn chunk_ready(&self, c: &mut ChunkCache, i: u64) -> Option<bytes::Bytes> {
        let data = c.iter().find(|(k, _)| *k == i).and_then(|(_, cell)| match cell.get() {
            Some(Ok(d)) => Some(d.clone()),
            _ => None,
        });
        if data.is_some() {
            self.read_ahead(c, i);
        }
        data
    }

    /// The pieces of `[off, off+len)`, chunk by chunk, from `get`.
    fn pieces(&self, off: u64, len: u32, mut get: impl FnMut(u64) -> Option<std::io::Result<bytes::Bytes>>) -> Option<std::io::Result<Vec<lifeboat_nbd::ReadChunk>>> {
        use lifeboat_nbd::ReadChunk;
        let mut out = Vec::new();
        let end = off + len as u64;
        let mut pos = off;
        while pos < end {
            let i = pos / CHUNK;
            let in_chunk = pos - i * CHUNK;
            let n = (chunk_len(self.size, i) - in_chunk).min(end - pos);
            if self.is_zero(i) {
                lifeboat_nbd::device::push_chunk(&mut out, ReadChunk::Zero(n as u32));
            } else {
                let d = match get(i)? {
                    Ok(d) => d,
                    Err(e) => return Some(Err(e)),
                };
                out.push(ReadChunk::Data(d.slice(in_chunk as usize..(in_chunk + n) as usize)));
            }
            pos += n;
        }
        Some(Ok(out))
    }
}

impl lifeboat_nbd::BlockDevice for DatastoreDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, off: u64, len: u32) -> std::io::Result<Vec<lifeboat_nbd::ReadChunk>> {
        self.pieces(off, len, |i| Some(self.chunk(i))).expect("every chunk is loaded")
    }

    fn read_ready(&self, off: u64, len: u32) -> Option<std::io::Result<Vec<lifeboat_nbd::ReadChunk>>> {
        let mut c = self.cache.lock().unwrap();
        self.pieces(off, len, |i| self.chunk_ready(&mut c, i).map(Ok))
    }

    fn block_status(&self, off: u64, len: u32) -> std::io::Result<Vec<lifeboat_nbd::Extent>> {
        use lifeboat_nbd::Extent;
        let mut out = Vec::new();
        let end = off + len as u64;
        let mut pos = off;
        while pos < end {
            let i = pos / CHUNK;
            let n = (chunk_len(self.size, i) - (pos - i * CHUNK)).min(end - pos) as u32;
            let e = if self.is_zero(i) { Extent::hole(n) } else { Extent::data(n) };
            lifeboat_nbd::device::push_extent(&mut out, e);
            pos += n as u64;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_nbd::{BlockDevice, ReadChunk};
    use std::sync::Arc;

    fn flatten(chunks: &[ReadChunk]) -> Vec<u8> {
        let mut v = Vec::new();
        for c in chunks {
            match c {
                ReadChunk::Data(d) => v.extend_from_slice(d),
                ReadChunk::Zero(n) => v.resize(v.len() + *n as usize, 0),
            }
        }
        v
    }

    /// A disk of three chunks (data, zero, short data) in a fresh datastore.
    fn disk(dir: &Path) -> (Arc<Datastore>, Node, Vec<u8>) {
        let ds = Arc::new(Datastore::init(&dir.join("ds")).unwrap());
        let size = 2 * CHUNK + 12345;
        let mut plain = vec![0u8; size as usize];
        // Chunk 0 incompressible (stored raw, read into pooled buffers),
        // chunk 2 compressible (stored with zstd).
        let mut x = 0x9e3779b97f4a7c15u64;
        for b in plain[..CHUNK as usize].iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        for (i, b) in plain[2 * CHUNK as usize..].iter_mut().enumerate() {
            *b = (i % 13) as u8 + 1;
        }
        let sink = BlobSink::new(ds.clone()).unwrap();
        let content: Vec<BlobId> = plain.chunks(CHUNK as usize).map(|c| sink.put(BlobKind::VmChunk, c).unwrap().id).collect();
        sink.flush().unwrap();
        ds.refresh_index().unwrap();
        (ds.clone(), Node::file(b"disk0.raw", 0o100600, size, 0, content), plain)
    }

    #[test]
    fn datastore_disk_reads_match_and_cached_reads_answer_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (ds, node, plain) = disk(dir.path());
        let d = DatastoreDisk::new(ds, &node);
        // Nothing decoded yet: the fast path declines.
        assert!(d.read_ready(0, 65536).is_none());
        for (off, len) in [(0u64, 65536u32), (CHUNK - 100, 200), (CHUNK, 4096), (2 * CHUNK - 10, 10 + 12345), (0, (2 * CHUNK + 12345) as u32)] {
            let got = flatten(&d.read_at(off, len).unwrap());
            assert_eq!(got, plain[off as usize..(off + len as u64) as usize], "read at {off}+{len}");
        }
        // The zero chunk is a hole, not data.
        assert!(matches!(d.read_at(CHUNK, 4096).unwrap()[..], [ReadChunk::Zero(4096)]));
        // Decoded chunks are served without blocking, with the same bytes.
        let fast = d.read_ready(100, 1 << 20).expect("chunk 0 is cached").unwrap();
        assert_eq!(flatten(&fast), plain[100..100 + (1 << 20)]);
    }

    #[test]
    fn datastore_disk_refuses_a_damaged_chunk_even_with_reused_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let (ds, node, plain) = disk(dir.path());
        {
            // Warm the buffer pool with a good read first.
            let d = DatastoreDisk::new(ds.clone(), &node);
            assert_eq!(flatten(&d.read_at(0, 4096).unwrap()), plain[..4096]);
        }
        // Flip one byte in the middle of chunk 0's raw record.
        let path = ds.pack_files().unwrap().into_iter().next().unwrap().path;
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(64).position(|w| w == &plain[1 << 20..(1 << 20) + 64]).expect("chunk 0 is stored raw");
        let mid = at + 10;
        bytes[mid] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let d = DatastoreDisk::new(ds, &node);
        let e = d.read_at(0, 4096).expect_err("a damaged chunk is never served");
        assert!(e.to_string().contains("does not match its hash"), "{e}");
        // And it is not cached as good: asking again fails again.
        assert!(d.read_at(4096, 4096).is_err());
        assert_eq!(flatten(&d.read_at(2 * CHUNK, 4096).unwrap()), plain[2 * CHUNK as usize..2 * CHUNK as usize + 4096]);
    }
}
