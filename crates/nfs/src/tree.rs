//! The exported tree and what each client may see of it.
//!
//! Every live NFS export adds `/<vm>/<snapshot time>/` with three files:
//! `<disk>.img` (the flat raw disk), `<disk>-flat.vmdk` (the same bytes,
//! the extent a VMware descriptor names) and `<disk>.vmdk` (that
//! descriptor), plus the export's read-only metadata files (`vm.json`,
//! `vm.ovf`). A writable export also shows the files clients made there
//! (ESXi's lock, swap and log files), kept in the export's own files
//! area on the host. A client sees only the exports whose allow-list
//! holds its address, so one listener serves many exports without
//! leaking one export's disk to another export's clients.
//!
//! File handles are `index << 8 | node kind`: the index is the export's
//! for the fixed nodes and a registry-wide node number for created files.
//! Both are stable for the export's life and stale once it is removed
//! (indices are never reused).

use crate::ClientRule;
use lifeboat_nbd::BlockDevice;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One disk served over NFS.
pub struct NfsDisk {
    /// The VM's directory (`/<vm>/`). This and the next two names are
    /// made single path components with [`plain_name`] by
    /// [`Registry::add`].
    pub vm: String,
    /// The snapshot's directory under the VM's (`/<vm>/<time>/`); callers
    /// use the snapshot time, like `2024-05-01T120000Z`.
    pub snapshot_time: String,
    /// The disk's file stem: `<disk>.img`, `<disk>-flat.vmdk`,
    /// `<disk>.vmdk`.
    pub disk: String,
    /// The disk's bytes. For a writable export, hand in a copy-on-write
    /// overlay: NFS WRITEs go straight to this device.
    pub device: Arc<dyn BlockDevice>,
    /// Clients may WRITE the disk (into `device`) and its files show mode
    /// 0644; otherwise WRITE answers `NFS3ERR_ROFS`. Whether clients may
    /// create files beside it is [`NfsDisk::files`]'s, not this flag's.
    pub writable: bool,
    /// The allow-list: only peers inside one of these see this export
    /// (and an empty list hides it from everyone).
    pub clients: Vec<ClientRule>,
    /// Seconds since the epoch, shown as every fixed node's times (files
    /// clients created show their own).
    pub mtime: u32,
    /// Read-only files shown beside the disk (name, content): the
    /// platform metadata. At most [`MAX_META`]; names are made plain.
    pub meta: Vec<(String, Vec<u8>)>,
    /// A writable export's files area (a host directory only this export
    /// uses): what clients create in the snapshot directory lives here.
    /// `None` for read-only exports: with a files area the snapshot
    /// directory takes new files even when `writable` is false.
    pub files: Option<PathBuf>,
}

/// Metadata files one export can show; [`Registry::add`] drops the rest.
pub const MAX_META: usize = 16;

impl NfsDisk {
    /// The path of the raw disk inside the export (`/<vm>/<time>/<disk>.img`).
    pub fn img_path(&self) -> String {
        format!("/{}/{}/{}.img", self.vm, self.snapshot_time, self.disk)
    }

    pub(crate) fn allows(&self, peer: IpAddr) -> bool {
        self.clients.iter().any(|c| c.contains(peer))
    }

    /// A VMware monolithic-flat descriptor naming `<disk>-flat.vmdk`.
    pub fn vmdk_descriptor(&self) -> String {
        let sectors = self.device.size() / 512;
        let cylinders = (sectors / (255 * 63)).clamp(1, 65535);
        let access = if self.writable { "RW" } else { "RDONLY" };
        format!(
            "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\n\
             # Extent description\n{access} {sectors} VMFS \"{}-flat.vmdk\"\n\n\
             # The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"{cylinders}\"\n\
             ddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\nddb.virtualHWVersion = \"14\"\n",
            self.disk
        )
    }
}

/// A name from a snapshot's metadata (untrusted) made into one path
/// component: no `/`, no NUL, never `.` or `..`, never empty.
pub fn plain_name(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c == '/' || c == '\0' || c.is_control() { '_' } else { c }).collect();
    if out.is_empty() || out == "." || out == ".." {
        out = format!("_{out}");
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Root,
    VmDir,
    TimeDir,
    Img,
    Flat,
    Vmdk,
    /// A file or directory a client created (index: the node number).
    Created,
    /// Metadata file number n of the export.
    Meta(u8),
}

const META_BASE: u8 = 16;

impl Kind {
    fn from_u8(k: u8) -> Option<Kind> {
        Some(match k {
            1 => Kind::Root,
            2 => Kind::VmDir,
            3 => Kind::TimeDir,
            4 => Kind::Img,
            5 => Kind::Flat,
            6 => Kind::Vmdk,
            7 => Kind::Created,
            k if (META_BASE..META_BASE + MAX_META as u8).contains(&k) => Kind::Meta(k - META_BASE),
            _ => return None,
        })
    }

    fn to_u8(self) -> u8 {
        match self {
            Kind::Root => 1,
            Kind::VmDir => 2,
            Kind::TimeDir => 3,
            Kind::Img => 4,
            Kind::Flat => 5,
            Kind::Vmdk => 6,
            Kind::Created => 7,
            Kind::Meta(n) => META_BASE + n,
        }
    }
}

pub(crate) const ROOT: u64 = 1;

