//! Extended attributes and inode flags: read on backup, written on
//! restore.
//!
//! Extended attributes are kept as the kernel gives them, name and raw
//! value: POSIX ACLs (`system.posix_acl_access`, `..._default`), file
//! capabilities (`security.capability`) and SELinux labels
//! (`security.selinux`) are xattrs like `user.*` and `trusted.*`, so one
//! mechanism carries them all.
//!
//! An entry that can be opened (a file, a directory) is reached through
//! its descriptor. Others (symlinks, device nodes, FIFOs, sockets: opening
//! a device or FIFO could block or have side effects) are reached as
//! `/proc/self/fd/<dir>/<name>` with the `l*xattr` calls, which do not
//! follow a final symlink: the path is short whatever the entry's depth,
//! and the directory is the one the walk holds open.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Inode flags (`FS_IOC_GETFLAGS`, the `chattr` letters) that are the
/// user's to set: `s u c S i a d A m j t D T C x P F`. The others
/// (extents, htree index, inline data, verity, encryption, ...) describe
/// how the file system stores the inode and are neither kept nor set.
pub const USER_FLAGS: u32 = 0x1 | 0x2 | 0x4 | 0x8 | IMMUTABLE | APPEND | NODUMP | 0x80 | 0x400 | 0x4000 | 0x8000 | 0x10000 | 0x20000 | 0x80_0000 | 0x200_0000 | 0x2000_0000 | 0x4000_0000;
/// `chattr +i` (`FS_IMMUTABLE_FL`): the inode cannot be changed, linked,
/// renamed or removed (not even by root), and a directory's entries cannot
/// be added or removed.
pub const IMMUTABLE: u32 = 0x10;
/// `chattr +a` (`FS_APPEND_FL`): a file may only be appended to; like
/// `IMMUTABLE` it cannot be renamed, linked or removed.
pub const APPEND: u32 = 0x20;
/// `chattr +d` (`FS_NODUMP_FL`): "do not back up". Kept like any flag, and
/// the entry is left out of a backup with `--exclude-nodump`.
pub const NODUMP: u32 = 0x40;
/// Flags that forbid changing the file (or, on a directory, its entries):
/// set last on restore, cleared first when a restore runs over them.
pub const LOCKING: u32 = IMMUTABLE | APPEND;

/// The chattr letters of `flags`, in `lsattr`'s order.
pub fn flag_letters(flags: u32) -> String {
    const LETTERS: [(u32, char); 17] = [
        (0x1, 's'),
        (0x2, 'u'),
        (0x8, 'S'),
        (0x10000, 'D'),
        (IMMUTABLE, 'i'),
        (APPEND, 'a'),
        (NODUMP, 'd'),
        (0x80, 'A'),
        (0x4, 'c'),
        (0x400, 'm'),
        (0x4000, 'j'),
        (0x20000, 'T'),
        (0x8000, 't'),
        (0x80_0000, 'C'),
        (0x200_0000, 'x'),
        (0x2000_0000, 'P'),
        (0x4000_0000, 'F'),
    ];
    LETTERS.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, c)| *c).collect()
}

/// Where an entry's attributes are read or written.
#[derive(Clone, Copy)]
pub enum Entry<'a> {
    /// An open file or directory.
    Fd(BorrowedFd<'a>),
    /// `name` in the open directory, not followed if a symlink.
    At(BorrowedFd<'a>, &'a CStr),
}

impl Entry<'_> {
    fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> CString {
        let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        p.extend_from_slice(name.to_bytes());
        CString::new(p).expect("a name has no NUL")
    }
}

/// "Not supported here": the file system (or the entry type) has no
/// xattrs or flags, which is the same as having none.
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOTTY) | Some(libc::EINVAL) | Some(libc::ENOSYS))
}

fn size_result(n: libc::ssize_t) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn list_raw(e: Entry<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for its length (a zero length asks the size).
    size_result(unsafe {
        match e {
            Entry::Fd(fd) => libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()),
            Entry::At(dir, name) => libc::llistxattr(Entry::proc_path(dir, name).as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
        }
    })
}

