//! The journal's index (RocksDB, two column families). `blocks`: key =
//! 4 KiB block number and write time (both big endian, so a block's
//! writes sort by time), value = where that write's bytes are. `meta`:
//! how far the segments are indexed. Derived data: `Journal::open`
//! rebuilds it from the segments when it is behind or gone.

use crate::{CdpError, Result};
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use std::path::{Path, PathBuf};

const CF_BLOCKS: &str = "blocks";
const CF_META: &str = "meta";
const APPLIED: &[u8] = b"applied";

/// Where one write's bytes are, as the index keeps it per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub time: u64,
    pub segment: u32,
    /// File offset of the record's data (unused for a zeroed range).
    pub data_pos: u64,
    /// The write's range on the volume.
    pub offset: u64,
    pub len: u32,
    pub zero: bool,
}

impl Entry {
    fn value(&self) -> [u8; 25] {
        let mut v = [0u8; 25];
        v[..4].copy_from_slice(&self.segment.to_le_bytes());
        v[4..12].copy_from_slice(&self.data_pos.to_le_bytes());
        v[12..20].copy_from_slice(&self.offset.to_le_bytes());
        v[20..24].copy_from_slice(&self.len.to_le_bytes());
        v[24] = self.zero as u8;
        v
    }
    fn decode(time: u64, v: &[u8]) -> Option<Entry> {
        (v.len() == 25).then(|| Entry {
            time,
            segment: u32::from_le_bytes(v[..4].try_into().unwrap()),
            data_pos: u64::from_le_bytes(v[4..12].try_into().unwrap()),
            offset: u64::from_le_bytes(v[12..20].try_into().unwrap()),
            len: u32::from_le_bytes(v[20..24].try_into().unwrap()),
            zero: v[24] != 0,
        })
    }
}

fn key(block: u64, time: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&block.to_be_bytes());
    k[8..].copy_from_slice(&time.to_be_bytes());
    k
}

pub struct BlockIndex {
    db: DB,
    path: PathBuf,
}

fn options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_keep_log_file_num(2);
    o.set_max_log_file_size(0);
    o.set_log_level(rocksdb::LogLevel::Warn);
    o.set_compression_type(rocksdb::DBCompressionType::None);
    o.set_manifest_preallocation_size(64 << 10);
    o
}

impl BlockIndex {
    pub fn open(path: &Path) -> Result<BlockIndex> {
        let cfs = [CF_BLOCKS, CF_META].map(|n| ColumnFamilyDescriptor::new(n, options()));
        let db = DB::open_cf_descriptors(&options(), path, cfs).map_err(|e| CdpError::Index { path: path.display().to_string(), message: e.to_string() })?;
        Ok(BlockIndex { db, path: path.to_path_buf() })
    }

    fn err(&self, e: rocksdb::Error) -> CdpError {
        CdpError::Index { path: self.path.display().to_string(), message: e.to_string() }
    }

    fn cf(&self, n: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(n).expect("column family opened with the index")
    }

    /// (segment, byte) up to which the segments are indexed, and the
    /// time of the newest write indexed.
    pub fn applied(&self) -> Result<Option<((u32, u64), u64)>> {
        let v = self.db.get_cf(self.cf(CF_META), APPLIED).map_err(|e| self.err(e))?;
        Ok(v.filter(|v| v.len() == 20).map(|v| {
            let u64_at = |i: usize| u64::from_le_bytes(v[i..i + 8].try_into().unwrap());
            ((u32::from_le_bytes(v[..4].try_into().unwrap()), u64_at(4)), u64_at(12))
        }))
    }

    /// Indexes writes and moves the applied mark, atomically. Without
    /// RocksDB's WAL: the segments are the log, and what a crash loses
    /// here is indexed again from them at the next open.
    pub fn add(&self, entries: &[Entry], applied: (u32, u64)) -> Result<()> {
        let newest = entries.iter().map(|e| e.time).max().unwrap_or(0);
        let mut b = WriteBatch::default();
        let cf = self.cf(CF_BLOCKS);
        for e in entries {
            let len = e.len.max(1) as u64;
            let (first, last) = (e.offset / crate::BLOCK, (e.offset + len - 1) / crate::BLOCK);
            let v = e.value();
            for block in first..=last {
                b.put_cf(cf, key(block, e.time), v);
            }
        }
        let mut a = [0u8; 20];
        a[..4].copy_from_slice(&applied.0.to_le_bytes());
        a[4..12].copy_from_slice(&applied.1.to_le_bytes());
        a[12..].copy_from_slice(&newest.to_le_bytes());
        b.put_cf(self.cf(CF_META), APPLIED, a);
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(b, &wo).map_err(|e| self.err(e))
    }

    /// The writes that touched `block` at or before `at`, newest first;
    /// `f` returns false to stop.
    pub fn newest_first(&self, block: u64, at: u64, mut f: impl FnMut(Entry) -> Result<bool>) -> Result<()> {
        let start = key(block, at);
        for item in self.db.iterator_cf(self.cf(CF_BLOCKS), IteratorMode::From(&start, Direction::Reverse)) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if k.len() != 16 || k[..8] != block.to_be_bytes() {
                break;
            }
            let time = u64::from_be_bytes(k[8..].try_into().unwrap());
            let Some(e) = Entry::decode(time, &v) else { return Err(CdpError::Index { path: self.path.display().to_string(), message: format!("bad entry for block {block}") }) };
            if !f(e)? {
                break;
            }
        }
        Ok(())
    }

    /// Flushes the memtable, so a clean close leaves nothing to redo.
    pub fn flush(&self) -> Result<()> {
        for n in [CF_BLOCKS, CF_META] {
            self.db.flush_cf(self.cf(n)).map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}
