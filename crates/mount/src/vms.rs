//! `vms/<snapshot>/<disk>/<partition>/...`: the guest's files of VM
//! snapshots, inside the same mount.
//!
//! Why here: an admin browsing backups looks for "that file on web01
//! last Tuesday" and should not need a second tool. How: a partition's
//! file system is mounted read-only by crates/vmfiles (the disk served
//! from the datastore, a read-only loop device, no journal replay) the
//! first time something looks inside it, and stays mounted until the
//! mount ends; entries below are passed through from it. Symlinks are
//! shown as links and never followed here, so a guest's `/x -> /etc`
//! resolves in the reader's namespace like any link in a backup. Needs
//! root (loop devices and mounts); other users see the VM snapshots and
//! their disks, and get EACCES inside.

use fuse3::{Errno, Result as FResult};
use lifeboat_store::{BlobId, Datastore, Snapshot};
use lifeboat_vmfiles::{GuestFiles, Partition, SnapshotDisk};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// One VM snapshot under `vms/`.
pub(crate) struct VmSnap {
    pub id: BlobId,
    pub name: String,
    pub snap: Snapshot,
    disks: OnceLock<Result<Vec<String>, String>>,
}

/// One disk of a VM snapshot.
pub(crate) struct VmDisk {
    pub snap: Arc<VmSnap>,
    pub disk: String,
}

/// A mounted guest file system. `close` unmounts it even while the
/// kernel still holds nodes below it (they then read as gone).
pub(crate) struct GuestMount {
    root: PathBuf,
    files: Mutex<Option<GuestFiles>>,
}

/// An entry of a mounted guest file system, with the metadata it had
/// when looked up (the mount is read-only: it does not change).
pub(crate) struct GuestNode {
    pub mount: Arc<GuestMount>,
    pub rel: PathBuf,
    pub meta: Metadata,
}

impl GuestNode {
    pub fn path(&self) -> PathBuf {
        self.mount.root.join(&self.rel)
    }
}

/// A disk of a VM snapshot: (snapshot, disk id).
type DiskKey = (BlobId, String);
/// A partition of a VM snapshot's disk: (snapshot, disk id, partition).
type PartitionKey = (BlobId, String, String);

/// What `vms/` holds open: partition layouts, mounted guests, open files.
#[derive(Default)]
pub(crate) struct GuestState {
    layouts: Mutex<HashMap<DiskKey, Arc<Vec<Partition>>>>,
    mounts: Mutex<HashMap<PartitionKey, Arc<GuestMount>>>,
    pub files: Mutex<HashMap<u64, Arc<File>>>,
}

/// Unmounts everything `vms/` mounted, when `lifeboat mount` ends.
#[derive(Clone)]
pub struct GuestMounts(pub(crate) Arc<GuestState>);

impl GuestMounts {
    /// Unmounts every guest file system and frees its loop device.
    pub fn close(&self) {
        self.0.files.lock().clear();
        for (_, m) in self.0.mounts.lock().drain() {
            // Unmounts now, whoever else holds the GuestMount.
            drop(m.files.lock().take());
        }
        self.0.layouts.lock().clear();
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from(e.raw_os_error().unwrap_or(libc::EIO))
}

fn vm_err(what: &str, e: lifeboat_vmfiles::VmFilesError) -> Errno {
    tracing::error!("{what}: {e}");
    if e.is_not_found() {
        Errno::from(libc::ENOENT)
    } else {
        Errno::from(libc::EIO)
    }
}

fn need_root() -> FResult<()> {
    if unsafe { libc::geteuid() } != 0 {
        tracing::error!("reading a VM's guest files under vms/ needs root (loop devices and mounts); run `lifeboat mount` as root, or use `lifeboat vm files`");
        return Err(libc::EACCES.into());
    }
    Ok(())
}

/// How a partition is named under its disk: its number, or `vg-lv` for
/// an LVM volume (a `/` cannot be in a name).
pub(crate) fn partition_dir_name(p: &Partition) -> String {
    p.name.replace('/', "-")
}

impl VmSnap {
    pub fn new(id: BlobId, snap: Snapshot, name: String) -> Self {
        VmSnap { id, name, snap, disks: OnceLock::new() }
    }

    pub fn disks(&self, ds: &Datastore) -> FResult<Vec<String>> {
        let r = self.disks.get_or_init(|| lifeboat_qemu::load_vm(ds, &self.snap).map(|vm| vm.md.disks.iter().map(|d| d.id.clone()).collect()).map_err(|e| e.to_string()));
        r.clone().map_err(|e| {
            tracing::error!("VM snapshot {}: {e}", self.id.short());
            Errno::from(libc::EIO)
        })
    }
}

impl GuestState {
    /// The partitions of a disk that hold files this appliance reads.
    pub fn partitions(&self, ds: &Arc<Datastore>, d: &VmDisk) -> FResult<Arc<Vec<Partition>>> {
        let key = (d.snap.id, d.disk.clone());
        if let Some(l) = self.layouts.lock().get(&key) {
            return Ok(l.clone());
        }
        need_root()?;
        let disk = SnapshotDisk::open(ds, &d.snap.snap, Some(&d.disk)).map_err(|e| vm_err(&format!("disk {} of VM snapshot {}", d.disk, d.snap.id.short()), e))?;
        let parts: Arc<Vec<Partition>> = Arc::new(disk.layout.partitions.iter().filter(|p| p.has_files()).cloned().collect());
        self.layouts.lock().insert(key, parts.clone());
        Ok(parts)
    }

