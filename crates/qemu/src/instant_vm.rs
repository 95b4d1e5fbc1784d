//! A backup running as a VM (instant restore): every disk of a VM
//! snapshot is served by our NBD server from the datastore through a
//! copy-on-write overlay in a work directory, and QEMU boots on those
//! exports with the hardware the snapshot recorded (`instant::qemu_args`).
//! The datastore is never written: the guest's writes land in the
//! overlays.
//!
//! One type for every caller that keeps such a VM: the CLI's
//! `vm instant-restore`, and the daemon's `vm-instant-restore` job
//! (whose VMs `/api/vms` lists until they are stopped or migrated back).
//! The verification lab exports through `serve_overlays` too.
//!
//! The work directory holds the overlays, the QMP socket, the serial log,
//! QEMU's output and its pid file. A VM left behind by a killed owner is
//! found by that pid file (`sweep_stale`); a migrated-back VM leaves a
//! `migrated` marker and is never swept: it is production now.

use crate::accel::AccelChoice;
use crate::instant::{qemu_args, BootPlan, DiskSource, NetMode, UefiFirmware};
use crate::qmp::Qmp;
use crate::{load_vm, LoadedVm};
use lifeboat_nbd::{CowOverlay, Export, Server, ServerConfig};
use lifeboat_store::{BlobId, Datastore};
use lifeboat_vm::image::DatastoreDisk;
use lifeboat_vm::VmMetadata;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The file in a work directory that says its VM was migrated back.
pub const MIGRATED_MARKER: &str = "migrated";
const PID_FILE: &str = "qemu.pid";

/// Why an instant VM could not be exported, booted or migrated. The
/// variant says whose fault it is; the text says what.
#[derive(Debug, thiserror::Error)]
pub enum InstantError {
    /// The snapshot or its description (the caller named it).
    #[error("{0}")]
    Snapshot(String),
    /// The appliance could not do it (files, sockets, QEMU).
    #[error("{0}")]
    Host(String),
    /// QEMU started and then stopped or did not answer.
    #[error("{0}")]
    Boot(String),
}

/// Where the disks are served.
#[derive(Clone, Debug)]
pub enum NbdListen {
    /// A TCP address (`HOST:PORT`): other hypervisors can attach too.
    Tcp(String),
    /// `nbd.sock` in the work directory: QEMU on this machine only.
    Unix,
}

/// How to boot the exports.
#[derive(Clone, Debug)]
pub struct BootOptions {
    /// `-name` of the VM.
    pub name: String,
    /// Accelerator, already resolved (see [`crate::accel::choose`]).
    pub accel: AccelChoice,
    /// How the NICs are connected.
    pub net: NetMode,
    /// Start with the CPUs stopped (`-S`): run state `prelaunch`.
    pub paused: bool,
    /// Give the VM a standard VGA card (for screenshots).
    pub video: bool,
    /// Appended to QEMU's command line.
    pub extra_args: Vec<String>,
}

/// Exports each disk of `vm` under its id through a copy-on-write overlay
/// `<dir>/<disk id>.overlay`.
pub fn serve_overlays(ds: &Arc<Datastore>, vm: &LoadedVm, dir: &Path) -> std::io::Result<Server> {
    let server = Server::new(ServerConfig::default());
    for (d, node) in vm.md.disks.iter().zip(&vm.disks) {
        let p = dir.join(format!("{}.overlay", d.id));
        let overlay = CowOverlay::open(DatastoreDisk::new(ds.clone(), node), &p).map_err(|e| std::io::Error::new(e.kind(), format!("overlay {} for disk {}: {e}", p.display(), d.id)))?;
        server.add_export(Export::new(d.id.clone(), Arc::new(overlay)));
    }
    Ok(server)
}

/// A VM snapshot served over NBD through copy-on-write overlays, and the
/// QEMU booted on it once [`InstantVm::boot`] ran. Dropping it kills QEMU
/// and stops the exports but keeps the work directory (see
/// [`InstantVm::discard`], [`InstantVm::release`]).
pub struct InstantVm {
    /// The VM's hardware as recorded in the snapshot (after repairs).
    pub md: VmMetadata,
    /// Id of the snapshot being served (none for disks of another kind).
    pub snapshot: Option<BlobId>,
    /// What reading the description upgraded or repaired.
    pub warnings: Vec<String>,
    /// Work directory: overlays, sockets, logs, pid file. The caller
    /// chooses it; [`InstantVm::discard`] removes it.
    pub workdir: PathBuf,
    /// QEMU's QMP socket, `<workdir>/qmp.sock`.
    pub qmp: PathBuf,
    /// The guest's serial console log, `<workdir>/serial.log`.
    pub serial: PathBuf,
    /// Where QEMU (or anyone) reads the disks.
    pub source: DiskSource,
    rt: Option<tokio::runtime::Runtime>,
    child: Option<Child>,
}

