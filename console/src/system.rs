//! What the console reads from and hands to the rest of the appliance:
//! the daemon's admin password and datastore list (`Daemon`), the
//! machine's health from procfs, the API's URL and TLS fingerprint.

use anyhow::{Context, Result};
use sha2::Digest;
use std::path::{Path, PathBuf};

/// A datastore the daemon serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatastoreLine {
    pub name: String,
    /// Path as the system sees it (not under the console's root).
    pub path: PathBuf,
}

/// A job as the status screen shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobLine {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub detail: String,
}

/// The daemon's side of the console: where the admin password and the
/// datastore list are kept, and what it is doing.
pub trait Daemon {
    fn has_admin_password(&self) -> bool;
    fn set_admin_password(&self, password: &str) -> Result<()>;
    fn datastores(&self) -> Result<Vec<DatastoreLine>>;
    /// Adds (or re-points) a datastore in the daemon's configuration.
    fn add_datastore(&self, name: &str, path: &Path) -> Result<()>;
    /// The daemon's state directory (as this process sees it): where it
    /// leaves the console's way into its API (`crate::status`).
    fn state_dir(&self) -> PathBuf;
    /// The API's TLS port.
    fn api_port(&self) -> u16;
    /// The API's certificate (PEM), once the daemon has made one.
    fn tls_certificate(&self) -> PathBuf;
    /// Makes the running daemon pick up changed settings (no-op in tests).
    fn reload(&self) -> Result<()>;
}

/// SHA-256 over the DER of the first certificate in a PEM file, as
/// colon-separated lower-case hex, the form `lifeboat --fingerprint`
/// (lifeboat_client::cert_fingerprint) pins.
pub fn certificate_fingerprint(pem_path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(pem_path).with_context(|| format!("cannot read {}", pem_path.display()))?;
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = text.find(begin).with_context(|| format!("{} holds no certificate", pem_path.display()))? + begin.len();
    let end = text[start..].find("-----END CERTIFICATE-----").with_context(|| format!("{}: unterminated certificate", pem_path.display()))?;
    let b64: String = text[start..start + end].chars().filter(|c| !c.is_whitespace()).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.decode(b64).with_context(|| format!("{}: bad base64", pem_path.display()))?;
    let digest = sha2::Sha256::digest(&der);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

// ------------------------------------------------------------------ health

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    pub mem_total: u64,
    pub mem_available: u64,
    pub load: [f64; 3],
    pub uptime_secs: u64,
}

/// Memory, load and uptime of the running machine from procfs.
pub fn read_health() -> Health {
    let mut h = Health::default();
    if let Ok(mi) = std::fs::read_to_string("/proc/meminfo") {
        for line in mi.lines() {
            let mut f = line.split_whitespace();
            let (Some(k), Some(v)) = (f.next(), f.next().and_then(|v| v.parse::<u64>().ok())) else { continue };
            match k {
                "MemTotal:" => h.mem_total = v * 1024,
                "MemAvailable:" => h.mem_available = v * 1024,
                _ => {}
            }
        }
    }
    if let Ok(la) = std::fs::read_to_string("/proc/loadavg") {
        for (i, v) in la.split_whitespace().take(3).enumerate() {
            h.load[i] = v.parse().unwrap_or(0.0);
        }
    }
    if let Ok(up) = std::fs::read_to_string("/proc/uptime") {
        h.uptime_secs = up.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64;
    }
    h
}

/// (total, available) bytes of the file system holding `path`.
pub fn free_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_blocks as u64 * st.f_frsize as u64, st.f_bavail as u64 * st.f_frsize as u64))
}

/// The machine's global addresses (`ip -json addr`), IPv4 first.
pub fn host_addresses() -> Vec<String> {
    let Ok(out) = std::process::Command::new("ip").args(["-json", "address", "show", "scope", "global"]).output() else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return Vec::new() };
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for iface in v.as_array().into_iter().flatten() {
        for a in iface["addr_info"].as_array().into_iter().flatten() {
            let (Some(fam), Some(local)) = (a["family"].as_str(), a["local"].as_str()) else { continue };
            if fam == "inet" {
                v4.push(local.to_string());
            } else if fam == "inet6" {
                v6.push(format!("[{local}]"));
            }
        }
    }
    v4.extend(v6);
    v4
}

// --------------------------------------------------------------- the daemon

/// The daemon as its files under the console's root: its configuration
/// (`<root>/etc/lifeboat/lifeboat.toml`, lifeboat_state::Config), the
/// admin password through its `AuthStore`, and its TLS certificate. What
/// it is doing comes from its API (`crate::status`). The daemon
/// reads the password at start, so on the live system (root `/`) `reload`
/// restarts it.
pub struct StateDaemon {
    pub root: PathBuf,
    pub config_path: PathBuf,
    pub config: lifeboat_state::Config,
    /// The state directory under the root.
    pub state_dir: PathBuf,
}

