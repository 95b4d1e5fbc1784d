//! What the daemon keeps besides the datastores: its configuration file
//! (TOML, every key with a default) and its state directory — the admin
//! password and API tokens (`auth`), job history (`jobs`), schedules
//! (`schedules`), settings (`settings`: the SMTP relay) and registered
//! VMs (`vms`). A pure library: the console TUI sets the
//! admin password through the same `AuthStore` the API checks it with.
//!
//! Every file is written whole to a temporary name, fsynced and renamed,
//! so a crash leaves the old or the new version, never half of one.

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

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

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

pub fn write_json<T: serde::Serialize>(path: &Path, value: &T, mode: u32) -> Result<()> {
    let b = serde_json::to_vec_pretty(value).expect("state serializes");
    write_atomic(path, &b, mode)
}

/// 32 random bytes as hex: ids and secrets.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::getrandom(&mut b).expect("the OS random source works");
    hex::encode(b)
}
