//! One verification run: boot backups in a fresh lab network straight
//! from their instant-restore exports, probe them, shut them down, and
//! report; nothing of the run survives it.
//!
//! Per VM, in order: boot (QEMU runs the backed-up hardware, its disks
//! read over NBD on a unix socket with a throw-away copy-on-write
//! overlay) -> ping (ICMP from the lab's probe address) -> heartbeat (a
//! line on the `org.lifeboat.heartbeat` virtio-serial port, or qemu-ga
//! answering `guest-ping`) -> screenshot (QMP `screendump`, judged by
//! `screen.rs`) -> scripts (run inside the lab namespace with the VM's
//! address in the environment) -> shutdown. The VMs of one run form an
//! application group: they boot in the given order, each after its
//! delay, and are probed side by side.

use crate::net::{sweep_stale, LabNetwork, NetSpec};
use crate::report::{LabReport, Outcome, Step, VmReport};
use crate::screen::Screen;
use crate::LabError;
use chrono::Utc;
use lifeboat_qemu::{Accel, BootPlan, DiskSource, GuestAgent, NetMode, Qmp, UefiFirmware};
use lifeboat_store::Datastore;
use serde_json::json;
use std::io::BufRead;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a blank screen is looked at again before the screenshot
/// probe fails.
const SCREEN_SETTLE: Duration = Duration::from_secs(10);

/// Which probes run (`--probe ping,heartbeat,screenshot,script=PATH`).
/// The default runs ping, heartbeat and screenshot; parsed from text,
/// only the probes named run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probes {
    /// ICMP echo from the lab's probe address to the VM's address (learned
    /// from qemu-ga or the lab's DHCP and neighbour tables when none is
    /// given), until it answers or the boot timeout ends.
    pub ping: bool,
    /// A line starting with `heartbeat` on the `org.lifeboat.heartbeat`
    /// virtio-serial port, or qemu-ga answering `guest-ping`.
    pub heartbeat: bool,
    /// A QMP `screendump`, judged by [`crate::screen`]: not blank, not
    /// still the firmware's screen, no boot failure in VGA text mode.
    pub screenshot: bool,
    /// Programs run inside the lab namespace after the other probes, at
    /// most 300 s each; exit status 0 passes. They get `LIFEBOAT_LAB_VM`,
    /// `LIFEBOAT_LAB_SNAPSHOT`, `LIFEBOAT_LAB_NETNS` and, when known,
    /// `LIFEBOAT_LAB_IP` in the environment.
    pub scripts: Vec<PathBuf>,
}

impl Default for Probes {
    fn default() -> Self {
        Probes { ping: true, heartbeat: true, screenshot: true, scripts: Vec::new() }
    }
}

impl std::str::FromStr for Probes {
    type Err = String;
    fn from_str(s: &str) -> Result<Probes, String> {
        let mut p = Probes { ping: false, heartbeat: false, screenshot: false, scripts: Vec::new() };
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item {
                "ping" => p.ping = true,
                "heartbeat" => p.heartbeat = true,
                "screenshot" => p.screenshot = true,
                s if s.starts_with("script=") && s.len() > 7 => p.scripts.push(PathBuf::from(&s[7..])),
                other => return Err(format!("probe {other:?}: expected ping, heartbeat, screenshot or script=PATH")),
            }
        }
        Ok(p)
    }
}

/// One VM of the run's group.
#[derive(Clone, Debug)]
pub struct LabVm {
    /// Snapshot id, prefix or `latest`.
    pub snapshot: String,
    /// The guest's address in the lab (`ADDR/PREFIX`), for ping and
    /// scripts, the default probe address and the DHCP lease. `None`: it is
    /// learned at run time (qemu-ga, DHCP leases, neighbour table).
    pub ip: Option<String>,
    /// Wait this long after the previous VM's boot before booting this one
    /// (ignored for the first VM).
    pub delay: Duration,
}

