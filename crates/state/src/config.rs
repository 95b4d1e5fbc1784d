//! `/etc/lifeboat/lifeboat.toml`. Every key has a default, so no file at
//! all gives a working appliance: state under /var/lib/lifeboat, one
//! datastore `default` inside it, the API on port 8007 over TLS, backup
//! jobs reading under /srv and /home, restores writing under
//! /srv/lifeboat/restores (`backup_roots`, `restore_roots`; see
//! `crate::confine` and docs/security.md).

use crate::{io_err, Result, StateError};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where [`Config::load`] looks when no path is given; a missing file
/// there means all defaults.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/lifeboat/lifeboat.toml";

/// The daemon's configuration file, `lifeboat.toml`. Unknown keys are
/// refused (a typo must not silently fall back to a default).
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
    /// Where the NFS server for NFS exports listens (opened with the
    /// first NFS export, closed after the last). All interfaces by
    /// default, as hypervisors mount it over the network: each export
    /// names the client addresses it lets in and refuses the rest.
    /// ESXi mounts port 2049 only.
    #[serde(default = "default_nfs_listen")]
    pub nfs_listen: SocketAddr,
    /// Where the NFS server answers PORTMAP (which port serves NFS and
    /// MOUNT) for clients that always ask port 111 first (ESXi, QEMU's
    /// `nfs://` driver). Port 0 turns it off; a port already taken (a
    /// running rpcbind) is logged and skipped.
    #[serde(default = "default_nfs_portmap_listen")]
    pub nfs_portmap_listen: SocketAddr,
    /// The accelerator QEMU runs restored VMs with (instant restore, and
    /// later the lab): `auto` uses KVM when a test kernel boots under it
    /// (probed once per boot) and TCG software emulation otherwise; `kvm`
    /// or `tcg` force one. `lifeboat vm instant-restore --accel` overrides it.
    #[serde(default = "default_qemu_accel")]
    pub qemu_accel: String,
    /// Scripts a lab verification may run as probes (`script=NAME` names
    /// a file here). Only an admin puts files here: they run as root,
    /// inside the lab's network namespace.
    #[serde(default = "default_lab_scripts_dir")]
    pub lab_scripts_dir: PathBuf,
    /// Where restores for another platform take the driver files a
    /// Windows guest lacks (a directory in virtio-win's layout, or the
    /// virtio-win ISO). Unset: Windows guests are repaired with the
    /// drivers they already have, and a missing boot driver fails the
    /// restore naming it.
    #[serde(default)]
    pub windows_drivers: Option<PathBuf>,
    /// Datastores configured here; more can be added through the API
    /// (those are kept in the state directory).
    #[serde(default, rename = "datastore")]
    pub datastores: Vec<DatastoreEntry>,
    /// Directories server-side backup jobs may read (see
    /// `crate::confine`). Default: `/srv` and `/home`.
    #[serde(default = "default_backup_roots")]
    pub backup_roots: Vec<PathBuf>,
    /// Directories restore and vm-restore jobs may write into. Each is a
    /// path, or `{ path = "...", owners = true }` to keep the backed-up
    /// owners there for operator restores too. Default:
    /// `/srv/lifeboat/restores`.
    #[serde(default = "default_restore_roots")]
    pub restore_roots: Vec<RestoreRoot>,
    /// The file this was read from (its directory is protected like
    /// /etc/lifeboat); not a key.
    #[serde(skip)]
    pub loaded_from: Option<PathBuf>,
}

/// One entry of `restore_roots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RestoreRoot {
    /// A plain path: `"/srv/restores"`.
    Path(PathBuf),
    /// The table form: `{ path = "...", owners = true }`.
    Table(RestoreRootTable),
}

/// A restore root in its table form (see [`RestoreRoot::Table`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRootTable {
    /// The directory restores may write into.
    pub path: PathBuf,
    /// Restore owners (uid/gid) here for non-admin callers too.
    #[serde(default)]
    pub owners: bool,
}

impl RestoreRoot {
    /// The root directory, whichever form it was written in.
    pub fn path(&self) -> &Path {
        match self {
            RestoreRoot::Path(p) | RestoreRoot::Table(RestoreRootTable { path: p, .. }) => p,
        }
    }
    /// Whether restores here keep backed-up owners for every caller
    /// (false for the plain form).
    pub fn owners(&self) -> bool {
        matches!(self, RestoreRoot::Table(RestoreRootTable { owners: true, .. }))
    }
}

