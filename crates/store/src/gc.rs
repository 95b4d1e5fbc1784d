//! Garbage collection: mark every blob reachable from a snapshot (or a
//! forget record), then drop packs that hold nothing reachable and
//! rewrite ("repack") packs that are mostly garbage.
//!
//! Garbage is also what the index does not point to: when two backups
//! store the same blob at once, the index names one copy and the other
//! copy's record is dead weight in its pack. A pack's bytes beyond its
//! indexed records count as dead (the index keeps each pack's length).
//!
//! It runs while backups run. The danger is a backup that deduplicates
//! against a blob the collector is about to sweep. The collector uses
//! writer registration (docs/format.md, "Garbage collection"):
//!
//! 1. Mark from the snapshots of one index view (no lock against
//!    writers).
//! 2. Repack: copy the live blobs of mostly-dead packs to new packs and
//!    move their index entries (only entries that still point there).
//! 3. Doom: in one batch per chunk, drop the dead blobs' index entries,
//!    recording each one's old location under `gc/blob/` and each doomed
//!    pack under `gc/pack/` in the same batch. From now on no new writer
//!    can see those blobs.
//! 4. Wait for every writer registered under `writers/`: only those can
//!    have seen a doomed blob.
//! 5. Mark the snapshots committed since step 1; a doomed blob they reach
//!    gets its index entry back (resurrection) and its pack is kept.
//! 6. Delete the doomed packs no index entry points to.
//!
//! `gc` carries these out one function each: `mark`, then a `GcPlan` (a
//! `PackVerdict` per pack, which is all a dry run reports), `repack_live`,
//! `doom_dead`, the wait, `resurrect`, `delete_doomed`.
//!
//! A crash anywhere leaves `gc/` records that the next run finishes from:
//! it waits for the writers running then, marks everything and resurrects
//! what is reachable before deleting anything. Pack files the index does
//! not know (a crashed writer's) are deleted only while their lock is
//! free and a fresh index view still does not list them.

use crate::datastore::Datastore;
use crate::error::{Result, StoreError};
use crate::fsutil::{DatastoreLock, FileLock, WriterRegistration};
use crate::id::{BlobId, PackId};
use crate::index::{self, ref_key, BlobLocation, ChunkedBatch, IndexBatch, IndexReader, PackInfo};
use crate::markset::MarkSet;
use crate::pack::{pack_path, PackWriter};
use crate::tree::NodeKind;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::Arc;

const REF_DOOMED_PACK: &[u8] = b"gc/pack/";
const REF_DOOMED_BLOB: &[u8] = b"gc/blob/";
/// Index entries per commit when dooming or resurrecting many blobs.
const CHUNK: usize = 50_000;

/// How [`gc`] runs.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Report what would be freed; change nothing.
    pub dry_run: bool,
    /// A pack whose dead bytes reach this fraction of its size is
    /// repacked; below it the garbage is kept (copying live data costs
    /// IO too).
    pub repack_threshold: f64,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { dry_run: false, repack_threshold: 0.25 }
    }
}

/// What [`gc`] did (or, dry, would do).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GcReport {
    /// Snapshots whose data was marked live.
    pub snapshots: u64,
    /// Directory trees walked, and marks made in all.
    pub trees: u64,
    /// Blobs marked live.
    pub marks: u64,
    /// Memory the mark set took.
    pub mark_set_bytes: u64,
    /// Packs deleted whole (nothing live in them).
    pub packs_deleted: u64,
    /// Packs rewritten without their garbage.
    pub packs_repacked: u64,
    /// Blobs dropped from the index.
    pub blobs_deleted: u64,
    /// Bytes of pack files deleted (before what repacking wrote anew).
    pub bytes_freed: u64,
    /// Live bytes copied into new packs by repacking.
    pub bytes_repacked: u64,
    /// Packs left with garbage under the repack threshold.
    pub partly_used_packs: u64,
    /// Bytes of garbage left in packs under the repack threshold.
    pub garbage_kept: u64,
    /// Live blobs that failed verification while repacking: their pack
    /// is kept as it is; `check --read-data` names what they belong to.
    pub damaged_blobs: u64,
    /// Backups gc waited for before sweeping.
    pub writers_waited: u64,
    /// Blobs an interrupted gc had doomed that a snapshot uses again: put back in the index.
    pub resurrected: u64,
    /// Packs written while a backup was running, left for the next run.
    pub young_packs_skipped: u64,
    /// Unfinished work of an interrupted gc found and completed.
    pub recovered_packs: u64,
    /// Nothing was changed (a dry run).
    pub dry_run: bool,
}

