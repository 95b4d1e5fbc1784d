//! Where server-side jobs may read and write on the appliance.
//!
//! The daemon runs as root, and a token's role says which API calls it
//! may make, not which files those calls touch. So every path a job
//! reads (backup sources) or writes (restore and vm-restore targets,
//! datastores added through the API) is checked here first:
//!
//! * it must lie under one of the admin-configured roots
//!   (`backup_roots`, `restore_roots` in lifeboat.toml);
//! * it must not be, lie in, or contain a protected tree: the state
//!   directory, the config directory (and the config file if elsewhere), datastores and their key files,
//!   and the system trees (`/etc`, `/usr`, ...). An admin token with the
//!   `original_location` capability may pass roots and system trees (to
//!   restore a machine's files where they were), never the daemon's own
//!   state, config or datastores;
//! * it is resolved beneath its root without following any symlink
//!   (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or a walk
//!   with `O_NOFOLLOW` where the kernel lacks openat2), so neither `..`
//!   nor a symlink planted inside the root leads out of it.
//!
//! The lexical check needs no file system and runs in the API before a
//! job exists; the resolution runs again in the job, which then works on
//! the directory descriptor it got, never on the path string.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

/// Trees no job may read or write, whoever asks (unless the capability
/// `original_location` lifts it, see [`ConfineError::System`]).
pub const SYSTEM_TREES: &[&str] = &["/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root", "/run", "/sbin", "/sys", "/usr", "/var/lib/lifeboat", "/var/log"];

/// The daemon's one `Confinement`, shared by the API (early checks) and
/// the jobs actor (checks at run time); datastores added through the
/// API are protected from then on.
pub type SharedConfinement = std::sync::Arc<parking_lot::RwLock<Confinement>>;

impl Confinement {
    /// Wraps it for sharing between the API and the jobs actor.
    pub fn shared(self) -> SharedConfinement {
        std::sync::Arc::new(parking_lot::RwLock::new(self))
    }
}

/// What a path is used for: which roots apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathUse {
    /// Read by a backup job (`backup_roots`).
    BackupSource,
    /// Written by a restore or vm-restore job (`restore_roots`).
    RestoreTarget,
    /// A datastore added through the API (admin only; no roots, but
    /// never a protected tree).
    Datastore,
}

impl PathUse {
    fn setting(self) -> &'static str {
        match self {
            PathUse::BackupSource => "backup_roots",
            PathUse::RestoreTarget => "restore_roots",
            PathUse::Datastore => "datastore",
        }
    }
}

/// What the caller may do beyond its role's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grant {
    /// An admin (session or admin token): restores keep set-ID bits and
    /// device nodes, and owners everywhere.
    pub admin: bool,
    /// An admin token with the `original_location` capability: may read
    /// and write outside the roots and in system trees.
    pub original_location: bool,
}

