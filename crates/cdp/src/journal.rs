//! One protected volume's journal: `journal.json` (size, block size,
//! when protection began), `segments/NNNNNNNN.seg` (records appended in
//! time order), `index/` (RocksDB, derived) and `synced` (the point up to
//! which the segments are known durable: written when a segment is
//! finished and when the journal is closed cleanly).

use crate::index::{BlockIndex, Entry};
use crate::record::{self, Header, FLAG_ZERO, HEADER, SEGMENT_HEADER};
use crate::{io_err, CdpError, Result};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The index's granularity in bytes: a read looks up each 4 KiB block it
/// touches.
pub const BLOCK: u64 = 4096;
const META: &str = "journal.json";

/// What `journal.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalMeta {
    /// Format version (1).
    pub version: u32,
    /// The volume's size in bytes.
    pub size: u64,
    /// When the journal was created (RFC 3339, UTC).
    pub created: chrono::DateTime<chrono::Utc>,
}

/// How a journal is laid out.
#[derive(Debug, Clone, Copy)]
pub struct JournalOptions {
    /// A segment is finished (made durable, a new one begun) once it
    /// holds this many bytes.
    pub segment_bytes: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions { segment_bytes: 256 << 20 }
    }
}

struct Writer {
    segment: u32,
    file: File,
    pos: u64,
    /// The first and the newest journaled write's time; `None` before
    /// the first.
    first_time: Option<u64>,
    last_time: u64,
}

/// One protected volume's journal (see the crate doc). Shared by the
/// target that appends to it and the point-in-time views that read it.
pub struct Journal {
    dir: PathBuf,
    meta: JournalMeta,
    opts: JournalOptions,
    index: BlockIndex,
    writer: Mutex<Writer>,
    readers: RwLock<HashMap<u32, Arc<File>>>,
}

fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join("segments").join(format!("{n:08}.seg"))
}

fn now_ns() -> u64 {
    crate::ns_of(chrono::Utc::now())
}

fn segments(dir: &Path) -> Result<Vec<u32>> {
    let d = dir.join("segments");
    let mut v: Vec<u32> =
        std::fs::read_dir(&d).map_err(|e| io_err(&d, e))?.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".seg")).and_then(|n| n.parse().ok())).collect();
    v.sort_unstable();
    Ok(v)
}

fn new_segment(dir: &Path, n: u32) -> Result<File> {
    let p = segment_path(dir, n);
    let f = OpenOptions::new().read(true).write(true).create_new(true).open(&p).map_err(|e| io_err(&p, e))?;
    f.write_all_at(&record::segment_header(n), 0).map_err(|e| io_err(&p, e))?;
    Ok(f)
}

/// A record found by a scan: its header and where it starts.
struct Scanned {
    header: Header,
    pos: u64,
}

/// Reads the records of segment `n` from `from` on, checking each; stops
/// at the end or at the first record that is not whole and sound, and
/// says which.
fn scan(dir: &Path, n: u32, from: u64, mut each: impl FnMut(&Scanned) -> Result<()>) -> Result<(u64, Option<String>)> {
    let p = segment_path(dir, n);
    let f = File::open(&p).map_err(|e| io_err(&p, e))?;
    let len = f.metadata().map_err(|e| io_err(&p, e))?.len();
    let mut head = [0u8; SEGMENT_HEADER];
    if f.read_exact_at(&mut head, 0).is_err() || record::decode_segment_header(&head) != Some(n) {
        return Ok((0, Some("no segment header for this segment's number".into())));
    }
    let mut pos = from.max(SEGMENT_HEADER as u64);
    let mut buf = Vec::new();
    while pos < len {
        let mut h = [0u8; HEADER];
        if len - pos < HEADER as u64 {
            return Ok((pos, Some("truncated record header".into())));
        }
        f.read_exact_at(&mut h, pos).map_err(|e| io_err(&p, e))?;
        let header = match record::decode_header(&h) {
            Ok(x) => x,
            Err(why) => return Ok((pos, Some(why))),
        };
        let dl = header.data_len() as u64;
        if len - pos - (HEADER as u64) < dl {
            return Ok((pos, Some("truncated record data".into())));
        }
        buf.resize(dl as usize, 0);
        f.read_exact_at(&mut buf, pos + HEADER as u64).map_err(|e| io_err(&p, e))?;
        if !record::check(&h, &header, &buf) {
            return Ok((pos, Some("checksum mismatch".into())));
        }
        each(&Scanned { header, pos })?;
        pos += HEADER as u64 + dl;
    }
    Ok((pos, None))
}

