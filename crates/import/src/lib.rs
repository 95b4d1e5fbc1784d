//! VMs from other platforms into the datastore.
//!
//! `lifeboat vm import FILE` reads a VMware export (an OVA, or an OVF with
//! its VMDKs beside it), a Hyper-V disk (VHDX, described by a
//! `hyperv.json` beside it as `vm restore --target hyperv` writes one, or
//! by defaults and flags), or a single disk image, maps its hardware into
//! the neutral document (`ovf`, `hyperv`) and stores it as an ordinary VM
//! snapshot: the same `read_disks` / `commit_vm_snapshot` path the QEMU
//! and libvirt connectors use, so dedup, restore to any target, instant
//! restore, the lab and gc treat it like any other backup.
//!
//! Images are read by `qemu-nbd` (read-only, on a unix socket), the
//! reader every disk format here has in common; a disk inside an OVA is
//! read in place through a raw offset window on the tar file, never
//! extracted. The document is checked with the restores' own check
//! before a byte is read, so an import that could not be restored is
//! refused up front.
#![warn(missing_docs)]

mod hyperv;
pub(crate) mod ovf;
mod serve;

use lifeboat_qemu::{check_restorable, commit_vm_snapshot, read_disks, DiskToRead, DisksRead, SocketDir, VmBackupError, VmBackupOutcome};
use lifeboat_store::{BlobSink, Datastore, StoreError};
use lifeboat_vm::VmMetadata;
use serve::{ImageServer, ImageSource};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

/// Why an import failed. Nothing is committed to the datastore then.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The VM's description is unusable: an OVF that is not well-formed
    /// or names what it does not hold (a disk, a file, units), or a file
    /// name that is not a plain name beside the description.
    #[error("{0}")]
    Description(String),
    /// A file of the import cannot be read or is not what it should be:
    /// missing, not a regular file, not a tar archive, a truncated OVA, a
    /// `hyperv.json` that does not parse or names a bad MAC or
    /// generation. Also used when the socket directory for qemu-nbd
    /// cannot be made.
    #[error("{path}: {message}")]
    File {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it, as a message for the user.
        message: String,
    },
    /// The file's extension is not one import takes (the message lists
    /// those it does).
    #[error("{0}")]
    Unsupported(String),
    /// qemu-img or qemu-nbd cannot read a disk image (not installed, an
    /// image format or file it does not understand, no virtual size).
    #[error("qemu-nbd could not read {path}: {message}")]
    Reader {
        /// The image file, or the OVA holding it.
        path: String,
        /// qemu's own words, or why it could not run.
        message: String,
    },
    /// The VM backup path failed: the document is one no restore could
    /// boot (checked before a byte is stored), or reading a disk or
    /// committing the snapshot failed.
    #[error(transparent)]
    Backup(#[from] VmBackupError),
    /// The datastore failed (registering the import as a writer).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ImportError {
    fn file(path: &Path, message: impl ToString) -> Self {
        ImportError::File { path: path.to_path_buf(), message: message.to_string() }
    }
}

/// What to import and how to name it.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// The VM's name in the datastore (default: from the description, or
    /// the file's name).
    pub name: Option<String>,
    /// CPU count, replacing what the description says (1 when neither
    /// names one).
    pub cpus: Option<u32>,
    /// Memory in MiB, replacing what the description says (1024 when
    /// neither names one).
    pub memory_mib: Option<u64>,
    /// Tags of the snapshot.
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot.
    pub hostname: String,
}

/// A VM described and its disks located, ready to be read.
#[derive(Debug)]
pub struct ImportPlan {
    /// The VM's document as described, with `ImportOptions` applied and
    /// the file's name in `extra["import.file"]`. Disk sizes are the
    /// description's; `import_vm` takes each image's own.
    pub md: VmMetadata,
    /// Disk id -> where its image is.
    disks: Vec<(String, ImageSource)>,
    /// What was assumed, mapped to something else or left out, and why.
    pub warnings: Vec<String>,
}

/// Reads the description of `file` (no disk data yet).
pub fn plan(file: &Path, opts: &ImportOptions) -> Result<ImportPlan, ImportError> {
    let meta = std::fs::metadata(file).map_err(|e| ImportError::file(file, format!("{e} (give the .ova, .ovf, .vhdx or disk image to import)")))?;
    if !meta.is_file() {
        return Err(ImportError::file(file, "not a file (give the .ova, .ovf, .vhdx or disk image to import)"));
    }
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "imported".into());
    let ext = file.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let mut p = match ext.as_str() {
        "ova" => from_ova(file, &stem)?,
        "ovf" => from_ovf(file, &stem)?,
        "vhdx" | "vhd" | "vmdk" | "qcow2" | "raw" | "img" => hyperv::plan(file, &stem, &ext)?,
        _ => return Err(ImportError::Unsupported(format!("{}: unknown kind of file {ext:?} (import takes .ova, .ovf, .vhdx, .vhd, .vmdk, .qcow2, .raw or .img)", file.display()))),
    };
    if let Some(n) = &opts.name {
        p.md.name = n.clone();
    }
    if let Some(c) = opts.cpus {
        p.md.cpus = c;
    }
    if let Some(m) = opts.memory_mib {
        p.md.memory_mib = m;
    }
    if p.md.cpus == 0 {
        p.md.cpus = 1;
        p.warnings.push("the description names no CPU count; 1 CPU".into());
    }
    if p.md.memory_mib == 0 {
        p.md.memory_mib = 1024;
        p.warnings.push("the description names no memory size; 1024 MiB".into());
    }
    p.md.extra.insert("import.file".into(), file.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
    Ok(p)
}