/// Why a path was refused or could not be opened. The lexical check
/// names the path as the caller gave it, the resolution (`Symlink`,
/// `NotDir`, `Io`) the normalised path; the messages say what to do
/// instead.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// The path is relative.
    #[error("{path:?} must be an absolute path on the appliance")]
    NotAbsolute {
        /// The path as given.
        path: String,
    },
    /// The path holds a `..` component (never resolved lexically).
    #[error("{path:?} contains a `..` segment: name the directory directly")]
    DotDot {
        /// The path as given.
        path: String,
    },
    /// The path lies under none of the roots for its use.
    #[error("{path:?} is outside the {setting} configured in lifeboat.toml ({roots}): use a path under one of them, or ask an admin to add a root")]
    OutsideRoots {
        /// The path as given.
        path: String,
        /// The config key that lists the roots (`backup_roots`, ...).
        setting: &'static str,
        /// Those roots, comma-separated, or `none`.
        roots: String,
    },
    /// The path is, lies in or contains a protected tree (state, config,
    /// a datastore or key file): refused to everyone.
    #[error("{path:?} is or holds {what} ({tree}), which no job may {verb}")]
    Protected {
        /// The path as given.
        path: String,
        /// What the tree is, e.g. `the daemon's state directory`.
        what: String,
        /// The protected tree.
        tree: String,
        /// `read` (backup source) or `write`.
        verb: &'static str,
    },
    /// The path is, lies in or contains a system tree ([`SYSTEM_TREES`],
    /// or `/` itself) and the caller lacks `original_location`.
    #[error("{path:?} is or holds a system tree ({tree}): only an admin token with the original_location capability may {verb} it")]
    System {
        /// The path as given.
        path: String,
        /// The system tree it hit.
        tree: String,
        /// `read` (backup source) or `write`.
        verb: &'static str,
    },
    /// Resolving beneath the root met a symlink (or a way out of the root).
    #[error("{path:?}: {at} is a symlink or leads out of {root}; jobs do not follow symlinks beneath their roots")]
    Symlink {
        /// The checked path, root joined with the rest.
        path: String,
        /// Where: the path up to the offending component, or the whole
        /// relative part when openat2 refused it in one call.
        at: String,
        /// The root resolution started from.
        root: String,
    },
    /// A component that must be a directory is something else.
    #[error("{path:?}: {at} is not a directory")]
    NotDir {
        /// The checked path, root joined with the rest.
        path: String,
        /// The path up to the component that is not a directory.
        at: String,
    },
    /// Opening or creating failed for another reason (not found,
    /// permission, ...); the source names the component.
    #[error("{path:?}: {source}")]
    Io {
        /// The checked path, root joined with the rest.
        path: String,
        /// The OS error, annotated with the component where it can be.
        source: std::io::Error,
    },
}

impl ConfineError {
    /// Refused by policy (HTTP 403), as against a malformed request
    /// (400) or a failing file system.
    pub fn is_forbidden(&self) -> bool {
        !matches!(self, ConfineError::NotAbsolute { .. } | ConfineError::Io { .. })
    }
}

/// A root from lifeboat.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// The root directory, as configured.
    pub path: PathBuf,
    /// Restores under it keep the backed-up owners (uid/gid) for
    /// non-admin callers too.
    pub owners: bool,
}

/// A checked path: its root and the rest beneath it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The root the path lies under (`/` for an `original_location`
    /// caller or a datastore outside every root).
    pub root: PathBuf,
    /// Normal components only (no `.`, `..`, nor a leading `/`).
    pub rel: PathBuf,
    /// Owners may be restored here (see `Root::owners`, `Grant::admin`).
    pub owners: bool,
}

impl Placement {
    /// The whole path, `root/rel`: for messages, never to open (use
    /// [`open_beneath`]).
    pub fn full(&self) -> PathBuf {
        self.root.join(&self.rel)
    }
}

/// The daemon's confinement: roots and protected trees.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// Where backup jobs may read (`backup_roots`).
    pub backup_roots: Vec<Root>,
    /// Where restore and vm-restore jobs may write (`restore_roots`).
    pub restore_roots: Vec<Root>,
    /// (tree, what it is): never read nor written by a job.
    pub protected: Vec<(PathBuf, String)>,
    /// Lifted by `Grant::original_location`.
    pub system: Vec<PathBuf>,
}

/// A name from untrusted input (a snapshot's disk id) used as one file
/// name: never a path, `.` or `..`.
pub fn check_plain_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') || name.len() > 200 {
        return Err(format!("{name:?} is no plain file name (1-200 bytes, no '/', not . or ..)"));
    }
    Ok(())
}

/// `path` with `.` and repeated slashes dropped; `..` refused (a caller
/// names directories directly: resolving `..` lexically would disagree
/// with the kernel across symlinks).
pub fn normalize(path: &str) -> Result<PathBuf, ConfineError> {
    if !path.starts_with('/') {
        return Err(ConfineError::NotAbsolute { path: path.into() });
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(ConfineError::DotDot { path: path.into() }),
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => return Err(ConfineError::NotAbsolute { path: path.into() }),
        }
    }
    Ok(out)
}

/// `a` is `b` or lies beneath it, or the other way round.
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

