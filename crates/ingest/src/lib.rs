//! Lifeboat's file backup and restore engine.
//!
//! `backup` walks the sources in parallel (rayon's work-stealing: wide
//! directories split across threads, deep ones don't serialize), reads,
//! chunks, hashes and compresses files as they are found and hands blobs
//! to the datastore's `BlobSink`: scan and transfer overlap, and memory is
//! bounded by the directories in flight, never by the file count. Files
//! whose (size, mtime, ctime, inode) match the parent snapshot are not read.
//! `restore` writes a snapshot (or parts of it) back in parallel.

#![warn(missing_docs)]

pub mod attrs;
pub mod backup;
pub(crate) mod chunker;
pub mod error;
pub mod exclude;
pub(crate) mod fsat;
pub(crate) mod meta;
pub mod progress;
pub(crate) mod readahead;
pub mod restore;
pub mod scan;

pub use backup::{archive, backup, resolve_sources, Archived, BackupOptions, BackupOutcome, BackupTarget, ChunkParams, LocalTarget, ParentTree};
pub use error::{IngestError, Result};
pub use lifeboat_api_types::BackupSelection;
pub use progress::Progress;
pub use restore::{restore, RestoreOptions, RestoreOutcome};

/// This machine's host name as a snapshot records it ("localhost" when
/// it cannot be read).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
