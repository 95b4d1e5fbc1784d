//! The types of Lifeboat's REST API: what the daemon serves, what the CLI
//! in remote mode and the agents send. Kept apart from the server (as
//! Proxmox keeps `pbs-api-types`) so clients link none of actix, and so
//! the OpenAPI document is generated from the same definitions the code
//! uses.

#![warn(missing_docs)]

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod cdp;
mod health;
mod smtp;
mod vm;
pub use cdp::{CdpBookmark, CdpBookmarkCreate, CdpBookmarkPolicy, CdpDiskInfo, CdpExportCreate, CdpSession, CdpVmInfo};
pub use health::{DatastoreSpace, DatastoreUsageSample, DiskIo, HealthReport, HealthSample, LoadAverages, Memory};
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
    /// See datastores, snapshots, jobs, schedules, labs, VMs, exports
    /// and health; change nothing.
    Read,
    /// Start and cancel jobs, restore, delete snapshots, edit schedules
    /// and labs, register VMs, open and close exports.
    Operate,
    /// Upload backups through the agent API.
    Backup,
    /// Manage API tokens, agents, datastores, settings and the admin
    /// password.
    Admin,
}

impl Role {
    /// Whether this role grants `p`: `Admin` every permission,
    /// `Operator` read, operate and backup, `ReadOnly` read only,
    /// `BackupOnly` backup only.
    pub fn allows(self, p: Permission) -> bool {
        match self {
            Role::Admin => true,
            Role::Operator => matches!(p, Permission::Read | Permission::Operate | Permission::Backup),
            Role::ReadOnly => p == Permission::Read,
            Role::BackupOnly => p == Permission::Backup,
        }
    }

    /// The role's name as the API spells it: `admin`, `operator`,
    /// `read-only` or `backup-only` (what `FromStr` reads back).
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

/// Body of `POST /api/login`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// `admin`, the appliance's only user account.
    pub username: String,
    /// The admin password (set on the console or with `lifeboat admin
    /// passwd`).
    pub password: String,
}

/// Answer of `POST /api/login`: a new admin session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// Bearer token for the `Authorization` header.
    pub token: String,
    /// When the session ends (RFC 3339, UTC): `session_minutes`
    /// (lifeboat.toml) after the login. A daemon restart or a password
    /// change ends it earlier.
    pub expires_at: DateTime<Utc>,
    /// The session's role: always `admin`.
    pub role: Role,
}

/// Body of `POST /api/session`: the web console's sign-in, either as the
/// admin (`username` + `password`) or with an API token (`token`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebLogin {
    /// `admin`, with `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The admin password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// An API token (`<id>.<secret>`) instead of the admin password: the
    /// session gets the token's role and ends when the token is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A browser session (`POST /api/session`, `GET /api/session`). The
/// session itself travels in the HttpOnly cookie `lifeboat_session`,
/// never in this document, so no script on the page can read it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebSession {
    /// `admin`, or `token:<name>` for a session opened with an API token.
    pub user: String,
    /// What the session may do.
    pub role: Role,
    /// The permissions of that role: `read`, `operate`, `backup`,
    /// `admin` (what the page shows buttons for).
    pub permissions: Vec<String>,
    /// When the session ends (RFC 3339, UTC); `null` for a bearer token
    /// that does not expire.
    pub expires_at: Option<DateTime<Utc>>,
    /// Send it as the `X-CSRF-Token` header with every request that
    /// changes something when the session cookie authenticates it; such
    /// a request without it is refused (403).
    pub csrf_token: String,
}

/// `GET /api/settings/tls`: the certificate the API serves.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TlsInfo {
    /// SHA-256 of the certificate (DER), colon-separated hex, as
    /// `lifeboat remote --fingerprint` pins it.
    pub fingerprint: String,
}

/// Body of `PUT /api/password`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PasswordChange {
    /// The admin password in use now; a wrong one is refused (400).
    pub current_password: String,
    /// The new admin password, at least 8 characters. The change ends
    /// every session, this one included.
    pub new_password: String,
}

