//! `CowOverlay`: a writable disk over a read-only base.
//!
//! Writes land in a sparse overlay file of the base's size; a bitmap of
//! 64 KiB blocks says which blocks the overlay holds. A partial write to a
//! block the overlay does not hold yet copies the block up from the base
//! first (read-modify-write). Reads and block status merge the two. The
//! base is only ever read: restoring from a backup and letting a guest
//! write never changes the backup.
//!
//! The bitmap is persisted beside the overlay (`<overlay>.bitmap`) on every
//! flush, after the overlay's data is synced, so a bit on disk always
//! names a block whose data is on disk. Bits only go from 0 to 1.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};

use crate::device::{push_chunk, push_extent, BlockDevice, Extent, FileDevice, ReadChunk};

/// Overlay block size: the copy-up unit.
pub const COW_BLOCK: u64 = 64 * 1024;
const BITMAP_MAGIC: &[u8; 8] = b"LBCOWBM1";
const HEADER_LEN: u64 = 32;

/// A writable [`BlockDevice`] over the read-only device `D`: writes go to
/// an overlay file, reads come from the overlay where a block was written
/// and from the base elsewhere. The overlay file and its `.bitmap` belong to
/// the caller, who deletes them to discard the writes; dropping the value
/// flushes pending bitmap changes (best effort) but removes nothing.
pub struct CowOverlay<D> {
    base: D,
    overlay: FileDevice,
    bitmap_path: PathBuf,
    bitmap_file: File,
    bits: RwLock<Vec<u64>>,
    dirty: std::sync::atomic::AtomicBool,
    /// Serializes copy-ups (partial-block writes), so two partial writes to
    /// the same fresh block do not both copy the base over each other.
    copy_up: Mutex<()>,
    /// Serializes flushes, so an older bitmap never overwrites a newer one.
    flushing: Mutex<()>,
    size: u64,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<D: BlockDevice> CowOverlay<D> {
    /// Open (or create) the overlay at `overlay_path` over `base`. An
    /// existing overlay must have been made for a base of the same size.
    pub fn open(base: D, overlay_path: &Path) -> io::Result<Self> {
        let size = base.size();
        let nblocks = size.div_ceil(COW_BLOCK);
        let words = nblocks.div_ceil(64) as usize;
        let mut bitmap_path = overlay_path.as_os_str().to_owned();
        bitmap_path.push(".bitmap");
        let bitmap_path = PathBuf::from(bitmap_path);

        let exists = overlay_path.exists() && bitmap_path.exists();
        let ofile = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(overlay_path)?;
        let bfile = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&bitmap_path)?;
        let mut bits = vec![0u64; words];
        if exists && bfile.metadata()?.len() > 0 {
            let mut hdr = [0u8; HEADER_LEN as usize];
            bfile.read_exact_at(&mut hdr, 0)?;
            if &hdr[0..8] != BITMAP_MAGIC {
                return Err(invalid(format!("{}: not a Lifeboat CoW bitmap", bitmap_path.display())));
            }
            let osize = u64::from_le_bytes(hdr[8..16].try_into().unwrap());
            let gran = u64::from_le_bytes(hdr[16..24].try_into().unwrap());
            if osize != size || gran != COW_BLOCK {
                return Err(invalid(format!("{}: overlay made for a {osize}-byte disk with {gran}-byte blocks, base is {size} bytes", bitmap_path.display())));
            }
            let mut raw = vec![0u8; words * 8];
            bfile.read_exact_at(&mut raw, HEADER_LEN)?;
            for (w, c) in bits.iter_mut().zip(raw.chunks_exact(8)) {
                *w = u64::from_le_bytes(c.try_into().unwrap());
            }
        }
        if ofile.metadata()?.len() != size {
            ofile.set_len(size)?;
        }
        let overlay = FileDevice::from_file(ofile, false)?;
        let me = CowOverlay {
            base,
            overlay,
            bitmap_path,
            bitmap_file: bfile,
            bits: RwLock::new(bits),
            dirty: std::sync::atomic::AtomicBool::new(!exists),
            copy_up: Mutex::new(()),
            flushing: Mutex::new(()),
            size,
        };
        if !exists {
            me.persist_bitmap(&me.bits.read().clone())?;
        }
        Ok(me)
    }

