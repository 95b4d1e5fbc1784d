//! The types of Lifeboat's REST API: what the daemon serves, what the CLI
//! in remote mode and the agents send. Kept apart from the server (as
//! Proxmox keeps `pbs-api-types`) so clients link none of actix, and so
//! the OpenAPI document is generated from the same definitions the code
//! uses.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod health;
mod smtp;
mod vm;
pub use health::{DatastoreSpace, DiskIo, HealthReport, LoadAverages, Memory};
pub use smtp::{SmtpSecurity, SmtpSettings, PASSWORD_MASK};
pub use vm::{ExportCreate, ExportInfo, ExportProtocol, InstantVmInfo, VmDiskInfo, VmInfo, VmRegister, VmSource, VmStatus};

/// What a caller may do. Each API token carries one; the admin's session
/// is `Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, including users, tokens, datastores and settings.
    /// Its jobs read under `backup_roots` and write under
    /// `restore_roots` like an operator's, but restore owners, set-ID
    /// bits and device nodes; with the `original_location` capability
    /// (tokens only) also outside the roots and into system trees.
    /// Never the state or config directory, nor a datastore.
    Admin,
    /// Runs and cancels jobs, restores, deletes snapshots, edits
    /// schedules. Its backups read only under `backup_roots`, its
    /// restores write only under `restore_roots`, without set-ID bits,
    /// device nodes, or owners (unless the root says `owners = true`).
    Operator,
    /// Reads everything an operator sees, changes nothing; reads no
    /// file on the appliance.
    ReadOnly,
    /// Uploads backups (agents) and nothing else; reads and writes no
    /// file on the appliance but its uploads into the datastore.
    BackupOnly,
}

/// The permission a route needs; `Role::allows` maps roles onto them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Operate,
    Backup,
    Admin,
}

impl Role {
    pub fn allows(self, p: Permission) -> bool {
        match self {
            Role::Admin => true,
            Role::Operator => matches!(p, Permission::Read | Permission::Operate | Permission::Backup),
            Role::ReadOnly => p == Permission::Read,
            Role::BackupOnly => p == Permission::Backup,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::ReadOnly => "read-only",
            Role::BackupOnly => "backup-only",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "read-only" | "readonly" => Ok(Role::ReadOnly),
            "backup-only" | "backup" => Ok(Role::BackupOnly),
            _ => Err(format!("unknown role {s:?}: use admin, operator, read-only or backup-only")),
        }
    }
}

/// An error as every route reports it (4xx and 5xx alike).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    /// A stable machine-readable kind: `unauthorized`, `forbidden`,
    /// `not-found`, `bad-request`, `conflict`, `internal`, `bad-gateway`
    /// (a server the appliance talks to, like the SMTP relay, failed).
    pub error: String,
    /// What went wrong and what to do, for a human.
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// Bearer token for the `Authorization` header.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenCreate {
    /// A name for people: the script, host or agent using it.
    pub name: String,
    pub role: Role,
    /// Admin tokens only: jobs may restore to (and back up from) any
    /// path but the daemon's own state, config and datastores, outside
    /// `restore_roots`/`backup_roots` and into system trees such as
    /// /etc ("restore to the original location").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub original_location: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created: DateTime<Utc>,
    /// Set for tokens registered as ingest agents.
    #[serde(default)]
    pub agent: bool,
    /// The "restore to the original location" capability (see `TokenCreate`).
    #[serde(default)]
    pub original_location: bool,
}