fn get_raw(e: Entry<'_>, attr: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: as above.
    size_result(unsafe {
        match e {
            Entry::Fd(fd) => libc::fgetxattr(fd.as_raw_fd(), attr.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
            Entry::At(dir, name) => libc::lgetxattr(Entry::proc_path(dir, name).as_ptr(), attr.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
        }
    })
}

/// Calls `f` with a buffer until it fits (a value can grow between the
/// size query and the read).
fn sized(mut f: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    loop {
        let want = f(&mut [])?;
        if want == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; want];
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// All extended attributes of `e`, sorted by name. A file system without
/// xattr support gives none.
pub fn read_xattrs(e: Entry<'_>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match sized(|b| list_raw(e, b)) {
        Ok(n) => n,
        Err(err) if unsupported(&err) => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("split at NUL");
        match sized(|b| get_raw(e, &cname, b)) {
            Ok(v) => out.push((name.to_vec(), v)),
            // Removed since it was listed.
            Err(err) if err.raw_os_error() == Some(libc::ENODATA) => {}
            Err(err) => return Err(io::Error::new(err.kind(), format!("xattr {}: {err}", String::from_utf8_lossy(name)))),
        }
    }
    out.sort();
    Ok(out)
}

/// Sets one extended attribute.
pub fn write_xattr(e: Entry<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: pointers valid for the lengths given.
    let rc = unsafe {
        match e {
            Entry::Fd(fd) => libc::fsetxattr(fd.as_raw_fd(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0),
            Entry::At(dir, n) => libc::lsetxattr(Entry::proc_path(dir, n).as_ptr(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0),
        }
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Removes one extended attribute (absent is fine).
pub fn remove_xattr(e: Entry<'_>, name: &[u8]) -> io::Result<()> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: as above.
    let rc = unsafe {
        match e {
            Entry::Fd(fd) => libc::fremovexattr(fd.as_raw_fd(), cname.as_ptr()),
            Entry::At(dir, n) => libc::lremovexattr(Entry::proc_path(dir, n).as_ptr(), cname.as_ptr()),
        }
    };
    let err = io::Error::last_os_error();
    if rc < 0 && err.raw_os_error() != Some(libc::ENODATA) {
        Err(err)
    } else {
        Ok(())
    }
}

// _IOR('f', 1, long) and _IOW('f', 2, long); the kernel reads and writes
// an int whatever the size in the number says (as chattr does).
const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;

/// The user's inode flags of an open file or directory (`USER_FLAGS`
/// bits); 0 where the file system has none.
pub fn read_flags(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut flags: libc::c_int = 0;
    // SAFETY: the ioctl writes one int.
    if unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags) } < 0 {
        let e = io::Error::last_os_error();
        return if unsupported(&e) { Ok(0) } else { Err(e) };
    }
    Ok(flags as u32 & USER_FLAGS)
}

/// Sets the user's inode flags of an open file or directory to `flags`,
/// keeping the file system's own bits. Nothing is asked of the file
/// system when nothing changes.
pub fn write_flags(fd: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    let mut cur: libc::c_int = 0;
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFLAGS, &mut cur) } < 0 {
        let e = io::Error::last_os_error();
        return if flags == 0 && unsupported(&e) { Ok(()) } else { Err(e) };
    }
    let want = ((cur as u32) & !USER_FLAGS) | (flags & USER_FLAGS);
    if want == cur as u32 {
        return Ok(());
    }
    let want = want as libc::c_int;
    // SAFETY: the ioctl reads one int.
    if unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_SETFLAGS, &want) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A POSIX ACL xattr value (`system.posix_acl_access`/`_default`) in
/// `getfacl`'s short text form ("user::rw-,user:1000:r--,group::r--,
/// mask::r--,other::---"), ids numeric; `None` if it is not one.
pub fn acl_text(value: &[u8]) -> Option<String> {
    // Header: u32 version 2; then entries of u16 tag, u16 perm, u32 id.
    if value.len() < 4 || u32::from_le_bytes(value[..4].try_into().ok()?) != 2 || !(value.len() - 4).is_multiple_of(8) {
        return None;
    }
    let mut out = Vec::new();
    for e in value[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let who = match tag {
            0x01 => "user::".to_string(),
            0x02 => format!("user:{id}:"),
            0x04 => "group::".to_string(),
            0x08 => format!("group:{id}:"),
            0x10 => "mask::".to_string(),
            0x20 => "other::".to_string(),
            _ => return None,
        };
        let rwx: String = [(4, 'r'), (2, 'w'), (1, 'x')].iter().map(|&(b, c)| if perm & b != 0 { c } else { '-' }).collect();
        out.push(who + &rwx);
    }
    Some(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_values_read_as_getfacl_text() {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [(1u16, 6u16, u32::MAX), (2, 4, 1000), (4, 4, u32::MAX), (0x10, 5, u32::MAX), (0x20, 0, u32::MAX)] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(acl_text(&v).unwrap(), "user::rw-,user:1000:r--,group::r--,mask::r-x,other::---");
        assert_eq!(acl_text(&v[..7]), None);
        assert_eq!(acl_text(b"not an acl"), None);
    }

    #[test]
    fn letters_follow_lsattr() {
        assert_eq!(flag_letters(IMMUTABLE | APPEND | NODUMP), "iad");
        assert_eq!(flag_letters(0), "");
        assert_eq!(flag_letters(0x80000), "", "extents are the file system's, not a chattr letter");
    }
}
