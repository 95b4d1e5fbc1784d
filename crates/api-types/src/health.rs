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
    /// Seconds since the appliance booted.
    pub uptime_secs: u64,
    /// The kernel's load averages.
    pub load: LoadAverages,
    /// Memory and swap of the appliance.
    pub memory: Memory,
    /// IO rates per block device over the last `io_interval_secs`.
    pub disks: Vec<DiskIo>,
    /// Seconds between the two /proc/diskstats readings the `disks`
    /// rates come from.
    pub io_interval_secs: f64,
    /// Size and free space of each datastore's file system.
    pub datastores: Vec<DatastoreSpace>,
    /// Resident memory of this process (the daemon).
    pub daemon_rss_bytes: u64,
}

/// The kernel's load averages (/proc/loadavg): tasks running or
/// waiting to run (or in uninterruptible IO), averaged over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadAverages {
    /// Over the last minute.
    pub one: f64,
    /// Over the last 5 minutes.
    pub five: f64,
    /// Over the last 15 minutes.
    pub fifteen: f64,
}

/// The appliance's memory and swap (/proc/meminfo), in bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Memory {
    /// Physical memory (MemTotal).
    pub total_bytes: u64,
    /// What can be allocated without swapping (MemAvailable).
    pub available_bytes: u64,
    /// Swap space (SwapTotal); 0 without swap.
    pub swap_total_bytes: u64,
    /// Unused swap space (SwapFree).
    pub swap_free_bytes: u64,
}

/// IO rates of one whole block device (partitions are not listed, nor
/// devices that never saw IO).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiskIo {
    /// Kernel name, e.g. `vda`, `nvme0n1`, `loop0`.
    pub device: String,
    /// Bytes read per second.
    pub read_bytes_per_sec: f64,
    /// Bytes written per second.
    pub write_bytes_per_sec: f64,
    /// Read requests completed per second.
    pub reads_per_sec: f64,
    /// Write requests completed per second.
    pub writes_per_sec: f64,
    /// Share of the interval the device had IO in flight (0..=100).
    pub busy_percent: f64,
}

/// Size and free space of the file system holding one datastore
/// (statvfs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatastoreSpace {
    /// The datastore's name.
    pub name: String,
    /// Its directory on the appliance.
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// Size of the file system in bytes; 0 when `error` is set.
    pub total_bytes: u64,
    /// Free for unprivileged writers (f_bavail), what backups can use.
    pub available_bytes: u64,
    /// Space in use, in percent (0-100) of what unprivileged writers
    /// could have, as df counts it; 0 when `error` is set.
    pub used_percent: f64,
    /// Why the numbers are missing (path gone, not mounted...), if they are.
    pub error: Option<String>,
}

/// One point of `GET /api/health/history`: what the dashboard's charts
/// draw over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthSample {
    /// When it was sampled (RFC 3339, UTC).
    pub time: chrono::DateTime<chrono::Utc>,
    /// The one-minute load average.
    pub load_one: f64,
    /// Memory that can be allocated without swapping, in bytes.
    pub memory_available_bytes: u64,
    /// Space used on each datastore's file system.
    pub datastores: Vec<DatastoreUsageSample>,
}

/// A datastore's file system at one point of the health history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatastoreUsageSample {
    /// The datastore's name.
    pub name: String,
    /// Bytes in use on its file system (size minus what unprivileged
    /// writers could still use).
    pub used_bytes: u64,
    /// Size of its file system in bytes.
    pub total_bytes: u64,
}

impl HealthSample {
    /// The history point of a full report (datastores that could not be
    /// measured are left out).
    pub fn of(r: &HealthReport) -> HealthSample {
        HealthSample {
            time: chrono::DateTime::from_timestamp(r.sampled_at as i64, 0).unwrap_or_default(),
            load_one: r.load.one,
            memory_available_bytes: r.memory.available_bytes,
            datastores: r
                .datastores
                .iter()
                .filter(|d| d.error.is_none())
                .map(|d| DatastoreUsageSample { name: d.name.clone(), used_bytes: d.total_bytes.saturating_sub(d.available_bytes), total_bytes: d.total_bytes })
                .collect(),
        }
    }
}
