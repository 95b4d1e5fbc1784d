//! `check`: index <-> packs consistency, every snapshot's trees and blob
//! references, and with `read_data` every blob's bytes against its hash.
//! Damage is reported as the snapshots and paths that lose data.

use crate::blob;
use crate::datastore::Datastore;
use crate::error::Result;
use crate::id::{BlobId, PackId};
use crate::pack::{pack_path, PackScanner};
use crate::tree::NodeKind;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// What [`check`] found.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CheckReport {
    /// Packs in the index.
    pub packs: u64,
    /// Blobs in the index.
    pub blobs: u64,
    /// Snapshots walked.
    pub snapshots: u64,
    /// Pack bytes read (with [`CheckDepth::ReadData`]).
    pub bytes_read: u64,
    /// Problems that mean lost or unreadable data.
    pub errors: Vec<String>,
    /// Snapshot paths whose data is lost: "snapshot <id> <time>: <path>".
    pub affected: Vec<String>,
    /// Packs on disk that no index entry references: left by an
    /// interrupted backup; reclaimable, harmless.
    pub unreferenced_packs: Vec<(String, u64)>,
    /// Damaged records no index entry uses: harmless leftovers of
    /// `repair`; their space comes back when gc rewrites the pack.
    pub unused_damaged_records: u64,
    /// Partial packs of crashed writers (removed by the next backup).
    pub stale_partials: Vec<(PathBuf, u64)>,
}

impl CheckReport {
    /// No data is lost (leftovers do not count).
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.affected.is_empty()
    }
}

/// How deep [`check`] looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckDepth {
    /// Index against pack files, every record header, every snapshot's
    /// trees and the blobs they reference.
    Structure,
    /// Also every blob's bytes against its hash: reads all the data.
    ReadData,
}

/// Checks the datastore as deep as asked; `on_bytes` hears of the pack
/// bytes read as they are. The steps, in order: [`compare_packs`] (the
/// index against the pack files), [`read_packs`] (every record against
/// its hash, with [`CheckDepth::ReadData`]), [`check_index_entries`]
/// (each index entry against the damage found), then the snapshots'
/// trees ([`snapshot_damage`]), which name the paths that lose data.
pub fn check(ds: &Datastore, depth: CheckDepth, on_bytes: &(dyn Fn(u64) + Sync)) -> Result<CheckReport> {
    // A gc in its sweep deletes packs an older view still lists: wait for
    // it, and keep the next one out until we are done.
    let _gc = crate::fsutil::FileLock::take(&ds.root().join("gc.lock"), libc::LOCK_SH)?;
    ds.refresh_index()?;
    let mut rep = CheckReport::default();
    let mut damage = compare_packs(ds, &mut rep)?;
    if depth == CheckDepth::ReadData {
        read_packs(ds, &mut damage, &mut rep, on_bytes);
    }
    for (id, why) in &damage.bad_packs {
        rep.errors.push(format!("pack {id}: {why}"));
    }
    let bad_blobs = check_index_entries(ds, &damage, depth, &mut rep)?;

    // Damage found under a tree is memoized by tree id, so a tree shared
    // by many snapshots is read once yet its damage is named for each.
    rep.snapshots = ds.snapshots()?.len() as u64;
    let lost = snapshot_damage(ds, &bad_blobs)?;
    if depth == CheckDepth::ReadData {
        clear_healed_marks(ds, &lost)?;
    }
    for (_, label, paths) in lost {
        for m in paths {
            rep.affected.push(format!("{label}: {m}"));
        }
    }
    rep.errors.sort();
    Ok(rep)
}

/// Where the packs are damaged, as the steps of [`check`] find it.
#[derive(Default)]
struct PackDamage {
    /// Each indexed pack's length as the index has it.
    indexed: HashMap<PackId, u64>,
    /// Packs lost whole: missing, the wrong size, unreadable.
    bad_packs: HashMap<PackId, String>,
    /// Per pack read: offsets of damaged records, and the offset from
    /// which nothing could be read (u64::MAX: all of it could).
    bad_records: HashMap<PackId, (HashSet<u64>, u64)>,
    /// Per pack read: how many index entries matched a sound record.
    confirmed: HashMap<PackId, u64>,
}

impl PackDamage {
    /// Whether the record at `loc` is damaged, or `Err` with why the
    /// entry itself is wrong (an unknown pack, past its end).
    fn record_is_damaged(&self, loc: &crate::index::BlobLocation) -> std::result::Result<bool, String> {
        let end = loc.offset + blob::RECORD_HEADER_LEN as u64 + loc.stored_len as u64;
        match self.indexed.get(&loc.pack) {
            None => Err(format!("its pack {} is not in the index", loc.pack)),
            Some(len) if end > *len => Err(format!("lies past the end of pack {}", loc.pack)),
            _ => Ok(self.bad_packs.contains_key(&loc.pack) || self.bad_records.get(&loc.pack).is_some_and(|(offs, until)| offs.contains(&loc.offset) || loc.offset >= *until)),
        }
    }
}

