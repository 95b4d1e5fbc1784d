//! What the server serves: the `BlockDevice` trait, and `FileDevice`, a
//! raw image file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// One piece of a read, in order: bytes, or a run that reads as zeroes
/// (sent to the client as a hole chunk when structured replies are on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadChunk {
    /// `Bytes` so a device can hand out a slice of a buffer it keeps (a
    /// decoded datastore chunk) without copying it per request.
    Data(bytes::Bytes),
    /// This many bytes that read as zeroes.
    Zero(u32),
}

impl ReadChunk {
    /// Bytes of the read this chunk covers.
    pub fn len(&self) -> u32 {
        match self {
            ReadChunk::Data(d) => d.len() as u32,
            ReadChunk::Zero(n) => *n,
        }
    }
    /// True when the chunk covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One `base:allocation` extent: `len` bytes, `hole` = not allocated,
/// `zero` = reads as zeroes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Length in bytes.
    pub len: u32,
    /// Not allocated (NBD_STATE_HOLE).
    pub hole: bool,
    /// Reads as zeroes (NBD_STATE_ZERO).
    pub zero: bool,
}

impl Extent {
    /// `len` allocated bytes that may hold anything.
    pub fn data(len: u32) -> Self {
        Extent { len, hole: false, zero: false }
    }
    /// `len` unallocated bytes that read as zeroes.
    pub fn hole(len: u32) -> Self {
        Extent { len, hole: true, zero: true }
    }
    /// The `base:allocation` flags word sent on the wire
    /// (`STATE_HOLE` | `STATE_ZERO`).
    pub fn flags(&self) -> u32 {
        (if self.hole { crate::proto::STATE_HOLE } else { 0 }) | (if self.zero { crate::proto::STATE_ZERO } else { 0 })
    }
}

/// Push an extent, merging it into the previous one when the flags match.
pub fn push_extent(v: &mut Vec<Extent>, e: Extent) {
    if e.len == 0 {
        return;
    }
    if let Some(last) = v.last_mut() {
        if last.hole == e.hole && last.zero == e.zero {
            if let Some(l) = last.len.checked_add(e.len) {
                last.len = l;
                return;
            }
        }
    }
    v.push(e);
}

/// Push a read chunk, merging adjacent zero runs.
pub fn push_chunk(v: &mut Vec<ReadChunk>, c: ReadChunk) {
    if c.is_empty() {
        return;
    }
    if let (Some(ReadChunk::Zero(a)), ReadChunk::Zero(b)) = (v.last_mut(), &c) {
        *a += *b;
        return;
    }
    v.push(c);
}

fn eperm() -> io::Error {
    io::Error::from_raw_os_error(libc::EPERM)
}

