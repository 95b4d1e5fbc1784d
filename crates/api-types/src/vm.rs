//! VMs registered with the daemon (the `Connector` actor's inventory)
//! and NBD exports of backed-up disks (the `Export` actor).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a registered VM is reached. Tagged by `kind` so other
/// hypervisor connectors (libvirt) can be added beside QMP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum VmSource {
    /// A QEMU process's QMP socket (`-qmp unix:PATH,server=on,wait=off`).
    Qmp {
        /// Absolute path of the QMP unix socket on the appliance.
        qmp: String,
        /// qemu-ga socket: freeze the guest's filesystems at backup points.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
    },
    /// A libvirt domain, backed up through libvirt's backup API (pull
    /// mode, checkpoints for incrementals).
    Libvirt {
        /// libvirt connection URI, e.g. `qemu:///system`.
        uri: String,
        /// The domain's name in libvirt.
        domain: String,
    },
}

/// `POST /api/vms`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmRegister {
    /// Name for the VM in the API and in jobs (letters, digits, `-`, `_`);
    /// default: the name QEMU reports (`-name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where the VM is reached; it must answer when it is registered.
    pub source: VmSource,
}

/// What a registered VM is doing, as its hypervisor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VmStatus {
    /// The guest runs.
    Running,
    /// The guest's CPUs are stopped: paused, or another state that is
    /// neither running nor shut down (e.g. suspended, stopped on an IO
    /// error).
    Paused,
    /// QEMU answers but the guest is not running (shut down, crashed, ...).
    Stopped,
    /// The socket does not answer: QEMU is gone or the path is wrong.
    Unreachable,
}

/// One disk of a registered VM, as its hypervisor reports it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmDiskInfo {
    /// Guest device id, the disk's id in backups.
    pub id: String,
    /// Virtual size in bytes (0 when the hypervisor reports none).
    pub size: u64,
    /// Image format QEMU reads (raw, qcow2, ...).
    pub format: String,
    /// The image file the disk reads, as the hypervisor names it; absent
    /// when it names none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file: String,
}

/// A registered VM with its live inventory (empty when unreachable).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmInfo {
    /// The VM's name in the API and in jobs (the `vm` of a `vm-backup`).
    pub name: String,
    /// Where the VM is reached.
    pub source: VmSource,
    /// When it was registered (RFC 3339, UTC).
    pub registered: DateTime<Utc>,
    /// What it is doing now; `unreachable` when its hypervisor does not
    /// answer.
    pub status: VmStatus,
    /// What went wrong when `unreachable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The name QEMU reports (`-name`); backups are grouped by it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub qemu_name: String,
    /// Virtual CPUs; 0 when unreachable.
    #[serde(default)]
    pub cpus: u32,
    /// Guest memory in MiB; 0 when unreachable.
    #[serde(default)]
    pub memory_mib: u64,
    /// Its disks; empty when unreachable.
    #[serde(default)]
    pub disks: Vec<VmDiskInfo>,
    /// Set while the VM runs from a backup (instant restore): where from,
    /// and what it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instant: Option<InstantVmInfo>,
}

/// An instant-restored VM: a backup booted straight from the datastore,
/// its writes in throw-away overlays until it is migrated back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstantVmInfo {
    /// The datastore its disks are served from.
    pub datastore: String,
    /// Full snapshot id.
    pub snapshot: String,
    /// The job that started it.
    pub job: String,
    /// When it was booted (RFC 3339, UTC).
    pub started: DateTime<Utc>,
    /// QEMU's process id.
    pub pid: u32,
    /// The guest's serial console (a file on the appliance).
    pub serial_log: String,
    /// A `vm-migrate-back` job is moving it onto local images.
    #[serde(default)]
    pub migrating: bool,
}

/// How an export is served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportProtocol {
    /// NBD on `nbd_listen`: `nbd://HOST:PORT/NAME`.
    #[default]
    Nbd,
    /// NFSv3 on `nfs_listen`, as a datastore a hypervisor mounts:
    /// `/<vm>/<snapshot time>/<disk>.img` (raw), `<disk>.vmdk` (a VMware
    /// descriptor) and `<disk>-flat.vmdk` (its extent, the same bytes).
    Nfs,
}

/// `POST /api/exports`: serve one disk of a VM snapshot over NBD or NFS.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExportCreate {
    /// The datastore holding the snapshot.
    pub datastore: String,
    /// Snapshot id (or unique prefix) of a VM backup.
    pub snapshot: String,
    /// Disk id; may be left out when the VM has one disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// Accept writes into a copy-on-write overlay in the state directory
    /// (the datastore is never written). Default: read-only.
    #[serde(default)]
    pub writable: bool,
    /// `nbd` (the default) or `nfs`.
    #[serde(default)]
    pub protocol: ExportProtocol,
    /// NFS only, and needed there: the client addresses or CIDR blocks
    /// (`10.0.0.5`, `10.0.0.0/24`) allowed to mount the export; every
    /// other client is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<String>,
}

/// An export being served (`GET /api/exports`). Exports end with the
/// daemon.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExportInfo {
    /// The export's id: 8 hex digits, what `DELETE /api/exports/{id}`
    /// takes (for NBD also the export name).
    pub id: String,
    /// The datastore the disk is read from.
    pub datastore: String,
    /// Full snapshot id; for a CDP point in time `cdp:<vm>@<time>`.
    pub snapshot: String,
    /// The disk's id in the VM snapshot.
    pub disk: String,
    /// Writes are accepted, into a copy-on-write overlay in the state
    /// directory (the datastore is never written).
    pub writable: bool,
    /// The disk's size in bytes.
    pub size: u64,
    /// The NBD export name, or for NFS the raw disk's path in the export.
    pub name: String,
    /// `nbd://HOST:PORT/NAME`, for qemu-img, nbdinfo or QEMU's `-drive`;
    /// for NFS `nfs://HOST:PORT/<vm>/<snapshot time>/<disk>.img` (mount
    /// `HOST:/` or a directory below it; libnfs tools take the URL).
    pub uri: String,
    /// How it is served: `nbd` or `nfs`.
    #[serde(default)]
    pub protocol: ExportProtocol,
    /// NFS: the allowed clients, as CIDR blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<String>,
    /// When it was created (RFC 3339, UTC).
    pub created: DateTime<Utc>,
}