/// Step 1: the index's packs against the pack files (missing, wrong
/// size), packs no entry references and crashed writers' partial packs.
fn compare_packs(ds: &Datastore, rep: &mut CheckReport) -> Result<PackDamage> {
    let files: HashMap<PackId, (PathBuf, u64)> = ds.pack_files()?.into_iter().map(|f| (f.id, (f.path, f.len))).collect();
    let mut damage = PackDamage { indexed: ds.index().packs()?.into_iter().map(|(id, info)| (id, info.len)).collect(), ..Default::default() };
    for (id, len) in &damage.indexed {
        match files.get(id) {
            None => {
                damage.bad_packs.insert(*id, "file missing".into());
            }
            Some((_, on_disk)) if on_disk != len => {
                damage.bad_packs.insert(*id, format!("size {on_disk} bytes, index says {len}"));
            }
            _ => {}
        }
    }
    for (id, (_, len)) in &files {
        if !damage.indexed.contains_key(id) {
            rep.unreferenced_packs.push((id.to_hex(), *len));
        }
    }
    for p in ds.partial_packs()? {
        if !p.live {
            rep.stale_partials.push((p.path, p.len));
        }
    }
    rep.packs = damage.indexed.len() as u64;
    Ok(damage)
}

/// Step 2 (`ReadData`): every record of every sound pack decoded and
/// hashed, a few packs at a time; where the damage is goes into `damage`.
fn read_packs(ds: &Datastore, damage: &mut PackDamage, rep: &mut CheckReport, on_bytes: &(dyn Fn(u64) + Sync)) {
    let todo: Vec<PackId> = damage.indexed.keys().copied().filter(|id| !damage.bad_packs.contains_key(id)).collect();
    let next = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let results = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(8);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = todo.get(i) else { break };
                let r = verify_pack(ds, id, &bytes, on_bytes);
                results.lock().unwrap().push((*id, r));
            });
        }
    });
    rep.bytes_read = bytes.load(Ordering::Relaxed);
    for (id, r) in results.into_inner().unwrap() {
        match r {
            Ok(v) => {
                rep.unused_damaged_records += v.unused_damaged;
                if !v.bad.is_empty() || v.good_until.is_some() {
                    for m in &v.messages {
                        rep.errors.push(format!("pack {id}: {m}"));
                    }
                    damage.bad_records.insert(id, (v.bad, v.good_until.unwrap_or(u64::MAX)));
                }
                damage.confirmed.insert(id, v.confirmed);
            }
            Err(e) => {
                damage.bad_packs.insert(id, e.to_string());
            }
        }
    }
}

/// Step 3: each index entry must point into a sound part of a known
/// pack; with `ReadData` each pack read must also hold exactly the
/// entries the index gives it. Returns the blobs whose data is lost.
fn check_index_entries(ds: &Datastore, damage: &PackDamage, depth: CheckDepth, rep: &mut CheckReport) -> Result<HashSet<BlobId>> {
    let index = ds.index();
    let mut bad_blobs: HashSet<BlobId> = HashSet::new();
    let mut per_pack: HashMap<PackId, u64> = HashMap::new();
    index.for_each_blob(|id, loc| {
        rep.blobs += 1;
        *per_pack.entry(loc.pack).or_default() += 1;
        match damage.record_is_damaged(&loc) {
            Ok(false) => {}
            Ok(true) => {
                bad_blobs.insert(id);
            }
            Err(why) => {
                rep.errors.push(format!("blob {id}: {why}"));
                bad_blobs.insert(id);
            }
        }
        Ok(())
    })?;
    if depth == CheckDepth::ReadData {
        for (pack, n) in &per_pack {
            if damage.bad_packs.contains_key(pack) || damage.bad_records.contains_key(pack) {
                continue;
            }
            if damage.confirmed.get(pack).copied().unwrap_or(0) != *n {
                rep.errors.push(format!("pack {pack}: index entries do not match the records in the pack"));
                index.for_each_blob(|id, loc| {
                    if loc.pack == *pack {
                        bad_blobs.insert(id);
                    }
                    Ok(())
                })?;
            }
        }
    }
    Ok(bad_blobs)
}

