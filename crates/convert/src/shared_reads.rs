//! One read of a disk for several writers.
//!
//! A restore for several targets at once runs one `qemu-img convert` per
//! target over the same snapshot disk. Each would decode every chunk from
//! the datastore on its own; `SharedReads` hands every reader the same
//! decoded chunk instead, so the datastore is read once however many
//! targets are written.
//!
//! Readers go at their writer's pace (a raw copy outruns a compressed
//! VMDK). A chunk stays in memory until every reader has gone past it (by
//! `limit / 4` chunks: a client keeps several reads in flight, and they
//! arrive out of order); when `limit` chunks are held, a reader that needs a new one
//! waits for the others to catch up. The slowest reader never waits (it
//! drops the chunk furthest ahead instead, which its leader then loads
//! again), so nothing can wait on itself; a leader waits at most
//! `MAX_WAIT` before it does the same. Reads before `track()` (guest
//! repair: random, partial) go straight to the disk.

use lifeboat_nbd::{BlockDevice, Extent, ReadChunk};
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a reader ahead of the others waits for them per chunk before
/// it loads the chunk anyway (a reader may stall for reasons of its own,
/// e.g. reading only its overlay).
const MAX_WAIT: Duration = Duration::from_secs(10);

type Cell = Arc<OnceLock<Result<Vec<ReadChunk>, String>>>;

struct State {
    held: BTreeMap<u64, Cell>,
    /// Per reader: the highest chunk it has read (None: none yet).
    at: Vec<Option<u64>>,
    /// Per reader: reads go through the shared chunks (else straight to
    /// the disk).
    tracking: Vec<bool>,
    /// Per reader: done with this disk.
    finished: Vec<bool>,
    /// Chunks read from the disk (a chunk read twice counts twice).
    loads: u64,
}

/// A disk read once for `readers` consumers; `reader(i)` is the
/// `BlockDevice` of consumer `i`.
pub struct SharedReads {
    base: Arc<dyn BlockDevice>,
    chunk: u64,
    limit: usize,
    state: Mutex<State>,
    changed: Condvar,
}

impl SharedReads {
    /// `chunk`: the unit the disk decodes in (lifeboat_vm's CHUNK);
    /// `limit`: how many chunks may be held for slower readers.
    pub fn new(base: Arc<dyn BlockDevice>, readers: usize, chunk: u64, limit: usize) -> Arc<Self> {
        Arc::new(SharedReads {
            base,
            chunk,
            limit: limit.max(2),
            state: Mutex::new(State { held: BTreeMap::new(), at: vec![None; readers], tracking: vec![false; readers], finished: vec![false; readers], loads: 0 }),
            changed: Condvar::new(),
        })
    }

    /// Consumer `id`'s reader (`id < readers`, else this panics). Its
    /// reads go straight to the disk until `SharedReader::track`.
    pub fn reader(self: &Arc<Self>, id: usize) -> SharedReader {
        assert!(id < self.state.lock().unwrap().at.len());
        SharedReader { shared: self.clone(), id }
    }

    /// Chunks read from the disk through the shared path so far.
    pub fn loads(&self) -> u64 {
        self.state.lock().unwrap().loads
    }

    fn chunk_len(&self, i: u64) -> u32 {
        (self.base.size() - i * self.chunk).min(self.chunk) as u32
    }

    /// Chunk `i` may go: every reader still at work has gone past it.
    fn done_with(&self, s: &State, i: u64) -> bool {
        let slack = (self.limit / 4) as u64;
        (0..s.at.len()).all(|r| s.finished[r] || s.at[r].is_some_and(|a| a > i + slack))
    }

    fn drop_done(&self, s: &mut State) -> bool {
        let before = s.held.len();
        let done: Vec<u64> = s.held.keys().filter(|i| self.done_with(s, **i)).copied().collect();
        for i in done {
            s.held.remove(&i);
        }
        s.held.len() < before
    }

