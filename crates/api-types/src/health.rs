//! The health report of `GET /api/health/details`: what lifeboat-health
//! samples from procfs and statvfs.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use utoipa::ToSchema;

/// Memory, load, IO and free space of the appliance, sampled every few seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthReport {
    /// When the sample was taken, seconds since the Unix epoch.
    pub sampled_at: u64,
    pub uptime_secs: u64,
    pub load: LoadAverages,
    pub memory: Memory,
    /// IO rates per block device over the last `io_interval_secs`.
    pub disks: Vec<DiskIo>,
    pub io_interval_secs: f64,
    pub datastores: Vec<DatastoreSpace>,
    /// Resident memory of this process (the daemon).
    pub daemon_rss_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadAverages {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Memory {
    pub total_bytes: u64,
    /// What can be allocated without swapping (MemAvailable).
    pub available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiskIo {
    /// Kernel name, e.g. `vda`, `nvme0n1`, `loop0`.
    pub device: String,
    pub read_bytes_per_sec: f64,
    pub write_bytes_per_sec: f64,
    pub reads_per_sec: f64,
    pub writes_per_sec: f64,
    /// Share of the interval the device had IO in flight (0..=100).
    pub busy_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatastoreSpace {
    pub name: String,
    #[schema(value_type = String)]
    pub path: PathBuf,
    pub total_bytes: u64,
    /// Free for unprivileged writers (f_bavail), what backups can use.
    pub available_bytes: u64,
    pub used_percent: f64,
    /// Why the numbers are missing (path gone, not mounted...), if they are.
    pub error: Option<String>,
}
