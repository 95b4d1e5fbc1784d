//! `lifeboat cdp ...`: continuous data protection of a running QEMU VM's
//! disks into journals in a datastore (`<datastore>/cdp/<vm>/`), and any
//! moment of them read back.

use crate::commands::open_datastore;
use crate::{ui, DatastoreArg};
use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;
use lifeboat_cdp::capture::{Capture, MirrorMode};
use lifeboat_cdp::{ns_of, time_of, CdpError, Journal, JournalOptions, JournalTarget, PointInTime, ProtectedVm, SyncPolicy};
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
        /// The moment: RFC 3339 with fractions of a second, or a bookmark
        #[arg(long, value_name = "TIME|BOOKMARK")]
        at: String,
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:10809")]
        listen: String,
    },
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn parse_time(s: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(s).with_context(|| format!("{s:?}: give a time in RFC 3339, e.g. 2026-12-05T10:30:00.250Z"))?.with_timezone(&Utc))
}

/// A journal another process holds (a running `cdp protect`) says so.
fn open_journal(dir: &Path, vm: &str) -> anyhow::Result<Journal> {
    Journal::open(dir).map_err(|e| match e {
        CdpError::Index { message, .. } if message.contains("lock") => anyhow::anyhow!("the journal of {vm} ({}) is in use: a `lifeboat cdp protect` of it is running; stop it first", dir.display()),
        e => e.into(),
    })
}

fn serve<F: FnOnce(&tokio::runtime::Runtime) -> anyhow::Result<()>>(f: F) -> anyhow::Result<tokio::runtime::Runtime> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    f(&rt)?;
    Ok(rt)
}

