use std::path::PathBuf;

/// Everything that can go wrong inside the datastore. Messages name the
/// thing that failed and, where there is one, what the admin can do.
#[derive(Debug, thiserror::Error)]
// Each variant's `#[error]` text, which names its fields, is its
// documentation; repeating it per field would only add noise.
#[allow(missing_docs)]
pub enum StoreError {
    #[error("{path}: not a Lifeboat datastore (no {file}); create one with `lifeboat datastore init {path}`", file = crate::config::CONFIG_FILE)]
    NotADatastore { path: PathBuf },

    #[error("{path}: already exists and is not empty; choose a new directory for the datastore")]
    AlreadyExists { path: PathBuf },

    #[error("{path}: datastore format version {found} is not supported by this lifeboat (supports {supported}); use a lifeboat release that knows this version")]
    UnsupportedVersion { path: PathBuf, found: u32, supported: u32 },

    #[error("{path}: datastore config is damaged: {reason}")]
    BadConfig { path: PathBuf, reason: String },

    #[error("{path}: datastore uses feature '{feature}' that this lifeboat does not support; use a lifeboat release that knows it")]
    UnsupportedFeature { path: PathBuf, feature: String },

    #[error("datastore {path} is encrypted: give --password-file, --key-file or LIFEBOAT_PASSWORD")]
    KeyRequired { path: PathBuf },

    #[error("the passphrase or key file does not unlock datastore {path}")]
    WrongKey { path: PathBuf },

    #[error("{reason}")]
    BadKey { reason: String },

    #[error("datastore {path}: {reason}")]
    KeySlot { path: PathBuf, reason: String },

    #[error("datastore disk is full while writing {path}; free space on that filesystem and run the backup again (earlier snapshots are intact; the partial pack was removed)")]
    DiskFull { path: PathBuf },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("datastore index {path}: {message}")]
    Index { path: PathBuf, message: String },

    #[error("blob {id} was being stored by another backup into datastore {path}, which failed before committing it, so this backup's snapshot was not committed (it would name missing data); run the backup again")]
    SharedBlobLost { id: String, path: PathBuf },

    #[error("datastore index {path} is locked by another lifeboat process for more than {secs} s; is a stuck process holding it?")]
    IndexLocked { path: PathBuf, secs: u64 },

    #[error("blob {id} is not in the datastore index; run `lifeboat check --read-data` to see which snapshots are affected")]
    MissingBlob { id: String },

    #[error("blob {id} in pack {pack} is corrupt: {reason}; run `lifeboat check --read-data` to see which snapshots are affected")]
    CorruptBlob { id: String, pack: String, reason: String },

    #[error("pack {pack}: {reason}")]
    CorruptPack { pack: String, reason: String },

    #[error("no snapshot matches '{query}'; list them with `lifeboat snapshots`")]
    NoSuchSnapshot { query: String },

    #[error("'{query}' matches {count} snapshots; give more characters of the id")]
    AmbiguousSnapshot { query: String, count: usize },

    #[error("the datastore has no snapshots yet")]
    NoSnapshots,

    #[error("tree {id}: cannot decode: {reason}")]
    BadTree { id: String, reason: String },

    #[error("snapshot {id}: cannot decode: {reason}")]
    BadSnapshot { id: String, reason: String },

    #[error("datastore {path} is append-only: {op} is refused (it would remove data); turn it off with `lifeboat datastore config --datastore {path} --append-only false` on the appliance itself")]
    AppendOnly { path: PathBuf, op: &'static str },

    #[error("garbage collection stopped before deleting anything: {reason}; run `lifeboat check --read-data`, then `lifeboat datastore repair`")]
    GcStopped { reason: String },

    #[error("interrupted")]
    Interrupted,
}

/// The datastore's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Wraps an IO error, turning ENOSPC/EDQUOT into the dedicated
    /// disk-full error so the admin sees the real cause.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StoreError::DiskFull { path },
            _ => StoreError::Io { op, path, source },
        }
    }

    /// Stored data is gone or damaged (as opposed to a failure to reach
    /// the datastore at all): callers may skip what it belongs to.
    pub fn is_data_loss(&self) -> bool {
        matches!(self, StoreError::MissingBlob { .. } | StoreError::CorruptBlob { .. } | StoreError::CorruptPack { .. } | StoreError::BadTree { .. })
    }

    /// The datastore's filesystem (or quota) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. })
    }
}
