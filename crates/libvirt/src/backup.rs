//! Pull-mode backups of a running libvirt domain.
//!
//! `virsh backup-begin DOMAIN backup.xml checkpoint.xml` makes libvirt
//! freeze a point in time of every disk (writes after it go through
//! scratch files in our temporary directory), export it on an NBD unix
//! socket there, and, in the same step, create a checkpoint: a persistent
//! bitmap in each qcow2 disk recording what the guest writes from now on.
//! The next backup asks for `<incremental>` that checkpoint; libvirt then
//! also exports `qemu:dirty-bitmap:<exportbitmap>` (libvirt names it
//! `backup-<disk target>`; we read the name from `backup-dumpxml`), and only
//! those blocks are read, the parent snapshot's chunks filling the rest.
//!
//! Which checkpoint a snapshot's point is stored in the metadata document's
//! `extra["libvirt-checkpoint"]`, so the parent tells the next backup where
//! to start. Only the newest lifeboat checkpoint is kept: after a good
//! backup the older ones are deleted (libvirt merges their bitmaps), after
//! a failed one the new one is. When the parent's checkpoint is gone
//! (deleted by an admin, the disk replaced, a raw disk that cannot carry a
//! bitmap) the backup reads everything and says why.
//!
//! The job is ended (`domjobabort`, which is how a pull backup ends) on
//! every path, errors included, and we wait until libvirt reports it gone.

use crate::domain::DomainDisk;
use crate::domain::{parse_domain, qemu_owner};
use crate::virsh::Virsh;
use crate::{disk_capacity, domain_state_with, LibvirtError};
use lifeboat_qemu::backup::RemoveDir;
use lifeboat_qemu::{commit_vm_snapshot, latest_vm_snapshot, load_vm, read_disks, DiskToRead, DisksRead, VmBackupOutcome};
use lifeboat_store::{BlobSink, Datastore, Node};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Checkpoints this connector creates start with this; others (an
/// admin's, another tool's) are never touched.
pub const CHECKPOINT_PREFIX: &str = "lifeboat-";
/// Metadata `extra` key naming the checkpoint at a snapshot's point.
pub const CHECKPOINT_KEY: &str = "libvirt-checkpoint";

/// What `backup_domain` backs up, and how the snapshot is labelled.
pub struct LibvirtBackupOptions {
    /// libvirt connection URI, e.g. `qemu:///system`.
    pub uri: String,
    /// The domain as virsh takes it (name, UUID or id). The snapshot is
    /// named after the `<name>` of its XML.
    pub domain: String,
    /// Tags of the snapshot.
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot; the parent of an incremental
    /// backup is the latest snapshot of the same VM from the same host
    /// name.
    pub hostname: String,
    /// Read every block even when a checkpoint could spare it (a new
    /// checkpoint is still created for the next backup).
    pub full: bool,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&apos;").replace('"', "&quot;")
}

/// The `<domainbackup mode='pull'>` document.
fn backup_xml(disks: &[DomainDisk], socket: &Path, scratch_dir: &Path, incremental: Option<&str>) -> String {
    let mut x = String::from("<domainbackup mode='pull'>\n");
    if let Some(c) = incremental {
        x += &format!("  <incremental>{}</incremental>\n", xml_escape(c));
    }
    x += &format!("  <server transport='unix' socket='{}'/>\n  <disks>\n", xml_escape(&socket.display().to_string()));
    for d in disks {
        let scratch = scratch_dir.join(format!("{}.scratch.qcow2", d.target));
        x += &format!("    <disk name='{}' backup='yes' type='file'><scratch file='{}'/></disk>\n", xml_escape(&d.target), xml_escape(&scratch.display().to_string()));
    }
    x += "  </disks>\n</domainbackup>\n";
    x
}

/// The `<domaincheckpoint>` document: a bitmap in every disk.
fn checkpoint_xml(name: &str, disks: &[DomainDisk]) -> String {
    let mut x = format!("<domaincheckpoint>\n  <name>{}</name>\n  <description>lifeboat backup point</description>\n  <disks>\n", xml_escape(name));
    for d in disks {
        x += &format!("    <disk name='{}' checkpoint='bitmap'/>\n", xml_escape(&d.target));
    }
    x += "  </disks>\n</domaincheckpoint>\n";
    x
}

/// Export name and bitmap of each disk, from `virsh backup-dumpxml`.
fn exports(xml: &str) -> Result<Vec<(String, String, Option<String>)>, LibvirtError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| LibvirtError::Xml(format!("backup XML: {e}")))?;
    let mut out = Vec::new();
    for d in doc.descendants().filter(|n| n.has_tag_name("disk") && n.attribute("backup") != Some("no")) {
        let Some(name) = d.attribute("name") else { continue };
        let export = d.attribute("exportname").unwrap_or(name).to_string();
        out.push((name.to_string(), export, d.attribute("exportbitmap").map(String::from)));
    }
    Ok(out)
}

