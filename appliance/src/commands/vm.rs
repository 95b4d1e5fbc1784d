//! `lifeboat vm ...`: VMs from QEMU into the datastore and back.

use crate::commands::{hostname, open_datastore};
use crate::{ui, DatastoreArg};
use clap::Subcommand;
use lifeboat_api_types::{VmFileEntry, VmPartitionInfo};
use lifeboat_qemu::{backup_vm, load_vm, DiskSource, NetMode, Qmp, VmBackupOptions};
use lifeboat_store::{Datastore, Node, SnapshotKind};
use lifeboat_vm::image::restore_raw;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum VmCmd {
    /// VMs registered with the daemon (its state directory), with their
    /// live status read over QMP; or, with --libvirt, the domains a
    /// libvirt daemon knows, with their state
    List {
        /// The daemon's state directory
        #[arg(long, value_name = "DIR", default_value = "/var/lib/lifeboat", conflicts_with = "libvirt")]
        state_dir: PathBuf,
        /// libvirt connection URI, e.g. qemu:///system
        #[arg(long, value_name = "URI")]
        libvirt: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a running VM's hardware in the neutral format (from its QMP socket)
    Inspect {
        /// QMP socket of the VM (-qmp unix:PATH,server=on,wait=off)
        #[arg(long, value_name = "PATH")]
        qmp: PathBuf,
    },
    /// Back up a running VM: all disks at one point in time, incremental
    /// through QEMU's dirty bitmaps (or libvirt checkpoints) after the
    /// first backup
    Backup {
        #[command(flatten)]
        ds: DatastoreArg,
        /// QMP socket of the VM (a VM QEMU runs without libvirt)
        #[arg(long, value_name = "PATH", required_unless_present = "libvirt", conflicts_with = "libvirt")]
        qmp: Option<PathBuf>,
        /// Back up a libvirt domain (with --domain) through libvirt's
        /// pull-mode backup API, e.g. --libvirt qemu:///system
        #[arg(long, value_name = "URI", requires = "domain", conflicts_with = "agent")]
        libvirt: Option<String>,
        /// The libvirt domain to back up
        #[arg(long, value_name = "NAME", requires = "libvirt")]
        domain: Option<String>,
        /// qemu-ga socket: freeze the guest's filesystems at the backup point
        #[arg(long, value_name = "PATH")]
        agent: Option<PathBuf>,
        #[arg(long = "tag", value_name = "T")]
        tags: Vec<String>,
        /// Read every chunk (ignore the changed-block bitmap)
        #[arg(long)]
        full: bool,
        #[arg(long)]
        json: bool,
    },
    /// Import a VM from another platform as a VM snapshot: a VMware
    /// export (.ova, or .ovf with its disks beside it), a Hyper-V disk
    /// (.vhdx/.vhd, described by a hyperv.json beside it when there is
    /// one) or a single disk image (.vmdk, .qcow2, .raw, .img)
    Import {
        #[command(flatten)]
        ds: DatastoreArg,
        /// The file to import
        file: PathBuf,
        /// The VM's name in the datastore (default: from its description)
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// CPUs, where the description names none or is wrong
        #[arg(long, value_name = "N")]
        cpus: Option<u32>,
        /// Memory in MiB, where the description names none or is wrong
        #[arg(long = "memory", value_name = "MIB")]
        memory_mib: Option<u64>,
        #[arg(long = "tag", value_name = "T")]
        tags: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List VM snapshots
    Snapshots {
        #[command(flatten)]
        ds: DatastoreArg,
        #[arg(long)]
        json: bool,
    },
    /// Restore a VM snapshot's disks to image files (raw or qcow2), or one
    /// disk back into an existing image; with --target, for another
    /// platform: hardware mapped, disks in its format, its description
    /// beside them, the guest repaired to boot there
    Restore {
        #[command(flatten)]
        ds: DatastoreArg,
        snapshot: String,
        /// Directory for <disk>.<format> and vm.json (created)
        #[arg(required_unless_present = "into")]
        target: Option<PathBuf>,
        /// Disk format: raw or qcow2; with --target also vmdk or vhdx
        /// (default: the platform's own, qcow2 for kvm/openstack)
        #[arg(long, value_parser = ["raw", "qcow2", "vmdk", "vhdx"])]
        format: Option<String>,
        /// Restore for this platform: kvm, openstack, vmware, hyperv, with
        /// an own disk format after a colon (vmware:vmdk); repeat it to
        /// restore for several at once from one read of the datastore,
        /// each into DIR/<platform> (docs/cross-platform-restore.md)
        #[arg(long = "target", value_name = "PLATFORM[:FORMAT]", conflicts_with_all = ["into", "disk"])]
        platforms: Vec<String>,
        #[command(flatten)]
        retarget: RetargetArgs,
        /// Windows guests: where driver files the guest lacks come from
        /// (a directory, or the virtio-win ISO)
        #[arg(long, value_name = "DIR|ISO", requires = "platforms")]
        drivers: Option<PathBuf>,
        /// Print the restore report as JSON (with --target; a list with
        /// several)
        #[arg(long, requires = "platforms")]
        json: bool,
        /// Only this disk
        #[arg(long, value_name = "ID")]
        disk: Option<String>,
        /// Write the disk (--disk) into this existing image, any format
        /// qemu-img knows; the VM using it must be stopped
        #[arg(long, value_name = "IMAGE", requires = "disk")]
        into: Option<PathBuf>,
    },
    /// List or extract the guest's files in a VM snapshot's disk, read-only
    /// (docs/vm-files.md): without PATH the disk's partitions, with PATH a
    /// directory listing, with --extract a copy of PATH to DST keeping
    /// modes, owners, times and symlinks
    Files {
        #[command(flatten)]
        ds: DatastoreArg,
        snapshot: String,
        #[command(flatten)]
        files: GuestFilesArgs,
    },
    /// Move a VM running from instant restore onto local images while it
    /// runs (blockdev-mirror, then pivot); its NBD exports are released
    MigrateBack {
        /// QMP socket of the running VM (instant-restore prints it)
        #[arg(long, value_name = "PATH")]
        qmp: PathBuf,
        /// Directory for the new images, <disk>.<format>
        target: PathBuf,
        #[arg(long, default_value = "qcow2", value_parser = ["raw", "qcow2"])]
        format: String,
    },
    /// Serve one disk of a VM snapshot over NFS (a datastore ESXi or
    /// Linux mounts) without the daemon; prints its nfs:// URI and runs
    /// until Ctrl-C. Writes (--writable) go to an overlay in --workdir
    Export {
        #[command(flatten)]
        ds: DatastoreArg,
        snapshot: String,
        /// Disk id (needed when the VM has several)
        #[arg(long, value_name = "ID")]
        disk: Option<String>,
        /// Accept writes (into an overlay; the backup stays as it is)
        #[arg(long)]
        writable: bool,
        /// nfs (NBD without the daemon: `vm instant-restore --no-boot`)
        #[arg(long, default_value = "nfs", value_parser = ["nbd", "nfs"])]
        protocol: String,
        /// A client address or CIDR block allowed to mount it (repeatable; needed)
        #[arg(long = "client", value_name = "ADDR")]
        clients: Vec<String>,
        /// NFS listen address (ESXi mounts port 2049 only)
        #[arg(long, default_value = "0.0.0.0:2049")]
        listen: std::net::SocketAddr,
        /// PORTMAP listen address (port 0: none)
        #[arg(long, default_value = "0.0.0.0:111")]
        portmap: std::net::SocketAddr,
        /// Where a writable export's overlay goes (default: under the datastore's tmp/)
        #[arg(long, value_name = "DIR")]
        workdir: Option<PathBuf>,
    },
    /// Boot a VM straight from a snapshot: disks served over NBD with a
    /// copy-on-write overlay (the datastore is never written), QEMU started
    /// with the backed-up hardware. Runs until the VM stops or Ctrl-C
    InstantRestore {
        #[command(flatten)]
        ds: DatastoreArg,
        snapshot: String,
        /// Where overlays, QMP socket and serial log go (default: under the datastore's tmp/)
        #[arg(long, value_name = "DIR")]
        workdir: Option<PathBuf>,
        /// NBD listen address
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Only export the disks; do not start QEMU
        #[arg(long)]
        no_boot: bool,
        /// NICs: "user" (QEMU user networking), "none", or "tap:IFNAME"
        #[arg(long, default_value = "user")]
        net: String,
        /// Accelerator: auto (KVM when a test kernel boots under it, else
        /// TCG), kvm or tcg. Default: qemu_accel in lifeboat.toml, else auto
        #[arg(long, value_name = "auto|kvm|tcg")]
        accel: Option<lifeboat_qemu::Accel>,
        /// Start the VM with its CPUs stopped (resume it over QMP with `cont`)
        #[arg(long)]
        paused: bool,
        /// Read qemu_accel from this config file
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Extra QEMU arguments (repeatable)
        #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
        qemu_args: Vec<String>,
        /// Boot with the hardware of another platform (kvm, openstack,
        /// vmware): the same mapping as `vm restore --target`, the guest
        /// repaired inside the overlays first (the datastore is never
        /// written)
        #[arg(id = "platforms", long = "target", value_name = "PLATFORM")]
        platform: Option<String>,
        #[command(flatten)]
        retarget: RetargetArgs,
        /// Windows guests: where driver files the guest lacks come from
        #[arg(long, value_name = "DIR|ISO", requires = "platforms")]
        drivers: Option<PathBuf>,
    },
}

/// Which guest files `vm files` shows or copies (local and remote).
#[derive(clap::Args)]
pub struct GuestFilesArgs {
    /// Path inside the guest file system (e.g. /etc)
    pub path: Option<String>,
    /// The disk (default: the VM's only disk)
    #[arg(long, value_name = "ID")]
    pub disk: Option<String>,
    /// Partition number, or VG/LV for an LVM volume (default: the only
    /// one with a file system)
    #[arg(long, value_name = "N|VG/LV")]
    pub partition: Option<String>,
    /// Copy PATH (file or directory) to DST on this machine
    #[arg(long, value_name = "DST", requires = "path")]
    pub extract: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// How a restore for another platform maps and repairs the guest: one
/// definition for `vm restore` and `vm instant-restore`, local and
/// remote. Their `--target` argument has the id `platforms`.
#[derive(clap::Args, Debug, Clone)]
pub struct RetargetArgs {
    /// Override one key of the platform's mapping table, e.g.
    /// --map nic_model=e1000 --map mac=new (repeatable;
    /// docs/cross-platform-restore.md)
    #[arg(long = "map", value_name = "KEY=VALUE", requires = "platforms")]
    pub maps: Vec<String>,
    /// Map the hardware but do not repair the guest for the new platform
    #[arg(long, requires = "platforms")]
    pub no_repair: bool,
}

pub fn run(cmd: VmCmd) -> anyhow::Result<u8> {
    match cmd {
        VmCmd::List { libvirt: Some(libvirt), json, .. } => {
            let domains = lifeboat_libvirt::list_domains(&libvirt)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&domains)?);
                return Ok(0);
            }
            println!("{:<30} state", "domain");
            for d in &domains {
                println!("{:<30} {}", d.name, d.state);
            }
            Ok(0)
        }
        VmCmd::List { state_dir, json, libvirt: None } => {
            let store = lifeboat_state::VmStore::open(&state_dir)?;
            let list: Vec<_> = store.list().iter().map(lifeboat_actors::connector::probe).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                crate::remote::vm::print_vms(&list);
            }
            Ok(0)
        }
        VmCmd::Inspect { qmp } => {
            let mut q = Qmp::connect(&qmp)?;
            let (md, _) = lifeboat_qemu::capture(&mut q)?;
            println!("{}", String::from_utf8_lossy(&md.to_json()));
            Ok(0)
        }
        VmCmd::Backup { ds, qmp, libvirt, domain, agent, tags, full, json } => {
            let store = open_datastore(&ds)?;
            let done = AtomicU64::new(0);
            let out = match (qmp, libvirt, domain) {
                (_, Some(uri), Some(domain)) => {
                    let opts = lifeboat_libvirt::LibvirtBackupOptions { uri, domain, tags, hostname: hostname(), full };
                    lifeboat_libvirt::backup_domain(&store, &opts, &done)?
                }
                (Some(qmp), _, _) => backup_vm(&store, &VmBackupOptions { qmp, agent, tags, hostname: hostname(), full }, &done)?,
                _ => anyhow::bail!("give --qmp PATH, or --libvirt URI with --domain NAME"),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(0);
            }
            for w in &out.warnings {
                eprintln!("warning: {w}");
            }
            println!("snapshot {} of VM {} saved ({}-consistent)", out.snapshot_id.short(), out.vm, out.consistency);
            if let Some(e) = &out.agent_error {
                eprintln!("warning: guest agent: {e}; the backup is crash-consistent");
            }
            for (id, s) in &out.disks {
                print_disk_stats(id, s);
            }
            Ok(0)
        }
        VmCmd::Import { ds, file, name, cpus, memory_mib, tags, json } => {
            let store = open_datastore(&ds)?;
            let done = AtomicU64::new(0);
            let opts = lifeboat_import::ImportOptions { name, cpus, memory_mib, tags, hostname: hostname() };
            let out = lifeboat_import::import_vm(&store, &file, &opts, &done)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(0);
            }
            for w in &out.warnings {
                eprintln!("warning: {w}");
            }
            println!("snapshot {} of VM {} imported from {}", out.snapshot_id.short(), out.vm, file.display());
            for (id, s) in &out.disks {
                print_disk_stats(id, s);
            }
            Ok(0)
        }
        VmCmd::Snapshots { ds, json } => {
            let store = open_datastore(&ds)?;
            let snaps: Vec<_> = store.snapshots()?.into_iter().filter(|(_, s)| s.kind == SnapshotKind::Vm).collect();
            if json {
                let v: Vec<_> =
                    snaps.iter().map(|(id, s)| serde_json::json!({ "id": id.to_hex(), "time": s.time, "vm": s.vm_name(), "host": s.hostname, "tags": s.tags, "summary": s.summary })).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(0);
            }
            println!("{:<9} {:<20} {:<20} {:>10}  host", "id", "time (UTC)", "vm", "size");
            for (id, s) in &snaps {
                let vm = s.vm_name().unwrap_or("");
                println!("{:<9} {:<20} {:<20} {:>10}  {}", id.short(), s.time.format("%Y-%m-%d %H:%M:%S"), vm, ui::bytes(s.summary.total_bytes), s.hostname);
            }
            Ok(0)
        }
        VmCmd::Restore { ds, snapshot, target, format, platforms, retarget: RetargetArgs { maps, no_repair }, drivers, json, .. } if !platforms.is_empty() => {
            let store = open_datastore(&ds)?;
            let (sid, snap) = store.resolve_snapshot(&snapshot)?;
            let vm = load_vm(&store, &snap)?;
            for w in &vm.warnings {
                eprintln!("warning: {w}");
            }
            let format = format.as_deref().map(str::parse).transpose().map_err(|e: String| anyhow::anyhow!(e))?;
            let specs = lifeboat_convert::parse_targets(&platforms, format).map_err(|e| anyhow::anyhow!(e))?;
            let out = target.expect("clap requires it");
            let tcg = lifeboat_qemu::accel::choose(lifeboat_qemu::Accel::Auto).accel != lifeboat_qemu::Accel::Kvm;
            let mut targets = Vec::new();
            for t in &specs {
                let dir = t.subdir.as_ref().map_or(out.clone(), |s| out.join(s));
                std::fs::create_dir_all(&dir)?;
                let opts = lifeboat_convert::TargetRestoreOptions {
                    platform: t.platform,
                    format: t.format,
                    maps: maps.clone(),
                    repair: !no_repair,
                    workdir: store.root().join("tmp").join(format!("restore-{}-{}-{}", sid.short(), std::process::id(), t.subdir.as_deref().unwrap_or("t"))),
                    out_display: Some(std::fs::canonicalize(&dir)?),
                    tcg,
                    drivers: drivers.clone(),
                };
                targets.push((dir, opts));
            }
            let log = |l: &str| eprintln!("{l}");
            let results = lifeboat_convert::restore_for_targets(store.clone(), &vm, &targets, &log)?;
            let mut failed = Vec::new();
            let mut done = Vec::new();
            for ((dir, _), r) in targets.iter().zip(results) {
                // (a failed repair's steps are on stderr already)
                match r {
                    Ok(r) => done.push((dir, r)),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            if json {
                let v: Vec<_> = done.iter().map(|(_, r)| r).collect();
                println!("{}", if specs.len() == 1 { serde_json::to_string_pretty(&v.first())? } else { serde_json::to_string_pretty(&v)? });
            } else {
                for (dir, r) in &done {
                    println!("restored VM {} for {} into {} ({} disks): {}", r.vm, r.platform, dir.display(), r.format, r.files.join(", "));
                    for (nic, (old, new)) in &r.macs {
                        println!("NIC {nic}: MAC {old} -> {new}");
                    }
                    match &r.repair {
                        Some(rep) => println!("guest repaired in {:.0} s ({}); steps in restore-report.json", rep.seconds, rep.os),
                        None => println!("guest not repaired (--no-repair)"),
                    }
                }
            }
            match lifeboat_convert::failure_message(&failed, specs.len()) {
                None => Ok(0),
                Some(msg) => anyhow::bail!("{msg}"),
            }
        }
        VmCmd::Restore { ds, snapshot, target, format, disk, into, .. } => {
            let format = format.unwrap_or_else(|| "raw".into());
            if format != "raw" && format != "qcow2" {
                anyhow::bail!("--format {format} needs --target (vmdk is for vmware, vhdx for hyperv)");
            }
            let store = open_datastore(&ds)?;
            let (_, snap) = store.resolve_snapshot(&snapshot)?;
            let vm = load_vm(&store, &snap)?;
            for w in &vm.warnings {
                eprintln!("warning: {w}");
            }
            let md = &vm.md;
            let chosen: Vec<(&lifeboat_vm::Disk, &Node)> = match &disk {
                Some(d) => vec![vm.disk(d).ok_or_else(|| anyhow::anyhow!("VM {} has no disk {d} (disks: {})", md.name, vm.disk_ids()))?],
                None => md.disks.iter().zip(&vm.disks).collect(),
            };
            if let Some(img) = into {
                let tmp = img.with_extension("lifeboat-restore.raw");
                let _ = std::fs::remove_file(&tmp);
                restore_raw(&store, chosen[0].1, &tmp)?;
                let r = qemu_img(&["convert", "-n", "-f", "raw"], &[&tmp, &img], &[]);
                let _ = std::fs::remove_file(&tmp);
                r?;
                println!("wrote disk {} of {} into {}", disk.unwrap_or_default(), md.name, img.display());
                return Ok(0);
            }
            let target = target.expect("clap requires it");
            std::fs::create_dir_all(&target)?;
            std::fs::write(target.join("vm.json"), md.to_json())?;
            for (d, n) in chosen {
                let raw = target.join(format!("{}.raw", d.id));
                restore_raw(&store, n, &raw)?;
                if format == "qcow2" {
                    let q = target.join(format!("{}.qcow2", d.id));
                    qemu_img(&["convert", "-f", "raw", "-O", "qcow2"], &[&raw, &q], &[])?;
                    std::fs::remove_file(&raw)?;
                }
                println!("disk {}: {}", d.id, ui::bytes(n.size));
            }
            println!("restored VM {} to {} (hardware in vm.json)", md.name, target.display());
            Ok(0)
        }
        VmCmd::Files { ds, snapshot, files: GuestFilesArgs { path, disk, partition, extract, json } } => vm_files(&ds, &snapshot, path, disk, partition, extract, json),
        VmCmd::MigrateBack { qmp, target, format } => {
            let mut q = Qmp::connect(&qmp)?;
            let disks = lifeboat_qemu::migrate::nbd_disks(&mut q)?;
            if disks.is_empty() {
                anyhow::bail!("the VM behind {} reads no disk over NBD: nothing to migrate", qmp.display());
            }
            std::fs::create_dir_all(&target)?;
            for (id, node, size) in disks {
                let img = target.join(format!("{id}.{format}"));
                if img.exists() {
                    anyhow::bail!("{} exists already; choose an empty directory", img.display());
                }
                eprintln!("mirroring disk {id} ({}) into {}...", ui::bytes(size), img.display());
                lifeboat_qemu::migrate::migrate_disk(&mut q, &node, size, &img, &format)?;
                println!("disk {id} now runs from {}", img.display());
            }
            Ok(0)
        }
        VmCmd::Export { ds, snapshot, disk, writable, protocol, clients, listen, portmap, workdir } => {
            if protocol != "nfs" {
                anyhow::bail!("without the daemon `vm export` serves NFS; for NBD use `vm instant-restore --no-boot`, or give --server to ask the daemon");
            }
            let store = open_datastore(&ds)?;
            export_nfs(store, &snapshot, disk, writable, &clients, listen, portmap, workdir)
        }
        VmCmd::InstantRestore { ds, snapshot, workdir, listen, no_boot, net, accel, paused, config, qemu_args, platform, retarget: RetargetArgs { maps, no_repair }, drivers } => {
            let net: NetMode = net.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let accel = match accel {
                Some(a) => a,
                None => lifeboat_state::Config::load(config.as_deref())?.qemu_accel.parse().map_err(|e: String| anyhow::anyhow!(e))?,
            };
            let store = open_datastore(&ds)?;
            let retarget =
                platform.map(|p| -> anyhow::Result<Retarget> { Ok(Retarget { platform: p.parse().map_err(|e: String| anyhow::anyhow!(e))?, maps, repair: !no_repair, drivers }) }).transpose()?;
            let opts = InstantOptions { workdir, listen, no_boot, net, accel, paused, qemu_args, retarget };
            instant_restore(store, &snapshot, &opts)
        }
    }
}