/// Body of `POST /api/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenCreate {
    /// A name for people: the script, host or agent using it.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// Admin tokens only: jobs may restore to (and back up from) any
    /// path but the daemon's own state, config and datastores, outside
    /// `restore_roots`/`backup_roots` and into system trees such as
    /// /etc ("restore to the original location").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub original_location: bool,
}

/// An API token as `GET /api/tokens` and `GET /api/agents` list it,
/// without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// The token's id: 16 hex digits, the part of the bearer value before
    /// the `.`; what `DELETE /api/tokens/{id}` takes.
    pub id: String,
    /// The name it was created with, unique among tokens (1-64 letters,
    /// digits, `-`, `_`).
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// When it was created (RFC 3339, UTC).
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
    /// The new token's id, name, role and flags, flat in this object.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// `<id>.<secret>`, the value for `Authorization: Bearer`.
    pub token: String,
}

/// Body of `POST /api/datastores`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatastoreCreate {
    /// Short name: letters, digits, `-` and `_`.
    pub name: String,
    /// Absolute directory on the appliance; created if absent.
    pub path: String,
    /// Refuse everything that removes data (forget, deleting snapshots,
    /// gc) from the start.
    #[serde(default)]
    pub append_only: bool,
    /// Encrypt the new datastore with a key unlocked by this password
    /// (at least 8 characters). The daemon keeps it in a root-only key
    /// file in its state directory to open the datastore at start; keep
    /// a copy elsewhere: without it the backups cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_password: Option<String>,
}

/// A datastore with its usage, as `GET /api/datastores` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatastoreInfo {
    /// The datastore's name: the `{name}` of `/api/datastores/{name}`
    /// and the `datastore` of jobs.
    pub name: String,
    /// Its directory on the appliance (absolute).
    pub path: String,
    /// Blobs are encrypted with the datastore's key.
    pub encrypted: bool,
    /// Nothing that removes data is allowed: forget, deleting snapshots
    /// and gc are refused.
    pub append_only: bool,
    /// How new blobs are compressed: `auto`, `lz4`, `zstd:<level>` or `none`.
    pub compression: String,
    /// How many snapshots it holds.
    pub snapshots: u64,
    /// Bytes in pack files.
    pub used_bytes: u64,
    /// Bytes free on its file system for unprivileged writers (statvfs
    /// `f_bavail`); 0 when it cannot be measured.
    pub free_bytes: u64,
    /// Size of its file system in bytes; 0 when it cannot be measured.
    pub total_bytes: u64,
}

/// A snapshot as `GET /api/datastores/{name}/snapshots` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfo {
    /// The snapshot's id, 64 hex digits; requests also take a unique
    /// prefix of it.
    pub id: String,
    /// When the backup started (RFC 3339, UTC).
    pub time: DateTime<Utc>,
    /// The machine backed up: the host name an agent reported, or the
    /// appliance's own for its file and VM backups.
    pub hostname: String,
    /// The absolute source paths; for a VM backup one entry, `vm:NAME`
    /// with the name the hypervisor reports for the VM.
    pub paths: Vec<String>,
    /// Labels given at backup time.
    pub tags: Vec<String>,
    /// `files` or `vm`.
    pub kind: String,
    /// Files in the snapshot; for a VM backup, its disks.
    pub files: u64,
    /// Total size of those files in bytes; for a VM backup, the sum of
    /// its disks' virtual sizes.
    pub bytes: u64,
    /// Some of its data was lost (see `datastore repair`).
    pub damaged: bool,
}

/// One entry of a directory in a file snapshot
/// (`GET /api/datastores/{name}/snapshots/{id}/tree`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotEntry {
    /// The entry's name in its directory (not valid UTF-8: shown lossily).
    pub name: String,
    /// `file`, `dir`, `symlink` or `other` (device, FIFO, socket).
    pub kind: String,
    /// Size in bytes (files; 0 otherwise).
    pub size: u64,
    /// Permission bits and set-ID/sticky bits (e.g. 420 = 0644).
    pub mode: u32,
    /// Modification time (RFC 3339, UTC).
    pub mtime: DateTime<Utc>,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A directory of a file snapshot, as the web console browses it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotDirListing {
    /// The directory's path in the snapshot; `/` is the snapshot's root,
    /// as `lifeboat ls` shows it (the backed-up directory itself when one
    /// path was backed up).
    pub path: String,
    /// Its entries, sorted by name.
    pub entries: Vec<SnapshotEntry>,
}

