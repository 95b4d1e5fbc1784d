//! A protected VM's place in a datastore: `cdp/<vm>/` with one journal
//! per disk (`disks/<id>/journal/`), the disk's protection sessions
//! (`disks/<id>/sessions.json`: from the end of each initial copy to the
//! stop) and the VM's bookmarks (`bookmarks.json`). A point in time is
//! trustworthy only inside a session: between a stop and the next start
//! nothing saw the VM's writes.

use crate::{io_err, CdpError, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One stretch of protection of a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The initial copy was complete: from here every moment is in the
    /// journal.
    pub ready: DateTime<Utc>,
    /// The protection stopped cleanly; `None` while it runs, or when it
    /// was killed (then the journal's last write bounds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<DateTime<Utc>>,
}

/// A named moment on the VM's time axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bookmark {
    /// Unique per VM.
    pub name: String,
    /// The moment.
    pub time: DateTime<Utc>,
    /// How it was made: `manual`, or by policy, log analysis, or an
    /// application-consistent freeze (later).
    pub kind: String,
}

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
    pub fn begin_session(&self, id: &str, ready: DateTime<Utc>) -> Result<usize> {
        let p = self.sessions_path(id)?;
        let mut s: Vec<Session> = read_json(&p)?;
        s.push(Session { ready, ended: None });
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

    /// Adds a bookmark; a name used already is refused.
    pub fn add_bookmark(&self, name: &str, time: DateTime<Utc>, kind: &str) -> Result<Bookmark> {
        check_name("bookmark", name)?;
        if !self.exists() {
            return Err(CdpError::Invalid(format!("VM {} is not protected here: start `lifeboat cdp protect` first", self.name)));
        }
        let p = self.dir.join("bookmarks.json");
        let mut b: Vec<Bookmark> = read_json(&p)?;
        if b.iter().any(|x| x.name == name) {
            return Err(CdpError::Invalid(format!("VM {} has a bookmark {name:?} already", self.name)));
        }
        let new = Bookmark { name: name.to_string(), time, kind: kind.to_string() };
        b.push(new.clone());
        b.sort_by_key(|x| x.time);
        write_json(&p, &b)?;
        Ok(new)
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
        assert!(vm.add_bookmark("b", Utc::now(), "manual").is_err(), "not protected yet");
        let t0 = Utc::now();
        let s = |secs: i64| t0 + chrono::Duration::seconds(secs);
        std::fs::create_dir_all(vm.journal_dir("disk0").unwrap()).unwrap();
        let n = vm.begin_session("disk0", s(0)).unwrap();
        vm.end_session("disk0", n, s(10)).unwrap();
        let n2 = vm.begin_session("disk0", s(20)).unwrap();
        assert_eq!(n2, 1);
        assert_eq!(ProtectedVm::list(d.path()), ["web-1"]);
        assert_eq!(vm.disks(), ["disk0"]);
        assert!(vm.covers("disk0", s(5), None).unwrap());
        assert!(!vm.covers("disk0", s(15), Some(s(30))).unwrap(), "between a stop and the next start");
        assert!(vm.covers("disk0", s(25), Some(s(30))).unwrap(), "a running session, up to the last write");
        assert!(!vm.covers("disk0", s(35), Some(s(30))).unwrap());
        assert!(!vm.covers("disk0", s(-1), None).unwrap());
        vm.add_bookmark("after", s(8), "manual").unwrap();
        vm.add_bookmark("before", s(2), "manual").unwrap();
        assert!(vm.add_bookmark("after", s(9), "manual").is_err());
        let b: Vec<String> = vm.bookmarks().unwrap().into_iter().map(|b| b.name).collect();
        assert_eq!(b, ["before", "after"]);
    }
}
