//! How `lifeboat console` reaches the running daemon's API: at start the
//! daemon writes `console-access.json` (mode 0600, root only) into its
//! state directory with a loopback URL and this run's read-only console
//! token (`AuthStore::issue_console_token`), and removes it at a clean
//! stop. No route is opened without authentication for it; the token can
//! read and never change anything, and a daemon restart voids it.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The access file's name inside the state directory.
pub const CONSOLE_ACCESS_FILE: &str = "console-access.json";

/// The content of `console-access.json`: how the console reaches and
/// authenticates to this daemon run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleAccess {
    /// `http://127.0.0.1:PORT` (the plain loopback listener) when there is
    /// one, else `https://127.0.0.1:PORT`.
    pub url: String,
    /// The TLS certificate's SHA-256 fingerprint, to pin for https.
    pub fingerprint: String,
    /// Bearer token with the read-only role, valid while this daemon runs.
    pub token: String,
    /// The daemon's pid, for "daemon not running" when it is gone.
    pub pid: u32,
}

impl ConsoleAccess {
    /// The URL the console uses: the plain listener (always loopback)
    /// if there is one, else the TLS listener, on loopback when it
    /// listens on every address.
    pub fn url_for(https: SocketAddr, http: Option<SocketAddr>) -> String {
        if let Some(h) = http {
            return format!("http://{h}");
        }
        let ip = match https.ip() {
            IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("https://{}", SocketAddr::new(ip, https.port()))
    }

    /// `<state_dir>/console-access.json`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(CONSOLE_ACCESS_FILE)
    }

    /// Writes the file atomically, mode 0600 (it holds the token).
    pub fn write(&self, state_dir: &Path) -> crate::Result<()> {
        crate::write_json(&Self::path(state_dir), self, 0o600)
    }

    /// Reads the file; `None` when it is absent (the daemon is not
    /// running, or stopped cleanly).
    pub fn read(state_dir: &Path) -> crate::Result<Option<ConsoleAccess>> {
        crate::read_json(&Self::path(state_dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_uses_loopback() {
        let any: SocketAddr = "0.0.0.0:8007".parse().unwrap();
        assert_eq!(ConsoleAccess::url_for(any, None), "https://127.0.0.1:8007");
        assert_eq!(ConsoleAccess::url_for("[::]:8007".parse().unwrap(), None), "https://[::1]:8007");
        assert_eq!(ConsoleAccess::url_for(any, Some("127.0.0.1:8080".parse().unwrap())), "http://127.0.0.1:8080");
    }

    #[test]
    fn the_access_file_is_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = ConsoleAccess { url: "http://127.0.0.1:1".into(), fingerprint: "ab".into(), token: "c.x".into(), pid: 1 };
        a.write(dir.path()).unwrap();
        let mode = std::fs::metadata(ConsoleAccess::path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(ConsoleAccess::read(dir.path()).unwrap(), Some(a));
    }
}