/// Returned once, when a token is made: the secret is never shown again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// `<id>.<secret>`, the value for `Authorization: Bearer`.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatastoreCreate {
    /// Short name: letters, digits, `-` and `_`.
    pub name: String,
    /// Absolute directory on the appliance; created if absent.
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatastoreInfo {
    pub name: String,
    pub path: String,
    pub encrypted: bool,
    pub append_only: bool,
    /// How new blobs are compressed: `auto`, `lz4`, `zstd:<level>` or `none`.
    pub compression: String,
    pub snapshots: u64,
    /// Bytes in pack files.
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfo {
    pub id: String,
    pub time: DateTime<Utc>,
    pub hostname: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    /// `files` or `vm`.
    pub kind: String,
    pub files: u64,
    pub bytes: u64,
    /// Some of its data was lost (see `datastore repair`).
    pub damaged: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RestoreRequest {
    /// Directory on the appliance to restore into.
    pub target: String,
    /// Only these paths of the snapshot (default: all).
    #[serde(default)]
    pub include: Vec<String>,
}

/// Which guest file system of a VM snapshot: query parameters of the
/// `vm-files` endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct VmFilesQuery {
    /// The disk's id; default: the VM's only disk.
    #[serde(default)]
    pub disk: Option<String>,
    /// A partition number or `VG/LV`; default: the only one with a file
    /// system.
    #[serde(default)]
    pub partition: Option<String>,
    /// A path in the guest (`/etc`); without it, `vm-files` lists the
    /// disk's partitions instead.
    #[serde(default)]
    pub path: Option<String>,
}

/// A partition, or an LVM volume, of a VM snapshot's disk.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmPartitionInfo {
    /// The partition number, or `VG/LV`; what `partition` takes.
    pub name: String,
    pub start: u64,
    pub size: u64,
    pub fstype: Option<String>,
    pub label: Option<String>,
    /// Why its files cannot be read here, when they cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
}

/// One file of a guest, as `ls -l` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmFileEntry {
    pub name: String,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// What `GET .../vm-files` answers: the disk's partitions (without
/// `path`), or the entries of a guest directory (one entry for a file).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmFilesListing {
    pub disk: String,
    /// `gpt`, `dos`, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<VmPartitionInfo>,
    /// The partition listed (with `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<VmFileEntry>,
}

/// Body of `POST .../vm-restore-files`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmRestoreFilesRequest {
    /// Guest paths to copy.
    pub paths: Vec<String>,
    /// Directory on the appliance (under `restore_roots`).
    pub target: String,
    #[serde(default)]
    pub disk: Option<String>,
    #[serde(default)]
    pub partition: Option<String>,
}

/// Retention rules, restic semantics (docs/retention.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeepRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yearly: Option<u32>,
}

impl KeepRules {
    pub fn is_empty(&self) -> bool {
        *self == KeepRules::default()
    }
}

/// What a file backup takes and how it is labelled: one definition for
/// a backup on the appliance's command line, an agent's, a `backup` job
/// and the ingest library (the doc comments are the CLI's help).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct BackupSelection {
    /// Tag the snapshot (repeatable)
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long = "tag", value_name = "T"))]
    pub tags: Vec<String>,
    /// Leave out paths matching GLOB: with a '/' the absolute path, else the name (repeatable)
    #[serde(default, rename = "exclude")]
    #[cfg_attr(feature = "clap", arg(long = "exclude", value_name = "GLOB"))]
    pub excludes: Vec<String>,
    /// Stay on each source's file system: mount points below it are kept as empty directories
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long, short = 'x'))]
    pub one_file_system: bool,
    /// Leave out files and directories with the nodump inode flag (chattr +d)
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long))]
    pub exclude_nodump: bool,
}

