//! The pack format: a 32-byte header (magic, pack id, reserved), then
//! records, each a `RecordHeader` followed by its stored bytes
//! (docs/format.md). Reading one record at a known place, or all of them
//! in order.

use crate::blob::{RecordHeader, RECORD_HEADER_LEN};
use crate::error::{Result, StoreError};
use crate::id::PackId;
use crate::index::BlobLocation;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The first bytes of every pack file.
pub const PACK_MAGIC: &[u8; 8] = b"LBPACK\x00\x01";
/// Bytes of a pack's header (magic, then reserved).
pub const PACK_HEADER_LEN: u64 = 32;

fn read_error(e: std::io::Error, path: &Path, loc: &BlobLocation) -> StoreError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        StoreError::CorruptPack { pack: loc.pack.to_hex(), reason: format!("truncated: record at offset {} runs past the end of {}", loc.offset, path.display()) }
    } else {
        StoreError::io("read", path, e)
    }
}

fn decode_header(h: &[u8], loc: &BlobLocation) -> Result<RecordHeader> {
    RecordHeader::decode(h).map_err(|reason| StoreError::CorruptPack { pack: loc.pack.to_hex(), reason: format!("offset {}: {reason}", loc.offset) })
}

/// Reads one record's stored bytes at a known location.
pub fn read_record(file: &File, path: &Path, loc: &BlobLocation) -> Result<(RecordHeader, Vec<u8>)> {
    let eof = |e| read_error(e, path, loc);
    let body = loc.stored_len as usize;
    if body < 64 * 1024 {
        // One read; shifting a small body down costs less than a syscall.
        let mut buf = vec![0u8; RECORD_HEADER_LEN + body];
        file.read_exact_at(&mut buf, loc.offset).map_err(eof)?;
        let header = decode_header(&buf[..RECORD_HEADER_LEN], loc)?;
        buf.drain(..RECORD_HEADER_LEN);
        return Ok((header, buf));
    }
    let mut buf = Vec::new();
    let header = read_record_into(file, path, loc, &mut buf)?;
    Ok((header, buf))
}

/// Reads a record's header, and its stored bytes into `buf` (resized to
/// fit, its allocation reused). A large body (a VM disk chunk) goes
/// straight into its own buffer: moving megabytes down by the header's
/// length, and a fresh allocation's page faults, showed up in profiles.
pub fn read_record_into(file: &File, path: &Path, loc: &BlobLocation, buf: &mut Vec<u8>) -> Result<RecordHeader> {
    let eof = |e| read_error(e, path, loc);
    let mut hdr = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut hdr, loc.offset).map_err(eof)?;
    let header = decode_header(&hdr, loc)?;
    buf.resize(loc.stored_len as usize, 0);
    file.read_exact_at(buf, loc.offset + RECORD_HEADER_LEN as u64).map_err(eof)?;
    Ok(header)
}

/// Walks the records of a pack in order; used by check and repair.
pub struct PackScanner {
    pack: PackId,
    reader: std::io::BufReader<File>,
    offset: u64,
    file_len: u64,
}

impl PackScanner {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
        let file_len = file.metadata().map_err(|e| StoreError::io("stat", path, e))?.len();
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        let mut hdr = [0u8; PACK_HEADER_LEN as usize];
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?").to_string();
        reader.read_exact(&mut hdr).map_err(|_| StoreError::CorruptPack { pack: name.clone(), reason: "pack header truncated".into() })?;
        if &hdr[..8] != PACK_MAGIC {
            return Err(StoreError::CorruptPack { pack: name, reason: "bad pack magic".into() });
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&hdr[8..24]);
        Ok(PackScanner { pack: PackId(id), reader, offset: PACK_HEADER_LEN, file_len })
    }

    /// Offset of the next record (of the failing one after an error).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record, `Ok(None)` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<(u64, RecordHeader, Vec<u8>)>> {
        if self.offset == self.file_len {
            return Ok(None);
        }
        let at = self.offset;
        let corrupt = |reason: String| StoreError::CorruptPack { pack: self.pack.to_hex(), reason: format!("offset {at}: {reason}") };
        let mut hb = [0u8; RECORD_HEADER_LEN];
        self.reader.read_exact(&mut hb).map_err(|_| corrupt("record header truncated".into()))?;
        let header = RecordHeader::decode(&hb).map_err(|e| corrupt(e.to_string()))?;
        if at + (RECORD_HEADER_LEN as u64) + header.stored_len as u64 > self.file_len {
            return Err(corrupt(format!("record of {} bytes runs past the end of the pack", header.stored_len)));
        }
        let mut data = vec![0u8; header.stored_len as usize];
        self.reader.read_exact(&mut data).map_err(|e| StoreError::io("read", format!("pack {}", self.pack), e))?;
        self.offset += (RECORD_HEADER_LEN + data.len()) as u64;
        Ok(Some((at, header, data)))
    }
}
