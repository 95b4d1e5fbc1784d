//! One blob as it sits in a pack: a fixed 48-byte record header followed
//! by the stored (possibly compressed) bytes. The header repeats the blob
//! id and sizes so the index can be rebuilt from packs alone.

use crate::id::BlobId;
use std::borrow::Cow;
use std::cell::RefCell;

/// What a blob holds. Stored in the record header and the index; it never
/// takes part in the blob id (identical bytes are one blob).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlobKind {
    /// A content-defined chunk of a large file.
    FileChunk = 1,
    /// A small file stored whole.
    SmallFile = 2,
    /// A directory listing (see `tree.rs`).
    Tree = 3,
    /// A fixed-size chunk of a VM disk.
    VmChunk = 4,
    /// A snapshot document or other metadata.
    Snapshot = 5,
    Metadata = 6,
    /// A forget record: snapshots removed by `forget`, so an index rebuilt
    /// from the packs does not bring them back.
    Forget = 7,
}

impl BlobKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => BlobKind::FileChunk,
            2 => BlobKind::SmallFile,
            3 => BlobKind::Tree,
            4 => BlobKind::VmChunk,
            5 => BlobKind::Snapshot,
            6 => BlobKind::Metadata,
            7 => BlobKind::Forget,
            _ => return None,
        })
    }
}

/// How the stored bytes encode the plain bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Encoding {
    Raw = 0,
    Zstd = 1,
}

impl Encoding {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Encoding::Raw),
            1 => Some(Encoding::Zstd),
            _ => None,
        }
    }
}

pub const RECORD_HEADER_LEN: usize = 48;

/// The header in front of every blob in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: BlobKind,
    pub encoding: Encoding,
    pub plain_len: u32,
    pub stored_len: u32,
    pub id: BlobId,
    /// The stored bytes are sealed (encrypted datastores, `crypto.rs`).
    pub encrypted: bool,
}

/// Record flag bit 0 (header byte 2): stored bytes are sealed.
pub const FLAG_ENCRYPTED: u8 = 1;

impl RecordHeader {
    pub fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[0] = self.kind as u8;
        b[1] = self.encoding as u8;
        b[2] = if self.encrypted { FLAG_ENCRYPTED } else { 0 };
        // b[3] reserved (0)
        b[4..8].copy_from_slice(&self.plain_len.to_le_bytes());
        b[8..12].copy_from_slice(&self.stored_len.to_le_bytes());
        b[12..44].copy_from_slice(&self.id.0);
        let crc = crc32fast::hash(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < RECORD_HEADER_LEN {
            return Err(format!("record header truncated ({} of {RECORD_HEADER_LEN} bytes)", b.len()));
        }
        let crc = u32::from_le_bytes(b[44..48].try_into().unwrap());
        if crc32fast::hash(&b[..44]) != crc {
            return Err("record header checksum mismatch".into());
        }
        let kind = BlobKind::from_u8(b[0]).ok_or_else(|| format!("unknown blob kind {}", b[0]))?;
        let encoding = Encoding::from_u8(b[1]).ok_or_else(|| format!("unknown encoding {}", b[1]))?;
        if b[2] & !FLAG_ENCRYPTED != 0 || b[3] != 0 {
            return Err(format!("unknown record flags {:#04x}{:02x}", b[3], b[2]));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[12..44]);
        Ok(RecordHeader {
            kind,
            encoding,
            plain_len: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            stored_len: u32::from_le_bytes(b[8..12].try_into().unwrap()),
            id: BlobId(id),
            encrypted: b[2] & FLAG_ENCRYPTED != 0,
        })
    }

