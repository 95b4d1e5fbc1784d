use lifeboat_store::StoreError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: source does not exist; check the path")]
    SourceMissing { path: PathBuf },
    #[error("{path}: {source}")]
    Source {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sources {a} and {b} have the same name '{name}'; back them up separately")]
    SourceNameClash { a: PathBuf, b: PathBuf, name: String },
    #[error("bad exclude pattern '{pattern}': {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("restore target {path}: {source}")]
    Target {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("'{path}' is not in the snapshot")]
    NotInSnapshot { path: String },
    #[error("interrupted; nothing was committed for this run (earlier snapshots are intact)")]
    Interrupted,
    /// The appliance a remote agent backs up to (crates/remote).
    #[error("appliance {server}: {message}")]
    Remote { server: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;

impl IngestError {
    pub fn is_interrupted(&self) -> bool {
        matches!(self, IngestError::Interrupted | IngestError::Store(StoreError::Interrupted))
    }
}
