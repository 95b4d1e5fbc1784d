//! A cheap counting walk that runs beside the backup so a progress bar can
//! show totals and an ETA (stat only, no reads).
//!
//! Like the backup it walks by directory descriptor (`crate::fsat`), so a
//! subtree deeper than PATH_MAX is counted too; the path is kept only for
//! the exclude patterns.

use crate::exclude::Excludes;
use crate::fsat;
use crate::progress::Progress;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Counts the regular files under `sources` and their bytes into
/// `progress.total_files` and `total_bytes`, leaving out what `excludes`
/// excludes, then sets `progress.scan_done`. Runs on the calling thread
/// (spawn one for it beside the backup) and stops early, without setting
/// `scan_done`, once `progress` is cancelled. Unreadable entries are
/// skipped silently (the backup reports them).
///
/// The totals are an estimate for an ETA: sources are taken as given (a
/// source that is a symlink counts nothing; the backup canonicalizes it),
/// and `--one-file-system` and `--exclude-nodump` are not applied.
pub fn count_totals(sources: &[PathBuf], excludes: &Excludes, progress: &Progress) {
    // Directories still to list: (their parent, their name, their path).
    let mut stack: Vec<(Arc<OwnedFd>, CString, PathBuf)> = Vec::new();
    let mut open: Vec<(OwnedFd, PathBuf)> = Vec::new();
    for s in sources {
        match std::fs::symlink_metadata(s) {
            Ok(m) if m.is_dir() => {
                if let Ok(fd) = fsat::open_dir(s) {
                    open.push((fd, s.clone()));
                }
            }
            Ok(m) if m.is_file() => add(progress, m.len()),
            _ => {}
        }
    }
    loop {
        if progress.cancelled() {
            return;
        }
        let (dir, path) = match open.pop() {
            Some(d) => d,
            None => match stack.pop() {
                Some((parent, name, path)) => match fsat::open_dir_at(parent.as_fd(), &name) {
                    Ok(fd) => (fd, path),
                    Err(_) => continue,
                },
                None => break,
            },
        };
        let dir = Arc::new(dir);
        let _ = fsat::list_dir(dir.as_fd(), |name, _| {
            let p = path.join(std::ffi::OsStr::from_bytes(name));
            if excludes.excluded(&p) {
                return;
            }
            let Ok(c) = CString::new(name) else { return };
            match fsat::stat_at(dir.as_fd(), &c) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => stack.push((dir.clone(), c, p)),
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => add(progress, st.st_size as u64),
                _ => {}
            }
        });
    }
    progress.scan_done.store(true, Ordering::Relaxed);
}

fn add(p: &Progress, bytes: u64) {
    p.total_files.fetch_add(1, Ordering::Relaxed);
    p.total_bytes.fetch_add(bytes, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree deeper than PATH_MAX: every file is counted, and excluded
    /// ones are not.
    #[test]
    fn counts_past_path_max_and_honours_excludes() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("src");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("top.txt"), b"12345").unwrap();
        std::fs::write(root.join("skip.log"), b"123").unwrap();
        // 40 levels of 200-byte names: over 8000 bytes of path, made
        // through descriptors since the path itself is too long.
        let name = CString::new("d".repeat(200)).unwrap();
        let mut fd = fsat::open_dir(&root).unwrap();
        for _ in 0..40 {
            assert_eq!(unsafe { libc::mkdirat(std::os::fd::AsRawFd::as_raw_fd(&fd), name.as_ptr(), 0o755) }, 0);
            fd = fsat::open_dir_at(fd.as_fd(), &name).unwrap();
        }
        let f = CString::new("deep.txt").unwrap();
        let w = unsafe { libc::openat(std::os::fd::AsRawFd::as_raw_fd(&fd), f.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644) };
        assert!(w >= 0);
        assert_eq!(unsafe { libc::write(w, b"1234567".as_ptr().cast(), 7) }, 7);
        unsafe { libc::close(w) };
        let p = Progress::default();
        count_totals(std::slice::from_ref(&root), &Excludes::new(&["*.log".to_string()]).unwrap(), &p);
        assert_eq!((p.total_files.load(Ordering::Relaxed), p.total_bytes.load(Ordering::Relaxed)), (2, 12));
        assert!(p.scan_done.load(Ordering::Relaxed));
        // tempdir's own removal goes by path: take the deep chain apart.
        let _ = std::process::Command::new("rm").arg("-rf").arg(&root).status();
    }
}
