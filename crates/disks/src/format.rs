//! Preparing a data disk: one GPT partition, a file system labelled
//! `lifeboat-data`, an fstab entry by UUID, a mount and a new datastore;
//! or importing a file system that already holds one.
//!
//! Everything that can be checked is checked before the disk is touched:
//! the disk is read again (still there, same size, not the system disk,
//! nothing mounted from it), the tools exist.

use crate::error::{DiskError, Result};
use crate::Disk;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The label of the file systems (and the GPT partition) the console
/// creates.
pub const DATA_LABEL: &str = "lifeboat-data";
/// The XFS label the console uses instead: XFS labels hold at most 12
/// bytes, one less than `DATA_LABEL`.
pub(crate) const XFS_DATA_LABEL: &str = "lifeboatdata";
/// GPT type "Linux filesystem data".
const LINUX_FS_GUID: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// The file system `format_disk` creates on a data disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsType {
    /// ext4 (`mkfs.ext4`), labelled `lifeboat-data`.
    Ext4,
    /// XFS (`mkfs.xfs`), labelled `lifeboatdata`; needs at least 320 MiB.
    Xfs,
}

impl FsType {
    /// The type as mount(2), fstab and blkid name it: `ext4`, `xfs`.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
    /// The file system label: `DATA_LABEL`, shortened for XFS.
    pub fn label(self) -> &'static str {
        match self {
            FsType::Ext4 => DATA_LABEL,
            FsType::Xfs => XFS_DATA_LABEL,
        }
    }
    /// Smallest disk, in bytes, the console formats with this type
    /// (32 MiB for ext4, 320 MiB for XFS: mkfs.xfs refuses below 300 MB).
    pub fn min_size(self) -> u64 {
        match self {
            FsType::Ext4 => 32 << 20,
            FsType::Xfs => 320 << 20,
        }
    }
    fn mkfs(self) -> &'static str {
        match self {
            FsType::Ext4 => "mkfs.ext4",
            FsType::Xfs => "mkfs.xfs",
        }
    }
}

/// What to format, as the user saw it when they chose it.
#[derive(Clone, Debug)]
pub struct FormatRequest {
    /// The disk as listed: its path, size and devno are checked again.
    pub disk: Disk,
    /// The file system to create.
    pub fstype: FsType,
    /// The system root that gets the fstab entry and the mount point
    /// (`/` on the appliance, a temporary directory in tests).
    pub root: PathBuf,
    /// Directories that count as system (passed to `find_disk`).
    pub system_paths: Vec<PathBuf>,
}

/// An existing file system to mount for its datastores, as listed
/// (from a [`Filesystem`](crate::Filesystem) of the chosen disk).
#[derive(Clone, Debug)]
pub struct ImportRequest {
    /// The device node to mount (`Filesystem::device`).
    pub device: PathBuf,
    /// Its type as blkid named it (`Filesystem::fstype`), passed to
    /// mount(2) and written to fstab.
    pub fstype: String,
    /// Its UUID as listed (`Filesystem::uuid`): the device must still
    /// carry it, else the import fails with `DiskError::Changed`. The
    /// mount point and the fstab entry are derived from it.
    pub uuid: String,
    /// The system root that gets the fstab entry and the mount point
    /// (`/` on the appliance, a temporary directory in tests).
    pub root: PathBuf,
}

/// The result of formatting or importing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The partition (or whole disk) holding the file system.
    pub device: PathBuf,
    /// The file system type, as written to fstab (`ext4`, `xfs`, ...).
    pub fstype: String,
    /// The file system UUID; fstab names it as `UUID=<uuid>`.
    pub uuid: String,
    /// Mount point as the system sees it (`/srv/lifeboat/data-<uuid8>`,
    /// the UUID's first 8 alphanumerics).
    pub mount_point: PathBuf,
    /// The same under the root: where it is mounted now.
    pub mounted_at: PathBuf,
}

