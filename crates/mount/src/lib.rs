//! `lifeboat mount`: a read-only FUSE view of a datastore.
//!
//! Why: restoring a whole snapshot to fetch one file is slow and needs the
//! space; browsing it as a file system lets a user (or `cp`, `diff`, `grep`)
//! take exactly what they need. What it shows:
//!
//! ```text
//! /snapshots/<time>_<short id>/...   one directory per snapshot
//! /latest -> snapshots/<newest>      a symlink
//! /vms/<time>_<short id>_<vm>/<disk>/<partition>/...
//!                                    a VM snapshot's guest files (root)
//! ```
//!
//! Entries keep their sizes, modes, owners, mtimes and symlink targets.
//! A snapshot is also found by a unique prefix of its id or of its listed
//! name (`snapshots/ab12cd34`, `snapshots/2026-11-25T09`).
//!
//! How: the kernel's node ids are handed out lazily, one per looked-up
//! entry, and dropped again when the kernel forgets them, so memory follows
//! what the kernel holds, not snapshot size. Directory listings are read one
//! tree page at a time through a small page cache. An open file computes its
//! chunk offset table on first read (index lookups only, no decompression)
//! and decodes only the chunks a read overlaps, keeping the last few decoded
//! chunks per handle. Every datastore read runs on tokio's blocking pool, so
//! many readers progress at once. `st_ino` values are derived from the path
//! (stable across lookups and `readdir`), independent of the node ids.
#![warn(missing_docs)]

mod fs;
mod reader;
mod vms;

pub use fs::SnapshotFs;
pub use vms::GuestMounts;

use lifeboat_store::Datastore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why mounting or serving the file system failed.
#[derive(Debug, thiserror::Error)]
// Each variant's `#[error]` text is its documentation.
#[allow(missing_docs)]
pub enum MountError {
    #[error("mount point {} does not exist: create it first", .0.display())]
    NoMountpoint(PathBuf),
    #[error("mount point {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot mount on {}: {source}", path.display())]
    Mount { path: PathBuf, source: std::io::Error },
    #[error("cannot mount on {} as an unprivileged user: {source}; this needs fusermount3 (setuid root) and access to /dev/fuse, or run as root", path.display())]
    MountUnprivileged { path: PathBuf, source: std::io::Error },
    #[error("cannot start the FUSE runtime: {0}")]
    Runtime(std::io::Error),
    #[error("FUSE session on {} ended with an error: {source}", path.display())]
    Session { path: PathBuf, source: std::io::Error },
    #[error("cannot unmount {}: {source}", path.display())]
    Unmount { path: PathBuf, source: std::io::Error },
}

/// How to mount.
#[derive(Clone, Debug, Default)]
pub struct MountConfig {
    /// Let other users in (FUSE `allow_other`); the kernel still enforces
    /// the backed-up modes and owners (`default_permissions`).
    pub allow_other: bool,
}

/// Why `serve` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// SIGINT or SIGTERM: we unmounted.
    Signal,
    /// SIGINT or SIGTERM while the mount was busy (open files, a cwd in
    /// it): detached lazily; the kernel drops it once the last user goes.
    SignalDetached,
    /// Unmounted from outside (`fusermount3 -u`, `umount`).
    External,
}

/// Checks that `mountpoint` is a directory and returns its absolute path.
pub fn check_mountpoint(mountpoint: &Path) -> Result<PathBuf, MountError> {
    match std::fs::metadata(mountpoint) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(MountError::NoMountpoint(mountpoint.to_path_buf())),
        Err(e) => Err(MountError::Mount { path: mountpoint.to_path_buf(), source: e }),
        Ok(m) if !m.is_dir() => Err(MountError::NotADirectory(mountpoint.to_path_buf())),
        Ok(_) => std::fs::canonicalize(mountpoint).map_err(|e| MountError::Mount { path: mountpoint.to_path_buf(), source: e }),
    }
}

/// Mounts `ds` read-only at `mountpoint` and serves it until SIGINT or
/// SIGTERM (then unmounts) or until it is unmounted from outside.
/// `on_mounted` runs once the mount is in place.
pub fn serve(ds: Arc<Datastore>, mountpoint: &Path, cfg: &MountConfig, on_mounted: impl FnOnce(&Path)) -> Result<Ended, MountError> {
    let mp = check_mountpoint(mountpoint)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).max_blocking_threads(64).thread_name("lifeboat-fuse").enable_all().build().map_err(MountError::Runtime)?;
    if unsafe { libc::geteuid() } == 0 {
        // What a killed earlier mount left of vms/ (mounts, loop devices).
        lifeboat_vmfiles::clean_stale();
    }
    let mut guests_slot: Option<GuestMounts> = None;
    let res = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        // Install the handlers before mounting: a signal that arrives right
        // after the mount must unmount, not kill us with the mount left.
        let mut int = signal(SignalKind::interrupt()).map_err(MountError::Runtime)?;
        let mut term = signal(SignalKind::terminate()).map_err(MountError::Runtime)?;
        let fs = SnapshotFs::new(ds);
        guests_slot = Some(fs.guest_mounts());
        let mut opts = fuse3::MountOptions::default();
        opts.fs_name("lifeboat").read_only(true).default_permissions(true).allow_other(cfg.allow_other);
        let session = fuse3::raw::Session::new(opts);
        let root = unsafe { libc::geteuid() } == 0;
        let mounted = if root { session.mount(fs, &mp).await } else { session.mount_with_unprivileged(fs, &mp).await };
        let mut handle = mounted.map_err(|source| match root {
            true => MountError::Mount { path: mp.clone(), source },
            false => MountError::MountUnprivileged { path: mp.clone(), source },
        })?;
        on_mounted(&mp);
        tokio::select! {
            res = &mut handle => {
                res.map_err(|e| MountError::Session { path: mp.clone(), source: e })?;
                Ok(Ended::External)
            }
            _ = int.recv() => unmount(handle, &mp).await,
            _ = term.recv() => unmount(handle, &mp).await,
        }
    });
    // The guest file systems vms/ mounted go now: the FUSE session may
    // still hold the file system below (see next).
    if let Some(g) = guests_slot {
        g.close();
    }
    // fuse3 reads /dev/fuse on a blocking thread that only returns once
    // the connection goes away; after a lazy unmount with files still
    // open that is when we exit, so do not wait for it.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    res
}

async fn unmount(handle: fuse3::raw::MountHandle, mp: &Path) -> Result<Ended, MountError> {
    match handle.unmount().await {
        Ok(()) => Ok(Ended::Signal),
        Err(e) => {
            // Busy (a shell's cwd inside, say): the session is already
            // stopped, so detach lazily rather than leave a dead mount.
            tracing::info!("unmount of {} failed ({e}); detaching lazily", mp.display());
            lazy_unmount(mp).map_err(|source| MountError::Unmount { path: mp.to_path_buf(), source })?;
            Ok(Ended::SignalDetached)
        }
    }
}

fn lazy_unmount(mp: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mp.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let st = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(mp).status();
    match st {
        Ok(s) if s.success() => Ok(()),
        _ => Err(err),
    }
}
