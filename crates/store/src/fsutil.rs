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
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).or_else(|_| File::open(path)).map_err(|e| StoreError::io("open", path, e))?;
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

/// The datastore-wide lock: writers (backups, gc) hold it shared for
/// their run; `datastore repair`, which rebuilds the index, holds it
/// exclusive so no writer commits into the index it is replacing.
pub struct DatastoreLock(#[allow(dead_code)] FileLock);

impl DatastoreLock {
    pub fn shared(root: &Path) -> Result<Self> {
        FileLock::take(&root.join("lock"), libc::LOCK_SH).map(DatastoreLock)
    }
    pub fn exclusive(root: &Path) -> Result<Self> {
        FileLock::take(&root.join("lock"), libc::LOCK_EX).map(DatastoreLock)
    }
}

/// A running writer's entry under `writers/`: a file it holds an
/// exclusive `flock` on for its whole run. Garbage collection lists these
/// after it has dropped doomed blobs from the index and waits for each:
/// only a writer registered by then can have seen those blobs.
///
/// Registration comes before the writer opens its index view, and a file
/// is only taken for a writer's once its lock is held and the path still
/// names the locked inode (the collector unlinks files whose lock it
/// gets, i.e. of dead writers).
pub struct WriterRegistration {
    path: std::path::PathBuf,
    _file: File,
}

impl WriterRegistration {
    pub fn register(root: &Path) -> Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let dir = root.join("writers");
        if !dir.exists() {
            // Datastores made before writer registration lack the folder.
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::io("create", &dir, e))?;
        }
        loop {
            let path = dir.join(format!("{}.lock", crate::id::PackId::random().to_hex()));
            let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| StoreError::io("create", &path, e))?;
            if try_lock_exclusive(&file).map_err(|e| StoreError::io("lock", &path, e))? {
                let ours = file.metadata().map_err(|e| StoreError::io("stat", &path, e))?.ino();
                if std::fs::metadata(&path).is_ok_and(|m| m.ino() == ours) {
                    return Ok(WriterRegistration { path, _file: file });
                }
            }
        }
    }

    /// When the longest-running live writer registered, if any runs.
    pub fn oldest_live(root: &Path) -> Option<std::time::SystemTime> {
        let entries = std::fs::read_dir(root.join("writers")).ok()?;
        let mut oldest = None;
        for e in entries.flatten() {
            let Ok(f) = File::open(e.path()) else { continue };
            if try_lock_exclusive(&f).unwrap_or(true) {
                continue; // a dead writer's (or gone): the lock drops with `f`
            }
            if let Ok(t) = f.metadata().and_then(|m| m.modified()) {
                oldest = Some(oldest.map_or(t, |o: std::time::SystemTime| o.min(t)));
            }
        }
        oldest
    }

    /// Blocks until every writer registered now has finished; removes
    /// the entries of writers that died. Returns how many were waited for.
    pub fn wait_for_writers(root: &Path, mut on_wait: impl FnMut(usize)) -> Result<usize> {
        let dir = root.join("writers");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::io("read", &dir, e)),
        };
        let paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        let mut busy = Vec::new();
        for p in paths {
            let Ok(f) = File::open(&p) else { continue };
            if try_lock_exclusive(&f).map_err(|e| StoreError::io("lock", &p, e))? {
                let _ = std::fs::remove_file(&p);
            } else {
                busy.push((p, f));
            }
        }
        let n = busy.len();
        if n > 0 {
            on_wait(n);
        }
        for (p, f) in busy {
            use std::os::fd::AsRawFd;
            loop {
                if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                    break;
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(StoreError::io("lock", &p, e));
                }
            }
            let _ = std::fs::remove_file(&p);
        }
        Ok(n)
    }
}

impl Drop for WriterRegistration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
