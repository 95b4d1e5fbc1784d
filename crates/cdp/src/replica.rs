//! A protection run of one VM: its disks mirrored into their journals
//! for as long as the run lasts. The CLI's `cdp protect` and the daemon's
//! `cdp-protect` job are both this, so they cannot drift apart.

use crate::capture::{Capture, MirrorMode};
use crate::policy::BookmarkClock;
use crate::{Bookmark, CdpError, Journal, JournalOptions, JournalTarget, ProtectedVm, Result, SyncPolicy};
use chrono::Utc;
use lifeboat_nbd::{Export, Server, ServerConfig};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What to protect and how.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// Device ids of the disks to protect; empty: every disk.
    pub disks: Vec<String>,
    /// Sync or async mirroring.
    pub mode: MirrorMode,
    /// How long each disk's initial copy may take.
    pub copy_timeout: Duration,
}

/// A running protection (see the module doc). Stop it with
/// [`Replica::stop`]; dropped without, the VM keeps mirroring into a
/// target that is gone and QEMU fails the mirror job (the journal keeps
/// every write it acknowledged).
pub struct Replica {
    pvm: ProtectedVm,
    capture: Capture,
    journals: Vec<(String, Arc<Journal>)>,
    sessions: Vec<(String, usize)>,
    mode: MirrorMode,
    // Dropped in this order: the runtime stops serving before the
    // socket's directory goes.
    rt: Option<tokio::runtime::Runtime>,
    _sockets: lifeboat_qemu::SocketDir,
}

/// A disk's id and its journal's first and last write (ns), if any.
pub type DiskRange = (String, Option<(u64, u64)>);

/// A journal another process holds (a running protection) says so.
pub fn open_journal(dir: &Path, vm: &str) -> Result<Journal> {
    Journal::open(dir).map_err(|e| match e {
        CdpError::Index { message, .. } if message.contains("lock") => {
            CdpError::InUse(format!("the journal of {vm} ({}) is in use: a protection of it is running (`lifeboat cdp protect` or the daemon's cdp-protect job); stop it first", dir.display()))
        }
        e => e,
    })
}

/// Opens or creates a disk's journal: (directory, VM name, disk size).
pub type JournalOpener<'a> = &'a dyn Fn(&Path, &str, u64) -> Result<Arc<Journal>>;

/// The journal in `dir`, or a new one for a disk of `size` bytes.
pub fn open_or_create(dir: &Path, vm: &str, size: u64) -> Result<Arc<Journal>> {
    if dir.join("journal.json").exists() {
        return open_journal(dir, vm).map(Arc::new);
    }
    std::fs::create_dir_all(dir).map_err(|e| crate::io_err(dir, e))?;
    Journal::create(dir, size, JournalOptions::default()).map(Arc::new)
}

