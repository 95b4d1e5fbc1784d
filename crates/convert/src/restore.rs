//! A VM snapshot restored for a target platform, in one pass:
//!
//! 1. the disks are served by lifeboat's NBD server on a unix socket in
//!    the work directory, each behind a copy-on-write overlay when the
//!    guest is repaired (the datastore is read-only to all of this);
//! 2. the guest is repaired through libguestfs on those exports (its
//!    writes land in the overlays);
//! 3. qemu-img reads each export (holes stay holes) and writes the
//!    target's format into the output directory;
//! 4. the target's description is written beside the disks, with
//!    `vm.json` (the converted neutral document) and
//!    `restore-report.json` (mapping, MACs, repair steps, files).
//!
//! Output files are created by name in the output directory with
//! `O_EXCL | O_NOFOLLOW` (whatever was there is removed first) and tools
//! write through the descriptor (`/proc/PID/fd/N`), so a symlink placed
//! in the directory never redirects a write.

use crate::format::{self, DiskFormat};
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

#[derive(Clone, Debug)]
pub struct TargetRestoreOptions {
    pub platform: Platform,
    /// The disk format; None: the platform's default.
    pub format: Option<DiskFormat>,
    /// `KEY=VALUE` overrides of the platform's mapping.
    pub maps: Vec<String>,
    pub repair: bool,
    /// Overlays, the NBD socket, repair scratch; removed at the end.
    pub workdir: PathBuf,
    /// The output directory as the admin named it (written into the
    /// libvirt XML), when `out` is a descriptor path.
    pub out_display: Option<PathBuf>,
    /// libguestfs' appliance under TCG.
    pub tcg: bool,
    /// Windows drivers the guest lacks come from here (a directory or a
    /// virtio-win ISO).
    pub drivers: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetRestore {
    pub platform: Platform,
    pub format: DiskFormat,
    pub vm: String,
    /// Files written into the output directory (names).
    pub files: Vec<String>,
    pub mapping: Mapping,
    /// NIC id -> [old MAC, new MAC].
    pub macs: std::collections::BTreeMap<String, (String, String)>,
    /// None with --no-repair.
    pub repair: Option<RepairReport>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetRestoreError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
    /// The report so far is in `report` (steps done, the failed one).
    #[error("{msg}")]
    Repair { msg: String, report: Option<Box<RepairReport>> },
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
    pub scratch: PathBuf,
}

/// Repairs the guest on `drives` (writable NBD URIs of its disks, in
/// order) for the converted hardware `c`; the steps go to `log`.
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
    match lifeboat_repair::repair(drives, "raw", &plan, &o.scratch) {
        Ok(r) => {
            for s in &r.steps {
                log(&format!("repair {}: {:?}: {}", s.step, s.outcome, s.details.join("; ")));
            }
            Ok(r)
        }
        Err(lifeboat_repair::RepairError::Step { step, msg, report }) => Err(TargetRestoreError::Repair { msg: format!("guest repair failed in step {step}: {msg}"), report: Some(report) }),
        Err(e) => Err(TargetRestoreError::Repair { msg: e.to_string(), report: None }),
    }
}

/// Restores `vm` (loaded from `ds`) into `out` for `o.platform`. `log`
/// gets one line per stage.
pub fn restore_for_target(ds: Arc<Datastore>, vm: &LoadedVm, out: &Path, o: &TargetRestoreOptions, log: &dyn Fn(&str)) -> Result<TargetRestore, TargetRestoreError> {
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
    std::fs::create_dir_all(&o.workdir).map_err(io(&format!("creating {}", o.workdir.display())))?;
    let result = run(ds, vm, &c, fmt, ova, out, o, log);
    let _ = std::fs::remove_dir_all(&o.workdir);
    result
}

#[allow(clippy::too_many_arguments)]
fn run(ds: Arc<Datastore>, vm: &LoadedVm, c: &Converted, fmt: DiskFormat, ova: bool, out: &Path, o: &TargetRestoreOptions, log: &dyn Fn(&str)) -> Result<TargetRestore, TargetRestoreError> {
    let md = &c.md;
    // 1. NBD exports of the snapshot's disks.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(io("tokio runtime"))?;
    let server = Server::new(ServerConfig::default());
    for (d, node) in md.disks.iter().zip(&vm.disks) {
        let base = DatastoreDisk::new(ds.clone(), node);
        let dev: Arc<dyn BlockDevice> = if o.repair {
            Arc::new(CowOverlay::open(base, &o.workdir.join(format!("{}.overlay", d.id))).map_err(io(&format!("overlay for disk {}", d.id)))?)
        } else {
            Arc::new(base)
        };
        server.add_export(Export::new(d.id.clone(), dev));
    }
    // A unix socket path has at most 107 bytes; a datastore's tmp/ can
    // be deeper than that, so the socket lives in a short private
    // directory of its own.
    let sockdir = lifeboat_qemu::SocketDir::create("r").map_err(io("a directory for the NBD socket"))?;
    let sockdir = sockdir.path();
    let sock = sockdir.join("nbd.sock");
    let listener = {
        let _g = rt.enter();
        tokio::net::UnixListener::bind(&sock).map_err(io(&format!("NBD socket {}", sock.display())))?
    };
    let srv = server.clone();
    rt.spawn(async move { srv.serve_unix(listener).await });

    // 2. Guest repair on the overlays.
    let repair = if o.repair {
        let drives: Vec<String> = md.disks.iter().filter(|d| !d.is_cdrom()).map(|d| format!("nbd:///{}?socket={}", d.id, sock.display())).collect();
        let r = repair_guest(c, &drives, &GuestRepair { tcg: o.tcg, drivers: o.drivers.clone(), scratch: o.workdir.join("repair") }, log)
            .map_err(|e| match e {
                TargetRestoreError::Repair { msg, report } => TargetRestoreError::Repair { msg: format!("{msg}; nothing was restored (use --no-repair to restore the guest unrepaired)"), report },
                e => e,
            })?;
        Some(r)
    } else {
        None
    };

    // 3. Disks in the target's format.
    let mut disk_files = Vec::new();
    let mut files = Vec::new();
    let disk_dir = if ova { o.workdir.clone() } else { out.to_path_buf() };
    for (d, node) in md.disks.iter().zip(&vm.disks) {
        let name = format!("{}.{}", d.id, fmt);
        log(&format!("writing disk {} ({} bytes) as {name}", d.id, node.size));
        let f = create_in(&disk_dir, &name)?;
        format::convert(&format::nbd_unix_uri(&sock, &d.id), fmt, ova, Path::new(&fd_path(&f))).map_err(TargetRestoreError::Io)?;
        let file_bytes = f.metadata().map_err(io(&name))?.len();
        disk_files.push(DiskFile { id: d.id.clone(), file: name.clone(), format: fmt, size: node.size, file_bytes });
        if !ova {
            files.push(name);
        }
    }
    drop(server);
    rt.shutdown_timeout(std::time::Duration::from_secs(5));

    // 4. The platform's description.
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
    let result = TargetRestore { platform: o.platform, format: fmt, vm: md.name.clone(), files: files.clone(), mapping: c.mapping.clone(), macs: c.macs.clone(), repair, warnings: vm.warnings.clone() };
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
