//! A protected VM's place in a datastore: `cdp/<vm>/` with one journal
//! per disk (`disks/<id>/journal/`), the disk's protection sessions
//! (`disks/<id>/sessions.json`: from the end of each initial copy to the
//! stop) and the VM's bookmarks (`bookmarks.json`). A point in time is
//! trustworthy only inside a session: between a stop and the next start
//! nothing saw the VM's writes.

use crate::{io_err, time_of, CdpError, Journal, Result};
use chrono::{DateTime, Utc};
use lifeboat_api_types::{CdpDiskInfo, CdpVmInfo};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A named moment on the VM's time axis (the API's type).
pub use lifeboat_api_types::CdpBookmark as Bookmark;
/// One stretch of protection of a disk (the API's type).
pub use lifeboat_api_types::CdpSession as Session;

/// A protected VM's directory (see the module doc).
pub struct ProtectedVm {
    dir: PathBuf,
    /// The VM's name.
    pub name: String,
}

fn check_name(what: &str, n: &str) -> Result<()> {
    if n.is_empty() || n.len() > 128 || n.starts_with('.') || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(CdpError::Invalid(format!("{what} {n:?}: use letters, digits, '-', '_' and '.'")));
    }
    Ok(())
}

fn read_json<T: for<'a> Deserialize<'a> + Default>(p: &Path) -> Result<T> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| CdpError::NotAJournal { path: p.display().to_string(), reason: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(io_err(p, e)),
    }
}

fn write_json<T: Serialize>(p: &Path, v: &T) -> Result<()> {
    crate::write_atomic(p, &serde_json::to_vec_pretty(v).expect("serializes"))
}

impl ProtectedVm {
    /// The VM `name` under `cdp_root` (`<datastore>/cdp`); nothing is
    /// created until something is written.
    pub fn at(cdp_root: &Path, name: &str) -> Result<ProtectedVm> {
        check_name("VM name", name)?;
        Ok(ProtectedVm { dir: cdp_root.join(name), name: name.to_string() })
    }

    /// The protected VMs under `cdp_root`, sorted.
    pub fn list(cdp_root: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(cdp_root).map(|d| d.flatten().filter(|e| e.path().join("disks").is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
        v.sort();
        v
    }

    /// Whether anything of this VM is protected.
    pub fn exists(&self) -> bool {
        self.dir.join("disks").is_dir()
    }

    /// The journal directory of disk `id`.
    pub fn journal_dir(&self, id: &str) -> Result<PathBuf> {
        check_name("disk id", id)?;
        Ok(self.dir.join("disks").join(id).join("journal"))
    }

    /// The protected disks, sorted.
    pub fn disks(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.join("disks")).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
        v.sort();
        v
    }

    fn sessions_path(&self, id: &str) -> Result<PathBuf> {
        check_name("disk id", id)?;
        Ok(self.dir.join("disks").join(id).join("sessions.json"))
    }

    /// Disk `id`'s protection sessions, oldest first.
    pub fn sessions(&self, id: &str) -> Result<Vec<Session>> {
        read_json(&self.sessions_path(id)?)
    }

    /// Records that disk `id`'s initial copy completed at `ready`; returns
    /// the session's number for [`ProtectedVm::end_session`].
    pub fn begin_session(&self, id: &str, ready: DateTime<Utc>, mode: &str) -> Result<usize> {
        let p = self.sessions_path(id)?;
        let mut s: Vec<Session> = read_json(&p)?;
        s.push(Session { ready, ended: None, mode: Some(mode.to_string()) });
        write_json(&p, &s)?;
        Ok(s.len() - 1)
    }

    /// Records that session `n` of disk `id` stopped at `ended`.
    pub fn end_session(&self, id: &str, n: usize, ended: DateTime<Utc>) -> Result<()> {
        let p = self.sessions_path(id)?;
        let mut s: Vec<Session> = read_json(&p)?;
        if let Some(x) = s.get_mut(n) {
            x.ended = Some(ended);
        }
        write_json(&p, &s)
    }

    /// The VM's bookmarks, in time order.
    pub fn bookmarks(&self) -> Result<Vec<Bookmark>> {
        read_json(&self.dir.join("bookmarks.json"))
    }

    /// Adds a manual bookmark; a name used already is refused.
    pub fn add_bookmark(&self, name: &str, time: DateTime<Utc>) -> Result<Bookmark> {
        self.record_bookmark(Bookmark { name: name.to_string(), time, kind: "manual".into(), consistent: false, detail: None })
    }

    /// Adds bookmark `new`; a name used already is refused. Writers in
    /// other processes (the CLI beside the daemon's protection) take turns
    /// through a lock on the file, so none is lost.
    pub fn record_bookmark(&self, new: Bookmark) -> Result<Bookmark> {
        check_name("bookmark", &new.name)?;
        if !self.exists() {
            return Err(CdpError::Invalid(format!("VM {} is not protected here: start `lifeboat cdp protect` first", self.name)));
        }
        let lock_path = self.dir.join("bookmarks.lock");
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| io_err(&lock_path, e))?;
        lock.lock().map_err(|e| io_err(&lock_path, e))?;
        let p = self.dir.join("bookmarks.json");
        let mut b: Vec<Bookmark> = read_json(&p)?;
        if b.iter().any(|x| x.name == new.name) {
            return Err(CdpError::Invalid(format!("VM {} has a bookmark {:?} already", self.name, new.name)));
        }
        b.push(new.clone());
        b.sort_by_key(|x| x.time);
        write_json(&p, &b)?;
        Ok(new)
    }

