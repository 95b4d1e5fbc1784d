//! A short private directory for unix sockets. A socket path may hold at
//! most 107 bytes, and a datastore's `tmp/` (or a daemon's state path)
//! can be longer than that, so NBD sockets of restores and imports live in
//! `/run/lifeboat/<prefix>-<random>` instead (the temporary directory when
//! /run/lifeboat cannot be made), mode 0700, removed when dropped.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// A private directory for unix sockets with a path short enough for
/// them; it and everything in it are removed when this is dropped.
pub struct SocketDir(PathBuf);

impl SocketDir {
    /// Make `/run/lifeboat/<prefix>-<12 hex digits>` (or the same under the
    /// temporary directory), mode 0700. Fails if the directory cannot be
    /// created.
    pub fn create(prefix: &str) -> std::io::Result<SocketDir> {
        let base = [PathBuf::from("/run/lifeboat"), std::env::temp_dir()].into_iter().find(|b| std::fs::create_dir_all(b).is_ok()).unwrap_or_else(std::env::temp_dir);
        let d = base.join(format!("{prefix}-{}", &lifeboat_store::PackId::random().to_hex()[..12]));
        std::fs::DirBuilder::new().mode(0o700).create(&d)?;
        Ok(SocketDir(d))
    }

    /// The directory; put sockets in it by name.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
