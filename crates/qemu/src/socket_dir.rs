//! A short private directory for unix sockets. A socket path may hold at
//! most 107 bytes, and a datastore's `tmp/` (or a daemon's state path)
//! can be longer than that, so NBD sockets of restores and imports live in
//! `/run/lifeboat/<prefix>-<random>` instead (the temporary directory when
//! /run/lifeboat cannot be made), mode 0700, removed when dropped.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub struct SocketDir(PathBuf);

impl SocketDir {
    pub fn create(prefix: &str) -> std::io::Result<SocketDir> {
        let base = [PathBuf::from("/run/lifeboat"), std::env::temp_dir()].into_iter().find(|b| std::fs::create_dir_all(b).is_ok()).unwrap_or_else(std::env::temp_dir);
        let d = base.join(format!("{prefix}-{}", &lifeboat_store::PackId::random().to_hex()[..12]));
        std::fs::DirBuilder::new().mode(0o700).create(&d)?;
        Ok(SocketDir(d))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