/// `repair` marks damaged snapshots and lost blobs; a later backup may
/// have stored the lost blobs again. A full check knows, so it drops the
/// marks that no longer hold.
fn clear_healed_marks(ds: &Datastore, damage: &[(BlobId, String, Vec<String>)]) -> Result<()> {
    use crate::repair::{REF_DAMAGED, REF_LOST};
    let index = ds.index();
    let still: HashSet<&[u8]> = damage.iter().map(|d| &d.0 .0[..]).collect();
    let mut batch = crate::index::IndexBatch::default();
    index.for_each_ref(REF_DAMAGED, |k, _| {
        if !still.contains(&k[REF_DAMAGED.len()..]) {
            batch.delete_refs.push(k.to_vec());
        }
        Ok(())
    })?;
    index.for_each_ref(REF_LOST, |k, _| {
        if let Ok(id) = <[u8; 32]>::try_from(&k[REF_LOST.len()..]) {
            if index.contains_blob(&BlobId(id))? {
                batch.delete_refs.push(k.to_vec());
            }
        }
        Ok(())
    })?;
    if !batch.is_empty() {
        crate::index::commit(&ds.index_path(), batch)?;
        ds.refresh_index()?;
    }
    Ok(())
}

/// For each snapshot that loses data: its id, a label, and the paths
/// whose data is gone (a blob in `bad_blobs` or not in the index).
pub fn snapshot_damage(ds: &Datastore, bad_blobs: &HashSet<BlobId>) -> Result<Vec<(BlobId, String, Vec<String>)>> {
    let index = ds.index();
    let mut memo: HashMap<BlobId, Vec<String>> = HashMap::new();
    let lost = |c: &BlobId| bad_blobs.contains(c) || !index.contains_blob(c).unwrap_or(false);
    let mut out = Vec::new();
    for (sid, snap) in ds.snapshots()? {
        let label = format!("snapshot {} ({})", sid.short(), snap.time.format("%Y-%m-%d %H:%M:%S"));
        let paths = tree_damage(ds, &snap.tree, bad_blobs, &lost, &mut memo, 0);
        if !paths.is_empty() {
            out.push((sid, label, paths));
        }
    }
    Ok(out)
}

struct PackVerdict {
    bad: HashSet<u64>,
    /// Set when the pack is truncated or unreadable from this offset on.
    good_until: Option<u64>,
    confirmed: u64,
    unused_damaged: u64,
    messages: Vec<String>,
}

fn verify_pack(ds: &Datastore, id: &PackId, bytes: &AtomicU64, on_bytes: &(dyn Fn(u64) + Sync)) -> Result<PackVerdict> {
    let path = pack_path(ds.root(), id);
    let mut sc = PackScanner::open(&path)?;
    let index = ds.index();
    let mut v = PackVerdict { bad: HashSet::new(), good_until: None, confirmed: 0, unused_damaged: 0, messages: Vec::new() };
    loop {
        match sc.next_record() {
            Ok(None) => break,
            Ok(Some((off, h, stored))) => {
                let n = (blob::RECORD_HEADER_LEN + stored.len()) as u64;
                bytes.fetch_add(n, Ordering::Relaxed);
                on_bytes(n);
                let verdict = ds.decode_record(&h, stored);
                let indexed = index.blob(&h.id)?.is_some_and(|l| l.pack == *id && l.offset == off);
                if let (Err(why), true) = (&verdict, indexed) {
                    v.bad.insert(off);
                    v.messages.push(format!("blob {} at offset {off}: {why}", h.id));
                } else if verdict.is_err() {
                    // Damaged, but nothing uses this copy (repair dropped
                    // it, or the blob is stored again elsewhere).
                    v.unused_damaged += 1;
                } else if indexed {
                    v.confirmed += 1;
                }
            }
            Err(e) => {
                v.messages.push(e.to_string());
                // Everything from the first unreadable header on is lost;
                // offsets before it were verified above.
                v.good_until = Some(sc.offset());
                break;
            }
        }
    }
    Ok(v)
}

