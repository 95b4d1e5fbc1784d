//! One journal record: a 32-byte header (magic, flags, time, offset,
//! length, CRC-32 of header and data) followed by the written bytes
//! (none for a zeroed range). Little endian. A segment file starts with
//! a 16-byte header naming its number, so a segment moved to the wrong
//! name is noticed.

/// Bytes of a record header.
pub const HEADER: usize = 32;
/// Bytes of a segment file's header.
pub const SEGMENT_HEADER: usize = 16;
const MAGIC: u32 = 0x314a_424c; // "LBJ1"
const SEGMENT_MAGIC: &[u8; 8] = b"LBJSEG01";
/// The range reads as zeroes; no data follows.
pub const FLAG_ZERO: u8 = 1;

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub flags: u8,
    pub time: u64,
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

impl Header {
    /// Bytes of data after the header.
    pub fn data_len(&self) -> usize {
        if self.flags & FLAG_ZERO != 0 {
            0
        } else {
            self.len as usize
        }
    }
}

fn crc(head: &[u8], data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&head[..28]);
    h.update(data);
    h.finalize()
}

/// The whole record: header then data.
pub fn encode(flags: u8, time: u64, offset: u64, len: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + data.len());
    v.extend_from_slice(&MAGIC.to_le_bytes());
    v.extend_from_slice(&[flags, 0, 0, 0]);
    v.extend_from_slice(&time.to_le_bytes());
    v.extend_from_slice(&offset.to_le_bytes());
    v.extend_from_slice(&len.to_le_bytes());
    let c = crc(&v, data);
    v.extend_from_slice(&c.to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// The header in `b` (at least [`HEADER`] bytes), or why it is not one.
pub fn decode_header(b: &[u8]) -> Result<Header, String> {
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    if b.len() < HEADER {
        return Err("truncated header".into());
    }
    if u32_at(0) != MAGIC {
        return Err("no record magic".into());
    }
    let h = Header { flags: b[4], time: u64_at(8), offset: u64_at(16), len: u32_at(24), crc: u32_at(28) };
    if h.flags & !FLAG_ZERO != 0 {
        return Err(format!("unknown flags {:#x}", h.flags));
    }
    Ok(h)
}

/// Whether `data` is what header `h` (as the bytes `head`) promises.
pub fn check(head: &[u8], h: &Header, data: &[u8]) -> bool {
    crc(head, data) == h.crc
}

/// A segment file's header.
pub fn segment_header(n: u32) -> [u8; SEGMENT_HEADER] {
    let mut b = [0u8; SEGMENT_HEADER];
    b[..8].copy_from_slice(SEGMENT_MAGIC);
    b[8..12].copy_from_slice(&n.to_le_bytes());
    b
}

/// The segment number in a segment file's header.
pub fn decode_segment_header(b: &[u8]) -> Option<u32> {
    (b.len() >= SEGMENT_HEADER && &b[..8] == SEGMENT_MAGIC).then(|| u32::from_le_bytes(b[8..12].try_into().unwrap()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_seen() {
        let r = encode(0, 7, 4096, 5, b"hello");
        let h = decode_header(&r).unwrap();
        assert_eq!((h.time, h.offset, h.len, h.data_len()), (7, 4096, 5, 5));
        assert!(check(&r[..HEADER], &h, &r[HEADER..]));
        let mut bad = r.clone();
        bad[HEADER + 1] ^= 1;
        assert!(!check(&bad[..HEADER], &h, &bad[HEADER..]));
        let z = encode(FLAG_ZERO, 8, 0, 1 << 20, &[]);
        assert_eq!(z.len(), HEADER);
        assert_eq!(decode_header(&z).unwrap().data_len(), 0);
        assert!(decode_header(&[0u8; HEADER]).is_err());
        assert!(decode_header(&r[..10]).is_err());
        assert_eq!(decode_segment_header(&segment_header(42)), Some(42));
        assert_eq!(decode_segment_header(b"LBJSEG02\0\0\0\0\0\0\0\0"), None);
    }
}
