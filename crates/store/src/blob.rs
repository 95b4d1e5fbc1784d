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
    /// Metadata beside a backup (a VM's `vm.json`, say).
    Metadata = 6,
    /// A forget record: snapshots removed by `forget`, so an index rebuilt
    /// from the packs does not bring them back.
    Forget = 7,
}

impl BlobKind {
    /// The kind a record header's byte names, if any.
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
    /// Stored as it is.
    Raw = 0,
    /// zstd-compressed.
    Zstd = 1,
    /// An LZ4 block (no frame; the plain length is in the record header).
    Lz4 = 2,
}

impl Encoding {
    /// The encoding a record header's byte names, if any.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Encoding::Raw),
            1 => Some(Encoding::Zstd),
            2 => Some(Encoding::Lz4),
            _ => None,
        }
    }
}

/// How a datastore compresses new blobs: its config's `compression`, and
/// for zstd its `zstd_level`. Whatever wrote a record, its header says how
/// to read it, so a datastore may hold records of all kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Store everything raw.
    None,
    /// LZ4: about 1.6x zstd level 1's speed on text-like data (and 3x its
    /// decompression speed) for about a quarter more stored bytes of it.
    Lz4,
    /// zstd at this level.
    Zstd(i32),
}

/// Bytes of a record header in front of each blob's stored bytes.
pub const RECORD_HEADER_LEN: usize = 48;

/// Why a record's header or stored bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than a header.
    #[error("record header truncated ({0} of {RECORD_HEADER_LEN} bytes)")]
    HeaderTruncated(usize),
    /// The header's CRC does not match it.
    #[error("record header checksum mismatch")]
    HeaderChecksum,
    /// A kind byte this version does not know.
    #[error("unknown blob kind {0}")]
    UnknownKind(u8),
    /// An encoding byte this version does not know.
    #[error("unknown encoding {0}")]
    UnknownEncoding(u8),
    /// Flag bits this version does not know (header bytes 3 and 2).
    #[error("unknown record flags {0:#06x}")]
    UnknownFlags(u16),
    /// The bytes decode to another length than the header says.
    #[error("{what} {got} bytes, expected {expected}")]
    Length {
        /// "stored" (raw) or "decompressed".
        what: &'static str,
        /// Bytes there are.
        got: usize,
        /// Bytes the header promises.
        expected: usize,
    },
    /// A plain record in an encrypted datastore.
    #[error("record is not encrypted, but the datastore is")]
    NotSealed,
    /// A sealed record in a datastore without a key.
    #[error("record is encrypted, but the datastore is not")]
    Sealed,
    /// The sealed bytes do not open with the datastore's key.
    #[error("{0}")]
    Authentication(String),
    /// The plain bytes hash to another id than the header's.
    #[error("content does not match its hash")]
    HashMismatch,
    /// The compressed bytes are damaged.
    #[error("{codec}: {reason}")]
    Damaged {
        /// "zstd" or "lz4".
        codec: &'static str,
        /// The decompressor's words.
        reason: String,
    },
}

/// The header in front of every blob in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// What the blob is.
    pub kind: BlobKind,
    /// How the stored bytes are compressed.
    pub encoding: Encoding,
    /// Bytes of the blob itself.
    pub plain_len: u32,
    /// Bytes that follow the header in the pack.
    pub stored_len: u32,
    /// The BLAKE3 hash of the plain bytes (keyed in an encrypted datastore).
    pub id: BlobId,
    /// The stored bytes are sealed (encrypted datastores, `crypto.rs`).
    pub encrypted: bool,
}

/// Record flag bit 0 (header byte 2): stored bytes are sealed.
pub const FLAG_ENCRYPTED: u8 = 1;

impl RecordHeader {
    /// The header's bytes as they go into a pack.
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

