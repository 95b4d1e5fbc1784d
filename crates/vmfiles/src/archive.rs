//! Guest files as a tar stream, for restores on another machine (an agent
//! host pulls them from the API and unpacks them itself).
//!
//! Why tar: one stream carries a whole tree with modes, owners, times,
//! symlinks, hard links and special files, and the receiving side unpacks
//! it with the `tar` crate's checks (no `..`, no absolute names, nothing
//! written through a symlink it made).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tar::{EntryType, Header, HeaderMode};

/// What an archive holds; sockets cannot be archived and are counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Entries written (files, directories, links, special files); the
    /// guest root itself is not one.
    pub entries: u64,
    /// Bytes of regular file data written (a hard link's data once).
    pub bytes: u64,
    /// Sockets skipped: tar has no entry type for them.
    pub sockets_left_out: u64,
}

/// Writes `src` (a file, directory or link of a mounted guest) as a tar
/// stream to `out`. Its entries are named under `name` (the guest path's
/// last component), or at the top when `name` is empty (the guest root).
pub fn write_tar(src: &Path, name: &str, out: impl Write) -> io::Result<ArchiveReport> {
    let mut b = tar::Builder::new(out);
    let mut report = ArchiveReport::default();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut todo = vec![(src.to_path_buf(), PathBuf::from(name))];
    while let Some((path, rel)) = todo.pop() {
        let m = fs::symlink_metadata(&path)?;
        let ft = m.file_type();
        if ft.is_socket() {
            report.sockets_left_out += 1;
            continue;
        }
        let mut h = Header::new_gnu();
        h.set_metadata_in_mode(&m, HeaderMode::Complete);
        if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&path)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
            // Reversed onto the stack: popped in name order.
            names.sort_by(|a, b| b.cmp(a));
            todo.extend(names.into_iter().map(|n| (path.join(&n), rel.join(&n))));
            if rel.as_os_str().is_empty() {
                continue;
            }
            h.set_entry_type(EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, &rel, io::empty())?;
        } else if ft.is_symlink() {
            h.set_entry_type(EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, &rel, fs::read_link(&path)?)?;
        } else if let Some(first) = (m.nlink() > 1).then(|| links.get(&(m.dev(), m.ino()))).flatten() {
            h.set_entry_type(EntryType::Link);
            h.set_size(0);
            let first = first.clone();
            b.append_link(&mut h, &rel, first)?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                links.insert((m.dev(), m.ino()), rel.clone());
            }
            // The size in the header is the one stat saw; a file of a
            // read-only mount does not change under us.
            b.append_data(&mut h, &rel, fs::File::open(&path)?)?;
            report.bytes += m.size();
        } else {
            let kind = if ft.is_fifo() {
                EntryType::Fifo
            } else if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            h.set_entry_type(kind);
            h.set_size(0);
            h.set_device_major(libc::major(m.rdev()))?;
            h.set_device_minor(libc::minor(m.rdev()))?;
            b.append_data(&mut h, &rel, io::empty())?;
        }
        report.entries += 1;
    }
    b.into_inner()?.flush()?;
    Ok(report)
}

/// How `unpack_tar` treats what the archive carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnpackPolicy {
    /// Owners, set-ID bits and device nodes as in the archive (root).
    pub as_archived: bool,
}

/// Unpacks a `write_tar` stream into directory `dst` (made if missing).
/// Without `as_archived`, files belong to the caller and lose set-ID
/// bits, and no device node is made.
pub fn unpack_tar(input: impl io::Read, dst: &Path, policy: UnpackPolicy) -> io::Result<u64> {
    fs::create_dir_all(dst)?;
    let mut a = tar::Archive::new(input);
    a.set_preserve_permissions(policy.as_archived);
    a.set_preserve_ownerships(policy.as_archived);
    a.set_preserve_mtime(true);
    a.set_overwrite(true);
    let mut n = 0;
    let mut dirs = Vec::new();
    for e in a.entries()? {
        let e = e?;
        let kind = e.header().entry_type();
        if !policy.as_archived && (kind.is_block_special() || kind.is_character_special()) {
            continue;
        }
        // Directories last, as tar's own `unpack` does: writing their
        // entries would undo their mtimes, and a read-only mode would
        // block them. They carry no data, so they can wait.
        if kind.is_dir() {
            dirs.push(e);
            continue;
        }
        unpack_one(e, dst)?;
        n += 1;
    }
    for d in dirs.into_iter().rev() {
        let (path, mtime) = (d.path()?.into_owned(), d.header().mtime().ok());
        unpack_one(d, dst)?;
        // tar sets no directory mtime; unpack_in accepted the path.
        if let Some(t) = mtime {
            let p = dst.join(path);
            let atime = filetime::FileTime::from_last_access_time(&fs::symlink_metadata(&p)?);
            filetime::set_symlink_file_times(&p, atime, filetime::FileTime::from_unix_time(t as i64, 0))?;
        }
        n += 1;
    }
    Ok(n)
}

