//! Encryption at rest (optional, per datastore; docs/format.md).
//!
//! A random 32-byte master key is stored only wrapped: once per key slot
//! (a passphrase through argon2id, or a key file), so adding a passphrase
//! or retiring one re-wraps the master key and never touches packs. From
//! the master key BLAKE3 `derive_key` gives two subkeys: one keys the blob
//! id hash (ids reveal nothing about content to whoever holds the disk, yet
//! identical plain bytes still get one id within the datastore, so dedup
//! works) and one is the XChaCha20-Poly1305 key that seals every record's
//! stored bytes and the snapshot documents in the index.

use crate::error::{Result, StoreError};
use crate::id::BlobId;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, Zeroizing};

/// The only cipher written and read: `encryption.cipher` in config.json.
pub const CIPHER: &str = "xchacha20poly1305";
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes an encrypted record's stored bytes have beyond the ciphertext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const CTX_ID_KEY: &str = "lifeboat 2025-01 blob id key v1";
const CTX_AEAD_KEY: &str = "lifeboat 2025-01 blob aead key v1";
const CTX_KEYFILE: &str = "lifeboat 2025-01 key file slot key v1";
/// Key files larger than this are refused (a key file is a secret, not a
/// document: 32 random bytes are plenty).
const KEYFILE_MAX: u64 = 1 << 20;

/// Argon2id parameters for new passphrase slots: 64 MiB, 3 passes, 1 lane.
pub const ARGON2_M_KIB: u32 = 64 * 1024;
pub const ARGON2_T: u32 = 3;
pub const ARGON2_P: u32 = 1;

/// What unlocks an encrypted datastore.
#[derive(Clone)]
pub enum KeySource {
    /// A passphrase (from `--password-file` or `LIFEBOAT_PASSWORD`).
    Passphrase(Zeroizing<String>),
    /// A file holding a raw key (`--key-file`).
    KeyFile(PathBuf),
}

impl KeySource {
    /// A passphrase key source.
    pub fn passphrase(s: impl Into<String>) -> Self {
        KeySource::Passphrase(Zeroizing::new(s.into()))
    }
    fn kind(&self) -> SlotKind {
        match self {
            KeySource::Passphrase(_) => SlotKind::Passphrase,
            KeySource::KeyFile(_) => SlotKind::Keyfile,
        }
    }
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Passphrase(_) => f.write_str("Passphrase(..)"),
            KeySource::KeyFile(p) => write!(f, "KeyFile({})", p.display()),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    Passphrase,
    Keyfile,
}

/// How a slot's key is derived from its passphrase or key file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "algorithm", rename_all = "kebab-case")]
pub enum Kdf {
    /// argon2id (version 0x13), memory in KiB.
    Argon2id { m_kib: u32, t: u32, p: u32, salt: String },
    /// BLAKE3 `derive_key` over salt || key file contents.
    Blake3 { salt: String },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KeySlot {
    pub id: String,
    pub kind: SlotKind,
    pub created: chrono::DateTime<chrono::Utc>,
    pub kdf: Kdf,
    /// XChaCha20-Poly1305 nonce (hex) of the wrapped master key.
    pub nonce: String,
    /// The master key sealed with the slot key (hex, 32 + 16 bytes).
    pub wrapped_master: String,
}

/// The `encryption` section of config.json.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EncryptionConfig {
    pub cipher: String,
    pub slots: Vec<KeySlot>,
}

/// The datastore's master key; zeroed when dropped.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn random() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(&mut k[..]).expect("the OS random source works");
        MasterKey(k)
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the OS random source works");
    b
}

fn unhex<const N: usize>(s: &str, what: &str) -> std::result::Result<[u8; N], String> {
    let mut b = [0u8; N];
    hex::decode_to_slice(s, &mut b).map_err(|_| format!("{what}: expected {} hex digits", 2 * N))?;
    Ok(b)
}

fn read_keyfile(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let meta = std::fs::metadata(path).map_err(|e| StoreError::io("read key file", path, e))?;
    if meta.len() > KEYFILE_MAX {
        return Err(StoreError::BadKey { reason: format!("key file {} is larger than {} bytes", path.display(), KEYFILE_MAX) });
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| StoreError::io("read key file", path, e))?);
    if bytes.is_empty() {
        return Err(StoreError::BadKey { reason: format!("key file {} is empty", path.display()) });
    }
    Ok(bytes)
}

