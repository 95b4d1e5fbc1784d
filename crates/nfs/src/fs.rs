//! `nfs3_server`'s file-system traits over the [`Registry`], seen from
//! one client address (each connection gets its own [`ClientView`]).
//!
//! The fixed nodes (directories, disks, descriptors, metadata) come from
//! the registry; what a client creates in a writable export's snapshot
//! directory is a real file in that export's files area, reached only
//! through names checked here (one plain component each, no symlinks
//! made), so a client can never name a path outside the area.

use crate::tree::{handle, split, Kind, NfsDisk, Registry, ROOT};
use lifeboat_nbd::ReadChunk;
use nfs3_server::nfs3_types::nfs3::{createverf3, fattr3, filename3, ftype3, nfspath3, nfsstat3, nfstime3, sattr3, set_size3, specdata3, stable_how};
use nfs3_server::vfs::{DirEntryPlus, FileHandleU64, NextResult, NfsFileSystem, NfsReadFileSystem, ReadDirPlusIterator, VFSCapabilities};
use std::fs::File;
use std::net::IpAddr;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest READ answered at once (the server advertises 1 MiB).
const MAX_READ: u32 = 1 << 20;
const FSID: u64 = 0x4c42_4e46; // "LBNF"

pub struct ClientView {
    pub(crate) registry: Arc<Registry>,
    pub(crate) peer: IpAddr,
}

fn names(d: &NfsDisk) -> [(String, Kind); 3] {
    [(format!("{}.img", d.disk), Kind::Img), (format!("{}-flat.vmdk", d.disk), Kind::Flat), (format!("{}.vmdk", d.disk), Kind::Vmdk)]
}

fn dir_attr(id: u64, mtime: u32) -> fattr3 {
    let t = nfstime3 { seconds: mtime, nseconds: 0 };
    fattr3 {
        type_: ftype3::NF3DIR,
        mode: 0o555,
        nlink: 2,
        uid: 0,
        gid: 0,
        size: 4096,
        used: 4096,
        rdev: specdata3 { specdata1: 0, specdata2: 0 },
        fsid: FSID,
        fileid: id,
        atime: t,
        mtime: t,
        ctime: t,
    }
}

/// Attributes of a created file or directory, from the host's.
fn host_attr(id: u64, m: &std::fs::Metadata) -> fattr3 {
    let t = |s: i64, ns: i64| nfstime3 { seconds: s.clamp(0, u32::MAX as i64) as u32, nseconds: ns as u32 };
    let (type_, mode, nlink) = if m.is_dir() { (ftype3::NF3DIR, 0o755, 2) } else { (ftype3::NF3REG, 0o644, 1) };
    fattr3 {
        type_,
        mode,
        nlink,
        uid: 0,
        gid: 0,
        size: m.len(),
        used: m.blocks() * 512,
        rdev: specdata3 { specdata1: 0, specdata2: 0 },
        fsid: FSID,
        fileid: id,
        atime: t(m.atime(), m.atime_nsec()),
        mtime: t(m.mtime(), m.mtime_nsec()),
        ctime: t(m.ctime(), m.ctime_nsec()),
    }
}

/// One name a client gave, as a plain path component.
fn client_name<'a>(f: &'a filename3<'_>) -> Result<&'a str, nfsstat3> {
    let n = std::str::from_utf8(&f.0).map_err(|_| nfsstat3::NFS3ERR_INVAL)?;
    if n.len() > 255 {
        return Err(nfsstat3::NFS3ERR_NAMETOOLONG);
    }
    if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
        return Err(nfsstat3::NFS3ERR_INVAL);
    }
    Ok(n)
}

fn host_err(what: &str, e: std::io::Error) -> nfsstat3 {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => nfsstat3::NFS3ERR_NOENT,
        K::AlreadyExists => nfsstat3::NFS3ERR_EXIST,
        K::DirectoryNotEmpty => nfsstat3::NFS3ERR_NOTEMPTY,
        K::NotADirectory => nfsstat3::NFS3ERR_NOTDIR,
        K::IsADirectory => nfsstat3::NFS3ERR_ISDIR,
        K::StorageFull | K::QuotaExceeded => nfsstat3::NFS3ERR_NOSPC,
        K::FileTooLarge => nfsstat3::NFS3ERR_FBIG,
        _ => io_err(what, e),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, nfsstat3> + Send + 'static) -> Result<T, nfsstat3> {
    tokio::task::spawn_blocking(f).await.map_err(|_| nfsstat3::NFS3ERR_IO)?
}

