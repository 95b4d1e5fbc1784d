//! The exported tree and what each client may see of it.
//!
//! Every live NFS export adds `/<vm>/<snapshot time>/` with three files:
//! `<disk>.img` (the flat raw disk), `<disk>-flat.vmdk` (the same bytes,
//! the extent a VMware descriptor names) and `<disk>.vmdk` (that
//! descriptor). A client sees only the exports whose allow-list holds its
//! address, so one listener serves many exports without leaking one
//! export's disk to another export's clients.
//!
//! File handles are `export index << 8 | node kind`: stable for the
//! export's life, stale once it is removed (indices are never reused).

use crate::ClientRule;
use lifeboat_nbd::BlockDevice;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// One disk served over NFS.
pub struct NfsDisk {
    /// Directory names; made safe with [`plain_name`] by [`Registry::add`].
    pub vm: String,
    pub snapshot_time: String,
    pub disk: String,
    pub device: Arc<dyn BlockDevice>,
    pub writable: bool,
    pub clients: Vec<ClientRule>,
    /// Seconds since the epoch, shown as every node's times.
    pub mtime: u32,
}

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
    Root = 1,
    VmDir = 2,
    TimeDir = 3,
    Img = 4,
    Flat = 5,
    Vmdk = 6,
}

impl Kind {
    fn from_u8(k: u8) -> Option<Kind> {
        Some(match k {
            1 => Kind::Root,
            2 => Kind::VmDir,
            3 => Kind::TimeDir,
            4 => Kind::Img,
            5 => Kind::Flat,
            6 => Kind::Vmdk,
            _ => return None,
        })
    }
}

pub(crate) const ROOT: u64 = Kind::Root as u64;

pub(crate) fn handle(idx: u64, kind: Kind) -> u64 {
    (idx << 8) | kind as u64
}

pub(crate) fn split(h: u64) -> Option<(u64, Kind)> {
    Some((h >> 8, Kind::from_u8((h & 0xff) as u8)?))
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
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
}

impl Registry {
    /// Adds a disk and returns its index (for [`Registry::remove`]).
    pub fn add(&self, mut d: NfsDisk) -> Result<u64, RegistryError> {
        d.vm = plain_name(&d.vm);
        d.snapshot_time = plain_name(&d.snapshot_time);
        d.disk = plain_name(&d.disk);
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

    pub fn remove(&self, idx: u64) -> Option<Arc<NfsDisk>> {
        self.inner.write().disks.remove(&idx)
    }

    /// The raw disk's path of export `idx` (`/<vm>/<time>/<disk>.img`).
    pub fn path(&self, idx: u64) -> Option<String> {
        self.inner.read().disks.get(&idx).map(|d| d.img_path())
    }

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