impl Confinement {
    /// From the config: its roots, and as protected trees the state
    /// directory, /etc/lifeboat, the config file and every
    /// datastore (`datastores`: configured and added) with its key file.
    pub fn new(cfg: &crate::Config, config_path: Option<&Path>, datastores: &[crate::DatastoreEntry]) -> Confinement {
        let mut protected = vec![(cfg.state_dir.clone(), "the daemon's state directory".to_string())];
        protected.push((PathBuf::from("/etc/lifeboat"), "the daemon's config directory".into()));
        // A config file elsewhere is protected itself (its directory
        // may be a shared one, /tmp in tests).
        if let Some(file) = config_path.filter(|p| !p.starts_with("/etc/lifeboat")) {
            protected.push((file.to_path_buf(), "the daemon's config file".into()));
        }
        let mut c = Confinement {
            backup_roots: cfg.backup_roots.iter().map(|p| Root { path: p.clone(), owners: false }).collect(),
            restore_roots: cfg.restore_roots.iter().map(|r| Root { path: r.path().to_path_buf(), owners: r.owners() }).collect(),
            protected,
            system: SYSTEM_TREES.iter().map(PathBuf::from).collect(),
        };
        for d in datastores {
            c.add_datastore(d);
        }
        c
    }

    /// Protects a datastore (and its key file) added while running.
    pub fn add_datastore(&mut self, d: &crate::DatastoreEntry) {
        self.protected.push((d.path.clone(), format!("datastore {:?}", d.name)));
        if let Some(k) = &d.key_file {
            self.protected.push((k.clone(), format!("the key file of datastore {:?}", d.name)));
        }
    }

    /// The lexical check: absolute, no `..`, under a root, clear of
    /// protected trees. Touches no file.
    pub fn check(&self, path: &str, what: PathUse, grant: Grant) -> Result<Placement, ConfineError> {
        let p = normalize(path)?;
        let verb = if what == PathUse::BackupSource { "read" } else { "write" };
        if p == Path::new("/") {
            return Err(ConfineError::System { path: path.into(), tree: "/".into(), verb });
        }
        // A datastore lives in the state directory by default: one added
        // under <state>/datastores/ is not refused for being inside it.
        let state_datastores = |tree: &Path| what == PathUse::Datastore && p != tree.join("datastores") && p.starts_with(tree.join("datastores"));
        let mut in_state = false;
        for (tree, name) in &self.protected {
            if state_datastores(tree) {
                in_state = true;
                continue;
            }
            if overlaps(&p, tree) {
                return Err(ConfineError::Protected { path: path.into(), what: name.clone(), tree: tree.display().to_string(), verb });
            }
        }
        if !grant.original_location && !in_state {
            if let Some(tree) = self.system.iter().find(|t| overlaps(&p, t)) {
                return Err(ConfineError::System { path: path.into(), tree: tree.display().to_string(), verb });
            }
        }
        let roots: &[Root] = match what {
            PathUse::BackupSource => &self.backup_roots,
            PathUse::RestoreTarget => &self.restore_roots,
            PathUse::Datastore => &[],
        };
        if let Some(r) = roots.iter().filter(|r| p.starts_with(&r.path)).max_by_key(|r| r.path.as_os_str().len()) {
            let rel = p.strip_prefix(&r.path).expect("checked by starts_with").to_path_buf();
            return Ok(Placement { root: r.path.clone(), rel, owners: r.owners || grant.admin });
        }
        if grant.original_location || what == PathUse::Datastore {
            // Beneath "/": still no symlink is followed on the way.
            let rel = p.strip_prefix("/").expect("absolute").to_path_buf();
            return Ok(Placement { root: PathBuf::from("/"), rel, owners: grant.admin });
        }
        let list = roots.iter().map(|r| r.path.display().to_string()).collect::<Vec<_>>().join(", ");
        Err(ConfineError::OutsideRoots { path: path.into(), setting: what.setting(), roots: if list.is_empty() { "none".into() } else { list } })
    }