/// Query of a snapshot's `tree` and `download`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SnapshotPathQuery {
    /// A path in the snapshot; default `/`.
    #[serde(default)]
    pub path: Option<String>,
}

/// What keep rules would do (`POST /api/datastores/{name}/forget-preview`),
/// before a `forget` job does it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ForgetPreview {
    /// Snapshots the rules keep.
    pub keep: Vec<SnapshotInfo>,
    /// Snapshots a `forget` job with these rules would remove now.
    pub remove: Vec<SnapshotInfo>,
}

/// Body of `POST /api/datastores/{name}/snapshots/{id}/restore`.
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
#[into_params(parameter_in = Query)]
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
    /// Offset from the start of the disk, in bytes.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// The file system type as libblkid names it (`ext4`, `xfs`, `vfat`,
    /// `LVM2_member`, ...); null when none is recognised.
    pub fstype: Option<String>,
    /// The file system's label; null when it has none.
    pub label: Option<String>,
    /// Why its files cannot be read here, when they cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
}

/// One file of a guest, as `ls -l` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmFileEntry {
    /// The file's name, not its whole path (invalid UTF-8 replaced).
    pub name: String,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Owner: the numeric uid in the guest.
    pub uid: u32,
    /// Group: the numeric gid in the guest.
    pub gid: u32,
    /// Size in bytes (`st_size`).
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// A symlink's target as stored, unresolved; absent for other file
    /// types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// What `GET .../vm-files` answers: the disk's partitions (without
/// `path`), or the entries of a guest directory (one entry for a file).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmFilesListing {
    /// The disk's id (what `disk` takes), also when it was chosen by
    /// default.
    pub disk: String,
    /// `gpt`, `dos`, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The disk's partitions and LVM volumes (without `path`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<VmPartitionInfo>,
    /// The partition listed (with `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// The guest path listed, as given (with `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The directory's entries sorted by name, or the one file `path`
    /// names (with `path`); absent for an empty directory.
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
    /// The disk's id; default: the VM's only disk.
    #[serde(default)]
    pub disk: Option<String>,
    /// A partition number or `VG/LV`; default: the only one with a file
    /// system.
    #[serde(default)]
    pub partition: Option<String>,
}

/// Retention rules, restic semantics (docs/retention.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeepRules {
    /// Keep the N newest snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent hours that
    /// have one (in the appliance's time zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent days that
    /// have one (in the appliance's time zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent ISO weeks
    /// (Monday to Sunday) that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent months that
    /// have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent years that
    /// have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yearly: Option<u32>,
}