    /// Parses and checks a header (its first [`RECORD_HEADER_LEN`] bytes).
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        if b.len() < RECORD_HEADER_LEN {
            return Err(RecordError::HeaderTruncated(b.len()));
        }
        let crc = u32::from_le_bytes(b[44..48].try_into().unwrap());
        if crc32fast::hash(&b[..44]) != crc {
            return Err(RecordError::HeaderChecksum);
        }
        let kind = BlobKind::from_u8(b[0]).ok_or(RecordError::UnknownKind(b[0]))?;
        let encoding = Encoding::from_u8(b[1]).ok_or(RecordError::UnknownEncoding(b[1]))?;
        if b[2] & !FLAG_ENCRYPTED != 0 || b[3] != 0 {
            return Err(RecordError::UnknownFlags(u16::from_le_bytes([b[2], b[3]])));
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

/// Compresses `plain` with `codec`, keeping the result only when it saves
/// at least 1/32 of the size; incompressible data is stored raw so reading
/// it back costs nothing. Inputs over 12 KiB are probed first: when a
/// 4 KiB sample does not compress, the whole is stored raw without
/// spending a full compression pass on it (a third of a typical file
/// server is already-compressed media and archives).
pub fn encode(plain: &[u8], codec: Codec) -> (Encoding, Cow<'_, [u8]>) {
    let mut out = Vec::new();
    match encode_into(plain, codec, &mut out) {
        Encoding::Raw => (Encoding::Raw, Cow::Borrowed(plain)),
        e => (e, Cow::Owned(out)),
    }
}

/// `encode` into a caller's buffer: unless the result is `Encoding::Raw`
/// the stored bytes are `out`; raw, they are `plain` itself. A backup
/// compresses millions of blobs; reusing one buffer per thread keeps the
/// allocator from mapping and unmapping (and the kernel from faulting in
/// and shooting down) a fresh output buffer for each of them.
pub fn encode_into(plain: &[u8], codec: Codec, out: &mut Vec<u8>) -> Encoding {
    out.clear();
    if plain.len() < 64 || codec == Codec::None {
        return Encoding::Raw;
    }
    let worth_it = |stored: usize, plain: usize| stored + plain / 32 < plain;
    if plain.len() > 3 * PROBE {
        let mid = plain.len() / 2;
        let sample = &plain[mid..mid + PROBE];
        let probed = compress(sample, codec, out);
        out.clear();
        if !probed.is_some_and(|n| worth_it(n, PROBE)) {
            return Encoding::Raw;
        }
    }
    match compress(plain, codec, out) {
        Some(n) if worth_it(n, plain.len()) => match codec {
            Codec::Lz4 => Encoding::Lz4,
            _ => Encoding::Zstd,
        },
        _ => {
            out.clear();
            Encoding::Raw
        }
    }
}

/// Appends `plain` compressed by `codec` to `out` (empty); its length, or
/// None if the compressor failed.
fn compress(plain: &[u8], codec: Codec, out: &mut Vec<u8>) -> Option<usize> {
    match codec {
        Codec::None => None,
        Codec::Lz4 => {
            use lz4::liblz4::{LZ4_compressBound, LZ4_compress_default};
            let n = i32::try_from(plain.len()).ok()?;
            // SAFETY: a pure function of its argument.
            let bound = unsafe { LZ4_compressBound(n) };
            if bound <= 0 {
                return None;
            }
            // Into spare capacity: zero-filling the output first (what a
            // safe `&mut [u8]` needs) cost more than a tenth of LZ4's time.
            out.clear();
            out.reserve(bound as usize);
            // SAFETY: `out` has room for `bound` bytes from its start; LZ4
            // writes at most that many and returns how many it wrote (0 on
            // failure), which are then initialized.
            let written = unsafe { LZ4_compress_default(plain.as_ptr().cast(), out.as_mut_ptr().cast(), n, bound) };
            if written <= 0 {
                return None;
            }
            unsafe { out.set_len(written as usize) };
            Some(written as usize)
        }
        Codec::Zstd(level) => COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().map(|(l, _)| *l) != Some(level) {
                *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
            }
            let (_, comp) = c.as_mut().unwrap();
            out.reserve(zstd::zstd_safe::compress_bound(plain.len()));
            comp.compress_to_buffer(plain, out).ok()
        }),
    }
}

const PROBE: usize = 4 << 10;

/// Decodes stored bytes back to plain bytes and checks the length.
pub fn decode(encoding: Encoding, stored: Vec<u8>, plain_len: usize) -> Result<Vec<u8>, RecordError> {
    match encoding {
        Encoding::Raw => {
            if stored.len() != plain_len {
                return Err(RecordError::Length { what: "stored", got: stored.len(), expected: plain_len });
            }
            Ok(stored)
        }
        _ => decode_slice(encoding, &stored, plain_len).map(Cow::into_owned),
    }
}

