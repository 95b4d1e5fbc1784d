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

pub const CHUNK: u64 = 4 << 20;
pub const METADATA_FILE: &str = "vm.json";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Nbd(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
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

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DiskStats {
    pub size: u64,
    pub chunks: u64,
    /// Read over NBD.
    pub chunks_read: u64,
    /// Taken from the parent without reading (not dirty).
    pub chunks_reused: u64,
    /// Known zero from block status, not read.
    pub chunks_zero: u64,
    pub bytes_read: u64,
    /// Chunks that were new to the datastore, and their plain bytes.
    pub chunks_added: u64,
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

/// Reads one disk from an NBD export into the datastore. With `parent`
/// (the same disk in the previous snapshot, same size) and
/// `dirty_context`, only dirty chunks are read.
pub fn backup_disk(
    sink: &BlobSink,
    nbd: &mut NbdClient,
    name: &str,
    parent: Option<&Node>,
    dirty_context: Option<&str>,
    bytes_done: &AtomicU64,
) -> Result<(Node, DiskStats), ImageError> {
    let size = nbd.size();
    let n = size.div_ceil(CHUNK);
    let mut st = DiskStats { size, chunks: n, ..Default::default() };
    let (zero, _) = per_chunk(&nbd.map("base:allocation")?, size, |f| f & STATE_ZERO != 0, |_| false);
    let parent = parent.filter(|p| p.size == size && p.content.len() as u64 == n);
    let dirty = match (parent, dirty_context) {
        (Some(_), Some(ctx)) => Some(per_chunk(&nbd.map(ctx)?, size, |_| true, |f| f & STATE_DIRTY != 0).1),
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
                if !d[i as usize] {
                    content.lock().unwrap()[i as usize] = Some(p.content[i as usize]);
                    st.chunks_reused += 1;
                    bytes_done.fetch_add(len, Ordering::Relaxed);
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
    prefetch: crossbeam_channel::Sender<(BlobId, std::sync::Arc<ChunkCell>)>,
}

/// How many chunks past the one just missed are loaded ahead.
const READ_AHEAD: u64 = 3;

type ChunkCell = std::sync::OnceLock<Result<std::sync::Arc<Vec<u8>>, String>>;

fn load_chunk(ds: &Datastore, id: &BlobId) -> Result<std::sync::Arc<Vec<u8>>, String> {
    ds.read_blob(id).map(std::sync::Arc::new).map_err(|e| e.to_string())
}

const CACHED_CHUNKS: usize = 16;

impl DatastoreDisk {
    pub fn new(ds: std::sync::Arc<Datastore>, disk: &Node) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<(BlobId, std::sync::Arc<ChunkCell>)>(2 * READ_AHEAD as usize);
        for _ in 0..2 {
            let (rx, ds) = (rx.clone(), ds.clone());
            // The threads end when the disk (the sender) is dropped.
            std::thread::spawn(move || {
                for (id, cell) in rx {
                    cell.get_or_init(|| load_chunk(&ds, &id));
                }
            });
        }
        let zero = (0..disk.content.len() as u64).map(|i| disk.content[i as usize] == zero_id(chunk_len(disk.size, i))).collect();
        DatastoreDisk { ds, size: disk.size, chunks: disk.content.clone(), zero, cache: Mutex::new(Default::default()), prefetch: tx }
    }

    fn is_zero(&self, i: u64) -> bool {
        self.zero[i as usize]
    }

    fn insert(c: &mut std::collections::VecDeque<(u64, std::sync::Arc<ChunkCell>)>, i: u64, cell: std::sync::Arc<ChunkCell>) {
        if c.len() >= CACHED_CHUNKS {
            c.pop_front();
        }
        c.push_back((i, cell));
    }

    fn chunk(&self, i: u64) -> std::io::Result<std::sync::Arc<Vec<u8>>> {
        let cell = {
            let mut c = self.cache.lock().unwrap();
            match c.iter().find(|(k, _)| *k == i) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = std::sync::Arc::new(ChunkCell::new());
                    Self::insert(&mut c, i, cell.clone());
                    // A miss: the reader is likely sequential; load ahead.
                    let n = self.chunks.len() as u64;
                    for j in (i + 1..=i + READ_AHEAD).filter(|j| *j < n) {
                        if self.is_zero(j) || c.iter().any(|(k, _)| *k == j) {
                            continue;
                        }
                        let ahead = std::sync::Arc::new(ChunkCell::new());
                        if self.prefetch.try_send((self.chunks[j as usize], ahead.clone())).is_ok() {
                            Self::insert(&mut c, j, ahead);
                        }
                    }
                    cell
                }
            }
        };
        let r = cell.get_or_init(|| load_chunk(&self.ds, &self.chunks[i as usize]));
        match r {
            Ok(d) => Ok(d.clone()),
            Err(e) => {
                // Do not keep a failure: the next read tries again.
                self.cache.lock().unwrap().retain(|(k, _)| *k != i);
                Err(std::io::Error::other(e.clone()))
            }
        }
    }
}

impl lifeboat_nbd::BlockDevice for DatastoreDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, off: u64, len: u32) -> std::io::Result<Vec<lifeboat_nbd::ReadChunk>> {
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
                let d = self.chunk(i)?;
                out.push(ReadChunk::Data(d[in_chunk as usize..(in_chunk + n) as usize].to_vec()));
            }
            pos += n;
        }
        Ok(out)
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