/// A disk the NBD server can export.
///
/// Calls are blocking; the server runs them on tokio's blocking pool, so a
/// slow device (a datastore read that decompresses, a disk that stalls)
/// holds up only the requests that wait for it. Ranges passed in are
/// already checked against `size()`; lengths are at most 32 MiB for reads
/// and writes, and at most `u32::MAX` for the others.
///
/// A device is shared by every connection to its export (multi-conn):
/// a `flush` must make every write completed before it durable, whichever
/// connection sent it.
pub trait BlockDevice: Send + Sync + 'static {
    /// Size in bytes; fixed for the device's life.
    fn size(&self) -> u64;

    /// True when writes are refused (the default).
    fn read_only(&self) -> bool {
        true
    }

    /// Read `[off, off+len)` as a sequence of chunks whose lengths add up
    /// to `len`.
    fn read_at(&self, off: u64, len: u32) -> io::Result<Vec<ReadChunk>>;

    /// The same read when it can be answered from memory at once, without
    /// blocking; `None` sends it to `read_at` on the blocking pool. Most
    /// reads of a datastore-backed disk hit a chunk an earlier request
    /// decoded: answering those inline saves a thread hand-off each.
    fn read_ready(&self, off: u64, len: u32) -> Option<io::Result<Vec<ReadChunk>>> {
        let _ = (off, len);
        None
    }

    /// Allocation status of `[off, off+len)`. The extents must start at
    /// `off`, be non-empty, and may cover less than `len` (the client asks
    /// again) but not more.
    fn block_status(&self, off: u64, len: u32) -> io::Result<Vec<Extent>> {
        let _ = off;
        Ok(vec![Extent::data(len)])
    }

    /// Write `data` at `off`. The default refuses with EPERM (read-only
    /// device).
    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        let _ = (off, data);
        Err(eperm())
    }

    /// Make `[off, off+len)` read as zeroes; `may_trim` allows punching
    /// holes (the client did not set NBD_CMD_FLAG_NO_HOLE).
    fn write_zeroes(&self, off: u64, len: u32, may_trim: bool) -> io::Result<()> {
        let _ = (off, len, may_trim);
        Err(eperm())
    }

    /// Advisory discard; afterwards the range's contents are unspecified
    /// until written again.
    fn trim(&self, off: u64, len: u32) -> io::Result<()> {
        let _ = (off, len);
        if self.read_only() {
            Err(eperm())
        } else {
            Ok(())
        }
    }

    /// Make every write completed so far durable (NBD_CMD_FLUSH, and after
    /// a FUA request). The default does nothing, which suits a read-only
    /// device.
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: BlockDevice + ?Sized> BlockDevice for Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
    fn read_at(&self, off: u64, len: u32) -> io::Result<Vec<ReadChunk>> {
        (**self).read_at(off, len)
    }
    fn read_ready(&self, off: u64, len: u32) -> Option<io::Result<Vec<ReadChunk>>> {
        (**self).read_ready(off, len)
    }
    fn block_status(&self, off: u64, len: u32) -> io::Result<Vec<Extent>> {
        (**self).block_status(off, len)
    }
    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        (**self).write_at(off, data)
    }
    fn write_zeroes(&self, off: u64, len: u32, may_trim: bool) -> io::Result<()> {
        (**self).write_zeroes(off, len, may_trim)
    }
    fn trim(&self, off: u64, len: u32) -> io::Result<()> {
        (**self).trim(off, len)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
}

/// A raw image file. Holes of a sparse file are found with
/// SEEK_DATA/SEEK_HOLE and reported as holes (reads and block status).
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    size: u64,
    read_only: bool,
}

impl FileDevice {
    /// Open `path` read-only.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        Self::from_file(file, true)
    }

    /// Open `path` for reading and writing.
    pub fn open_writable(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Self::from_file(file, false)
    }

    /// Serve an already open file; its current length is the device size.
    /// `read_only: false` needs a file opened for writing.
    pub fn from_file(file: File, read_only: bool) -> io::Result<Self> {
        let size = file.metadata()?.len();
        Ok(FileDevice { file, size, read_only })
    }

    fn seek(&self, off: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
        // lseek changes the shared file offset, but every data access here
        // is positional (pread/pwrite), so that offset is never used.
        let r = unsafe { libc::lseek(self.file.as_raw_fd(), off as libc::off_t, whence) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(r as u64))
    }

    /// Data/hole map of `[off, off+len)`, as (len, is_hole) runs.
    fn map(&self, off: u64, len: u32) -> io::Result<Vec<Extent>> {
        let end = off + len as u64;
        let mut out = Vec::new();
        let mut pos = off;
        while pos < end {
            let data = match self.seek(pos, libc::SEEK_DATA) {
                Ok(Some(d)) => d.min(end),
                Ok(None) => end, // no data after pos: the rest is a hole
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // Filesystem without SEEK_DATA: call it all data.
                    push_extent(&mut out, Extent::data((end - pos) as u32));
                    break;
                }
                Err(e) => return Err(e),
            };
            if data > pos {
                push_extent(&mut out, Extent::hole((data - pos) as u32));
                pos = data;
                continue;
            }
            let hole = self.seek(pos, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
            let hole = hole.max(pos + 1).min(end);
            push_extent(&mut out, Extent::data((hole - pos) as u32));
            pos = hole;
        }
        Ok(out)
    }

    fn read_exact(&self, off: u64, len: u32) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        let mut done = 0usize;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], off + done as u64) {
                Ok(0) => break, // file shrank under us: the rest reads as zero
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(buf)
    }

    fn fallocate(&self, mode: libc::c_int, off: u64, len: u64) -> io::Result<()> {
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn write_zero_bytes(&self, off: u64, len: u64) -> io::Result<()> {
        let zero = vec![0u8; (len.min(1 << 20)) as usize];
        let mut pos = off;
        let end = off + len;
        while pos < end {
            let n = (end - pos).min(zero.len() as u64) as usize;
            self.file.write_all_at(&zero[..n], pos)?;
            pos += n as u64;
        }
        Ok(())
    }
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, off: u64, len: u32) -> io::Result<Vec<ReadChunk>> {
        let mut out = Vec::new();
        let mut pos = off;
        for e in self.map(off, len)? {
            if e.hole {
                push_chunk(&mut out, ReadChunk::Zero(e.len));
            } else {
                push_chunk(&mut out, ReadChunk::Data(self.read_exact(pos, e.len)?.into()));
            }
            pos += e.len as u64;
        }
        Ok(out)
    }

    fn block_status(&self, off: u64, len: u32) -> io::Result<Vec<Extent>> {
        self.map(off, len)
    }

    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        if self.read_only {
            return Err(eperm());
        }
        self.file.write_all_at(data, off)
    }

    fn write_zeroes(&self, off: u64, len: u32, may_trim: bool) -> io::Result<()> {
        if self.read_only {
            return Err(eperm());
        }
        let len = len as u64;
        let mode = if may_trim { libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE } else { libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE };
        match self.fallocate(mode, off, len) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)) => self.write_zero_bytes(off, len),
            Err(e) => Err(e),
        }
    }

    fn trim(&self, off: u64, len: u32) -> io::Result<()> {
        if self.read_only {
            return Err(eperm());
        }
        match self.fallocate(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, len as u64) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)) => {
                Ok(()) // trim is advisory
            }
            r => r,
        }
    }

    fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }
}

