//! Remote mode for VMs: `lifeboat --server URL --token T vm ...`. The
//! VMs, datastores and paths are the appliance's; backups and restores
//! are daemon jobs followed with the same progress bar as file backups.

use super::{run_job, DsName, Wait};
use crate::commands::vm::{GuestFilesArgs, RetargetArgs};
use clap::Subcommand;
use lifeboat_api_types::*;
use lifeboat_client::ApiClient;

#[derive(Subcommand)]
pub enum RemoteVmCmd {
    /// Registered VMs with their live status and disks
    List {
        #[arg(long)]
        json: bool,
    },
    /// Register a running QEMU VM by its QMP socket on the appliance, or a
    /// libvirt domain (--libvirt URI --domain NAME)
    Register {
        /// QMP socket (-qmp unix:PATH,server=on,wait=off)
        #[arg(long, value_name = "PATH", required_unless_present = "libvirt", conflicts_with = "libvirt")]
        qmp: Option<String>,
        /// libvirt connection URI on the appliance, e.g. qemu:///system
        #[arg(long, value_name = "URI", requires = "domain")]
        libvirt: Option<String>,
        /// The libvirt domain's name
        #[arg(long, value_name = "NAME", requires = "libvirt")]
        domain: Option<String>,
        /// qemu-ga socket: freeze the guest's filesystems at backup points
        #[arg(long, value_name = "PATH")]
        agent: Option<String>,
        /// Name in the appliance (default: QEMU's -name)
        #[arg(long)]
        name: Option<String>,
    },
    /// Forget a registered VM (its backups stay)
    Unregister { name: String },
    /// Back up a registered VM (incremental after the first backup)
    Backup {
        #[command(flatten)]
        ds: DsName,
        /// Read every disk whole
        #[arg(long)]
        full: bool,
        #[arg(long = "tag", value_name = "T")]
        tags: Vec<String>,
        #[command(flatten)]
        wait: Wait,
        vm: String,
    },
    /// VM snapshots in a datastore
    Snapshots {
        #[command(flatten)]
        ds: DsName,
        #[arg(long)]
        json: bool,
    },
    /// Restore a VM snapshot's disks into a directory on the appliance
    Restore {
        #[command(flatten)]
        ds: DsName,
        /// raw or qcow2; with --target also vmdk or vhdx
        #[arg(long, value_parser = ["raw", "qcow2", "vmdk", "vhdx"])]
        format: Option<String>,
        /// Restore for this platform: kvm, openstack, vmware, hyperv, with
        /// an own disk format after a colon; repeat it for several at
        /// once (each into TARGET/<platform>)
        #[arg(long = "target", value_name = "PLATFORM[:FORMAT]")]
        platforms: Vec<String>,
        #[command(flatten)]
        retarget: RetargetArgs,
        #[command(flatten)]
        wait: Wait,
        snapshot: String,
        target: String,
    },
    /// Serve a disk of a VM snapshot over NBD or NFS; prints its nbd://
    /// or nfs:// URI
    Export {
        #[command(flatten)]
        ds: DsName,
        /// Disk id (needed when the VM has several)
        #[arg(long, value_name = "ID")]
        disk: Option<String>,
        /// Accept writes (into an overlay; the backup stays as it is)
        #[arg(long)]
        writable: bool,
        /// nbd, or nfs for a datastore hypervisors (ESXi) mount
        #[arg(long, default_value = "nbd", value_parser = ["nbd", "nfs"])]
        protocol: String,
        /// NFS: a client address or CIDR block allowed to mount it (repeatable; needed for nfs)
        #[arg(long = "client", value_name = "ADDR")]
        clients: Vec<String>,
        #[arg(long)]
        json: bool,
        snapshot: String,
    },
    /// NBD and NFS exports being served
    Exports {
        #[arg(long)]
        json: bool,
    },
    /// Close an export and remove its overlay
    Unexport { id: String },
    /// Boot a VM snapshot in the appliance straight from the datastore
    /// (writes go to throw-away overlays); `vm list` shows it until it is
    /// stopped (`vm stop`) or migrated back
    InstantRestore {
        #[command(flatten)]
        ds: DsName,
        /// Name in `vm list` (default: the VM's name with -instant)
        #[arg(long)]
        name: Option<String>,
        /// none (NICs without cable; default), user (QEMU's NAT) or tap:IFNAME
        #[arg(long, default_value = "none")]
        net: String,
        /// Start with the CPUs stopped
        #[arg(long)]
        paused: bool,
        /// Boot with the hardware of another platform (kvm, openstack,
        /// vmware), the guest repaired inside its overlays first
        #[arg(id = "platforms", long = "target", value_name = "PLATFORM")]
        platform: Option<String>,
        #[command(flatten)]
        retarget: RetargetArgs,
        #[command(flatten)]
        wait: Wait,
        /// Snapshot id, prefix, `latest` or vm:NAME (that VM's newest backup)
        snapshot: String,
    },
    /// Move an instant-restored VM onto local images in a directory on the
    /// appliance while it runs; it then stays as an ordinary registered VM
    MigrateBack {
        #[command(flatten)]
        ds: DsName,
        #[arg(long, default_value = "qcow2", value_parser = ["qcow2", "raw"])]
        format: String,
        #[command(flatten)]
        wait: Wait,
        vm: String,
        target: String,
    },
    /// Power off an instant-restored VM and drop its overlays
    Stop { name: String },
    /// The guest's files in a VM snapshot: without PATH its partitions,
    /// with PATH a guest directory; --extract copies PATH to DST on this
    /// machine (an agent host), with modes and times (owners as root)
    Files {
        #[command(flatten)]
        ds: DsName,
        snapshot: String,
        #[command(flatten)]
        files: GuestFilesArgs,
    },
    /// Copy guest paths of a VM snapshot into a directory on the appliance
    RestoreFiles {
        #[command(flatten)]
        ds: DsName,
        /// The disk (default: the VM's only disk)
        #[arg(long, value_name = "ID")]
        disk: Option<String>,
        /// Partition number or VG/LV (default: the only one with files)
        #[arg(long, value_name = "N|VG/LV")]
        partition: Option<String>,
        #[command(flatten)]
        wait: Wait,
        snapshot: String,
        /// Directory on the appliance (under its restore_roots)
        target: String,
        /// Guest paths to copy
        #[arg(required = true)]
        paths: Vec<String>,
    },
}