fn entry_of(s: &Scanned, segment: u32) -> Entry {
    Entry { time: s.header.time, segment, data_pos: s.pos + HEADER as u64, offset: s.header.offset, len: s.header.len, zero: s.header.flags & FLAG_ZERO != 0 }
}

impl Journal {
    /// A new, empty journal for a volume of `size` bytes in `dir` (which
    /// must not hold one).
    pub fn create(dir: &Path, size: u64, opts: JournalOptions) -> Result<Journal> {
        if dir.join(META).exists() {
            return Err(CdpError::NotAJournal { path: dir.display().to_string(), reason: "holds a journal already".into() });
        }
        if size == 0 || !size.is_multiple_of(512) {
            return Err(CdpError::Invalid(format!("volume size {size}: give a positive multiple of 512 bytes")));
        }
        let segs = dir.join("segments");
        std::fs::create_dir_all(&segs).map_err(|e| io_err(&segs, e))?;
        let meta = JournalMeta { version: 1, size, created: chrono::Utc::now() };
        new_segment(dir, 0)?.sync_all().map_err(|e| io_err(&segment_path(dir, 0), e))?;
        crate::write_atomic(&dir.join(META), &serde_json::to_vec_pretty(&meta).expect("journal meta serializes"))?;
        Self::open_with(dir, opts)
    }

    /// Opens the journal in `dir`: cuts off a torn record at the end of
    /// the last segment (a crash mid-append), and brings the index up to
    /// the segments (rebuilding it when it is ahead of what survived, or
    /// gone).
    pub fn open(dir: &Path) -> Result<Journal> {
        Self::open_with(dir, JournalOptions::default())
    }

