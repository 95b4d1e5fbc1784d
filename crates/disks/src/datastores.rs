//! Existing Lifeboat datastores on a disk's file systems: a directory
//! holding the datastore's `config.json` (lifeboat_store::config) and a
//! `packs/` directory, at the top of the file system or up to two levels
//! down.

use crate::mounts::MountTable;
use crate::Disk;
use lifeboat_store::{DatastoreConfig, CONFIG_FILE};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A datastore found on a file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundDatastore {
    /// Its directory relative to the top of the file system (`datastore`;
    /// empty when the file system itself is the datastore).
    pub relative: PathBuf,
    /// The datastore id from its config, if the config could be read.
    pub id: Option<String>,
    /// The config has an encryption section: its data is encrypted.
    /// False when the config could not be read.
    pub encrypted: bool,
    /// Why this code cannot open it (a newer format, a damaged config).
    pub problem: Option<String>,
}

/// File systems that can hold a datastore and are safe to mount
/// read-only without replaying anything.
fn mount_options(fstype: &str) -> Option<&'static str> {
    match fstype {
        "ext4" | "ext3" => Some("noload"),
        "ext2" => Some(""),
        "xfs" => Some("norecovery"),
        "btrfs" => Some("nologreplay"),
        _ => None,
    }
}

/// Datastores in the directory tree `top` (not following symlinks), at
/// most two levels down, sorted by path.
pub(crate) fn find_datastores(top: &Path) -> Vec<FoundDatastore> {
    let mut found = Vec::new();
    let mut dirs = vec![(PathBuf::new(), 0u32)];
    while let Some((rel, depth)) = dirs.pop() {
        let dir = top.join(&rel);
        if dir.join(CONFIG_FILE).is_file() && dir.join("packs").is_dir() {
            found.push(match DatastoreConfig::load(&dir) {
                Ok(cfg) => FoundDatastore { relative: rel, id: Some(cfg.id), encrypted: cfg.encryption.is_some(), problem: None },
                Err(e) => FoundDatastore { relative: rel, id: None, encrypted: false, problem: Some(e.to_string()) },
            });
            continue; // nothing nests inside a datastore
        }
        if depth >= 2 {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.filter_map(|e| e.ok()) {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) && e.file_name() != "lost+found" {
                dirs.push((rel.join(e.file_name()), depth + 1));
            }
        }
    }
    found.sort_by(|a, b| a.relative.cmp(&b.relative));
    found
}

/// Looks for datastores on every file system of the disk: where it is
/// mounted already, else through a private read-only mount.
pub(crate) fn search_disk(disk: &mut Disk, mounts: &MountTable) {
    let mut targets: Vec<&mut crate::Filesystem> = Vec::new();
    if let Some(fs) = disk.filesystem.as_mut() {
        targets.push(fs);
    }
    for p in disk.partitions.iter_mut() {
        if let Some(fs) = p.filesystem.as_mut() {
            targets.push(fs);
        }
    }
    for fs in targets {
        let Some(device) = fs.device.clone() else {
            fs.search_note = Some("no device node for this partition".into());
            continue;
        };
        let Some(options) = mount_options(&fs.fstype) else { continue };
        let devno = std::fs::metadata(&device).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (libc::major(m.rdev()), libc::minor(m.rdev()))
        });
        if let Some(mp) = devno.and_then(|d| mounts.mount_points(d).into_iter().next()) {
            fs.datastores = find_datastores(&mp);
            fs.mounted_at = Some(mp);
            continue;
        }
        match with_readonly_mount(&device, &fs.fstype, options, find_datastores) {
            Ok(found) => fs.datastores = found,
            Err(e) => fs.search_note = Some(format!("not searched for datastores: cannot mount read-only: {e}")),
        }
    }
}

/// Mounts `device` read-only on a fresh temporary directory, runs `f` on
/// it and unmounts.
fn with_readonly_mount<T>(device: &Path, fstype: &str, options: &str, f: impl FnOnce(&Path) -> T) -> std::io::Result<T> {
    let dir = tempfile::Builder::new().prefix("lifeboat-probe-").tempdir()?;
    let src = CString::new(device.as_os_str().as_bytes())?;
    let target = CString::new(dir.path().as_os_str().as_bytes())?;
    let fstype_c = CString::new(fstype)?;
    let data = CString::new(options)?;
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype_c.as_ptr(), flags, data.as_ptr().cast()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let out = f(dir.path());
    unsafe {
        if libc::umount2(target.as_ptr(), 0) != 0 {
            // Busy (someone walked in): detach so the directory can go.
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datastores_are_found_two_levels_down_and_not_inside_each_other() {
        let dir = tempfile::tempdir().unwrap();
        lifeboat_store::Datastore::init(&dir.path().join("a/b")).unwrap();
        lifeboat_store::Datastore::init(&dir.path().join("top")).unwrap();
        lifeboat_store::Datastore::init(&dir.path().join("x/y/too-deep")).unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap(); // no packs/: not a datastore
        let found = find_datastores(dir.path());
        let rels: Vec<_> = found.iter().map(|f| f.relative.clone()).collect();
        assert_eq!(rels, vec![PathBuf::from("a/b"), PathBuf::from("top")]);
        assert!(found.iter().all(|f| f.id.is_some() && f.problem.is_none()));
    }
}
