//! The guest's files in a VM snapshot of a datastore: the one place that
//! picks the disk and the partition, and resolves guest paths, for the
//! CLI (`vm files`), the daemon's API and job, and `lifeboat mount`.

use crate::{probe, DiskFile, DiskLayout, MountedFs, Partition, Result, VmFilesError};
use lifeboat_store::{Datastore, Snapshot};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// One disk of a VM snapshot served as a read-only file, with its
/// partitions and file systems.
pub struct SnapshotDisk {
    /// The disk's id in the VM's metadata.
    pub disk: String,
    /// The virtual disk's size in bytes.
    pub size: u64,
    /// Its partitions and file systems, probed once at open.
    pub layout: DiskLayout,
    file: DiskFile,
}

impl SnapshotDisk {
    /// `disk`: a disk id, or None for the VM's only disk.
    pub fn open(ds: &Arc<Datastore>, snap: &Snapshot, disk: Option<&str>) -> Result<Self> {
        let vm = lifeboat_qemu::load_vm(ds, snap).map_err(|e| VmFilesError::Snapshot(e.to_string()))?;
        let (d, node) = match disk {
            Some(id) => vm.disk(id).ok_or_else(|| VmFilesError::NoSuchDisk { vm: vm.md.name.clone(), disk: id.to_string(), available: vm.disk_ids() })?,
            None if vm.md.disks.len() == 1 => (&vm.md.disks[0], &vm.disks[0]),
            None => return Err(VmFilesError::ChooseDisk { vm: vm.md.name.clone(), count: vm.md.disks.len(), available: vm.disk_ids() }),
        };
        let file = DiskFile::serve(Arc::new(lifeboat_vm::image::DatastoreDisk::new(ds.clone(), node)))?;
        let layout = probe(&file.path())?;
        Ok(SnapshotDisk { disk: d.id.clone(), size: node.size, layout, file })
    }

    /// The disk as a read-only file.
    pub fn image(&self) -> PathBuf {
        self.file.path()
    }

    /// `name`: a partition number or `vg/lv`, or None for the only one
    /// with readable files.
    pub fn partition(&self, name: Option<&str>) -> Result<&Partition> {
        match name {
            Some(n) => self.layout.partition(&self.image(), n).map_err(|e| match e {
                VmFilesError::NoSuchPartition { name, available, .. } => VmFilesError::NoSuchPartition { path: PathBuf::from(&self.disk), name, available },
                e => e,
            }),
            None => {
                let with_files: Vec<_> = self.layout.partitions.iter().filter(|p| p.has_files()).collect();
                match with_files.as_slice() {
                    [one] => Ok(*one),
                    many => Err(VmFilesError::ChoosePartition {
                        disk: self.disk.clone(),
                        available: if many.is_empty() { "none".into() } else { many.iter().map(|p| format!("{}: {}", p.name, p.fstype.as_deref().unwrap_or("-"))).collect::<Vec<_>>().join(", ") },
                    }),
                }
            }
        }
    }

    /// Mounts a partition (see `partition`); the disk stays served while
    /// the returned value lives.
    pub fn mount(self, partition: Option<&str>) -> Result<GuestFiles> {
        let part = self.partition(partition)?.clone();
        let fs = MountedFs::mount(&self.image(), &part)?;
        Ok(GuestFiles { fs, partition: part, disk: self })
    }
}

/// A mounted guest file system of a snapshot disk.
pub struct GuestFiles {
    // Field order is drop order: the file system before the disk under it.
    fs: MountedFs,
    /// The partition (or LVM volume) that is mounted.
    pub partition: Partition,
    /// The disk it is on, served until this value drops.
    pub disk: SnapshotDisk,
}

impl GuestFiles {
    /// Where the guest's root directory is mounted on the appliance.
    /// Do not open guest paths under it directly: use [`Self::resolve`],
    /// which keeps the guest's symlinks inside the guest.
    pub fn root(&self) -> &Path {
        self.fs.root()
    }