    /// [`Journal::open`] with layout options.
    pub fn open_with(dir: &Path, opts: JournalOptions) -> Result<Journal> {
        let mp = dir.join(META);
        let text = std::fs::read(&mp).map_err(|e| CdpError::NotAJournal { path: dir.display().to_string(), reason: format!("no {META}: {e}") })?;
        let meta: JournalMeta = serde_json::from_slice(&text).map_err(|e| CdpError::NotAJournal { path: mp.display().to_string(), reason: e.to_string() })?;
        if meta.version != 1 {
            return Err(CdpError::NotAJournal { path: mp.display().to_string(), reason: format!("format version {} is newer than this lifeboat reads (1)", meta.version) });
        }
        let segs = segments(dir)?;
        let Some(&last) = segs.last() else { return Err(CdpError::NotAJournal { path: dir.display().to_string(), reason: "no segments".into() }) };
        // Every segment but the last must be whole; the last may end in a
        // record a crash cut short, which is dropped.
        // A mark naming a segment that is not there (or past the end of
        // its segment) is not trusted: everything is checked then.
        let (synced_seg, synced_pos) = read_synced(dir).filter(|(s, p)| segs.contains(s) && std::fs::metadata(segment_path(dir, *s)).is_ok_and(|m| *p <= m.len())).unwrap_or((segs[0], 0));
        let mut end = 0;
        let mut last_time = 0;
        for &n in segs.iter().filter(|&&n| n >= synced_seg) {
            let from = if n == synced_seg { synced_pos } else { 0 };
            let (stop, bad) = scan(dir, n, from, |s| {
                last_time = last_time.max(s.header.time);
                Ok(())
            })?;
            if let Some(why) = bad {
                if n != last {
                    return Err(CdpError::Damaged { segment: segment_path(dir, n).display().to_string(), pos: stop, reason: why });
                }
                let p = segment_path(dir, n);
                tracing::warn!(segment = %p.display(), at = stop, "cutting off a torn journal record ({why}): a write that was never acknowledged as durable");
                let f = OpenOptions::new().write(true).open(&p).map_err(|e| io_err(&p, e))?;
                f.set_len(stop.max(SEGMENT_HEADER as u64)).map_err(|e| io_err(&p, e))?;
                f.sync_all().map_err(|e| io_err(&p, e))?;
            }
            end = stop.max(SEGMENT_HEADER as u64);
        }
        let ip = dir.join("index");
        let mut index = BlockIndex::open(&ip)?;
        let (applied, indexed_time) = match index.applied()? {
            Some((a, t)) => (Some(a), t),
            None => (None, 0),
        };
        let ahead = applied.is_some_and(|(s, p)| (s, p) > (last, end));
        if !ahead {
            last_time = last_time.max(indexed_time);
        }
        if ahead {
            // The index saw records that did not survive: start it anew.
            tracing::warn!(index = %ip.display(), "the journal index is ahead of its segments; rebuilding it");
            drop(index);
            std::fs::remove_dir_all(&ip).map_err(|e| io_err(&ip, e))?;
            index = BlockIndex::open(&ip)?;
        }
        let (from_seg, from_pos) = if ahead { (segs[0], 0) } else { applied.unwrap_or((segs[0], 0)) };
        for &n in segs.iter().filter(|&&n| n >= from_seg) {
            let mut batch = Vec::new();
            let mut at = 0;
            scan(dir, n, if n == from_seg { from_pos } else { 0 }, |s| {
                last_time = last_time.max(s.header.time);
                batch.push(entry_of(s, n));
                at = s.pos + HEADER as u64 + s.header.data_len() as u64;
                if batch.len() >= 1024 {
                    index.add(&batch, (n, at))?;
                    batch.clear();
                }
                Ok(())
            })?;
            if !batch.is_empty() {
                index.add(&batch, (n, at))?;
            }
        }
        let p = segment_path(dir, last);
        let file = OpenOptions::new().read(true).write(true).open(&p).map_err(|e| io_err(&p, e))?;
        let first_time = first_record_time(dir, &segs)?;
        let j = Journal { dir: dir.to_path_buf(), meta, opts, index, writer: Mutex::new(Writer { segment: last, file, pos: end, first_time, last_time }), readers: RwLock::new(HashMap::new()) };
        Ok(j)
    }

    /// The journal's description.
    pub fn meta(&self) -> &JournalMeta {
        &self.meta
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The volume's size in bytes.
    pub fn size(&self) -> u64 {
        self.meta.size
    }

    /// The times of the first and the last journaled write (ns since the
    /// epoch), or `None` before the first write.
    pub fn range(&self) -> Option<(u64, u64)> {
        let w = self.writer.lock();
        Some((w.first_time?, w.last_time))
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|e| e > self.meta.size) {
            return Err(CdpError::Invalid(format!("write of {len} bytes at {offset} is beyond the volume's {} bytes", self.meta.size)));
        }
        Ok(())
    }

    /// Journals a write of `data` at `offset`; returns its time. Not yet
    /// durable: see [`Journal::sync`].
    pub fn append(&self, offset: u64, data: &[u8]) -> Result<u64> {
        let len = u32::try_from(data.len()).map_err(|_| CdpError::Invalid(format!("a write of {} bytes is too large for one record", data.len())))?;
        self.check_range(offset, len as u64)?;
        self.append_record(0, offset, len, data)
    }

    /// Journals that `[offset, offset+len)` now reads as zeroes.
    pub fn append_zeroes(&self, offset: u64, len: u32) -> Result<u64> {
        self.check_range(offset, len as u64)?;
        self.append_record(FLAG_ZERO, offset, len, &[])
    }

