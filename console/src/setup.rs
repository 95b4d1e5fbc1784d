//! Applying what the user chose: each part is validated before anything
//! is written, the disk (the step most likely to fail) goes first, and the
//! files are written only when it succeeded.

use crate::settings::{self, FileChange, NetworkSettings, TimeSettings};
use crate::system::Daemon;
use anyhow::{bail, Context, Result};
use lifeboat_disks::{Disk, FsType};
use std::path::{Path, PathBuf};

/// Marker written when the first-boot wizard finished: later boots show
/// the status screen.
pub const SETUP_DONE: &str = "var/lib/lifeboat/console-setup.done";

/// Where the datastore goes inside a file system the console formatted.
pub const DATASTORE_DIR: &str = "datastore";

/// What to do with a disk.
#[derive(Clone, Debug)]
pub enum DiskChoice {
    /// No datastore disk now (the daemon's default datastore in its state
    /// directory is used).
    Skip,
    /// Partition, mkfs, mount, and create a datastore in it.
    Format { disk: Box<Disk>, fstype: FsType },
    /// Mount an existing file system and serve the datastore in it.
    Import { disk: PathBuf, device: PathBuf, fstype: String, uuid: String, relative: PathBuf },
}

impl DiskChoice {
    pub fn describe(&self) -> String {
        match self {
            DiskChoice::Skip => "no data disk now (datastore in /var/lib/lifeboat)".into(),
            DiskChoice::Format { disk, fstype } => {
                format!("FORMAT {} ({}) as {} labelled {}: everything on it is erased", disk.path.display(), lifeboat_disks::human_size(disk.size), fstype.name(), fstype.label())
            }
            DiskChoice::Import { device, relative, .. } => {
                format!("import the datastore {} on {} (nothing is erased)", display_rel(relative), device.display())
            }
        }
    }
}

fn display_rel(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        "at the top".into()
    } else {
        format!("\"{}\"", rel.display())
    }
}

/// The whole first-boot setup.
#[derive(Clone, Debug)]
pub struct SetupPlan {
    pub network: NetworkSettings,
    pub hostname: String,
    pub time: TimeSettings,
    pub password: String,
    pub disk: DiskChoice,
}

/// The console's view of the system it configures.
pub struct Env {
    pub root: PathBuf,
    pub daemon: Box<dyn Daemon>,
    /// Only these disks are listed (empty: all).
    pub only_disks: Vec<PathBuf>,
    pub zoneinfo: PathBuf,
    /// The live system (ISO) this console runs in, if it does: then it
    /// offers "Install to disk", and the live medium's disk is never
    /// offered for anything.
    pub live: Option<lifeboat_install::LiveSource>,
}