    /// Where guest path `path` is on the appliance; it must exist. The
    /// last component is not followed when it is a symlink (it is listed
    /// or copied as a link).
    pub fn resolve(&self, path: &str) -> Result<PathBuf> {
        let rel = within_guest(self.root(), &guest_relative(path)?).map_err(|source| VmFilesError::NoSuchPath {
            path: path.to_string(),
            partition: self.partition.name.clone(),
            disk: self.disk.disk.clone(),
            source,
        })?;
        let p = self.root().join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(_) => Ok(p),
            Err(source) => Err(VmFilesError::NoSuchPath { path: path.to_string(), partition: self.partition.name.clone(), disk: self.disk.disk.clone(), source }),
        }
    }

    /// The entries of directory `path`, sorted by name, or the one entry
    /// `path` names when it is not a directory.
    pub fn list(&self, path: &str) -> Result<Vec<GuestEntry>> {
        let p = self.resolve(path)?;
        let io = |source| VmFilesError::NoSuchPath { path: path.to_string(), partition: self.partition.name.clone(), disk: self.disk.disk.clone(), source };
        let meta = std::fs::symlink_metadata(&p).map_err(io)?;
        if !meta.is_dir() {
            return Ok(vec![GuestEntry::of(&p, p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), &meta)]);
        }
        let mut out = Vec::new();
        for e in std::fs::read_dir(&p).map_err(io)? {
            let e = e.map_err(io)?;
            let m = std::fs::symlink_metadata(e.path()).map_err(io)?;
            out.push(GuestEntry::of(&e.path(), e.file_name().to_string_lossy().into_owned(), &m));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// One file of the guest as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestEntry {
    /// File name (lossily UTF-8), not the whole path.
    pub name: String,
    /// `st_mode`: file type bits and permissions.
    pub mode: u32,
    /// Owner as the guest's numeric uid.
    pub uid: u32,
    /// Group as the guest's numeric gid.
    pub gid: u32,
    /// Size in bytes (`st_size`).
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// A symlink's target as stored, unresolved; `None` for other types.
    pub link_target: Option<String>,
}

impl GuestEntry {
    fn of(path: &Path, name: String, m: &std::fs::Metadata) -> Self {
        GuestEntry {
            name,
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime: m.mtime(),
            link_target: if m.file_type().is_symlink() { std::fs::read_link(path).ok().map(|t| t.to_string_lossy().into_owned()) } else { None },
        }
    }

    /// Whether it is a directory (a symlink to one is not).
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// `rel` with the symlinks of its directories resolved as the guest
/// would, inside `root`: an absolute target starts again at the guest's
/// root and `..` stops there. Why: the kernel would resolve a guest's
/// `/x -> /etc` to the appliance's own /etc.
fn within_guest(root: &Path, rel: &Path) -> std::io::Result<PathBuf> {
    let mut todo: Vec<std::ffi::OsString> = rel.components().rev().map(|c| c.as_os_str().to_os_string()).collect();
    let mut at = PathBuf::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.to_str() {
            Some("..") => {
                at.pop();
                continue;
            }
            Some(".") | Some("/") => continue,
            _ => {}
        }
        let next = at.join(&c);
        // The last component stays as it is, link or not.
        if !todo.is_empty() && std::fs::symlink_metadata(root.join(&next))?.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = std::fs::read_link(root.join(&next))?;
            if target.is_absolute() {
                at = PathBuf::new();
            }
            todo.extend(target.components().rev().map(|c| c.as_os_str().to_os_string()));
            continue;
        }
        at = next;
    }
    Ok(at)
}

/// A guest path relative to the guest's root. `..` is refused so nothing
/// outside the mounted file system is reached; symlinks inside the guest
/// are never followed by `resolve` (it stats the link itself).
pub fn guest_relative(path: &str) -> Result<PathBuf> {
    let mut rel = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => return Err(VmFilesError::BadPath { path: path.to_string() }),
        }
    }
    Ok(rel)
}