    /// The read-only device under the overlay.
    pub fn base(&self) -> &D {
        &self.base
    }

    /// Where the block bitmap is kept: the overlay path plus `.bitmap`.
    pub fn bitmap_path(&self) -> &Path {
        &self.bitmap_path
    }

    /// Number of blocks the overlay holds.
    pub fn blocks_written(&self) -> u64 {
        self.bits.read().iter().map(|w| w.count_ones() as u64).sum()
    }

    fn is_set(bits: &[u64], b: u64) -> bool {
        bits[(b / 64) as usize] & (1 << (b % 64)) != 0
    }

    fn set_range(&self, first: u64, last_inclusive: u64) {
        let mut bits = self.bits.write();
        for b in first..=last_inclusive {
            bits[(b / 64) as usize] |= 1 << (b % 64);
        }
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Runs of `[off, off+len)` that are entirely in the overlay (true) or
    /// entirely in the base (false), in order.
    fn runs(&self, off: u64, len: u64) -> Vec<(u64, u64, bool)> {
        let end = off + len;
        let bits = self.bits.read();
        let mut out: Vec<(u64, u64, bool)> = Vec::new();
        let mut pos = off;
        while pos < end {
            let b = pos / COW_BLOCK;
            let set = Self::is_set(&bits, b);
            let next = ((b + 1) * COW_BLOCK).min(end);
            match out.last_mut() {
                Some(last) if last.2 == set && last.0 + last.1 == pos => last.1 += next - pos,
                _ => out.push((pos, next - pos, set)),
            }
            pos = next;
        }
        out
    }

    fn block_range(&self, b: u64) -> (u64, u64) {
        let s = b * COW_BLOCK;
        (s, ((b + 1) * COW_BLOCK).min(self.size))
    }

    /// Write `data` at `off`, all inside block `b`, not covering all of it.
    fn write_partial(&self, b: u64, off: u64, data: &[u8]) -> io::Result<()> {
        let _g = self.copy_up.lock();
        if Self::is_set(&self.bits.read(), b) {
            return self.overlay.write_at(off, data);
        }
        let (bs, be) = self.block_range(b);
        let mut block = Vec::with_capacity((be - bs) as usize);
        for c in self.base.read_at(bs, (be - bs) as u32)? {
            match c {
                ReadChunk::Data(d) => block.extend_from_slice(&d),
                ReadChunk::Zero(n) => block.resize(block.len() + n as usize, 0),
            }
        }
        if block.len() as u64 != be - bs {
            return Err(io::Error::other("base returned a short read"));
        }
        let at = (off - bs) as usize;
        block[at..at + data.len()].copy_from_slice(data);
        self.overlay.write_at(bs, &block)?;
        self.set_range(b, b);
        Ok(())
    }

    /// Split `[off, off+len)` into (head partial, full blocks, tail partial).
    /// Returns (head: Option<(block, off, len)>, full: Option<(first, last, off, len)>, tail).
    #[allow(clippy::type_complexity)]
    fn split(&self, off: u64, len: u64) -> (Option<(u64, u64, u64)>, Option<(u64, u64, u64, u64)>, Option<(u64, u64, u64)>) {
        let end = off + len;
        let fb = off / COW_BLOCK;
        let lb = (end - 1) / COW_BLOCK;
        let full = |b: u64, s: u64, e: u64| {
            let (bs, be) = self.block_range(b);
            s == bs && e == be
        };
        if fb == lb {
            return if full(fb, off, end) { (None, Some((fb, fb, off, len)), None) } else { (Some((fb, off, len)), None, None) };
        }
        let mut head = None;
        let mut first_full = fb;
        let (_, fbe) = self.block_range(fb);
        if off != fb * COW_BLOCK {
            head = Some((fb, off, fbe - off));
            first_full = fb + 1;
        }
        let mut tail = None;
        let mut last_full = lb;
        let (lbs, lbe) = self.block_range(lb);
        if end != lbe {
            tail = Some((lb, lbs, end - lbs));
            last_full = lb - 1;
        }
        let fullr = if first_full <= last_full {
            let s = first_full * COW_BLOCK;
            let e = self.block_range(last_full).1;
            Some((first_full, last_full, s, e - s))
        } else {
            None
        };
        (head, fullr, tail)
    }
}

impl<D: BlockDevice> BlockDevice for CowOverlay<D> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        false
    }

    fn read_at(&self, off: u64, len: u32) -> io::Result<Vec<ReadChunk>> {
        let mut out = Vec::new();
        for (o, l, set) in self.runs(off, len as u64) {
            let src: &dyn BlockDevice = if set { &self.overlay } else { &self.base };
            for c in src.read_at(o, l as u32)? {
                push_chunk(&mut out, c);
            }
        }
        Ok(out)
    }

    fn read_ready(&self, off: u64, len: u32) -> Option<io::Result<Vec<ReadChunk>>> {
        // Only a range wholly in the base: overlay reads are file I/O.
        match self.runs(off, len as u64).as_slice() {
            [(_, _, false)] => self.base.read_ready(off, len),
            _ => None,
        }
    }

    fn block_status(&self, off: u64, len: u32) -> io::Result<Vec<Extent>> {
        let mut out = Vec::new();
        for (o, l, set) in self.runs(off, len as u64) {
            let src: &dyn BlockDevice = if set { &self.overlay } else { &self.base };
            let ext = src.block_status(o, l as u32)?;
            let got: u64 = ext.iter().map(|e| e.len as u64).sum();
            for e in ext {
                push_extent(&mut out, e);
            }
            if got < l {
                break; // the source answered short: so do we
            }
        }
        Ok(out)
    }

    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let (head, full, tail) = self.split(off, data.len() as u64);
        if let Some((b, o, l)) = head {
            self.write_partial(b, o, &data[..l as usize])?;
        }
        if let Some((first, last, o, l)) = full {
            let at = (o - off) as usize;
            self.overlay.write_at(o, &data[at..at + l as usize])?;
            self.set_range(first, last);
        }
        if let Some((b, o, l)) = tail {
            let at = (o - off) as usize;
            self.write_partial(b, o, &data[at..at + l as usize])?;
        }
        Ok(())
    }

    fn write_zeroes(&self, off: u64, len: u32, may_trim: bool) -> io::Result<()> {
        let (head, full, tail) = self.split(off, len as u64);
        if let Some((b, o, l)) = head {
            self.write_partial(b, o, &vec![0u8; l as usize])?;
        }
        if let Some((first, last, o, l)) = full {
            // Full blocks: zero them in the overlay (a hole when allowed)
            // and take them over; the base's bytes are hidden from now on.
            let mut pos = o;
            while pos < o + l {
                let n = (o + l - pos).min(1 << 30);
                self.overlay.write_zeroes(pos, n as u32, may_trim)?;
                pos += n;
            }
            self.set_range(first, last);
        }
        if let Some((b, o, l)) = tail {
            self.write_partial(b, o, &vec![0u8; l as usize])?;
        }
        Ok(())
    }

    fn trim(&self, off: u64, len: u32) -> io::Result<()> {
        // Only whole blocks are discarded (they then read as zeroes);
        // partial blocks are left alone, which trim allows.
        let (_, full, _) = self.split(off, len as u64);
        if let Some((first, last, o, l)) = full {
            let mut pos = o;
            while pos < o + l {
                let n = (o + l - pos).min(1 << 30);
                self.overlay.write_zeroes(pos, n as u32, true)?;
                pos += n;
            }
            self.set_range(first, last);
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let _g = self.flushing.lock();
        // Snapshot the bits first: each was set after its data reached the
        // overlay file, so syncing the file next makes all of them true.
        let dirty = self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel);
        let snapshot = if dirty { Some(self.bits.read().clone()) } else { None };
        self.overlay.flush()?;
        if let Some(bits) = snapshot {
            if let Err(e) = self.persist_bitmap(&bits) {
                self.dirty.store(true, std::sync::atomic::Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }
}

impl<D> Drop for CowOverlay<D> {
    fn drop(&mut self) {
        // Best effort: a clean shutdown keeps every write even without a
        // final flush from the client.
        if self.dirty.load(std::sync::atomic::Ordering::Acquire) {
            let bits = self.bits.read().clone();
            if self.overlay.flush().is_ok() {
                let _ = self.persist_bitmap(&bits);
            }
        }
    }
}

impl<D> CowOverlay<D> {
    fn persist_bitmap(&self, bits: &[u64]) -> io::Result<()> {
        let mut raw = Vec::with_capacity(HEADER_LEN as usize + bits.len() * 8);
        raw.extend_from_slice(BITMAP_MAGIC);
        raw.extend_from_slice(&self.size.to_le_bytes());
        raw.extend_from_slice(&COW_BLOCK.to_le_bytes());
        raw.extend_from_slice(&[0u8; 8]);
        for w in bits {
            raw.extend_from_slice(&w.to_le_bytes());
        }
        self.bitmap_file.write_all_at(&raw, 0)?;
        self.bitmap_file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::flatten;

    fn base(dir: &Path, size: usize) -> (PathBuf, Vec<u8>) {
        let p = dir.join("base.raw");
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        (p, data)
    }

    #[test]
    fn writes_go_to_overlay_and_base_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let size = 5 * COW_BLOCK as usize + 1000; // a partial last block
        let (bp, mut model) = base(dir.path(), size);
        let ov = dir.path().join("ov.raw");
        let cow = CowOverlay::open(FileDevice::open(&bp).unwrap(), &ov).unwrap();
        let apply = |model: &mut Vec<u8>, off: usize, data: &[u8]| {
            cow.write_at(off as u64, data).unwrap();
            model[off..off + data.len()].copy_from_slice(data);
        };
        apply(&mut model, 10, &[1u8; 100]); // partial, inside block 0
        apply(&mut model, 65536 - 5, &[2u8; 65536 + 10]); // head+full+tail
        apply(&mut model, size - 500, &[3u8; 500]); // inside the last short block
        apply(&mut model, 3 * 65536, &[4u8; 65536]); // one full block
        cow.write_zeroes(2 * 65536 + 100, 65536, true).unwrap();
        model[2 * 65536 + 100..3 * 65536 + 100].fill(0);
        let got = flatten(&cow.read_at(0, size as u32).unwrap());
        assert_eq!(got, model);
        // The base never changes.
        let (_, orig) = (0, std::fs::read(&bp).unwrap());
        assert_eq!(orig, (0..size).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        let ext = cow.block_status(0, size as u32).unwrap();
        assert_eq!(ext.iter().map(|e| e.len as u64).sum::<u64>(), size as u64);
        cow.flush().unwrap();
        let written = cow.blocks_written();
        drop(cow);
        // Reopen: the bitmap came back, and so do the contents.
        let cow = CowOverlay::open(FileDevice::open(&bp).unwrap(), &ov).unwrap();
        assert_eq!(cow.blocks_written(), written);
        assert_eq!(flatten(&cow.read_at(0, size as u32).unwrap()), model);
    }

    #[test]
    fn size_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (bp, _) = base(dir.path(), 4 * COW_BLOCK as usize);
        let ov = dir.path().join("ov.raw");
        CowOverlay::open(FileDevice::open(&bp).unwrap(), &ov).unwrap();
        std::fs::write(&bp, vec![0u8; 100]).unwrap();
        let e = CowOverlay::open(FileDevice::open(&bp).unwrap(), &ov).err().unwrap();
        assert!(e.to_string().contains("overlay made for"), "{e}");
    }
}
