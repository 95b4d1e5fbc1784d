//! Lifeboat's NBD server.
//!
//! Instant restore and the verification lab boot guests straight from a
//! backup: QEMU (or any NBD client) opens `nbd://appliance/<export>` and
//! reads the disk while it is still in the datastore. This crate is that
//! server, and only the protocol: it serves anything implementing
//! [`BlockDevice`], so it knows nothing of the datastore (the VM crate will
//! plug a datastore-backed disk in). It ships [`FileDevice`] (a raw image
//! file, sparse-aware) and [`CowOverlay`], a writable layer over a
//! read-only device whose writes go to an overlay file and never reach the
//! base, so a booted backup stays the backup.
//!
//! Protocol coverage: fixed-newstyle handshake (NO_ZEROES), OPT_GO, INFO,
//! LIST, ABORT, EXPORT_NAME, STRUCTURED_REPLY, LIST/SET_META_CONTEXT with
//! `base:allocation`, STARTTLS (rustls); commands READ (structured, holes
//! as hole chunks, DF), WRITE (FUA), FLUSH, TRIM, WRITE_ZEROES,
//! BLOCK_STATUS, DISC; several connections per export (CAN_MULTI_CONN).
//! Hostile input gets the protocol's error or a clean close: the pure
//! parsers in [`proto`] decide, and are fuzzed (see `fuzz/`).
//!
//! [`client`] is a small blocking client (structured replies, meta
//! contexts, READ, BLOCK_STATUS): the VM backup pulls disks from QEMU's
//! exports with it.
#![warn(missing_docs)]

pub mod client;
pub mod cow;
pub mod device;
pub mod proto;
pub mod server;
pub mod tls;

pub use cow::{CowOverlay, COW_BLOCK};
pub use device::{BlockDevice, Extent, FileDevice, ReadChunk};
pub use server::{Export, Server, ServerConfig};
pub use tls::TlsConfig;
