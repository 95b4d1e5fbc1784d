//! Continuous data protection (CDP): every write of a protected volume
//! is journaled, and the volume can be read as it was at any moment.
//!
//! - `record`: the journal's on-disk record (time, offset, length, data,
//!   CRC), appended to segment files.
//! - [`Journal`]: one protected volume. Writes are appended with a
//!   strictly increasing timestamp (nanoseconds since the Unix epoch);
//!   a RocksDB index keyed by (4 KiB block, time) finds, for any byte
//!   and any moment, the newest write at or before it. The index is
//!   derived data: it is rebuilt from the segments when it is behind or
//!   lost, and a torn record at the end of the last segment (a crash
//!   mid-append) is cut off at open.
//! - [`JournalTarget`] and [`PointInTime`]: the journal as NBD block
//!   devices. The first is the writable target a hypervisor mirrors a
//!   disk into (QEMU's `blockdev-mirror` to an NBD node); the second is
//!   a read-only view of one moment, to export, boot or restore.
//!
//! - [`ProtectedVm`]: a protected VM's journals, protection sessions and
//!   bookmarks under `<datastore>/cdp/<vm>/`.
//! - [`capture`]: a running QEMU's disk mirrored into a journal target
//!   (`blockdev-mirror`, write-blocking for sync mode).
//! - [`Replica`]: one protection run of a VM (capture + journals + the
//!   NBD targets), what the CLI's `cdp protect` and the daemon's
//!   `cdp-protect` job both run.
//! - [`restore`]: a moment written out as new images, or over the VM's
//!   own disk (rollback), through qemu-img.
//!
//! No actix here; the daemon's actors and the CLI drive it.
#![warn(missing_docs)]

pub mod capture;
mod device;
mod index;
mod journal;
pub mod policy;
mod protected;
mod record;
mod replica;
pub mod restore;

pub use device::{JournalTarget, PointInTime, SyncPolicy};
pub use journal::{Journal, JournalMeta, JournalOptions, BLOCK};
pub use policy::{check_policy, BookmarkClock};
pub use protected::{Bookmark, ProtectedVm, Session};
pub use replica::{open_journal, open_or_create, JournalOpener, Replica, ReplicaOptions};

/// What can go wrong with a journal; each names the file or the request.
#[derive(Debug, thiserror::Error)]
pub enum CdpError {
    /// Reading or writing a journal file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The journal's index (RocksDB) failed.
    #[error("journal index {path}: {message}")]
    Index {
        /// The index directory.
        path: String,
        /// RocksDB's message.
        message: String,
    },
    /// A record in the middle of the journal is damaged: data written
    /// after it cannot be trusted to be in order.
    #[error("journal segment {segment} is damaged at byte {pos}: {reason}; the journal is readable up to there only")]
    Damaged {
        /// The segment file.
        segment: String,
        /// Byte offset of the damaged record.
        pos: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The directory holds no journal, or one this version cannot read.
    #[error("{path}: {reason}")]
    NotAJournal {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// A request outside the volume or otherwise malformed.
    #[error("{0}")]
    Invalid(String),
    /// The journal is open elsewhere (a protection runs; RocksDB lets a
    /// journal be opened once).
    #[error("{0}")]
    InUse(String),
    /// Attaching to or detaching from the VM failed.
    #[error("{0}")]
    Capture(#[from] capture::CaptureError),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, CdpError>;

pub(crate) fn io_err(path: &std::path::Path, source: std::io::Error) -> CdpError {
    CdpError::Io { path: path.display().to_string(), source }
}

/// Replaces the file at `p` with `bytes` as one step: written beside it
/// as `<name>.tmp`, made durable, renamed over it.
pub(crate) fn write_atomic(p: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let mut name = p.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = p.with_file_name(name);
    std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, p).map_err(|e| io_err(p, e))
}

/// Nanoseconds since the Unix epoch, as a time in UTC.
pub fn time_of(ns: u64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32).unwrap_or_default()
}

/// A time in UTC as nanoseconds since the Unix epoch (0 before 1970).
pub fn ns_of(t: chrono::DateTime<chrono::Utc>) -> u64 {
    t.timestamp_nanos_opt().map(|n| n.max(0) as u64).unwrap_or(0)
}