/// What a running gc tells its caller.
#[derive(Debug)]
pub enum GcEvent {
    /// Walking every snapshot's trees.
    Marking,
    /// Marking done.
    Marked {
        /// Snapshots walked.
        snapshots: u64,
        /// Trees walked.
        trees: u64,
    },
    /// Rewriting packs.
    Repacking {
        /// Packs rewritten so far.
        done: u64,
        /// Packs to rewrite.
        total: u64,
    },
    /// Waiting for this many running backups to finish.
    WaitingForWriters(usize),
    /// Deleting what is garbage.
    Sweeping,
}

#[derive(Default, Clone, Copy)]
struct PackUse {
    live: u64,
    dead: u64,
    dead_bytes: u64,
    /// Bytes of all records the index points to in the pack.
    indexed_bytes: u64,
}

impl PackUse {
    /// Adds the records the index does not point to (a blob stored twice
    /// whose entry names the other copy, or a record whose entry was
    /// lost): dead too, though no entry of theirs is left to drop.
    fn with_unindexed(mut self, info: &PackInfo) -> Self {
        let indexed = self.live + self.dead;
        let unindexed_bytes = info.len.saturating_sub(crate::pack::PACK_HEADER_LEN + self.indexed_bytes);
        let unindexed = (info.blobs as u64).saturating_sub(indexed);
        if unindexed_bytes > 0 || unindexed > 0 {
            // At least one record even if the counts disagree.
            self.dead += unindexed.max(1);
            self.dead_bytes += unindexed_bytes;
        }
        self
    }
}

fn record_len(loc: &BlobLocation) -> u64 {
    loc.stored_len as u64 + crate::blob::RECORD_HEADER_LEN as u64
}

fn doomed_packs(index: &IndexReader) -> Result<HashSet<PackId>> {
    let mut out = HashSet::new();
    index.for_each_ref(REF_DOOMED_PACK, |k, _| {
        if let Ok(b) = <[u8; 16]>::try_from(&k[REF_DOOMED_PACK.len()..]) {
            out.insert(PackId(b));
        }
        Ok(())
    })?;
    Ok(out)
}

/// What gc decides for one pack once marking is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PackVerdict {
    /// Every record is live.
    Keep,
    /// Some garbage, under the repack threshold: kept as it is.
    KeepPartlyUsed,
    /// Mostly garbage: the live records are copied out, then it goes.
    Repack,
    /// Nothing in it is live: it goes whole.
    Delete,
    /// Written since a running backup began, so its garbage may be a
    /// snapshot not committed yet: judged by the next run.
    Young,
}

impl PackVerdict {
    /// The verdict for a pack used as `u`, of `len` bytes; `young` is
    /// asked (a stat) only of packs that hold garbage.
    fn judge(u: &PackUse, len: u64, young: impl FnOnce() -> bool, repack_threshold: f64) -> Self {
        if (u.live == 0 || u.dead > 0) && young() {
            PackVerdict::Young
        } else if u.live == 0 {
            PackVerdict::Delete
        } else if u.dead > 0 && u.dead_bytes as f64 >= repack_threshold * len as f64 {
            PackVerdict::Repack
        } else if u.dead > 0 {
            PackVerdict::KeepPartlyUsed
        } else {
            PackVerdict::Keep
        }
    }
}

/// Step 1's outcome: a verdict per pack, from one index view's marks.
struct GcPlan {
    packs: HashMap<PackId, PackInfo>,
    usage: HashMap<PackId, PackUse>,
    verdicts: HashMap<PackId, PackVerdict>,
}

impl GcPlan {
    /// Judges every indexed pack; `usage` is what the index says of each.
    fn new(packs: HashMap<PackId, PackInfo>, mut usage: HashMap<PackId, PackUse>, young: impl Fn(&PackId) -> bool, repack_threshold: f64) -> Self {
        let mut verdicts = HashMap::new();
        for (pack, info) in &packs {
            // A pack an interrupted run doomed is judged afresh like any
            // other; its leftover records are settled in step 6.
            let u = usage.get(pack).copied().unwrap_or_default().with_unindexed(info);
            usage.insert(*pack, u);
            verdicts.insert(*pack, PackVerdict::judge(&u, info.len, || young(pack), repack_threshold));
        }
        GcPlan { packs, usage, verdicts }
    }

    fn with(&self, v: PackVerdict) -> HashSet<PackId> {
        self.verdicts.iter().filter(|(_, x)| **x == v).map(|(p, _)| *p).collect()
    }