fn host(what: &str) -> impl Fn(std::io::Error) -> InstantError + '_ {
    move |e| InstantError::Host(format!("{what}: {e}"))
}

impl InstantVm {
    /// Serves every disk of snapshot `query` (id, prefix or `latest`).
    pub fn export(ds: Arc<Datastore>, query: &str, listen: &NbdListen, workdir: &Path) -> Result<InstantVm, InstantError> {
        let (sid, snap) = ds.resolve_snapshot(query).map_err(|e| InstantError::Snapshot(format!("{e:#}")))?;
        let vm = load_vm(&ds, &snap).map_err(|e| InstantError::Snapshot(format!("snapshot {}: {e}", sid.short())))?;
        std::fs::create_dir_all(workdir).map_err(host(&format!("creating {}", workdir.display())))?;
        let server = serve_overlays(&ds, &vm, workdir).map_err(|e| InstantError::Host(e.to_string()))?;
        let mut me = InstantVm::serve(vm.md, server, listen, workdir)?;
        me.snapshot = Some(sid);
        me.warnings = vm.warnings;
        Ok(me)
    }

    /// Serves the exports of `server` (one per disk of `md`, named by the
    /// disk's id) for a VM with hardware `md`: the way to boot disks that
    /// are not a snapshot's (a moment of a CDP journal).
    pub fn serve(md: VmMetadata, server: Server, listen: &NbdListen, workdir: &Path) -> Result<InstantVm, InstantError> {
        std::fs::create_dir_all(workdir).map_err(host(&format!("creating {}", workdir.display())))?;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("instant-nbd").enable_all().build().map_err(host("starting the NBD runtime"))?;
        let source = match listen {
            NbdListen::Tcp(addr) => {
                let l = rt.block_on(tokio::net::TcpListener::bind(addr)).map_err(host(&format!("serving NBD on {addr}")))?;
                let a = l.local_addr().map_err(host("NBD listener"))?;
                rt.spawn(async move { server.serve_tcp(l).await });
                DiskSource::Nbd { host: a.ip().to_string(), port: a.port() }
            }
            NbdListen::Unix => {
                let path = workdir.join("nbd.sock");
                let _ = std::fs::remove_file(&path);
                server.spawn_unix(&rt, &path).map_err(host(&format!("NBD socket {}", path.display())))?;
                DiskSource::NbdUnix { path }
            }
        };
        Ok(InstantVm { md, snapshot: None, warnings: Vec::new(), workdir: workdir.to_path_buf(), qmp: workdir.join("qmp.sock"), serial: workdir.join("serial.log"), source, rt: Some(rt), child: None })
    }

    /// Starts QEMU on the exports, in its own process group (a Ctrl-C
    /// meant for the caller must not reach the guest).
    pub fn boot(&mut self, o: &BootOptions) -> Result<(), InstantError> {
        let _ = std::fs::remove_file(&self.qmp);
        let plan = BootPlan {
            accel: o.accel.clone(),
            source: self.source.clone(),
            net: o.net.clone(),
            qmp: self.qmp.clone(),
            serial: self.serial.clone(),
            name: o.name.clone(),
            paused: o.paused,
            video: o.video,
            uefi: UefiFirmware::ovmf_in(&self.workdir),
        };
        if self.md.firmware == lifeboat_vm::Firmware::Uefi {
            plan.uefi.prepare().map_err(|e| InstantError::Host(e.to_string()))?;
        }
        let mut c = Command::new("qemu-system-x86_64");
        c.args(qemu_args(&self.md, &plan).map_err(|e| InstantError::Snapshot(e.to_string()))?);
        c.arg("-pidfile").arg(self.workdir.join(PID_FILE));
        c.args(&o.extra_args);
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        let log_path = self.workdir.join("qemu.log");
        let log = std::fs::File::create(&log_path).map_err(host(&format!("creating {}", log_path.display())))?;
        c.stdin(Stdio::null()).stdout(log.try_clone().map_err(host("QEMU's log"))?).stderr(log);
        self.child = Some(c.spawn().map_err(host("cannot start qemu-system-x86_64"))?);
        Ok(())
    }