fn file_attr(id: u64, d: &NfsDisk, size: u64, writable: bool) -> fattr3 {
    let t = nfstime3 { seconds: d.mtime, nseconds: 0 };
    let mode = if writable { 0o644 } else { 0o444 };
    fattr3 { type_: ftype3::NF3REG, mode, nlink: 1, uid: 0, gid: 0, size, used: size, rdev: specdata3 { specdata1: 0, specdata2: 0 }, fsid: FSID, fileid: id, atime: t, mtime: t, ctime: t }
}

/// Where a created node lives: its export, its path in the export's
/// files area, and that area.
struct Place {
    idx: u64,
    rel: PathBuf,
    area: PathBuf,
}

impl Place {
    fn host(&self) -> PathBuf {
        self.area.join(&self.rel)
    }
}

impl ClientView {
    fn disk(&self, idx: u64) -> Result<Arc<NfsDisk>, nfsstat3> {
        self.registry.get(idx, self.peer).ok_or(nfsstat3::NFS3ERR_STALE)
    }

    /// The export whose files area backs the snapshot directory of `me`:
    /// the first writable export of that snapshot this client sees.
    fn area_owner(&self, me: &NfsDisk) -> Option<(u64, PathBuf)> {
        self.registry.visible(self.peer).into_iter().filter(|(_, d)| d.vm == me.vm && d.snapshot_time == me.snapshot_time).find_map(|(i, d)| d.files.clone().map(|a| (i, a)))
    }

    /// The created node behind handle `n` (index part of a `Created` handle).
    fn created(&self, n: u64) -> Result<Place, nfsstat3> {
        let (idx, rel) = self.registry.node_path(n).ok_or(nfsstat3::NFS3ERR_STALE)?;
        let area = self.disk(idx)?.files.clone().ok_or(nfsstat3::NFS3ERR_STALE)?;
        Ok(Place { idx, rel, area })
    }

    /// The directory a client may create in: a writable export's snapshot
    /// directory or a directory made there. Anything else is read-only.
    fn dir_place(&self, dir: u64) -> Result<Place, nfsstat3> {
        match split(dir).ok_or(nfsstat3::NFS3ERR_BADHANDLE)? {
            (idx, Kind::TimeDir) => {
                let me = self.disk(idx)?;
                let (idx, area) = self.area_owner(&me).ok_or(nfsstat3::NFS3ERR_ROFS)?;
                Ok(Place { idx, rel: PathBuf::new(), area })
            }
            (n, Kind::Created) => {
                let p = self.created(n)?;
                if !std::fs::symlink_metadata(p.host()).map_err(|e| host_err("stat", e))?.is_dir() {
                    return Err(nfsstat3::NFS3ERR_NOTDIR);
                }
                Ok(p)
            }
            (_, Kind::Root | Kind::VmDir) => Err(nfsstat3::NFS3ERR_ROFS),
            _ => Err(nfsstat3::NFS3ERR_NOTDIR),
        }
    }

    /// (name, handle) of a directory's entries, sorted by name.
    fn children(&self, dir: u64) -> Result<Vec<(String, u64)>, nfsstat3> {
        let (idx, kind) = split(dir).ok_or(nfsstat3::NFS3ERR_BADHANDLE)?;
        let vis = self.registry.visible(self.peer);
        let mut out: std::collections::BTreeMap<String, u64> = Default::default();
        match kind {
            Kind::Root if dir == ROOT => {
                for (i, d) in &vis {
                    out.entry(d.vm.clone()).or_insert(handle(*i, Kind::VmDir));
                }
            }
            Kind::VmDir => {
                let me = self.disk(idx)?;
                for (i, d) in vis.iter().filter(|(_, d)| d.vm == me.vm) {
                    out.entry(d.snapshot_time.clone()).or_insert(handle(*i, Kind::TimeDir));
                }
            }
            Kind::TimeDir => {
                let me = self.disk(idx)?;
                if let Some((owner, area)) = self.area_owner(&me) {
                    for name in list_host(&area)? {
                        out.insert(name.clone(), self.registry.node(owner, Path::new(&name)));
                    }
                }
                // The fixed files win over created ones of the same name
                // (none can be made: create checks first).
                for (i, d) in vis.iter().filter(|(_, d)| d.vm == me.vm && d.snapshot_time == me.snapshot_time) {
                    for (n, k) in names(d) {
                        out.insert(n, handle(*i, k));
                    }
                    for (j, (n, _)) in d.meta.iter().enumerate() {
                        out.insert(n.clone(), handle(*i, Kind::Meta(j as u8)));
                    }
                }
            }
            Kind::Created => {
                let p = self.created(idx)?;
                for name in list_host(&p.host())? {
                    let rel = p.rel.join(&name);
                    out.insert(name, self.registry.node(p.idx, &rel));
                }
            }
            _ => return Err(nfsstat3::NFS3ERR_NOTDIR),
        }
        Ok(out.into_iter().collect())
    }