    fn is_slowest(s: &State, id: usize) -> bool {
        let mine = s.at[id].map_or(0, |a| a + 1);
        (0..s.at.len()).filter(|r| !s.finished[*r] && *r != id).all(|r| s.at[r].map_or(0, |a| a + 1) >= mine)
    }

    /// The whole of chunk `i` for reader `id`.
    fn chunk_for(&self, id: usize, i: u64) -> io::Result<Vec<ReadChunk>> {
        let mut s = self.state.lock().unwrap();
        let started = Instant::now();
        let cell = loop {
            if let Some(cell) = s.held.get(&i) {
                break cell.clone();
            }
            if s.held.len() >= self.limit && !self.drop_done(&mut s) {
                if Self::is_slowest(&s, id) || started.elapsed() >= MAX_WAIT {
                    // Make room with the chunk needed last.
                    let far = *s.held.keys().next_back().expect("limit >= 2 chunks are held");
                    s.held.remove(&far);
                } else {
                    s = self.changed.wait_timeout(s, Duration::from_millis(200)).unwrap().0;
                    continue;
                }
            }
            let cell: Cell = Arc::new(OnceLock::new());
            s.held.insert(i, cell.clone());
            s.loads += 1;
            break cell;
        };
        if s.at[id].is_none_or(|a| a < i) {
            s.at[id] = Some(i);
        }
        if self.drop_done(&mut s) {
            self.changed.notify_all();
        }
        drop(s);
        let r = cell.get_or_init(|| self.base.read_at(i * self.chunk, self.chunk_len(i)).map_err(|e| e.to_string()));
        match r {
            Ok(v) => Ok(v.clone()),
            Err(e) => {
                // Not kept: the next read tries again.
                self.state.lock().unwrap().held.remove(&i);
                self.changed.notify_all();
                Err(io::Error::other(e.clone()))
            }
        }
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.state.lock().unwrap();
        f(&mut s);
        self.drop_done(&mut s);
        self.changed.notify_all();
    }
}

/// `[from, from+len)` of a chunk's pieces.
fn slice(pieces: &[ReadChunk], from: u64, len: u64) -> Vec<ReadChunk> {
    let mut out = Vec::new();
    let (mut pos, end) = (0u64, from + len);
    for p in pieces {
        let n = p.len() as u64;
        let (a, b) = (pos.max(from), (pos + n).min(end));
        if a < b {
            let (a0, b0) = ((a - pos) as usize, (b - pos) as usize);
            lifeboat_nbd::device::push_chunk(
                &mut out,
                match p {
                    ReadChunk::Data(d) => ReadChunk::Data(d.slice(a0..b0)),
                    ReadChunk::Zero(_) => ReadChunk::Zero((b0 - a0) as u32),
                },
            );
        }
        pos += n;
        if pos >= end {
            break;
        }
    }
    out
}

/// One consumer's view of a `SharedReads` disk.
pub struct SharedReader {
    shared: Arc<SharedReads>,
    id: usize,
}

impl SharedReader {
    /// From now on this reader's reads are shared (before: straight to
    /// the disk, as guest repair reads at random).
    pub fn track(&self) {
        self.shared.set(|s| s.tracking[self.id] = true);
    }

    /// This reader will read no more: nobody waits for it.
    pub fn finish(&self) {
        self.shared.set(|s| s.finished[self.id] = true);
    }
}

impl Drop for SharedReader {
    fn drop(&mut self) {
        self.finish();
    }
}

impl BlockDevice for SharedReader {
    fn size(&self) -> u64 {
        self.shared.base.size()
    }

    fn read_at(&self, off: u64, len: u32) -> io::Result<Vec<ReadChunk>> {
        let sh = &self.shared;
        if !sh.state.lock().unwrap().tracking[self.id] {
            return sh.base.read_at(off, len);
        }
        let mut out = Vec::new();
        let (mut pos, end) = (off, off + len as u64);
        while pos < end {
            let i = pos / sh.chunk;
            let in_chunk = pos - i * sh.chunk;
            let n = (sh.chunk_len(i) as u64 - in_chunk).min(end - pos);
            for p in slice(&sh.chunk_for(self.id, i)?, in_chunk, n) {
                lifeboat_nbd::device::push_chunk(&mut out, p);
            }
            pos += n;
        }
        Ok(out)
    }