/// `decode` of borrowed bytes: raw bytes are handed back in place.
pub fn decode_slice(encoding: Encoding, stored: &[u8], plain_len: usize) -> Result<Cow<'_, [u8]>, RecordError> {
    let zstd_err = |e: std::io::Error| RecordError::Damaged { codec: "zstd", reason: e.to_string() };
    let lz4_err = |reason: String| RecordError::Damaged { codec: "lz4", reason };
    let out = match encoding {
        Encoding::Raw if stored.len() == plain_len => return Ok(Cow::Borrowed(stored)),
        Encoding::Raw => return Err(RecordError::Length { what: "stored", got: stored.len(), expected: plain_len }),
        Encoding::Zstd => DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new().map_err(zstd_err)?);
            }
            let mut out = Vec::with_capacity(plain_len);
            d.as_mut().unwrap().decompress_to_buffer(stored, &mut out).map_err(zstd_err)?;
            Ok::<_, RecordError>(out)
        })?,
        Encoding::Lz4 => {
            use lz4::liblz4::LZ4_decompress_safe;
            let want = i32::try_from(plain_len).map_err(|_| lz4_err(format!("plain length {plain_len} out of range")))?;
            let have = i32::try_from(stored.len()).map_err(|_| lz4_err(format!("block of {} bytes out of range", stored.len())))?;
            let mut out: Vec<u8> = Vec::with_capacity(plain_len);
            // SAFETY: LZ4_decompress_safe reads `have` bytes of `stored`,
            // writes at most `want` bytes into `out`'s spare capacity and
            // returns how many (negative for a damaged block); those are
            // then initialized. It never reads or writes out of bounds,
            // whatever the input.
            let n = unsafe { LZ4_decompress_safe(stored.as_ptr().cast(), out.as_mut_ptr().cast(), have, want) };
            if n < 0 {
                return Err(lz4_err("damaged block".into()));
            }
            unsafe { out.set_len(n as usize) };
            // The block must fill exactly `plain_len` bytes: one that
            // decodes shorter is an error (below), not a short blob.
            out
        }
    };
    if out.len() != plain_len {
        return Err(RecordError::Length { what: "decompressed", got: out.len(), expected: plain_len });
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_crc() {
        let h = RecordHeader { kind: BlobKind::Tree, encoding: Encoding::Zstd, plain_len: 1234, stored_len: 99, id: BlobId::of(b"x"), encrypted: true };
        let mut b = h.encode();
        assert_eq!(RecordHeader::decode(&b).unwrap(), h);
        b[5] ^= 1;
        assert_eq!(RecordHeader::decode(&b).unwrap_err(), RecordError::HeaderChecksum);
        b[5] ^= 1;
        b[2] = 2;
        let crc = crc32fast::hash(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(RecordHeader::decode(&b).unwrap_err(), RecordError::UnknownFlags(_)));
    }

    #[test]
    fn encode_keeps_incompressible_raw() {
        for codec in [Codec::Zstd(3), Codec::Zstd(-1), Codec::Lz4] {
            let text = b"hello hello hello hello hello hello hello hello hello hello hello hello".repeat(10);
            let (e, stored) = encode(&text, codec);
            assert_eq!(e, if codec == Codec::Lz4 { Encoding::Lz4 } else { Encoding::Zstd });
            assert!(stored.len() < text.len() / 4);
            assert_eq!(decode(e, stored.into_owned(), text.len()).unwrap(), text);
            let mut noise = vec![0u8; 4096];
            blake3::Hasher::new().finalize_xof().fill(&mut noise);
            let (e, stored) = encode(&noise, codec);
            assert_eq!(e, Encoding::Raw);
            assert_eq!(&stored[..], &noise[..]);
            // A large mostly-random input is caught by the probe.
            let mut big = vec![0u8; 1 << 20];
            blake3::Hasher::new().finalize_xof().fill(&mut big);
            big[..100_000].fill(b'a');
            assert_eq!(encode(&big, codec).0, Encoding::Raw);
        }
        assert_eq!(encode(&b"a".repeat(1000), Codec::None).0, Encoding::Raw);
    }

    #[test]
    fn decode_rejects_wrong_length_and_damage() {
        assert!(decode(Encoding::Raw, vec![1, 2, 3], 4).is_err());
        assert!(decode(Encoding::Zstd, vec![1, 2, 3], 4).is_err());
        assert!(decode(Encoding::Lz4, vec![1, 2, 3], 4).is_err());
        let text: Vec<u8> = (0..20_000u32).flat_map(|i| format!("line {} of the log\n", i % 97).into_bytes()).collect();
        for codec in [Codec::Zstd(1), Codec::Lz4] {
            let (e, stored) = encode(&text, codec);
            let stored = stored.into_owned();
            // One byte short or long of the recorded length is refused.
            assert!(decode(e, stored.clone(), text.len() - 1).is_err(), "{codec:?}");
            assert!(decode(e, stored.clone(), text.len() + 1).is_err(), "{codec:?}");
            // A truncated block never decodes to the full length.
            assert!(decode(e, stored[..stored.len() - 8].to_vec(), text.len()).is_err(), "{codec:?}");
            assert_eq!(decode_slice(e, &stored, text.len()).unwrap(), &text[..]);
        }
    }
}
