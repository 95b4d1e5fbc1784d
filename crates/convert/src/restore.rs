//! A VM snapshot restored for a target platform, in one pass:
//!
//! 1. the disks are served by lifeboat's NBD server on a unix socket (in
//!    a short private directory: socket paths are limited), each behind a
//!    copy-on-write overlay in the work directory when the guest is
//!    repaired (the datastore is read-only to all of this);
//! 2. the guest is repaired through libguestfs on those exports (its
//!    writes land in the overlays);
//! 3. qemu-img reads each export (holes stay holes) and writes the
//!    target's format into the output directory;
//! 4. the target's description is written beside the disks, with
//!    `vm.json` (the converted neutral document) and
//!    `restore-report.json` (mapping, MACs, repair steps, files).
//!
//! Several targets restore at once from one read of the datastore:
//! their repairs run side by side on their own overlays, then their
//! qemu-img processes read the same decoded chunks (`SharedReads`).
//!
//! Output files are created by name in the output directory with
//! `O_EXCL | O_NOFOLLOW` (whatever was there is removed first) and tools
//! write through the descriptor (`/proc/PID/fd/N`), so a symlink placed
//! in the directory never redirects a write.

use crate::format::{self, DiskFormat};
use crate::shared_reads::{SharedReader, SharedReads};
use crate::target::{convert, linux_drivers, Converted, Mapping, NetPolicy, Platform};
use crate::writers::{self, DiskFile};
use lifeboat_nbd::{BlockDevice, CowOverlay, Export, Server, ServerConfig};
use lifeboat_qemu::LoadedVm;
use lifeboat_repair::{RepairPlan, RepairReport};
use lifeboat_store::Datastore;
use lifeboat_vm::image::DatastoreDisk;
use serde::Serialize;
use sha2::Digest;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How one target of a restore is written (`restore_for_target(s)`).
#[derive(Clone, Debug)]
pub struct TargetRestoreOptions {
    /// The platform restored for.
    pub platform: Platform,
    /// The disk format; None: the platform's default.
    pub format: Option<DiskFormat>,
    /// `KEY=VALUE` overrides of the platform's mapping.
    pub maps: Vec<String>,
    /// Repair the guest for the target (libguestfs, on copy-on-write
    /// overlays) before the disks are written; false is `--no-repair`.
    pub repair: bool,
    /// Overlays, repair scratch and, for an OVA, the disks before they
    /// are packed; created, and removed with all it holds at the end, so
    /// give a directory of this restore's own. (The NBD socket lives in
    /// a short directory of its own.)
    pub workdir: PathBuf,
    /// The output directory as the admin named it (written into the
    /// libvirt XML), when `out` is a descriptor path.
    pub out_display: Option<PathBuf>,
    /// Run libguestfs' appliance under TCG (software emulation), for
    /// hosts without KVM.
    pub tcg: bool,
    /// Windows drivers the guest lacks come from here (a directory or a
    /// virtio-win ISO).
    pub drivers: Option<PathBuf>,
}

/// What one target of a restore wrote. Also written, with the source
/// document under `source`, as `restore-report.json` beside the files.
#[derive(Clone, Debug, Serialize)]
pub struct TargetRestore {
    /// The platform restored for.
    pub platform: Platform,
    /// The format the disks were written in.
    pub format: DiskFormat,
    /// The VM's name.
    pub vm: String,
    /// Files written into the output directory (names).
    pub files: Vec<String>,
    /// The hardware mapping applied (the platform's defaults with the
    /// `--map` overrides).
    pub mapping: Mapping,
    /// NIC id -> [old MAC, new MAC].
    pub macs: std::collections::BTreeMap<String, (String, String)>,
    /// None with --no-repair.
    pub repair: Option<RepairReport>,
    /// What loading the snapshot's description upgraded or repaired
    /// (`LoadedVm::warnings`).
    pub warnings: Vec<String>,
    /// Chunks decoded from the datastore for this restore and every
    /// target written beside it (one read serves them all). Set on the
    /// returned value only: `restore-report.json` is written before the
    /// count is known and says 0.
    pub chunks_read: u64,
}

