//! What each job kind leaves in `JobInfo::result`: one type per kind,
//! written by the job here and read back by the remote CLI, so the two
//! cannot drift apart. (gc and verify leave the store's `GcReport` and
//! `CheckReport`, a lab its `LabReport`.)

use lifeboat_store::BackupSummary;
use lifeboat_vm::image::DiskStats;
use serde::{Deserialize, Serialize};

/// A file backup's (or an agent backup's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupJobOutcome {
    /// The new snapshot's id.
    pub snapshot: String,
    /// What the run read and wrote.
    pub summary: BackupSummary,
    /// Snapshots the job's keep rules removed (absent without rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgotten: Option<Vec<String>>,
}

/// A file restore's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreJobOutcome {
    /// The snapshot restored.
    pub snapshot: String,
    /// Files written.
    pub files: u64,
    /// Directories made.
    pub dirs: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Entries only an operator's restore recreates (devices, set-ID).
    #[serde(default)]
    pub left_out: u64,
}

/// A forget job's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForgetJobOutcome {
    /// The snapshots removed.
    pub forgotten: Vec<String>,
}

/// One disk of a VM backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmDiskOutcome {
    /// The disk's id in the VM's metadata.
    pub id: String,
    /// What reading it took.
    #[serde(flatten)]
    pub stats: DiskStats,
}

/// A VM backup's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmBackupJobOutcome {
    /// The new snapshot's id.
    pub snapshot: String,
    /// The VM's registered name.
    pub vm: String,
    /// Its name inside QEMU or libvirt.
    pub qemu_name: String,
    /// "application" when the guest's file systems were frozen, else "crash".
    pub consistency: String,
    /// File systems the guest agent froze.
    pub frozen_filesystems: u64,
    /// The snapshot this one is incremental to.
    pub parent: Option<String>,
    /// Per disk.
    pub disks: Vec<VmDiskOutcome>,
    /// Bytes read over NBD, all disks.
    pub bytes_read: u64,
    /// Why disks were read whole, if any was.
    pub full_reason: Option<String>,
    /// Wall time of the backup.
    pub duration_ms: u64,
    /// Snapshots the job's keep rules removed (absent without rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgotten: Option<Vec<String>>,
}

/// An instant restore's: the VM that now runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmInstantRestoreJobOutcome {
    /// The name it runs under.
    pub vm: String,
    /// The snapshot it runs from.
    pub snapshot: String,
    /// How far it got ("running", or where it waits).
    pub state: String,
    /// QEMU's pid.
    pub pid: u32,
    /// Its QMP socket on the appliance.
    pub qmp: String,
    /// Its serial console log on the appliance.
    pub serial_log: String,
    /// The platform mapping applied (`platform`, `macs`, `repair`), if one was asked for.
    #[serde(default)]
    pub target: serde_json::Value,
}

/// A migrate-back's: the VM runs on local images now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmMigrateBackJobOutcome {
    /// The VM's name.
    pub vm: String,
    /// The disk images it runs on.
    pub files: Vec<String>,
    /// QEMU's pid, if it still runs.
    pub pid: Option<u32>,
    /// Its QMP socket.
    pub qmp: String,
}

/// A CDP protection that ended without failing (the ones a cancel ends
/// keep this as their record too: see the job's log).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CdpProtectJobOutcome {
    /// The VM's name (its journals' directory).
    pub vm: String,
    /// The disks protected.
    pub disks: Vec<String>,
}

/// A restore of files out of a VM backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRestoreFilesJobOutcome {
    /// The VM snapshot.
    pub snapshot: String,
    /// The disk read.
    pub disk: String,
    /// Its partition read.
    pub partition: String,
    /// Paths inside the guest copied.
    pub paths: Vec<String>,
    /// Where on the appliance.
    pub target: String,
    /// Entries an operator's restore would have made (devices, set-ID).
    pub left_out: u64,
    /// Files copied.
    pub files: u64,
    /// Directories made.
    pub dirs: u64,
    /// Bytes copied.
    pub bytes: u64,
}

/// A VM restore's: disk images and `vm.json` in a directory. A restore
/// for other platforms adds what each target got (`targets`, and the
/// converter's own fields for a single one), which this type leaves out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRestoreJobOutcome {
    /// The snapshot restored.
    pub snapshot: String,
    /// The VM's name.
    pub vm: String,
    /// The files written.
    pub files: Vec<String>,
}
