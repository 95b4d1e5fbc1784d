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

pub mod blob;
pub mod check;
pub mod config;
pub mod crypto;
pub mod datastore;
pub mod error;
pub mod failpoint;
pub mod forget;
pub mod fsutil;
pub mod gc;
pub mod id;
pub mod index;
pub mod markset;
pub mod pack;
mod pending;
pub mod repair;
pub mod retention;
pub mod sink;
pub mod snapshot;
pub mod tree;

pub use blob::BlobKind;
pub use config::{Compression, DatastoreConfig};
pub use crypto::KeySource;
pub use datastore::Datastore;
pub use error::{Result, StoreError};
pub use id::{BlobId, PackId};
pub use sink::{BlobSink, PutOutcome};
pub use snapshot::{BackupSummary, RootDir, Snapshot, SnapshotKind};
pub use tree::{Node, NodeExt, NodeKind, Tree};