    /// `check`, then the resolution of what exists of the path beneath
    /// its root (symlinks refused). For the API's early answer; the job
    /// resolves again with [`open_beneath`].
    pub fn check_resolved(&self, path: &str, what: PathUse, grant: Grant) -> Result<Placement, ConfineError> {
        let pl = self.check(path, what, grant)?;
        match open_beneath(&pl, Open::Existing) {
            Ok(_) => Ok(pl),
            // Not there yet: a restore creates it; a backup then fails
            // with "not found", which names the path.
            Err(ConfineError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(pl),
            Err(e) => Err(e),
        }
    }
}

/// How `open_beneath` treats the last component and missing directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Whatever is there (a file or directory), `O_PATH`.
    Existing,
    /// A directory, made (mode 0700) with its missing parents.
    CreateDir,
}

/// Opens `pl.root/pl.rel` without following any symlink: not in `rel`'s
/// components, not the last one. The root itself is the admin's choice
/// and is opened as configured.
pub fn open_beneath(pl: &Placement, how: Open) -> Result<OwnedFd, ConfineError> {
    let full = pl.full().display().to_string();
    if how == Open::CreateDir && !pl.root.exists() {
        // A configured root that is not there yet (the default
        // /srv/lifeboat/restores before the first restore): the admin
        // named it, so it is made, private.
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&pl.root).map_err(|e| ConfineError::Io { path: full.clone(), source: annotate(e, &pl.root) })?;
    }
    let root = open_raw(libc::AT_FDCWD, pl.root.as_os_str().as_bytes(), libc::O_PATH | libc::O_DIRECTORY).map_err(|e| ConfineError::Io { path: full.clone(), source: annotate(e, &pl.root) })?;
    let comps: Vec<&std::ffi::OsStr> = pl.rel.iter().collect();
    if comps.is_empty() {
        return Ok(root);
    }
    if how == Open::Existing {
        // One openat2 call when the kernel has it: it refuses symlinks
        // and `..` out of the root itself, whatever the path holds.
        match openat2_beneath(&root, pl.rel.as_os_str().as_bytes(), libc::O_PATH) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) || e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::EXDEV) => {
                return Err(ConfineError::Symlink { path: full, at: pl.rel.display().to_string(), root: pl.root.display().to_string() })
            }
            Err(e) => return Err(ConfineError::Io { path: full, source: e }),
        }
    }
    // The walk: one component at a time, O_NOFOLLOW, creating as asked.
    let mut dir = root;
    let mut at = pl.root.clone();
    for (i, c) in comps.iter().enumerate() {
        at.push(c);
        let last = i + 1 == comps.len();
        let name = c.as_bytes();
        let flags = if last && how == Open::Existing { libc::O_PATH | libc::O_NOFOLLOW } else { libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW };
        let mut r = open_raw(dir.as_raw_fd(), name, flags);
        if how == Open::CreateDir && matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
            let cname = CString::new(name).map_err(|_| ConfineError::Io { path: full.clone(), source: std::io::ErrorKind::InvalidInput.into() })?;
            if unsafe { libc::mkdirat(dir.as_raw_fd(), cname.as_ptr(), 0o700) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(ConfineError::Io { path: full, source: annotate(e, &at) });
                }
            }
            r = open_raw(dir.as_raw_fd(), name, flags);
        }
        dir = match r {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(ConfineError::Symlink { path: full, at: at.display().to_string(), root: pl.root.display().to_string() }),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                // O_DIRECTORY|O_NOFOLLOW on a symlink gives ENOTDIR on
                // some kernels: tell the two apart.
                let st = lstat_at(&dir, name);
                if st.map(|m| m & libc::S_IFMT == libc::S_IFLNK).unwrap_or(false) {
                    return Err(ConfineError::Symlink { path: full, at: at.display().to_string(), root: pl.root.display().to_string() });
                }
                return Err(ConfineError::NotDir { path: full, at: at.display().to_string() });
            }
            Err(e) => return Err(ConfineError::Io { path: full, source: annotate(e, &at) }),
        };
    }
    if how == Open::CreateDir {
        // O_PATH descriptors cannot be written through (fchmod, ...):
        // reopen the directory itself, still without following.
        return reopen_dir(&dir).map_err(|e| ConfineError::Io { path: full, source: e });
    }
    Ok(dir)
}