    /// The root of partition `p`, mounted on first use.
    pub fn mount(&self, ds: &Arc<Datastore>, d: &VmDisk, p: &Partition) -> FResult<Arc<GuestNode>> {
        need_root()?;
        let key = (d.snap.id, d.disk.clone(), p.name.clone());
        // Held while mounting: two readers of a new partition mount it once.
        let mut mounts = self.mounts.lock();
        let m = match mounts.get(&key) {
            Some(m) => m.clone(),
            None => {
                let what = format!("partition {} of disk {} of VM snapshot {}", p.name, d.disk, d.snap.id.short());
                let disk = SnapshotDisk::open(ds, &d.snap.snap, Some(&d.disk)).map_err(|e| vm_err(&what, e))?;
                let files = disk.mount(Some(&p.name)).map_err(|e| vm_err(&what, e))?;
                tracing::info!("mounted {what} read-only for vms/");
                let m = Arc::new(GuestMount { root: files.root().to_path_buf(), files: Mutex::new(Some(files)) });
                mounts.insert(key, m.clone());
                m
            }
        };
        drop(mounts);
        let meta = std::fs::symlink_metadata(&m.root).map_err(|e| io_errno(&e))?;
        Ok(Arc::new(GuestNode { mount: m, rel: PathBuf::new(), meta }))
    }
}

impl GuestNode {
    pub fn child(&self, name: &[u8]) -> FResult<Option<Arc<GuestNode>>> {
        use std::os::unix::ffi::OsStrExt;
        let rel = self.rel.join(std::ffi::OsStr::from_bytes(name));
        match std::fs::symlink_metadata(self.mount.root.join(&rel)) {
            Ok(meta) => Ok(Some(Arc::new(GuestNode { mount: self.mount.clone(), rel, meta }))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_errno(&e)),
        }
    }

    /// The directory's entries, sorted by name.
    pub fn entries(&self) -> FResult<Vec<(Vec<u8>, Arc<GuestNode>)>> {
        use std::os::unix::ffi::OsStrExt;
        let mut names: Vec<_> = std::fs::read_dir(self.path()).map_err(|e| io_errno(&e))?.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            // Gone between listing and stat: not on a read-only mount, but
            // skip rather than fail the listing.
            if let Some(c) = self.child(n.as_bytes())? {
                out.push((n.as_bytes().to_vec(), c));
            }
        }
        Ok(out)
    }

    pub fn open(&self) -> FResult<File> {
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(self.path()).map_err(|e| io_errno(&e))
    }
}

/// Reads up to `size` bytes at `offset` (fewer only at the end).
pub(crate) fn read_at(f: &File, offset: u64, size: u32) -> FResult<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; size as usize];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_errno(&e)),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

impl GuestNode {
    /// Extended attribute `name` (ACLs, capabilities, SELinux labels) as
    /// the guest's file system holds it; a link's own, not its target's.
    pub fn xattr(&self, name: &[u8]) -> FResult<Vec<u8>> {
        let n = std::ffi::CString::new(name).map_err(|_| Errno::from(libc::EINVAL))?;
        let p = self.cpath()?;
        xattr_read(|buf, len| unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf, len) })
    }

    /// The names of its extended attributes, each ending in a NUL.
    pub fn xattr_names(&self) -> FResult<Vec<u8>> {
        let p = self.cpath()?;
        xattr_read(|buf, len| unsafe { libc::llistxattr(p.as_ptr(), buf as *mut libc::c_char, len) })
    }

    fn cpath(&self) -> FResult<std::ffi::CString> {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::CString::new(self.path().as_os_str().as_bytes()).map_err(|_| Errno::from(libc::EINVAL))
    }
}

/// Calls `get` with a null buffer for the size, then with a buffer of
/// that size, again if the value grew in between.
fn xattr_read(get: impl Fn(*mut libc::c_void, usize) -> isize) -> FResult<Vec<u8>> {
    loop {
        let len = get(std::ptr::null_mut(), 0);
        if len < 0 {
            return Err(io_errno(&std::io::Error::last_os_error()));
        }
        let mut buf = vec![0u8; len as usize];
        let got = get(buf.as_mut_ptr() as *mut libc::c_void, buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(io_errno(&e));
        }
    }
}