    fn append_record(&self, flags: u8, offset: u64, len: u32, data: &[u8]) -> Result<u64> {
        if len == 0 {
            return Ok(self.writer.lock().last_time);
        }
        let mut w = self.writer.lock();
        // Strictly increasing: two writes never share a moment, so "the
        // volume at T" is always one well-defined state.
        let time = now_ns().max(w.last_time + 1);
        let rec = record::encode(flags, time, offset, len, data);
        if w.pos + rec.len() as u64 > self.opts.segment_bytes && w.pos > SEGMENT_HEADER as u64 {
            self.rotate(&mut w)?;
        }
        let p = segment_path(&self.dir, w.segment);
        w.file.write_all_at(&rec, w.pos).map_err(|e| io_err(&p, e))?;
        let s = Scanned { header: record::decode_header(&rec).expect("a record just encoded"), pos: w.pos };
        w.pos += rec.len() as u64;
        self.index.add(&[entry_of(&s, w.segment)], (w.segment, w.pos))?;
        w.last_time = time;
        w.first_time.get_or_insert(time);
        Ok(time)
    }

    /// Finishes the current segment (durable, marked synced) and begins
    /// the next.
    fn rotate(&self, w: &mut Writer) -> Result<()> {
        let p = segment_path(&self.dir, w.segment);
        w.file.sync_data().map_err(|e| io_err(&p, e))?;
        let next = w.segment + 1;
        let f = new_segment(&self.dir, next)?;
        f.sync_data().map_err(|e| io_err(&segment_path(&self.dir, next), e))?;
        sync_dir(&self.dir.join("segments"))?;
        write_synced(&self.dir, (next, SEGMENT_HEADER as u64))?;
        *w = Writer { segment: next, file: f, pos: SEGMENT_HEADER as u64, first_time: w.first_time, last_time: w.last_time };
        Ok(())
    }

    /// Makes every write appended so far durable.
    pub fn sync(&self) -> Result<()> {
        let w = self.writer.lock();
        w.file.sync_data().map_err(|e| io_err(&segment_path(&self.dir, w.segment), e))
    }

    fn reader(&self, n: u32) -> Result<Arc<File>> {
        if let Some(f) = self.readers.read().get(&n) {
            return Ok(f.clone());
        }
        let p = segment_path(&self.dir, n);
        let f = Arc::new(File::open(&p).map_err(|e| io_err(&p, e))?);
        self.readers.write().insert(n, f.clone());
        Ok(f)
    }

    /// Fills `buf` with the volume's bytes at `offset` as they were at
    /// time `at` (ns since the epoch; `u64::MAX` for now): each byte from
    /// the newest write at or before `at`, zero where nothing was written.
    pub fn read_at(&self, at: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        if len == 0 {
            return Ok(());
        }
        if offset.checked_add(len).is_none_or(|e| e > self.meta.size) {
            return Err(CdpError::Invalid(format!("read of {len} bytes at {offset} is beyond the volume's {} bytes", self.meta.size)));
        }
        buf.fill(0);
        let end = offset + len;
        for block in offset / BLOCK..=(end - 1) / BLOCK {
            let lo = offset.max(block * BLOCK);
            let hi = end.min((block + 1) * BLOCK);
            // Byte ranges of [lo, hi) already taken from a newer write.
            let mut covered: Vec<(u64, u64)> = Vec::new();
            self.index.newest_first(block, at, |e| {
                let (a, b) = (e.offset.max(lo), (e.offset + e.len as u64).min(hi));
                if a >= b {
                    return Ok(true);
                }
                for (ga, gb) in gaps(&covered, a, b) {
                    if !e.zero {
                        let f = self.reader(e.segment)?;
                        let dst = &mut buf[(ga - offset) as usize..(gb - offset) as usize];
                        f.read_exact_at(dst, e.data_pos + (ga - e.offset)).map_err(|err| io_err(&segment_path(&self.dir, e.segment), err))?;
                    }
                }
                add_range(&mut covered, a, b);
                Ok(!(covered.len() == 1 && covered[0] == (lo, hi)))
            })?;
        }
        Ok(())
    }