/// Everything one verification run needs: which backups, which probes,
/// the lab network, and where the run's files go.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Names the namespace (`lblab-<id>`) and the report; 1 to 24 letters,
    /// digits or `-`.
    pub lab_id: String,
    /// The VMs to boot, in boot order; at least one.
    pub vms: Vec<LabVm>,
    /// The probes run on every VM that booted.
    pub probes: Probes,
    /// How long a guest may take from power-on to answering, counted from
    /// QEMU's start: the address search, ping and heartbeat wait until
    /// then (the heartbeat at least 10 s more).
    pub boot_timeout: Duration,
    /// Overlays, sockets, logs of the run: created, and removed as a whole
    /// at its end (give a directory of the run's own).
    pub workdir: PathBuf,
    /// Where screenshots are kept (the report's directory).
    pub report_dir: PathBuf,
    /// Markers of running labs, for `sweep_stale` (survives the process).
    pub markers: PathBuf,
    /// The QEMU accelerator asked for; `Auto` takes KVM when usable, else
    /// TCG (the choice lands in [`LabReport::accelerator`]).
    pub accel: Accel,
    /// The probes' addresses on the lab bridge (`ADDR/PREFIX`). Empty: one
    /// per guest subnet, the highest host address no guest uses (and
    /// `10.0.2.2/24` when DHCP is on and no guest address is given).
    pub probe_addrs: Vec<String>,
    /// Production address -> lab address, for probes and scripts.
    pub masquerade: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Names the lab's DNS answers.
    pub dns: Vec<(String, Ipv4Addr)>,
    /// Serve DHCP: each VM with an address gets it for its first NIC's MAC.
    pub dhcp: bool,
    /// Set to cut the run short: the delays between boots and the probes'
    /// waits end at once (so pings and heartbeats then fail). Every VM is
    /// still booted, shut down and reported, and scripts still run.
    pub cancel: Arc<AtomicBool>,
}

struct Running {
    name: String,
    snapshot: String,
    ip: Option<String>,
    /// The VM's NIC MACs (lower case), to find its address in the lab.
    macs: Vec<String>,
    dir: PathBuf,
    /// Its unix sockets (NBD, QMP, heartbeat, qemu-ga): short paths on
    /// tmpfs, whatever the datastore's path (see [`socket_dir`]).
    socks: PathBuf,
    qemu: Option<Child>,
    report: VmReport,
    firmware: Option<Screen>,
    /// When the VM was powered on: the boot timeout counts from here.
    powered: Instant,
    /// The run's cancel flag: a step that fails once it is set was cut
    /// short, and is recorded as skipped.
    cancel: Arc<AtomicBool>,
}

impl Running {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn push(&mut self, name: &str, outcome: Outcome, started: chrono::DateTime<Utc>, detail: impl Into<String>) {
        let mut detail = detail.into();
        let outcome = if outcome == Outcome::Fail && self.cancelled() {
            detail = format!("the run was cancelled ({detail})");
            Outcome::Skip
        } else {
            outcome
        };
        if outcome == Outcome::Skip && self.cancelled() {
            self.report.passed = false;
        }
        self.report.steps.push(Step { name: name.into(), outcome, started, ended: Utc::now(), detail });
        if outcome == Outcome::Fail {
            self.report.passed = false;
        }
    }
}

/// The highest host address of `addr/prefix`'s subnet that is not taken,
/// as `ADDR/PREFIX`; `None` when `guest` has no prefix of 1 to 30 or the
/// subnet is full.
pub fn default_probe_addr(guest: &str, taken: &[Ipv4Addr]) -> Option<String> {
    let (a, len) = guest.split_once('/')?;
    let a: Ipv4Addr = a.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| (1..=30).contains(l))?;
    let mask = u32::MAX << (32 - len);
    let net = u32::from(a) & mask;
    let broadcast = net | !mask;
    (net + 1..broadcast).rev().map(Ipv4Addr::from).find(|c| !taken.contains(c)).map(|c| format!("{c}/{len}"))
}