/// One disk of a VM backup, local or a daemon's vm-backup job.
pub fn print_disk_stats(id: &str, s: &lifeboat_vm::image::DiskStats) {
    println!(
        "disk {id}: {} in {} chunks: {} read ({} of them in part, {} in all), {} unchanged, {} zero; {} new ({})",
        ui::bytes(s.size),
        s.chunks,
        s.chunks_read,
        s.chunks_patched,
        ui::bytes(s.bytes_read),
        s.chunks_reused,
        s.chunks_zero,
        s.chunks_added,
        ui::bytes(s.bytes_added)
    );
    if let Some(r) = &s.full_reason {
        println!("  full read: {r}");
    }
}

fn qemu_img(args: &[&str], paths: &[&Path], tail: &[&str]) -> anyhow::Result<()> {
    let o = Command::new("qemu-img").args(args).args(paths).args(tail).output().map_err(|e| anyhow::anyhow!("cannot run qemu-img: {e}"))?;
    if !o.status.success() {
        anyhow::bail!("qemu-img {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(())
}

/// `vm export` on the appliance: one disk over NFS until Ctrl-C.
#[allow(clippy::too_many_arguments)]
fn export_nfs(
    ds: Arc<Datastore>,
    query: &str,
    disk: Option<String>,
    writable: bool,
    clients: &[String],
    listen: std::net::SocketAddr,
    portmap: std::net::SocketAddr,
    workdir: Option<PathBuf>,
) -> anyhow::Result<u8> {
    use lifeboat_nbd::{BlockDevice, CowOverlay};
    let clients: Vec<lifeboat_nfs::ClientRule> = clients.iter().map(|c| c.parse()).collect::<Result<_, String>>().map_err(|m| anyhow::anyhow!(m))?;
    if clients.is_empty() {
        anyhow::bail!("name the clients allowed to mount the export: --client 10.0.0.5 or --client 10.0.0.0/24 (repeatable)");
    }
    let (sid, snap) = ds.resolve_snapshot(query)?;
    let vm = load_vm(&ds, &snap)?;
    let ids: Vec<&str> = vm.md.disks.iter().map(|d| d.id.as_str()).collect();
    let disk = match disk {
        Some(d) => d,
        None if ids.len() == 1 => ids[0].to_string(),
        None => anyhow::bail!("VM {} has {} disks ({}): name one with --disk", vm.md.name, ids.len(), ids.join(", ")),
    };
    let (_, node) = vm.disk(&disk).ok_or_else(|| anyhow::anyhow!("VM {} in snapshot {} has no disk {disk:?} (disks: {})", vm.md.name, sid.short(), ids.join(", ")))?;
    let base = lifeboat_vm::image::DatastoreDisk::new(ds.clone(), node);
    let mut files_area = None;
    let device: Arc<dyn BlockDevice> = if writable {
        let work = workdir.unwrap_or_else(|| ds.root().join("tmp").join(format!("nfs-{}", sid.short())));
        std::fs::create_dir_all(&work).map_err(|e| anyhow::anyhow!("creating {}: {e}", work.display()))?;
        let p = work.join(format!("{}.overlay", lifeboat_nfs::plain_name(&disk)));
        files_area = Some(work.join("files"));
        eprintln!("writes go to the overlay {} and new files to {}/files", p.display(), work.display());
        Arc::new(CowOverlay::open(base, &p).map_err(|e| anyhow::anyhow!("creating the overlay {}: {e}", p.display()))?)
    } else {
        Arc::new(base)
    };
    let mut nd = lifeboat_nfs::NfsDisk {
        vm: vm.md.name.clone(),
        snapshot_time: snap.time.format("%Y-%m-%dT%H%M%SZ").to_string(),
        disk,
        device,
        writable,
        clients,
        mtime: snap.time.timestamp().clamp(0, u32::MAX as i64) as u32,
        meta: Vec::new(),
        files: files_area,
    };
    nd.meta = lifeboat_actors::export::nfs_metadata_files(&vm.md, &nd).map_err(|m| anyhow::anyhow!("VM {}: {m}", vm.md.name))?;
    let registry = Arc::new(lifeboat_nfs::Registry::default());
    let idx = registry.add(nd)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("nfs").enable_all().build()?;
    let server = lifeboat_nfs::NfsServer::start(listen, Some(portmap).filter(|a| a.port() != 0), registry.clone(), rt.handle())?;
    let addr = server.local_addr();
    let host = if addr.ip().is_unspecified() { hostname() } else { addr.ip().to_string() };
    eprintln!("serving snapshot {} over NFS ({}); Ctrl-C ends it", sid.short(), if writable { "writable, copy-on-write" } else { "read-only" });
    println!("nfs://{host}:{}{}", addr.port(), registry.path(idx).unwrap_or_default());
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    ui::install_cancel_handler(&cancel);
    while !cancel.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    registry.remove(idx);
    drop(server);
    rt.shutdown_background();
    Ok(0)
}

struct InstantOptions {
    workdir: Option<PathBuf>,
    listen: String,
    no_boot: bool,
    net: NetMode,
    accel: lifeboat_qemu::Accel,
    paused: bool,
    qemu_args: Vec<String>,
    retarget: Option<Retarget>,
}

/// `vm instant-restore --target`: the hardware of another platform.
struct Retarget {
    platform: lifeboat_convert::Platform,
    maps: Vec<String>,
    repair: bool,
    drivers: Option<PathBuf>,
}

fn instant_restore(ds: Arc<Datastore>, query: &str, o: &InstantOptions) -> anyhow::Result<u8> {
    use lifeboat_qemu::{BootOptions, InstantVm, NbdListen};
    let (sid, _) = ds.resolve_snapshot(query)?;
    let work = o.workdir.clone().unwrap_or_else(|| ds.root().join("tmp").join(format!("instant-{}", sid.short())));
    let mut vm = InstantVm::export(ds.clone(), &sid.to_hex(), &NbdListen::Tcp(o.listen.clone()), &work)?;
    for w in &vm.warnings {
        eprintln!("warning: {w}");
    }
    let addr = match &vm.source {
        DiskSource::Nbd { host, port } => format!("{host}:{port}"),
        other => anyhow::bail!("internal error: instant restore served on {other:?}"),
    };
    for d in &vm.md.disks {
        eprintln!("exporting disk {} as nbd://{addr}/{} (copy-on-write overlay in {})", d.id, d.id, work.display());
    }
    if let Some(r) = &o.retarget {
        let tcg = lifeboat_qemu::accel::choose(lifeboat_qemu::Accel::Auto).accel != lifeboat_qemu::Accel::Kvm;
        let repair = r.repair.then(|| lifeboat_convert::GuestRepair { tcg, drivers: r.drivers.clone(), scratch: work.join("repair") });
        let log = |l: &str| eprintln!("{l}");
        let done = match lifeboat_convert::retarget_instant(&mut vm, r.platform, &r.maps, repair.as_ref(), &log) {
            Ok(d) => d,
            Err(e) => {
                vm.stop();
                anyhow::bail!("{e}; the VM was not started");
            }
        };
        for (nic, (old, new)) in &done.macs {
            println!("NIC {nic}: MAC {old} -> {new}");
        }
        if let Some(rep) = &done.repair {
            println!("guest repaired in its overlays in {:.0} s ({})", rep.seconds, rep.os);
        }
    }
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    ui::install_cancel_handler(&cancel);
    let wait_cancel = || {
        while !cancel.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    if o.no_boot {
        println!("nbd://{addr}");
        wait_cancel();
        // Close the exports (stop) before the datastore goes: connections
        // still being served hold its disks.
        vm.stop();
        return Ok(0);
    }
    let accel = lifeboat_qemu::accel::choose(o.accel);
    eprintln!("accelerator: {}", accel.reason);
    let name = format!("{}-instant", vm.md.name);
    vm.boot(&BootOptions { name, accel, net: o.net.clone(), paused: o.paused, video: false, extra_args: o.qemu_args.clone() })?;
    println!("VM {} booting from snapshot {}: QMP {}, serial log {}", vm.md.name, sid.short(), vm.qmp.display(), vm.serial.display());
    loop {
        if let Some((st, last)) = vm.exited() {
            let log = work.join("qemu.log");
            if !st.success() {
                anyhow::bail!("QEMU exited at once ({st}): {last}; the overlays stay in {}; QEMU's output: {}", work.display(), log.display());
            }
            eprintln!("VM stopped ({st}); the overlays stay in {}; QEMU's output: {}", work.display(), log.display());
            return Ok(0);
        }
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            // A VM migrated back (no disk on NBD any more) keeps running.
            if vm.migrated() {
                let pid = vm.release();
                eprintln!("the VM runs from local disks now (pid {}); released its exports", pid.unwrap_or(0));
                return Ok(0);
            }
            vm.stop();
            eprintln!("stopped the VM; the overlays stay in {}", work.display());
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `lifeboat vm files`: the disk served read-only over FUSE, its partition
/// mounted read-only through a loop device (crates/vmfiles).
fn vm_files(ds: &DatastoreArg, snapshot: &str, path: Option<String>, disk: Option<String>, partition: Option<String>, extract: Option<PathBuf>, json: bool) -> anyhow::Result<u8> {
    lifeboat_vmfiles::clean_stale();
    let store = open_datastore(ds)?;
    let (_, snap) = store.resolve_snapshot(snapshot)?;
    let disk = lifeboat_vmfiles::SnapshotDisk::open(&store, &snap, disk.as_deref())?;
    let Some(path) = path else {
        let layout = &disk.layout;
        if json {
            let parts: Vec<_> = layout
                .partitions
                .iter()
                .map(|p| serde_json::json!({"number": p.number, "name": p.name, "start": p.start, "size": p.size, "fstype": p.fstype, "label": p.label, "unsupported": p.unsupported}))
                .collect();
            println!("{}", serde_json::json!({"disk": disk.disk, "table": layout.table, "partitions": parts}));
        } else {
            let parts: Vec<_> = layout
                .partitions
                .iter()
                .map(|p| VmPartitionInfo { name: p.name.clone(), start: p.start, size: p.size, fstype: p.fstype.clone(), label: p.label.clone(), unsupported: p.unsupported.clone() })
                .collect();
            crate::remote::vm::print_partitions(&disk.disk, Some(disk.size), layout.table.as_deref(), &parts);
        }
        return Ok(0);
    };
    let fs = disk.mount(partition.as_deref())?;
    // Holds the run here with everything attached, for the test that
    // kills it and checks that the next run undoes the leftovers.
    lifeboat_store::failpoint::hit("vm-files-mounted")?;
    if let Some(dst) = extract {
        let src = fs.resolve(&path)?;
        // cp -a keeps modes, owners, times, symlinks and hard links.
        let out = Command::new("cp").arg("-a").arg("--").arg(&src).arg(&dst).output()?;
        if !out.status.success() {
            anyhow::bail!("copying {path} to {}: {}", dst.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        println!("extracted {path} to {}", dst.display());
        return Ok(0);
    }
    let entries = fs.list(&path)?;
    if json {
        let list: Vec<_> =
            entries.iter().map(|e| serde_json::json!({"name": e.name, "mode": e.mode, "uid": e.uid, "gid": e.gid, "size": e.size, "mtime": e.mtime, "link_target": e.link_target})).collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        let list: Vec<_> = entries.into_iter().map(|e| VmFileEntry { name: e.name, mode: e.mode, uid: e.uid, gid: e.gid, size: e.size, mtime: e.mtime, link_target: e.link_target }).collect();
        crate::remote::vm::print_guest_entries(&list);
    }
    Ok(0)
}