/// Why a restore for a target (or an instant VM's retargeting) failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetRestoreError {
    /// The request cannot be done as asked, found before anything is
    /// written: e.g. an unknown `--map` key or value, a disk format the
    /// platform does not read, a mapped VM that is not valid (or, for an
    /// instant VM, that QEMU could not boot), no target at all.
    #[error("{0}")]
    Invalid(String),
    /// Writing the target failed: a file or directory, the NBD server,
    /// qemu-img or tar; the message names which and why.
    #[error("{0}")]
    Io(String),
    /// The guest repair failed; a restore then writes no disk for this
    /// target. The report so far is in `report` (steps done, the failed
    /// one).
    #[error("{msg}")]
    Repair {
        /// What failed, as a message for the user.
        msg: String,
        /// The repair's report up to the failed step; `None` when it
        /// failed before any step (libguestfs could not start or inspect
        /// the guest).
        report: Option<Box<RepairReport>>,
    },
}

fn io(what: &str) -> impl Fn(std::io::Error) -> TargetRestoreError + '_ {
    move |e| TargetRestoreError::Io(format!("{what}: {e}"))
}

/// A new file `name` in `dir`: what was there is removed first; never
/// follows a symlink.
fn create_in(dir: &Path, name: &str) -> Result<File, TargetRestoreError> {
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    std::fs::OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).mode(0o644).open(&p).map_err(io(&format!("creating {}", p.display())))
}

fn fd_path(f: &File) -> String {
    format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd())
}

/// How the guest is repaired, wherever its disks are served.
pub struct GuestRepair {
    /// libguestfs' appliance under TCG.
    pub tcg: bool,
    /// Windows drivers the guest lacks come from here.
    pub drivers: Option<PathBuf>,
    /// Directory for the repair's temporary files (an unpacked driver
    /// source, registry hives); created if missing, left for the caller
    /// to remove.
    pub scratch: PathBuf,
}

/// Repairs the guest on `drives` (writable NBD URIs of its disks, in
/// order) for the converted hardware `c`; the steps go to `log`, those
/// of a failed repair too.
pub fn repair_guest(c: &Converted, drives: &[String], o: &GuestRepair, log: &dyn Fn(&str)) -> Result<RepairReport, TargetRestoreError> {
    let plan = RepairPlan {
        platform: c.platform.to_string(),
        drivers: linux_drivers(&c.md),
        macs: c.macs.values().cloned().collect(),
        nics: c.md.nics.iter().map(|n| n.mac.clone()).collect(),
        dhcp: c.mapping.network == NetPolicy::Dhcp,
        disable: lifeboat_repair::platform_tools(c.platform.as_str()),
        tcg: o.tcg,
        driver_source: o.drivers.clone(),
    };
    log(&format!("repairing the guest for {} (drivers: {})", c.platform, plan.drivers.join(", ")));
    let log_steps = |r: &RepairReport| {
        for s in &r.steps {
            log(&format!("repair {}: {:?}: {}", s.step, s.outcome, s.details.join("; ")));
        }
    };
    match lifeboat_repair::repair(drives, "raw", &plan, &o.scratch) {
        Ok(r) => {
            log_steps(&r);
            Ok(r)
        }
        Err(lifeboat_repair::RepairError::Step { step, msg, report }) => {
            log_steps(&report);
            Err(TargetRestoreError::Repair { msg: format!("guest repair failed in step {step}: {msg}"), report: Some(report) })
        }
        Err(e) => Err(TargetRestoreError::Repair { msg: e.to_string(), report: None }),
    }
}

/// Restores `vm` (loaded from `ds`) into `out` for `o.platform`. `log`
/// gets one line per stage.
pub fn restore_for_target(ds: Arc<Datastore>, vm: &LoadedVm, out: &Path, o: &TargetRestoreOptions, log: &(dyn Fn(&str) + Sync)) -> Result<TargetRestore, TargetRestoreError> {
    let mut r = restore_for_targets(ds, vm, &[(out.to_path_buf(), o.clone())], log)?;
    r.pop().expect("one result per target")
}

/// One target of `vm restore --target PLATFORM[:FORMAT]...`.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetSpec {
    /// The platform restored for.
    pub platform: Platform,
    /// The disk format: the spec's own, else `--format`; `None` when
    /// neither names one (the platform's default then).
    pub format: Option<DiskFormat>,
    /// Where under the output directory it goes: None for a single
    /// target (the output directory itself), else the platform's name,
    /// with the format when a platform is asked for twice.
    pub subdir: Option<String>,
}

