//! Snapshot documents: what was backed up, when, from where, and the root
//! tree. Stored as a blob (so the index can be rebuilt from packs) and in
//! the index's `snapshots` column family for fast listing.

use crate::id::BlobId;
use serde::{Deserialize, Serialize};

/// What a backup run read and wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// Files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Files the parent snapshot did not have.
    pub files_new: u64,
    /// Files changed since the parent.
    pub files_changed: u64,
    /// Files taken from the parent unread.
    pub files_unchanged: u64,
    /// Directories taken from the parent whole.
    pub dirs_unchanged: u64,
    /// Total size of the files in the snapshot.
    pub total_bytes: u64,
    /// Bytes read from the source (unchanged files are not read).
    pub bytes_read: u64,
    /// Plain bytes of new blobs and what they took on disk.
    pub bytes_added: u64,
    /// Bytes the new blobs took on disk.
    pub bytes_stored: u64,
    /// New blobs stored.
    pub blobs_added: u64,
    /// Entries that could not be backed up (each logged).
    pub warnings: u64,
    /// Wall time of the run.
    pub duration_ms: u64,
    /// The walk recorded extended attributes and inode flags. Snapshots
    /// made before it could have none: a backup on top of one reads them
    /// again for files it otherwise takes as unchanged.
    #[serde(default)]
    pub ext_metadata: bool,
}

/// What a snapshot holds. File backups leave the field out, so their
/// documents (and ids) are as before it existed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Files and directories.
    #[default]
    Files,
    /// A VM: `vm.json` and one `<disk>.raw` per disk (crates/vm).
    Vm,
}

impl SnapshotKind {
    fn is_files(&self) -> bool {
        *self == SnapshotKind::Files
    }
}

/// A snapshot document: what was backed up, when, from where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup started.
    pub time: chrono::DateTime<chrono::Utc>,
    /// The machine backed up.
    pub hostname: String,
    /// Absolute source paths, as given and canonicalized.
    pub paths: Vec<String>,
    /// Labels the admin gave.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The root directory tree.
    pub tree: BlobId,
    /// The snapshot this one was taken against (unchanged files came from it).
    #[serde(default)]
    pub parent: Option<BlobId>,
    /// What the run did.
    #[serde(default)]
    pub summary: BackupSummary,
    /// The program and version that wrote it.
    pub program: String,
    /// Files or a VM.
    #[serde(default, skip_serializing_if = "SnapshotKind::is_files")]
    pub kind: SnapshotKind,
    /// The backed-up directory's own metadata when its contents form the
    /// root (one directory as the source): a restore gives it to the
    /// target directory. None for several sources (each is an entry of
    /// the root with its own), VMs, and snapshots made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<RootDir>,
}

/// Owner, mode, mtime, extended attributes (ACLs among them) and inode
/// flags of a snapshot's source directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootDir {
    /// Permission and type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Extended attributes and inode flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<crate::NodeExt>,
}

impl RootDir {
    /// The directory `node`'s metadata.
    pub fn of(node: &crate::Node) -> RootDir {
        RootDir { mode: node.mode, uid: node.uid, gid: node.gid, mtime_ns: node.mtime_ns, ext: node.ext.as_deref().cloned() }
    }

    /// As a directory node named `name` (no subtree), for code that
    /// takes nodes: restore, the FUSE mount, listings.
    pub fn node(&self, name: &[u8]) -> crate::Node {
        let mut n = crate::Node::file(name, self.mode, 0, self.mtime_ns, Vec::new());
        n.kind = crate::NodeKind::Dir;
        n.uid = self.uid;
        n.gid = self.gid;
        n.ext = self.ext.clone().map(Box::new);
        n
    }
}

/// The `paths` entry of a VM snapshot: `vm:<name>` (docs/vm-format.md),
/// so that retention groups a VM's backups by (host, VM) like files.
pub fn vm_source_path(name: &str) -> String {
    format!("vm:{name}")
}

impl Snapshot {
    /// The VM's name (from `vm:<name>`), for a VM snapshot; None for files.
    pub fn vm_name(&self) -> Option<&str> {
        if self.kind != SnapshotKind::Vm {
            return None;
        }
        self.paths.first().and_then(|p| p.strip_prefix("vm:"))
    }

    /// The document's bytes as stored (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("snapshot serializes")
    }

    /// A snapshot of `/x` on host `h` now, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_test(tree: crate::BlobId) -> Snapshot {
        Snapshot {
            time: chrono::Utc::now(),
            hostname: "h".into(),
            paths: vec!["/x".into()],
            tags: vec![],
            tree,
            parent: None,
            summary: Default::default(),
            program: "test".into(),
            kind: Default::default(),
            root: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn vm_name_only_for_vm_snapshots() {
        let mut s = super::Snapshot::for_test(crate::BlobId::of(b"t"));
        s.paths = vec![super::vm_source_path("web-1")];
        assert_eq!(s.vm_name(), None, "a files snapshot has no VM name");
        s.kind = super::SnapshotKind::Vm;
        assert_eq!(s.vm_name(), Some("web-1"));
    }
}