impl Replica {
    /// Connects to the VM behind `qmp`, opens (or creates) a journal per
    /// disk under `cdp_root/<vm>/`, serves them as NBD targets on a unix
    /// socket, and mirrors each disk into its target; returns once every
    /// initial copy is done and the sessions have begun. `say` hears what
    /// it is doing.
    ///
    /// `open` opens or creates a disk's journal (directory, VM name, disk
    /// size): [`open_or_create`] in a process of its own; the daemon
    /// passes one that shares a journal its readers hold open, since
    /// RocksDB lets a journal be opened once.
    pub fn start(cdp_root: &Path, qmp: &Path, opts: &ReplicaOptions, open: JournalOpener<'_>, say: &dyn Fn(&str)) -> Result<Replica> {
        let mut capture = Capture::connect(qmp)?;
        let name = capture.vm_name()?;
        if name.is_empty() {
            return Err(CdpError::Invalid(format!("the VM behind {} has no name (-name): CDP files its journals by VM name", qmp.display())));
        }
        let all = capture.disks()?;
        if let Some(w) = opts.disks.iter().find(|w| !all.iter().any(|d| &d.device == *w)) {
            return Err(CdpError::Invalid(format!("the VM {name} has no disk {w:?} (its disks: {})", all.iter().map(|d| d.device.as_str()).collect::<Vec<_>>().join(", "))));
        }
        let disks: Vec<_> = all.iter().filter(|d| opts.disks.is_empty() || opts.disks.contains(&d.device)).cloned().collect();
        if disks.is_empty() {
            return Err(CdpError::Invalid(format!("the VM {name} has no disk to protect")));
        }
        let pvm = ProtectedVm::at(cdp_root, &name)?;
        // The hardware, so that a moment can be booted as this VM.
        let (md, _) = lifeboat_qemu::inventory::capture(capture.monitor()).map_err(crate::capture::CaptureError::from)?;
        pvm.save_hardware(&md)?;
        // Sync and async differ in what the protected host's death can
        // lose (nothing of what the guest saw completed, or the writes
        // still in flight). The journal's own durability follows the
        // guest's flushes, as a disk's does: QEMU forwards them through
        // the mirror.
        let policy = SyncPolicy::OnFlush;
        let sockets = lifeboat_qemu::SocketDir::create("lbcdp").map_err(|e| crate::io_err(Path::new("/run/lifeboat"), e))?;
        let sock = sockets.path().join("nbd.sock");
        let server = Server::new(ServerConfig::default());
        let mut journals = Vec::new();
        for d in &disks {
            let dir = pvm.journal_dir(&d.device)?;
            let j = open(&dir, &name, d.size)?;
            if j.size() != d.size {
                return Err(CdpError::Invalid(format!(
                    "disk {} of {name} is {} bytes, its journal {} bytes: it was resized; move {} away to protect it anew",
                    d.device,
                    d.size,
                    j.size(),
                    dir.display()
                )));
            }
            server.add_export(Export::new(d.device.clone(), Arc::new(JournalTarget::new(j.clone(), policy))));
            journals.push((d.device.clone(), j));
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("lifeboat-cdp").enable_all().build().map_err(|e| crate::io_err(&sock, e))?;
        server.spawn_unix(&rt, &sock).map_err(|e| crate::io_err(&sock, e))?;
        let mut me = Replica { pvm, capture, journals, sessions: Vec::new(), mode: opts.mode, rt: Some(rt), _sockets: sockets };
        let ids: Vec<String> = me.journals.iter().map(|(id, _)| id.clone()).collect();
        for id in ids {
            say(&format!("copying disk {id} of {name} into its journal"));
            let added =
                me.capture.add(Some(&id), &sock, &id, opts.mode, opts.copy_timeout).map(|_| ()).map_err(CdpError::from).and_then(|_| me.pvm.begin_session(&id, Utc::now(), &opts.mode.to_string()));
            match added {
                Ok(n) => me.sessions.push((id, n)),
                Err(e) => {
                    // The disks mirrored so far go back to running alone.
                    let _ = me.stop();
                    return Err(e);
                }
            }
        }
        Ok(me)
    }

    /// The protected VM (its name, sessions, bookmarks).
    pub fn vm(&self) -> &ProtectedVm {
        &self.pvm
    }

    /// Sync or async.
    pub fn mode(&self) -> MirrorMode {
        self.mode
    }

    /// The journals being written, by disk id.
    pub fn journals(&self) -> &[(String, Arc<Journal>)] {
        &self.journals
    }

    /// Runs the protection until `stop` is set (Ok) or a mirror ends
    /// (Err, naming the disk): checks the mirrors every two seconds and
    /// takes the bookmarks `clock` says are due every second, handing
    /// each one made to `made`. The CLI's `protect` and the daemon's job
    /// both wait here.
    pub fn watch(&mut self, stop: &AtomicBool, clock: &mut BookmarkClock, agent: Option<&Path>, say: &dyn Fn(&str), made: &mut dyn FnMut(&Bookmark)) -> Result<()> {
        let mut ticks = 0u32;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            ticks += 1;
            if !clock.is_idle() && ticks.is_multiple_of(5) {
                for b in self.tick(clock, agent, say) {
                    made(&b);
                }
            }
            if ticks.is_multiple_of(10) {
                self.check()?;
            }
        }
        Ok(())
    }