    /// Makes everything durable and records that the journal was closed
    /// cleanly, so the next open verifies nothing.
    pub fn close(self) -> Result<()> {
        self.sync()?;
        self.index.flush()?;
        let w = self.writer.lock();
        write_synced(&self.dir, (w.segment, w.pos))
    }
}

/// The parts of `[a, b)` not in `covered` (sorted, disjoint).
fn gaps(covered: &[(u64, u64)], a: u64, b: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = a;
    for &(ca, cb) in covered {
        if cb <= at || ca >= b {
            continue;
        }
        if ca > at {
            out.push((at, ca));
        }
        at = at.max(cb);
        if at >= b {
            break;
        }
    }
    if at < b {
        out.push((at, b));
    }
    out
}

/// Adds `[a, b)` to `covered`, keeping it sorted and merged.
fn add_range(covered: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    covered.push((a, b));
    covered.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(covered.len());
    for &(x, y) in covered.iter() {
        match merged.last_mut() {
            Some(last) if x <= last.1 => last.1 = last.1.max(y),
            _ => merged.push((x, y)),
        }
    }
    *covered = merged;
}

fn first_record_time(dir: &Path, segs: &[u32]) -> Result<Option<u64>> {
    for &n in segs {
        let mut first = None;
        let p = segment_path(dir, n);
        let f = File::open(&p).map_err(|e| io_err(&p, e))?;
        let mut h = [0u8; HEADER];
        if f.read_exact_at(&mut h, SEGMENT_HEADER as u64).is_ok() {
            first = record::decode_header(&h).ok().map(|h| h.time);
        }
        if first.is_some() {
            return Ok(first);
        }
    }
    Ok(None)
}

fn sync_dir(d: &Path) -> Result<()> {
    File::open(d).and_then(|f| f.sync_all()).map_err(|e| io_err(d, e))
}

fn read_synced(dir: &Path) -> Option<(u32, u64)> {
    let t = std::fs::read_to_string(dir.join("synced")).ok()?;
    let (s, p) = t.trim().split_once(' ')?;
    Some((s.parse().ok()?, p.parse().ok()?))
}