pub(crate) fn handle(idx: u64, kind: Kind) -> u64 {
    (idx << 8) | kind.to_u8() as u64
}

pub(crate) fn split(h: u64) -> Option<(u64, Kind)> {
    Some((h >> 8, Kind::from_u8((h & 0xff) as u8)?))
}

/// Why [`Registry::add`] refused an export.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Another live export already serves this disk path
    /// (`/<vm>/<time>/<disk>.img`, given): remove that export first.
    #[error("{0} is already served over NFS by another export; delete that one first or export another snapshot")]
    Duplicate(String),
}

/// The live exports, shared by every connection.
#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    disks: BTreeMap<u64, Arc<NfsDisk>>,
    /// Created nodes: number -> (export index, path in its files area),
    /// and back.
    next_node: u64,
    nodes: BTreeMap<u64, (u64, PathBuf)>,
    node_of: BTreeMap<(u64, PathBuf), u64>,
}

impl Registry {
    /// Adds a disk and returns its index (for [`Registry::remove`]).
    pub fn add(&self, mut d: NfsDisk) -> Result<u64, RegistryError> {
        d.vm = plain_name(&d.vm);
        d.snapshot_time = plain_name(&d.snapshot_time);
        d.disk = plain_name(&d.disk);
        d.meta.truncate(MAX_META);
        for (n, _) in &mut d.meta {
            *n = plain_name(n);
        }
        let mut g = self.inner.write();
        let path = d.img_path();
        if g.disks.values().any(|o| o.img_path() == path) {
            return Err(RegistryError::Duplicate(path));
        }
        g.next += 1;
        let idx = g.next;
        g.disks.insert(idx, Arc::new(d));
        Ok(idx)
    }

    /// Removes export `idx`: its handles, and those of files clients made
    /// in it, go stale at once, also on open connections. Returns the disk
    /// (`None` if no such export); its files area on the host stays.
    pub fn remove(&self, idx: u64) -> Option<Arc<NfsDisk>> {
        let mut g = self.inner.write();
        g.nodes.retain(|_, (i, _)| *i != idx);
        g.node_of.retain(|(i, _), _| *i != idx);
        g.disks.remove(&idx)
    }

    /// The handle of `rel` in export `idx`'s files area (made on first use).
    pub(crate) fn node(&self, idx: u64, rel: &Path) -> u64 {
        let mut g = self.inner.write();
        if let Some(n) = g.node_of.get(&(idx, rel.to_path_buf())) {
            return handle(*n, Kind::Created);
        }
        g.next_node += 1;
        let n = g.next_node;
        g.nodes.insert(n, (idx, rel.to_path_buf()));
        g.node_of.insert((idx, rel.to_path_buf()), n);
        handle(n, Kind::Created)
    }

    /// Export index and path of created node `n`.
    pub(crate) fn node_path(&self, n: u64) -> Option<(u64, PathBuf)> {
        self.inner.read().nodes.get(&n).cloned()
    }

    /// After a rename: `from` and everything under it is now at `to`
    /// (handles stay valid, as NFS clients expect); whatever was at `to`
    /// is gone.
    pub(crate) fn renamed(&self, idx: u64, from: &Path, to: &Path) {
        let mut g = self.inner.write();
        let g = &mut *g;
        let gone: Vec<u64> = g.nodes.iter().filter(|(_, (i, p))| *i == idx && p.starts_with(to)).map(|(n, _)| *n).collect();
        for n in gone {
            if let Some(k) = g.nodes.remove(&n) {
                g.node_of.remove(&k);
            }
        }
        for (n, (i, p)) in g.nodes.iter_mut() {
            if *i == idx && p.starts_with(from) {
                let old = p.clone();
                *p = to.join(old.strip_prefix(from).unwrap_or(Path::new("")));
                g.node_of.remove(&(idx, old));
                g.node_of.insert((idx, p.clone()), *n);
            }
        }
    }

    /// After a remove: `rel` and everything under it are gone.
    pub(crate) fn forget(&self, idx: u64, rel: &Path) {
        let mut g = self.inner.write();
        let g = &mut *g;
        g.nodes.retain(|_, (i, p)| !(*i == idx && p.starts_with(rel)));
        g.node_of.retain(|(i, p), _| !(*i == idx && p.starts_with(rel)));
    }

    /// The raw disk's path of export `idx` (`/<vm>/<time>/<disk>.img`).
    pub fn path(&self, idx: u64) -> Option<String> {
        self.inner.read().disks.get(&idx).map(|d| d.img_path())
    }

    /// No export is live: the caller may stop the [`crate::NfsServer`].
    pub fn is_empty(&self) -> bool {
        self.inner.read().disks.is_empty()
    }

    /// Whether any export lets `peer` in (checked when it connects).
    pub fn admits(&self, peer: IpAddr) -> bool {
        self.inner.read().disks.values().any(|d| d.allows(peer))
    }

    /// The exports `peer` may see, by index.
    pub(crate) fn visible(&self, peer: IpAddr) -> Vec<(u64, Arc<NfsDisk>)> {
        self.inner.read().disks.iter().filter(|(_, d)| d.allows(peer)).map(|(i, d)| (*i, d.clone())).collect()
    }

    pub(crate) fn get(&self, idx: u64, peer: IpAddr) -> Option<Arc<NfsDisk>> {
        self.inner.read().disks.get(&idx).filter(|d| d.allows(peer)).cloned()
    }
}