/// The slot key for `kdf` from `key` (expensive for argon2id).
fn slot_key(kdf: &Kdf, key: &KeySource) -> Result<Zeroizing<[u8; 32]>> {
    let bad = |reason: String| StoreError::BadKey { reason };
    let mut out = Zeroizing::new([0u8; 32]);
    match (kdf, key) {
        (Kdf::Argon2id { m_kib, t, p, salt }, KeySource::Passphrase(pw)) => {
            let salt = hex::decode(salt).map_err(|_| bad("key slot salt is not hex".into()))?;
            let params = argon2::Params::new(*m_kib, *t, *p, Some(32)).map_err(|e| bad(format!("argon2 parameters: {e}")))?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params).hash_password_into(pw.as_bytes(), &salt, &mut out[..]).map_err(|e| bad(format!("argon2: {e}")))?;
        }
        (Kdf::Blake3 { salt }, KeySource::KeyFile(path)) => {
            let salt = hex::decode(salt).map_err(|_| bad("key slot salt is not hex".into()))?;
            let contents = read_keyfile(path)?;
            let mut h = blake3::Hasher::new_derive_key(CTX_KEYFILE);
            h.update(&salt);
            h.update(&contents);
            out.copy_from_slice(h.finalize().as_bytes());
        }
        _ => return Err(bad("key slot kind does not match the key given".into())),
    }
    Ok(out)
}

fn wrap_aad(datastore_id: &str, slot_id: &str) -> Vec<u8> {
    format!("lifeboat master key|{datastore_id}|{slot_id}").into_bytes()
}

/// A new slot holding `master`, unlocked by `key`.
pub fn new_slot(datastore_id: &str, master: &MasterKey, key: &KeySource) -> Result<KeySlot> {
    let id = hex::encode(random::<4>());
    let salt = hex::encode(random::<16>());
    let kdf = match key {
        KeySource::Passphrase(pw) => {
            if pw.is_empty() {
                return Err(StoreError::BadKey { reason: "the passphrase is empty".into() });
            }
            Kdf::Argon2id { m_kib: ARGON2_M_KIB, t: ARGON2_T, p: ARGON2_P, salt }
        }
        KeySource::KeyFile(_) => Kdf::Blake3 { salt },
    };
    let k = slot_key(&kdf, key)?;
    let nonce = random::<NONCE_LEN>();
    let aead = XChaCha20Poly1305::new((&*k).into());
    let wrapped = aead.encrypt(XNonce::from_slice(&nonce), Payload { msg: &master.0[..], aad: &wrap_aad(datastore_id, &id) }).expect("encryption of 32 bytes cannot fail");
    Ok(KeySlot { id, kind: key.kind(), created: chrono::Utc::now(), kdf, nonce: hex::encode(nonce), wrapped_master: hex::encode(wrapped) })
}

/// Unwraps the master key with `key`: tries each slot of the key's kind.
/// Returns the key and the id of the slot that opened.
pub fn unlock(root: &Path, datastore_id: &str, enc: &EncryptionConfig, key: &KeySource) -> Result<(MasterKey, String)> {
    for slot in enc.slots.iter().filter(|s| s.kind == key.kind()) {
        let k = slot_key(&slot.kdf, key)?;
        let bad = |m: String| StoreError::BadConfig { path: root.join(crate::config::CONFIG_FILE), reason: format!("key slot {}: {m}", slot.id) };
        let nonce = unhex::<NONCE_LEN>(&slot.nonce, "nonce").map_err(bad)?;
        let wrapped = hex::decode(&slot.wrapped_master).map_err(|_| bad("wrapped_master is not hex".into()))?;
        let aead = XChaCha20Poly1305::new((&*k).into());
        if let Ok(mut m) = aead.decrypt(XNonce::from_slice(&nonce), Payload { msg: &wrapped, aad: &wrap_aad(datastore_id, &slot.id) }) {
            if m.len() == 32 {
                let mut mk = Zeroizing::new([0u8; 32]);
                mk.copy_from_slice(&m);
                m.zeroize();
                return Ok((MasterKey(mk), slot.id.clone()));
            }
            m.zeroize();
        }
    }
    Err(StoreError::WrongKey { path: root.to_path_buf() })
}

/// The keys of an unlocked datastore.
pub struct Crypto {
    id_key: Zeroizing<[u8; 32]>,
    aead: XChaCha20Poly1305,
}

impl Crypto {
    pub fn new(master: &MasterKey) -> Self {
        let id_key = Zeroizing::new(blake3::derive_key(CTX_ID_KEY, &master.0[..]));
        let mut ak = Zeroizing::new(blake3::derive_key(CTX_AEAD_KEY, &master.0[..]));
        let aead = XChaCha20Poly1305::new((&*ak).into());
        ak.zeroize();
        Crypto { id_key, aead }
    }

