//! One setup at a time: tty1 and the serial console both run the console,
//! and the first one a key is pressed on during first-boot setup (or the
//! live system's install) takes a lock file naming its terminal and pid.
//! The other console shows "setup is in progress on <tty>" until the lock
//! goes, then the status screen if setup was finished, else the wizard
//! again. A lock whose pid is dead (a console killed mid-way) is taken
//! over.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file, relative to the console's root: runtime state (a
/// reboot clears it), and not in /run/lifeboat, which systemd removes
/// whenever lifeboat.service stops (RuntimeDirectory=).
pub const SETUP_LOCK: &str = "run/lifeboat-console/setup.lock";

/// Who holds the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub tty: String,
    pub pid: u32,
    /// What the owner is doing: `setup`, `install to disk`.
    pub activity: String,
}

impl Owner {
    fn render(&self) -> String {
        format!("pid={}\ntty={}\nactivity={}\n", self.pid, self.tty, self.activity)
    }

    fn parse(text: &str) -> Option<Owner> {
        let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::to_string);
        Some(Owner { pid: get("pid=")?.trim().parse().ok()?, tty: get("tty=").unwrap_or_default(), activity: get("activity=").unwrap_or_default() })
    }

    /// True while the owner's process exists.
    pub fn alive(&self) -> bool {
        if self.pid == 0 {
            return false;
        }
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// The terminal this process runs on (`ttyS0`, `tty1`, `pts/3`).
pub fn own_tty() -> String {
    let p = unsafe { libc::ttyname(0) };
    if p.is_null() {
        return "an unknown terminal".into();
    }
    let s = unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned();
    s.strip_prefix("/dev/").unwrap_or(&s).to_string()
}

/// The current owner of the lock at `path`, if a live process holds it.
pub fn holder(path: &Path) -> Option<Owner> {
    let text = std::fs::read_to_string(path).ok()?;
    Owner::parse(&text).filter(Owner::alive)
}

/// A held lock; released (file removed) on drop.
#[derive(Debug)]
pub struct SetupLock {
    path: PathBuf,
    owner: Owner,
}

impl SetupLock {
    /// Takes the lock, or returns the live process that holds it. A lock
    /// file of a dead process is taken over; an unreadable one too.
    pub fn acquire(path: &Path, tty: &str, activity: &str) -> std::io::Result<Result<SetupLock, Owner>> {
        let owner = Owner { tty: tty.into(), pid: std::process::id(), activity: activity.into() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        for _ in 0..3 {
            // Written whole, then linked into place: link fails if the
            // lock exists, so two consoles never both get it.
            let tmp = path.with_file_name(format!(".console-setup.lock.{}", owner.pid));
            {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(owner.render().as_bytes())?;
            }
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => return Ok(Ok(SetupLock { path: path.into(), owner })),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let text = std::fs::read_to_string(path).unwrap_or_default();
            match Owner::parse(&text) {
                Some(o) if o.pid == owner.pid => return Ok(Ok(SetupLock { path: path.into(), owner })),
                Some(o) if o.alive() => return Ok(Err(o)),
                _ => {
                    // Stale: move it aside (only one taker's rename
                    // succeeds), then try again.
                    let aside = path.with_file_name(format!(".console-setup.lock.stale.{}", owner.pid));
                    if std::fs::rename(path, &aside).is_ok() {
                        let _ = std::fs::remove_file(&aside);
                    }
                }
            }
        }
        Err(std::io::Error::other(format!("{}: could not be taken (it keeps changing)", path.display())))
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }
}

impl Drop for SetupLock {
    fn drop(&mut self) {
        // Only our own lock: it may have been taken over.
        if std::fs::read_to_string(&self.path).ok().and_then(|t| Owner::parse(&t)).map(|o| o.pid) == Some(self.owner.pid) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_dead_owners_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        // A live other process (pid 1) holds it.
        std::fs::write(&path, Owner { tty: "tty1".into(), pid: 1, activity: "setup".into() }.render()).unwrap();
        let other = SetupLock::acquire(&path, "ttyS0", "setup").unwrap().unwrap_err();
        assert_eq!(other.tty, "tty1");
        assert_eq!(holder(&path).unwrap().pid, 1);
        // A dead one: taken over.
        std::fs::write(&path, Owner { tty: "tty1".into(), pid: 999_999_999, activity: "setup".into() }.render()).unwrap();
        assert!(holder(&path).is_none());
        let lock = SetupLock::acquire(&path, "ttyS0", "setup").unwrap().unwrap();
        assert_eq!(holder(&path).unwrap(), *lock.owner());
        // Ours again: still ours.
        assert!(SetupLock::acquire(&path, "ttyS0", "setup").unwrap().is_ok());
        drop(lock);
        assert!(!path.exists());
    }
}