/// What a job does. The daemon runs these; a schedule names one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum JobSpec {
    /// Back up directories on the appliance into a datastore.
    Backup {
        datastore: String,
        paths: Vec<String>,
        #[serde(flatten)]
        select: BackupSelection,
    },
    /// Restore a snapshot into a directory on the appliance.
    Restore {
        datastore: String,
        snapshot: String,
        target: String,
        #[serde(default)]
        include: Vec<String>,
    },
    /// `check`, with `read_data` every blob is read and hashed.
    Verify {
        datastore: String,
        #[serde(default)]
        read_data: bool,
    },
    /// Remove snapshots by keep rules.
    Forget { datastore: String, keep: KeepRules },
    /// Reclaim space.
    Gc { datastore: String },
    /// A backup uploaded by a remote agent (made by the agent API, not
    /// startable through `POST /api/jobs`).
    AgentBackup { datastore: String, agent: String, hostname: String, paths: Vec<String> },
    /// Back up a registered VM (see `/api/vms`): all disks at one point
    /// in time, incremental through dirty bitmaps after the first run.
    VmBackup {
        datastore: String,
        /// The VM's registered name.
        vm: String,
        /// Read every disk whole (ignore the changed-block bitmaps).
        #[serde(default)]
        full: bool,
        #[serde(default)]
        tags: Vec<String>,
    },
    /// Restore a VM snapshot's disks to image files in a directory on the
    /// appliance (`<disk>.<format>` plus `vm.json`); with `platform`, for
    /// another platform (docs/cross-platform-restore.md): hardware
    /// mapped, disks in its format, its description beside them, the
    /// guest repaired, `restore-report.json`.
    VmRestore {
        datastore: String,
        snapshot: String,
        target: String,
        /// `raw` (default) or `qcow2`; with `platform` also `vmdk` or
        /// `vhdx` (default then: the platform's own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<String>,
        /// `kvm`, `openstack`, `vmware` or `hyperv`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
        /// Several platforms at once, instead of `platform`, from one
        /// read of the datastore: each `PLATFORM` or `PLATFORM:FORMAT`,
        /// written into `<target>/<platform>` (with `-<format>` when a
        /// platform is named twice). The job fails if any of them fails;
        /// the others are written all the same.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        platforms: Vec<String>,
        /// `KEY=VALUE` overrides of the platform's mapping (`disk_bus`,
        /// `nic_model`, `firmware`, `machine`, `video`, `mac`, `network`,
        /// `package`, `domain_type`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        map: Vec<String>,
        /// Restore the guest as it is, without repairing it for the
        /// platform.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_repair: bool,
    },
    /// Boot VM snapshots in an isolated lab network straight from the
    /// datastore and probe them (ping, heartbeat, screenshot, scripts);
    /// the job fails when a VM fails a probe. Reports:
    /// `GET /api/datastores/{name}/lab-reports`.
    LabVerify {
        datastore: String,
        /// A lab definition (`/api/labs`) to run: its VMs, probes and boot
        /// timeout are used where `vms` is left empty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lab: Option<String>,
        /// The application group, booted in this order.
        #[serde(default)]
        vms: Vec<LabVmSpec>,
        /// Comma-separated: ping, heartbeat, screenshot, script=NAME (a
        /// script in `lab_scripts_dir`).
        #[serde(default = "default_probes")]
        probes: String,
        /// Seconds a guest may take from power-on to answering.
        #[serde(default = "default_boot_timeout")]
        boot_timeout: u64,
        /// Masquerade map, DNS and DHCP inside the lab.
        #[serde(default, skip_serializing_if = "LabNetworkSpec::is_empty")]
        network: LabNetworkSpec,
    },
    /// Boot a VM snapshot straight from the datastore (instant restore):
    /// its disks served from the datastore through throw-away overlays,
    /// QEMU started with the backed-up hardware. The job ends when the VM
    /// runs; `/api/vms` then lists it as instant-restored until it is
    /// stopped (`DELETE /api/vms/{name}`) or migrated back.
    VmInstantRestore {
        datastore: String,
        /// `vm:NAME` (the newest backup of that VM), a snapshot id, a
        /// prefix or `latest`.
        snapshot: String,
        /// Name in `/api/vms`; default: the VM's name with `-instant`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// `none` (NICs present, no cable: the default, so a copy never
        /// meets its original on the network), `user` (QEMU's NAT) or
        /// `tap:IFNAME` (`%d` numbers the NICs).
        #[serde(default = "default_instant_net")]
        net: String,
        /// Start with the CPUs stopped.
        #[serde(default)]
        paused: bool,
        /// Boot with the hardware of another platform (`kvm`,
        /// `openstack`, `vmware`): the mapping of a cross-platform restore,
        /// the guest repaired inside the overlays first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
        /// `KEY=VALUE` overrides of the platform's mapping table.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        map: Vec<String>,
        /// Map the hardware without repairing the guest.
        #[serde(default)]
        no_repair: bool,
    },
    /// Move an instant-restored VM onto local images while it runs
    /// (`<disk>.<format>` in `target`); afterwards it is an ordinary
    /// registered VM, its exports closed.
    VmMigrateBack {
        /// The datastore the VM was restored from.
        datastore: String,
        /// The instant-restored VM's name in `/api/vms`.
        vm: String,
        target: String,
        /// `qcow2` (default) or `raw`.
        #[serde(default = "qcow2_format")]
        format: String,
    },
    /// Copy files out of a VM snapshot's guest file system into a
    /// directory on the appliance (docs/vm-files.md), read-only from the
    /// backup: modes, times and symlinks kept; owners, set-ID bits and
    /// device nodes as for `restore`.
    VmRestoreFiles {
        datastore: String,
        snapshot: String,
        /// Guest paths (files or directories), each copied into `target`
        /// under its own name.
        paths: Vec<String>,
        target: String,
        /// The disk's id; default: the VM's only disk.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disk: Option<String>,
        /// A partition number or `VG/LV`; default: the only one with a
        /// file system.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<String>,
    },
}

