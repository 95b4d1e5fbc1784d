//! Pack files: many blobs appended into one file, written under
//! `partial/` and moved into `packs/` only once complete and fsynced.
//! A sealed pack is never modified again.

use crate::blob::{RecordHeader, RECORD_HEADER_LEN};
use crate::error::{Result, StoreError};
use crate::fsutil;
use crate::id::{BlobId, PackId};
use crate::index::BlobLocation;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const PACK_MAGIC: &[u8; 8] = b"LBPACK\x00\x01";
pub const PACK_HEADER_LEN: u64 = 32;
const WRITE_BUFFER: usize = 4 << 20;

pub fn pack_path(root: &Path, id: &PackId) -> PathBuf {
    let h = id.to_hex();
    root.join("packs").join(&h[..2]).join(format!("{h}.pack"))
}

pub fn partial_dir(root: &Path) -> PathBuf {
    root.join("partial")
}

/// Appends blobs to a new pack. The partial file is flock'ed for the
/// writer's lifetime so a cleaner can tell it from a crashed writer's.
pub struct PackWriter {
    id: PackId,
    part_path: PathBuf,
    file: File,
    buf: Vec<u8>,
    len: u64,
    blobs: Vec<(BlobId, BlobLocation)>,
}

/// A pack that is complete and durable under `packs/`, not yet in the
/// index. Holding it keeps the file locked.
pub struct SealedPack {
    pub id: PackId,
    pub len: u64,
    pub blobs: Vec<(BlobId, BlobLocation)>,
    _lock: File,
}

impl PackWriter {
    pub fn create(root: &Path) -> Result<Self> {
        // Between create and lock, another run's cleaner may take the new
        // file for a crashed writer's and delete it: then take a new name.
        let (id, part_path, file) = loop {
            let id = PackId::random();
            let part_path = partial_dir(root).join(format!("{}.pack", id.to_hex()));
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&part_path)
                .map_err(|e| StoreError::io("create", &part_path, e))?;
            if fsutil::try_lock_exclusive(&file).map_err(|e| StoreError::io("lock", &part_path, e))? {
                use std::os::unix::fs::MetadataExt;
                let ours = file.metadata().map_err(|e| StoreError::io("stat", &part_path, e))?.ino();
                if std::fs::metadata(&part_path).is_ok_and(|m| m.ino() == ours) {
                    break (id, part_path, file);
                }
            }
        };
        let mut buf = Vec::with_capacity(WRITE_BUFFER + (1 << 20));
        buf.extend_from_slice(PACK_MAGIC);
        buf.extend_from_slice(&id.0);
        buf.extend_from_slice(&[0u8; 8]);
        Ok(PackWriter { id, part_path, file, buf, len: PACK_HEADER_LEN, blobs: Vec::new() })
    }

    pub fn id(&self) -> PackId {
        self.id
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    pub fn append(&mut self, header: RecordHeader, stored: &[u8]) -> Result<()> {
        debug_assert_eq!(header.stored_len as usize, stored.len());
        let offset = self.len;
        self.buf.extend_from_slice(&header.encode());
        if stored.len() > WRITE_BUFFER / 4 {
            // A big record goes straight to the file rather than through
            // (and growing) the buffer.
            self.flush_buf()?;
            crate::failpoint::hit("pack-write")?;
            self.file.write_all(stored).map_err(|e| StoreError::io("write", &self.part_path, e))?;
        } else {
            self.buf.extend_from_slice(stored);
        }
        self.len += (RECORD_HEADER_LEN + stored.len()) as u64;
        self.blobs.push((
            header.id,
            BlobLocation {
                pack: self.id,
                offset,
                stored_len: header.stored_len,
                plain_len: header.plain_len,
                kind: header.kind,
                encoding: header.encoding,
            },
        ));
        if self.buf.len() >= WRITE_BUFFER {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<()> {
        crate::failpoint::hit("pack-write")?;
        self.file.write_all(&self.buf).map_err(|e| StoreError::io("write", &self.part_path, e))?;
        self.buf.clear();
        Ok(())
    }

    /// Makes the pack durable and moves it into `packs/`.
    pub fn seal(mut self, root: &Path) -> Result<SealedPack> {
        let res = self.seal_inner(root);
        if res.is_err() {
            let _ = std::fs::remove_file(&self.part_path);
        }
        res
    }

    fn seal_inner(&mut self, root: &Path) -> Result<SealedPack> {
        self.flush_buf()?;
        crate::failpoint::hit("pack-fsync")?;
        self.file.sync_data().map_err(|e| StoreError::io("fsync", &self.part_path, e))?;
        let dest = pack_path(root, &self.id);
        let dir = dest.parent().unwrap();
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create", dir, e))?;
            fsutil::sync_dir(&root.join("packs"))?;
        }
        std::fs::rename(&self.part_path, &dest).map_err(|e| StoreError::io("rename", &dest, e))?;
        fsutil::sync_dir(dir)?;
        fsutil::sync_dir(&partial_dir(root))?;
        crate::failpoint::hit("pack-sealed")?;
        let file = self.file.try_clone().map_err(|e| StoreError::io("dup", &dest, e))?;
        Ok(SealedPack { id: self.id, len: self.len, blobs: std::mem::take(&mut self.blobs), _lock: file })
    }

    /// Throws the pack away (abort, or error in the run).
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.part_path);
    }
}

