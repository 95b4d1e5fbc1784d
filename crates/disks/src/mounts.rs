//! What is mounted (/proc/self/mountinfo), what swaps (/proc/swaps), and
//! fstab entries.

use crate::error::{DiskError, Result};
use crate::Disk;
use std::path::{Path, PathBuf};

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug)]
pub struct Mount {
    /// `(major, minor)` of the mounted device; major 0 for file systems
    /// without a block device (tmpfs, overlay, proc).
    pub devno: (u32, u32),
    /// Where it is mounted, octal escapes (`\040`) decoded.
    pub mount_point: PathBuf,
    /// The mount source (`/dev/vda1`, `tmpfs`), escapes decoded.
    pub source: String,
    /// The file system type (`ext4`, `proc`, ...).
    pub fstype: String,
}

/// The mount table of this process's mount namespace.
#[derive(Clone, Debug, Default)]
pub struct MountTable {
    /// The mounts in /proc/self/mountinfo order; unparsable lines are
    /// skipped.
    pub mounts: Vec<Mount>,
    /// Device (or file) paths of active swap areas, from /proc/swaps.
    /// Empty when /proc/swaps cannot be read.
    pub swaps: Vec<PathBuf>,
}

impl MountTable {
    /// Reads the table now. Fails only when /proc/self/mountinfo cannot
    /// be read (no /proc).
    pub fn read() -> Result<Self> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| DiskError::io("read", "/proc/self/mountinfo", e))?;
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        Ok(MountTable { mounts: parse_mountinfo(&info), swaps: parse_swaps(&swaps) })
    }

    /// Mount points of the block device `devno`.
    pub fn mount_points(&self, devno: (u32, u32)) -> Vec<PathBuf> {
        self.mounts.iter().filter(|m| m.devno == devno).map(|m| m.mount_point.clone()).collect()
    }

    /// The mount whose mount point is exactly `path` (no prefix match);
    /// the last listed when several are stacked there (normally the
    /// visible one).
    pub fn at(&self, path: &Path) -> Option<&Mount> {
        self.mounts.iter().rev().find(|m| m.mount_point == path)
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let (maj, min) = fields.get(2)?.split_once(':')?;
            Some(Mount {
                devno: (maj.parse().ok()?, min.parse().ok()?),
                mount_point: PathBuf::from(unescape(fields.get(4)?)),
                fstype: fields.get(sep + 1)?.to_string(),
                source: unescape(fields.get(sep + 2)?),
            })
        })
        .collect()
}

fn parse_swaps(text: &str) -> Vec<PathBuf> {
    text.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(|s| PathBuf::from(unescape(s))).collect()
}

/// How the disk or its partitions are in use: mount points, swap, holder
/// devices (device mapper, RAID) from sysfs.
pub(crate) fn usage(disk: &Disk, mounts: &MountTable) -> Vec<String> {
    let mut used = Vec::new();
    let mut devnos = vec![(disk.name.clone(), disk.devno)];
    devnos.extend(crate::sysfs::partition_devnos(&disk.name));
    for (name, devno) in &devnos {
        for mp in mounts.mount_points(*devno) {
            used.push(format!("mounted at {}", mp.display()));
        }
        if mounts.swaps.iter().any(|s| s == &Path::new("/dev").join(name)) {
            used.push(format!("swap on /dev/{name}"));
        }
        for holder in crate::sysfs::holders(name) {
            used.push(format!("used by /dev/{holder}"));
        }
    }
    used
}

/// Adds or replaces the fstab line for `mount_point` in `fstab` (created
/// if missing), written to a temporary file and renamed into place. The
/// line is `<line_source> <mount_point> <fstype> <options> 0 2`; other
/// lines and comments stay as they are.
pub(crate) fn fstab_upsert(fstab: &Path, line_source: &str, mount_point: &Path, fstype: &str, options: &str) -> Result<()> {
    let old = match std::fs::read_to_string(fstab) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(DiskError::io("read", fstab, e)),
    };
    let mp = mount_point.to_string_lossy();
    let mut out = String::new();
    for line in old.lines() {
        let mut f = line.split_whitespace();
        let is_ours = !line.trim_start().starts_with('#') && f.nth(1) == Some(&*mp);
        if !is_ours {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(&format!("{line_source} {mp} {fstype} {options} 0 2\n"));
    if let Some(dir) = fstab.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DiskError::io("create", dir, e))?;
    }
    let tmp = fstab.with_extension("lifeboat-tmp");
    std::fs::write(&tmp, out).map_err(|e| DiskError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, fstab).map_err(|e| DiskError::io("rename", fstab, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let text = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                    90 27 7:3 / /mnt/my\\040disk rw - xfs /dev/loop3 rw\n\
                    22 27 0:21 / /proc rw,relatime - proc proc rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].devno, (254, 0));
        assert_eq!(m[0].mount_point, Path::new("/"));
        assert_eq!(m[1].mount_point, Path::new("/mnt/my disk"));
        assert_eq!(m[1].fstype, "xfs");
        assert_eq!(m[1].source, "/dev/loop3");
    }

    #[test]
    fn fstab_entry_is_replaced_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let fstab = dir.path().join("etc/fstab");
        std::fs::create_dir_all(fstab.parent().unwrap()).unwrap();
        std::fs::write(&fstab, "# keep me\nUUID=aaa / ext4 defaults 0 1\nUUID=old /srv/lifeboat/x ext4 defaults 0 2\n").unwrap();
        fstab_upsert(&fstab, "UUID=new", Path::new("/srv/lifeboat/x"), "xfs", "defaults,nofail").unwrap();
        let text = std::fs::read_to_string(&fstab).unwrap();
        assert_eq!(text, "# keep me\nUUID=aaa / ext4 defaults 0 1\nUUID=new /srv/lifeboat/x xfs defaults,nofail 0 2\n");
    }
}