fn default_instant_net() -> String {
    "none".into()
}

fn qcow2_format() -> String {
    "qcow2".into()
}

/// One VM of a lab run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LabVmSpec {
    /// `vm:NAME` (the newest backup of that VM), a snapshot id, a prefix
    /// or `latest`.
    pub snapshot: String,
    /// The guest's address in the lab, `ADDR/PREFIX`; without it qemu-ga
    /// is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Seconds to wait after the previous VM's boot.
    #[serde(default)]
    pub delay: u64,
}

/// Services inside a lab network besides isolation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LabNetworkSpec {
    /// Production IPv4 address -> the guest's lab address: probes and
    /// scripts reach the guest under its production address.
    #[serde(default)]
    pub masquerade: std::collections::BTreeMap<String, String>,
    /// Host names the lab's DNS server answers (name -> IPv4 address);
    /// scripts in the lab resolve through it.
    #[serde(default)]
    pub dns: std::collections::BTreeMap<String, String>,
    /// Serve DHCP in the lab: each VM with an `ip` gets that address for
    /// its first NIC's MAC; others get one from a pool.
    #[serde(default)]
    pub dhcp: bool,
}

impl LabNetworkSpec {
    pub fn is_empty(&self) -> bool {
        self.masquerade.is_empty() && self.dns.is_empty() && !self.dhcp
    }
}

/// A lab definition (`/api/labs`): VM backups verified together, how,
/// and when besides on demand and by schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LabDefinition {
    /// Letters, digits, `-`, `_`.
    pub name: String,
    pub datastore: String,
    /// The application group, booted in this order (usually `vm:NAME`:
    /// that VM's newest backup).
    pub vms: Vec<LabVmSpec>,
    /// Comma-separated: ping, heartbeat, screenshot, script=NAME.
    #[serde(default = "default_probes")]
    pub probes: String,
    #[serde(default = "default_boot_timeout")]
    pub boot_timeout: u64,
    /// Verify after every successful backup of one of its VMs.
    #[serde(default)]
    pub after_backup: bool,
    #[serde(default, skip_serializing_if = "LabNetworkSpec::is_empty")]
    pub network: LabNetworkSpec,
    /// When to mail the run's report (summary in the body, the HTML
    /// report attached).
    #[serde(default)]
    pub notify: NotifyWhen,
}

/// A lab run's report, as listed by `GET /api/datastores/{name}/lab-reports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LabReportInfo {
    pub id: String,
    pub passed: bool,
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    /// VM names with their verdicts.
    pub vms: Vec<(String, bool)>,
}

fn default_probes() -> String {
    "ping,heartbeat,screenshot".into()
}

fn default_boot_timeout() -> u64 {
    180
}

