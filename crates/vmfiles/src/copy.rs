//! Copying guest files out of a mounted guest file system.
//!
//! Why not `cp`: the guest is untrusted input, and a restore by someone
//! who may not own the target must never create a set-ID file or a device
//! node, not even for the moment between `cp --preserve=mode` and a later
//! clean-up. Here every file is created private (0600, `O_EXCL`,
//! `O_NOFOLLOW`), filled, given its owner and only then its (filtered)
//! mode, and special files are never made unless the policy allows them.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a copy may recreate of the guest's metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyPolicy {
    /// Give entries the guest's owner and group (needs root).
    pub owners: bool,
    /// Keep set-user-ID and set-group-ID bits.
    pub set_id: bool,
    /// Recreate device nodes, FIFOs and sockets (left out otherwise).
    pub special: bool,
}

/// What a copy did; `warnings` name what was left out or changed.
#[derive(Debug, Default)]
pub struct CopyReport {
    /// Regular files copied (a further hard link to one is not counted).
    pub files: u64,
    /// Directories copied or merged into, `src` included.
    pub dirs: u64,
    /// Bytes of regular file data copied.
    pub bytes: u64,
    /// Entries the policy changed: special files left out, and entries
    /// whose set-ID bits were cleared (those are copied).
    pub left_out: u64,
    /// One line per such entry, naming it by its guest path.
    pub warnings: Vec<String>,
}

/// Copies `src` (a file, directory, symlink or special file of a mounted
/// guest) to `dst`, like `cp -R --no-dereference --remove-destination`
/// with modes, times, links and (by `policy`) owners: a directory at `dst`
/// is merged into, anything else there is replaced. `shown` is how the
/// guest path appears in warnings. `on_file` is called with each regular
/// file's size once copied; `cancelled` stops the copy between entries.
pub fn copy_out(src: &Path, dst: &Path, shown: &str, policy: CopyPolicy, report: &mut CopyReport, on_file: &dyn Fn(u64), cancelled: &dyn Fn() -> bool) -> io::Result<()> {
    let mut links = HashMap::new();
    Copier { policy, report, links: &mut links, on_file, cancelled }.entry(src, dst, shown)
}

struct Copier<'a> {
    policy: CopyPolicy,
    report: &'a mut CopyReport,
    /// (dev, ino) of guest files with several links -> their first copy.
    links: &'a mut HashMap<(u64, u64), PathBuf>,
    on_file: &'a dyn Fn(u64),
    cancelled: &'a dyn Fn() -> bool,
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