pub fn run(cmd: CdpCmd) -> anyhow::Result<u8> {
    match cmd {
        CdpCmd::Protect { ds, qmp, disks, mode, copy_timeout } => protect(&ds, &qmp, &disks, mode, Duration::from_secs(copy_timeout)),
        CdpCmd::Points { ds, vm, json } => {
            let store = open_datastore(&ds)?;
            let pvm = ProtectedVm::at(&store.root().join("cdp"), &vm)?;
            if !pvm.exists() {
                anyhow::bail!("VM {vm} is not protected in {}: start `lifeboat cdp protect`", ds.datastore.display());
            }
            let mut out = Vec::new();
            for d in pvm.disks() {
                let (range, size, note) = match open_journal(&pvm.journal_dir(&d)?, &vm) {
                    Ok(j) => (j.range().map(|(a, b)| (time_of(a), time_of(b))), Some(j.size()), None),
                    Err(e) => (None, None, Some(e.to_string())),
                };
                out.push(serde_json::json!({ "disk": d, "size": size, "first_write": range.map(|r| stamp(r.0)), "last_write": range.map(|r| stamp(r.1)),
                    "sessions": pvm.sessions(&d)?, "note": note }));
            }
            let bookmarks = pvm.bookmarks()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "vm": vm, "disks": out, "bookmarks": bookmarks }))?);
                return Ok(0);
            }
            println!("VM {vm}");
            for d in &out {
                println!(
                    "  disk {}: {}, journal {} .. {}",
                    d["disk"].as_str().unwrap_or(""),
                    d["size"].as_u64().map(ui::bytes).unwrap_or_else(|| "?".into()),
                    d["first_write"].as_str().unwrap_or("-"),
                    d["last_write"].as_str().unwrap_or("-")
                );
                if let Some(n) = d["note"].as_str() {
                    println!("    {n}");
                }
                for s in d["sessions"].as_array().into_iter().flatten() {
                    println!("    protected from {} to {}", s["ready"].as_str().unwrap_or("?"), s["ended"].as_str().unwrap_or("(running, or killed: up to the last write)"));
                }
            }
            for b in &bookmarks {
                println!("  bookmark {} at {} ({})", b.name, stamp(b.time), b.kind);
            }
            Ok(0)
        }
        CdpCmd::Bookmark { ds, vm, name, at } => {
            let store = open_datastore(&ds)?;
            let pvm = ProtectedVm::at(&store.root().join("cdp"), &vm)?;
            let t = at.as_deref().map(parse_time).transpose()?.unwrap_or_else(Utc::now);
            let b = pvm.add_bookmark(&name, t, "manual")?;
            println!("bookmark {} of {vm} at {}", b.name, stamp(b.time));
            Ok(0)
        }
        CdpCmd::Export { ds, vm, at, listen } => {
            let store = open_datastore(&ds)?;
            let pvm = ProtectedVm::at(&store.root().join("cdp"), &vm)?;
            if !pvm.exists() {
                anyhow::bail!("VM {vm} is not protected in {}", ds.datastore.display());
            }
            let t = match parse_time(&at) {
                Ok(t) => t,
                Err(e) => match pvm.bookmarks()?.into_iter().find(|b| b.name == at) {
                    Some(b) => b.time,
                    None => return Err(e.context(format!("and {vm} has no bookmark {at:?} (see `lifeboat cdp points`)"))),
                },
            };
            let server = Server::new(ServerConfig::default());
            for d in pvm.disks() {
                let j = Arc::new(open_journal(&pvm.journal_dir(&d)?, &vm)?);
                let last = j.range().map(|r| time_of(r.1));
                if !pvm.covers(&d, t, last)? {
                    let sessions: Vec<String> = pvm.sessions(&d)?.iter().map(|s| format!("{} .. {}", stamp(s.ready), s.ended.or(last).map(stamp).unwrap_or_else(|| "?".into()))).collect();
                    anyhow::bail!("{} is outside the protected time of disk {d} of {vm} (protected: {})", stamp(t), if sessions.is_empty() { "never".into() } else { sessions.join(", ") });
                }
                server.add_export(Export::new(d.clone(), Arc::new(PointInTime::new(j, ns_of(t)))).with_description(format!("{vm} disk {d} at {}", stamp(t))));
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

fn protect(ds: &DatastoreArg, qmp: &Path, wanted: &[String], mode: MirrorMode, copy_timeout: Duration) -> anyhow::Result<u8> {
    let store = open_datastore(ds)?;
    let mut cap = Capture::connect(qmp)?;
    let name = cap.vm_name()?;
    if name.is_empty() {
        anyhow::bail!("the VM behind {} has no name (-name): CDP files its journals by VM name", qmp.display());
    }
    let all = cap.disks()?;
    let disks: Vec<_> = if wanted.is_empty() { all.clone() } else { all.iter().filter(|d| wanted.contains(&d.device)).cloned().collect() };
    if let Some(w) = wanted.iter().find(|w| !all.iter().any(|d| &d.device == *w)) {
        anyhow::bail!("the VM {name} has no disk {w:?} (its disks: {})", all.iter().map(|d| d.device.as_str()).collect::<Vec<_>>().join(", "));
    }
    if disks.is_empty() {
        anyhow::bail!("the VM {name} has no disk to protect");
    }
    let pvm = ProtectedVm::at(&store.root().join("cdp"), &name)?;
    // Sync and async differ in what the protected host's death can lose
    // (nothing of what the guest saw completed, or the writes still in
    // flight). The journal's own durability follows the guest's flushes,
    // as a disk's does: QEMU forwards them through the mirror.
    let policy = SyncPolicy::OnFlush;
    let sockets = lifeboat_qemu::SocketDir::create("lbcdp").context("a directory for the journal's socket")?;
    let sock = sockets.path().join("nbd.sock");
    let server = Server::new(ServerConfig::default());
    let mut journals = Vec::new();
    for d in &disks {
        let dir = pvm.journal_dir(&d.device)?;
        let j = if dir.join("journal.json").exists() {
            let j = open_journal(&dir, &name)?;
            if j.size() != d.size {
                anyhow::bail!("disk {} of {name} is {} bytes, its journal {} bytes: it was resized; move {} away to protect it anew", d.device, d.size, j.size(), dir.display());
            }
            j
        } else {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            Journal::create(&dir, d.size, JournalOptions::default())?
        };
        let j = Arc::new(j);
        server.add_export(Export::new(d.device.clone(), Arc::new(JournalTarget::new(j.clone(), policy))));
        journals.push((d.device.clone(), j));
    }
    let rt = serve(|rt| server.spawn_unix(rt, &sock).with_context(|| format!("binding {}", sock.display())))?;
    let cancel = Arc::new(AtomicBool::new(false));
    ui::install_cancel_handler(&cancel);
    let mut sessions = Vec::new();
    for (id, _) in &journals {
        eprintln!("copying disk {id} of {name} into its journal...");
        cap.add(Some(id), &sock, id, mode, copy_timeout)?;
        sessions.push((id.clone(), pvm.begin_session(id, Utc::now())?));
    }
    println!("protecting {name}: {} ({} mode); Ctrl-C to stop", journals.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(", "), if mode == MirrorMode::Sync { "sync" } else { "async" });
    let mut failed = None;
    let mut ticks = 0u32;
    while !cancel.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        ticks += 1;
        if ticks.is_multiple_of(10) {
            if let Err(e) = cap.check() {
                failed = Some(e);
                break;
            }
        }
    }
    let stopped = cap.stop();
    drop(rt);
    let ended = Utc::now();
    for (id, n) in &sessions {
        pvm.end_session(id, *n, ended)?;
    }
    drop(server);
    for (id, j) in journals {
        let j = Arc::try_unwrap(j).map_err(|_| anyhow::anyhow!("the journal of disk {id} is still in use"))?;
        let range = j.range();
        j.close()?;
        if let Some((a, b)) = range {
            println!("disk {id}: journal {} .. {}", stamp(time_of(a)), stamp(time_of(b)));
        }
    }
    if let Some(e) = failed {
        anyhow::bail!("protection of {name} stopped: {e}");
    }
    stopped?;
    println!("stopped protecting {name} at {}", stamp(ended));
    Ok(0)
}