fn addr_of(ip: &str) -> &str {
    ip.split('/').next().unwrap_or(ip)
}

/// Runs one verification. Errors are for runs that cannot start (a
/// snapshot that does not exist, no permission for namespaces); a VM
/// that does not boot is a failed step in the report, never an error.
pub fn verify(ds: Arc<Datastore>, o: &VerifyOptions) -> Result<LabReport, LabError> {
    for stale in sweep_stale(&o.markers) {
        tracing::warn!("removed the lab network {stale} of a run that did not finish");
    }
    if o.vms.is_empty() {
        return Err(LabError::Invalid("no VM to verify".into()));
    }
    let started = Utc::now();
    let accel = lifeboat_qemu::accel::choose(o.accel);
    let mut probe_addrs = o.probe_addrs.clone();
    if probe_addrs.is_empty() {
        let taken: Vec<Ipv4Addr> = o.vms.iter().filter_map(|v| addr_of(v.ip.as_deref()?).parse().ok()).collect();
        for v in &o.vms {
            if let Some(p) = v.ip.as_deref().and_then(|ip| default_probe_addr(ip, &taken)) {
                if !probe_addrs.contains(&p) {
                    probe_addrs.push(p);
                }
            }
        }
    }
    std::fs::create_dir_all(&o.workdir).map_err(|e| LabError::Net(format!("creating {}: {e}", o.workdir.display())))?;
    std::fs::create_dir_all(&o.report_dir).map_err(|e| LabError::Net(format!("creating {}: {e}", o.report_dir.display())))?;
    let _cleanup = RemoveDir(o.workdir.clone());
    let _sockets = RemoveDir(socket_dir(o));
    if probe_addrs.is_empty() && o.dhcp {
        // Guests that only ask DHCP: the lab's default subnet.
        probe_addrs.push("10.0.2.2/24".into());
    }
    let dhcp = if o.dhcp {
        let mut hosts = Vec::new();
        for v in o.vms.iter() {
            let Some(ip) = v.ip.as_deref().and_then(|ip| addr_of(ip).parse::<Ipv4Addr>().ok()) else { continue };
            let (_, snap) = ds.resolve_snapshot(&v.snapshot).map_err(|e| LabError::Invalid(format!("snapshot {}: {e}", v.snapshot)))?;
            let md = lifeboat_qemu::load_vm(&ds, &snap).map_err(|e| LabError::Invalid(format!("snapshot {}: {e}", v.snapshot)))?.md;
            if let Some(n) = md.nics.first() {
                hosts.push((n.mac.to_ascii_lowercase(), ip));
            }
        }
        Some(hosts)
    } else {
        None
    };
    let spec = NetSpec { probe_addrs, masquerade: o.masquerade.clone(), dns: o.dns.clone(), dhcp };
    let mut lab = LabNetwork::create(&o.lab_id, &spec, &o.markers)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| LabError::Net(format!("runtime: {e}")))?;

    // Boot in order, each after its delay; a cancelled run boots no more.
    let cancelled = || o.cancel.load(Ordering::Relaxed);
    let mut vms: Vec<Running> = Vec::new();
    let mut not_booted: Vec<VmReport> = Vec::new();
    for (i, v) in o.vms.iter().enumerate() {
        if i > 0 && !v.delay.is_zero() {
            sleep_unless(&o.cancel, v.delay);
        }
        if cancelled() {
            not_booted.push(cancelled_before_boot(v));
            continue;
        }
        vms.push(boot(&ds, &rt, &mut lab, o, i, v, &accel)?);
    }
    // Probe side by side; each VM's steps are its own.
    std::thread::scope(|s| {
        for vm in vms.iter_mut() {
            s.spawn(|| probe(vm, &lab, o));
        }
    });
    for vm in vms.iter_mut() {
        shutdown(vm);
        vm.report.ended = Utc::now();
    }
    drop(rt);
    lab.remove()?;
    let vms: Vec<VmReport> = vms.into_iter().map(|v| v.report).chain(not_booted).collect();
    let cancelled = cancelled();
    Ok(LabReport { lab: o.lab_id.clone(), passed: !cancelled && vms.iter().all(|v| v.passed), started, ended: Utc::now(), accelerator: accel.reason.clone(), vms, cancelled })
}