    /// What `cdp points` and `GET /api/cdp` show of this VM: each disk's
    /// journal range and sessions, and the bookmarks. `open` gives a
    /// disk's journal: the protection's own while one runs (its index is
    /// locked to anyone else), else opened from its directory.
    pub fn info(&self, datastore: &str, open: &dyn Fn(&str, &Path) -> Result<std::sync::Arc<Journal>>) -> Result<CdpVmInfo> {
        let mut disks = Vec::new();
        for d in self.disks() {
            let (range, size, note) = match open(&d, &self.journal_dir(&d)?) {
                Ok(j) => (j.range().map(|(a, b)| (time_of(a), time_of(b))), Some(j.size()), None),
                Err(e) => (None, None, Some(e.to_string())),
            };
            disks.push(CdpDiskInfo { disk: d.clone(), size, first_write: range.map(|r| r.0), last_write: range.map(|r| r.1), sessions: self.sessions(&d)?, note });
        }
        Ok(CdpVmInfo { datastore: datastore.to_string(), vm: self.name.clone(), protecting: false, job: None, disks, bookmarks: self.bookmarks()? })
    }

    /// Records the VM's hardware as its protection found it
    /// (`vm.json`): what booting one of its moments gives the VM.
    pub fn save_hardware(&self, md: &lifeboat_vm::VmMetadata) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        write_json(&self.dir.join("vm.json"), md)
    }

    /// The VM's hardware, as its last protection found it.
    pub fn hardware(&self) -> Result<lifeboat_vm::VmMetadata> {
        let p = self.dir.join("vm.json");
        let b = std::fs::read(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CdpError::Invalid(format!("{} has no recorded hardware ({}): protect it once more with this version to boot its moments", self.name, p.display())),
            _ => io_err(&p, e),
        })?;
        serde_json::from_slice(&b).map_err(|e| CdpError::NotAJournal { path: p.display().to_string(), reason: e.to_string() })
    }

    /// The latest moment known of every disk: the end of each disk's
    /// last session, or its journal's last write if that session was cut
    /// off (`last_write` gives it per disk); the earliest of those, so
    /// every disk is known there.
    pub fn latest(&self, last_write: &dyn Fn(&str) -> Option<DateTime<Utc>>) -> Result<DateTime<Utc>> {
        let mut out: Option<DateTime<Utc>> = None;
        for d in self.disks() {
            let s = self.sessions(&d)?;
            let Some(last) = s.last() else { continue };
            let end = last.ended.or_else(|| last_write(&d)).unwrap_or(last.ready).max(last.ready);
            out = Some(out.map_or(end, |o| o.min(end)));
        }
        out.ok_or_else(|| CdpError::Invalid(format!("{} has no protected moment yet", self.name)))
    }

    /// The moment `at` names: RFC 3339 (fractions of a second allowed) or
    /// a bookmark's name. `latest` is resolved by the caller (it needs the
    /// journals, see [`ProtectedVm::latest`]).
    pub fn resolve_time(&self, at: &str) -> Result<DateTime<Utc>> {
        if let Ok(t) = DateTime::parse_from_rfc3339(at) {
            return Ok(t.with_timezone(&Utc));
        }
        match self.bookmarks()?.into_iter().find(|b| b.name == at) {
            Some(b) => Ok(b.time),
            None => Err(CdpError::Invalid(format!("{} has no bookmark {at:?}, and it is not a time in RFC 3339 either (e.g. 2026-12-05T10:30:00.250Z); see `lifeboat cdp points`", self.name))),
        }
    }

    /// Disk `id` as it was at `t`, read from journal `j`; refused (naming
    /// the protected stretches) when `t` is outside every session. With
    /// `live` (a protection writes the journal now) the open session
    /// reaches up to now, not just to its last write: nothing was written
    /// since, so the disk is still as it was then.
    pub fn point(&self, id: &str, j: std::sync::Arc<Journal>, t: DateTime<Utc>, live: bool) -> Result<crate::PointInTime> {
        let last = if live { Some(Utc::now()) } else { j.range().map(|r| time_of(r.1)) };
        if !self.covers(id, t, last)? {
            let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            let spans: Vec<String> = self.sessions(id)?.iter().map(|s| format!("{} .. {}", stamp(s.ready), s.ended.or(last).map(stamp).unwrap_or_else(|| "?".into()))).collect();
            return Err(CdpError::Invalid(format!(
                "{} is outside the protected time of disk {id} of {} (protected: {})",
                stamp(t),
                self.name,
                if spans.is_empty() { "never".into() } else { spans.join(", ") }
            )));
        }
        Ok(crate::PointInTime::new(j, crate::ns_of(t)))
    }

    /// Whether moment `t` of disk `id` is known: inside a session, whose
    /// end is its stop, or (for one that was killed or still runs) the
    /// journal's last write `last_write`.
    pub fn covers(&self, id: &str, t: DateTime<Utc>, last_write: Option<DateTime<Utc>>) -> Result<bool> {
        Ok(self.sessions(id)?.iter().any(|s| s.ready <= t && s.ended.or(last_write).is_some_and(|e| t <= e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_bookmarks_and_coverage() {
        let d = tempfile::tempdir().unwrap();
        let vm = ProtectedVm::at(d.path(), "web-1").unwrap();
        assert!(ProtectedVm::at(d.path(), "../x").is_err());
        assert!(vm.add_bookmark("b", Utc::now()).is_err(), "not protected yet");
        let t0 = Utc::now();
        let s = |secs: i64| t0 + chrono::Duration::seconds(secs);
        std::fs::create_dir_all(vm.journal_dir("disk0").unwrap()).unwrap();
        let n = vm.begin_session("disk0", s(0), "sync").unwrap();
        vm.end_session("disk0", n, s(10)).unwrap();
        let n2 = vm.begin_session("disk0", s(20), "sync").unwrap();
        assert_eq!(n2, 1);
        assert_eq!(ProtectedVm::list(d.path()), ["web-1"]);
        assert_eq!(vm.disks(), ["disk0"]);
        assert!(vm.covers("disk0", s(5), None).unwrap());
        assert!(!vm.covers("disk0", s(15), Some(s(30))).unwrap(), "between a stop and the next start");
        assert!(vm.covers("disk0", s(25), Some(s(30))).unwrap(), "a running session, up to the last write");
        assert!(!vm.covers("disk0", s(35), Some(s(30))).unwrap());
        assert!(!vm.covers("disk0", s(-1), None).unwrap());
        vm.add_bookmark("after", s(8)).unwrap();
        vm.add_bookmark("before", s(2)).unwrap();
        assert!(vm.add_bookmark("after", s(9)).is_err());
        let b: Vec<String> = vm.bookmarks().unwrap().into_iter().map(|b| b.name).collect();
        assert_eq!(b, ["before", "after"]);
    }

    #[test]
    fn a_live_session_covers_up_to_now_an_ended_one_to_its_last_write() {
        let d = tempfile::tempdir().unwrap();
        let vm = ProtectedVm::at(d.path(), "idle").unwrap();
        let dir = vm.journal_dir("disk0").unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let j = std::sync::Arc::new(Journal::create(&dir, 1 << 20, crate::JournalOptions::default()).unwrap());
        let start = Utc::now() - chrono::Duration::seconds(60);
        vm.begin_session("disk0", start, "async").unwrap();
        // Nothing was written: a session that is not live knows no moment
        // after its start, a live one knows every moment up to now.
        let now = Utc::now();
        let err = vm.point("disk0", j.clone(), now, false).err().expect("not live: no write, no coverage").to_string();
        assert!(err.contains("disk0"), "{err}");
        assert!(vm.point("disk0", j.clone(), now, true).is_ok());
        assert!(vm.point("disk0", j, start - chrono::Duration::seconds(1), true).is_err(), "before the session");
    }
}