pub fn run(c: &ApiClient, cmd: RemoteVmCmd) -> anyhow::Result<u8> {
    match cmd {
        RemoteVmCmd::List { json } => {
            let list: Vec<VmInfo> = c.get("/api/vms")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_vms(&list);
            }
            Ok(0)
        }
        RemoteVmCmd::Register { qmp, libvirt, domain, agent, name } => {
            let source = match (qmp, libvirt, domain) {
                (_, Some(uri), Some(domain)) => VmSource::Libvirt { uri, domain },
                (Some(qmp), _, _) => VmSource::Qmp { qmp, agent },
                _ => anyhow::bail!("give --qmp PATH, or --libvirt URI with --domain NAME"),
            };
            let v: VmInfo = c.post("/api/vms", &VmRegister { name, source })?;
            println!("registered VM {} ({}, {} disks)", v.name, status_word(v.status), v.disks.len());
            Ok(0)
        }
        RemoteVmCmd::Unregister { name } => {
            c.delete::<()>(&format!("/api/vms/{name}"))?;
            println!("VM {name} unregistered; its backups stay");
            Ok(0)
        }
        RemoteVmCmd::Backup { ds, full, tags, wait, vm } => run_job(c, JobSpec::VmBackup { datastore: ds.datastore, vm, full, tags }, &wait),
        RemoteVmCmd::Snapshots { ds, json } => {
            let list: Vec<SnapshotInfo> = c.get(&format!("/api/datastores/{}/snapshots", ds.datastore))?;
            let list: Vec<SnapshotInfo> = list.into_iter().filter(|s| s.kind == "vm").collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            println!("{:<9} {:<20} {:<20} {:>10}  host", "id", "time (UTC)", "vm", "size");
            for s in list {
                let vm = s.paths.first().map(|p| p.trim_start_matches("vm:")).unwrap_or("");
                println!(
                    "{:<9} {:<20} {:<20} {:>10}  {}{}",
                    &s.id[..8.min(s.id.len())],
                    s.time.format("%Y-%m-%d %H:%M:%S"),
                    vm,
                    crate::ui::bytes(s.bytes),
                    s.hostname,
                    if s.damaged { "  DAMAGED" } else { "" }
                );
            }
            Ok(0)
        }
        RemoteVmCmd::Restore { ds, format, platforms, retarget: RetargetArgs { maps, no_repair }, wait, snapshot, target } => {
            // One platform keeps the single-target form of the job.
            let (platform, platforms) = if platforms.len() == 1 { (platforms.into_iter().next(), Vec::new()) } else { (None, platforms) };
            run_job(c, JobSpec::VmRestore { datastore: ds.datastore, snapshot, target, format, platform, platforms, map: maps, no_repair }, &wait)
        }
        RemoteVmCmd::Export { ds, disk, writable, protocol, clients, json, snapshot } => {
            let protocol = if protocol == "nfs" { ExportProtocol::Nfs } else { ExportProtocol::Nbd };
            let e: ExportInfo = c.post("/api/exports", &ExportCreate { datastore: ds.datastore, snapshot, disk, writable, protocol, clients })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                eprintln!("export {}: disk {} of snapshot {} ({}, {})", e.id, e.disk, &e.snapshot[..8], crate::ui::bytes(e.size), if e.writable { "writable, copy-on-write" } else { "read-only" });
                println!("{}", e.uri);
            }
            Ok(0)
        }
        RemoteVmCmd::Exports { json } => {
            let list: Vec<ExportInfo> = c.get("/api/exports")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for e in list {
                    println!("{:<10} {:<9} {:<12} {:<10} {}", e.id, &e.snapshot[..8], e.disk, if e.writable { "writable" } else { "read-only" }, e.uri);
                }
            }
            Ok(0)
        }
        RemoteVmCmd::InstantRestore { ds, name, net, paused, platform, retarget: RetargetArgs { maps: map, no_repair }, wait, snapshot } => {
            run_job(c, JobSpec::VmInstantRestore { datastore: ds.datastore, snapshot, name, net, paused, platform, map, no_repair }, &wait)
        }
        RemoteVmCmd::MigrateBack { ds, format, wait, vm, target } => run_job(c, JobSpec::VmMigrateBack { datastore: ds.datastore, vm, target, format }, &wait),
        RemoteVmCmd::Stop { name } => {
            let list: Vec<VmInfo> = c.get("/api/vms")?;
            if !list.iter().any(|v| v.name == name && v.instant.is_some()) {
                anyhow::bail!("{name} is no instant-restored VM (see `vm list`); a registered VM is removed with `vm unregister`");
            }
            c.delete::<()>(&format!("/api/vms/{name}"))?;
            println!("VM {name} stopped; its overlays are removed");
            Ok(0)
        }
        RemoteVmCmd::Files { ds, snapshot, files: GuestFilesArgs { path, disk, partition, extract, json } } => {
            let q = VmFilesQuery { path: path.clone(), disk, partition };
            let base = format!("/api/datastores/{}/snapshots/{snapshot}/vm-files", ds.datastore);
            if let (Some(path), Some(dst)) = (path, extract) {
                let resp = c.download(&format!("{base}/archive"), &q)?;
                let n = extract_archive(resp, &path, &dst)?;
                println!("extracted {path} to {} ({n} entries)", dst.display());
                return Ok(0);
            }
            let l: VmFilesListing = c.get_query(&base, &q)?;
            if json {
                match l.path {
                    Some(_) => println!("{}", serde_json::to_string_pretty(&l.entries)?),
                    None => println!("{}", serde_json::to_string_pretty(&l)?),
                }
            } else if l.path.is_some() {
                print_guest_entries(&l.entries);
            } else {
                print_partitions(&l.disk, None, l.table.as_deref(), &l.partitions);
            }
            Ok(0)
        }
        RemoteVmCmd::RestoreFiles { ds, disk, partition, wait, snapshot, target, paths } => {
            run_job(c, JobSpec::VmRestoreFiles { datastore: ds.datastore, snapshot, paths, target, disk, partition }, &wait)
        }
        RemoteVmCmd::Unexport { id } => {
            c.delete::<()>(&format!("/api/exports/{id}"))?;
            println!("export {id} closed");
            Ok(0)
        }
    }
}