/// Where a run's unix sockets go: beside its namespace's marker, on
/// tmpfs. A socket's path must fit in 108 bytes, which a work directory
/// inside a deeply placed datastore does not; the sweep of a killed run
/// removes this directory with the namespace.
fn socket_dir(o: &VerifyOptions) -> PathBuf {
    crate::net::socket_dir(&o.markers, &crate::net::netns_name(&o.lab_id))
}

/// The report of a VM a cancelled run never booted.
fn cancelled_before_boot(v: &LabVm) -> VmReport {
    let now = Utc::now();
    VmReport {
        vm: v.snapshot.clone(),
        snapshot: v.snapshot.clone(),
        ip: v.ip.clone(),
        passed: false,
        started: now,
        ended: now,
        steps: vec![Step { name: "boot".into(), outcome: Outcome::Skip, started: now, ended: now, detail: "the run was cancelled before this VM booted".into() }],
        screenshot: None,
        warnings: Vec::new(),
    }
}

fn sleep_unless(cancel: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !cancel.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn boot(ds: &Arc<Datastore>, rt: &tokio::runtime::Runtime, lab: &mut LabNetwork, o: &VerifyOptions, i: usize, v: &LabVm, accel: &lifeboat_qemu::AccelChoice) -> Result<Running, LabError> {
    let (sid, snap) = ds.resolve_snapshot(&v.snapshot).map_err(|e| LabError::Invalid(format!("snapshot {}: {e}", v.snapshot)))?;
    let loaded = lifeboat_qemu::load_vm(ds, &snap).map_err(|e| LabError::Invalid(format!("snapshot {}: {e}", sid.short())))?;
    let md = loaded.md.clone();
    let dir = o.workdir.join(format!("vm{i}"));
    std::fs::create_dir_all(&dir).map_err(|e| LabError::Net(format!("creating {}: {e}", dir.display())))?;
    let socks = socket_dir(o).join(format!("vm{i}"));
    std::fs::create_dir_all(&socks).map_err(|e| LabError::Net(format!("creating {}: {e}", socks.display())))?;
    let now = Utc::now();
    let mut r = Running {
        name: md.name.clone(),
        snapshot: sid.to_hex(),
        ip: v.ip.clone(),
        macs: md.nics.iter().map(|n| n.mac.to_ascii_lowercase()).collect(),
        dir: dir.clone(),
        socks: socks.clone(),
        qemu: None,
        report: VmReport {
            vm: md.name.clone(),
            snapshot: sid.to_hex(),
            ip: v.ip.clone(),
            passed: true,
            started: now,
            ended: now,
            steps: Vec::new(),
            screenshot: None,
            warnings: loaded.warnings.clone(),
        },
        firmware: None,
        powered: Instant::now(),
        cancel: o.cancel.clone(),
    };
    let t0 = Utc::now();
    // The disks: our NBD server on a unix socket, an overlay per disk.
    let server = lifeboat_qemu::instant_vm::serve_overlays(ds, &loaded, &dir).map_err(|e| LabError::Net(e.to_string()))?;
    let sock = socks.join("nbd.sock");
    server.spawn_unix(rt, &sock).map_err(|e| LabError::Net(format!("NBD socket {}: {e}", sock.display())))?;
    let mut taps = Vec::new();
    for j in 0..md.nics.len() {
        taps.push(lab.add_tap_named(&format!("v{i}n{j}"))?);
    }
    let plan = BootPlan {
        accel: accel.clone(),
        source: DiskSource::NbdUnix { path: sock },
        net: NetMode::Tap(format!("v{i}n%d")),
        qmp: socks.join("qmp.sock"),
        serial: dir.join("serial.log"),
        name: format!("{}-lab", md.name),
        paused: false,
        video: true,
        uefi: UefiFirmware::ovmf_in(&dir),
    };
    if md.firmware == lifeboat_vm::Firmware::Uefi {
        plan.uefi.prepare().map_err(|e| LabError::Net(e.to_string()))?;
    }
    let args = match lifeboat_qemu::qemu_args(&md, &plan) {
        Ok(a) => a,
        Err(e) => {
            r.push("boot", Outcome::Fail, t0, e.to_string());
            return Ok(r);
        }
    };
    let mut c = lab.command("qemu-system-x86_64");
    c.args(args);
    // The probes' channels: a heartbeat line and qemu-ga.
    c.args(["-device", "virtio-serial-pci,id=labser"]);
    c.arg("-chardev").arg(format!("socket,id=labhb,path={},server=on,wait=off", socks.join("hb.sock").display()));
    c.args(["-device", "virtserialport,bus=labser.0,chardev=labhb,name=org.lifeboat.heartbeat"]);
    c.arg("-chardev").arg(format!("socket,id=labqga,path={},server=on,wait=off", socks.join("qga.sock").display()));
    c.args(["-device", "virtserialport,bus=labser.0,chardev=labqga,name=org.qemu.guest_agent.0"]);
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let log = std::fs::File::create(dir.join("qemu.log")).map_err(|e| LabError::Net(e.to_string()))?;
    c.stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| LabError::Net(e.to_string()))?).stderr(log);
    r.powered = Instant::now();
    match c.spawn() {
        Ok(child) => r.qemu = Some(child),
        Err(e) => {
            r.push("boot", Outcome::Fail, t0, format!("cannot start QEMU: {e}"));
            return Ok(r);
        }
    }
    // Booted = QEMU runs the guest's CPUs; what the guest makes of it is
    // for the probes.
    let qmp = socks.join("qmp.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = r.qemu.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            break Err(format!("QEMU exited ({st}): {}", last_line(&dir.join("qemu.log"))));
        }
        if let Ok(mut q) = Qmp::connect(&qmp) {
            break lifeboat_qemu::inventory::run_state(&mut q).map_err(|e| e.to_string());
        }
        if Instant::now() > deadline {
            break Err("QEMU did not open its monitor within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    match status {
        Ok(s) if s == "running" => {
            r.push("boot", Outcome::Pass, t0, format!("QEMU runs the VM ({}, {} disks over NBD, {} NICs on the lab bridge)", accel.qemu_arg(), md.disks.len(), md.nics.len()));
            if o.probes.screenshot {
                r.firmware = firmware_screen(&qmp, &dir);
            }
        }
        Ok(s) => r.push("boot", Outcome::Fail, t0, format!("QEMU reports the VM {s}")),
        Err(e) => r.push("boot", Outcome::Fail, t0, e),
    }
    Ok(r)
}