impl JobSpec {
    pub fn datastore(&self) -> &str {
        match self {
            JobSpec::Backup { datastore, .. }
            | JobSpec::Restore { datastore, .. }
            | JobSpec::Verify { datastore, .. }
            | JobSpec::Forget { datastore, .. }
            | JobSpec::Gc { datastore }
            | JobSpec::AgentBackup { datastore, .. }
            | JobSpec::VmBackup { datastore, .. }
            | JobSpec::VmRestore { datastore, .. }
            | JobSpec::LabVerify { datastore, .. }
            | JobSpec::VmInstantRestore { datastore, .. }
            | JobSpec::VmMigrateBack { datastore, .. }
            | JobSpec::VmRestoreFiles { datastore, .. } => datastore,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::Backup { .. } => "backup",
            JobSpec::Restore { .. } => "restore",
            JobSpec::Verify { .. } => "verify",
            JobSpec::Forget { .. } => "forget",
            JobSpec::Gc { .. } => "gc",
            JobSpec::AgentBackup { .. } => "agent-backup",
            JobSpec::VmBackup { .. } => "vm-backup",
            JobSpec::VmRestore { .. } => "vm-restore",
            JobSpec::LabVerify { .. } => "lab-verify",
            JobSpec::VmInstantRestore { .. } => "vm-instant-restore",
            JobSpec::VmMigrateBack { .. } => "vm-migrate-back",
            JobSpec::VmRestoreFiles { .. } => "vm-restore-files",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Running,
    Succeeded,
    /// Finished, but some inputs could not be read (exit code 3 in the CLI).
    Warnings,
    Failed,
    Cancelled,
    /// The daemon stopped while it ran; its partial data is left for gc.
    Interrupted,
    /// A scheduled run that did not start because the previous run of the
    /// same schedule was still going.
    Skipped,
}

impl JobState {
    pub fn is_finished(self) -> bool {
        self != JobState::Running
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobProgress {
    /// What the job is doing now, e.g. `scanning`, `backing up`, `committing`.
    pub phase: String,
    pub files_done: u64,
    pub bytes_done: u64,
    /// Known once the scan is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobInfo {
    pub id: String,
    pub spec: JobSpec,
    pub state: JobState,
    /// The schedule that started it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    pub started: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<DateTime<Utc>>,
    pub progress: JobProgress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it failed, beside the message (absent unless failed or cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<JobErrorKind>,
    /// Kind-specific result (a backup's summary, a check's report, ...).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub result: serde_json::Value,
}

/// What a failed job's error means for the admin's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobErrorKind {
    /// Stopped on request (a cancel, the daemon stopping).
    Cancelled,
    /// The job's own request is wrong (a format, a name, empty rules):
    /// the same request fails again; fix it.
    Invalid,
    /// Something it names is not there (a snapshot, a VM, a path in a
    /// snapshot).
    NotFound,
    /// Refused by policy: confinement roots, an append-only datastore,
    /// a snapshot or VM in use, a lock held.
    Refused,
    /// The datastore is damaged (a missing or corrupt blob, pack, tree):
    /// run `check`, then `repair`.
    Damaged,
    /// Anything else while it ran (an I/O error, QEMU, a guest); the
    /// message names it.
    Failed,
}

/// When to mail about a schedule's runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyWhen {
    Never,
    #[default]
    Failure,
    Always,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleSpec {
    pub name: String,
    /// Cron expression with seconds: `sec min hour day-of-month month
    /// day-of-week [year]`, e.g. `0 30 2 * * *` (02:30 daily), in the
    /// appliance's time zone.
    pub cron: String,
    pub job: JobSpec,
    /// Applied after each successful backup or vm-backup run, to the
    /// snapshots of the same source (host and paths, or VM).
    #[serde(default, skip_serializing_if = "KeepRules::is_empty")]
    pub keep: KeepRules,
    #[serde(default)]
    pub notify: NotifyWhen,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleInfo {
    pub id: String,
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<String>,
}

/// One item of the `/api/events` stream (server-sent events, `data:` is
/// this as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
// Events are built once and sent on; the big variant (a whole job) is
// the common one, so boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// A job started or finished (or changed state otherwise).
    JobState { job: JobInfo },
    /// Progress of a running job, at most a few times a second.
    JobProgress { id: String, progress: JobProgress },
    /// A scheduled run was skipped because the previous one still runs.
    ScheduleSkipped { schedule: String, running_job: String },
    /// Anything else an admin should see in the audit trail.
    Notice { message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` while the daemon serves.
    pub status: String,
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared selection is flattened into the `backup` job: its wire
    /// form is the one clients and stored schedules already use.
    #[test]
    fn backup_job_keeps_its_wire_form() {
        let json = serde_json::json!({
            "kind": "backup", "datastore": "main", "paths": ["/srv"],
            "tags": ["t"], "exclude": ["*.tmp"], "one_file_system": true, "exclude_nodump": true
        });
        let spec: JobSpec = serde_json::from_value(json.clone()).unwrap();
        let select = BackupSelection { tags: vec!["t".into()], excludes: vec!["*.tmp".into()], one_file_system: true, exclude_nodump: true };
        assert_eq!(spec, JobSpec::Backup { datastore: "main".into(), paths: vec!["/srv".into()], select });
        assert_eq!(serde_json::to_value(&spec).unwrap(), json);
        // Everything but the paths may be left out.
        let bare: JobSpec = serde_json::from_value(serde_json::json!({"kind": "backup", "datastore": "main", "paths": ["/srv"]})).unwrap();
        assert_eq!(bare, JobSpec::Backup { datastore: "main".into(), paths: vec!["/srv".into()], select: BackupSelection::default() });
    }
}