fn write_synced(dir: &Path, (seg, pos): (u32, u64)) -> Result<()> {
    crate::write_atomic(&dir.join("synced"), format!("{seg} {pos}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(seed: u8, n: usize) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn read(j: &Journal, at: u64, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        j.read_at(at, off, &mut b).unwrap();
        b
    }

    #[test]
    fn every_moment_reads_as_it_was() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::create(d.path(), 1 << 20, JournalOptions::default()).unwrap();
        assert_eq!(j.range(), None);
        assert_eq!(read(&j, u64::MAX, 0, 8192), vec![0u8; 8192]);
        let a = pattern(1, 10_000);
        let t1 = j.append(1000, &a).unwrap();
        // Unaligned, overlapping the first write's middle.
        let b = pattern(2, 3000);
        let t2 = j.append(4000, &b).unwrap();
        let t3 = j.append_zeroes(5000, 512).unwrap();
        assert!(t1 < t2 && t2 < t3);
        assert_eq!(j.range(), Some((t1, t3)));
        // Before anything: zeroes.
        assert_eq!(read(&j, t1 - 1, 0, 20_000), vec![0u8; 20_000]);
        // At t1: the first write alone.
        let mut want = vec![0u8; 20_000];
        want[1000..11_000].copy_from_slice(&a);
        assert_eq!(read(&j, t1, 0, 20_000), want);
        // At t2: the second on top; at t3 a zeroed hole in it.
        want[4000..7000].copy_from_slice(&b);
        assert_eq!(read(&j, t2, 0, 20_000), want);
        want[5000..5512].fill(0);
        assert_eq!(read(&j, t3, 0, 20_000), want);
        assert_eq!(read(&j, u64::MAX, 0, 20_000), want);
        // A read that starts and ends inside blocks.
        assert_eq!(read(&j, t2, 3999, 3), vec![a[2999], b[0], b[1]]);
        // Out of range: refused, named.
        assert!(j.append(1 << 20, b"x").unwrap_err().to_string().contains("beyond the volume"));
        let mut big = vec![0u8; 10];
        assert!(j.read_at(u64::MAX, (1 << 20) - 5, &mut big).is_err());
    }

    #[test]
    fn reopen_keeps_everything_and_a_lost_index_is_rebuilt() {
        let d = tempfile::tempdir().unwrap();
        let opts = JournalOptions { segment_bytes: 64 << 10 };
        let j = Journal::create(d.path(), 4 << 20, opts).unwrap();
        let mut times = Vec::new();
        for i in 0..40u8 {
            times.push(j.append(i as u64 * 8192, &pattern(i, 20_000)).unwrap());
        }
        let want_mid = read(&j, times[19], 0, 400_000);
        let want_now = read(&j, u64::MAX, 0, 400_000);
        assert!(segments(d.path()).unwrap().len() > 5, "segments rotate");
        j.close().unwrap();
        let j = Journal::open_with(d.path(), opts).unwrap();
        assert_eq!(read(&j, times[19], 0, 400_000), want_mid);
        assert_eq!(read(&j, u64::MAX, 0, 400_000), want_now);
        assert_eq!(j.range(), Some((times[0], times[39])));
        // A later write after the reopen is newer than all before it.
        assert!(j.append(0, b"after").unwrap() > times[39]);
        drop(j);
        std::fs::remove_dir_all(d.path().join("index")).unwrap();
        let j = Journal::open_with(d.path(), opts).unwrap();
        assert_eq!(read(&j, times[19], 0, 400_000), want_mid);
        assert_eq!(&read(&j, u64::MAX, 0, 5), b"after");
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_damage_inside_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let opts = JournalOptions { segment_bytes: 64 << 10 };
        let j = Journal::create(d.path(), 1 << 20, opts).unwrap();
        let t1 = j.append(0, &pattern(1, 4096)).unwrap();
        let t2 = j.append(0, &pattern(2, 4096)).unwrap();
        j.sync().unwrap();
        // A crash mid-append: the last record's data is cut short, and the
        // index (flushed here) already points at it.
        j.index.flush().unwrap();
        drop(j);
        let seg = segment_path(d.path(), 0);
        let len = std::fs::metadata(&seg).unwrap().len();
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 100).unwrap();
        let j = Journal::open_with(d.path(), opts).unwrap();
        assert_eq!(read(&j, u64::MAX, 0, 4096), pattern(1, 4096), "the torn write is gone, the one before stays");
        assert_eq!(j.range(), Some((t1, t1)));
        assert!(j.append(0, b"x").unwrap() > t1);
        let _ = t2;
        // Enough writes for several segments, then a flipped byte in the
        // first: refused, naming the segment.
        for i in 0..20u8 {
            j.append(8192, &pattern(i, 10_000)).unwrap();
        }
        j.close().unwrap();
        std::fs::remove_file(d.path().join("synced")).unwrap();
        let f = OpenOptions::new().read(true).write(true).open(&seg).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 100).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], 100).unwrap();
        let e = Journal::open_with(d.path(), opts).err().expect("damage refused");
        assert!(matches!(e, CdpError::Damaged { .. }) && e.to_string().contains("00000000.seg"), "{e}");
        // A synced mark past the end of the journal is not believed either.
        std::fs::write(d.path().join("synced"), "99 16\n").unwrap();
        assert!(matches!(Journal::open_with(d.path(), opts), Err(CdpError::Damaged { .. })));
    }

    #[test]
    fn ranges_subtract_and_merge() {
        assert_eq!(gaps(&[], 0, 10), vec![(0, 10)]);
        assert_eq!(gaps(&[(2, 4), (6, 8)], 0, 10), vec![(0, 2), (4, 6), (8, 10)]);
        assert_eq!(gaps(&[(0, 10)], 3, 5), vec![]);
        let mut c = vec![(0, 2)];
        add_range(&mut c, 2, 5);
        add_range(&mut c, 7, 9);
        add_range(&mut c, 4, 8);
        assert_eq!(c, vec![(0, 9)]);
    }
}