    /// Live bytes repacking `packs` copies.
    fn live_bytes(&self, packs: &HashSet<PackId>) -> u64 {
        packs.iter().map(|p| self.packs[p].len - self.usage[p].dead_bytes).sum()
    }

    /// What the plan decides, counted into the report (also a dry run's).
    fn count(&self, rep: &mut GcReport) {
        for (p, v) in &self.verdicts {
            let u = &self.usage[p];
            match v {
                PackVerdict::Delete | PackVerdict::Repack => rep.blobs_deleted += u.dead,
                PackVerdict::KeepPartlyUsed => {
                    rep.partly_used_packs += 1;
                    rep.garbage_kept += u.dead_bytes;
                }
                PackVerdict::Young => rep.young_packs_skipped += 1,
                PackVerdict::Keep => {}
            }
        }
    }

    /// A dry run's answer: what carrying the plan out would free, with
    /// `orphan_bytes` of pack files the index does not know.
    fn predict(&self, rep: &mut GcReport, orphan_bytes: u64) {
        let (delete, repack) = (self.with(PackVerdict::Delete), self.with(PackVerdict::Repack));
        rep.packs_deleted = delete.len() as u64;
        rep.packs_repacked = repack.len() as u64;
        rep.bytes_freed = delete.iter().chain(&repack).map(|p| self.packs[p].len).sum::<u64>() + orphan_bytes;
        rep.bytes_repacked = self.live_bytes(&repack);
    }
}

/// Reclaims the space of blobs no snapshot uses: mark, repack, doom, wait
/// for running writers, resurrect, delete (the steps of the module doc).
/// `on_event` hears of each phase.
pub fn gc(ds: &Datastore, opts: &GcOptions, on_event: &dyn Fn(GcEvent)) -> Result<GcReport> {
    if ds.config().append_only && !opts.dry_run {
        return Err(StoreError::AppendOnly { path: ds.root().to_path_buf(), op: "gc" });
    }
    let root = ds.root();
    // One collector at a time; `check` takes this shared so it never sees
    // a half-swept datastore. Repair holds the datastore lock exclusive.
    let _gc = FileLock::take(&root.join("gc.lock"), libc::LOCK_EX)?;
    let _writers = DatastoreLock::shared(root)?;
    let mut rep = GcReport { dry_run: opts.dry_run, ..Default::default() };

    // Packs sealed since the oldest running writer registered may belong
    // to a backup that has not committed its snapshot yet: their blobs
    // look dead now and would only be doomed to be resurrected. Leave
    // them to the next run. (An optimization: safety rests on steps 3-5.)
    let in_flight_since = WriterRegistration::oldest_live(root);
    let young = |p: &PackId| match in_flight_since {
        None => false,
        Some(since) => std::fs::metadata(pack_path(root, p)).and_then(|m| m.modified()).map_or(true, |m| m >= since),
    };

    ds.refresh_index()?;
    let index = ds.index();
    let (mut marks, seen) = mark(ds, &index, &mut rep, on_event)?;
    let plan = GcPlan::new(index.packs()?.into_iter().collect(), pack_usage(&index, &marks)?, young, opts.repack_threshold);
    let already_doomed = doomed_packs(&index)?;
    rep.recovered_packs = already_doomed.len() as u64;
    plan.count(&mut rep);
    if opts.dry_run {
        let orphans = ds.pack_files()?.iter().filter(|p| !plan.packs.contains_key(&p.id)).map(|p| p.len).sum();
        plan.predict(&mut rep, orphans);
        rep.trees = marks.trees() as u64;
        rep.marks = marks.marks();
        rep.mark_set_bytes = marks.memory();
        return Ok(rep);
    }

    let mut repack = plan.with(PackVerdict::Repack);
    if !repack.is_empty() {
        let damaged = repack_live(ds, &index, &marks, &repack, plan.live_bytes(&repack), &mut rep, on_event)?;
        for p in damaged {
            repack.remove(&p);
        }
    }
    rep.packs_repacked = repack.len() as u64;
    let mut doom = plan.with(PackVerdict::Delete);
    doom.extend(repack);
    doom_dead(ds, &index, &marks, &doom)?;
    drop(index);

    if !doom.is_empty() || !already_doomed.is_empty() {
        rep.writers_waited = WriterRegistration::wait_for_writers(root, |n| on_event(GcEvent::WaitingForWriters(n)))? as u64;
        crate::failpoint::hit("gc-wait")?;
    }

    on_event(GcEvent::Sweeping);
    let doomed = resurrect(ds, &mut marks, &seen, &mut rep)?;
    delete_doomed(ds, doomed, &mut rep)?;

    let (n, bytes) = remove_orphan_packs(ds)?;
    rep.packs_deleted += n;
    rep.bytes_freed += bytes;
    rep.bytes_freed += ds.remove_stale_partials()?;
    ds.refresh_index()?;
    rep.trees = marks.trees() as u64;
    rep.marks = marks.marks();
    rep.mark_set_bytes = marks.memory();
    Ok(rep)
}

