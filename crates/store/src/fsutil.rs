//! Small durable-write helpers shared by the datastore's writers.

use crate::error::{Result, StoreError};
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// fsync a directory so a rename or create inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| StoreError::io("open", dir, e))?;
    f.sync_all().map_err(|e| StoreError::io("fsync", dir, e))
}

/// Writes `path` so that after a crash it holds either the old or the new
/// bytes, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| StoreError::io("create", &tmp, e))?;
    f.write_all(bytes).map_err(|e| StoreError::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| StoreError::io("fsync", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io("rename", path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Tries to take an exclusive advisory lock without blocking. The lock dies
/// with the process, which is how we tell a crashed writer's leftovers from
/// a live writer's work.
pub fn try_lock_exclusive(f: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        Ok(true)
    } else {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(false)
        } else {
            Err(e)
        }
    }
}

/// An advisory `flock` on a file, held for the value's lifetime (and
/// released by the kernel if the process dies).
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Creates the file if needed (opening it read-only when it cannot be
    /// written) and takes the lock with `op` (`LOCK_SH`/`LOCK_EX`, maybe
    /// `| LOCK_NB`), retrying on EINTR.
    pub fn take(path: &Path, op: libc::c_int) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .or_else(|_| File::open(path))
            .map_err(|e| StoreError::io("open", path, e))?;
        loop {
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(FileLock { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(StoreError::io("lock", path, e));
            }
        }
    }
}

/// The datastore-wide lock: writers (backups) hold it shared for their
/// run, garbage collection holds it exclusive, so GC never sweeps a blob
/// an in-flight backup has just deduplicated against.
pub struct DatastoreLock(#[allow(dead_code)] FileLock);

impl DatastoreLock {
    pub fn shared(root: &Path) -> Result<Self> {
        FileLock::take(&root.join("lock"), libc::LOCK_SH).map(DatastoreLock)
    }
    pub fn exclusive(root: &Path) -> Result<Self> {
        FileLock::take(&root.join("lock"), libc::LOCK_EX).map(DatastoreLock)
    }
    /// Exclusive if free right now, else `None`.
    pub fn try_exclusive(root: &Path) -> Result<Option<Self>> {
        match FileLock::take(&root.join("lock"), libc::LOCK_EX | libc::LOCK_NB) {
            Ok(l) => Ok(Some(DatastoreLock(l))),
            Err(StoreError::Io { source, .. }) if source.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
