//! `lifeboat cdp ...`: continuous data protection of a running QEMU VM's
//! disks into journals in a datastore (`<datastore>/cdp/<vm>/`), and any
//! moment of them read back: served over NBD, restored as new images, or
//! rolled back onto the VM's own disks.

use crate::commands::open_datastore;
use crate::{ui, DatastoreArg};
use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;
use lifeboat_api_types::CdpBookmarkPolicy;
use lifeboat_cdp::capture::MirrorMode;
use lifeboat_cdp::restore::{copy_point, image_format, CopyMode};
use lifeboat_cdp::{open_journal, open_or_create, time_of, BookmarkClock, Journal, ProtectedVm, Replica, ReplicaOptions};
use lifeboat_nbd::{Export, Server, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Subcommand)]
pub enum CdpCmd {
    /// Protect a running QEMU VM: copy each disk into a journal in the
    /// datastore, then journal every write it makes, until Ctrl-C/SIGTERM
    Protect {
        #[command(flatten)]
        ds: DatastoreArg,
        /// The VM's QMP socket
        #[arg(long, value_name = "SOCK")]
        qmp: PathBuf,
        /// A disk to protect (its device id; repeat; default: every disk)
        #[arg(long = "disk", value_name = "ID")]
        disks: Vec<String>,
        /// sync: a guest write completes only once the journal has it (so
        /// the protected host's death loses nothing the guest saw
        /// complete); async: the guest does not wait, dirty blocks follow.
        /// The journal is made durable when the guest flushes
        #[arg(long, default_value = "sync")]
        mode: MirrorMode,
        /// Seconds the initial copy of each disk may take
        #[arg(long, default_value_t = 3600)]
        copy_timeout: u64,
        #[command(flatten)]
        bookmarks: BookmarkArgs,
    },
    /// A protected VM's disks: the journal's time range, the protection
    /// sessions (where every moment is known) and the bookmarks
    Points {
        #[command(flatten)]
        ds: DatastoreArg,
        /// The VM's name
        vm: String,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Name a moment of a protected VM (default: now)
    Bookmark {
        #[command(flatten)]
        ds: DatastoreArg,
        /// The VM's name
        vm: String,
        /// The bookmark's name
        name: String,
        /// The moment, RFC 3339 with fractions of a second
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Serve a protected VM's disks as they were at a moment over NBD,
    /// read-only, until Ctrl-C; prints an nbd:// URI per disk
    Export {
        #[command(flatten)]
        ds: DatastoreArg,
        /// The VM's name
        vm: String,
        /// The moment: RFC 3339 with fractions of a second, a bookmark, or "latest"
        #[arg(long, value_name = "TIME|BOOKMARK")]
        at: String,
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:10809")]
        listen: String,
    },
    /// Write a protected VM's disks as they were at a moment into new
    /// image files `DIR/<disk>.<format>`
    Restore {
        #[command(flatten)]
        ds: DatastoreArg,
        /// The VM's name
        vm: String,
        /// The moment: RFC 3339 with fractions of a second, a bookmark, or "latest"
        #[arg(long, value_name = "TIME|BOOKMARK")]
        at: String,
        /// Directory for the images (made if missing)
        dir: PathBuf,
        /// raw or qcow2
        #[arg(long, default_value = "raw")]
        format: String,
    },
    /// Boot a protected VM as it was at a moment (take over for a VM that
    /// died, or try a point out): its disks are served from the journal
    /// through copy-on-write overlays (the journal is never written) and
    /// QEMU starts with the hardware the protection recorded. Runs until
    /// Ctrl-C or until the VM stops
    Boot {
        #[command(flatten)]
        ds: DatastoreArg,
        /// The VM's name
        vm: String,
        /// The moment: RFC 3339 with fractions of a second, a bookmark, or
        /// "latest" (the last moment every disk is known at)
        #[arg(long, value_name = "TIME|BOOKMARK|latest", default_value = "latest")]
        at: String,
        /// Where overlays, QMP socket and serial log go (default: under the datastore's tmp/)
        #[arg(long, value_name = "DIR")]
        workdir: Option<PathBuf>,
        /// NICs: "user" (QEMU user networking), "none", or "tap:IFNAME"
        #[arg(long, default_value = "none")]
        net: String,
        /// Accelerator: auto, kvm or tcg
        #[arg(long, value_name = "auto|kvm|tcg", default_value = "auto")]
        accel: lifeboat_qemu::Accel,
        /// Start the VM with its CPUs stopped (resume it over QMP with `cont`)
        #[arg(long)]
        paused: bool,
        /// Extra QEMU arguments (repeatable)
        #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
        qemu_args: Vec<String>,
    },
    /// Rewind a protected VM's own disks to a moment, in place. The VM
    /// must be stopped (its image lock is checked) and its protection too
    Rollback {
        #[command(flatten)]
        ds: DatastoreArg,
        /// The VM's name
        vm: String,
        /// The moment: RFC 3339 with fractions of a second, a bookmark, or "latest"
        #[arg(long, value_name = "TIME|BOOKMARK")]
        at: String,
        /// A disk and its image file, ID=PATH (repeat for each disk to rewind)
        #[arg(long = "disk", value_name = "ID=PATH", required = true)]
        disks: Vec<String>,
    },
}

/// The bookmarks `cdp protect` makes by itself.
#[derive(clap::Args)]
pub struct BookmarkArgs {
    /// Bookmark every N seconds
    #[arg(long, value_name = "SECS")]
    bookmark_every: Option<u64>,
    /// Bookmark each day at HH:MM, UTC (repeat for several)
    #[arg(long, value_name = "HH:MM")]
    bookmark_daily: Vec<String>,
    /// Watch this log file: a bookmark for each line appended to it that
    /// matches --bookmark-regex (e.g. a database's checkpoint line)
    #[arg(long, value_name = "FILE", requires = "bookmark_regex")]
    bookmark_log: Option<PathBuf>,
    /// The regular expression for --bookmark-log's lines
    #[arg(long, value_name = "REGEX", requires = "bookmark_log")]
    bookmark_regex: Option<String>,
    /// Freeze the guest's file systems through its agent for each of
    /// these bookmarks (application-consistent points); needs --agent
    #[arg(long, requires = "agent")]
    consistent: bool,
    /// The guest agent's (qemu-ga) socket of the VM
    #[arg(long, value_name = "SOCK")]
    agent: Option<PathBuf>,
}

impl BookmarkArgs {
    fn policy(&self) -> CdpBookmarkPolicy {
        CdpBookmarkPolicy {
            every_seconds: self.bookmark_every,
            daily: self.bookmark_daily.clone(),
            log_file: self.bookmark_log.as_ref().map(|p| p.display().to_string()),
            log_regex: self.bookmark_regex.clone(),
            consistent: self.consistent,
        }
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn parse_time(s: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(s).with_context(|| format!("{s:?}: give a time in RFC 3339, e.g. 2026-12-05T10:30:00.250Z"))?.with_timezone(&Utc))
}

fn serve<F: FnOnce(&tokio::runtime::Runtime) -> anyhow::Result<()>>(f: F) -> anyhow::Result<tokio::runtime::Runtime> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    f(&rt)?;
    Ok(rt)
}

fn protected_vm(store: &lifeboat_store::Datastore, ds: &DatastoreArg, vm: &str) -> anyhow::Result<ProtectedVm> {
    let pvm = ProtectedVm::at(&store.root().join("cdp"), vm)?;
    if !pvm.exists() {
        anyhow::bail!("VM {vm} is not protected in {}", ds.datastore.display());
    }
    Ok(pvm)
}

pub fn run(cmd: CdpCmd) -> anyhow::Result<u8> {
    match cmd {
        CdpCmd::Protect { ds, qmp, disks, mode, copy_timeout, bookmarks } => protect(&ds, &qmp, &disks, mode, Duration::from_secs(copy_timeout), &bookmarks),
        CdpCmd::Points { ds, vm, json } => {
            let store = open_datastore(&ds)?;
            let pvm = ProtectedVm::at(&store.root().join("cdp"), &vm)?;
            if !pvm.exists() {
                anyhow::bail!("VM {vm} is not protected in {}: start `lifeboat cdp protect`", ds.datastore.display());
            }
            let info = pvm.info(&ds.datastore.display().to_string(), &|_, dir| open_journal(dir, &vm).map(Arc::new))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
                return Ok(0);
            }
            println!("VM {vm}");
            for d in &info.disks {
                println!(
                    "  disk {}: {}, journal {} .. {}",
                    d.disk,
                    d.size.map(ui::bytes).unwrap_or_else(|| "?".into()),
                    d.first_write.map(stamp).unwrap_or("-".into()),
                    d.last_write.map(stamp).unwrap_or("-".into())
                );
                if let Some(n) = &d.note {
                    println!("    {n}");
                }
                for s in &d.sessions {
                    let mode = s.mode.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
                    println!("    protected from {} to {}{mode}", stamp(s.ready), s.ended.map(stamp).unwrap_or_else(|| "(running, or killed: up to the last write)".into()));
                }
            }
            for b in &info.bookmarks {
                let consistent = if b.consistent { ", application-consistent" } else { "" };
                let detail = b.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
                println!("  bookmark {} at {} ({}{consistent}){detail}", b.name, stamp(b.time), b.kind);
            }
            Ok(0)
        }
        CdpCmd::Bookmark { ds, vm, name, at } => {
            let store = open_datastore(&ds)?;
            let pvm = ProtectedVm::at(&store.root().join("cdp"), &vm)?;
            let t = at.as_deref().map(parse_time).transpose()?.unwrap_or_else(Utc::now);
            let b = pvm.add_bookmark(&name, t)?;
            println!("bookmark {} of {vm} at {}", b.name, stamp(b.time));
            Ok(0)
        }
        CdpCmd::Restore { ds, vm, at, dir, format } => {
            if !["raw", "qcow2"].contains(&format.as_str()) {
                anyhow::bail!("--format {format}: use raw or qcow2");
            }
            let store = open_datastore(&ds)?;
            let pvm = protected_vm(&store, &ds, &vm)?;
            let journals = open_journals(&pvm)?;
            let t = moment(&pvm, &at, &journals)?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (d, j) in journals {
                let point = pvm.point(&d, j, t, false)?;
                let out = dir.join(format!("{d}.{format}"));
                eprintln!("writing disk {d} as it was at {} to {}...", stamp(t), out.display());
                copy_point(point, &d, &out, &format, CopyMode::Create)?;
                println!("{}", out.display());
            }
            Ok(0)
        }
        CdpCmd::Rollback { ds, vm, at, disks } => {
            let store = open_datastore(&ds)?;
            let pvm = protected_vm(&store, &ds, &vm)?;
            let journals = open_journals(&pvm)?;
            let t = moment(&pvm, &at, &journals)?;
            let mut plan = Vec::new();
            for spec in &disks {
                let (id, path) = spec.split_once('=').with_context(|| format!("--disk {spec}: give ID=PATH"))?;
                let Some((_, j)) = journals.iter().find(|(d, _)| d == id) else {
                    anyhow::bail!("{vm} has no protected disk {id:?} (its disks: {})", pvm.disks().join(", "));
                };
                // Every moment is checked before any disk is touched.
                let j = j.clone();
                plan.push((id.to_string(), PathBuf::from(path), pvm.point(id, j, t, false)?));
            }
            for (id, path, point) in plan {
                let format = image_format(&path)?;
                eprintln!("rewinding disk {id} ({}, {format}) to {}...", path.display(), stamp(t));
                copy_point(point, &id, &path, &format, CopyMode::Overwrite)?;
                println!("disk {id}: {} is as it was at {}", path.display(), stamp(t));
            }
            Ok(0)
        }
        CdpCmd::Boot { ds, vm, at, workdir, net, accel, paused, qemu_args } => {
            let net: lifeboat_qemu::NetMode = net.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let store = open_datastore(&ds)?;
            let pvm = protected_vm(&store, &ds, &vm)?;
            boot_moment(&store, &pvm, &at, workdir, net, accel, paused, qemu_args)
        }
        CdpCmd::Export { ds, vm, at, listen } => {
            let store = open_datastore(&ds)?;
            let pvm = protected_vm(&store, &ds, &vm)?;
            let journals = open_journals(&pvm)?;
            let t = moment(&pvm, &at, &journals)?;
            let server = Server::new(ServerConfig::default());
            for (d, j) in journals {
                server.add_export(Export::new(d.clone(), Arc::new(pvm.point(&d, j, t, false)?)).with_description(format!("{vm} disk {d} at {}", stamp(t))));
            }
            let listener = std::net::TcpListener::bind(&listen).with_context(|| format!("listening on {listen}"))?;
            listener.set_nonblocking(true)?;
            let addr = listener.local_addr()?;
            let s = server.clone();
            let _rt = serve(|rt| {
                let l = {
                    let _g = rt.enter();
                    tokio::net::TcpListener::from_std(listener)?
                };
                rt.spawn(async move { s.serve_tcp(l).await });
                Ok(())
            })?;
            eprintln!("serving {vm} as it was at {} (read-only); Ctrl-C to stop", stamp(t));
            for d in server.export_names() {
                println!("nbd://{addr}/{d}");
            }
            let cancel = Arc::new(AtomicBool::new(false));
            ui::install_cancel_handler(&cancel);
            while !cancel.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(0)
        }
    }
}

/// Every protected disk's journal, by disk id.
fn open_journals(pvm: &ProtectedVm) -> anyhow::Result<Vec<(String, Arc<Journal>)>> {
    pvm.disks().into_iter().map(|d| Ok((d.clone(), Arc::new(open_journal(&pvm.journal_dir(&d)?, &pvm.name)?)))).collect()
}

/// The moment `at` names, `latest` included (from `journals`).
fn moment(pvm: &ProtectedVm, at: &str, journals: &[(String, Arc<Journal>)]) -> anyhow::Result<DateTime<Utc>> {
    if at != "latest" {
        return Ok(pvm.resolve_time(at)?);
    }
    let last_write = |d: &str| journals.iter().find(|(id, _)| id == d).and_then(|(_, j)| j.range()).map(|r| time_of(r.1));
    Ok(pvm.latest(&last_write)?)
}

#[allow(clippy::too_many_arguments)]
fn boot_moment(
    store: &lifeboat_store::Datastore,
    pvm: &ProtectedVm,
    at: &str,
    workdir: Option<PathBuf>,
    net: lifeboat_qemu::NetMode,
    accel: lifeboat_qemu::Accel,
    paused: bool,
    qemu_args: Vec<String>,
) -> anyhow::Result<u8> {
    use lifeboat_qemu::{BootOptions, InstantVm, NbdListen};
    let md = pvm.hardware()?;
    let mut journals = open_journals(pvm)?;
    let t = moment(pvm, at, &journals)?;
    if let Some(d) = md.disks.iter().find(|d| !journals.iter().any(|(id, _)| *id == d.id)) {
        anyhow::bail!("disk {} of {} is not protected: booting a moment needs every disk (protect them all: `cdp protect` without --disk)", d.id, pvm.name);
    }
    let work = workdir.unwrap_or_else(|| store.root().join("tmp").join(format!("cdp-boot-{}-{}", pvm.name, t.format("%Y%m%dT%H%M%S%.3fZ"))));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let server = Server::new(ServerConfig::default());
    for d in &md.disks {
        let j = journals.remove(journals.iter().position(|(id, _)| *id == d.id).expect("checked above")).1;
        let point = pvm.point(&d.id, j, t, false)?;
        let p = work.join(format!("{}.overlay", d.id));
        let overlay = lifeboat_nbd::CowOverlay::open(point, &p).with_context(|| format!("overlay {} for disk {}", p.display(), d.id))?;
        server.add_export(Export::new(d.id.clone(), Arc::new(overlay)));
    }
    let mut vm = InstantVm::serve(md, server, &NbdListen::Unix, &work)?;
    let accel = lifeboat_qemu::accel::choose(accel);
    eprintln!("accelerator: {}", accel.reason);
    let name = format!("{}-at-{}", pvm.name, t.format("%Y%m%dT%H%M%S%.3fZ"));
    vm.boot(&BootOptions { name, accel, net, paused, video: false, extra_args: qemu_args })?;
    println!("VM {} booting as it was at {}: QMP {}, serial log {}", pvm.name, stamp(t), vm.qmp.display(), vm.serial.display());
    let cancel = Arc::new(AtomicBool::new(false));
    ui::install_cancel_handler(&cancel);
    loop {
        if let Some((st, last)) = vm.exited() {
            if !st.success() {
                anyhow::bail!("QEMU exited ({st}): {last}; the overlays stay in {}; QEMU's output: {}", work.display(), work.join("qemu.log").display());
            }
            eprintln!("VM stopped ({st}); the overlays stay in {}", work.display());
            return Ok(0);
        }
        if cancel.load(Ordering::Relaxed) {
            vm.stop();
            eprintln!("stopped the VM; the overlays stay in {}", work.display());
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn protect(ds: &DatastoreArg, qmp: &Path, disks: &[String], mode: MirrorMode, copy_timeout: Duration, bookmarks: &BookmarkArgs) -> anyhow::Result<u8> {
    // A policy that cannot work is refused before the VM is touched.
    let mut clock = BookmarkClock::new(&bookmarks.policy(), Utc::now())?;
    let store = open_datastore(ds)?;
    let cancel = Arc::new(AtomicBool::new(false));
    ui::install_cancel_handler(&cancel);
    let opts = ReplicaOptions { disks: disks.to_vec(), mode, copy_timeout };
    let mut replica = Replica::start(&store.root().join("cdp"), qmp, &opts, &open_or_create, &|m| eprintln!("{m}..."))?;
    let name = replica.vm().name.clone();
    println!(
        "protecting {name}: {} ({} mode); Ctrl-C to stop",
        replica.journals().iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(", "),
        if mode == MirrorMode::Sync { "sync" } else { "async" }
    );
    let failed = replica
        .watch(&cancel, &mut clock, bookmarks.agent.as_deref(), &|m| eprintln!("{m}"), &mut |b| {
            println!("bookmark {} at {}{}", b.name, stamp(b.time), if b.consistent { " (application-consistent)" } else { "" })
        })
        .err();
    let ranges = replica.stop();
    if let Some(e) = failed {
        anyhow::bail!("protection of {name} stopped: {e}");
    }
    for (id, range) in ranges? {
        if let Some((a, b)) = range {
            println!("disk {id}: journal {} .. {}", stamp(time_of(a)), stamp(time_of(b)));
        }
    }
    println!("stopped protecting {name} at {}", stamp(Utc::now()));
    Ok(0)
}