/// Step 1: marks every snapshot and forget record of one index view;
/// also gives the snapshots seen, so step 5 marks only newer ones.
fn mark(ds: &Datastore, index: &IndexReader, rep: &mut GcReport, on_event: &dyn Fn(GcEvent)) -> Result<(MarkSet, HashSet<BlobId>)> {
    on_event(GcEvent::Marking);
    let mut marks = MarkSet::with_capacity(index.estimate_blobs() + index.estimate_blobs() / 4 + 1024);
    let snaps = ds.snapshots()?;
    let seen: HashSet<BlobId> = snaps.iter().map(|(id, _)| *id).collect();
    for (sid, snap) in &snaps {
        mark_snapshot(ds, sid, &snap.tree, &mut marks, None)?;
    }
    mark_forget_records(index, &mut marks)?;
    rep.snapshots = snaps.len() as u64;
    on_event(GcEvent::Marked { snapshots: rep.snapshots, trees: marks.trees() as u64 });
    Ok((marks, seen))
}

/// Live and dead records per pack, as the index names them.
fn pack_usage(index: &IndexReader, marks: &MarkSet) -> Result<HashMap<PackId, PackUse>> {
    let mut usage: HashMap<PackId, PackUse> = HashMap::new();
    index.for_each_blob(|id, loc| {
        let u = usage.entry(loc.pack).or_default();
        u.indexed_bytes += record_len(&loc);
        if marks.contains(&id) {
            u.live += 1;
        } else {
            u.dead += 1;
            u.dead_bytes += record_len(&loc);
        }
        Ok(())
    })?;
    Ok(usage)
}

/// Step 3: the dead entries of doomed (deleted or repacked) packs leave
/// the index, each recorded under `gc/blob/` and each pack under
/// `gc/pack/` in the same batch.
fn doom_dead(ds: &Datastore, index: &IndexReader, marks: &MarkSet, doom: &HashSet<PackId>) -> Result<()> {
    if doom.is_empty() {
        return Ok(());
    }
    let index_path = ds.index_path();
    let mut batch = ChunkedBatch::new(&index_path, CHUNK).with_failpoint("gc-doom");
    for p in doom {
        batch.add(|b| b.refs.push((ref_key(REF_DOOMED_PACK, &p.0), Vec::new())))?;
    }
    index.for_each_blob(|id, loc| {
        if doom.contains(&loc.pack) && !marks.contains(&id) {
            batch.add(|b| {
                b.delete_blobs_in.push((id, loc.pack));
                b.refs.push((ref_key(REF_DOOMED_BLOB, &id.0), loc.encode().to_vec()));
            })?;
        }
        Ok(())
    })?;
    batch.flush()
}

/// What step 5 leaves step 6: the packs doomed (by this run or an
/// interrupted one; only gc dooms, and it holds `gc.lock`), and the
/// `gc/blob/` keys that do not parse.
struct Doomed {
    packs: HashSet<PackId>,
    stale_refs: Vec<Vec<u8>>,
}

/// Step 5: marks the snapshots committed since step 1; a doomed blob they
/// reach gets its index entry back.
fn resurrect(ds: &Datastore, marks: &mut MarkSet, seen: &HashSet<BlobId>, rep: &mut GcReport) -> Result<Doomed> {
    ds.refresh_index()?;
    let index = ds.index();
    let doomed_now = doomed_packs(&index)?;
    // A new snapshot may share directory listings with the forgotten
    // ones: read doomed blobs from where they were.
    let read_any = |id: &BlobId| -> Result<Vec<u8>> {
        if let Some(loc) = index.blob(id)? {
            return ds.read_blob_at(id, &loc);
        }
        match index.get_ref(&ref_key(REF_DOOMED_BLOB, &id.0))?.and_then(|v| BlobLocation::decode(&v)) {
            Some(loc) => ds.read_blob_at(id, &loc),
            None => Err(StoreError::MissingBlob { id: id.to_hex() }),
        }
    };
    for (sid, snap) in ds.snapshots()? {
        if !seen.contains(&sid) {
            mark_snapshot(ds, &sid, &snap.tree, marks, Some(&read_any))?;
        }
    }
    mark_forget_records(&index, marks)?;
    let index_path = ds.index_path();
    let mut batch = ChunkedBatch::new(&index_path, CHUNK);
    let mut stale_refs = Vec::new();
    index.for_each_ref(REF_DOOMED_BLOB, |k, v| {
        let (Ok(id), Some(loc)) = (<[u8; 32]>::try_from(&k[REF_DOOMED_BLOB.len()..]), BlobLocation::decode(v)) else {
            stale_refs.push(k.to_vec());
            return Ok(());
        };
        let id = BlobId(id);
        if doomed_now.contains(&loc.pack) && marks.contains(&id) {
            rep.resurrected += 1;
            batch.add(|b| b.restore_blobs.push((id, loc)))?;
        }
        Ok(())
    })?;
    batch.flush()?;
    Ok(Doomed { packs: doomed_now, stale_refs })
}