fn checkpoints(v: &Virsh, domain: &str) -> Result<Vec<String>, LibvirtError> {
    Ok(v.run(&["checkpoint-list", domain, "--name"])?.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// The running pull backup; ended when dropped, whatever happened.
struct BackupJob<'a> {
    v: &'a Virsh,
    domain: &'a str,
    ended: bool,
}

impl BackupJob<'_> {
    fn end(&mut self) -> Result<(), LibvirtError> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        let abort = self.v.run(&["domjobabort", self.domain]);
        // The abort returns before libvirt has torn the job down (scratch
        // files, NBD server); a new backup or a checkpoint deletion before
        // that fails, so wait for it.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match self.v.run(&["domjobinfo", self.domain]) {
                Ok(info) if info.lines().any(|l| l.starts_with("Job type:") && l.contains("None")) => return Ok(()),
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                Ok(info) => {
                    return Err(LibvirtError::Other(format!(
                        "the backup job of domain {} did not end within 120 s after domjobabort ({:?}): {}",
                        self.domain,
                        abort.err().map(|e| e.to_string()),
                        info.trim()
                    )))
                }
                // The domain went away: so did its job.
                Err(_) => return Ok(()),
            }
        }
    }
}

impl Drop for BackupJob<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.end() {
            tracing::error!("{e}");
        }
    }
}