fn from_ovf(file: &Path, stem: &str) -> Result<ImportPlan, ImportError> {
    let xml = std::fs::read_to_string(file).map_err(|e| ImportError::file(file, e))?;
    let v = ovf::parse(&xml, stem)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut disks = Vec::new();
    for (id, href) in &v.files {
        let p = safe_join(dir, href)?;
        if !p.is_file() {
            return Err(ImportError::file(&p, format!("disk {id} of the OVF is missing (keep the OVF's files beside it)")));
        }
        disks.push((id.clone(), ImageSource::File { format: serve::format_of(&p), path: p }));
    }
    Ok(ImportPlan { md: v.md, disks, warnings: v.warnings })
}

/// An OVF `href` as a path under the OVF's directory: a plain relative
/// name, never an absolute path or one that climbs out.
fn safe_join(dir: &Path, href: &str) -> Result<PathBuf, ImportError> {
    let rel = Path::new(href);
    if href.contains("://") || rel.is_absolute() || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(ImportError::Description(format!("the OVF names file {href:?}, which is not a plain name beside it")));
    }
    Ok(dir.join(rel))
}

fn from_ova(file: &Path, stem: &str) -> Result<ImportPlan, ImportError> {
    let f = std::fs::File::open(file).map_err(|e| ImportError::file(file, e))?;
    let len = f.metadata().map_err(|e| ImportError::file(file, e))?.len();
    let mut members: Vec<(String, u64, u64)> = Vec::new();
    let mut ovf_xml = None;
    let mut ar = tar::Archive::new(f);
    let entries = ar.entries().map_err(|e| ImportError::file(file, format!("not a tar archive: {e}")))?;
    for e in entries {
        let mut e = e.map_err(|e| ImportError::file(file, format!("a damaged tar archive: {e}")))?;
        let name = e.path().map_err(|e| ImportError::file(file, e))?.to_string_lossy().into_owned();
        let (off, size) = (e.raw_file_position(), e.size());
        if off.checked_add(size).is_none_or(|end| end > len) {
            return Err(ImportError::file(file, format!("member {name} runs past the end of the file: the OVA is truncated")));
        }
        if name.to_ascii_lowercase().ends_with(".ovf") && ovf_xml.is_none() {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).map_err(|e| ImportError::file(file, format!("reading {name}: {e}")))?;
            ovf_xml = Some(s);
        }
        members.push((name, off, size));
    }
    let xml = ovf_xml.ok_or_else(|| ImportError::file(file, "holds no .ovf descriptor: not an OVA"))?;
    let v = ovf::parse(&xml, stem)?;
    let mut disks = Vec::new();
    for (id, href) in &v.files {
        let (_, offset, size) = members
            .iter()
            .find(|m| m.0 == *href || m.0.trim_start_matches("./") == href)
            .ok_or_else(|| ImportError::file(file, format!("the OVF names {href} for disk {id}, which the OVA does not hold")))?;
        let format = serve::format_of(Path::new(href));
        disks.push((id.clone(), ImageSource::Window { path: file.to_path_buf(), offset: *offset, size: *size, format }));
    }
    Ok(ImportPlan { md: v.md, disks, warnings: v.warnings })
}

/// Imports `file` as a VM snapshot.
pub fn import_vm(ds: &Arc<Datastore>, file: &Path, opts: &ImportOptions, bytes_done: &AtomicU64) -> Result<VmBackupOutcome, ImportError> {
    let start = Instant::now();
    let time = chrono::Utc::now();
    let mut p = plan(file, opts)?;
    // What the source could not say, the backup path's own fallbacks fill.
    p.warnings.extend(p.md.complete(&lifeboat_vm::Fallbacks { names: vec![], names_are: "the imported file", stored_disks: Vec::new() }));
    let dir = SocketDir::create("i").map_err(|e| ImportError::file(Path::new("/run/lifeboat"), format!("cannot make a socket directory: {e}")))?;
    let mut servers = Vec::new();
    let mut to_read = Vec::new();
    for (id, src) in &p.disks {
        let sock = dir.path().join(format!("{id}.sock"));
        let server = ImageServer::start(src, &sock)?;
        // The description's size is what the guest saw; the image is the truth.
        let size = server.size;
        if let Some(d) = p.md.disks.iter_mut().find(|d| d.id == *id) {
            if d.size != size {
                if d.size != 0 {
                    p.warnings.push(format!("disk {id}: the description says {} bytes, the image holds {size}", d.size));
                }
                d.size = size;
            }
        }
        to_read.push(DiskToRead { device: id.clone(), uri: server.uri(), bitmap: None, full_reason: None });
        servers.push(server);
    }
    // Before a byte is stored: the document as it will be committed.
    check_restorable(&p.md)?;
    let sink = BlobSink::new(ds.clone())?;
    let DisksRead { nodes, stats } = match read_disks(&sink, &to_read, &[], bytes_done) {
        Ok(v) => v,
        Err(e) => {
            sink.abort();
            return Err(e.into());
        }
    };
    drop(servers);
    let snapshot_id = commit_vm_snapshot(sink, &p.md, nodes, &stats, None, &opts.hostname, &opts.tags, time, start)?;
    Ok(VmBackupOutcome {
        snapshot_id,
        vm: p.md.name.clone(),
        consistency: "offline".into(),
        frozen_filesystems: 0,
        agent_error: None,
        disks: stats,
        parent: None,
        duration_ms: start.elapsed().as_millis() as u64,
        warnings: p.warnings,
    })
}