impl Copier<'_> {
    fn entry(&mut self, src: &Path, dst: &Path, shown: &str) -> io::Result<()> {
        if (self.cancelled)() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        let m = fs::symlink_metadata(src).map_err(|e| context(e, "cannot read", src))?;
        let ft = m.file_type();
        if ft.is_dir() {
            return self.dir(src, dst, shown, &m);
        }
        if (ft.is_block_device() || ft.is_char_device() || ft.is_fifo() || ft.is_socket()) && !self.policy.special {
            self.report.warnings.push(format!("{shown}: special file left out (only an admin restores those)"));
            self.report.left_out += 1;
            return Ok(());
        }
        self.clear(dst)?;
        if ft.is_symlink() {
            let target = fs::read_link(src).map_err(|e| context(e, "cannot read", src))?;
            std::os::unix::fs::symlink(&target, dst).map_err(|e| context(e, "cannot create", dst))?;
            if self.policy.owners {
                std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid())).map_err(|e| context(e, "cannot set the owner of", dst))?;
            }
            return set_times(dst, &m);
        }
        if m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                return fs::hard_link(first, dst).map_err(|e| context(e, "cannot link", dst));
            }
        }
        if ft.is_file() {
            self.file(src, dst, &m, shown)?;
        } else {
            let c = cstr(dst)?;
            // Made without permissions first, like a file; mode below.
            if unsafe { libc::mknod(c.as_ptr(), m.mode() & libc::S_IFMT, m.rdev()) } != 0 {
                return Err(context(io::Error::last_os_error(), "cannot create", dst));
            }
            if self.policy.owners {
                std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid())).map_err(|e| context(e, "cannot set the owner of", dst))?;
            }
            fs::set_permissions(dst, fs::Permissions::from_mode(self.mode(&m, shown))).map_err(|e| context(e, "cannot set the mode of", dst))?;
            set_times(dst, &m)?;
        }
        if m.nlink() > 1 {
            self.links.insert((m.dev(), m.ino()), dst.to_path_buf());
        }
        Ok(())
    }

    /// Whatever is at `dst` that is not a directory goes (a symlink too:
    /// nothing is ever written through one).
    fn clear(&self, dst: &Path) -> io::Result<()> {
        match fs::symlink_metadata(dst) {
            Ok(d) if d.is_dir() => Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is a directory; the guest has a file there", dst.display()))),
            Ok(_) => fs::remove_file(dst).map_err(|e| context(e, "cannot replace", dst)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(context(e, "cannot read", dst)),
        }
    }

    /// The mode to give: the guest's, without set-ID bits unless allowed.
    fn mode(&mut self, m: &fs::Metadata, shown: &str) -> u32 {
        let mode = m.mode() & 0o7777;
        if mode & 0o6000 != 0 && !self.policy.set_id {
            self.report.warnings.push(format!("{shown}: set-ID bits cleared (only an admin restores those)"));
            self.report.left_out += 1;
            return mode & 0o1777;
        }
        mode
    }

    fn file(&mut self, src: &Path, dst: &Path, m: &fs::Metadata, shown: &str) -> io::Result<()> {
        let mut from = File::open(src).map_err(|e| context(e, "cannot read", src))?;
        let mut to = OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(dst).map_err(|e| context(e, "cannot create", dst))?;
        // std's copy uses copy_file_range/sendfile where it can.
        let n = io::copy(&mut from, &mut to).map_err(|e| context(e, "cannot copy to", dst))?;
        if self.policy.owners {
            std::os::unix::fs::fchown(&to, Some(m.uid()), Some(m.gid())).map_err(|e| context(e, "cannot set the owner of", dst))?;
        }
        // After chown, which would clear set-ID bits again.
        let mode = self.mode(m, shown);
        to.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| context(e, "cannot set the mode of", dst))?;
        set_times(dst, m)?;
        self.report.files += 1;
        self.report.bytes += n;
        (self.on_file)(n);
        Ok(())
    }

    fn dir(&mut self, src: &Path, dst: &Path, shown: &str, m: &fs::Metadata) -> io::Result<()> {
        match fs::symlink_metadata(dst) {
            Ok(d) if d.is_dir() => {}
            Ok(_) => {
                fs::remove_file(dst).map_err(|e| context(e, "cannot replace", dst))?;
                fs::DirBuilder::new().mode(0o700).create(dst).map_err(|e| context(e, "cannot create", dst))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new().mode(0o700).create(dst).map_err(|e| context(e, "cannot create", dst))?,
            Err(e) => return Err(context(e, "cannot read", dst)),
        }
        let mut names: Vec<_> =
            fs::read_dir(src).map_err(|e| context(e, "cannot list", src))?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>().map_err(|e| context(e, "cannot list", src))?;
        names.sort();
        for name in names {
            let shown = format!("{}/{}", shown.trim_end_matches('/'), name.to_string_lossy());
            self.entry(&src.join(&name), &dst.join(&name), &shown)?;
        }
        if self.policy.owners {
            std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid())).map_err(|e| context(e, "cannot set the owner of", dst))?;
        }
        let mode = self.mode(m, shown);
        fs::set_permissions(dst, fs::Permissions::from_mode(mode)).map_err(|e| context(e, "cannot set the mode of", dst))?;
        // Last: writing the entries changed the directory's mtime.
        set_times(dst, m)?;
        self.report.dirs += 1;
        Ok(())
    }
}