/// The bytes a read returns, zero runs spelled out (for tests).
#[cfg(test)]
pub(crate) fn flatten(chunks: &[ReadChunk]) -> Vec<u8> {
    let mut v = Vec::new();
    for c in chunks {
        match c {
            ReadChunk::Data(d) => v.extend_from_slice(d),
            ReadChunk::Zero(n) => v.resize(v.len() + *n as usize, 0),
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_file_reads_holes_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.raw");
        let f = File::create(&p).unwrap();
        f.set_len(4 << 20).unwrap();
        f.write_all_at(&[0xab; 65536], 1 << 20).unwrap();
        drop(f);
        let d = FileDevice::open(&p).unwrap();
        assert!(d.read_only());
        let chunks = d.read_at(0, 4 << 20).unwrap();
        assert!(chunks.iter().any(|c| matches!(c, ReadChunk::Zero(_))));
        let flat = flatten(&chunks);
        assert_eq!(flat.len(), 4 << 20);
        assert!(flat[(1 << 20)..(1 << 20) + 65536].iter().all(|&b| b == 0xab));
        assert!(flat[..1 << 20].iter().all(|&b| b == 0));
        let ext = d.block_status(0, 4 << 20).unwrap();
        assert_eq!(ext.iter().map(|e| e.len as u64).sum::<u64>(), 4 << 20);
        assert!(ext[0].hole);
        assert!(d.write_at(0, b"x").is_err());
    }

    #[test]
    fn writable_file_zeroes_and_trims() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.raw");
        std::fs::write(&p, vec![0x11u8; 1 << 20]).unwrap();
        let d = FileDevice::open_writable(&p).unwrap();
        d.write_at(100, b"hello").unwrap();
        d.write_zeroes(4096, 8192, true).unwrap();
        d.write_zeroes(65536, 100, false).unwrap();
        d.flush().unwrap();
        let flat = flatten(&d.read_at(0, 1 << 20).unwrap());
        assert_eq!(&flat[100..105], b"hello");
        assert!(flat[4096..4096 + 8192].iter().all(|&b| b == 0));
        assert!(flat[65536..65636].iter().all(|&b| b == 0));
        assert_eq!(flat[65636], 0x11);
    }
}