/// Stores a whole pack built elsewhere (a remote agent's, verified
/// record by record by the caller): written under `partial/`, fsynced and
/// moved into `packs/` like one of our own. `blobs` are its records'
/// locations, for the index commit that must follow.
pub fn store_built(root: &Path, id: PackId, bytes: &[u8], blobs: Vec<(BlobId, BlobLocation)>) -> Result<SealedPack> {
    let part_path = partial_dir(root).join(format!("{}.pack", id.to_hex()));
    // As in `PackWriter::create`: another run's cleaner may take the file
    // for a crashed writer's between create and lock; then start over.
    let file = loop {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part_path)
            .map_err(|e| StoreError::io("create", &part_path, e))?;
        if !fsutil::try_lock_exclusive(&file).map_err(|e| StoreError::io("lock", &part_path, e))? {
            return Err(StoreError::io("lock", &part_path, std::io::Error::other("locked by another writer")));
        }
        use std::os::unix::fs::MetadataExt;
        let ours = file.metadata().map_err(|e| StoreError::io("stat", &part_path, e))?.ino();
        if std::fs::metadata(&part_path).is_ok_and(|m| m.ino() == ours) {
            break file;
        }
    };
    let dup = file.try_clone().map_err(|e| StoreError::io("dup", &part_path, e))?;
    let w = PackWriter { id, part_path, file: dup, buf: Vec::new(), len: bytes.len() as u64, blobs };
    if let Err(e) = (&file).write_all(bytes) {
        let err = StoreError::io("write", &w.part_path, e);
        w.discard();
        return Err(err);
    }
    w.seal(root)
}

fn read_error(e: std::io::Error, path: &Path, loc: &BlobLocation) -> StoreError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        StoreError::CorruptPack {
            pack: loc.pack.to_hex(),
            reason: format!("truncated: record at offset {} runs past the end of {}", loc.offset, path.display()),
        }
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
        reader
            .read_exact(&mut hdr)
            .map_err(|_| StoreError::CorruptPack { pack: name.clone(), reason: "pack header truncated".into() })?;
        if &hdr[..8] != PACK_MAGIC {
            return Err(StoreError::CorruptPack { pack: name, reason: "bad pack magic".into() });
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&hdr[8..24]);
        Ok(PackScanner { pack: PackId(id), reader, offset: PACK_HEADER_LEN, file_len })
    }

    pub fn pack_id(&self) -> PackId {
        self.pack
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
        let header = RecordHeader::decode(&hb).map_err(corrupt)?;
        if at + (RECORD_HEADER_LEN as u64) + header.stored_len as u64 > self.file_len {
            return Err(corrupt(format!("record of {} bytes runs past the end of the pack", header.stored_len)));
        }
        let mut data = vec![0u8; header.stored_len as usize];
        self.reader.read_exact(&mut data).map_err(|e| StoreError::io("read", format!("pack {}", self.pack), e))?;
        self.offset += (RECORD_HEADER_LEN + data.len()) as u64;
        Ok(Some((at, header, data)))
    }
}