/// The mount point the console uses for the file system with `uuid`:
/// `/srv/lifeboat/data-` and the UUID's first 8 ASCII alphanumerics
/// (dashes dropped), as the system sees it (not under the root).
pub(crate) fn mount_point_for(uuid: &str) -> PathBuf {
    let short: String = uuid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
    PathBuf::from("/srv/lifeboat").join(format!("data-{short}"))
}

fn under_root(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// Checks that `req.disk` can be formatted now: it is still attached with
/// the same size and device number, is not the system disk and nothing
/// on it is in use. Touches nothing.
pub fn check_format(req: &FormatRequest) -> Result<Disk> {
    let now = crate::find_disk(&req.disk.path, &req.system_paths)?;
    if now.size != req.disk.size || now.devno != req.disk.devno {
        return Err(DiskError::Changed {
            disk: req.disk.path.clone(),
            what: format!("it was {} ({}:{}), now it is {} ({}:{})", crate::human_size(req.disk.size), req.disk.devno.0, req.disk.devno.1, crate::human_size(now.size), now.devno.0, now.devno.1),
        });
    }
    // A loop number or a hot-plug slot can be reused by another disk of
    // the same size: the model (a loop device's backing file) and serial
    // must match too.
    if now.model != req.disk.model || now.serial != req.disk.serial {
        return Err(DiskError::Changed {
            disk: req.disk.path.clone(),
            what: format!("it was {}, now it is {}", req.disk.model.as_deref().unwrap_or("an unknown model"), now.model.as_deref().unwrap_or("an unknown model")),
        });
    }
    if let Some(reason) = now.format_refusal() {
        return Err(DiskError::Refused { reason });
    }
    if now.size < req.fstype.min_size() {
        return Err(DiskError::Refused {
            reason: format!("{} holds {}, {} needs at least {}", now.path.display(), crate::human_size(now.size), req.fstype.name(), crate::human_size(req.fstype.min_size())),
        });
    }
    for tool in ["wipefs", "sfdisk", "partx", req.fstype.mkfs()] {
        if which(tool).is_none() {
            return Err(DiskError::Command { program: tool.into(), target: req.disk.path.clone(), detail: "not installed".into() });
        }
    }
    Ok(now)
}

/// Formats the disk and mounts the new file system under the root:
/// wipefs, a GPT with one partition named `lifeboat-data`, mkfs, the
/// fstab entry (by UUID, `nofail`), mount. The datastore itself is the
/// caller's (`lifeboat_store::Datastore::init` in the mount).
pub fn format_disk(req: &FormatRequest) -> Result<Prepared> {
    let disk = check_format(req)?;
    let path = &disk.path;
    run("wipefs", Command::new("wipefs").arg("--all").arg("--quiet").arg(path), path)?;
    let script = format!("label: gpt\nstart=2048, type={LINUX_FS_GUID}, name={DATA_LABEL}\n");
    run_with_input("sfdisk", Command::new("sfdisk").args(["--quiet", "--wipe", "always", "--wipe-partitions", "always"]).arg(path), &script, path)?;
    let partition = partition_node(&disk)?;
    let mut mkfs = Command::new(req.fstype.mkfs());
    match req.fstype {
        FsType::Ext4 => mkfs.args(["-q", "-F", "-L", req.fstype.label()]),
        FsType::Xfs => mkfs.args(["-q", "-f", "-L", req.fstype.label()]),
    };
    run(req.fstype.mkfs(), mkfs.arg(&partition), &partition)?;
    let fs = crate::probe::probe_device(&partition)?.ok_or_else(|| DiskError::Command {
        program: req.fstype.mkfs().into(),
        target: partition.clone(),
        detail: "no file system found on the partition afterwards".into(),
    })?;
    let uuid = fs.uuid.ok_or_else(|| DiskError::Command { program: "blkid".into(), target: partition.clone(), detail: "the new file system has no UUID".into() })?;
    mount_and_record(&partition, req.fstype.name(), &uuid, &req.root)
}

/// Mounts an existing file system (one that holds datastores) under the
/// root and records it in fstab.
pub fn import_filesystem(req: &ImportRequest) -> Result<Prepared> {
    if !req.device.exists() {
        return Err(DiskError::Gone { disk: req.device.clone() });
    }
    match crate::probe::probe_device(&req.device)? {
        Some(fs) if fs.uuid.as_deref() == Some(&req.uuid) => {}
        Some(fs) => return Err(DiskError::Changed { disk: req.device.clone(), what: format!("file system UUID is {} now, was {}", fs.uuid.unwrap_or_default(), req.uuid) }),
        None => return Err(DiskError::Changed { disk: req.device.clone(), what: "the file system is gone".into() }),
    }
    mount_and_record(&req.device, &req.fstype, &req.uuid, &req.root)
}

fn mount_and_record(device: &Path, fstype: &str, uuid: &str, root: &Path) -> Result<Prepared> {
    let mount_point = mount_point_for(uuid);
    let mounted_at = under_root(root, &mount_point);
    std::fs::create_dir_all(&mounted_at).map_err(|e| DiskError::io("create", &mounted_at, e))?;
    let mounts = crate::MountTable::read()?;
    let already = mounts.at(&mounted_at).is_some();
    if !already {
        let src = CString::new(device.as_os_str().as_bytes()).expect("device path has no NUL");
        let target = CString::new(mounted_at.as_os_str().as_bytes()).expect("mount point has no NUL");
        let fstype_c = CString::new(fstype).expect("fstype has no NUL");
        let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype_c.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            return Err(DiskError::Mount { device: device.to_path_buf(), mount_point: mounted_at, source: std::io::Error::last_os_error() });
        }
    }
    crate::fstab_upsert(&root.join("etc/fstab"), &format!("UUID={uuid}"), &mount_point, fstype, "defaults,nofail")?;
    Ok(Prepared { device: device.to_path_buf(), fstype: fstype.into(), uuid: uuid.into(), mount_point, mounted_at })
}