    /// What a sealed record authenticates besides its bytes: kind,
    /// encoding, flags, plain length and id (not the stored length, which
    /// the sealed bytes themselves fix). A record cannot be moved under
    /// another id or kind.
    pub fn aad(&self) -> [u8; 40] {
        let e = self.encode();
        let mut a = [0u8; 40];
        a[..8].copy_from_slice(&e[..8]);
        a[8..].copy_from_slice(&e[12..44]);
        a
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `plain` with zstd at `level`, keeping the result only when it
/// saves at least 1/32 of the size; incompressible data is stored raw so
/// reading it back costs nothing. Inputs over 12 KiB are probed first: when a
/// 4 KiB sample does not compress, the whole is stored raw without
/// spending a full compression pass on it (a third of a typical file
/// server is already-compressed media and archives).
pub fn encode(plain: &[u8], level: i32) -> (Encoding, Cow<'_, [u8]>) {
    let mut out = Vec::new();
    match encode_into(plain, level, &mut out) {
        Encoding::Zstd => (Encoding::Zstd, Cow::Owned(out)),
        Encoding::Raw => (Encoding::Raw, Cow::Borrowed(plain)),
    }
}

/// `encode` into a caller's buffer: on `Encoding::Zstd` the stored bytes
/// are `out`, on `Encoding::Raw` they are `plain` itself. A backup
/// compresses millions of blobs; reusing one buffer per thread keeps the
/// allocator from mapping and unmapping (and the kernel from faulting in
/// and shooting down) a fresh output buffer for each of them.
pub fn encode_into(plain: &[u8], level: i32, out: &mut Vec<u8>) -> Encoding {
    out.clear();
    if plain.len() < 64 || level == i32::MIN {
        return Encoding::Raw;
    }
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).expect("zstd context")));
        }
        let (_, comp) = c.as_mut().unwrap();
        if plain.len() > 3 * PROBE {
            let mid = plain.len() / 2;
            let sample = &plain[mid..mid + PROBE];
            out.reserve(zstd::zstd_safe::compress_bound(PROBE));
            match comp.compress_to_buffer(sample, out) {
                Ok(n) if n + PROBE / 32 < PROBE => out.clear(),
                _ => {
                    out.clear();
                    return Encoding::Raw;
                }
            }
        }
        out.reserve(zstd::zstd_safe::compress_bound(plain.len()));
        match comp.compress_to_buffer(plain, out) {
            Ok(n) if n + plain.len() / 32 < plain.len() => Encoding::Zstd,
            _ => {
                out.clear();
                Encoding::Raw
            }
        }
    })
}

const PROBE: usize = 4 << 10;

/// Decodes stored bytes back to plain bytes and checks the length.
pub fn decode(encoding: Encoding, stored: Vec<u8>, plain_len: usize) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Raw => {
            if stored.len() != plain_len {
                return Err(format!("stored {} bytes, expected {plain_len}", stored.len()));
            }
            Ok(stored)
        }
        Encoding::Zstd => DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
            }
            let mut out = Vec::with_capacity(plain_len);
            d.as_mut().unwrap().decompress_to_buffer(&stored, &mut out).map_err(|e| format!("zstd: {e}"))?;
            if out.len() != plain_len {
                return Err(format!("decompressed {} bytes, expected {plain_len}", out.len()));
            }
            Ok(out)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_crc() {
        let h = RecordHeader {
            kind: BlobKind::Tree,
            encoding: Encoding::Zstd,
            plain_len: 1234,
            stored_len: 99,
            id: BlobId::of(b"x"),
            encrypted: true,
        };
        let mut b = h.encode();
        assert_eq!(RecordHeader::decode(&b).unwrap(), h);
        b[5] ^= 1;
        assert!(RecordHeader::decode(&b).unwrap_err().contains("checksum"));
        b[5] ^= 1;
        b[2] = 2;
        let crc = crc32fast::hash(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        assert!(RecordHeader::decode(&b).unwrap_err().contains("unknown record flags"));
    }

    #[test]
    fn encode_keeps_incompressible_raw() {
        let text = b"hello hello hello hello hello hello hello hello hello hello hello hello".repeat(10);
        let (e, stored) = encode(&text, 3);
        assert_eq!(e, Encoding::Zstd);
        assert_eq!(decode(e, stored.into_owned(), text.len()).unwrap(), text);
        let mut noise = vec![0u8; 4096];
        blake3::Hasher::new().finalize_xof().fill(&mut noise);
        let (e, stored) = encode(&noise, 3);
        assert_eq!(e, Encoding::Raw);
        assert_eq!(&stored[..], &noise[..]);
        // A large mostly-random input is caught by the probe.
        let mut big = vec![0u8; 1 << 20];
        blake3::Hasher::new().finalize_xof().fill(&mut big);
        assert_eq!(encode(&big, 1).0, Encoding::Raw);
    }

    #[test]
    fn decode_rejects_wrong_length() {
        assert!(decode(Encoding::Raw, vec![1, 2, 3], 4).is_err());
        assert!(decode(Encoding::Zstd, vec![1, 2, 3], 4).is_err());
    }
}