    fn parent(&self, dir: u64) -> Result<u64, nfsstat3> {
        let (idx, kind) = split(dir).ok_or(nfsstat3::NFS3ERR_BADHANDLE)?;
        match kind {
            Kind::Root => Ok(ROOT),
            Kind::VmDir => Ok(ROOT),
            Kind::TimeDir => {
                let me = self.disk(idx)?;
                self.children(ROOT)?.into_iter().find(|(n, _)| *n == me.vm).map(|(_, h)| h).ok_or(nfsstat3::NFS3ERR_STALE)
            }
            Kind::Created => {
                let p = self.created(idx)?;
                match p.rel.parent().filter(|r| !r.as_os_str().is_empty()) {
                    Some(up) => Ok(self.registry.node(p.idx, up)),
                    None => Ok(handle(p.idx, Kind::TimeDir)),
                }
            }
            _ => Err(nfsstat3::NFS3ERR_NOTDIR),
        }
    }

    fn attr(&self, id: u64) -> Result<fattr3, nfsstat3> {
        let (idx, kind) = split(id).ok_or(nfsstat3::NFS3ERR_BADHANDLE)?;
        if kind == Kind::Root {
            if id != ROOT {
                return Err(nfsstat3::NFS3ERR_BADHANDLE);
            }
            return Ok(dir_attr(id, 0));
        }
        if kind == Kind::Created {
            let m = std::fs::symlink_metadata(self.created(idx)?.host()).map_err(|e| match host_err("stat", e) {
                nfsstat3::NFS3ERR_NOENT => nfsstat3::NFS3ERR_STALE,
                s => s,
            })?;
            return Ok(host_attr(id, &m));
        }
        let d = self.disk(idx)?;
        Ok(match kind {
            Kind::Root | Kind::VmDir | Kind::TimeDir => {
                let mut a = dir_attr(id, d.mtime);
                // Writable directories say so, or clients won't try.
                if kind == Kind::TimeDir && self.area_owner(&d).is_some() {
                    a.mode = 0o755;
                }
                a
            }
            Kind::Img | Kind::Flat => file_attr(id, &d, d.device.size(), d.writable),
            Kind::Vmdk => file_attr(id, &d, d.vmdk_descriptor().len() as u64, false),
            Kind::Meta(j) => file_attr(id, &d, d.meta.get(j as usize).ok_or(nfsstat3::NFS3ERR_STALE)?.1.len() as u64, false),
            Kind::Created => unreachable!("answered above"),
        })
    }

    /// The disk behind a raw file handle (`.img` or `-flat.vmdk`).
    fn raw(&self, id: u64) -> Result<Arc<NfsDisk>, nfsstat3> {
        match split(id).ok_or(nfsstat3::NFS3ERR_BADHANDLE)? {
            (idx, Kind::Img | Kind::Flat) => self.disk(idx),
            (_, Kind::Vmdk | Kind::Meta(_)) => Err(nfsstat3::NFS3ERR_ROFS),
            _ => Err(nfsstat3::NFS3ERR_ISDIR),
        }
    }

    /// A created regular file's place (writes, size changes).
    fn created_file(&self, id: u64) -> Result<Option<Place>, nfsstat3> {
        match split(id).ok_or(nfsstat3::NFS3ERR_BADHANDLE)? {
            (n, Kind::Created) => {
                let p = self.created(n)?;
                if std::fs::symlink_metadata(p.host()).map_err(|e| host_err("stat", e))?.is_dir() {
                    return Err(nfsstat3::NFS3ERR_ISDIR);
                }
                Ok(Some(p))
            }
            _ => Ok(None),
        }
    }