impl Env {
    /// True when the console configures the running system (root `/`):
    /// then changes are also made live (networkctl reload, hostname).
    pub fn live(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn system_paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.root.clone()];
        v.extend(self.live.as_ref().map(|l| l.medium.clone()));
        v
    }

    pub fn list_disks(&self) -> Result<Vec<Disk>> {
        let opts = lifeboat_disks::ListOptions { only: self.only_disks.clone(), system_paths: self.system_paths(), search_datastores: true };
        Ok(lifeboat_disks::list_disks(&opts)?)
    }

    pub fn setup_done(&self) -> bool {
        self.root.join(SETUP_DONE).exists()
    }

    fn write(&self, changes: &[FileChange]) -> Result<()> {
        for c in changes {
            c.apply(&self.root).with_context(|| format!("cannot write {}", self.root.join(c.path()).display()))?;
        }
        Ok(())
    }

    fn run_live(&self, program: &str, args: &[&str]) {
        if self.live() {
            // Best effort: the files are what counts at the next boot.
            let _ = std::process::Command::new(program).args(args).status();
        }
    }

    pub fn apply_network(&self, net: &NetworkSettings) -> Result<()> {
        self.write(&settings::network_changes(net))?;
        self.run_live("networkctl", &["reload"]);
        Ok(())
    }

    pub fn apply_hostname(&self, hostname: &str) -> Result<()> {
        self.write(&settings::hostname_changes(&self.root, hostname))?;
        self.run_live("hostname", &[hostname]);
        Ok(())
    }

    pub fn apply_time(&self, time: &TimeSettings) -> Result<()> {
        self.write(&settings::time_changes(time))?;
        self.run_live("systemctl", &["try-restart", "systemd-timesyncd.service"]);
        Ok(())
    }

    pub fn apply_password(&self, password: &str) -> Result<()> {
        self.daemon.set_admin_password(password).context("cannot store the admin password")?;
        self.daemon.reload()
    }

    /// Checks the disk choice against the disk as it is now; touches
    /// nothing.
    pub fn check_disk(&self, choice: &DiskChoice) -> Result<()> {
        match choice {
            DiskChoice::Skip => Ok(()),
            DiskChoice::Format { disk, fstype } => {
                let req = self.format_request(disk, *fstype);
                lifeboat_disks::check_format(&req)?;
                Ok(())
            }
            DiskChoice::Import { disk, device, uuid, .. } => {
                let now = lifeboat_disks::find_disk(disk, &self.system_paths())?;
                let still = now.filesystems().any(|fs| fs.uuid.as_deref() == Some(uuid) && fs.device.as_deref() == Some(device));
                if !still {
                    bail!("{} no longer holds the file system {uuid}: list the disks again", disk.display());
                }
                Ok(())
            }
        }
    }

    fn format_request(&self, disk: &Disk, fstype: FsType) -> lifeboat_disks::FormatRequest {
        lifeboat_disks::FormatRequest { disk: disk.clone(), fstype, root: self.root.clone(), system_paths: self.system_paths() }
    }

    /// Formats or imports, and registers the datastore with the daemon.
    /// Returns (name, path) of the datastore.
    pub fn apply_disk(&self, choice: &DiskChoice) -> Result<Option<(String, PathBuf)>> {
        let (prepared, relative) = match choice {
            DiskChoice::Skip => return Ok(None),
            DiskChoice::Format { disk, fstype } => {
                let p = lifeboat_disks::format_disk(&self.format_request(disk, *fstype))?;
                let store = p.mounted_at.join(DATASTORE_DIR);
                lifeboat_store::Datastore::init(&store).with_context(|| format!("cannot create the datastore in {}", store.display()))?;
                (p, PathBuf::from(DATASTORE_DIR))
            }
            DiskChoice::Import { device, fstype, uuid, relative, .. } => {
                let req = lifeboat_disks::ImportRequest { device: device.clone(), fstype: fstype.clone(), uuid: uuid.clone(), root: self.root.clone() };
                let p = lifeboat_disks::import_filesystem(&req)?;
                let store = p.mounted_at.join(relative);
                lifeboat_store::DatastoreConfig::load(&store).with_context(|| format!("{} is not a usable datastore", store.display()))?;
                (p, relative.clone())
            }
        };
        let path = prepared.mount_point.join(&relative);
        let name = self.datastore_name(&prepared.uuid, &relative, &path)?;
        self.daemon.add_datastore(&name, &path)?;
        Ok(Some((name, path)))
    }

    /// `data-<uuid8>` for a formatted disk; an imported datastore keeps
    /// its directory name unless another datastore has it.
    fn datastore_name(&self, uuid: &str, relative: &Path, path: &Path) -> Result<String> {
        let short: String = uuid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
        let fallback = format!("data-{short}");
        let wanted = relative
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n != DATASTORE_DIR && !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or_else(|| fallback.clone());
        let taken = self.daemon.datastores()?.into_iter().any(|d| d.name == wanted && d.path != path);
        Ok(if taken { format!("{wanted}-{short}") } else { wanted })
    }

    /// The whole plan: validate, disk, files, password, marker.
    pub fn apply_plan(&self, plan: &SetupPlan) -> Result<Option<(String, PathBuf)>> {
        // Everything is rendered and checked before the first change.
        let mut files = settings::network_changes(&plan.network);
        files.extend(settings::hostname_changes(&self.root, &plan.hostname));
        files.extend(settings::time_changes(&plan.time));
        settings::parse_password(&plan.password, &plan.password)?;
        self.check_disk(&plan.disk).context("nothing was changed")?;
        let datastore = self.apply_disk(&plan.disk)?;
        self.write(&files)?;
        self.apply_password(&plan.password)?;
        self.run_live("networkctl", &["reload"]);
        self.run_live("hostname", &[&plan.hostname]);
        let marker = FileChange::Write { path: SETUP_DONE.into(), content: format!("{}\n", unix_now()) };
        self.write(&[marker])?;
        Ok(datastore)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