impl KeepRules {
    /// Whether no rule is given (every count absent).
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
        /// The datastore to back up into.
        datastore: String,
        /// Absolute paths on the appliance to back up (at least one),
        /// each under `backup_roots`.
        paths: Vec<String>,
        /// Tags and exclusions (`tags`, `exclude`, `one_file_system`,
        /// `exclude_nodump`), flat in this object.
        #[serde(flatten)]
        select: BackupSelection,
    },
    /// Restore a snapshot into a directory on the appliance.
    Restore {
        /// The datastore holding the snapshot.
        datastore: String,
        /// The snapshot's id, a unique prefix of it, or `latest`.
        snapshot: String,
        /// Directory on the appliance to restore into, under
        /// `restore_roots`; made (with missing parents) if absent.
        target: String,
        /// Only these paths of the snapshot (`/etc/hosts`, `docs`);
        /// default: all.
        #[serde(default)]
        include: Vec<String>,
    },
    /// `check`, with `read_data` every blob is read and hashed.
    Verify {
        /// The datastore to check.
        datastore: String,
        /// Also read every blob and compare it with its hash (reads all
        /// the data); without it the index, the packs' record headers and
        /// the snapshots' trees are checked.
        #[serde(default)]
        read_data: bool,
    },
    /// Remove snapshots by keep rules.
    Forget {
        /// The datastore whose snapshots are thinned out, each group of
        /// the same host and paths on its own.
        datastore: String,
        /// Which snapshots to keep; at least one rule is needed.
        keep: KeepRules,
    },
    /// Reclaim space.
    Gc {
        /// The datastore whose unreferenced data is removed.
        datastore: String,
    },
    /// A backup uploaded by a remote agent (made by the agent API, not
    /// startable through `POST /api/jobs`).
    AgentBackup {
        /// The datastore the agent uploads into.
        datastore: String,
        /// Who uploads: `token:<name>` for an API token (an agent's
        /// registered name), `admin` for an admin session.
        agent: String,
        /// The host name the agent reported for the machine backed up.
        hostname: String,
        /// Absolute source paths on the agent's machine.
        paths: Vec<String>,
    },
    /// Back up a registered VM (see `/api/vms`): all disks at one point
    /// in time, incremental through dirty bitmaps after the first run.
    VmBackup {
        /// The datastore to back up into.
        datastore: String,
        /// The VM's registered name.
        vm: String,
        /// Read every disk whole (ignore the changed-block bitmaps).
        #[serde(default)]
        full: bool,
        /// Labels for the snapshot.
        #[serde(default)]
        tags: Vec<String>,
    },
    /// Restore a VM snapshot's disks to image files in a directory on the
    /// appliance (`<disk>.<format>` plus `vm.json`); with `platform`, for
    /// another platform (docs/cross-platform-restore.md): hardware
    /// mapped, disks in its format, its description beside them, the
    /// guest repaired, `restore-report.json`.
    VmRestore {
        /// The datastore holding the VM snapshot.
        datastore: String,
        /// The VM snapshot's id, a unique prefix of it, or `latest`.
        snapshot: String,
        /// Directory on the appliance for the images, under
        /// `restore_roots`; made (with missing parents) if absent.
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
        /// The datastore holding the VM backups (a named `lab` must use
        /// the same one); the report is kept there.
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
        /// The datastore holding the VM snapshot; the VM reads its disks
        /// from it while it runs.
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
        /// Directory on the appliance for the images, under
        /// `restore_roots`; made (with missing parents) if absent.
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
        /// The datastore holding the VM snapshot.
        datastore: String,
        /// The VM snapshot's id, a unique prefix of it, or `latest`.
        snapshot: String,
        /// Guest paths (files or directories), each copied into `target`
        /// under its own name.
        paths: Vec<String>,
        /// Directory on the appliance to copy into, under
        /// `restore_roots`; made (with missing parents) if absent.
        target: String,
        /// The disk's id; default: the VM's only disk.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disk: Option<String>,
        /// A partition number or `VG/LV`; default: the only one with a
        /// file system.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<String>,
    },
    /// Protect a registered QMP VM continuously (CDP): each disk is
    /// copied into a journal in the datastore, then every write it makes
    /// is journaled, so any moment can be read back (`/api/cdp`). Runs
    /// until cancelled (`POST /api/jobs/{id}/cancel` stops the protection:
    /// state `cancelled`) or the daemon stops; it fails when the VM's
    /// mirror ends (the VM stopped, or QEMU failed it). While it runs the
    /// VM's monitor is held: no `vm-backup` of the VM meanwhile.
    CdpProtect {
        /// The datastore for the journals (`<datastore>/cdp/<vm>/`).
        datastore: String,
        /// The VM's registered name (`/api/vms`); QMP VMs only.
        vm: String,
        /// Device ids of the disks to protect; default: every disk.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        disks: Vec<String>,
        /// `sync` (default: a guest write completes only once the journal
        /// has it) or `async` (the guest does not wait; dirty blocks
        /// follow behind).
        #[serde(default = "default_cdp_mode")]
        mode: String,
        /// Bookmarks the protection makes by itself (periodic, daily,
        /// from a log), optionally application-consistent.
        #[serde(default, skip_serializing_if = "CdpBookmarkPolicy::is_empty")]
        bookmarks: CdpBookmarkPolicy,
    },
}