/// Makes the kernel see the new partition and waits for its node.
/// `partx --add` covers loop devices, whose partition scan is off.
fn partition_node(disk: &Disk) -> Result<PathBuf> {
    let suffix = if disk.name.ends_with(|c: char| c.is_ascii_digit()) { "p1" } else { "1" };
    let node = PathBuf::from(format!("/dev/{}{suffix}", disk.name));
    let sys = PathBuf::from(format!("/sys/class/block/{}{suffix}", disk.name));
    // --update first (kernel already knows some partitions), then --add.
    let _ = Command::new("partx").arg("--update").arg(&disk.path).output();
    if !sys.exists() {
        let _ = Command::new("partx").arg("--add").arg(&disk.path).output();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if sys.exists() && node.exists() {
            return Ok(node);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(DiskError::NoPartitionNode { disk: disk.path.clone(), partition: node })
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from)).map(|d| d.join(tool)).find(|p| p.is_file())
}

fn run(program: &str, cmd: &mut Command, target: &Path) -> Result<()> {
    let out = cmd.output().map_err(|e| DiskError::Command { program: program.into(), target: target.into(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(DiskError::Command { program: program.into(), target: target.into(), detail: format!("{} ({})", String::from_utf8_lossy(&out.stderr).trim(), out.status) });
    }
    Ok(())
}

fn run_with_input(program: &str, cmd: &mut Command, input: &str, target: &Path) -> Result<()> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| DiskError::Command { program: program.into(), target: target.into(), detail: e.to_string() })?;
    child.stdin.take().expect("piped stdin").write_all(input.as_bytes()).map_err(|e| DiskError::io("write to", program, e))?;
    let out = child.wait_with_output().map_err(|e| DiskError::io("wait for", program, e))?;
    if !out.status.success() {
        return Err(DiskError::Command { program: program.into(), target: target.into(), detail: format!("{} ({})", String::from_utf8_lossy(&out.stderr).trim(), out.status) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_named_by_uuid() {
        assert_eq!(mount_point_for("1b2c3d4e-aaaa-bbbb"), Path::new("/srv/lifeboat/data-1b2c3d4e"));
        assert_eq!(under_root(Path::new("/tmp/r"), Path::new("/srv/x")), Path::new("/tmp/r/srv/x"));
    }
}