    /// Takes the bookmarks `clock` says are due. With `clock.consistent`
    /// each is taken with the guest's file systems frozen through its
    /// agent at `agent`; when that fails the bookmark is still made
    /// (crash-consistent) and its detail says why, and `say` hears it.
    /// Returns the bookmarks made.
    pub fn tick(&mut self, clock: &mut BookmarkClock, agent: Option<&Path>, say: &dyn Fn(&str)) -> Vec<Bookmark> {
        let due = match clock.due(Utc::now()) {
            Ok(d) => d,
            Err(e) => {
                say(&format!("bookmark policy: {e}"));
                return Vec::new();
            }
        };
        let mut made = Vec::new();
        for d in due {
            match self.take_bookmark(&d.name, d.kind, d.detail, clock.consistent, agent) {
                Ok(b) => {
                    if clock.consistent && !b.consistent {
                        say(&format!("bookmark {} is only crash-consistent: {}", b.name, b.detail.as_deref().unwrap_or("")));
                    }
                    made.push(b);
                }
                Err(e) => say(&format!("bookmark {}: {e}", d.name)),
            }
        }
        made
    }

    /// Bookmarks this moment as `name`. With `consistent`, the guest's
    /// file systems are frozen through its agent first and the mirrors
    /// caught up, so the moment holds everything the guest had written;
    /// the guest is thawed right after, also when something failed.
    pub fn take_bookmark(&mut self, name: &str, kind: &str, detail: Option<String>, consistent: bool, agent: Option<&Path>) -> Result<Bookmark> {
        let mut b = Bookmark { name: name.to_string(), time: Utc::now(), kind: kind.to_string(), consistent: false, detail };
        if consistent {
            match self.frozen_moment(agent) {
                Ok(t) => {
                    b.time = t;
                    b.consistent = true;
                }
                Err(why) => {
                    b.time = Utc::now();
                    b.detail = Some(match b.detail.take() {
                        Some(d) => format!("{d} (not application-consistent: {why})"),
                        None => format!("not application-consistent: {why}"),
                    });
                }
            }
        }
        self.pvm.record_bookmark(b)
    }

    /// Freezes the guest, waits for the mirrors, notes the moment, thaws.
    fn frozen_moment(&mut self, agent: Option<&Path>) -> std::result::Result<chrono::DateTime<Utc>, String> {
        let Some(agent) = agent else { return Err("no guest agent socket is known for this VM (register it with its agent, or give --agent)".into()) };
        let mut ga = lifeboat_qemu::qga::GuestAgent::connect(agent, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        ga.freeze().map_err(|e| e.to_string())?;
        let synced = self.capture.wait_synced(Duration::from_secs(30)).map_err(|e| e.to_string());
        let t = Utc::now();
        let thawed = ga.thaw().map_err(|e| format!("the guest's file systems could not be thawed: {e}"));
        synced?;
        thawed?;
        Ok(t)
    }

    /// Whether every mirror still runs: an error names the disk whose
    /// mirror QEMU ended (the VM died, the target failed).
    pub fn check(&mut self) -> Result<()> {
        Ok(self.capture.check()?)
    }

    /// Ends the protection: the VM goes on with its own disks alone, the
    /// sessions end now, the journals are made durable and closed (or,
    /// while a reader of a moment still holds one, made durable and left
    /// to close with it). Returns each disk's journal range (ns).
    pub fn stop(self) -> Result<Vec<DiskRange>> {
        let Replica { pvm, capture, journals, sessions, mut rt, _sockets, .. } = self;
        let stopped = capture.stop();
        drop(rt.take());
        let ended = Utc::now();
        let mut first_err = stopped.err().map(CdpError::from);
        for (id, n) in &sessions {
            if let Err(e) = pvm.end_session(id, *n, ended) {
                first_err.get_or_insert(e);
            }
        }
        let mut out = Vec::new();
        for (id, j) in journals {
            let range = j.range();
            let closed = match Arc::try_unwrap(j) {
                Ok(j) => j.close(),
                Err(shared) => shared.sync(),
            };
            if let Err(e) = closed {
                first_err.get_or_insert(e);
            }
            out.push((id, range));
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}