fn default_cdp_mode() -> String {
    "sync".into()
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
    /// Whether it asks for nothing: no masquerade, no DNS names, no DHCP.
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
    /// The datastore holding the VMs' backups; run reports are kept
    /// there.
    pub datastore: String,
    /// The application group, booted in this order (usually `vm:NAME`:
    /// that VM's newest backup).
    pub vms: Vec<LabVmSpec>,
    /// Comma-separated: ping, heartbeat, screenshot, script=NAME.
    #[serde(default = "default_probes")]
    pub probes: String,
    /// Seconds a guest may take from power-on to answering (1-3600;
    /// default 180).
    #[serde(default = "default_boot_timeout")]
    pub boot_timeout: u64,
    /// Verify after every successful backup of one of its VMs.
    #[serde(default)]
    pub after_backup: bool,
    /// Masquerade map, DNS and DHCP inside the lab; absent: none.
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
    /// The report's id, `YYYYMMDD-HHMMSS-xxxxxx` (the run's start in UTC
    /// and 6 hex digits): the `{id}` of `.../lab-reports/{id}/{file}`.
    pub id: String,
    /// Every VM passed.
    pub passed: bool,
    /// When the run started (RFC 3339, UTC).
    pub started: DateTime<Utc>,
    /// When the run ended (RFC 3339, UTC).
    pub ended: DateTime<Utc>,
    /// VM names with their verdicts.
    pub vms: Vec<(String, bool)>,
}

/// A lab run in progress (`GET /api/lab-runs`): its VMs are booted or
/// booting in a lab network of their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LabRunInfo {
    /// The run's id, as its report will have it
    /// (`YYYYMMDD-HHMMSS-xxxxxx`).
    pub id: String,
    /// The `lab-verify` job that runs it (`/api/jobs/{id}`; cancel it
    /// there).
    pub job: String,
    /// The datastore its backups come from.
    pub datastore: String,
    /// The lab definition it runs, if it was started from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lab: Option<String>,
    /// The snapshots it verifies, in boot order, as given (`vm:NAME` or
    /// a snapshot id).
    pub vms: Vec<String>,
    /// The network namespace the run's VMs are in.
    pub netns: String,
    /// When the run started (RFC 3339, UTC).
    pub started: DateTime<Utc>,
}

fn default_probes() -> String {
    "ping,heartbeat,screenshot".into()
}

fn default_boot_timeout() -> u64 {
    180
}

impl JobSpec {
    /// The datastore the job works on (every kind names one).
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
            | JobSpec::VmRestoreFiles { datastore, .. }
            | JobSpec::CdpProtect { datastore, .. } => datastore,
        }
    }

    /// The job's kind as its `kind` tag spells it (`backup`,
    /// `vm-restore`, ...).
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
            JobSpec::CdpProtect { .. } => "cdp-protect",
        }
    }
}

/// Where a job is: `running`, or how it ended (every other state is
/// final).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Started and not ended; `progress` is live.
    Running,
    /// Finished without errors or warnings.
    Succeeded,
    /// Finished, but some inputs could not be read (exit code 3 in the CLI).
    Warnings,
    /// Ended with an error: see `error` and `error_kind`.
    Failed,
    /// Stopped on request (`POST /api/jobs/{id}/cancel`).
    Cancelled,
    /// The daemon stopped while it ran; its partial data is left for gc.
    Interrupted,
    /// A scheduled run that did not start because the previous run of the
    /// same schedule was still going.
    Skipped,
}

impl JobState {
    /// Whether the job has ended: any state but `running`.
    pub fn is_finished(self) -> bool {
        self != JobState::Running
    }
}

/// How far a job has got: live while it runs, the last figures once it
/// has ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobProgress {
    /// What the job is doing now, e.g. `scanning`, `backing up`, `committing`.
    pub phase: String,
    /// Items done so far: files for file backups and restores, disks for
    /// VM backups and restores, VMs for lab runs, blobs for agent
    /// uploads.
    pub files_done: u64,
    /// Bytes done so far: of the files or disks backed up or restored;
    /// for `verify`, pack bytes read; for agent uploads, pack bytes
    /// received.
    pub bytes_done: u64,
    /// Known once the scan is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_total: Option<u64>,
    /// Bytes to do, counted like `bytes_done`; known once the scan is
    /// done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
}