/// Step 6: deletes the doomed packs no index entry names any more, then
/// the `gc/` records that have served their purpose.
fn delete_doomed(ds: &Datastore, doomed: Doomed, rep: &mut GcReport) -> Result<()> {
    ds.refresh_index()?;
    let index = ds.index();
    let mut referenced: HashSet<PackId> = HashSet::new();
    index.for_each_blob(|_, loc| {
        referenced.insert(loc.pack);
        Ok(())
    })?;
    let mut batch = IndexBatch::default();
    let mut files = Vec::new();
    for p in &doomed.packs {
        batch.delete_refs.push(ref_key(REF_DOOMED_PACK, &p.0));
        if referenced.contains(p) {
            continue;
        }
        batch.delete_packs.push(*p);
        files.push(pack_path(ds.root(), p));
    }
    if !batch.is_empty() {
        index::commit(&ds.index_path(), batch)?;
    }
    for f in &files {
        crate::failpoint::hit("gc-delete")?;
        if let Ok(m) = std::fs::metadata(f) {
            rep.bytes_freed += m.len();
        }
        match std::fs::remove_file(f) {
            Ok(()) => rep.packs_deleted += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("delete", f, e)),
        }
    }
    let index_path = ds.index_path();
    let mut batch = ChunkedBatch::new(&index_path, CHUNK);
    for k in doomed.stale_refs {
        batch.add(|b| b.delete_refs.push(k))?;
    }
    index.for_each_ref(REF_DOOMED_BLOB, |k, _| batch.add(|b| b.delete_refs.push(k.to_vec())))?;
    batch.flush()
}

/// Reads a blob's plain bytes (a cache in front of the datastore, say).
type BlobReader<'a> = dyn Fn(&BlobId) -> Result<Vec<u8>> + 'a;

/// Marks a snapshot document and everything under its root tree.
fn mark_snapshot(ds: &Datastore, sid: &BlobId, root: &BlobId, marks: &mut MarkSet, read: Option<&BlobReader<'_>>) -> Result<()> {
    marks.insert(sid);
    let mut stack = vec![*root];
    while let Some(t) = stack.pop() {
        if !marks.insert_tree(&t) {
            continue;
        }
        let c = match read {
            Some(read) => ds.dir_cursor_with(&t, read),
            None => ds.dir_cursor(&t),
        };
        let mut c = c.map_err(|e| StoreError::GcStopped { reason: format!("cannot read directory tree {t} of snapshot {}: {e}", sid.short()) })?;
        while let Some(n) = c.next_node()? {
            for b in &n.content {
                marks.insert(b);
            }
            if n.kind == NodeKind::Dir {
                if let Some(st) = n.subtree {
                    stack.push(st);
                }
            }
        }
        for p in &c.pages {
            marks.insert(p);
        }
    }
    Ok(())
}

fn mark_forget_records(index: &IndexReader, marks: &mut MarkSet) -> Result<()> {
    index.for_each_ref(crate::forget::REF_FORGET, |k, _| {
        if let Ok(b) = <[u8; 32]>::try_from(&k[crate::forget::REF_FORGET.len()..]) {
            marks.insert(&BlobId(b));
        }
        Ok(())
    })
}