    /// Refuses a name that belongs to the fixed tree (disks, descriptors,
    /// metadata): they cannot be replaced, removed or renamed.
    fn not_fixed(&self, dir: u64, name: &str) -> Result<(), nfsstat3> {
        if matches!(split(dir), Some((_, Kind::TimeDir))) {
            if let Some((_, h)) = self.children(dir)?.into_iter().find(|(n, _)| n == name) {
                if !matches!(split(h), Some((_, Kind::Created))) {
                    return Err(nfsstat3::NFS3ERR_ACCES);
                }
            }
        }
        Ok(())
    }

    async fn make(&self, dirid: &FileHandleU64, filename: &filename3<'_>, how: Make) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        let dir = self.dir_place(dirid.as_u64())?;
        let name = client_name(filename)?;
        self.not_fixed(dirid.as_u64(), name)?;
        let rel = dir.rel.join(name);
        let host = dir.area.join(&rel);
        let area = dir.area.clone();
        blocking(move || {
            // The area is made with the first file.
            std::fs::create_dir_all(&area).map_err(|e| host_err("create", e))?;
            match how {
                Make::Dir => std::fs::create_dir(&host).map(drop),
                Make::File { exclusive, size } => std::fs::OpenOptions::new().write(true).create(!exclusive).create_new(exclusive).open(&host).and_then(|f| match size {
                    Some(s) => f.set_len(s),
                    None => Ok(()),
                }),
            }
            .map_err(|e| host_err("create", e))
        })
        .await?;
        let h = self.registry.node(dir.idx, &rel);
        Ok((FileHandleU64::new(h), self.attr(h)?))
    }
}

enum Make {
    Dir,
    File { exclusive: bool, size: Option<u64> },
}

/// Names in a host directory of a files area (made by clients through us).
fn list_host(dir: &Path) -> Result<Vec<String>, nfsstat3> {
    let rd = match std::fs::read_dir(dir) {
        Ok(r) => r,
        // The area is made with the first file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(host_err("readdir", e)),
    };
    Ok(rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
}

fn io_err(what: &str, e: std::io::Error) -> nfsstat3 {
    tracing::warn!("NFS {what}: {e}");
    nfsstat3::NFS3ERR_IO
}

impl NfsReadFileSystem for ClientView {
    type Handle = FileHandleU64;

    fn root_dir(&self) -> FileHandleU64 {
        FileHandleU64::new(ROOT)
    }

    async fn lookup(&self, dirid: &FileHandleU64, filename: &filename3<'_>) -> Result<FileHandleU64, nfsstat3> {
        let dir = dirid.as_u64();
        let name = std::str::from_utf8(&filename.0).map_err(|_| nfsstat3::NFS3ERR_NOENT)?;
        let h = match name {
            "." => {
                self.children(dir)?;
                dir
            }
            ".." => self.parent(dir)?,
            _ => self.children(dir)?.into_iter().find(|(n, _)| n == name).map(|(_, h)| h).ok_or(nfsstat3::NFS3ERR_NOENT)?,
        };
        Ok(FileHandleU64::new(h))
    }

    async fn getattr(&self, id: &FileHandleU64) -> Result<fattr3, nfsstat3> {
        self.attr(id.as_u64())
    }

    async fn read(&self, id: &FileHandleU64, offset: u64, count: u32) -> Result<(Vec<u8>, bool), nfsstat3> {
        let id = id.as_u64();
        let text = match split(id) {
            Some((idx, Kind::Vmdk)) => Some(self.disk(idx)?.vmdk_descriptor().into_bytes()),
            Some((idx, Kind::Meta(j))) => Some(self.disk(idx)?.meta.get(j as usize).ok_or(nfsstat3::NFS3ERR_STALE)?.1.clone()),
            _ => None,
        };
        if let Some(text) = text {
            let start = (offset.min(text.len() as u64)) as usize;
            let end = (start + count as usize).min(text.len());
            return Ok((text[start..end].to_vec(), end == text.len()));
        }
        if let Some(p) = self.created_file(id)? {
            let count = count.min(MAX_READ);
            return blocking(move || {
                let f = File::open(p.host()).map_err(|e| host_err("open", e))?;
                let size = f.metadata().map_err(|e| host_err("stat", e))?.len();
                let mut buf = vec![0; (count as u64).min(size.saturating_sub(offset)) as usize];
                let mut got = 0;
                while got < buf.len() {
                    match f.read_at(&mut buf[got..], offset + got as u64).map_err(|e| host_err("read", e))? {
                        0 => break,
                        n => got += n,
                    }
                }
                buf.truncate(got);
                Ok((buf, offset + got as u64 >= size))
            })
            .await;
        }
        let d = self.raw(id).map_err(|e| if e == nfsstat3::NFS3ERR_ROFS { nfsstat3::NFS3ERR_INVAL } else { e })?;
        let size = d.device.size();
        if offset >= size {
            return Ok((Vec::new(), true));
        }
        let len = (count.min(MAX_READ) as u64).min(size - offset) as u32;
        let dev = d.device.clone();
        let chunks = tokio::task::spawn_blocking(move || dev.read_at(offset, len)).await.map_err(|_| nfsstat3::NFS3ERR_IO)?.map_err(|e| io_err("read", e))?;
        let mut buf = Vec::with_capacity(len as usize);
        for c in chunks {
            match c {
                ReadChunk::Data(b) => buf.extend_from_slice(&b),
                ReadChunk::Zero(n) => buf.resize(buf.len() + n as usize, 0),
            }
        }
        let eof = offset + buf.len() as u64 >= size;
        Ok((buf, eof))
    }

    async fn readdirplus(&self, dirid: &FileHandleU64, cookie: u64) -> Result<impl ReadDirPlusIterator<FileHandleU64>, nfsstat3> {
        let entries = self.children(dirid.as_u64())?;
        let mut out = Vec::new();
        for (i, (name, h)) in entries.into_iter().enumerate().skip(cookie as usize) {
            // An export removed meanwhile just drops out of the listing.
            if let Ok(a) = self.attr(h) {
                out.push(DirEntryPlus { fileid: h, name: name.into_bytes().into(), cookie: i as u64 + 1, name_attributes: Some(a), name_handle: Some(FileHandleU64::new(h)) });
            }
        }
        Ok(Entries(out.into_iter()))
    }

    async fn readlink(&self, _id: &FileHandleU64) -> Result<nfspath3<'_>, nfsstat3> {
        Err(nfsstat3::NFS3ERR_INVAL)
    }
}