/// A directory opened for use (`O_RDONLY | O_DIRECTORY`), from `O_PATH`.
fn reopen_dir(fd: &OwnedFd) -> std::io::Result<OwnedFd> {
    open_raw(fd.as_raw_fd(), b".", libc::O_RDONLY | libc::O_DIRECTORY)
}

fn annotate(e: std::io::Error, at: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", at.display()))
}

fn open_raw(dir: libc::c_int, name: &[u8], flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn lstat_at(dir: &OwnedFd, name: &[u8]) -> Option<libc::mode_t> {
    let c = CString::new(name).ok()?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0).then_some(st.st_mode)
}

/// openat2(dir, rel, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS); ENOSYS on kernels before 5.6 (and EPERM
/// under seccomp filters that do not know it): callers walk instead.
pub fn openat2_beneath(dir: &OwnedFd, rel: &[u8], flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = CString::new(rel).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    let fd = unsafe { libc::syscall(libc::SYS_openat2, dir.as_raw_fd(), c.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>()) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn conf(root: &Path, state: &Path) -> Confinement {
        Confinement {
            backup_roots: vec![Root { path: root.join("src"), owners: false }],
            restore_roots: vec![Root { path: root.join("restores"), owners: false }, Root { path: root.join("owned"), owners: true }],
            protected: vec![(state.to_path_buf(), "the daemon's state directory".into())],
            system: SYSTEM_TREES.iter().map(PathBuf::from).collect(),
        }
    }

    const OP: Grant = Grant { admin: false, original_location: false };

    #[test]
    fn lexical_refusals_name_the_setting() {
        let c = conf(Path::new("/srv/x"), Path::new("/var/lib/lifeboat"));
        let e = c.check("/tmp/elsewhere", PathUse::RestoreTarget, OP).unwrap_err();
        assert!(e.is_forbidden() && e.to_string().contains("restore_roots") && e.to_string().contains("/srv/x/restores"), "{e}");
        let e = c.check("/tmp/elsewhere", PathUse::BackupSource, OP).unwrap_err();
        assert!(e.to_string().contains("backup_roots"), "{e}");
        assert!(matches!(c.check("relative", PathUse::RestoreTarget, OP), Err(ConfineError::NotAbsolute { .. })));
        assert!(!c.check("relative", PathUse::RestoreTarget, OP).unwrap_err().is_forbidden());
        assert!(matches!(c.check("/srv/x/restores/../../../etc", PathUse::RestoreTarget, OP), Err(ConfineError::DotDot { .. })));
        assert!(matches!(c.check("/srv/x/restores/a/..", PathUse::RestoreTarget, OP), Err(ConfineError::DotDot { .. })));
        // Prefix by string is not prefix by path.
        assert!(matches!(c.check("/srv/x/restoresX", PathUse::RestoreTarget, OP), Err(ConfineError::OutsideRoots { .. })));
        let ok = c.check("/srv/x/restores//a/./b/", PathUse::RestoreTarget, OP).unwrap();
        assert_eq!(ok, Placement { root: "/srv/x/restores".into(), rel: "a/b".into(), owners: false });
        assert!(c.check("/srv/x/owned/a", PathUse::RestoreTarget, OP).unwrap().owners);
        assert!(c.check("/srv/x/restores/a", PathUse::RestoreTarget, Grant { admin: true, original_location: false }).unwrap().owners);
        // The state directory and system trees: never, even for an admin.
        let admin = Grant { admin: true, original_location: false };
        for p in ["/var/lib/lifeboat", "/var/lib/lifeboat/datastores/x", "/etc", "/etc/shadow", "/", "/var/lib", "/proc/self/root"] {
            assert!(c.check(p, PathUse::RestoreTarget, admin).unwrap_err().is_forbidden(), "{p}");
            assert!(c.check(p, PathUse::BackupSource, admin).unwrap_err().is_forbidden(), "{p}");
        }
        // original_location lifts roots and system trees, not the state.
        let orig = Grant { admin: true, original_location: true };
        assert_eq!(c.check("/etc/hosts", PathUse::RestoreTarget, orig).unwrap().root, PathBuf::from("/"));
        assert!(matches!(c.check("/var/lib/lifeboat/x", PathUse::RestoreTarget, orig), Err(ConfineError::Protected { .. })));
        assert!(matches!(c.check("/", PathUse::RestoreTarget, orig), Err(ConfineError::System { .. })));
        // Datastores: anywhere but protected trees; inside the state
        // directory's datastores/ only.
        assert!(c.check("/srv/ds2", PathUse::Datastore, admin).is_ok());
        assert!(c.check("/var/lib/lifeboat/datastores/two", PathUse::Datastore, admin).is_ok());
        assert!(c.check("/var/lib/lifeboat/datastores", PathUse::Datastore, admin).is_err());
        assert!(c.check("/var/lib/lifeboat", PathUse::Datastore, admin).is_err());
        assert!(c.check("/etc/ds", PathUse::Datastore, admin).is_err());
    }

    #[test]
    fn resolution_never_follows_symlinks_out() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let state = base.join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(base.join("restores/real")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        // Symlinks planted inside the root: absolute, relative out,
        // relative in (also refused: no symlink is followed at all), and
        // to the state directory.
        symlink(base.join("outside"), base.join("restores/abs")).unwrap();
        symlink("../outside", base.join("restores/rel")).unwrap();
        symlink("real", base.join("restores/inside")).unwrap();
        symlink(&state, base.join("restores/state")).unwrap();
        std::fs::write(base.join("restores/file"), b"x").unwrap();
        let c = conf(base, &state);
        for p in ["abs", "abs/x", "abs/x/y", "rel", "rel/x", "inside/x", "state", "state/x"] {
            let path = base.join("restores").join(p).display().to_string();
            let e = c.check_resolved(&path, PathUse::RestoreTarget, OP).unwrap_err();
            assert!(matches!(e, ConfineError::Symlink { .. }) && e.is_forbidden(), "{p}: {e}");
            let pl = c.check(&path, PathUse::RestoreTarget, OP).unwrap();
            let e = open_beneath(&pl, Open::CreateDir).unwrap_err();
            assert!(matches!(e, ConfineError::Symlink { .. }), "{p}: {e}");
        }
        assert!(std::fs::read_dir(base.join("outside")).unwrap().next().is_none(), "nothing was made outside the root");
        assert!(std::fs::read_dir(&state).unwrap().next().is_none());
        // A file on the way is no directory.
        let pl = c.check(&base.join("restores/file/x").display().to_string(), PathUse::RestoreTarget, OP).unwrap();
        assert!(matches!(open_beneath(&pl, Open::CreateDir), Err(ConfineError::NotDir { .. })));
        // Fine paths: made with their parents, then found.
        let path = base.join("restores/real/a/b").display().to_string();
        let pl = c.check_resolved(&path, PathUse::RestoreTarget, OP).unwrap();
        open_beneath(&pl, Open::CreateDir).unwrap();
        assert!(base.join("restores/real/a/b").is_dir());
        c.check_resolved(&path, PathUse::RestoreTarget, OP).unwrap();
        // The root itself may be a symlink: it is the admin's choice.
        symlink(base.join("restores"), base.join("src")).unwrap();
        c.check_resolved(&base.join("src/real").display().to_string(), PathUse::BackupSource, OP).unwrap();
    }

    #[test]
    fn openat2_works_here() {
        // The kernels Lifeboat ships with have it; the walk covers others.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        symlink("/", dir.path().join("a/up")).unwrap();
        let root = open_raw(libc::AT_FDCWD, dir.path().as_os_str().as_bytes(), libc::O_PATH | libc::O_DIRECTORY).unwrap();
        match openat2_beneath(&root, b"a", libc::O_PATH) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => return,
            r => {
                r.unwrap();
            }
        }
        assert_eq!(openat2_beneath(&root, b"a/up", libc::O_PATH).unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(openat2_beneath(&root, b"../", libc::O_PATH).unwrap_err().raw_os_error(), Some(libc::EXDEV));
        assert_eq!(openat2_beneath(&root, b"/etc", libc::O_PATH).unwrap_err().raw_os_error(), Some(libc::EXDEV));
    }
}
