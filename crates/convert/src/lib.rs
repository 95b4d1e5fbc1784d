//! Cross-platform restore.
//!
//! A VM backup is restored for another platform than the one it came
//! from: `target` maps its hardware onto the platform (a default table
//! per platform, overridable key by key), `format` writes its disks in
//! the platform's image format straight from the datastore (qemu-img
//! reading lifeboat's NBD export), `writers` describe the VM the way the
//! platform reads it (libvirt XML, OVF/OVA, Glance properties, Hyper-V),
//! and `restore` puts it together, with guest repair (crate
//! `lifeboat-repair`) applied to a copy-on-write overlay of the export
//! before the disks are written, so neither the datastore nor a raw copy
//! is ever touched. `instant` does the same for a VM booted straight
//! from the snapshot: mapped hardware, repair inside its overlays.
//! `shared_reads` lets several targets be written from one read of the
//! datastore.
#![warn(missing_docs)]

pub mod format;
pub(crate) mod instant;
pub mod restore;
pub mod shared_reads;
pub mod target;
pub mod writers;

pub use format::DiskFormat;
pub use instant::{retarget_instant, Retargeted};
pub use restore::{failure_message, parse_targets, repair_guest, restore_for_target, restore_for_targets, GuestRepair, TargetRestore, TargetRestoreOptions, TargetSpec};
pub use target::{convert, linux_drivers, Converted, Mapping, Platform};