fn under_root(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

impl StateDaemon {
    pub fn open(root: &Path) -> Result<Self> {
        let config_path = under_root(root, Path::new(lifeboat_state::config::DEFAULT_CONFIG_PATH));
        let config = if config_path.exists() { lifeboat_state::Config::load(Some(&config_path))? } else { lifeboat_state::Config::default() };
        let state_dir = under_root(root, &config.state_dir);
        Ok(StateDaemon { root: root.to_path_buf(), config_path, config, state_dir })
    }

    fn read_config(&self) -> Result<toml::Table> {
        match std::fs::read_to_string(&self.config_path) {
            Ok(t) => t.parse::<toml::Table>().with_context(|| format!("cannot parse {}", self.config_path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.config_path.display())),
        }
    }
}

impl Daemon for StateDaemon {
    fn has_admin_password(&self) -> bool {
        lifeboat_state::AuthStore::open(&self.state_dir, 1).map(|a| a.has_admin_password()).unwrap_or(false)
    }

    fn set_admin_password(&self, password: &str) -> Result<()> {
        std::fs::create_dir_all(&self.state_dir).with_context(|| format!("cannot create {}", self.state_dir.display()))?;
        let auth = lifeboat_state::AuthStore::open(&self.state_dir, self.config.session_minutes)?;
        auth.set_admin_password(password)?;
        // The daemon's first-start password is void now.
        let _ = std::fs::remove_file(self.state_dir.join("initial-admin-password"));
        Ok(())
    }

    fn datastores(&self) -> Result<Vec<DatastoreLine>> {
        let cfg = self.read_config()?;
        let mut out = Vec::new();
        for d in cfg.get("datastore").and_then(|v| v.as_array()).into_iter().flatten() {
            if let (Some(name), Some(path)) = (d.get("name").and_then(|v| v.as_str()), d.get("path").and_then(|v| v.as_str())) {
                out.push(DatastoreLine { name: name.into(), path: path.into() });
            }
        }
        Ok(out)
    }

    /// Edits the TOML as a table, so keys and tables the console does
    /// not know survive.
    fn add_datastore(&self, name: &str, path: &Path) -> Result<()> {
        lifeboat_state::config::validate_name(name).map_err(anyhow::Error::msg)?;
        let mut cfg = self.read_config()?;
        let list = cfg.entry("datastore").or_insert_with(|| toml::Value::Array(Vec::new()));
        let arr = list.as_array_mut().with_context(|| format!("{}: `datastore` is not an array of tables", self.config_path.display()))?;
        arr.retain(|d| d.get("name").and_then(|v| v.as_str()) != Some(name));
        let mut t = toml::Table::new();
        t.insert("name".into(), name.into());
        t.insert("path".into(), path.to_string_lossy().into_owned().into());
        arr.push(toml::Value::Table(t));
        let text = toml::to_string(&cfg)?;
        // What the daemon will read must load.
        let parsed: lifeboat_state::Config = toml::from_str(&text).with_context(|| format!("the new {} would not load", self.config_path.display()))?;
        drop(parsed);
        let change = crate::settings::FileChange::Write { path: self.config_path.strip_prefix(&self.root).unwrap_or(&self.config_path).to_path_buf(), content: text };
        change.apply(&self.root).with_context(|| format!("cannot write {}", self.config_path.display()))
    }

    fn state_dir(&self) -> PathBuf {
        self.state_dir.clone()
    }

    fn api_port(&self) -> u16 {
        self.config.listen.port()
    }

    fn tls_certificate(&self) -> PathBuf {
        self.state_dir.join("tls/api.crt")
    }

    fn reload(&self) -> Result<()> {
        if self.root == Path::new("/") {
            // try-restart: nothing happens when the daemon is not running.
            let _ = std::process::Command::new("systemctl").args(["try-restart", "lifeboat.service"]).status();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datastores_are_added_to_the_daemon_config_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/lifeboat")).unwrap();
        std::fs::write(dir.path().join("etc/lifeboat/lifeboat.toml"), "session_minutes = 30\n").unwrap();
        let d = StateDaemon::open(dir.path()).unwrap();
        d.add_datastore("data1", Path::new("/srv/lifeboat/data-1/datastore")).unwrap();
        d.add_datastore("data1", Path::new("/srv/lifeboat/data-2/datastore")).unwrap();
        assert_eq!(d.datastores().unwrap(), vec![DatastoreLine { name: "data1".into(), path: "/srv/lifeboat/data-2/datastore".into() }]);
        let text = std::fs::read_to_string(&d.config_path).unwrap();
        assert!(text.contains("session_minutes = 30"), "{text}");
    }

    #[test]
    fn admin_password_is_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let d = StateDaemon::open(dir.path()).unwrap();
        assert!(!d.has_admin_password());
        d.set_admin_password("a long secret").unwrap();
        assert!(d.has_admin_password());
        let text = std::fs::read_to_string(d.state_dir.join("auth.json")).unwrap();
        assert!(text.contains("$argon2id$") && !text.contains("a long secret"), "{text}");
        let auth = lifeboat_state::AuthStore::open(&d.state_dir, 1).unwrap();
        assert!(auth.verify_admin_password("admin", "a long secret"));
    }

    #[test]
    fn fingerprint_is_sha256_of_the_der() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("c.pem");
        // base64 of the bytes "abc"
        std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\nYWJj\n-----END CERTIFICATE-----\n").unwrap();
        let fp = certificate_fingerprint(&pem).unwrap();
        assert!(fp.starts_with("ba:78:16:bf:8f:01:cf:ea"), "{fp}");
    }
}