fn unpack_one<R: io::Read>(mut e: tar::Entry<'_, R>, dst: &Path) -> io::Result<()> {
    if !e.unpack_in(dst)? {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("archive entry {} points outside {}", e.path()?.display(), dst.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_tree_comes_back_with_modes_times_links() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("etc");
        fs::create_dir_all(s.join("sub")).unwrap();
        fs::write(s.join("sub/f"), b"data").unwrap();
        fs::set_permissions(s.join("sub/f"), fs::Permissions::from_mode(0o4640)).unwrap();
        fs::hard_link(s.join("sub/f"), s.join("hard")).unwrap();
        std::os::unix::fs::symlink("sub/f", s.join("link")).unwrap();
        std::os::unix::fs::symlink("/".to_string() + &"x".repeat(200), s.join("longlink")).unwrap();
        let long = "n".repeat(150);
        fs::write(s.join(&long), b"long name").unwrap();
        fs::set_permissions(s.join("sub"), fs::Permissions::from_mode(0o500)).unwrap();
        let t0 = filetime::FileTime::from_unix_time(1_500_000_000, 0);
        filetime::set_file_times(s.join("sub"), t0, t0).unwrap();

        let mut buf = Vec::new();
        let r = write_tar(&s, "etc", &mut buf).unwrap();
        assert_eq!((r.entries, r.bytes), (7, 4 + 9), "{r:?}");
        let out = t.path().join("out");
        let n = unpack_tar(&buf[..], &out, UnpackPolicy::default()).unwrap();
        assert_eq!(n, 7);
        let o = out.join("etc");
        assert_eq!(fs::read(o.join("sub/f")).unwrap(), b"data");
        assert_eq!(fs::read(o.join(&long)).unwrap(), b"long name");
        assert_eq!(fs::metadata(o.join("sub/f")).unwrap().mode() & 0o7777, 0o640, "set-ID bit kept without as_archived");
        assert_eq!(fs::metadata(o.join("hard")).unwrap().ino(), fs::metadata(o.join("sub/f")).unwrap().ino());
        assert_eq!(fs::read_link(o.join("link")).unwrap(), Path::new("sub/f"));
        assert_eq!(fs::read_link(o.join("longlink")).unwrap().as_os_str().len(), 201);
        let d = fs::metadata(o.join("sub")).unwrap();
        assert_eq!((d.mode() & 0o7777, d.mtime()), (0o500, 1_500_000_000), "directory mode and mtime set after its entries");
        fs::set_permissions(s.join("sub"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(o.join("sub"), fs::Permissions::from_mode(0o700)).unwrap();

        // The guest root: its entries at the top.
        let mut buf = Vec::new();
        write_tar(&s, "", &mut buf).unwrap();
        let out = t.path().join("root");
        unpack_tar(&buf[..], &out, UnpackPolicy::default()).unwrap();
        assert_eq!(fs::read(out.join("sub/f")).unwrap(), b"data");
    }

    #[test]
    fn an_entry_leaving_the_target_is_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "up", "..").unwrap();
        let mut h = Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "up/escaped", &b"x"[..]).unwrap();
        let buf = b.into_inner().unwrap();
        let t = tempfile::tempdir().unwrap();
        let dst = t.path().join("dst");
        assert!(unpack_tar(&buf[..], &dst, UnpackPolicy::default()).is_err());
        assert!(!t.path().join("escaped").exists(), "written through a link in the archive");
    }
}