/// Copies the live blobs of `repack` into new packs, verifying each, and
/// moves their index entries. Returns the packs that held a damaged live
/// blob: those are kept whole.
#[allow(clippy::too_many_arguments)]
fn repack_live(ds: &Datastore, index: &IndexReader, marks: &MarkSet, repack: &HashSet<PackId>, total: u64, rep: &mut GcReport, on_event: &dyn Fn(GcEvent)) -> Result<HashSet<PackId>> {
    let root = ds.root();
    let mut live: Vec<(BlobId, BlobLocation)> = Vec::new();
    index.for_each_blob(|id, loc| {
        if repack.contains(&loc.pack) && marks.contains(&id) {
            live.push((id, loc));
        }
        Ok(())
    })?;
    live.sort_by_key(|(_, l)| (l.pack, l.offset));
    let mut done = 0u64;
    let mut damaged = HashSet::new();
    let mut writer: Option<PackWriter> = None;
    let mut from: HashMap<BlobId, PackId> = HashMap::new();
    let mut open: Option<(PackId, Arc<File>)> = None;
    let target = ds.config().pack_target;
    for (id, loc) in live {
        crate::failpoint::hit("gc-repack")?;
        if let Err(e) = ds.read_blob_at(&id, &loc) {
            tracing::warn!("gc: keeping pack {} whole: {e}", loc.pack);
            rep.damaged_blobs += 1;
            damaged.insert(loc.pack);
            continue;
        }
        if open.as_ref().map(|o| o.0) != Some(loc.pack) {
            let path = pack_path(root, &loc.pack);
            let f = File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
            open = Some((loc.pack, Arc::new(f)));
        }
        let (_, f) = open.as_ref().unwrap();
        let (header, stored) = crate::pack::read_record(f, &pack_path(root, &loc.pack), &loc)?;
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(PackWriter::create(root)?),
        };
        w.append(header, &stored)?;
        from.insert(id, loc.pack);
        done += record_len(&loc);
        rep.bytes_repacked += record_len(&loc);
        if w.len() >= target {
            commit_repacked(ds, writer.take().unwrap(), &mut from)?;
            on_event(GcEvent::Repacking { done, total });
        }
    }
    if let Some(w) = writer.take().filter(|w| !w.is_empty()) {
        commit_repacked(ds, w, &mut from)?;
    }
    on_event(GcEvent::Repacking { done: total, total });
    Ok(damaged)
}

fn commit_repacked(ds: &Datastore, w: PackWriter, from: &mut HashMap<BlobId, PackId>) -> Result<()> {
    let sealed = w.seal(ds.root())?;
    let mut batch = IndexBatch::default();
    batch.packs.push((sealed.id, PackInfo { len: sealed.len, blobs: sealed.blobs.len() as u32 }));
    for (id, loc) in &sealed.blobs {
        if let Some(old) = from.remove(id) {
            batch.relocate_blobs.push((*id, old, *loc));
        }
    }
    index::commit(&ds.index_path(), batch)?;
    drop(sealed);
    Ok(())
}

