//! Capture: a running QEMU's disk mirrored into a journal target.
//!
//! The target (a [`crate::JournalTarget`] behind our NBD server on a
//! unix socket) is attached to the VM as a block node, and QEMU's
//! `blockdev-mirror` copies the disk into it (`sync: full`: the initial
//! copy) and then forwards every guest write. With
//! `copy-mode: write-blocking` (CDP's sync mode) the guest's write
//! completes only once the target has it, so an acknowledged write is in
//! the journal; `background` (async mode) copies dirty blocks behind the
//! guest. Stopping cancels the job, which for a mirror in its ready
//! state means "leave the VM on its own disk", and detaches the target.

use lifeboat_qemu::{DiskNode, Qmp, QmpError};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// How writes reach the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorMode {
    /// The guest's write completes when the journal has it.
    Sync,
    /// The guest does not wait; dirty blocks follow behind.
    Async,
}

impl std::str::FromStr for MirrorMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sync" => Ok(MirrorMode::Sync),
            "async" => Ok(MirrorMode::Async),
            o => Err(format!("mode {o:?}: expected sync or async")),
        }
    }
}

impl std::fmt::Display for MirrorMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MirrorMode::Sync => "sync",
            MirrorMode::Async => "async",
        })
    }
}

/// What went wrong starting or stopping a capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// QEMU refused a command or could not be reached.
    #[error("{0}")]
    Qmp(#[from] QmpError),
    /// The VM has no such disk.
    #[error("the VM has no disk {wanted:?} (its disks: {have})")]
    NoDisk {
        /// What was asked for.
        wanted: String,
        /// What it has.
        have: String,
    },
    /// The initial copy did not finish in time, or the job failed.
    #[error("mirroring disk {disk} into the journal: {reason}")]
    Mirror {
        /// The disk.
        disk: String,
        /// What QEMU said.
        reason: String,
    },
}

/// A running VM's disks mirrored into journal targets, over one QMP
/// connection (QEMU serves one client per monitor socket).
pub struct Capture {
    qmp: Qmp,
    mirrors: Vec<Mirror>,
}

/// One disk being mirrored.
pub struct Mirror {
    job: String,
    node: String,
    /// The disk as QEMU's inventory describes it.
    pub disk: DiskNode,
}

/// The VM's disks (device id, top node, size), as a capture sees them.
pub fn disks(qmp: &mut Qmp) -> Result<Vec<DiskNode>, QmpError> {
    Ok(lifeboat_qemu::capture(qmp)?.1)
}

impl Capture {
    /// Connects to the VM's monitor; nothing is mirrored yet.
    pub fn connect(qmp: &Path) -> Result<Capture, CaptureError> {
        Ok(Capture { qmp: Qmp::connect(qmp)?, mirrors: Vec::new() })
    }

    /// The VM's disks.
    pub fn disks(&mut self) -> Result<Vec<DiskNode>, CaptureError> {
        Ok(disks(&mut self.qmp)?)
    }

    /// The VM's name (`-name`), empty when it has none.
    pub fn vm_name(&mut self) -> Result<String, CaptureError> {
        Ok(self.qmp.execute("query-name", json!({}))?["name"].as_str().unwrap_or("").to_string())
    }

    /// The disks mirrored so far.
    pub fn mirrors(&self) -> &[Mirror] {
        &self.mirrors
    }

    /// Attaches the export `export` of the NBD server on `socket` to the
    /// VM and mirrors `device` (a guest device id; `None`: the VM's only
    /// disk) into it; returns once the initial copy is done (the job is
    /// ready), or fails after `ready_timeout` with the mirror undone.
    pub fn add(&mut self, device: Option<&str>, socket: &Path, export: &str, mode: MirrorMode, ready_timeout: Duration) -> Result<&Mirror, CaptureError> {
        let all = disks(&mut self.qmp)?;
        let have = all.iter().map(|d| d.device.as_str()).collect::<Vec<_>>().join(", ");
        let disk = match device {
            Some(w) => all.iter().find(|d| d.device == w).cloned(),
            None if all.len() == 1 => all.first().cloned(),
            None => None,
        }
        .ok_or_else(|| CaptureError::NoDisk { wanted: device.unwrap_or("(the only one)").to_string(), have: if have.is_empty() { "none".into() } else { have } })?;
        let node = format!("lbcdp-{}", disk.device);
        let job = node.clone();
        // A capture that was killed leaves its failed job and its target
        // node in the VM; both would clash with this one's names.
        let _ = self.qmp.execute("block-job-cancel", json!({ "device": job, "force": true }));
        let _ = self.qmp.execute("job-dismiss", json!({ "id": job }));
        let _ = self.qmp.execute("blockdev-del", json!({ "node-name": node }));
        self.qmp.execute("blockdev-add", json!({ "driver": "nbd", "node-name": node, "server": { "type": "unix", "path": socket.display().to_string() }, "export": export }))?;
        let copy_mode = match mode {
            MirrorMode::Sync => "write-blocking",
            MirrorMode::Async => "background",
        };
        if let Err(e) = self.qmp.execute("blockdev-mirror", json!({ "job-id": job, "device": disk.node, "target": node, "sync": "full", "copy-mode": copy_mode, "auto-dismiss": false })) {
            let _ = self.qmp.execute("blockdev-del", json!({ "node-name": node }));
            return Err(e.into());
        }
        let m = Mirror { job, node, disk };
        if let Err(e) = wait_ready(&mut self.qmp, &m, ready_timeout) {
            let _ = detach(&mut self.qmp, &m);
            return Err(e);
        }
        self.mirrors.push(m);
        Ok(self.mirrors.last().expect("just pushed"))
    }