struct Entries(std::vec::IntoIter<DirEntryPlus<FileHandleU64>>);

impl ReadDirPlusIterator<FileHandleU64> for Entries {
    async fn next(&mut self) -> NextResult<DirEntryPlus<FileHandleU64>> {
        match self.0.next() {
            Some(e) => NextResult::Ok(e),
            None => NextResult::Eof,
        }
    }
}

/// A writable export's disk takes writes (into its copy-on-write
/// overlay); its snapshot directory takes new files (into its files
/// area). Nothing else changes.
impl NfsFileSystem for ClientView {
    fn capabilities(&self) -> VFSCapabilities {
        VFSCapabilities::ReadWrite
    }

    async fn setattr(&self, id: &FileHandleU64, setattr: sattr3) -> Result<fattr3, nfsstat3> {
        let attr = self.attr(id.as_u64())?;
        if let Some(p) = self.created_file(id.as_u64()).or_else(|e| if e == nfsstat3::NFS3ERR_ISDIR { Ok(None) } else { Err(e) })? {
            // Size matters (swap files are made by truncation); modes,
            // owners and times are not kept.
            if let set_size3::Some(s) = setattr.size {
                blocking(move || std::fs::OpenOptions::new().write(true).open(p.host()).and_then(|f| f.set_len(s)).map_err(|e| host_err("truncate", e))).await?;
            }
            return self.attr(id.as_u64());
        }
        // A disk's size is fixed; times and modes are not kept.
        if let set_size3::Some(s) = setattr.size {
            if s != attr.size {
                return Err(if self.raw(id.as_u64()).map(|d| d.writable).unwrap_or(false) { nfsstat3::NFS3ERR_NOTSUPP } else { nfsstat3::NFS3ERR_ROFS });
            }
        }
        Ok(attr)
    }