    fn block_status(&self, off: u64, len: u32) -> io::Result<Vec<Extent>> {
        self.shared.base.block_status(off, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A disk whose byte at `p` is `p % 251`, counting reads.
    struct Counted {
        size: u64,
        reads: AtomicU64,
    }

    impl BlockDevice for Counted {
        fn size(&self) -> u64 {
            self.size
        }
        fn read_at(&self, off: u64, len: u32) -> io::Result<Vec<ReadChunk>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            Ok(vec![ReadChunk::Data((off..off + len as u64).map(|p| (p % 251) as u8).collect::<Vec<u8>>().into())])
        }
    }

    fn bytes(v: Vec<ReadChunk>) -> Vec<u8> {
        let mut o = Vec::new();
        for c in v {
            match c {
                ReadChunk::Data(d) => o.extend_from_slice(&d),
                ReadChunk::Zero(n) => o.resize(o.len() + n as usize, 0),
            }
        }
        o
    }

    /// Readers at different speeds each read the whole disk in odd
    /// pieces: every byte is right and each chunk came from the disk once.
    #[test]
    fn readers_at_different_speeds_share_one_read() {
        let base = Arc::new(Counted { size: 64 * 1000 + 37, reads: AtomicU64::new(0) });
        let shared = SharedReads::new(base.clone(), 3, 1000, 4);
        let chunks = base.size.div_ceil(1000);
        std::thread::scope(|sc| {
            for (id, (piece, pause)) in [(333u32, 0u64), (1000, 1), (77, 0)].into_iter().enumerate() {
                let r = shared.reader(id);
                r.track();
                let size = base.size;
                sc.spawn(move || {
                    let mut pos = 0;
                    while pos < size {
                        let n = (piece as u64).min(size - pos) as u32;
                        let got = bytes(r.read_at(pos, n).unwrap());
                        assert_eq!(got, (pos..pos + n as u64).map(|p| (p % 251) as u8).collect::<Vec<u8>>(), "reader {id} at {pos}");
                        pos += n as u64;
                        std::thread::sleep(Duration::from_millis(pause));
                    }
                    r.finish();
                });
            }
        });
        assert_eq!(shared.loads(), chunks, "each chunk read once");
        assert_eq!(base.reads.load(Ordering::Relaxed), chunks);
        assert!(shared.state.lock().unwrap().held.is_empty(), "nothing held after all finished");
    }

    /// A reader that stops reading (without saying so) holds nobody up
    /// for longer than MAX_WAIT per chunk, and the rest still read right.
    #[test]
    fn the_slowest_reader_never_waits() {
        let base = Arc::new(Counted { size: 10 * 1000, reads: AtomicU64::new(0) });
        let shared = SharedReads::new(base.clone(), 2, 1000, 2);
        let (fast, slow) = (shared.reader(0), shared.reader(1));
        fast.track();
        slow.track();
        // `slow` reads chunk 0 only; `fast` reads 0, 1 (held: 2 = limit).
        assert_eq!(bytes(slow.read_at(0, 10).unwrap()).len(), 10);
        bytes(fast.read_at(0, 2000).unwrap());
        // The slow one is behind: it may read chunk 5 without waiting.
        let t = Instant::now();
        assert_eq!(bytes(slow.read_at(5000, 1000).unwrap()), (5000..6000u64).map(|p| (p % 251) as u8).collect::<Vec<_>>());
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn untracked_reads_go_straight_to_the_disk() {
        let base = Arc::new(Counted { size: 4000, reads: AtomicU64::new(0) });
        let shared = SharedReads::new(base.clone(), 2, 1000, 4);
        let r = shared.reader(0);
        bytes(r.read_at(10, 100).unwrap());
        bytes(r.read_at(10, 100).unwrap());
        assert_eq!(base.reads.load(Ordering::Relaxed), 2);
        assert_eq!(shared.loads(), 0);
    }
}
