//! The libvirt connector: VMs that libvirt runs, next to the QMP-socket
//! ones of crates/qemu.
//!
//! - `list_domains`: the inventory (every defined domain with its state).
//! - `capture`: a domain's hardware from its live XML into the neutral
//!   `lifeboat_vm::VmMetadata`.
//! - `backup_domain`: libvirt's backup API in pull mode. libvirt freezes a
//!   point in time of every disk (scratch files in a temporary directory)
//!   and QEMU exports it on an NBD unix socket; we read it with our own NBD
//!   client through the same code as the QMP connector
//!   (`lifeboat_qemu::read_disks` / `commit_vm_snapshot`), so the snapshot
//!   is the same kind (`vm:<name>`, metadata document, 4 MiB chunks) and
//!   restore, instant restore and export work unchanged. Each backup
//!   creates a libvirt checkpoint; the next one is incremental against it
//!   and reads only the blocks in the exported changed-block bitmap.
//!
//! We talk to libvirt through `virsh` and its XML rather than linking
//! libvirt (the `virt` crate): the `lifeboat` binary then runs, and its
//! QMP connector works, on machines (and in the appliance image) without
//! libvirt's shared library; virsh is always there where libvirt is, it
//! speaks to local and remote URIs alike, and the XML documents are
//! libvirt's stable, documented interface. The cost is a process per call,
//! which is nothing next to a backup.
#![warn(missing_docs)]

pub(crate) mod backup;
pub(crate) mod domain;
pub(crate) mod virsh;

pub use backup::{backup_domain, LibvirtBackupOptions, CHECKPOINT_PREFIX};
pub use domain::{parse_domain, qemu_owner, DomainDisk};
pub use lifeboat_qemu::VmBackupOutcome;
pub use virsh::Virsh;

use lifeboat_vm::VmMetadata;

/// Why a call of this connector failed. A failed `backup_domain` commits
/// no snapshot and deletes the checkpoint it had created.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    /// The `virsh` process could not be started (not installed, not on
    /// `PATH`); install libvirt's client tools.
    #[error("cannot run virsh ({0}); install libvirt-clients")]
    NoVirsh(String),
    /// virsh ran and exited with a failure status: libvirt refused the
    /// command (unknown domain, connection or permission denied, a backup
    /// job already running, ...).
    #[error("virsh -c {uri} {cmd}: {msg}")]
    Virsh {
        /// The connection URI virsh was given.
        uri: String,
        /// The virsh command and its arguments, space-separated.
        cmd: String,
        /// virsh's stderr lines, `error: ` prefixes stripped, joined with
        /// `; `.
        msg: String,
    },
    /// A document libvirt printed (domain or backup XML) is not
    /// well-formed, lacks what we need (`<name>`, `<devices>`), or
    /// describes a VM the neutral document cannot hold.
    #[error("libvirt XML: {0}")]
    Xml(String),
    /// A backup was asked of a domain that is neither running nor paused:
    /// a pull backup needs the QEMU process. Start the domain.
    #[error("domain {domain} is {state}; a backup needs it running (virsh start {domain})")]
    NotRunning {
        /// The domain as the caller named it.
        domain: String,
        /// Its state in libvirt's words (`virsh domstate`), e.g. `shut off`.
        state: String,
    },
    /// The VM backup path shared with the QMP connector failed: the
    /// hardware is one no restore could boot, the parent snapshot could
    /// not be loaded, reading the NBD export failed, or committing did.
    #[error(transparent)]
    Backup(#[from] lifeboat_qemu::VmBackupError),
    /// The datastore failed (finding the parent snapshot, registering the
    /// backup as a writer).
    #[error(transparent)]
    Store(#[from] lifeboat_store::StoreError),
    /// Anything else, as a message for the user: a domain without disks,
    /// a work directory or XML file that cannot be created or handed to
    /// QEMU's user, a `domblkinfo` that prints no capacity.
    #[error("{0}")]
    Other(String),
}

/// One domain of the inventory (`lifeboat vm list --libvirt`, also as
/// JSON).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DomainInfo {
    /// The domain's name, as `virsh list --name` prints it.
    pub name: String,
    /// libvirt's words: running, paused, shut off, ...
    pub state: String,
}

/// Every domain libvirt knows at `uri`, running or not.
pub fn list_domains(uri: &str) -> Result<Vec<DomainInfo>, LibvirtError> {
    let v = Virsh::new(uri);
    let names = v.run(&["list", "--all", "--name"])?;
    let mut out = Vec::new();
    for name in names.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let state = match domain_state_with(&v, name) {
            Ok(s) => s,
            // Undefined between the two calls.
            Err(_) => continue,
        };
        out.push(DomainInfo { name: name.to_string(), state });
    }
    Ok(out)
}

/// One domain's state in libvirt's words (running, paused, shut off, ...).
pub fn domain_state(uri: &str, domain: &str) -> Result<String, LibvirtError> {
    domain_state_with(&Virsh::new(uri), domain)
}

pub(crate) fn domain_state_with(v: &Virsh, domain: &str) -> Result<String, LibvirtError> {
    Ok(v.run(&["domstate", domain])?.trim().to_string())
}

/// The domain's hardware in the neutral format, and its disks as libvirt
/// names them.
pub fn capture(uri: &str, domain: &str) -> Result<(VmMetadata, Vec<DomainDisk>), LibvirtError> {
    let v = Virsh::new(uri);
    let xml = v.run(&["dumpxml", domain])?;
    parse_domain(&xml, |target| disk_capacity(&v, domain, target))
}

/// A disk's virtual size in bytes (`virsh domblkinfo`, in bytes).
pub(crate) fn disk_capacity(v: &Virsh, domain: &str, target: &str) -> Result<u64, LibvirtError> {
    let out = v.run(&["domblkinfo", domain, target])?;
    out.lines()
        .find_map(|l| l.strip_prefix("Capacity:").and_then(|n| n.trim().parse().ok()))
        .ok_or_else(|| LibvirtError::Other(format!("virsh domblkinfo {domain} {target} printed no capacity: {out:?}")))
}