    async fn write(&self, id: &FileHandleU64, offset: u64, data: &[u8], _stable: stable_how) -> Result<(fattr3, stable_how), nfsstat3> {
        if let Some(p) = self.created_file(id.as_u64())? {
            let data = data.to_vec();
            blocking(move || {
                let f = std::fs::OpenOptions::new().write(true).open(p.host()).map_err(|e| host_err("open", e))?;
                f.write_all_at(&data, offset).map_err(|e| host_err("write", e))
            })
            .await?;
            return Ok((self.attr(id.as_u64())?, stable_how::UNSTABLE));
        }
        let d = self.raw(id.as_u64())?;
        if !d.writable {
            return Err(nfsstat3::NFS3ERR_ROFS);
        }
        let size = d.device.size();
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > size) {
            return Err(nfsstat3::NFS3ERR_FBIG);
        }
        let dev = d.device.clone();
        let data = data.to_vec();
        tokio::task::spawn_blocking(move || dev.write_at(offset, &data)).await.map_err(|_| nfsstat3::NFS3ERR_IO)?.map_err(|e| io_err("write", e))?;
        // UNSTABLE: COMMIT flushes the overlay.
        Ok((self.attr(id.as_u64())?, stable_how::UNSTABLE))
    }

    async fn create(&self, dirid: &FileHandleU64, filename: &filename3<'_>, attr: sattr3) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        let size = match attr.size {
            set_size3::Some(s) => Some(s),
            set_size3::None => None,
        };
        self.make(dirid, filename, Make::File { exclusive: false, size }).await
    }

    async fn create_exclusive(&self, dirid: &FileHandleU64, filename: &filename3<'_>, _: createverf3) -> Result<FileHandleU64, nfsstat3> {
        // The verifier is not kept: a retried EXCLUSIVE create of a file
        // that now exists gets EXIST (RFC 1813 lets servers do this).
        Ok(self.make(dirid, filename, Make::File { exclusive: true, size: None }).await?.0)
    }

    async fn mkdir(&self, dirid: &FileHandleU64, filename: &filename3<'_>) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        self.make(dirid, filename, Make::Dir).await
    }

    async fn remove(&self, dirid: &FileHandleU64, filename: &filename3<'_>) -> Result<(), nfsstat3> {
        let dir = self.dir_place(dirid.as_u64())?;
        let name = client_name(filename)?;
        self.not_fixed(dirid.as_u64(), name)?;
        let rel = dir.rel.join(name);
        let host = dir.area.join(&rel);
        blocking(move || {
            let m = std::fs::symlink_metadata(&host).map_err(|e| host_err("stat", e))?;
            if m.is_dir() { std::fs::remove_dir(&host) } else { std::fs::remove_file(&host) }.map_err(|e| host_err("remove", e))
        })
        .await?;
        self.registry.forget(dir.idx, &rel);
        Ok(())
    }

    async fn rename<'a>(&self, from_dir: &FileHandleU64, from: &filename3<'a>, to_dir: &FileHandleU64, to: &filename3<'a>) -> Result<(), nfsstat3> {
        let src = self.dir_place(from_dir.as_u64())?;
        let dst = self.dir_place(to_dir.as_u64())?;
        if src.idx != dst.idx {
            return Err(nfsstat3::NFS3ERR_XDEV);
        }
        let (fname, tname) = (client_name(from)?, client_name(to)?);
        self.not_fixed(from_dir.as_u64(), fname)?;
        self.not_fixed(to_dir.as_u64(), tname)?;
        let (frel, trel) = (src.rel.join(fname), dst.rel.join(tname));
        if trel.starts_with(&frel) && trel != frel {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        let (fhost, thost) = (src.area.join(&frel), dst.area.join(&trel));
        blocking(move || std::fs::rename(&fhost, &thost).map_err(|e| host_err("rename", e))).await?;
        self.registry.renamed(src.idx, &frel, &trel);
        Ok(())
    }

    async fn symlink<'a>(&self, dirid: &FileHandleU64, _: &filename3<'a>, _: &nfspath3<'a>, _: &sattr3) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        // Symlinks in a files area could point a later lookup outside it.
        self.dir_place(dirid.as_u64())?;
        Err(nfsstat3::NFS3ERR_NOTSUPP)
    }

    async fn commit(&self, id: &FileHandleU64, _offset: u64, _count: u32) -> Result<(), nfsstat3> {
        if let Some(p) = self.created_file(id.as_u64())? {
            return blocking(move || File::open(p.host()).and_then(|f| f.sync_all()).map_err(|e| host_err("commit", e))).await;
        }
        let d = self.raw(id.as_u64())?;
        if !d.writable {
            return Ok(());
        }
        let dev = d.device.clone();
        tokio::task::spawn_blocking(move || dev.flush()).await.map_err(|_| nfsstat3::NFS3ERR_IO)?.map_err(|e| io_err("commit", e))
    }
}