/// Paths under tree `id` (relative, starting with "/") whose data is lost.
fn tree_damage(ds: &Datastore, id: &BlobId, bad_blobs: &HashSet<BlobId>, lost: &dyn Fn(&BlobId) -> bool, memo: &mut HashMap<BlobId, Vec<String>>, depth: usize) -> Vec<String> {
    if let Some(m) = memo.get(id) {
        return m.clone();
    }
    let tree = if bad_blobs.contains(id) { Err("directory listing is damaged".to_string()) } else { ds.load_tree(id).map_err(|e| e.to_string()) };
    let mut out = Vec::new();
    match tree {
        Err(m) => out.push(format!("/: {m}")),
        Ok(_) if depth > 4096 => out.push("/: directory nesting too deep".into()),
        Ok(tree) => {
            for n in &tree.nodes {
                let p = format!("/{}", n.name_lossy());
                match n.kind {
                    NodeKind::Dir => match &n.subtree {
                        Some(st) => {
                            for m in tree_damage(ds, st, bad_blobs, lost, memo, depth + 1) {
                                out.push(if m.starts_with("/:") { format!("{p}{}", &m[1..]) } else { format!("{p}{m}") });
                            }
                        }
                        None => out.push(format!("{p}: directory has no tree")),
                    },
                    NodeKind::File if n.content.iter().any(lost) => out.push(format!("{p}: file lost data")),
                    _ => {}
                }
            }
        }
    }
    memo.insert(*id, out.clone());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::RECORD_HEADER_LEN;
    use crate::testutil::{flip_byte, offset_of, one_pack};

    #[test]
    fn pack_damage_judges_each_index_entry() {
        use crate::index::BlobLocation;
        let (p, q, gone) = (PackId::random(), PackId::random(), PackId::random());
        let mut d = PackDamage::default();
        d.indexed.insert(p, 10_000);
        d.indexed.insert(q, 10_000);
        d.bad_records.insert(p, (HashSet::from([100]), 5_000));
        d.bad_packs.insert(q, "file missing".into());
        let at = |pack, offset| BlobLocation { pack, offset, stored_len: 50, plain_len: 50, kind: crate::blob::BlobKind::FileChunk, encoding: crate::blob::Encoding::Raw };
        assert_eq!(d.record_is_damaged(&at(p, 0)), Ok(false));
        assert_eq!(d.record_is_damaged(&at(p, 100)), Ok(true), "a damaged record");
        assert_eq!(d.record_is_damaged(&at(p, 5_000)), Ok(true), "past the unreadable point");
        assert_eq!(d.record_is_damaged(&at(q, 0)), Ok(true), "a lost pack");
        assert!(d.record_is_damaged(&at(p, 9_990)).unwrap_err().contains("past the end"));
        assert!(d.record_is_damaged(&at(gone, 0)).unwrap_err().contains("not in the index"));
    }

    fn both(ds: &Datastore) -> (CheckReport, CheckReport) {
        (check(ds, CheckDepth::Structure, &|_| {}).unwrap(), check(ds, CheckDepth::ReadData, &|_| {}).unwrap())
    }

    #[test]
    fn a_clean_datastore_passes_at_both_depths() {
        let t = tempfile::tempdir().unwrap();
        let (ds, _, path) = one_pack(t.path());
        let (s, r) = both(&ds);
        assert!(s.ok() && r.ok(), "{s:?} {r:?}");
        assert_eq!((s.packs, s.blobs, s.snapshots, s.bytes_read), (1, 5, 1, 0));
        assert_eq!(r.bytes_read, std::fs::metadata(path).unwrap().len() - crate::pack::PACK_HEADER_LEN);
    }

    #[test]
    fn damaged_content_is_found_by_reading_the_data_and_named_by_path() {
        let t = tempfile::tempdir().unwrap();
        let (ds, ids, path) = one_pack(t.path());
        flip_byte(&path, offset_of(&ds, &ids[1]) + RECORD_HEADER_LEN + 3, 0x40);
        let (s, r) = both(&ds);
        assert!(s.ok(), "the structure is intact: {s:?}");
        assert!(!r.ok());
        assert!(r.errors.iter().any(|e| e.contains(&ids[1].to_string())), "{:?}", r.errors);
        assert_eq!(r.affected.len(), 1, "{:?}", r.affected);
        assert!(r.affected[0].contains("/f1"), "{:?}", r.affected);
    }

    #[test]
    fn a_missing_pack_and_a_stray_one_are_told_apart() {
        let t = tempfile::tempdir().unwrap();
        let (ds, _, path) = one_pack(t.path());
        let stray = path.with_file_name(format!("{}.pack", crate::id::PackId([7; 16]).to_hex()));
        std::fs::rename(&path, &stray).unwrap();
        let s = check(&ds, CheckDepth::Structure, &|_| {}).unwrap();
        assert!(!s.ok());
        assert!(s.errors.iter().any(|e| e.contains("file missing")), "{:?}", s.errors);
        assert_eq!(s.unreferenced_packs.len(), 1, "{:?}", s.unreferenced_packs);
        // The root listing was in that pack too.
        assert_eq!(s.affected.len(), 1, "{:?}", s.affected);
        assert!(s.affected[0].ends_with("/: directory listing is damaged"), "{:?}", s.affected);
    }
}