/// A datastore the daemon opens: a `[[datastore]]` table of the config
/// file, or one added through the API (`datastores.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreEntry {
    /// Its name in the API and CLI (checked by [`validate_name`]).
    pub name: String,
    /// The datastore's directory.
    pub path: PathBuf,
    /// Key file for an encrypted datastore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/lifeboat")
}
/// Where people keep data on a server; never the OS nor the state.
fn default_backup_roots() -> Vec<PathBuf> {
    vec![PathBuf::from("/srv"), PathBuf::from("/home")]
}
/// On the data disk (mounted at /srv/lifeboat by the console), writable
/// by the service unit.
fn default_restore_roots() -> Vec<RestoreRoot> {
    vec![RestoreRoot::Path(PathBuf::from("/srv/lifeboat/restores"))]
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
fn default_lab_scripts_dir() -> PathBuf {
    PathBuf::from("/etc/lifeboat/lab-scripts")
}
fn default_qemu_accel() -> String {
    "auto".into()
}
fn default_nfs_listen() -> SocketAddr {
    "0.0.0.0:2049".parse().unwrap()
}
fn default_nfs_portmap_listen() -> SocketAddr {
    "0.0.0.0:111".parse().unwrap()
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
        let mut cfg: Config = toml::from_str(&text).map_err(|e| StateError::Parse { path: path.clone(), message: e.to_string() })?;
        cfg.validate().map_err(|m| StateError::Parse { path: path.clone(), message: m })?;
        cfg.loaded_from = Some(path);
        Ok(cfg)
    }

    /// Checked by `load`; again by `serve` once `--state-dir` may have
    /// moved the state directory.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if let Some(a) = self.listen_plain {
            if !a.ip().is_loopback() {
                return Err(format!("listen_plain = \"{a}\": plain HTTP is only allowed on a loopback address (127.0.0.1 or ::1); use the TLS listener for remote access"));
            }
        }
        for d in &self.datastores {
            validate_name(&d.name)?;
        }
        if !matches!(self.qemu_accel.as_str(), "auto" | "kvm" | "tcg") {
            return Err(format!("qemu_accel = {:?}: expected \"auto\", \"kvm\" or \"tcg\"", self.qemu_accel));
        }
        // A root must be a plain absolute path, neither / nor inside a
        // tree no job may touch: every path under it would be refused,
        // so say so at start. (A root may hold such a tree, e.g. /srv
        // holding a datastore: the check of each path refuses that part.)
        let c = crate::confine::Confinement::new(self, None, &[]);
        let roots = self.backup_roots.iter().map(|p| ("backup_roots", p.as_path())).chain(self.restore_roots.iter().map(|r| ("restore_roots", r.path())));
        for (key, p) in roots {
            let text = p.to_str().ok_or_else(|| format!("{key}: {p:?} is not UTF-8"))?;
            let n = crate::confine::normalize(text).map_err(|e| format!("{key}: {e}"))?;
            let inside = c.protected.iter().map(|(t, _)| t).chain(&c.system).find(|t| n.starts_with(t));
            if n == Path::new("/") || inside.is_some() {
                return Err(format!(
                    "{key}: {text:?} is or lies in a tree no job may touch ({}); pick a directory of its own, e.g. /srv/lifeboat/restores",
                    inside.map(|t| t.display().to_string()).unwrap_or_else(|| "/".into())
                ));
            }
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
    let ok = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid name {name:?}: use 1-64 letters, digits, '-' or '_'"))
    }
}

/// Datastores added through the API, kept beside the other state (the
/// config file may be read-only, e.g. on a firmware image).
pub fn added_datastores(state_dir: &Path) -> Result<Vec<DatastoreEntry>> {
    Ok(crate::read_json(&state_dir.join("datastores.json"))?.unwrap_or_default())
}

/// Replaces `<state>/datastores.json` (mode 0640) with `list`, the whole
/// set of datastores added through the API.
pub fn save_added_datastores(state_dir: &Path, list: &[DatastoreEntry]) -> Result<()> {
    crate::write_json(&state_dir.join("datastores.json"), &list, 0o640)
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
        // Roots: defaults, both spellings, and refusals.
        assert_eq!(c.backup_roots, vec![PathBuf::from("/srv"), PathBuf::from("/home")]);
        assert_eq!(c.restore_roots, vec![RestoreRoot::Path("/srv/lifeboat/restores".into())]);
        std::fs::write(&p, "backup_roots = [\"/data\"]\nrestore_roots = [\"/r1\", { path = \"/r2\", owners = true }]\n").unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.restore_roots[1].path(), Path::new("/r2"));
        assert!(c.restore_roots[1].owners() && !c.restore_roots[0].owners());
        for bad in [
            "backup_roots = [\"/\"]",
            "restore_roots = [\"/var/lib/lifeboat/restores\"]",
            "restore_roots = [\"/etc/x\"]",
            "restore_roots = [\"rel\"]",
            "state_dir = \"/srv/st\"\nrestore_roots = [\"/srv/st/r\"]",
        ] {
            std::fs::write(&p, bad).unwrap();
            let e = Config::load(Some(&p)).unwrap_err().to_string();
            assert!(e.contains("_roots"), "{bad}: {e}");
        }
    }
}
