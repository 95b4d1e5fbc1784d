//! File system calls relative to a directory descriptor (`openat`,
//! `fstatat`, `readlinkat`, listing an open directory).
//!
//! The backup walk holds each directory open and reaches its entries by
//! name, never by whole path: a path longer than PATH_MAX (4096 bytes) is
//! as good as any other, and the kernel resolves one component per call
//! instead of the whole path again for every entry.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `lstat` of `name` in `dir`.
pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; `name` is NUL-terminated.
    cvt(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

/// `fstat` of an open descriptor: the file it refers to, whatever has
/// happened to its name since it was opened.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

fn open_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall; the descriptor returned is ours.
    let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory `name` in `dir`; a symlink is an error (ELOOP or
/// ENOTDIR), never followed.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY)
}

/// Opens the regular file `name` in `dir` for reading. `O_NONBLOCK`: if a
/// FIFO took the file's place since it was listed, the open must not
/// wait for a writer (the caller checks the type with `fstat`).
pub fn open_file_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    open_at(dir, name, libc::O_RDONLY | libc::O_NONBLOCK)
}

/// Opens a directory given by path (a backup source).
pub fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(path)?;
    Ok(OwnedFd::from(f))
}

/// The target of the symlink `name` in `dir`.
pub fn read_link_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// Calls `f(name, is_regular_file)` for each entry of the open directory
/// `dir` but `.` and `..`. The listing reads a duplicate of the
/// descriptor, so `dir` stays usable (and positioned) for the caller.
pub fn list_dir(dir: BorrowedFd<'_>, mut f: impl FnMut(&[u8], bool)) -> io::Result<()> {
    // SAFETY: fcntl dup; the duplicate is handed to fdopendir, which owns
    // it from then on and closes it in closedir.
    let dup = cvt(unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    let dirp = unsafe { libc::fdopendir(dup) };
    if dirp.is_null() {
        let e = io::Error::last_os_error();
        unsafe { libc::close(dup) };
        return Err(e);
    }
    struct Closer(*mut libc::DIR);
    impl Drop for Closer {
        fn drop(&mut self) {
            // SAFETY: opened by fdopendir above, closed once.
            unsafe { libc::closedir(self.0) };
        }
    }
    let dirp = Closer(dirp);
    // A duplicate shares the file position: start from the beginning.
    unsafe { libc::rewinddir(dirp.0) };
    loop {
        // errno tells the end (unchanged) from an error (set).
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: dirp is a valid DIR*; the entry lives until the next call.
        let ent = unsafe { libc::readdir64(dirp.0) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(0) { Ok(()) } else { Err(e) };
        }
        let ent = unsafe { &*ent };
        let name = unsafe { CStr::from_ptr(ent.d_name.as_ptr()) }.to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        f(name, ent.d_type == libc::DT_REG);
    }
}
