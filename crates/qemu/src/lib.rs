//! The QEMU connector.
//!
//! - `qmp`: a small blocking QMP client (one socket, commands in order,
//!   events kept aside). Callers in async code run it on a blocking pool.
//! - `inventory`: reads a running VM's hardware over QMP into the neutral
//!   `lifeboat_vm::VmMetadata`.
//! - `instant`: the QEMU command line that boots a backup with its
//!   recorded hardware (instant restore, the lab), and `accel` which
//!   accelerator it runs with; `instant_vm` keeps such a VM running on
//!   our NBD exports (overlays, QEMU, migrate back, stale sweep).
//! - `fleece`: freezes a point in time of every disk of a running VM
//!   (copy-before-write into a temporary overlay, in one QMP transaction
//!   across all disks, together with the dirty-bitmap rotation) and
//!   exports it over QEMU's NBD server, with the bitmap of blocks changed
//!   since the previous backup as `qemu:dirty-bitmap:<name>`.
//!
//! The guest keeps running and writing the whole time; what the export
//! shows does not change.
#![warn(missing_docs)]

pub mod accel;
pub mod backup;
pub mod fleece;
pub mod instant;
pub mod instant_vm;
pub mod inventory;
pub mod migrate;
pub mod qga;
pub mod qmp;
pub mod socket_dir;

pub use accel::{Accel, AccelChoice};
pub use backup::{backup_vm, check_restorable, commit_vm_snapshot, latest_vm_snapshot, load_vm, read_disks, DiskToRead, DisksRead, LoadedVm, VmBackupError, VmBackupOptions, VmBackupOutcome};
pub use fleece::{DiskExport, FleeceSession};
pub use instant::{qemu_args, BootPlan, DiskSource, NetMode, UefiFirmware};
pub use instant_vm::{BootOptions, InstantError, InstantVm, NbdListen};
pub use inventory::{capture, DiskNode};
pub use qga::{AgentError, GuestAgent};
pub use qmp::{Qmp, QmpError};
pub use socket_dir::SocketDir;

/// `qemu-img create -f FMT PATH SIZE`; the error is qemu-img's own words.
pub(crate) fn qemu_img_create(path: &std::path::Path, fmt: &str, size: u64) -> Result<(), String> {
    let out = std::process::Command::new("qemu-img").args(["create", "-q", "-f", fmt]).arg(path).arg(size.to_string()).output().map_err(|e| format!("cannot run qemu-img: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(())
}