fn status_word(s: VmStatus) -> &'static str {
    match s {
        VmStatus::Running => "running",
        VmStatus::Paused => "paused",
        VmStatus::Stopped => "stopped",
        VmStatus::Unreachable => "unreachable",
    }
}

/// One line per VM: name, status, CPUs, memory, disks (shared with the
/// local `vm list`).
pub fn print_vms(list: &[VmInfo]) {
    println!("{:<20} {:<12} {:>4} {:>8}  disks", "name", "status", "cpus", "memory");
    for v in list {
        let disks: Vec<String> = v.disks.iter().map(|d| format!("{} {} {}", d.id, crate::ui::bytes(d.size), d.format)).collect();
        println!("{:<20} {:<12} {:>4} {:>7}M  {}", v.name, status_word(v.status), v.cpus, v.memory_mib, disks.join(", "));
        if let Some(i) = &v.instant {
            let what = if i.migrating { "migrating back" } else { "running from the backup" };
            println!("  instant restore of {}/{} ({what}, QEMU pid {}, serial log {})", i.datastore, &i.snapshot[..8.min(i.snapshot.len())], i.pid, i.serial_log);
        }
        if let Some(e) = &v.error {
            println!("  {e}");
        }
    }
}

/// Unpacks a `vm-files/archive` tar stream the way `cp -a PATH DST`
/// would place it: into DST when DST is a directory (or PATH is the guest
/// root), else as DST itself. Owners, set-ID bits and device nodes only
/// as root.
fn extract_archive(body: impl std::io::Read, path: &str, dst: &std::path::Path) -> anyhow::Result<u64> {
    let policy = lifeboat_vmfiles::UnpackPolicy { as_archived: unsafe { libc::geteuid() } == 0 };
    let top = lifeboat_vmfiles::guest_relative(path)?.file_name().map(|n| n.to_os_string());
    let Some(top) = top.filter(|_| !dst.is_dir()) else {
        return lifeboat_vmfiles::unpack_tar(body, dst, policy).map_err(|e| anyhow::anyhow!("unpacking {path} into {}: {e}", dst.display()));
    };
    if std::fs::symlink_metadata(dst).is_ok() {
        anyhow::bail!("{} exists and is not a directory; remove it or name a directory", dst.display());
    }
    let parent = dst.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    // Unpacked beside DST first, so a cut stream leaves no half DST.
    let tmp = tempfile::Builder::new().prefix(".lifeboat-extract-").tempdir_in(parent).map_err(|e| anyhow::anyhow!("cannot write into {}: {e}", parent.display()))?;
    let n = lifeboat_vmfiles::unpack_tar(body, tmp.path(), policy).map_err(|e| anyhow::anyhow!("unpacking {path}: {e}"))?;
    std::fs::rename(tmp.path().join(&top), dst).map_err(|e| anyhow::anyhow!("cannot move {path} to {}: {e}", dst.display()))?;
    Ok(n)
}

/// A guest directory's entries, one per line (shared with the local
/// `vm files`).
pub fn print_guest_entries(entries: &[VmFileEntry]) {
    for e in entries {
        let link = e.link_target.as_deref().map(|t| format!(" -> {t}")).unwrap_or_default();
        let time = chrono::DateTime::from_timestamp(e.mtime, 0).map(|t| t.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default();
        println!("{:o} {:>5} {:>5} {:>12} {time} {}{link}", e.mode, e.uid, e.gid, e.size, e.name);
    }
}

/// A disk's partitions and LVM volumes (shared with the local `vm files`).
pub fn print_partitions(disk: &str, size: Option<u64>, table: Option<&str>, parts: &[VmPartitionInfo]) {
    let size = size.map(|s| format!(" ({})", crate::ui::bytes(s))).unwrap_or_default();
    println!("disk {disk}{size}, partition table: {}", table.unwrap_or("none"));
    for p in parts {
        let note = p.unsupported.as_deref().map(|u| format!("  ({u})")).unwrap_or_default();
        println!("  {:>3}  {:>10}  {:<12} {}{note}", p.name, crate::ui::bytes(p.size), p.fstype.as_deref().unwrap_or("-"), p.label.as_deref().unwrap_or(""));
    }
}
