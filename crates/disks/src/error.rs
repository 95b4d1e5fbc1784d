use std::path::PathBuf;

pub type Result<T, E = DiskError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot probe {path} with libblkid: {reason}")]
    Probe { path: PathBuf, reason: String },
    #[error("disk {disk} is gone: it is no longer attached; list the disks again and pick one that is there")]
    Gone { disk: PathBuf },
    #[error("disk {disk} changed since it was listed ({what}); list the disks again before formatting")]
    Changed { disk: PathBuf, what: String },
    #[error("refusing to format: {reason}")]
    Refused { reason: String },
    #[error("{program} failed on {target}: {detail}")]
    Command { program: String, target: PathBuf, detail: String },
    #[error("partition {partition} did not appear after partitioning {disk}")]
    NoPartitionNode { disk: PathBuf, partition: PathBuf },
    #[error("cannot mount {device} on {mount_point}: {source}")]
    Mount { device: PathBuf, mount_point: PathBuf, source: std::io::Error },
    #[error("cannot create the datastore in {path}: {source}")]
    Datastore { path: PathBuf, source: lifeboat_store::StoreError },
}

impl DiskError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DiskError::Io { op, path: path.into(), source }
    }
}
