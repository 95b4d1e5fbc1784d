//! What the daemon keeps besides the datastores: its configuration file
//! (TOML, every key with a default) and its state directory — the admin
//! password and API tokens (`auth`), job history (`jobs`), schedules
//! (`schedules`), settings (`settings`: the SMTP relay) and registered
//! VMs (`vms`). A pure library: the console TUI sets the
//! admin password through the same `AuthStore` the API checks it with.
//!
//! Every file is written whole to a temporary name, fsynced and renamed,
//! so a crash leaves the old or the new version, never half of one.

#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod confine;
pub mod console;
pub mod jobs;
pub mod labs;
pub mod schedules;
pub mod settings;
pub mod vms;

pub use auth::{AuthStore, Principal};
pub use config::{Config, DatastoreEntry, RestoreRoot};
pub use confine::{Confinement, Grant, PathUse};
pub use jobs::JobStore;
pub use labs::LabStore;
pub use schedules::ScheduleStore;
pub use settings::SettingsStore;
pub use vms::{VmEntry, VmStore};

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why reading or changing the configuration or a state file failed.
/// The variants map onto answers the API gives: `Invalid` a bad request,
/// `NotFound` a 404, `Conflict` a 409; `Io` and `Parse` are the
/// appliance's own fault.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing or renaming a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file exists but does not parse (bad JSON or TOML) or, for the
    /// config file, fails `Config::validate`. Nothing is overwritten: the
    /// admin has to repair or move the file.
    #[error("{path}: {message}")]
    Parse {
        /// The file that does not parse.
        path: PathBuf,
        /// What is wrong with it, for the admin.
        message: String,
    },
    /// The caller's input is refused (a bad name, a weak password ...);
    /// the message says why.
    #[error("{0}")]
    Invalid(String),
    /// The named item (its words, e.g. `token 1a2b`) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// An item of that name (or for that VM) exists already.
    #[error("{0}")]
    Conflict(String),
}

/// `Result` with a [`StateError`].
pub type Result<T> = std::result::Result<T, StateError>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_path_buf(), source }
}

/// Writes `data` to `path` atomically with `mode` (0600 for secrets).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("state")));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads and parses a JSON state file; `None` if it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| StateError::Parse { path: path.to_path_buf(), message: format!("{e} (restore it from a backup or move it aside)") }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::Io { path: path.to_path_buf(), source: e }),
    }
}

/// Writes `value` as pretty JSON through [`write_atomic`] with `mode`.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T, mode: u32) -> Result<()> {
    let b = serde_json::to_vec_pretty(value).expect("state serializes");
    write_atomic(path, &b, mode)
}

/// `bytes` random bytes from the OS, hex-encoded (so `2 * bytes`
/// characters): ids and secrets.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::getrandom(&mut b).expect("the OS random source works");
    hex::encode(b)
}
