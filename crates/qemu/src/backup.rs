//! Backing up a running QEMU VM into a datastore: metadata from QMP,
//! optional guest freeze via qemu-ga, a point in time of all disks
//! (fleecing), then each disk pulled over NBD into 4 MiB chunks. Only
//! dirty chunks are read when a parent snapshot and its bitmap exist.

use crate::fleece::{FleeceError, FleeceSession};
use crate::inventory::capture;
use crate::qga::GuestAgent;
use crate::qmp::{Qmp, QmpError};
use lifeboat_nbd::client::NbdClient;
use lifeboat_store::{vm_source_path, BackupSummary, BlobId, BlobKind, BlobSink, Datastore, Node, Snapshot, SnapshotKind, StoreError, Tree};
use lifeboat_vm::image::{backup_disk, DiskStats, ImageError, METADATA_FILE};
use lifeboat_vm::{Fallbacks, VmMetadata};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a VM backup (or loading a VM snapshot) failed.
#[derive(Debug, thiserror::Error)]
pub enum VmBackupError {
    /// Talking to the VM's QEMU failed.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// The point in time (fleecing) could not be set up.
    #[error(transparent)]
    Fleece(#[from] FleeceError),
    /// Reading a disk over NBD into the datastore failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The datastore failed (writing, committing, loading).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Everything else, in words: a VM without disks, a description no
    /// restore could boot, a snapshot that is not a VM or lacks a disk.
    #[error("{0}")]
    Other(String),
}

/// What [`backup_vm`] backs up, and how.
pub struct VmBackupOptions {
    /// QMP socket of the VM; its file name names a VM QEMU knows no name for.
    pub qmp: PathBuf,
    /// qemu-ga socket: freeze the guest's filesystems around the point.
    pub agent: Option<PathBuf>,
    /// Tags of the snapshot.
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot; the parent is the latest VM
    /// snapshot of the same VM from the same host name.
    pub hostname: String,
    /// Read every chunk even when a bitmap could spare it.
    pub full: bool,
}

/// What a VM backup made; the libvirt and import connectors report the
/// same.
#[derive(Debug, serde::Serialize)]
pub struct VmBackupOutcome {
    /// The committed snapshot.
    pub snapshot_id: BlobId,
    /// VM name, as stored in the metadata (after fallbacks).
    pub vm: String,
    /// "application" when qemu-ga froze the filesystems, else "crash".
    pub consistency: String,
    /// Filesystems qemu-ga froze (0: crash-consistent).
    pub frozen_filesystems: u64,
    /// Why the guest could not be frozen, when an agent was given.
    pub agent_error: Option<String>,
    /// (disk id, what reading it took), one per disk.
    pub disks: Vec<(String, DiskStats)>,
    /// The snapshot this one is incremental to, if any.
    pub parent: Option<BlobId>,
    /// Wall-clock time of the whole backup, in milliseconds.
    pub duration_ms: u64,
    /// What the backup filled in or changed in the VM's description so
    /// that it restores (e.g. a name for a VM QEMU knows none for).
    pub warnings: Vec<String>,
}

/// Backs up the running VM behind `opts.qmp` into `ds` and commits a VM
/// snapshot: capture, optional guest freeze, fleecing, reading the disks
/// (incrementally from the latest snapshot of this VM and host unless
/// `opts.full`). Blocking; holds the VM's QMP monitor throughout.
/// `bytes_done` grows by each chunk's size as it is handled (read, reused
/// from the parent or zero): progress against the disks' total size.
pub fn backup_vm(ds: &Arc<Datastore>, opts: &VmBackupOptions, bytes_done: &AtomicU64) -> Result<VmBackupOutcome, VmBackupError> {
    let start = Instant::now();
    let time = chrono::Utc::now();
    let mut q = Qmp::connect(&opts.qmp)?;
    let (mut md, nodes) = capture(&mut q)?;
    if nodes.is_empty() {
        return Err(VmBackupError::Other(format!("VM {} has no disks to back up", md.name)));
    }
    let socket_name = opts.qmp.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let warnings = md.complete(&Fallbacks { names: vec![socket_name], names_are: "its QMP socket's name", stored_disks: Vec::new() });
    check_restorable(&md)?;
    let mut agent = None;
    let mut agent_error = None;
    if let Some(p) = &opts.agent {
        match GuestAgent::connect(p, Duration::from_secs(5)) {
            Ok(mut a) => {
                md.guest_os = a.os_info();
                agent = Some(a);
            }
            Err(e) => agent_error = Some(e.to_string()),
        }
    }

    // Registered as a writer before choosing the parent (see gc.rs).
    let sink = BlobSink::new(ds.clone())?;
    let parent = if opts.full { None } else { latest_vm_snapshot(ds, &opts.hostname, &md.name)? };
    let parent_disks: Vec<Node> = match &parent {
        Some((_, p)) => ds.load_tree(&p.tree)?.nodes,
        None => Vec::new(),
    };

    let work = ds.root().join("tmp").join(format!("vm-{}", lifeboat_store::PackId::random().to_hex()));
    std::fs::create_dir_all(&work).map_err(|e| VmBackupError::Other(format!("cannot create {}: {e}", work.display())))?;
    let _cleanup = RemoveDir(work.clone());

    // The point in time: freeze, fleece, thaw at once.
    let mut frozen = 0;
    if let Some(a) = agent.as_mut() {
        match a.freeze() {
            Ok(n) => frozen = n,
            Err(e) => {
                // A freeze that timed out here may still complete in the
                // guest, and one that failed partway may have left file
                // systems frozen: thaw whatever is (a no-op otherwise).
                if let Err(t) = a.thaw() {
                    tracing::warn!("thawing after a failed freeze: {t}");
                }
                agent_error = Some(e.to_string());
            }
        }
    }
    let session = FleeceSession::start(&mut q, &nodes, &work, !opts.full && parent.is_some());
    if frozen > 0 {
        if let Some(a) = agent.as_mut() {
            if let Err(e) = a.thaw() {
                tracing::error!("thawing the guest's filesystems failed: {e}");
            }
        }
    }
    let session = session?;
    // Tests hold the run here to let the guest write after the point.
    if let Err(e) = lifeboat_store::failpoint::hit("vm-fleeced") {
        let _ = session.finish(&mut q, false);
        return Err(e.into());
    }

    let to_read: Vec<DiskToRead> = session.disks.iter().map(|d| DiskToRead { device: d.device.clone(), uri: session.uri(d), bitmap: d.bitmap.clone(), full_reason: d.full_reason.clone() }).collect();
    let res = read_disks(&sink, &to_read, &parent_disks, bytes_done);
    let DisksRead { nodes: disk_nodes, stats: disk_stats } = match res {
        Ok(v) => v,
        Err(e) => {
            let _ = session.finish(&mut q, false);
            sink.abort();
            return Err(e);
        }
    };

    let committed = commit_vm_snapshot(sink, &md, disk_nodes, &disk_stats, parent.as_ref().map(|p| p.0), &opts.hostname, &opts.tags, time, start);
    let ok = committed.is_ok();
    session.finish(&mut q, ok)?;
    let snapshot_id = committed?;
    Ok(VmBackupOutcome {
        snapshot_id,
        vm: md.name.clone(),
        consistency: if frozen > 0 { "application".into() } else { "crash".into() },
        frozen_filesystems: frozen,
        agent_error,
        disks: disk_stats,
        parent: parent.map(|p| p.0),
        duration_ms: start.elapsed().as_millis() as u64,
        warnings,
    })
}

/// What every restore needs of a VM's description, checked with the
/// restores' own code: the document is valid, and instant restore can
/// build a command line from it. A backup runs this before it reads a
/// byte, and again before it commits.
pub fn check_restorable(md: &VmMetadata) -> Result<(), VmBackupError> {
    let unrestorable = |e: String| VmBackupError::Other(format!("the backup of VM {:?} would not restore, so none was taken: {e}", md.name));
    md.validate().map_err(|e| unrestorable(e.to_string()))?;
    let probe = crate::instant::BootPlan {
        accel: crate::accel::AccelChoice { accel: crate::accel::Accel::Tcg, reason: String::new() },
        source: crate::instant::DiskSource::Nbd { host: "127.0.0.1".into(), port: 1 },
        net: crate::instant::NetMode::User,
        qmp: "qmp".into(),
        serial: "serial".into(),
        name: md.name.clone(),
        paused: true,
        video: false,
        uefi: crate::instant::UefiFirmware::ovmf_in(std::path::Path::new(".")),
    };
    crate::instant::qemu_args(md, &probe).map_err(|e| unrestorable(e.reason))?;
    Ok(())
}

/// The newest VM snapshot of VM `name` taken from `hostname`: the parent
/// an incremental backup builds on.
pub fn latest_vm_snapshot(ds: &Datastore, hostname: &str, name: &str) -> Result<Option<(BlobId, Snapshot)>, StoreError> {
    let paths = vec![vm_source_path(name)];
    Ok(ds.snapshots()?.into_iter().rev().find(|(_, s)| s.kind == SnapshotKind::Vm && s.hostname == hostname && s.paths == paths))
}

/// One disk of a point-in-time NBD export, as a connector (QMP fleecing,
/// libvirt pull backup) hands it over to be read into the datastore.
#[derive(Clone, Debug)]
pub struct DiskToRead {
    /// The disk's id in the VM metadata; the tree node is `<device>.raw`.
    pub device: String,
    /// `nbd+unix:///<export>?socket=<path>`
    pub uri: String,
    /// Name of the exported changed-block bitmap (read as the
    /// `qemu:dirty-bitmap:<name>` meta context); `None` reads everything.
    pub bitmap: Option<String>,
    /// Why a full read happens although an incremental one was possible.
    pub full_reason: Option<String>,
}

/// What [`read_disks`] stored: the disks' tree nodes (`<device>.raw`) and
/// per device what reading it took.
pub struct DisksRead {
    /// One node per disk, in the order asked.
    pub nodes: Vec<Node>,
    /// (device, its statistics), in the same order.
    pub stats: Vec<(String, DiskStats)>,
}

/// Reads each exported disk into chunks, reusing the parent's chunks
/// where the bitmap says nothing changed.
pub fn read_disks(sink: &BlobSink, disks: &[DiskToRead], parent_disks: &[Node], bytes_done: &AtomicU64) -> Result<DisksRead, VmBackupError> {
    let mut nodes = Vec::new();
    let mut stats = Vec::new();
    for d in disks {
        let name = format!("{}.raw", d.device);
        let ctx = d.bitmap.as_ref().map(|b| format!("qemu:dirty-bitmap:{b}"));
        let mut contexts = vec!["base:allocation"];
        if let Some(c) = &ctx {
            contexts.push(c);
        }
        let mut nbd = NbdClient::connect(&d.uri, &contexts).map_err(ImageError::from)?;
        let parent = parent_disks.iter().find(|n| n.name == name.as_bytes());
        let (node, mut st) = backup_disk(sink, &mut nbd, &name, parent.filter(|_| ctx.is_some()), ctx.as_deref(), bytes_done)?;
        nbd.disconnect();
        if st.full_reason.is_none() {
            st.full_reason = d.full_reason.clone();
        }
        nodes.push(node);
        stats.push((d.device.clone(), st));
    }
    Ok(DisksRead { nodes, stats })
}

/// Stores the metadata document next to the disks and commits the VM
/// snapshot (kind Vm, path `vm:<name>`), the same for every connector so
/// restore, instant restore and export work on all of them.
#[allow(clippy::too_many_arguments)]
pub fn commit_vm_snapshot(
    sink: BlobSink,
    md: &VmMetadata,
    disk_nodes: Vec<Node>,
    disk_stats: &[(String, DiskStats)],
    parent: Option<BlobId>,
    hostname: &str,
    tags: &[String],
    time: chrono::DateTime<chrono::Utc>,
    start: Instant,
) -> Result<BlobId, VmBackupError> {
    // The same check as before the read: a document changed on the way
    // (the guest agent's OS info) must still restore.
    if let Err(e) = check_restorable(md) {
        sink.abort();
        return Err(e);
    }
    let mut nodes_out = disk_nodes;
    let doc = md.to_json();
    let meta_id = sink.put(BlobKind::Metadata, &doc)?.id;
    nodes_out.push(meta_node(doc.len() as u64, meta_id));
    let tree = sink.put(BlobKind::Tree, &Tree { nodes: nodes_out }.encode())?.id;
    let stats = sink.stats();
    let total: u64 = disk_stats.iter().map(|d| d.1.size).sum();
    let read: u64 = disk_stats.iter().map(|d| d.1.bytes_read).sum();
    let snapshot = Snapshot {
        time,
        hostname: hostname.to_string(),
        paths: vec![vm_source_path(&md.name)],
        tags: tags.to_vec(),
        tree,
        parent,
        summary: BackupSummary {
            files: disk_stats.len() as u64,
            total_bytes: total,
            bytes_read: read,
            bytes_added: stats.bytes_added,
            bytes_stored: stats.bytes_stored,
            blobs_added: stats.blobs_added,
            duration_ms: start.elapsed().as_millis() as u64,
            ..Default::default()
        },
        program: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
        kind: SnapshotKind::Vm,
        root: None,
    };
    Ok(sink.commit_snapshot(snapshot.encode())?)
}

fn meta_node(size: u64, id: BlobId) -> Node {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    Node::file(METADATA_FILE.as_bytes(), 0o100644, size, now, vec![id])
}

/// Removes a work directory when dropped (on every path out).
pub struct RemoveDir(pub PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A VM snapshot as restore reads it: its description (upgraded and
/// repaired, see `lifeboat_vm::VmMetadata::load`) and each described
/// disk's stored data, in the description's order.
pub struct LoadedVm {
    /// The VM's description, upgraded and repaired.
    pub md: VmMetadata,
    /// `disks[i]` holds the data of `md.disks[i]`.
    pub disks: Vec<Node>,
    /// What reading the description upgraded or repaired.
    pub warnings: Vec<String>,
}

impl LoadedVm {
    /// A disk and its data by the disk's id.
    pub fn disk(&self, id: &str) -> Option<(&lifeboat_vm::Disk, &Node)> {
        self.md.disks.iter().zip(&self.disks).find(|(d, _)| d.id == id)
    }

    /// The disk ids, comma-separated: for messages that list the choices.
    pub fn disk_ids(&self) -> String {
        self.md.disks.iter().map(|d| d.id.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// Reads a VM snapshot's description and disks. Tolerant of every
/// document a released `vm backup` wrote: what it repairs comes back as
/// warnings, and only what cannot be read at all is an error.
pub fn load_vm(ds: &Datastore, snap: &Snapshot) -> Result<LoadedVm, VmBackupError> {
    if snap.kind != SnapshotKind::Vm {
        return Err(VmBackupError::Other("this snapshot is a file backup, not a VM; use `lifeboat restore`".into()));
    }
    let tree = ds.load_tree(&snap.tree)?;
    let meta = tree.nodes.iter().find(|n| n.name == METADATA_FILE.as_bytes()).ok_or_else(|| VmBackupError::Other(format!("VM snapshot has no {METADATA_FILE}")))?;
    let mut doc = Vec::new();
    for c in &meta.content {
        doc.extend(ds.read_blob(c)?);
    }
    let stored: Vec<&Node> = tree.nodes.iter().filter(|n| n.name != METADATA_FILE.as_bytes() && n.name.ends_with(b".raw")).collect();
    let fb = Fallbacks {
        names: vec![snap.vm_name().unwrap_or("").to_string(), format!("vm-{}", snap.time.format("%Y%m%d-%H%M%S"))],
        names_are: "the snapshot",
        stored_disks: stored.iter().map(|n| (String::from_utf8_lossy(&n.name[..n.name.len() - 4]).into_owned(), n.size)).collect(),
    };
    let loaded = VmMetadata::load(&doc, &fb).map_err(|e| VmBackupError::Other(e.to_string()))?;
    let mut disks = Vec::new();
    for d in &loaded.md.disks {
        let node = disk_node(&tree.nodes, loaded.stored_id(&d.id)).ok_or_else(|| VmBackupError::Other(format!("snapshot lacks the data of disk {}", d.id)))?;
        disks.push(node.clone());
    }
    for w in &loaded.warnings {
        tracing::warn!("VM {}: {w}", loaded.md.name);
    }
    Ok(LoadedVm { md: loaded.md, disks, warnings: loaded.warnings })
}

/// The tree node holding disk `id`'s data (`<id>.raw`) among `disks`.
pub fn disk_node<'a>(disks: &'a [Node], id: &str) -> Option<&'a Node> {
    disks.iter().find(|n| n.name == format!("{id}.raw").as_bytes())
}