/// The guest entry's times on `p`, not following a link.
fn set_times(p: &Path, m: &fs::Metadata) -> io::Result<()> {
    use filetime::FileTime;
    filetime::set_symlink_file_times(p, FileTime::from_last_access_time(m), FileTime::from_last_modification_time(m)).map_err(|e| context(e, "cannot set the times of", p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("src");
        fs::create_dir_all(s.join("d/e")).unwrap();
        fs::write(s.join("d/f"), b"data").unwrap();
        fs::set_permissions(s.join("d/f"), fs::Permissions::from_mode(0o4750)).unwrap();
        fs::hard_link(s.join("d/f"), s.join("d/hard")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", s.join("d/link")).unwrap();
        let c = cstr(&s.join("d/fifo")).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        fs::set_permissions(s.join("d/e"), fs::Permissions::from_mode(0o2750)).unwrap();
        let old = filetime_of(1_600_000_000, 123);
        set_times(&s.join("d/f"), &old).unwrap();
        set_times(&s.join("d/e"), &old).unwrap();
        t
    }

    /// Metadata with the given mtime, for `set_times` in tests.
    fn filetime_of(secs: i64, nsec: i64) -> fs::Metadata {
        let t = tempfile::NamedTempFile::new().unwrap();
        let ft = filetime::FileTime::from_unix_time(secs, nsec as u32);
        filetime::set_file_times(t.path(), ft, ft).unwrap();
        fs::metadata(t.path()).unwrap()
    }

    fn copy(t: &Path, policy: CopyPolicy) -> CopyReport {
        let mut r = CopyReport::default();
        copy_out(&t.join("src/d"), &t.join("out"), "/d", policy, &mut r, &|_| {}, &|| false).unwrap();
        r
    }

    #[test]
    fn without_rights_no_set_id_bit_and_no_special_file_is_made() {
        let t = tree();
        let r = copy(t.path(), CopyPolicy::default());
        let o = t.path().join("out");
        assert_eq!(fs::read(o.join("f")).unwrap(), b"data");
        assert_eq!(fs::metadata(o.join("f")).unwrap().mode() & 0o7777, 0o750);
        assert_eq!(fs::metadata(o.join("e")).unwrap().mode() & 0o7777, 0o750);
        assert!(!o.join("fifo").exists());
        assert_eq!(fs::read_link(o.join("link")).unwrap(), Path::new("/etc/passwd"), "a link is copied as a link, not followed");
        assert_eq!(fs::metadata(o.join("hard")).unwrap().ino(), fs::metadata(o.join("f")).unwrap().ino(), "hard links stay one file");
        let m = fs::metadata(o.join("f")).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 123));
        assert_eq!(fs::metadata(o.join("e")).unwrap().mtime(), 1_600_000_000);
        assert_eq!((r.files, r.dirs, r.bytes, r.left_out), (1, 2, 4, 3), "{r:?}");
        assert!(r.warnings.iter().any(|w| w.contains("/d/fifo: special file left out")), "{:?}", r.warnings);
    }

    #[test]
    fn with_rights_modes_and_special_files_are_kept() {
        let t = tree();
        let r = copy(t.path(), CopyPolicy { owners: false, set_id: true, special: true });
        let o = t.path().join("out");
        assert_eq!(fs::metadata(o.join("f")).unwrap().mode() & 0o7777, 0o4750);
        assert_eq!(fs::metadata(o.join("e")).unwrap().mode() & 0o7777, 0o2750);
        assert!(fs::symlink_metadata(o.join("fifo")).unwrap().file_type().is_fifo());
        assert_eq!((r.left_out, r.warnings.len()), (0, 0), "{r:?}");
    }

    #[test]
    fn a_link_in_the_way_is_replaced_not_written_through() {
        let t = tree();
        let victim = t.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        fs::create_dir(t.path().join("out")).unwrap();
        std::os::unix::fs::symlink(&victim, t.path().join("out/f")).unwrap();
        copy(t.path(), CopyPolicy::default());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(t.path().join("out/f")).unwrap(), b"data");
        assert!(!fs::symlink_metadata(t.path().join("out/f")).unwrap().file_type().is_symlink());
    }
}