/// Deletes pack files the index does not list: sealed by a writer that
/// died before its commit. A live writer holds its pack's lock until the
/// commit, so a file is judged only while we hold its lock, against an
/// index view opened after taking it.
pub fn remove_orphan_packs(ds: &Datastore) -> Result<(u64, u64)> {
    ds.refresh_index()?;
    let known: HashSet<PackId> = ds.index().packs()?.into_iter().map(|(id, _)| id).collect();
    let mut held = Vec::new();
    for crate::datastore::PackFile { id, path, len } in ds.pack_files()? {
        if known.contains(&id) {
            continue;
        }
        let Ok(f) = File::open(&path) else { continue };
        if crate::fsutil::try_lock_exclusive(&f).unwrap_or(false) {
            held.push((id, path, len, f));
        }
    }
    if held.is_empty() {
        return Ok((0, 0));
    }
    ds.refresh_index()?;
    let known: HashSet<PackId> = ds.index().packs()?.into_iter().map(|(id, _)| id).collect();
    let (mut n, mut bytes) = (0, 0);
    for (id, path, len, _lock) in held {
        if known.contains(&id) {
            continue;
        }
        crate::failpoint::hit("gc-delete")?;
        if std::fs::remove_file(&path).is_ok() {
            n += 1;
            bytes += len;
        }
    }
    Ok((n, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(live: u64, dead: u64, dead_bytes: u64) -> PackUse {
        PackUse { live, dead, dead_bytes, indexed_bytes: 0 }
    }

    #[test]
    fn verdicts_follow_liveness_threshold_and_age() {
        let j = |u: PackUse, young: bool| PackVerdict::judge(&u, 1000, || young, 0.25);
        assert_eq!(j(used(3, 0, 0), false), PackVerdict::Keep);
        assert_eq!(j(used(0, 2, 900), false), PackVerdict::Delete);
        assert_eq!(j(used(1, 2, 250), false), PackVerdict::Repack, "at the threshold");
        assert_eq!(j(used(1, 2, 249), false), PackVerdict::KeepPartlyUsed);
        assert_eq!(j(used(0, 2, 900), true), PackVerdict::Young);
        assert_eq!(j(used(1, 1, 900), true), PackVerdict::Young);
        // A pack without garbage is never asked its age.
        assert_eq!(PackVerdict::judge(&used(3, 0, 0), 1000, || panic!("stat of a clean pack"), 0.25), PackVerdict::Keep);
    }

    #[test]
    fn unindexed_records_count_as_garbage() {
        // Two records indexed (100 bytes), the pack says three and 32 +
        // 150 bytes: one record's 50 bytes are a copy the index does not
        // name.
        let u = PackUse { live: 2, dead: 0, dead_bytes: 0, indexed_bytes: 100 }.with_unindexed(&PackInfo { len: crate::pack::PACK_HEADER_LEN + 150, blobs: 3 });
        assert_eq!((u.live, u.dead, u.dead_bytes), (2, 1, 50));
        let u = PackUse { live: 2, dead: 0, dead_bytes: 0, indexed_bytes: 100 }.with_unindexed(&PackInfo { len: crate::pack::PACK_HEADER_LEN + 100, blobs: 2 });
        assert_eq!((u.dead, u.dead_bytes), (0, 0));
    }

    #[test]
    fn a_plan_counts_what_it_would_free() {
        let ids: Vec<PackId> = (0..5u8).map(|i| PackId([i; 16])).collect();
        let len = crate::pack::PACK_HEADER_LEN + 1000;
        let packs: HashMap<PackId, PackInfo> = ids.iter().map(|p| (*p, PackInfo { len, blobs: 4 })).collect();
        let usage: HashMap<PackId, PackUse> = [
            (ids[0], PackUse { live: 4, dead: 0, dead_bytes: 0, indexed_bytes: 1000 }),
            (ids[1], PackUse { live: 0, dead: 4, dead_bytes: 1000, indexed_bytes: 1000 }),
            (ids[2], PackUse { live: 1, dead: 3, dead_bytes: 750, indexed_bytes: 1000 }),
            (ids[3], PackUse { live: 3, dead: 1, dead_bytes: 100, indexed_bytes: 1000 }),
            (ids[4], PackUse { live: 0, dead: 4, dead_bytes: 1000, indexed_bytes: 1000 }),
        ]
        .into_iter()
        .collect();
        let young = ids[4];
        let plan = GcPlan::new(packs, usage, |p| *p == young, 0.25);
        assert_eq!(plan.verdicts[&ids[0]], PackVerdict::Keep);
        assert_eq!(plan.verdicts[&ids[1]], PackVerdict::Delete);
        assert_eq!(plan.verdicts[&ids[2]], PackVerdict::Repack);
        assert_eq!(plan.verdicts[&ids[3]], PackVerdict::KeepPartlyUsed);
        assert_eq!(plan.verdicts[&ids[4]], PackVerdict::Young);
        let mut rep = GcReport::default();
        plan.count(&mut rep);
        plan.predict(&mut rep, 77);
        assert_eq!((rep.blobs_deleted, rep.partly_used_packs, rep.garbage_kept, rep.young_packs_skipped), (4 + 3, 1, 100, 1));
        assert_eq!((rep.packs_deleted, rep.packs_repacked), (1, 1));
        assert_eq!(rep.bytes_freed, 2 * len + 77);
        assert_eq!(rep.bytes_repacked, len - 750);
    }
    use crate::blob::BlobKind;
    use crate::config::DatastoreConfig;
    use crate::sink::BlobSink;
    use crate::snapshot::Snapshot;
    use crate::tree::{Node, Tree};
    use std::sync::Arc;

    fn file_node(name: &str, content: Vec<BlobId>) -> Node {
        Node::file(name.as_bytes(), 0o644, 0, 0, content)
    }

    use crate::testutil::noise;

    #[test]
    fn gc_frees_what_no_snapshot_needs_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatastoreConfig { pack_target: 64 << 10, ..DatastoreConfig::new() };
        let ds = Arc::new(Datastore::init_with(&dir.path().join("ds"), cfg).unwrap());

        // A snapshot that keeps one blob.
        let sink = BlobSink::new(ds.clone()).unwrap();
        let kept = sink.put(BlobKind::SmallFile, &noise(1, 100_000)).unwrap().id;
        let tree = sink.put(BlobKind::Tree, &Tree { nodes: vec![file_node("k", vec![kept])] }.encode()).unwrap().id;
        let snap = Snapshot::for_test(tree);
        sink.commit_snapshot(snap.encode()).unwrap();

        // A run that committed packs and then failed: no snapshot.
        let sink = BlobSink::new(ds.clone()).unwrap();
        let mut lost = Vec::new();
        for i in 0..8u8 {
            lost.push(sink.put(BlobKind::SmallFile, &noise(10 + i, 100_000)).unwrap().id);
        }
        sink.flush().unwrap();
        ds.refresh_index().unwrap();
        let before: u64 = ds.pack_files().unwrap().iter().map(|p| p.len).sum();

        let dry = gc(&ds, &GcOptions { dry_run: true, ..Default::default() }, &|_| {}).unwrap();
        assert!(dry.bytes_freed >= 8 * 100_000, "{dry:?}");
        assert_eq!(ds.pack_files().unwrap().iter().map(|p| p.len).sum::<u64>(), before, "dry run deletes nothing");

        let rep = gc(&ds, &GcOptions::default(), &|_| {}).unwrap();
        assert_eq!(rep.bytes_freed, dry.bytes_freed);
        let after: u64 = ds.pack_files().unwrap().iter().map(|p| p.len).sum();
        assert_eq!(before - after, rep.bytes_freed);
        assert!(ds.index().blob(&lost[0]).unwrap().is_none());
        assert_eq!(ds.read_blob(&kept).unwrap(), noise(1, 100_000));
        let check = crate::check::check(&ds, crate::check::CheckDepth::ReadData, &|_| {}).unwrap();
        assert!(check.ok(), "{check:?}");
    }

    #[test]
    fn gc_reclaims_the_copy_of_a_blob_the_index_does_not_point_to() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatastoreConfig { pack_target: 1 << 20, ..DatastoreConfig::new() };
        let ds = Arc::new(Datastore::init_with(&dir.path().join("ds"), cfg).unwrap());
        let sink = BlobSink::new(ds.clone()).unwrap();
        let twice = sink.put(BlobKind::SmallFile, &noise(1, 100_000)).unwrap().id;
        let once = sink.put(BlobKind::SmallFile, &noise(2, 20_000)).unwrap().id;
        let nodes = vec![file_node("once", vec![once]), file_node("twice", vec![twice])];
        let tree = sink.put(BlobKind::Tree, &Tree { nodes }.encode()).unwrap().id;
        let snap = Snapshot::for_test(tree);
        sink.commit_snapshot(snap.encode()).unwrap();
        let first = ds.index().blob(&twice).unwrap().unwrap();

        // Another process stored the same blob at the same time, and its
        // commit pointed the index at its copy: the first pack's record is
        // garbage now, though no index entry is left to say so.
        let path = pack_path(ds.root(), &first.pack);
        let (header, stored) = crate::pack::read_record(&File::open(&path).unwrap(), &path, &first).unwrap();
        let mut w = PackWriter::create(ds.root()).unwrap();
        w.append(header, &stored).unwrap();
        let sealed = w.seal(ds.root()).unwrap();
        let batch = IndexBatch { packs: vec![(sealed.id, PackInfo { len: sealed.len, blobs: 1 })], blobs: sealed.blobs.clone(), ..Default::default() };
        index::commit(&ds.index_path(), batch).unwrap();
        drop(sealed);
        ds.refresh_index().unwrap();
        let before: u64 = ds.pack_files().unwrap().iter().map(|p| p.len).sum();

        let dry = gc(&ds, &GcOptions { dry_run: true, ..Default::default() }, &|_| {}).unwrap();
        assert_eq!(dry.packs_repacked, 1, "{dry:?}");
        let rep = gc(&ds, &GcOptions::default(), &|_| {}).unwrap();
        assert_eq!(rep.packs_repacked, 1, "{rep:?}");
        let after: u64 = ds.pack_files().unwrap().iter().map(|p| p.len).sum();
        assert!(after + 100_000 <= before, "{before} -> {after} pack bytes: {rep:?}");
        assert_ne!(ds.index().blob(&twice).unwrap().unwrap().pack, first.pack);
        assert_eq!(ds.read_blob(&twice).unwrap(), noise(1, 100_000));
        assert_eq!(ds.read_blob(&once).unwrap(), noise(2, 20_000));
        let check = crate::check::check(&ds, crate::check::CheckDepth::ReadData, &|_| {}).unwrap();
        assert!(check.ok(), "{check:?}");

        // Nothing is garbage any more.
        let again = gc(&ds, &GcOptions::default(), &|_| {}).unwrap();
        assert_eq!((again.packs_repacked, again.packs_deleted, again.partly_used_packs), (0, 0, 0), "{again:?}");
    }
}