fn last_line(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default().lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_string()
}

/// The first non-blank screen after power-on: what the firmware draws.
fn firmware_screen(qmp: &Path, dir: &Path) -> Option<Screen> {
    let p = dir.join("firmware.png");
    let end = Instant::now() + Duration::from_secs(8);
    while Instant::now() < end {
        if screendump(qmp, &p).is_ok() {
            if let Ok(s) = Screen::load_png(&p) {
                if s.dominant().1 < 0.999 {
                    return Some(s);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

fn screendump(qmp: &Path, to: &Path) -> Result<(), String> {
    let mut q = Qmp::connect(qmp).map_err(|e| e.to_string())?;
    q.execute("screendump", json!({ "filename": to.display().to_string(), "format": "png" })).map_err(|e| e.to_string())?;
    Ok(())
}

fn probe(vm: &mut Running, lab: &LabNetwork, o: &VerifyOptions) {
    let booted = vm.report.steps.first().is_some_and(|s| s.outcome == Outcome::Pass);
    let deadline = vm.powered + o.boot_timeout;
    let cancelled = || o.cancel.load(Ordering::Relaxed);
    let skip_all = |vm: &mut Running, why: &str| {
        for (on, name) in [(o.probes.ping, "ping"), (o.probes.heartbeat, "heartbeat"), (o.probes.screenshot, "screenshot")] {
            if on {
                vm.push(name, Outcome::Skip, Utc::now(), why);
            }
        }
    };
    if !booted {
        skip_all(vm, "the VM did not boot");
        return;
    }
    if vm.ip.is_none() && o.probes.ping {
        // No address in the lab definition: ask the guest agent, once the
        // guest is up enough to answer, or find its MAC in the lab's DHCP
        // leases and neighbour table.
        let t = Utc::now();
        let qga = vm.socks.join("qga.sock");
        while Instant::now() < deadline && !cancelled() {
            let found = GuestAgent::connect(&qga, Duration::from_secs(1)).ok().and_then(|mut a| guest_ipv4(&mut a)).map(|ip| (ip, "qemu-ga")).or_else(|| {
                let seen = lab.learned_addresses();
                let ip = seen.into_iter().find(|(mac, _)| vm.macs.contains(mac))?.1;
                let len = lab.probe_addrs().iter().filter_map(|p| p.split_once('/')).find_map(|(_, l)| l.parse::<u32>().ok()).unwrap_or(24);
                Some((format!("{ip}/{len}"), "the lab's DHCP leases and neighbour table"))
            });
            if let Some((ip, how)) = found {
                match ensure_probe_addr(lab, &ip) {
                    Ok(()) => {
                        vm.push("address", Outcome::Pass, t, format!("{ip} (from {how})"));
                        vm.report.ip = Some(ip.clone());
                        vm.ip = Some(ip);
                    }
                    Err(e) => vm.push("address", Outcome::Fail, t, format!("{ip} from {how}, but no probe address fits: {e}")),
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    if o.probes.ping {
        let t = Utc::now();
        match vm.ip.clone() {
            None => vm.push("ping", Outcome::Skip, t, "no address known for the VM (none in the lab definition, no answer from qemu-ga); give one with --ip"),
            Some(ip) => {
                let addr = addr_of(&ip).to_string();
                let mut ok = false;
                while Instant::now() < deadline && !cancelled() {
                    let st = lab.command("ping").args(["-c", "1", "-W", "1", "-n", &addr]).stdout(Stdio::null()).stderr(Stdio::null()).status();
                    if st.map(|s| s.success()).unwrap_or(false) {
                        ok = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                if ok {
                    vm.push("ping", Outcome::Pass, t, format!("{addr} answered ICMP echo in the lab"));
                } else {
                    vm.push("ping", Outcome::Fail, t, format!("{addr} did not answer ping within the boot timeout ({} s)", o.boot_timeout.as_secs()));
                }
            }
        }
    }
    if o.probes.heartbeat {
        let t = Utc::now();
        // At least a short window even when ping used up the boot time.
        let until = deadline.max(Instant::now() + Duration::from_secs(10));
        match heartbeat(&vm.socks, until, &cancelled) {
            Ok(how) => vm.push("heartbeat", Outcome::Pass, t, how),
            Err(why) => vm.push("heartbeat", Outcome::Fail, t, why),
        }
    }
    if o.probes.screenshot && cancelled() {
        vm.push("screenshot", Outcome::Skip, Utc::now(), "the run was cancelled");
    } else if o.probes.screenshot {
        let t = Utc::now();
        let file = format!("{}-{}.png", safe(&vm.name), &vm.snapshot[..8]);
        let path = o.report_dir.join(&file);
        // A guest repaints its console now and then (a getty clears tty1
        // before it prints its prompt, fbcon redraws on a mode switch), so
        // a blank screen is looked at again for a few seconds before it
        // fails the probe; a screen stuck on the firmware is not.
        let look_until = Instant::now() + SCREEN_SETTLE;
        let judged = loop {
            let r = screendump(&vm.socks.join("qmp.sock"), &path).and_then(|_| Screen::load_png(&path).map_err(|e| e.to_string())).map(|s| {
                let v = s.judge(vm.firmware.as_ref());
                (s, v)
            });
            match &r {
                Ok((_, v)) if !v.ok && v.firmware_left.is_none() && Instant::now() < look_until && !cancelled() => std::thread::sleep(Duration::from_secs(1)),
                _ => break r,
            }
        };
        match judged {
            Ok((s, v)) => {
                vm.report.screenshot = Some(file);
                let text = ((s.width, s.height) == crate::screen::TEXT_MODE).then(|| vga_text(&vm.socks, &vm.dir)).flatten();
                match text.as_deref().and_then(crate::screen::boot_failure) {
                    Some(line) if v.ok => vm.push("screenshot", Outcome::Fail, t, format!("the screen shows a firmware or boot loader failure: {line:?}")),
                    _ => vm.push("screenshot", if v.ok { Outcome::Pass } else { Outcome::Fail }, t, v.reason),
                }
            }
            Err(e) => vm.push("screenshot", Outcome::Fail, t, format!("no screenshot: {e}")),
        }
    }
    for script in &o.probes.scripts {
        let t = Utc::now();
        let name = format!("script:{}", script.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        if cancelled() {
            vm.push(&name, Outcome::Skip, t, "the run was cancelled");
            continue;
        }
        let mut c = lab.command(&script.display().to_string());
        c.env("LIFEBOAT_LAB_VM", &vm.name).env("LIFEBOAT_LAB_SNAPSHOT", &vm.snapshot).env("LIFEBOAT_LAB_NETNS", &lab.netns);
        if let Some(ip) = &vm.ip {
            c.env("LIFEBOAT_LAB_IP", addr_of(ip));
        }
        match run_with_timeout(c, Duration::from_secs(300)) {
            Ok((0, out)) => vm.push(&name, Outcome::Pass, t, out),
            Ok((code, out)) => vm.push(&name, Outcome::Fail, t, format!("exit {code}: {out}")),
            Err(e) => vm.push(&name, Outcome::Fail, t, e),
        }
    }
}

/// The guest's first global IPv4 address with its prefix, as qemu-ga
/// reports it (`guest-network-get-interfaces`).
fn guest_ipv4(a: &mut GuestAgent) -> Option<String> {
    let ifs = a.execute("guest-network-get-interfaces", json!({})).ok()?;
    ifs.as_array()?.iter().filter(|i| i["name"] != "lo").flat_map(|i| i["ip-addresses"].as_array().cloned().unwrap_or_default()).find_map(|a| {
        let ip: Ipv4Addr = a["ip-address"].as_str()?.parse().ok()?;
        (a["ip-address-type"] == "ipv4" && !ip.is_loopback() && !ip.is_link_local()).then(|| format!("{ip}/{}", a["prefix"].as_u64().unwrap_or(24)))
    })
}

/// Puts a probe address into `guest`'s subnet on the lab bridge unless
/// one is there.
fn ensure_probe_addr(lab: &LabNetwork, guest: &str) -> Result<(), LabError> {
    let g: Ipv4Addr = addr_of(guest).parse().map_err(|_| LabError::Invalid(format!("address {guest}")))?;
    let fits = lab.probe_addrs().iter().any(|p| {
        let (Some((a, l)), Ok(g)) = (p.split_once('/'), Ok::<_, ()>(g)) else { return false };
        let (Ok(a), Ok(l)) = (a.parse::<Ipv4Addr>(), l.parse::<u32>()) else { return false };
        let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
        u32::from(a) & mask == u32::from(g) & mask
    });
    if fits {
        return Ok(());
    }
    let p = default_probe_addr(guest, &[g]).ok_or_else(|| LabError::Invalid(format!("no free probe address in {guest}'s subnet")))?;
    lab.add_probe_addr(&p)
}

/// The VGA text buffer (physical 0xB8000) as text, read over QMP.
fn vga_text(socks: &Path, dir: &Path) -> Option<String> {
    let f = dir.join("vga-text.bin");
    let mut q = Qmp::connect(&socks.join("qmp.sock")).ok()?;
    q.execute("pmemsave", json!({ "val": 0xb8000u64, "size": 4000, "filename": f.display().to_string() })).ok()?;
    Some(crate::screen::text_of_vga(&std::fs::read(&f).ok()?))
}

fn safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

fn heartbeat(socks: &Path, until: Instant, cancelled: &dyn Fn() -> bool) -> Result<String, String> {
    let hb = socks.join("hb.sock");
    let qga = socks.join("qga.sock");
    while Instant::now() < until && !cancelled() {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(&hb) {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut line = String::new();
            if std::io::BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("heartbeat") {
                return Ok(format!("virtio-serial heartbeat: {}", line.trim()));
            }
        }
        if let Ok(mut a) = GuestAgent::connect(&qga, Duration::from_secs(1)) {
            if a.execute("guest-ping", json!({})).is_ok() {
                return Ok("qemu-ga answered guest-ping".into());
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err("no heartbeat line and no answer from qemu-ga within the boot timeout".into())
}

fn run_with_timeout(mut c: std::process::Command, limit: Duration) -> Result<(i32, String), String> {
    let out = std::env::temp_dir().join(format!("lifeboat-lab-script-{}-{}", std::process::id(), lifeboat_store::PackId::random().to_hex()));
    let f = std::fs::File::create(&out).map_err(|e| e.to_string())?;
    c.stdin(Stdio::null()).stdout(f.try_clone().map_err(|e| e.to_string())?).stderr(f);
    let mut child = c.spawn().map_err(|e| format!("cannot run the script: {e}"))?;
    let end = Instant::now() + limit;
    let code = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st.code().unwrap_or(-1);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&out);
            return Err(format!("the script ran longer than {} s", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    Ok((code, tail.into_iter().rev().collect::<Vec<_>>().join(" | ")))
}

fn shutdown(vm: &mut Running) {
    let Some(mut child) = vm.qemu.take() else { return };
    let t = Utc::now();
    if vm.cancelled() {
        // Nobody waits for a verdict: power off at once.
        let _ = child.kill();
        let _ = child.wait();
        vm.push("shutdown", Outcome::Skip, t, "the run was cancelled; the VM was stopped");
        return;
    }
    let qmp = vm.socks.join("qmp.sock");
    let _ = Qmp::connect(&qmp).and_then(|mut q| q.execute("system_powerdown", json!({})));
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            vm.push("shutdown", Outcome::Pass, t, "the guest powered off (ACPI)");
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    vm.push("shutdown", Outcome::Skip, t, "the guest did not power off within 20 s; stopped");
}

struct RemoveDir(PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_parse() {
        let p: Probes = "ping,script=/x/check.sh,screenshot".parse().unwrap();
        assert_eq!(p, Probes { ping: true, heartbeat: false, screenshot: true, scripts: vec!["/x/check.sh".into()] });
        assert!("pong".parse::<Probes>().is_err());
    }

    #[test]
    fn probe_address_avoids_guests() {
        assert_eq!(default_probe_addr("10.0.2.15/24", &[]).as_deref(), Some("10.0.2.254/24"));
        let taken = ["10.0.2.254".parse().unwrap()];
        assert_eq!(default_probe_addr("10.0.2.15/24", &taken).as_deref(), Some("10.0.2.253/24"));
        assert_eq!(default_probe_addr("10.0.2.15", &[]), None);
    }
}