/// A job: what it does, where it is, and how it ended (`GET /api/jobs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobInfo {
    /// The job's id, `YYYYMMDDTHHMMSS-xxxxxx`: its start time (UTC) and
    /// 6 random hex digits, so ids sort by start time.
    pub id: String,
    /// What the job does, as started (a `lab-verify` naming a lab
    /// carries the lab's VMs and probes).
    pub spec: JobSpec,
    /// Where the job is: `running`, or how it ended.
    pub state: JobState,
    /// The schedule that started it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// When it started (RFC 3339, UTC); for a `skipped` run, when it was
    /// skipped.
    pub started: DateTime<Utc>,
    /// When it ended (RFC 3339, UTC); absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<DateTime<Utc>>,
    /// How far it has got.
    pub progress: JobProgress,
    /// What went wrong, for a human: set when `failed` or `cancelled`,
    /// and saying why a run was `skipped` or `interrupted`; absent
    /// otherwise (warnings are in `result.warnings`).
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
    /// Stopped on request (`POST /api/jobs/{id}/cancel`). (A job the
    /// daemon stopped under is `interrupted`, a state of its own.)
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
    /// No mail.
    Never,
    /// Mail when a run fails or is skipped (the default); not for runs
    /// that end with warnings or are cancelled.
    #[default]
    Failure,
    /// Mail after every run, whatever its outcome.
    Always,
}

/// A job to run at the times a cron expression names: the body of
/// `POST /api/schedules` and `PUT /api/schedules/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleSpec {
    /// A name for people, unique among schedules (1-64 letters, digits,
    /// `-`, `_`).
    pub name: String,
    /// Cron expression with seconds: `sec min hour day-of-month month
    /// day-of-week [year]`, e.g. `0 30 2 * * *` (02:30 daily), in the
    /// appliance's time zone.
    pub cron: String,
    /// The job each run starts (any kind but `agent-backup`); its paths
    /// are checked when the schedule is saved and again at each run.
    pub job: JobSpec,
    /// Applied after each successful backup or vm-backup run, to the
    /// snapshots of the same source (host and paths, or VM).
    #[serde(default, skip_serializing_if = "KeepRules::is_empty")]
    pub keep: KeepRules,
    /// When to mail a run's report (through the relay of
    /// `/api/settings/smtp`); default `failure`.
    #[serde(default)]
    pub notify: NotifyWhen,
    /// Whether its timer runs it; default true. `POST
    /// /api/schedules/{id}/run` runs a disabled schedule too.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// A stored schedule: its id and next run, the spec's fields flat
/// beside them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleInfo {
    /// The schedule's id: 12 hex digits, given at creation, never
    /// changed; jobs it starts name it in `schedule`.
    pub id: String,
    /// What it runs and when, flat in this object.
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    /// When its timer runs it next (RFC 3339, UTC); absent while it is
    /// disabled or when the cron expression names no future time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<DateTime<Utc>>,
    /// The id of the job its latest run started (by timer or `run`,
    /// skipped runs included); absent until it first runs after a
    /// daemon start.
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
    JobState {
        /// The job as it is now.
        job: JobInfo,
    },
    /// Progress of a running job, at most a few times a second.
    JobProgress {
        /// The job's id.
        id: String,
        /// Its progress now.
        progress: JobProgress,
    },
    /// A scheduled run was skipped because the previous one still runs.
    ScheduleSkipped {
        /// The schedule's id.
        schedule: String,
        /// The id of its previous run's job, still running.
        running_job: String,
    },
    /// A moment of a protected VM was bookmarked (by hand or by the
    /// protection's policy).
    CdpBookmark {
        /// The datastore holding the VM's journals.
        datastore: String,
        /// The VM's name.
        vm: String,
        /// The bookmark.
        bookmark: CdpBookmark,
    },
    /// Anything else an admin should see in the audit trail.
    Notice {
        /// The notice, for a human.
        message: String,
    },
}

/// Answer of `GET /api/health` (no token needed).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` while the daemon serves.
    pub status: String,
    /// The daemon's version, e.g. `0.1.0`.
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
