//! The Lifeboat datastore.
//!
//! Blobs (file chunks, small files, directory trees, VM chunks, snapshot
//! documents) are named by the BLAKE3 hash of their plain bytes, zstd
//! compressed, and appended to pack files. A RocksDB index maps each blob
//! to its pack and offset. Write order is pack -> fsync -> index commit, so
//! a crash at any point leaves at worst unreferenced pack bytes. The
//! on-disk format is documented in `docs/format.md`.
//!
//! This crate knows nothing of actors, the API or the CLI.
#![warn(missing_docs)]

mod blob;
mod check;
mod config;
mod crypto;
mod datastore;
mod error;
pub mod failpoint;
mod forget;
mod fsutil;
mod gc;
mod id;
mod index;
mod markset;
mod pack;
mod pending;
mod repair;
mod retention;
mod sink;
mod snapshot;
mod tree;

#[cfg(test)]
mod testutil;

// What everything stands on: ids and errors.
pub use error::{Result, StoreError};
pub use id::{BlobId, PackId};

// Opening a datastore and reading it.
pub use config::{Compression, DatastoreConfig, CONFIG_FILE, FEATURE_ENCRYPTION, FEATURE_LZ4};
pub use crypto::KeySource;
pub use datastore::{Datastore, DirCursor, PackFile, PartialPack};
pub use index::{BlobLocation, IndexReader};
pub use snapshot::{vm_source_path, BackupSummary, RootDir, Snapshot, SnapshotKind};
pub use tree::{Node, NodeCursor, NodeExt, NodeKind, Tree, TreeBlob, TreeWriter};

// Writing: every blob goes in through a sink.
pub use sink::{BlobSink, BuiltPack, PutOutcome, SinkStats};

// The record and pack format, for writers that build packs elsewhere
// (the backup agent) and the server that verifies them.
pub use blob::{decode_slice as decode_stored, encode as encode_plain, BlobKind, Codec, Encoding, RecordError, RecordHeader, RECORD_HEADER_LEN};
pub use pack::{pack_path, PACK_HEADER_LEN, PACK_MAGIC};

// Maintenance, one operation each.
pub use check::{check, CheckDepth, CheckReport};
pub use forget::forget_snapshots;
pub use gc::{gc, GcEvent, GcOptions, GcReport};
pub use repair::{prepare as prepare_repair, repair, LostBlob, RepairReport};
pub use retention::{group_by_source, GroupKey, KeepDecision, KeepPolicy};
