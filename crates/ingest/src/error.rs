//! The error type of backups and restores. An `IngestError` ends the whole
//! run; a backup's trouble with single entries (unreadable, vanished) and
//! metadata a restore cannot set are warnings in `Progress` instead.

use lifeboat_store::StoreError;
use std::path::PathBuf;

/// Why a backup or restore stopped. Nothing is committed by a backup that
/// returns one of these.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A backup source (or the whole list, when none was given) does not
    /// exist.
    #[error("{path}: source does not exist; check the path")]
    SourceMissing {
        /// The source as the caller gave it (not canonicalized).
        path: PathBuf,
    },
    /// A backup source exists but cannot be resolved, opened or stat'ed.
    /// Also used when the backup's worker thread pool cannot be built
    /// (`path` is then "thread pool").
    #[error("{path}: {source}")]
    Source {
        /// The source (or its parent directory) that failed.
        path: PathBuf,
        /// The underlying system error.
        #[source]
        source: std::io::Error,
    },
    /// Two sources of one backup end in the same file name, so they
    /// would be the same entry of the snapshot's root directory.
    #[error("sources {a} and {b} have the same name '{name}'; back them up separately")]
    SourceNameClash {
        /// The first source with that name.
        a: PathBuf,
        /// The second source with that name.
        b: PathBuf,
        /// The clashing name (lossily converted to UTF-8).
        name: String,
    },
    /// An exclude pattern is not a valid glob.
    #[error("bad exclude pattern '{pattern}': {reason}")]
    BadPattern {
        /// The offending pattern (all patterns, space-separated, when the
        /// set as a whole failed to build).
        pattern: String,
        /// What the glob parser said.
        reason: String,
    },
    /// Writing into the restore target failed in a way that stops the
    /// restore: the target itself cannot be created or opened, or an
    /// entry cannot be created or written (including the restore's worker
    /// thread pool failing to start). Metadata that cannot be set is only
    /// a warning.
    #[error("restore target {path}: {source}")]
    Target {
        /// The target directory, or the entry in it, that failed.
        path: PathBuf,
        /// The underlying system error.
        #[source]
        source: std::io::Error,
    },
    /// A path the caller asked to restore (`RestoreOptions::includes`)
    /// names nothing in the snapshot. Checked before anything is written.
    #[error("'{path}' is not in the snapshot")]
    NotInSnapshot {
        /// The include as the caller gave it.
        path: String,
    },
    /// `Progress::cancel` was set. Use `is_interrupted`, which also
    /// recognises the datastore's own cancellation error.
    #[error("interrupted; nothing was committed for this run (earlier snapshots are intact)")]
    Interrupted,
    /// The appliance a remote agent backs up to (crates/remote).
    #[error("appliance {server}: {message}")]
    Remote {
        /// Where the appliance is, as its transport names it (for
        /// messages).
        server: String,
        /// What went wrong, as a message for the user.
        message: String,
    },
    /// The datastore failed (reading the parent's trees or a snapshot's
    /// blobs, storing blobs, committing the snapshot).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `std::result::Result` with `IngestError` as the default error.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;

impl IngestError {
    /// True when the run stopped because it was cancelled (this crate's
    /// `Interrupted` or the datastore's `StoreError::Interrupted`), as
    /// opposed to failing.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, IngestError::Interrupted | IngestError::Store(StoreError::Interrupted))
    }
}