    /// A blob's id: BLAKE3 keyed with the datastore's id key.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id_key, data).as_bytes())
    }

    /// nonce || ciphertext || tag, with `aad` authenticated.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let nonce = random::<NONCE_LEN>();
        let ct = self.aead.encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad }).expect("XChaCha20-Poly1305 encryption");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Inverse of `seal`; any change to the bytes or the `aad` fails.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> std::result::Result<Vec<u8>, String> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err("authentication failed (sealed bytes too short)".into());
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.aead.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad }).map_err(|_| "authentication failed".to_string())
    }

    /// A snapshot document as kept in the index's `snapshots` column.
    pub fn seal_doc(&self, id: &BlobId, doc: &[u8]) -> Vec<u8> {
        self.seal(&doc_aad(id), doc)
    }

    pub fn open_doc(&self, id: &BlobId, sealed: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.open(&doc_aad(id), sealed)
    }
}

fn doc_aad(id: &BlobId) -> Vec<u8> {
    let mut a = b"lifeboat snapshot doc|".to_vec();
    a.extend_from_slice(&id.0);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap_passphrase_slot(ds_id: &str, m: &MasterKey, pw: &str) -> KeySlot {
        // Real parameters are slow in debug builds; the code path is the same.
        let key = KeySource::passphrase(pw);
        let kdf = Kdf::Argon2id { m_kib: 64, t: 1, p: 1, salt: hex::encode([7u8; 16]) };
        let k = slot_key(&kdf, &key).unwrap();
        let id = "0000aaaa".to_string();
        let nonce = random::<NONCE_LEN>();
        let wrapped = XChaCha20Poly1305::new((&*k).into()).encrypt(XNonce::from_slice(&nonce), Payload { msg: &m.0[..], aad: &wrap_aad(ds_id, &id) }).unwrap();
        KeySlot { id, kind: SlotKind::Passphrase, created: chrono::Utc::now(), kdf, nonce: hex::encode(nonce), wrapped_master: hex::encode(wrapped) }
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let c = Crypto::new(&MasterKey::random());
        let s = c.seal(b"aad", b"hello world");
        assert_eq!(s.len(), 11 + SEAL_OVERHEAD);
        assert_eq!(c.open(b"aad", &s).unwrap(), b"hello world");
        assert!(c.open(b"other", &s).unwrap_err().contains("authentication failed"));
        let mut t = s.clone();
        t[30] ^= 1;
        assert!(c.open(b"aad", &t).unwrap_err().contains("authentication failed"));
        assert!(c.open(b"aad", &s[..10]).is_err());
        // Another master key cannot open it.
        let c2 = Crypto::new(&MasterKey::random());
        assert!(c2.open(b"aad", &s).is_err());
    }

    #[test]
    fn keyed_ids_are_stable_per_key_and_differ_from_plain() {
        let m = MasterKey::random();
        let a = Crypto::new(&m);
        let b = Crypto::new(&MasterKey(m.0.clone()));
        assert_eq!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), BlobId::of(b"x"));
        assert_ne!(a.blob_id(b"x"), Crypto::new(&MasterKey::random()).blob_id(b"x"));
    }

    #[test]
    fn slots_unlock_with_the_right_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let m = MasterKey::random();
        let kf = dir.path().join("key");
        std::fs::write(&kf, b"0123456789abcdef0123456789abcdef").unwrap();
        let enc = EncryptionConfig { cipher: CIPHER.into(), slots: vec![cheap_passphrase_slot("ds1", &m, "right"), new_slot("ds1", &m, &KeySource::KeyFile(kf.clone())).unwrap()] };
        let (got, slot) = unlock(dir.path(), "ds1", &enc, &KeySource::passphrase("right")).unwrap();
        assert_eq!(*got.0, *m.0);
        assert_eq!(slot, "0000aaaa");
        let (got, slot) = unlock(dir.path(), "ds1", &enc, &KeySource::KeyFile(kf.clone())).unwrap();
        assert_eq!(*got.0, *m.0);
        assert_eq!(slot, enc.slots[1].id);
        assert!(matches!(unlock(dir.path(), "ds1", &enc, &KeySource::passphrase("wrong")), Err(StoreError::WrongKey { .. })));
        // The wrap is bound to the datastore id.
        assert!(matches!(unlock(dir.path(), "ds2", &enc, &KeySource::passphrase("right")), Err(StoreError::WrongKey { .. })));
        std::fs::write(&kf, b"another key file").unwrap();
        assert!(matches!(unlock(dir.path(), "ds1", &enc, &KeySource::KeyFile(kf)), Err(StoreError::WrongKey { .. })));
        assert!(new_slot("ds1", &m, &KeySource::passphrase("")).is_err());
    }
}