/// Backs up a running domain into `ds`. See the module doc.
pub fn backup_domain(ds: &Arc<Datastore>, opts: &LibvirtBackupOptions, bytes_done: &AtomicU64) -> Result<VmBackupOutcome, LibvirtError> {
    let start = Instant::now();
    let time = chrono::Utc::now();
    let v = Virsh::new(&opts.uri);
    let state = domain_state_with(&v, &opts.domain)?;
    if state != "running" && state != "paused" {
        return Err(LibvirtError::NotRunning { domain: opts.domain.clone(), state });
    }
    let xml = v.run(&["dumpxml", &opts.domain])?;
    let (mut md, disks) = parse_domain(&xml, |target| disk_capacity(&v, &opts.domain, target))?;
    if disks.is_empty() {
        return Err(LibvirtError::Other(format!("domain {} has no disks to back up", md.name)));
    }
    lifeboat_qemu::backup::check_restorable(&md)?;
    // A checkpoint needs a bitmap in every disk, and only qcow2 holds one.
    let no_bitmap = disks.iter().find(|d| d.format != "qcow2").map(|d| format!("disk {} is {}: libvirt checkpoints need qcow2 disks", d.target, d.format));

    // Registered as a writer before choosing the parent (see gc.rs).
    let sink = BlobSink::new(ds.clone())?;
    let parent = if opts.full { None } else { latest_vm_snapshot(ds, &opts.hostname, &md.name)? };
    let mut parent_disks: Vec<Node> = Vec::new();
    let mut incremental = None;
    let mut full_reason = None;
    if let Some((_, p)) = &parent {
        let prev = load_vm(ds, p)?;
        let pmd = prev.md;
        parent_disks = prev.disks;
        let existing = checkpoints(&v, &opts.domain)?;
        match pmd.extra.get(CHECKPOINT_KEY) {
            _ if no_bitmap.is_some() => full_reason = no_bitmap.clone(),
            None => full_reason = Some("the previous backup of this VM recorded no libvirt checkpoint".into()),
            Some(c) if !existing.contains(c) => full_reason = Some(format!("checkpoint {c} of the previous backup no longer exists on domain {}", opts.domain)),
            Some(c) => incremental = Some(c.clone()),
        }
    }

    let work = ds.root().join("tmp").join(format!("vm-{}", lifeboat_store::PackId::random().to_hex()));
    std::fs::create_dir_all(&work).map_err(|e| LibvirtError::Other(format!("cannot create {}: {e}", work.display())))?;
    let _cleanup = RemoveDir(work.clone());
    // QEMU creates the NBD socket and scratch files here; under libvirt it
    // usually runs as its own user, not ours.
    if let Some((uid, gid)) = qemu_owner(&xml) {
        std::os::unix::fs::chown(&work, Some(uid), Some(gid)).map_err(|e| LibvirtError::Other(format!("cannot hand {} to QEMU's user {uid}:{gid}: {e}", work.display())))?;
    }
    let socket = work.join("nbd.sock");
    let new_checkpoint = no_bitmap.is_none().then(|| format!("{CHECKPOINT_PREFIX}{}-{}", time.format("%Y%m%dT%H%M%S"), &lifeboat_store::PackId::random().to_hex()[..8]));
    let bxml = work.join("backup.xml");
    let cxml = work.join("checkpoint.xml");
    let write = |p: &Path, s: String| std::fs::write(p, s).map_err(|e| LibvirtError::Other(format!("cannot write {}: {e}", p.display())));
    if let Some(name) = &new_checkpoint {
        write(&cxml, checkpoint_xml(name, &disks))?;
    }
    let begin = |incremental: Option<&str>| -> Result<String, LibvirtError> {
        write(&bxml, backup_xml(&disks, &socket, &work, incremental))?;
        match &new_checkpoint {
            Some(_) => v.run_with_file(&["backup-begin", &opts.domain], &[&bxml, &cxml]),
            None => v.run_with_file(&["backup-begin", &opts.domain], &[&bxml]),
        }
    };
    let mut begun = begin(incremental.as_deref());
    if let (Err(e), Some(c)) = (&begun, &incremental) {
        // E.g. a bitmap QEMU marked inconsistent after a crash: what the
        // checkpoint says cannot be trusted, so read everything.
        full_reason = Some(format!("libvirt refused an incremental backup from checkpoint {c}: {e}"));
        incremental = None;
        begun = begin(None);
    }
    if let Err(e) = begun {
        sink.abort();
        return Err(e);
    }
    let mut job = BackupJob { v: &v, domain: &opts.domain, ended: false };
    // From here on a failure deletes the checkpoint just made: no snapshot
    // refers to it, and the parent's checkpoint still covers every change.
    let fail = |job: &mut BackupJob, sink: BlobSink, e: LibvirtError| -> LibvirtError {
        let _ = job.end();
        if let Some(c) = &new_checkpoint {
            if let Err(de) = v.run(&["checkpoint-delete", &opts.domain, c]) {
                tracing::warn!("could not delete checkpoint {c} of the failed backup: {de}");
            }
        }
        sink.abort();
        e
    };

    let to_read = match v.run(&["backup-dumpxml", &opts.domain]).and_then(|x| exports(&x)) {
        Ok(ex) => ex
            .into_iter()
            .map(|(target, export, bitmap)| DiskToRead {
                uri: format!("nbd+unix:///{export}?socket={}", socket.display()),
                bitmap: if incremental.is_some() { Some(bitmap.unwrap_or_else(|| format!("backup-{target}"))) } else { None },
                full_reason: full_reason.clone(),
                device: target,
            })
            .collect::<Vec<_>>(),
        Err(e) => return Err(fail(&mut job, sink, e)),
    };
    // Tests hold the run here to let the guest write after the point.
    if let Err(e) = lifeboat_store::failpoint::hit("vm-fleeced") {
        return Err(fail(&mut job, sink, e.into()));
    }
    let DisksRead { nodes: disk_nodes, stats: disk_stats } = match read_disks(&sink, &to_read, &parent_disks, bytes_done) {
        Ok(v) => v,
        Err(e) => return Err(fail(&mut job, sink, e.into())),
    };
    if let Some(c) = &new_checkpoint {
        md.extra.insert(CHECKPOINT_KEY.into(), c.clone());
    }
    let committed = commit_vm_snapshot(sink, &md, disk_nodes, &disk_stats, parent.as_ref().map(|p| p.0), &opts.hostname, &opts.tags, time, start);
    let ended = job.end();
    let snapshot_id = match committed {
        Ok(id) => id,
        Err(e) => {
            if let Some(c) = &new_checkpoint {
                let _ = v.run(&["checkpoint-delete", &opts.domain, c]);
            }
            return Err(e.into());
        }
    };
    if let Err(e) = ended {
        tracing::warn!("{e}");
    }
    // The snapshot is safe; older lifeboat checkpoints only cost the
    // guest bitmap updates now.
    if let Some(c) = &new_checkpoint {
        for old in checkpoints(&v, &opts.domain).unwrap_or_default() {
            if old != *c && old.starts_with(CHECKPOINT_PREFIX) {
                if let Err(e) = v.run(&["checkpoint-delete", &opts.domain, &old]) {
                    tracing::warn!("could not delete the old checkpoint {old}: {e}");
                }
            }
        }
    }
    Ok(VmBackupOutcome {
        snapshot_id,
        vm: md.name.clone(),
        consistency: "crash".into(),
        frozen_filesystems: 0,
        agent_error: None,
        disks: disk_stats,
        parent: parent.map(|p| p.0),
        duration_ms: start.elapsed().as_millis() as u64,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(t: &str) -> DomainDisk {
        DomainDisk { target: t.into(), format: "qcow2".into(), source_type: "file".into(), source: Some(format!("/img/{t}.qcow2")) }
    }

    #[test]
    fn documents_name_every_disk() {
        let x = backup_xml(&[disk("vda"), disk("vdb")], Path::new("/t/nbd.sock"), Path::new("/t"), Some("lifeboat-1"));
        let doc = roxmltree::Document::parse(&x).unwrap();
        assert_eq!(doc.root_element().attribute("mode"), Some("pull"));
        assert!(x.contains("<incremental>lifeboat-1</incremental>") && x.contains("socket='/t/nbd.sock'") && x.contains("file='/t/vdb.scratch.qcow2'"), "{x}");
        assert!(!backup_xml(&[disk("vda")], Path::new("/s"), Path::new("/t"), None).contains("incremental"));
        let c = checkpoint_xml("lifeboat-2", &[disk("vda")]);
        roxmltree::Document::parse(&c).unwrap();
        assert!(c.contains("<disk name='vda' checkpoint='bitmap'/>"), "{c}");
    }

    #[test]
    fn reads_exports_from_the_running_backup() {
        let x = "<domainbackup mode='pull'><incremental>lifeboat-1</incremental><server transport='unix' socket='/t/nbd.sock'/><disks>\
                 <disk name='vda' backup='yes' type='file' backupmode='incremental' incremental='lifeboat-1' exportname='vda' exportbitmap='backup-vda' index='3'/>\
                 <disk name='sda' backup='no'/></disks></domainbackup>";
        assert_eq!(exports(x).unwrap(), vec![("vda".to_string(), "vda".to_string(), Some("backup-vda".to_string()))]);
    }
}
