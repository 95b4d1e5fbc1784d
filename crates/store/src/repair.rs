//! `datastore repair`: rebuilds the index from the packs alone.
//!
//! Every record in every pack is read and verified (decoded and checked
//! against its id). Good records become index entries; snapshots come
//! from snapshot blobs, less those named in forget records. A damaged
//! record is left out of the index and listed as lost, under `lost/` in
//! the index, and the snapshots that reach it are listed under
//! `damaged/` with the paths that lose data: `snapshots` shows them,
//! `check` names them, restore reports the files. A later backup of the
//! same data stores the lost blobs again and heals those snapshots.
//!
//! A record whose header is damaged hides where the next one starts: the
//! scan then looks for the next offset holding a header with a valid
//! checksum whose content verifies.
//!
//! The new index is built beside the old one and swapped in at the end;
//! writers and gc are locked out meanwhile.

use crate::blob::{BlobKind, RecordHeader, RECORD_HEADER_LEN};
use crate::datastore::Datastore;
use crate::error::{Result, StoreError};
use crate::forget::{ForgetRecord, REF_FORGET};
use crate::fsutil::{self, DatastoreLock, FileLock};
use crate::id::{BlobId, PackId};
use crate::index::{self, ref_key, BlobLocation, IndexBatch, PackInfo};
use crate::pack::{PACK_HEADER_LEN, PACK_MAGIC};
use crate::snapshot::Snapshot;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::Path;

pub const REF_LOST: &[u8] = b"lost/";
pub const REF_DAMAGED: &[u8] = b"damaged/";
const CHUNK: usize = 50_000;

/// What [`repair`] did.
#[derive(Debug, Default, Serialize)]
pub struct RepairReport {
    /// Pack files read.
    pub packs: u64,
    /// Blobs indexed from them.
    pub blobs: u64,
    /// Snapshots kept.
    pub snapshots: u64,
    /// Snapshots whose tree was lost entirely, forgotten.
    pub forgotten: u64,
    /// Pack bytes read.
    pub bytes_read: u64,
    /// Records that failed verification and have no good copy elsewhere.
    pub lost_blobs: Vec<LostBlob>,
    /// Bytes of packs skipped because they cannot be parsed at all.
    pub unreadable_packs: Vec<String>,
    /// "snapshot <id> (<time>): <path>: ..." for every path losing data.
    pub affected: Vec<String>,
    /// Where the old index was kept, if it could not be opened.
    pub old_index: Option<String>,
}

/// A blob repair could not read back.
#[derive(Debug, Clone, Serialize)]
pub struct LostBlob {
    /// Its id (hex).
    pub id: String,
    /// The pack it was in (hex).
    pub pack: String,
    /// Its record's offset in the pack.
    pub offset: u64,
    /// Why it could not be read.
    pub reason: String,
}

/// Makes sure `root` can be opened as a datastore even when its index is
/// gone or damaged, by moving a bad index aside and creating an empty
/// one. Returns where the bad index went.
pub fn prepare(root: &Path) -> Result<Option<std::path::PathBuf>> {
    crate::config::DatastoreConfig::load(root)?;
    let _lock = DatastoreLock::exclusive(root)?;
    let idx = root.join("index");
    if idx.exists() && index::IndexReader::open(&idx).is_ok() {
        return Ok(None);
    }
    let mut moved = None;
    if idx.exists() {
        let aside = root.join(format!("index.damaged-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S")));
        std::fs::rename(&idx, &aside).map_err(|e| StoreError::io("rename", &idx, e))?;
        moved = Some(aside);
    }
    let tmp = root.join("index.new");
    let _ = std::fs::remove_dir_all(&tmp);
    index::create(&tmp)?;
    std::fs::rename(&tmp, &idx).map_err(|e| StoreError::io("rename", &tmp, e))?;
    fsutil::sync_dir(root)?;
    Ok(moved)
}

