//! `/etc/lifeboat/lifeboat.toml`. Every key has a default, so no file at
//! all gives a working appliance: state under /var/lib/lifeboat, one
//! datastore `default` inside it, the API on port 8007 over TLS.

use crate::{io_err, Result, StateError};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/lifeboat/lifeboat.toml";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where auth, job history, schedules, settings and the TLS
    /// certificate live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The API's TLS listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// An extra plain-HTTP listener; refused unless it is a loopback
    /// address (for local tools and tests).
    #[serde(default)]
    pub listen_plain: Option<SocketAddr>,
    /// IANA time zone schedules are read in.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// How long a login session lasts, in minutes.
    #[serde(default = "default_session_minutes")]
    pub session_minutes: u64,
    /// Jobs kept in the history (oldest finished ones are dropped).
    #[serde(default = "default_job_history")]
    pub job_history: usize,
    /// Where the NBD server for exports (`/api/exports`) listens; port 0
    /// picks a free one. Loopback by default: NBD has no authentication,
    /// so only open it to a storage network you trust.
    #[serde(default = "default_nbd_listen")]
    pub nbd_listen: SocketAddr,
    /// The accelerator QEMU runs restored VMs with (instant restore, and
    /// later the lab): `auto` uses KVM when a test kernel boots under it
    /// (probed once per boot) and TCG software emulation otherwise; `kvm`
    /// or `tcg` force one. `lifeboat vm instant-restore --accel` overrides it.
    #[serde(default = "default_qemu_accel")]
    pub qemu_accel: String,
    /// Datastores configured here; more can be added through the API
    /// (those are kept in the state directory).
    #[serde(default, rename = "datastore")]
    pub datastores: Vec<DatastoreEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreEntry {
    pub name: String,
    pub path: PathBuf,
    /// Key file for an encrypted datastore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/lifeboat")
}
fn default_listen() -> SocketAddr {
    "0.0.0.0:8007".parse().unwrap()
}
fn default_timezone() -> String {
    "UTC".into()
}
fn default_session_minutes() -> u64 {
    120
}
fn default_job_history() -> usize {
    1000
}
fn default_qemu_accel() -> String {
    "auto".into()
}
fn default_nbd_listen() -> SocketAddr {
    "127.0.0.1:10809".parse().unwrap()
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("the empty config is valid")
    }
}

impl Config {
    /// Reads `path`; a missing file at the default path gives the
    /// defaults, a missing file named explicitly is an error.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let cfg: Config = toml::from_str(&text).map_err(|e| StateError::Parse { path: path.clone(), message: e.to_string() })?;
        cfg.validate().map_err(|m| StateError::Parse { path, message: m })?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if let Some(a) = self.listen_plain {
            if !a.ip().is_loopback() {
                return Err(format!(
                    "listen_plain = \"{a}\": plain HTTP is only allowed on a loopback address (127.0.0.1 or ::1); use the TLS listener for remote access"
                ));
            }
        }
        for d in &self.datastores {
            validate_name(&d.name)?;
        }
        if !matches!(self.qemu_accel.as_str(), "auto" | "kvm" | "tcg") {
            return Err(format!("qemu_accel = {:?}: expected \"auto\", \"kvm\" or \"tcg\"", self.qemu_accel));
        }
        if self.session_minutes == 0 {
            return Err("session_minutes must be at least 1".into());
        }
        Ok(())
    }

    /// The configured datastores, or the embedded default when none is.
    pub fn effective_datastores(&self) -> Vec<DatastoreEntry> {
        if self.datastores.is_empty() {
            vec![DatastoreEntry { name: "default".into(), path: self.state_dir.join("datastores/default"), key_file: None }]
        } else {
            self.datastores.clone()
        }
    }
}

/// Names that are safe in URLs and file names.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid name {name:?}: use 1-64 letters, digits, '-' or '_'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let c = Config::default();
        assert_eq!(c.listen.port(), 8007);
        assert_eq!(c.effective_datastores()[0].path, PathBuf::from("/var/lib/lifeboat/datastores/default"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "listen_plain = \"0.0.0.0:8080\"\n").unwrap();
        let e = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("loopback"), "{e}");
        std::fs::write(&p, "lissen = \"x\"\n").unwrap();
        let e = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
        assert!(Config::load(Some(&dir.path().join("nope.toml"))).is_err());
        std::fs::write(&p, "[[datastore]]\nname = \"a/b\"\npath = \"/x\"\n").unwrap();
        assert!(Config::load(Some(&p)).unwrap_err().to_string().contains("invalid name"));
        assert_eq!(c.qemu_accel, "auto");
        std::fs::write(&p, "qemu_accel = \"kvm:tcg\"\n").unwrap();
        assert!(Config::load(Some(&p)).unwrap_err().to_string().contains("qemu_accel"));
    }
}

/// Datastores added through the API, kept beside the other state (the
/// config file may be read-only, e.g. on a firmware image).
pub fn added_datastores(state_dir: &Path) -> Result<Vec<DatastoreEntry>> {
    Ok(crate::read_json(&state_dir.join("datastores.json"))?.unwrap_or_default())
}

pub fn save_added_datastores(state_dir: &Path, list: &[DatastoreEntry]) -> Result<()> {
    crate::write_json(&state_dir.join("datastores.json"), &list, 0o640)
}
