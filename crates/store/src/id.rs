use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// BLAKE3 hash of a blob's plain bytes: the blob's name everywhere.
/// Hex in JSON, 32 raw bytes in binary encodings.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 32]);

impl Serialize for BlobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            BlobId::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
        } else {
            Ok(BlobId(<[u8; 32]>::deserialize(d)?))
        }
    }
}

impl BlobId {
    /// The id of these plain bytes (unkeyed BLAKE3).
    pub fn of(data: &[u8]) -> Self {
        BlobId(*blake3::hash(data).as_bytes())
    }
    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(BlobId(b))
    }
    /// The first 8 hex digits, as shown to people.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", self.short())
    }
}
impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Random name of a pack file, chosen by its writer so that concurrent
/// writers never collide.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 16]);

impl PackId {
    /// A fresh random id for a new pack.
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        getrandom::getrandom(&mut b).expect("the OS random source works");
        PackId(b)
    }
    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses 32 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut b = [0u8; 16];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(PackId(b))
    }
}
impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackId({})", self.to_hex())
    }
}
impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