/// Rebuilds the index of an opened datastore from its packs, in steps:
/// [`scan_packs`] (every record verified, the sound ones indexed into a
/// new index), [`Salvage::finish`] (snapshots less the forgotten ones,
/// `lost/` marks), [`swap_in`], then [`mark_damaged_snapshots`].
pub fn repair(ds: &Datastore, on_bytes: &dyn Fn(u64, u64)) -> Result<RepairReport> {
    let root = ds.root();
    let _gc = FileLock::take(&root.join("gc.lock"), libc::LOCK_EX)?;
    let _lock = DatastoreLock::exclusive(root)?;
    ds.remove_stale_partials()?;
    let mut rep = RepairReport::default();

    let new = root.join("index.new");
    let _ = std::fs::remove_dir_all(&new);
    index::create(&new)?;
    let salvage = scan_packs(ds, &new, &mut rep, on_bytes)?;
    index::commit(&new, salvage.finish(ds, &mut rep))?;
    swap_in(root, &new)?;
    ds.refresh_index()?;
    if !rep.lost_blobs.is_empty() || !rep.unreadable_packs.is_empty() {
        mark_damaged_snapshots(ds, &mut rep)?;
    }
    Ok(rep)
}

/// What the scan keeps of the packs' records for the new index.
#[derive(Default)]
struct Salvage {
    /// Blobs with a sound record (the first one found is indexed).
    good: HashSet<BlobId>,
    /// Blobs with only damaged records so far.
    bad: HashMap<BlobId, LostBlob>,
    /// Snapshot documents found, by id.
    snapshots: Vec<(BlobId, Vec<u8>)>,
    /// Snapshots a forget record names.
    forgotten: HashSet<BlobId>,
    /// The forget records themselves (kept as refs, as forget writes them).
    forget_records: Vec<BlobId>,
    /// Entries not yet committed.
    batch: IndexBatch,
}

impl Salvage {
    /// Takes one record of `pack`; returns whether it was a new blob.
    fn take(&mut self, pack: &PackId, record: ScannedRecord, rep: &mut RepairReport) -> bool {
        match record {
            ScannedRecord::Good { id, loc, plain } => {
                let new = self.good.insert(id);
                if new {
                    self.batch.blobs.push((id, loc));
                }
                self.bad.remove(&id);
                match (loc.kind, plain) {
                    (BlobKind::Snapshot, Some(doc)) => self.snapshots.push((id, doc)),
                    (BlobKind::Forget, Some(doc)) => {
                        if let Ok(r) = serde_json::from_slice::<ForgetRecord>(&doc) {
                            self.forgotten.extend(r.snapshots);
                            self.forget_records.push(id);
                        }
                    }
                    _ => {}
                }
                new
            }
            ScannedRecord::Damaged { id, lost } => {
                if !self.good.contains(&id) {
                    self.bad.insert(id, lost);
                }
                false
            }
            ScannedRecord::Unreadable { offset, what } => {
                rep.unreadable_packs.push(format!("pack {pack} at offset {offset}: {what}"));
                false
            }
        }
    }

    /// The last batch: the snapshots less the forgotten ones, the forget
    /// records, and a `lost/` mark per blob with no sound record.
    fn finish(mut self, ds: &Datastore, rep: &mut RepairReport) -> IndexBatch {
        for (id, doc) in std::mem::take(&mut self.snapshots) {
            if self.forgotten.contains(&id) {
                rep.forgotten += 1;
                continue;
            }
            if serde_json::from_slice::<Snapshot>(&doc).is_err() {
                continue;
            }
            let sealed = ds.seal_doc(&id, doc);
            self.batch.snapshots.push((id, sealed));
            rep.snapshots += 1;
        }
        for rid in &self.forget_records {
            self.batch.refs.push((ref_key(REF_FORGET, &rid.0), Vec::new()));
        }
        rep.blobs = self.good.len() as u64;
        let mut lost: Vec<LostBlob> = self.bad.into_values().collect();
        lost.sort_by(|a, b| (&a.pack, a.offset).cmp(&(&b.pack, b.offset)));
        for l in &lost {
            let id = BlobId::from_hex(&l.id).expect("hex id");
            self.batch.refs.push((ref_key(REF_LOST, &id.0), serde_json::to_vec(l).expect("serializes")));
        }
        rep.lost_blobs = lost;
        self.batch
    }
}