/// Parses `PLATFORM[:FORMAT]` targets; `format` applies to those without
/// one of their own.
pub fn parse_targets(specs: &[String], format: Option<DiskFormat>) -> Result<Vec<TargetSpec>, String> {
    let mut out: Vec<TargetSpec> = Vec::new();
    for s in specs {
        let (p, f) = match s.split_once(':') {
            Some((p, f)) => (p, Some(f.parse::<DiskFormat>()?)),
            None => (s.as_str(), None),
        };
        let platform: Platform = p.parse()?;
        let format = f.or(format);
        let effective = format.unwrap_or(platform.default_format());
        if out.iter().any(|t| t.platform == platform && t.format.unwrap_or(platform.default_format()) == effective) {
            return Err(format!("target {platform} with {effective} disks is named twice"));
        }
        out.push(TargetSpec { platform, format, subdir: None });
    }
    if out.len() > 1 {
        let twice = |p: Platform| out.iter().filter(|t| t.platform == p).count() > 1;
        let names: Vec<String> = out.iter().map(|t| if twice(t.platform) { format!("{}-{}", t.platform, t.format.unwrap_or(t.platform.default_format())) } else { t.platform.to_string() }).collect();
        for (t, n) in out.iter_mut().zip(names) {
            t.subdir = Some(n);
        }
    }
    Ok(out)
}

/// One message for the targets of a restore that failed (`failed`, out
/// of `total`): a lone target's error as it is, several counted.
pub fn failure_message(failed: &[String], total: usize) -> Option<String> {
    match failed {
        [] => None,
        [one] if total == 1 => Some(one.clone()),
        _ => Some(format!("{} of {total} targets failed: {}", failed.len(), failed.join("; "))),
    }
}

/// A target checked and mapped, before anything is written.
struct Planned<'a> {
    out: &'a Path,
    o: &'a TargetRestoreOptions,
    c: Converted,
    fmt: DiskFormat,
    ova: bool,
    /// Log prefix: the platform when several targets run at once.
    tag: String,
}

fn plan<'a>(vm: &LoadedVm, out: &'a Path, o: &'a TargetRestoreOptions) -> Result<Planned<'a>, TargetRestoreError> {
    let mapping = Mapping::defaults(o.platform).with_overrides(&o.maps).map_err(TargetRestoreError::Invalid)?;
    let fmt = o.format.unwrap_or(o.platform.default_format());
    let ova = o.platform == Platform::Vmware && mapping.package == "ova";
    if ova && fmt != DiskFormat::Vmdk {
        return Err(TargetRestoreError::Invalid(format!("an OVA holds VMDK disks, not {fmt}: use --format vmdk or --map package=ovf")));
    }
    if o.platform == Platform::Vmware && fmt != DiskFormat::Vmdk {
        return Err(TargetRestoreError::Invalid(format!("VMware reads VMDK disks, not {fmt}")));
    }
    if o.platform == Platform::Hyperv && fmt != DiskFormat::Vhdx {
        return Err(TargetRestoreError::Invalid(format!("Hyper-V reads VHDX disks, not {fmt}")));
    }
    let c = convert(&vm.md, o.platform, &mapping).map_err(TargetRestoreError::Invalid)?;
    for d in &c.md.disks {
        if !lifeboat_vm::is_device_id(&d.id) {
            return Err(TargetRestoreError::Invalid(format!("the snapshot names a disk {:?}, which is no plain file name", d.id)));
        }
    }
    Ok(Planned { out, o, c, fmt, ova, tag: String::new() })
}

/// Chunks held in memory per disk for targets that write slower than
/// others (4 MiB each).
const SHARED_CHUNKS: usize = 32;