    /// Whether every mirror still runs; `Err` with QEMU's reason for the
    /// first that stopped (the target failed, the VM went away).
    pub fn check(&mut self) -> Result<(), CaptureError> {
        let jobs = self.qmp.execute("query-block-jobs", json!({}))?;
        for m in &self.mirrors {
            match jobs.as_array().and_then(|a| a.iter().find(|j| j["device"] == m.job.as_str())) {
                Some(j) if j["status"] == "ready" || j["status"] == "running" => {}
                Some(j) => return Err(CaptureError::Mirror { disk: m.disk.device.clone(), reason: format!("the mirror is {}: {}", j["status"], j["error"].as_str().unwrap_or("no reason given")) }),
                None => return Err(CaptureError::Mirror { disk: m.disk.device.clone(), reason: "the mirror job is gone".into() }),
            }
        }
        Ok(())
    }

    /// Waits until every mirror has copied all it knows dirty (QEMU's
    /// `offset` caught up with `len`): with the guest frozen, the
    /// journals then hold every write made before the freeze, in async
    /// mode too. Fails after `timeout` naming the disk still behind.
    pub fn wait_synced(&mut self, timeout: Duration) -> Result<(), CaptureError> {
        let end = std::time::Instant::now() + timeout;
        loop {
            let jobs = self.qmp.execute("query-block-jobs", json!({}))?;
            let behind = self
                .mirrors
                .iter()
                .find(|m| jobs.as_array().and_then(|a| a.iter().find(|j| j["device"] == m.job.as_str())).is_none_or(|j| j["offset"].as_u64() != j["len"].as_u64() || j["busy"] == true));
            match behind {
                None => return Ok(()),
                Some(m) if std::time::Instant::now() > end => {
                    return Err(CaptureError::Mirror { disk: m.disk.device.clone(), reason: format!("its mirror did not catch up within {} s", timeout.as_secs()) })
                }
                Some(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The VM's monitor, which this capture holds: for bookmarks, freezes
    /// and checks while it runs.
    pub fn monitor(&mut self) -> &mut Qmp {
        &mut self.qmp
    }

    /// Ends the capture: the VM stays on its own disks, the targets are
    /// detached (make the journals durable after this).
    pub fn stop(mut self) -> Result<(), CaptureError> {
        let mut first = Ok(());
        for m in std::mem::take(&mut self.mirrors) {
            if let Err(e) = detach(&mut self.qmp, &m) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

fn wait_ready(q: &mut Qmp, m: &Mirror, timeout: Duration) -> Result<(), CaptureError> {
    let end = std::time::Instant::now() + timeout;
    loop {
        let jobs = q.execute("query-block-jobs", json!({}))?;
        let me = jobs.as_array().and_then(|a| a.iter().find(|j| j["device"] == m.job.as_str())).cloned();
        match me {
            Some(j) if j["ready"] == true => return Ok(()),
            Some(j) if j["status"] == "concluded" || j["status"] == "aborting" => {
                return Err(CaptureError::Mirror { disk: m.disk.device.clone(), reason: j["error"].as_str().unwrap_or("the job ended").to_string() })
            }
            None => return Err(CaptureError::Mirror { disk: m.disk.device.clone(), reason: "the mirror job is gone".into() }),
            Some(_) if std::time::Instant::now() > end => {
                return Err(CaptureError::Mirror { disk: m.disk.device.clone(), reason: format!("the initial copy did not finish in {} s", timeout.as_secs()) })
            }
            Some(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn detach(q: &mut Qmp, m: &Mirror) -> Result<(), CaptureError> {
    let _ = q.execute("block-job-cancel", json!({ "device": m.job, "force": true }));
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < end {
        let jobs = q.execute("query-block-jobs", json!({}))?;
        match jobs.as_array().and_then(|a| a.iter().find(|j| j["device"] == m.job.as_str())) {
            Some(j) if j["status"] == "concluded" => {
                let _ = q.execute("job-dismiss", json!({ "id": m.job }));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
            None => break,
        }
    }
    q.execute("blockdev-del", json!({ "node-name": m.node }))?;
    Ok(())
}
