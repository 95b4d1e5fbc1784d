//! A block device (a datastore disk) shown as one read-only regular file,
//! `<dir>/disk`, through a tiny FUSE file system.
//!
//! Why: losetup needs a file. The kernel has no NBD client on the
//! appliance, but FUSE works everywhere, and a read-only FUSE file under a
//! read-only loop device keeps every write away from the datastore.

use bytes::Bytes;
use fuse3::raw::prelude::*;
use fuse3::{Errno, Inode, Result as FResult, Timestamp};
use futures_util::stream::{self, Stream};
use lifeboat_nbd::{BlockDevice, ReadChunk};
use std::ffi::{OsStr, OsString};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const ROOT: Inode = 1;
const DISK: Inode = 2;
const NAME: &str = "disk";
const TTL: Duration = Duration::from_secs(3600);

struct DiskFs {
    device: Arc<dyn BlockDevice>,
}

impl DiskFs {
    fn attr(&self, ino: Inode) -> FileAttr {
        let t = Timestamp::new(0, 0);
        let (kind, perm, size) = if ino == ROOT { (FileType::Directory, 0o555, 0) } else { (FileType::RegularFile, 0o444, self.device.size()) };
        FileAttr { ino, size, blocks: size.div_ceil(512), atime: t, mtime: t, ctime: t, kind, perm, nlink: if ino == ROOT { 2 } else { 1 }, uid: 0, gid: 0, rdev: 0, blksize: 4096 }
    }
}

impl Filesystem for DiskFs {
    async fn init(&self, _req: Request) -> FResult<ReplyInit> {
        Ok(ReplyInit::new(NonZeroU32::new(128 << 10).unwrap()))
    }

    async fn destroy(&self, _req: Request) {}

    async fn lookup(&self, _req: Request, parent: Inode, name: &OsStr) -> FResult<ReplyEntry> {
        if parent != ROOT || name != NAME {
            return Err(libc::ENOENT.into());
        }
        Ok(ReplyEntry { ttl: TTL, attr: self.attr(DISK), generation: 0 })
    }

    async fn getattr(&self, _req: Request, inode: Inode, _fh: Option<u64>, _flags: u32) -> FResult<ReplyAttr> {
        if inode != ROOT && inode != DISK {
            return Err(libc::ENOENT.into());
        }
        Ok(ReplyAttr { ttl: TTL, attr: self.attr(inode) })
    }

    async fn setattr(&self, _req: Request, _inode: Inode, _fh: Option<u64>, _set_attr: SetAttr) -> FResult<ReplyAttr> {
        Err(libc::EROFS.into())
    }

    async fn open(&self, _req: Request, inode: Inode, flags: u32) -> FResult<ReplyOpen> {
        if inode != DISK {
            return Err(libc::EISDIR.into());
        }
        if flags as i32 & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(libc::EROFS.into());
        }
        Ok(ReplyOpen { fh: 0, flags: 0 })
    }

    async fn read(&self, _req: Request, _inode: Inode, _fh: u64, offset: u64, size: u32) -> FResult<ReplyData> {
        let device = self.device.clone();
        let end = device.size();
        if offset >= end {
            return Ok(ReplyData { data: Bytes::new() });
        }
        let len = size.min((end - offset).min(u32::MAX as u64) as u32);
        let data = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut out = Vec::with_capacity(len as usize);
            for c in device.read_at(offset, len)? {
                match c {
                    ReadChunk::Data(b) => out.extend_from_slice(&b),
                    ReadChunk::Zero(n) => out.resize(out.len() + n as usize, 0),
                }
            }
            Ok(out)
        })
        .await
        .map_err(|_| Errno::from(libc::EIO))?
        .map_err(|e| {
            tracing::error!("disk read at {offset}: {e}");
            Errno::from(libc::EIO)
        })?;
        Ok(ReplyData { data: Bytes::from(data) })
    }

    async fn release(&self, _req: Request, _inode: Inode, _fh: u64, _flags: u32, _lock_owner: u64, _flush: bool) -> FResult<()> {
        Ok(())
    }

    async fn flush(&self, _req: Request, _inode: Inode, _fh: u64, _lock_owner: u64) -> FResult<()> {
        Ok(())
    }

    async fn statfs(&self, _req: Request, _inode: Inode) -> FResult<ReplyStatFs> {
        Ok(ReplyStatFs { blocks: 0, bfree: 0, bavail: 0, files: 1, ffree: 0, bsize: 4096, namelen: 255, frsize: 4096 })
    }

    async fn opendir(&self, _req: Request, inode: Inode, _flags: u32) -> FResult<ReplyOpen> {
        if inode != ROOT {
            return Err(libc::ENOTDIR.into());
        }
        Ok(ReplyOpen { fh: 0, flags: 0 })
    }

    async fn releasedir(&self, _req: Request, _inode: Inode, _fh: u64, _flags: u32) -> FResult<()> {
        Ok(())
    }

    async fn readdir<'a>(&'a self, _req: Request, _parent: Inode, _fh: u64, offset: i64) -> FResult<ReplyDirectory<impl Stream<Item = FResult<DirectoryEntry>> + Send + 'a>> {
        let all = vec![
            DirectoryEntry { inode: ROOT, kind: FileType::Directory, name: OsString::from("."), offset: 1 },
            DirectoryEntry { inode: ROOT, kind: FileType::Directory, name: OsString::from(".."), offset: 2 },
            DirectoryEntry { inode: DISK, kind: FileType::RegularFile, name: OsString::from(NAME), offset: 3 },
        ];
        Ok(ReplyDirectory { entries: stream::iter(all.into_iter().skip(offset.max(0) as usize).map(Ok)) })
    }

    async fn access(&self, _req: Request, _inode: Inode, mask: u32) -> FResult<()> {
        if mask as i32 & libc::W_OK != 0 {
            return Err(libc::EROFS.into());
        }
        Ok(())
    }
}

/// A block device served as the read-only file `path()`; unmounted on drop.
pub struct DiskFile {
    dir: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DiskFile {
    /// Mounts a FUSE file system on a new private directory (`disk-<pid>-*`
    /// in the work dir, see `clean_stale`) showing `device` as `disk`, and
    /// serves it from a thread of its own until drop. Fails with
    /// `VmFilesError::DiskFile` when FUSE cannot mount (no /dev/fuse, not
    /// permitted).
    pub fn serve(device: Arc<dyn BlockDevice>) -> crate::Result<Self> {
        let dir = crate::cleanup::private_dir("disk")?;
        let mp = dir.path().to_path_buf();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let mut opts = fuse3::MountOptions::default();
                opts.fs_name("lifeboat-vmdisk").read_only(true);
                let handle = match fuse3::raw::Session::new(opts).mount(DiskFs { device }, &mp).await {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let _ = stop_rx.await;
                if let Err(e) = handle.unmount().await {
                    tracing::warn!("unmount of {}: {e}; detaching lazily", mp.display());
                    let _ = std::process::Command::new("umount").arg("-l").arg(&mp).status();
                }
            });
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(DiskFile { dir: Some(dir), stop: Some(stop), thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(crate::VmFilesError::DiskFile(e))
            }
            Err(_) => {
                let _ = thread.join();
                Err(crate::VmFilesError::DiskFile(std::io::Error::other("FUSE thread ended")))
            }
        }
    }

    /// The disk as a read-only file.
    pub fn path(&self) -> PathBuf {
        self.dir.as_ref().expect("set until drop").path().join(NAME)
    }

    /// The FUSE mount point holding `disk`.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("set until drop").path()
    }
}

impl Drop for DiskFile {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        drop(self.dir.take());
    }
}
