//! Private directories named after their owner, and the undoing of what a
//! killed owner left behind.
//!
//! Why: a process killed with SIGKILL runs no guard, so its FUSE disk
//! file, the loop devices over it and the mounts on those stay. Every
//! directory this crate mounts on is `WORK/<kind>-<pid>-<random>`, so the
//! next process (the daemon at start, the next `vm files`) can tell its
//! leftovers from those of a live process and undo them.

use crate::mount::run;
use crate::{Result, VmFilesError};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Root of the private directories: a runtime dir when we may create it
/// (root), else the temp dir.
fn work_dir() -> PathBuf {
    let run = Path::new("/run/lifeboat/vmfiles");
    if std::fs::create_dir_all(run).is_ok() {
        return run.to_path_buf();
    }
    let tmp = std::env::temp_dir().join("lifeboat-vmfiles");
    let _ = std::fs::create_dir_all(&tmp);
    tmp
}

/// A new directory `<kind>-<our pid>-<random>` under the work dir.
pub(crate) fn private_dir(kind: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(&format!("{kind}-{}-", std::process::id())).tempdir_in(work_dir()).map_err(VmFilesError::MountPoint)
}

/// The owner pid in one of our directory names, if it is one.
fn owner(name: &str) -> Option<(&str, i32)> {
    let (kind, rest) = name.split_once('-')?;
    if kind != "fs" && kind != "disk" {
        return None;
    }
    Some((kind, rest.split_once('-')?.0.parse().ok()?))
}

fn alive(pid: i32) -> bool {
    // EPERM means it exists under another user; only ESRCH means gone.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Mount points under `dir` from /proc/self/mountinfo (field 5, with
/// the kernel's octal escapes undone), deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

/// What `clean_stale` undid.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// File system and FUSE disk mounts lazily unmounted.
    pub mounts: usize,
    /// Loop devices detached.
    pub loop_devices: usize,
    /// Private directories removed.
    pub dirs: usize,
}

/// Undoes the mounts, loop devices and directories that processes no
/// longer running left in the work dir. Those of live processes (another
/// `vm files`, the daemon) are left alone. Returns what it undid; a
/// failure to undo one thing is logged and the rest still tried.
pub fn clean_stale() -> Cleaned {
    let work = work_dir();
    let mut done = Cleaned::default();
    let dead = |p: &Path| -> bool { p.strip_prefix(&work).ok().and_then(|r| r.components().next()).and_then(|c| owner(&c.as_os_str().to_string_lossy()).map(|(_, pid)| !alive(pid))).unwrap_or(false) };
    // File systems first: they hold the loop devices, which hold the FUSE
    // disk file. Lazily, as their disk's FUSE server is gone and a normal
    // unmount could wait on it.
    let mounts = mounts_under(&work);
    for m in mounts.iter().filter(|m| dead(m) && owner_kind(&work, m) == Some("fs")) {
        match run(Command::new("umount").arg("-l").arg(m)) {
            Ok(_) => done.mounts += 1,
            Err(e) => tracing::warn!(dir = %m.display(), "stale mount: {e}"),
        }
    }
    let loops = run(Command::new("losetup").args(["--list", "--noheadings", "--raw", "--output", "NAME,BACK-FILE"])).unwrap_or_default();
    for line in loops.lines() {
        let Some((dev, back)) = line.split_once(' ') else { continue };
        let back = Path::new(back.trim_end_matches(" (deleted)"));
        if back.starts_with(&work) && dead(back) {
            match run(Command::new("losetup").arg("--detach").arg(dev)) {
                Ok(_) => done.loop_devices += 1,
                Err(e) => tracing::warn!(device = dev, "stale loop device: {e}"),
            }
        }
    }
    for m in mounts.iter().filter(|m| dead(m) && owner_kind(&work, m) == Some("disk")) {
        match run(Command::new("umount").arg("-l").arg(m)) {
            Ok(_) => done.mounts += 1,
            Err(e) => tracing::warn!(dir = %m.display(), "stale FUSE mount: {e}"),
        }
    }
    if let Ok(entries) = std::fs::read_dir(&work) {
        for e in entries.flatten() {
            let p = e.path();
            // remove_dir, not remove_dir_all: a directory that is still
            // a mount point must never be walked into.
            if dead(&p) && std::fs::remove_dir(&p).is_ok() {
                done.dirs += 1;
            }
        }
    }
    if done != Cleaned::default() {
        tracing::info!(?done, "undid what killed processes left of their VM file access");
    }
    done
}

fn owner_kind(work: &Path, p: &Path) -> Option<&'static str> {
    let first = p.strip_prefix(work).ok()?.components().next()?;
    match owner(&first.as_os_str().to_string_lossy())?.0 {
        "fs" => Some("fs"),
        "disk" => Some("disk"),
        _ => None,
    }
}