/// Step 1: every pack read and its records verified, the sound ones
/// indexed into `new` (blob entries in chunks; the snapshots go in last,
/// with [`Salvage::finish`]).
fn scan_packs(ds: &Datastore, new: &Path, rep: &mut RepairReport, on_bytes: &dyn Fn(u64, u64)) -> Result<Salvage> {
    let files = ds.pack_files()?;
    let total: u64 = files.iter().map(|f| f.len).sum();
    let mut done = 0u64;
    let mut salvage = Salvage::default();
    for crate::datastore::PackFile { id: pack, path, len } in &files {
        let bytes = std::fs::read(path).map_err(|e| StoreError::io("read", path, e))?;
        rep.bytes_read += bytes.len() as u64;
        let mut count = 0u32;
        for record in scan_pack(ds, pack, &bytes) {
            if salvage.take(pack, record, rep) {
                count += 1;
            }
            if salvage.batch.len() >= CHUNK {
                index::commit(new, std::mem::take(&mut salvage.batch))?;
            }
        }
        salvage.batch.packs.push((*pack, PackInfo { len: *len, blobs: count }));
        rep.packs += 1;
        done += len;
        on_bytes(done, total);
    }
    Ok(salvage)
}

/// Step 2: the rebuilt index replaces the old one (rename, then the
/// directory synced; the old one is removed after).
fn swap_in(root: &Path, new: &Path) -> Result<()> {
    let idx = root.join("index");
    let old = root.join("index.old");
    let _ = std::fs::remove_dir_all(&old);
    if idx.exists() {
        std::fs::rename(&idx, &old).map_err(|e| StoreError::io("rename", &idx, e))?;
    }
    std::fs::rename(new, &idx).map_err(|e| StoreError::io("rename", new, e))?;
    fsutil::sync_dir(root)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Step 3: what the lost blobs cost, named per snapshot and remembered
/// under `damaged/`.
fn mark_damaged_snapshots(ds: &Datastore, rep: &mut RepairReport) -> Result<()> {
    let damage = crate::check::snapshot_damage(ds, &HashSet::new())?;
    let mut batch = IndexBatch::default();
    for (sid, label, paths) in damage {
        for p in &paths {
            rep.affected.push(format!("{label}: {p}"));
        }
        batch.refs.push((ref_key(REF_DAMAGED, &sid.0), serde_json::to_vec(&paths).expect("serializes")));
    }
    if !batch.is_empty() {
        index::commit(&ds.index_path(), batch)?;
        ds.refresh_index()?;
    }
    Ok(())
}

/// What the scan of a pack found at one place in it.
#[derive(Debug)]
enum ScannedRecord {
    /// A record that verifies: it is indexed at `loc`. Snapshot and
    /// forget records bring their plain bytes.
    Good { id: BlobId, loc: BlobLocation, plain: Option<Vec<u8>> },
    /// A readable header whose content does not verify: lost, unless a
    /// good copy turns up elsewhere.
    Damaged { id: BlobId, lost: LostBlob },
    /// From `offset` on, nothing could be read up to the next record
    /// that verifies (or the end).
    Unreadable { offset: u64, what: &'static str },
}

/// Reads every record of a pack's bytes in order. A damaged header hides
/// where the next record starts: the scan then tries each following
/// offset for a header with a valid checksum whose content verifies.
fn scan_pack(ds: &Datastore, pack: &PackId, bytes: &[u8]) -> Vec<ScannedRecord> {
    let mut out = Vec::new();
    if bytes.len() < PACK_HEADER_LEN as usize || &bytes[..8] != PACK_MAGIC {
        // The records may still be fine: scan them anyway.
        tracing::warn!("pack {pack}: damaged pack header");
    }
    let mut off = PACK_HEADER_LEN as usize;
    let mut resyncing = false;
    while off + RECORD_HEADER_LEN <= bytes.len() {
        let parsed = RecordHeader::decode(&bytes[off..off + RECORD_HEADER_LEN]).ok();
        // A sound header (its checksum holds) whose record runs past the
        // end: the pack was cut there, nothing follows.
        if !resyncing && parsed.as_ref().is_some_and(|h| off + RECORD_HEADER_LEN + h.stored_len as usize > bytes.len()) {
            out.push(ScannedRecord::Unreadable { offset: off as u64, what: "truncated record at the end" });
            return out;
        }
        let parsed = parsed.filter(|h| off + RECORD_HEADER_LEN + h.stored_len as usize <= bytes.len());
        let Some(h) = parsed else {
            if !resyncing {
                out.push(ScannedRecord::Unreadable { offset: off as u64, what: "record header damaged" });
                resyncing = true;
            }
            off += 1;
            continue;
        };
        let start = off + RECORD_HEADER_LEN;
        let stored = bytes[start..start + h.stored_len as usize].to_vec();
        match ds.decode_record(&h, stored) {
            Ok(plain) => {
                resyncing = false;
                let loc = BlobLocation { pack: *pack, offset: off as u64, stored_len: h.stored_len, plain_len: h.plain_len, kind: h.kind, encoding: h.encoding };
                let plain = matches!(h.kind, BlobKind::Snapshot | BlobKind::Forget).then_some(plain);
                out.push(ScannedRecord::Good { id: h.id, loc, plain });
                off = start + h.stored_len as usize;
            }
            // Most likely not a header at all, only bytes that look like
            // one: keep looking one byte on.
            Err(_) if resyncing => off += 1,
            Err(reason) => {
                out.push(ScannedRecord::Damaged { id: h.id, lost: LostBlob { id: h.id.to_hex(), pack: pack.to_hex(), offset: off as u64, reason: reason.to_string() } });
                off = start + h.stored_len as usize;
            }
        }
    }
    if off != bytes.len() && !resyncing {
        out.push(ScannedRecord::Unreadable { offset: off as u64, what: "truncated record at the end" });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{flip_byte, offset_of, one_pack};

    fn goods(v: &[ScannedRecord]) -> Vec<BlobId> {
        v.iter().filter_map(|r| if let ScannedRecord::Good { id, .. } = r { Some(*id) } else { None }).collect()
    }

    #[test]
    fn a_clean_pack_scans_to_its_index() {
        let t = tempfile::tempdir().unwrap();
        let (ds, ids, path) = one_pack(t.path());
        let pack = ds.pack_files().unwrap()[0].id;
        let scanned = scan_pack(&ds, &pack, &std::fs::read(&path).unwrap());
        // Three files, the tree and the snapshot document.
        assert_eq!(scanned.len(), 5, "{scanned:?}");
        for r in &scanned {
            let ScannedRecord::Good { id, loc, plain } = r else { panic!("{r:?}") };
            assert_eq!(ds.index().blob(id).unwrap(), Some(*loc));
            assert_eq!(plain.is_some(), loc.kind == BlobKind::Snapshot);
        }
        assert!(ids.iter().all(|id| goods(&scanned).contains(id)));
    }

    #[test]
    fn damage_is_named_and_the_scan_finds_its_way_on() {
        let t = tempfile::tempdir().unwrap();
        let (ds, ids, path) = one_pack(t.path());
        let pack = ds.pack_files().unwrap()[0].id;
        let clean = std::fs::read(&path).unwrap();

        // Content: that blob is lost, the rest is read.
        let mut bytes = clean.clone();
        bytes[offset_of(&ds, &ids[1]) + RECORD_HEADER_LEN + 10] ^= 0xff;
        let scanned = scan_pack(&ds, &pack, &bytes);
        let damaged: Vec<&BlobId> = scanned.iter().filter_map(|r| if let ScannedRecord::Damaged { id, .. } = r { Some(id) } else { None }).collect();
        assert_eq!(damaged, vec![&ids[1]]);
        assert_eq!(goods(&scanned).len(), 4);

        // A header: where the next record starts is found again.
        let mut bytes = clean.clone();
        let at = offset_of(&ds, &ids[1]);
        bytes[at + 5] ^= 0xff;
        let scanned = scan_pack(&ds, &pack, &bytes);
        assert!(matches!(scanned[1], ScannedRecord::Unreadable { offset, what: "record header damaged" } if offset as usize == at), "{scanned:?}");
        let found = goods(&scanned);
        assert!(found.contains(&ids[0]) && found.contains(&ids[2]) && !found.contains(&ids[1]), "{scanned:?}");

        // A cut tail: the last record's header promises more than there
        // is, so it does not count as one.
        let scanned = scan_pack(&ds, &pack, &clean[..clean.len() - 5]);
        assert_eq!(goods(&scanned).len(), 4);
        assert!(matches!(scanned.last(), Some(ScannedRecord::Unreadable { what: "truncated record at the end", .. })), "{scanned:?}");
        // A cut inside the last header.
        let Some(ScannedRecord::Good { loc, .. }) = scan_pack(&ds, &pack, &clean).pop() else { panic!("clean pack") };
        let scanned = scan_pack(&ds, &pack, &clean[..loc.offset as usize + 20]);
        assert!(matches!(scanned.last(), Some(ScannedRecord::Unreadable { what: "truncated record at the end", .. })), "{scanned:?}");
    }

    #[test]
    fn a_blob_is_lost_only_when_no_pack_holds_a_sound_copy() {
        let (a, b) = (PackId::random(), PackId::random());
        let id = |n: u8| BlobId([n; 32]);
        let good = |n: u8, pack: PackId| ScannedRecord::Good {
            id: id(n),
            loc: BlobLocation { pack, offset: 64, stored_len: 10, plain_len: 10, kind: BlobKind::FileChunk, encoding: crate::blob::Encoding::Raw },
            plain: None,
        };
        let damaged = |n: u8, pack: PackId| ScannedRecord::Damaged { id: id(n), lost: LostBlob { id: id(n).to_hex(), pack: pack.to_hex(), offset: 64, reason: "bad".into() } };
        let mut rep = RepairReport::default();
        let mut s = Salvage::default();
        // 1: damaged, then a sound copy elsewhere. 2: sound, then a damaged
        // copy. 3: only damaged. 4: sound twice (indexed once).
        assert!(!s.take(&a, damaged(1, a), &mut rep));
        assert!(s.take(&b, good(1, b), &mut rep));
        assert!(s.take(&a, good(2, a), &mut rep));
        assert!(!s.take(&b, damaged(2, b), &mut rep));
        assert!(!s.take(&a, damaged(3, a), &mut rep));
        assert!(s.take(&a, good(4, a), &mut rep));
        assert!(!s.take(&b, good(4, b), &mut rep), "a second sound copy is not indexed again");
        assert!(!s.take(&b, ScannedRecord::Unreadable { offset: 99, what: "truncated record at the end" }, &mut rep));
        assert_eq!(s.batch.blobs.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![id(1), id(2), id(4)]);
        assert_eq!(rep.unreadable_packs.len(), 1);
        let t = tempfile::tempdir().unwrap();
        let ds = Datastore::init(&t.path().join("ds")).unwrap();
        let batch = s.finish(&ds, &mut rep);
        assert_eq!(rep.lost_blobs.iter().map(|l| l.id.clone()).collect::<Vec<_>>(), vec![id(3).to_hex()]);
        assert_eq!((rep.blobs, batch.refs.len()), (3, 1));
    }

    #[test]
    fn repair_rebuilds_the_index_and_names_what_was_lost() {
        let t = tempfile::tempdir().unwrap();
        let (ds, ids, path) = one_pack(t.path());
        flip_byte(&path, offset_of(&ds, &ids[2]) + RECORD_HEADER_LEN + 1, 1);
        let rep = repair(&ds, &|_, _| {}).unwrap();
        assert_eq!((rep.packs, rep.blobs, rep.snapshots), (1, 4, 1));
        assert_eq!(rep.lost_blobs.iter().map(|l| l.id.clone()).collect::<Vec<_>>(), vec![ids[2].to_hex()]);
        assert_eq!(rep.affected.len(), 1, "{:?}", rep.affected);
        assert!(rep.affected[0].contains("/f2: file lost data"), "{:?}", rep.affected);
        let damaged = ds.damaged_snapshots().unwrap();
        let (sid, _) = ds.snapshots().unwrap().pop().unwrap();
        assert_eq!(damaged.get(&sid).map(|p| p.len()), Some(1));
        assert!(ds.index().blob(&ids[2]).unwrap().is_none());
        assert!(ds.index().blob(&ids[0]).unwrap().is_some());
    }
}