    /// Waits until QEMU's monitor answers; returns the run state
    /// (`running`, `prelaunch` when paused, ...).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<String, InstantError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((st, last)) = self.exited() {
                return Err(InstantError::Boot(format!("QEMU exited ({st}): {last}; its output: {}", self.workdir.join("qemu.log").display())));
            }
            if let Ok(mut q) = Qmp::connect(&self.qmp) {
                return crate::inventory::run_state(&mut q).map_err(|e| InstantError::Boot(e.to_string()));
            }
            if Instant::now() > deadline {
                return Err(InstantError::Boot(format!("QEMU did not open its monitor {} within {} s", self.qmp.display(), timeout.as_secs())));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// QEMU's exit status and the last line it said, once it has exited.
    pub fn exited(&mut self) -> Option<(ExitStatus, String)> {
        let st = self.child.as_mut()?.try_wait().ok()??;
        let said = std::fs::read_to_string(self.workdir.join("qemu.log")).unwrap_or_default();
        Some((st, said.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_string()))
    }

    /// QEMU's process id: `None` before [`InstantVm::boot`] and after
    /// [`InstantVm::stop`]; still `Some` if QEMU exited on its own.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the guest reads no disk over NBD any more.
    pub fn migrated(&self) -> bool {
        Qmp::connect(&self.qmp).and_then(|mut q| crate::migrate::nbd_disks(&mut q)).map(|d| d.is_empty()).unwrap_or(false)
    }

    /// Moves every disk the guest reads over NBD onto a new local image
    /// while the guest runs (`migrate::migrate_disk`); `target(id)` names
    /// each disk's image. Returns the images made.
    pub fn migrate_back(&mut self, target: &dyn Fn(&str) -> PathBuf, format: &str, progress: &dyn Fn(&str)) -> Result<Vec<PathBuf>, InstantError> {
        let mut q = Qmp::connect(&self.qmp).map_err(|e| InstantError::Boot(format!("the VM's monitor: {e}")))?;
        let disks = crate::migrate::nbd_disks(&mut q).map_err(|e| InstantError::Boot(e.to_string()))?;
        if disks.is_empty() {
            return Err(InstantError::Snapshot("the VM reads no disk over NBD: it was migrated already".into()));
        }
        let mut made = Vec::new();
        for (id, node, size) in disks {
            let img = target(&id);
            progress(&format!("migrating disk {id} ({size} bytes) to {}", img.display()));
            crate::migrate::migrate_disk(&mut q, &node, size, &img, format).map_err(|e| InstantError::Boot(format!("disk {id}: {e}")))?;
            made.push(img);
        }
        Ok(made)
    }

    /// After a migration back: stops serving the disks and leaves QEMU
    /// running as an ordinary VM; the work directory keeps its monitor
    /// socket and logs (marked so no sweep takes it) but loses the
    /// overlays. Returns QEMU's pid.
    pub fn release(mut self) -> Option<u32> {
        let _ = std::fs::write(self.workdir.join(MIGRATED_MARKER), b"");
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        for d in &self.md.disks {
            let _ = std::fs::remove_file(self.workdir.join(format!("{}.overlay", d.id)));
        }
        let child = self.child.take()?;
        let pid = child.id();
        // Reap it whenever it ends, so no zombie stays behind.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Some(pid)
    }

    /// Powers the VM off (QEMU killed: its disks are throw-away overlays)
    /// and closes the exports; the work directory stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }

    /// `stop`, then removes the work directory and its overlays.
    pub fn discard(mut self) {
        self.stop();
        if let Err(e) = std::fs::remove_dir_all(&self.workdir) {
            tracing::warn!("removing {}: {e}", self.workdir.display());
        }
    }
}

impl Drop for InstantVm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes instant-restore work directories under `root` whose owner is
/// gone (a daemon killed with its VMs running): their QEMU, found by its
/// pid file and checked to be a QEMU of that directory, is killed. A
/// directory marked `migrated` belongs to a VM that runs on its own
/// disks and is left alone. Returns the directories removed.
pub fn sweep_stale(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else { return out };
    for e in rd.flatten() {
        let dir = e.path();
        if !dir.is_dir() || dir.join(MIGRATED_MARKER).exists() {
            continue;
        }
        if let Some(pid) = std::fs::read_to_string(dir.join(PID_FILE)).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            // Its own files are under `<dir>/`: the slash keeps `/x/a`
            // from matching a QEMU of `/x/ab`.
            let own = format!("{}/", dir.to_string_lossy());
            if cmdline.contains("qemu-system") && cmdline.contains(&own) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                // Until it is gone it may hold the overlays open.
                for _ in 0..50 {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            out.push(dir);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_spares_migrated_and_kills_only_its_own_qemu() {
        let root = tempfile::tempdir().unwrap();
        let stale = root.path().join("a");
        let migrated = root.path().join("b");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::create_dir_all(&migrated).unwrap();
        std::fs::write(migrated.join(MIGRATED_MARKER), b"").unwrap();
        // A live process that is not a QEMU of this directory: never killed.
        let mut other = Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(stale.join(PID_FILE), other.id().to_string()).unwrap();
        let swept = sweep_stale(root.path());
        assert_eq!(swept, vec![stale.clone()]);
        assert!(!stale.exists() && migrated.exists());
        assert!(other.try_wait().unwrap().is_none(), "an unrelated process was killed");
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
