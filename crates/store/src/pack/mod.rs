//! Pack files: many blobs appended into one file, written under
//! `partial/` and moved into `packs/` only once complete and fsynced.
//! A sealed pack is never modified again.
//!
//! - `format`: the on-disk layout (pack header, records) and reading it.
//! - `direct_io`: the process's one pack writer thread, fed aligned
//!   buffers written with O_DIRECT.
//! - `writer`: a pack's life from `partial/` to `packs/`: append, seal,
//!   and storing a pack built elsewhere.

mod direct_io;
mod format;
mod writer;

pub use direct_io::write_backlog;
pub use format::{read_record, read_record_into, PackScanner, PACK_HEADER_LEN, PACK_MAGIC};
pub use writer::{seal_all, store_built, PackWriter, SealedPack, WrittenPack};

use crate::id::PackId;
use std::path::{Path, PathBuf};

/// Where pack `id` lives under `root` (`packs/<2 hex>/<id>.pack`).
pub fn pack_path(root: &Path, id: &PackId) -> PathBuf {
    let h = id.to_hex();
    root.join("packs").join(&h[..2]).join(format!("{h}.pack"))
}

pub fn partial_dir(root: &Path) -> PathBuf {
    root.join("partial")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{BlobKind, Encoding, RecordHeader, RECORD_HEADER_LEN};
    use crate::error::StoreError;
    use crate::id::BlobId;
    use std::fs::File;

    fn root() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(partial_dir(t.path())).unwrap();
        t
    }

    fn record(data: &[u8]) -> RecordHeader {
        RecordHeader { kind: BlobKind::SmallFile, encoding: Encoding::Raw, plain_len: data.len() as u32, stored_len: data.len() as u32, id: BlobId::of(data), encrypted: false }
    }

    /// A sealed pack of these records under `root`.
    fn sealed(root: &Path, records: &[&[u8]]) -> SealedPack {
        let mut w = PackWriter::create(root).unwrap();
        for r in records {
            w.append(record(r), r).unwrap();
        }
        w.seal(root).unwrap()
    }

    #[test]
    fn sealed_pack_reads_back_in_order_and_by_location() {
        let t = root();
        // One record larger than a write buffer, so it spans hand-offs.
        let big = vec![7u8; (5 << 20) + 13];
        let records: Vec<&[u8]> = vec![b"first", &big, b"", b"last"];
        let p = sealed(t.path(), &records);
        let path = pack_path(t.path(), &p.id);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), p.len);
        assert!(std::fs::read_dir(partial_dir(t.path())).unwrap().next().is_none(), "nothing left in partial/");
        let mut sc = PackScanner::open(&path).unwrap();
        for (i, r) in records.iter().enumerate() {
            let (off, h, data) = sc.next_record().unwrap().unwrap();
            let (id, loc) = &p.blobs[i];
            assert_eq!((off, h.id, &data[..]), (loc.offset, *id, *r));
            let file = File::open(&path).unwrap();
            let (h2, data2) = read_record(&file, &path, loc).unwrap();
            assert_eq!((h2, &data2[..]), (h, *r));
        }
        assert!(sc.next_record().unwrap().is_none());
    }

    #[test]
    fn truncated_and_foreign_packs_are_named_corrupt() {
        let t = root();
        let p = sealed(t.path(), &[b"kept", b"cut short"]);
        let path = pack_path(t.path(), &p.id);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(p.len - 3).unwrap();
        let mut sc = PackScanner::open(&path).unwrap();
        assert_eq!(sc.next_record().unwrap().unwrap().2, b"kept");
        let err = sc.next_record().unwrap_err();
        assert!(matches!(&err, StoreError::CorruptPack { reason, .. } if reason.contains("runs past the end")), "{err}");
        let err = read_record(&File::open(&path).unwrap(), &path, &p.blobs[1].1).unwrap_err();
        assert!(matches!(&err, StoreError::CorruptPack { reason, .. } if reason.contains("truncated")), "{err}");

        std::fs::write(&path, vec![0u8; 64]).unwrap();
        let err = PackScanner::open(&path).err().unwrap();
        assert!(matches!(&err, StoreError::CorruptPack { reason, .. } if reason == "bad pack magic"), "{err}");

        // A damaged header is a checksum error, not a wrong record.
        let p = sealed(t.path(), &[b"flip"]);
        let path = pack_path(t.path(), &p.id);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[PACK_HEADER_LEN as usize + 5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = PackScanner::open(&path).unwrap().next_record().unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(bytes.len() == PACK_HEADER_LEN as usize + RECORD_HEADER_LEN + 4);
    }

    #[test]
    fn a_pack_built_elsewhere_is_stored_whole() {
        let a = root();
        let p = sealed(a.path(), &[b"one", b"two"]);
        let bytes = std::fs::read(pack_path(a.path(), &p.id)).unwrap();
        let b = root();
        let s = store_built(b.path(), p.id, &bytes, p.blobs.clone()).unwrap();
        let path = pack_path(b.path(), &p.id);
        assert_eq!((s.len, std::fs::read(&path).unwrap()), (bytes.len() as u64, bytes));
        assert_eq!(read_record(&File::open(&path).unwrap(), &path, &s.blobs[1].1).unwrap().1, b"two");
    }

    #[test]
    fn a_discarded_pack_leaves_nothing() {
        let t = root();
        let mut w = PackWriter::create(t.path()).unwrap();
        w.append(record(b"x"), b"x").unwrap();
        w.discard();
        assert!(std::fs::read_dir(partial_dir(t.path())).unwrap().next().is_none());
        assert!(!t.path().join("packs").exists() || std::fs::read_dir(t.path().join("packs")).unwrap().next().is_none());
    }
}