/// Restores `vm` for several targets at once, each `(out, options)`
/// into its own directory, reading the datastore once: the targets'
/// guest repairs run side by side, then their disks are written side by
/// side from the same decoded chunks (`SharedReads`). Every target is
/// checked before anything is written (`Err`: none was); after that each
/// succeeds or fails on its own.
pub fn restore_for_targets(
    ds: Arc<Datastore>,
    vm: &LoadedVm,
    targets: &[(PathBuf, TargetRestoreOptions)],
    log: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Result<TargetRestore, TargetRestoreError>>, TargetRestoreError> {
    let mut planned = targets.iter().map(|(out, o)| plan(vm, out, o)).collect::<Result<Vec<_>, _>>()?;
    if planned.is_empty() {
        return Err(TargetRestoreError::Invalid("no target to restore for".into()));
    }
    if planned.len() > 1 {
        for p in &mut planned {
            p.tag = format!("{}: ", p.o.platform);
        }
    }
    for p in &planned {
        std::fs::create_dir_all(&p.o.workdir).map_err(io(&format!("creating {}", p.o.workdir.display())))?;
    }
    let result = run(ds, vm, &planned, log);
    for p in &planned {
        let _ = std::fs::remove_dir_all(&p.o.workdir);
    }
    result
}

/// One result per target, in their order.
type Results = Vec<Result<TargetRestore, TargetRestoreError>>;

fn run(ds: Arc<Datastore>, vm: &LoadedVm, targets: &[Planned], log: &(dyn Fn(&str) + Sync)) -> Result<Results, TargetRestoreError> {
    let md = &vm.md;
    // 1. NBD exports of the snapshot's disks: per target, a reader of the
    //    disk shared by all targets, behind an overlay when repaired.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(io("tokio runtime"))?;
    let server = Server::new(ServerConfig::default());
    let bases: Vec<Arc<DatastoreDisk>> = vm.disks.iter().map(|node| Arc::new(DatastoreDisk::new(ds.clone(), node))).collect();
    let shared: Vec<Arc<SharedReads>> = bases.iter().map(|b| SharedReads::new(b.clone(), targets.len(), lifeboat_vm::image::CHUNK, SHARED_CHUNKS)).collect();
    // readers[t][d]: target t's reader of disk d.
    let mut readers: Vec<Vec<Arc<SharedReader>>> = Vec::new();
    for (t, p) in targets.iter().enumerate() {
        let mut mine = Vec::new();
        for (d, sh) in md.disks.iter().zip(&shared) {
            let r = Arc::new(sh.reader(t));
            let dev: Arc<dyn BlockDevice> =
                if p.o.repair { Arc::new(CowOverlay::open(r.clone(), &p.o.workdir.join(format!("{}.overlay", d.id))).map_err(io(&format!("overlay for disk {}", d.id)))?) } else { r.clone() };
            server.add_export(Export::new(export_name(t, &d.id), dev));
            mine.push(r);
        }
        readers.push(mine);
    }
    // A unix socket path has at most 107 bytes; a datastore's tmp/ can
    // be deeper than that, so the socket lives in a short private
    // directory of its own.
    let sockdir = lifeboat_qemu::SocketDir::create("r").map_err(io("a directory for the NBD socket"))?;
    let sock = sockdir.path().join("nbd.sock");
    server.spawn_unix(&rt, &sock).map_err(io(&format!("NBD socket {}", sock.display())))?;

    // 2. Guest repairs on the overlays, side by side.
    let repairs: Vec<Result<Option<RepairReport>, TargetRestoreError>> = std::thread::scope(|sc| {
        let handles: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(t, p)| {
                let sock = &sock;
                sc.spawn(move || {
                    if !p.o.repair {
                        return Ok(None);
                    }
                    let drives: Vec<String> = md.disks.iter().filter(|d| !d.is_cdrom()).map(|d| format!("nbd:///{}?socket={}", export_name(t, &d.id), sock.display())).collect();
                    let tagged = |l: &str| log(&format!("{}{l}", p.tag));
                    repair_guest(&p.c, &drives, &GuestRepair { tcg: p.o.tcg, drivers: p.o.drivers.clone(), scratch: p.o.workdir.join("repair") }, &tagged).map(Some).map_err(|e| match e {
                        TargetRestoreError::Repair { msg, report } => {
                            TargetRestoreError::Repair { msg: format!("{}{msg}; nothing was restored (use --no-repair to restore the guest unrepaired)", p.tag), report }
                        }
                        e => e,
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(TargetRestoreError::Io("guest repair panicked".into())))).collect()
    });

    // 3. Disks in each target's format, side by side from one read; then
    //    each target's description.
    for (t, r) in repairs.iter().enumerate() {
        for reader in &readers[t] {
            if r.is_ok() {
                reader.track();
            } else {
                reader.finish();
            }
        }
    }
    let results: Results = std::thread::scope(|sc| {
        let handles: Vec<_> = targets
            .iter()
            .zip(repairs)
            .enumerate()
            .map(|(t, (p, repair))| {
                let (sock, mine) = (&sock, &readers[t]);
                sc.spawn(move || {
                    let repair = repair?;
                    let r = write_target(vm, p, t, sock, mine, repair, log);
                    for reader in mine {
                        reader.finish();
                    }
                    r
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(TargetRestoreError::Io("writing the target panicked".into())))).collect()
    });
    let decoded: u64 = bases.iter().map(|b| b.chunks_decoded()).sum();
    let data: u64 = bases.iter().map(|b| b.data_chunks()).sum();
    log(&format!("read {decoded} chunks from the datastore for {} target(s) ({data} chunks hold data)", targets.len()));
    drop(server);
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    Ok(results
        .into_iter()
        .map(|r| {
            r.map(|mut r| {
                r.chunks_read = decoded;
                r
            })
        })
        .collect())
}

fn export_name(target: usize, disk: &str) -> String {
    format!("{target}.{disk}")
}

/// Target `t`'s disks (from the exports) and description.
fn write_target(
    vm: &LoadedVm,
    p: &Planned,
    t: usize,
    sock: &Path,
    readers: &[Arc<SharedReader>],
    repair: Option<RepairReport>,
    log: &(dyn Fn(&str) + Sync),
) -> Result<TargetRestore, TargetRestoreError> {
    let (c, md, o, out, fmt, ova) = (&p.c, &p.c.md, p.o, p.out, p.fmt, p.ova);
    let mut disk_files = Vec::new();
    let mut files = Vec::new();
    let disk_dir = if ova { o.workdir.clone() } else { out.to_path_buf() };
    for ((d, node), reader) in md.disks.iter().zip(&vm.disks).zip(readers) {
        let name = format!("{}.{}", d.id, fmt);
        log(&format!("{}writing disk {} ({} bytes) as {name}", p.tag, d.id, node.size));
        let f = create_in(&disk_dir, &name)?;
        format::convert(&format::nbd_unix_uri(sock, &export_name(t, &d.id)), fmt, ova, Path::new(&fd_path(&f))).map_err(|e| TargetRestoreError::Io(format!("{}{e}", p.tag)))?;
        reader.finish();
        let file_bytes = f.metadata().map_err(io(&name))?.len();
        disk_files.push(DiskFile { id: d.id.clone(), file: name.clone(), format: fmt, size: node.size, file_bytes });
        if !ova {
            files.push(name);
        }
    }

    // The platform's description.
    let shown = o.out_display.clone().unwrap_or_else(|| out.to_path_buf());
    let write = |name: &str, bytes: &[u8], files: &mut Vec<String>| -> Result<(), TargetRestoreError> {
        create_in(out, name)?.write_all(bytes).map_err(io(name))?;
        files.push(name.to_string());
        Ok(())
    };
    match o.platform {
        Platform::Kvm | Platform::Openstack => {
            write("domain.xml", writers::libvirt_xml(c, &disk_files, &shown, &c.mapping.domain_type).as_bytes(), &mut files)?;
            if o.platform == Platform::Openstack {
                let boot = md.boot_order.iter().find_map(|b| disk_files.iter().find(|f| &f.id == b)).or(disk_files.first()).expect("a VM has disks");
                write("openstack-image.json", &serde_json::to_vec_pretty(&writers::openstack_json(c, boot)).expect("json"), &mut files)?;
            }
        }
        Platform::Vmware => {
            let ovf = writers::ovf(c, &disk_files, ova);
            let mut mf = String::new();
            let dir = if ova { &o.workdir } else { out };
            for f in &disk_files {
                mf.push_str(&format!("SHA256({})= {}\n", f.file, sha256_file(&dir.join(&f.file))?));
            }
            mf = format!("SHA256(vm.ovf)= {}\n{mf}", hex(&sha2::Sha256::digest(ovf.as_bytes())));
            if ova {
                std::fs::write(o.workdir.join("vm.ovf"), &ovf).map_err(io("vm.ovf"))?;
                std::fs::write(o.workdir.join("vm.mf"), &mf).map_err(io("vm.mf"))?;
                // The descriptor first, then the manifest, then the disks
                // (OVF 1.0, section 5.3); ustar, which every reader takes.
                let f = create_in(out, "vm.ova")?;
                let mut t = std::process::Command::new("tar");
                t.args(["--format=ustar", "--owner=0", "--group=0", "-cf", "-", "-C"]).arg(&o.workdir).args(["vm.ovf", "vm.mf"]).args(disk_files.iter().map(|f| f.file.as_str()));
                let st = t.stdout(f).status().map_err(io("running tar"))?;
                if !st.success() {
                    return Err(TargetRestoreError::Io(format!("tar of the OVA failed ({st})")));
                }
                files.push("vm.ova".into());
            } else {
                write("vm.ovf", ovf.as_bytes(), &mut files)?;
                write("vm.mf", mf.as_bytes(), &mut files)?;
            }
        }
        Platform::Hyperv => {
            write("hyperv.json", &serde_json::to_vec_pretty(&writers::hyperv_json(c, &disk_files)).expect("json"), &mut files)?;
            write("create-vm.ps1", writers::hyperv_ps1(c, &disk_files).as_bytes(), &mut files)?;
        }
    }
    write("vm.json", &md.to_json(), &mut files)?;
    let result = TargetRestore {
        platform: o.platform,
        format: fmt,
        vm: md.name.clone(),
        files: files.clone(),
        mapping: c.mapping.clone(),
        macs: c.macs.clone(),
        repair,
        warnings: vm.warnings.clone(),
        chunks_read: 0,
    };
    let mut report = serde_json::to_value(&result).expect("json");
    report["source"] = serde_json::to_value(&vm.md).expect("json");
    write("restore-report.json", &serde_json::to_vec_pretty(&report).expect("json"), &mut files)?;
    let mut result = result;
    result.files = files;
    Ok(result)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256_file(p: &Path) -> Result<String, TargetRestoreError> {
    let mut f = File::open(p).map_err(io(&p.display().to_string()))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io(&p.display().to_string()))?;
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_target_goes_into_the_output_directory_itself() {
        let t = parse_targets(&specs(&["kvm"]), Some(DiskFormat::Raw)).unwrap();
        assert_eq!(t, vec![TargetSpec { platform: Platform::Kvm, format: Some(DiskFormat::Raw), subdir: None }]);
    }

    #[test]
    fn several_targets_get_a_directory_each() {
        let t = parse_targets(&specs(&["kvm", "vmware", "hyperv:vhdx"]), None).unwrap();
        assert_eq!(t.iter().map(|t| t.subdir.clone().unwrap()).collect::<Vec<_>>(), ["kvm", "vmware", "hyperv"]);
        assert_eq!(t[2].format, Some(DiskFormat::Vhdx));
        // The same platform twice, in two formats: named by format.
        let t = parse_targets(&specs(&["kvm", "kvm:raw"]), None).unwrap();
        assert_eq!(t.iter().map(|t| t.subdir.clone().unwrap()).collect::<Vec<_>>(), ["kvm-qcow2", "kvm-raw"]);
    }

    #[test]
    fn failures_are_one_message() {
        assert_eq!(failure_message(&[], 3), None);
        assert_eq!(failure_message(&["no OS".into()], 1).as_deref(), Some("no OS"));
        assert_eq!(failure_message(&["kvm: no OS".into()], 2).as_deref(), Some("1 of 2 targets failed: kvm: no OS"));
        assert_eq!(failure_message(&["a".into(), "b".into()], 4).as_deref(), Some("2 of 4 targets failed: a; b"));
    }

    #[test]
    fn bad_targets_are_named() {
        assert!(parse_targets(&specs(&["kvm", "kvm:qcow2"]), None).unwrap_err().contains("named twice"));
        assert!(parse_targets(&specs(&["xen"]), None).is_err());
        assert!(parse_targets(&specs(&["kvm:vdi"]), None).is_err());
    }
}
