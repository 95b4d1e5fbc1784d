//! `nfs3_server`'s file-system traits over the [`Registry`], seen from
//! one client address (each connection gets its own [`ClientView`]).

use crate::tree::{handle, split, Kind, NfsDisk, Registry, ROOT};
use lifeboat_nbd::ReadChunk;
use nfs3_server::nfs3_types::nfs3::{
    createverf3, fattr3, filename3, ftype3, nfspath3, nfsstat3, nfstime3, sattr3, set_size3, specdata3, stable_how,
};
use nfs3_server::vfs::{DirEntryPlus, FileHandleU64, NextResult, NfsFileSystem, NfsReadFileSystem, ReadDirPlusIterator, VFSCapabilities};
use std::net::IpAddr;
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
    fattr3 { type_: ftype3::NF3DIR, mode: 0o555, nlink: 2, uid: 0, gid: 0, size: 4096, used: 4096, rdev: specdata3 { specdata1: 0, specdata2: 0 }, fsid: FSID, fileid: id, atime: t, mtime: t, ctime: t }
}

fn file_attr(id: u64, d: &NfsDisk, size: u64, writable: bool) -> fattr3 {
    let t = nfstime3 { seconds: d.mtime, nseconds: 0 };
    let mode = if writable { 0o644 } else { 0o444 };
    fattr3 { type_: ftype3::NF3REG, mode, nlink: 1, uid: 0, gid: 0, size, used: size, rdev: specdata3 { specdata1: 0, specdata2: 0 }, fsid: FSID, fileid: id, atime: t, mtime: t, ctime: t }
}

impl ClientView {
    fn disk(&self, idx: u64) -> Result<Arc<NfsDisk>, nfsstat3> {
        self.registry.get(idx, self.peer).ok_or(nfsstat3::NFS3ERR_STALE)
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
                for (i, d) in vis.iter().filter(|(_, d)| d.vm == me.vm && d.snapshot_time == me.snapshot_time) {
                    for (n, k) in names(d) {
                        out.insert(n, handle(*i, k));
                    }
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
        let d = self.disk(idx)?;
        Ok(match kind {
            Kind::Root | Kind::VmDir | Kind::TimeDir => dir_attr(id, d.mtime),
            Kind::Img | Kind::Flat => file_attr(id, &d, d.device.size(), d.writable),
            Kind::Vmdk => file_attr(id, &d, d.vmdk_descriptor().len() as u64, false),
        })
    }

    /// The disk behind a raw file handle (`.img` or `-flat.vmdk`).
    fn raw(&self, id: u64) -> Result<Arc<NfsDisk>, nfsstat3> {
        match split(id).ok_or(nfsstat3::NFS3ERR_BADHANDLE)? {
            (idx, Kind::Img | Kind::Flat) => self.disk(idx),
            (_, Kind::Vmdk) => Err(nfsstat3::NFS3ERR_ROFS),
            _ => Err(nfsstat3::NFS3ERR_ISDIR),
        }
    }
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
        if let Some((idx, Kind::Vmdk)) = split(id) {
            let text = self.disk(idx)?.vmdk_descriptor().into_bytes();
            let start = (offset.min(text.len() as u64)) as usize;
            let end = (start + count as usize).min(text.len());
            return Ok((text[start..end].to_vec(), end == text.len()));
        }
        let d = self.raw(id).map_err(|e| if e == nfsstat3::NFS3ERR_ROFS { nfsstat3::NFS3ERR_INVAL } else { e })?;
        let size = d.device.size();
        if offset >= size {
            return Ok((Vec::new(), true));
        }
        let len = (count.min(MAX_READ) as u64).min(size - offset) as u32;
        let dev = d.device.clone();
        let chunks = tokio::task::spawn_blocking(move || dev.read_at(offset, len))
            .await
            .map_err(|_| nfsstat3::NFS3ERR_IO)?
            .map_err(|e| io_err("read", e))?;
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

/// Writes reach only a writable export's disk (whose device is a
/// copy-on-write overlay); the tree itself never changes.
impl NfsFileSystem for ClientView {
    fn capabilities(&self) -> VFSCapabilities {
        VFSCapabilities::ReadWrite
    }

    async fn setattr(&self, id: &FileHandleU64, setattr: sattr3) -> Result<fattr3, nfsstat3> {
        let attr = self.attr(id.as_u64())?;
        // A disk's size is fixed; times and modes are not kept.
        if let set_size3::Some(s) = setattr.size {
            if s != attr.size {
                return Err(if self.raw(id.as_u64()).map(|d| d.writable).unwrap_or(false) { nfsstat3::NFS3ERR_NOTSUPP } else { nfsstat3::NFS3ERR_ROFS });
            }
        }
        Ok(attr)
    }

    async fn write(&self, id: &FileHandleU64, offset: u64, data: &[u8], _stable: stable_how) -> Result<(fattr3, stable_how), nfsstat3> {
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
        tokio::task::spawn_blocking(move || dev.write_at(offset, &data))
            .await
            .map_err(|_| nfsstat3::NFS3ERR_IO)?
            .map_err(|e| io_err("write", e))?;
        // UNSTABLE: COMMIT flushes the overlay.
        Ok((self.attr(id.as_u64())?, stable_how::UNSTABLE))
    }

    async fn create(&self, dirid: &FileHandleU64, _: &filename3<'_>, _: sattr3) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        Err(self.no_new_files(dirid))
    }

    async fn create_exclusive(&self, dirid: &FileHandleU64, _: &filename3<'_>, _: createverf3) -> Result<FileHandleU64, nfsstat3> {
        Err(self.no_new_files(dirid))
    }

    async fn mkdir(&self, dirid: &FileHandleU64, _: &filename3<'_>) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        Err(self.no_new_files(dirid))
    }

    async fn remove(&self, dirid: &FileHandleU64, _: &filename3<'_>) -> Result<(), nfsstat3> {
        Err(self.no_new_files(dirid))
    }

    async fn rename<'a>(&self, dirid: &FileHandleU64, _: &filename3<'a>, _: &FileHandleU64, _: &filename3<'a>) -> Result<(), nfsstat3> {
        Err(self.no_new_files(dirid))
    }

    async fn symlink<'a>(&self, dirid: &FileHandleU64, _: &filename3<'a>, _: &nfspath3<'a>, _: &sattr3) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        Err(self.no_new_files(dirid))
    }

    async fn commit(&self, id: &FileHandleU64, _offset: u64, _count: u32) -> Result<(), nfsstat3> {
        let d = self.raw(id.as_u64())?;
        if !d.writable {
            return Ok(());
        }
        let dev = d.device.clone();
        tokio::task::spawn_blocking(move || dev.flush()).await.map_err(|_| nfsstat3::NFS3ERR_IO)?.map_err(|e| io_err("commit", e))
    }
}

impl ClientView {
    /// The tree is fixed: read-only exports say so, writable ones refuse
    /// new names (only the disk's bytes change).
    fn no_new_files(&self, dirid: &FileHandleU64) -> nfsstat3 {
        match split(dirid.as_u64()) {
            Some((idx, Kind::VmDir | Kind::TimeDir)) if self.disk(idx).map(|d| d.writable).unwrap_or(false) => nfsstat3::NFS3ERR_NOTSUPP,
            _ => nfsstat3::NFS3ERR_ROFS,
        }
    }
}
