//! Lifeboat health sampling from procfs and statvfs: memory, load averages,
//! uptime, IO rates per block device, free space per datastore and the
//! daemon's own resident memory.
//!
//! IO rates need two readings of /proc/diskstats: a `HealthSampler` keeps
//! the previous one, so each `sample` reports the rates since the last
//! (or since the sampler was made). Pure reads, no threads: the caller
//! decides how often to sample. The report types are in
//! lifeboat-api-types (`GET /api/health/details` serves them).
#![warn(missing_docs)]

pub use lifeboat_api_types::{DatastoreSpace, DiskIo, HealthReport, LoadAverages, Memory};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use procfs::Current;

/// Sectors in /proc/diskstats are always 512 bytes, whatever the device's.
const DISKSTATS_SECTOR: u64 = 512;

/// Why a reading failed.
#[derive(Debug, thiserror::Error)]
// Each variant's `#[error]` text is its documentation.
#[allow(missing_docs)]
pub enum HealthError {
    #[error("cannot read {what} from /proc: {source}")]
    Proc { what: &'static str, source: procfs::ProcError },
}

fn proc_err(what: &'static str) -> impl FnOnce(procfs::ProcError) -> HealthError {
    move |source| HealthError::Proc { what, source }
}

/// Counters of one block device at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct DiskCounters {
    reads: u64,
    writes: u64,
    sectors_read: u64,
    sectors_written: u64,
    io_ticks_ms: u64,
}

/// Takes health samples; keeps the previous /proc/diskstats reading for
/// IO rates.
pub struct HealthSampler {
    last_disks: (Instant, HashMap<String, DiskCounters>),
}

impl HealthSampler {
    /// Reads /proc/diskstats once, so the first `sample` has rates.
    pub fn new() -> Result<HealthSampler, HealthError> {
        Ok(HealthSampler { last_disks: (Instant::now(), read_disks()?) })
    }

    /// One report; `datastores` are (name, path) pairs whose file systems
    /// are measured.
    pub fn sample(&mut self, datastores: &[(String, PathBuf)]) -> Result<HealthReport, HealthError> {
        let meminfo = procfs::Meminfo::current().map_err(proc_err("memory (meminfo)"))?;
        let load = procfs::LoadAverage::current().map_err(proc_err("load averages (loadavg)"))?;
        let uptime = procfs::Uptime::current().map_err(proc_err("uptime"))?;
        let now = Instant::now();
        let disks_now = read_disks()?;
        let (then, disks_then) = std::mem::replace(&mut self.last_disks, (now, disks_now));
        let interval = now.duration_since(then);
        let disks = io_rates(&disks_then, &self.last_disks.1, interval);
        Ok(HealthReport {
            sampled_at: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            uptime_secs: uptime.uptime as u64,
            load: LoadAverages { one: load.one as f64, five: load.five as f64, fifteen: load.fifteen as f64 },
            memory: Memory {
                total_bytes: meminfo.mem_total,
                // Kernels before 3.14 lack MemAvailable; free is the closest lower bound.
                available_bytes: meminfo.mem_available.unwrap_or(meminfo.mem_free),
                swap_total_bytes: meminfo.swap_total,
                swap_free_bytes: meminfo.swap_free,
            },
            disks,
            io_interval_secs: interval.as_secs_f64(),
            datastores: datastores.iter().map(|(name, path)| datastore_space(name, path)).collect(),
            daemon_rss_bytes: own_rss()?,
        })
    }
}

/// Resident memory of this process, from /proc/self/status (VmRSS).
pub fn own_rss() -> Result<u64, HealthError> {
    let status = procfs::process::Process::myself().and_then(|p| p.status()).map_err(proc_err("this process's status"))?;
    Ok(status.vmrss.unwrap_or(0) * 1024)
}

/// Whole block devices (those in /sys/block) that have seen IO; partitions
/// would count the same bytes twice, and never-used loop devices are noise.
fn read_disks() -> Result<HashMap<String, DiskCounters>, HealthError> {
    let stats = procfs::diskstats().map_err(proc_err("disk statistics (diskstats)"))?;
    Ok(stats
        .into_iter()
        .filter(|d| Path::new("/sys/block").join(&d.name).exists() && !d.name.starts_with("ram"))
        .filter(|d| d.reads + d.writes > 0)
        .map(|d| {
            let c = DiskCounters { reads: d.reads, writes: d.writes, sectors_read: d.sectors_read, sectors_written: d.sectors_written, io_ticks_ms: d.time_in_progress };
            (d.name, c)
        })
        .collect())
}

fn io_rates(then: &HashMap<String, DiskCounters>, now: &HashMap<String, DiskCounters>, interval: Duration) -> Vec<DiskIo> {
    let secs = interval.as_secs_f64().max(1e-3);
    let mut disks: Vec<DiskIo> = now
        .iter()
        .map(|(name, n)| {
            // A device that appeared since the last reading counts from zero.
            let t = then.get(name).copied().unwrap_or_default();
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
            DiskIo {
                device: name.clone(),
                read_bytes_per_sec: rate(n.sectors_read, t.sectors_read) * DISKSTATS_SECTOR as f64,
                write_bytes_per_sec: rate(n.sectors_written, t.sectors_written) * DISKSTATS_SECTOR as f64,
                reads_per_sec: rate(n.reads, t.reads),
                writes_per_sec: rate(n.writes, t.writes),
                busy_percent: (rate(n.io_ticks_ms, t.io_ticks_ms) / 10.0).min(100.0),
            }
        })
        .collect();
    disks.sort_by(|a, b| a.device.cmp(&b.device));
    disks
}

/// Size and free space of the file system holding `path` (statvfs).
pub fn datastore_space(name: &str, path: &Path) -> DatastoreSpace {
    let mut space = DatastoreSpace { name: name.to_string(), path: path.to_path_buf(), total_bytes: 0, available_bytes: 0, used_percent: 0.0, error: None };
    match statvfs(path) {
        Ok(st) => {
            let frsize = st.f_frsize;
            space.total_bytes = st.f_blocks * frsize;
            space.available_bytes = st.f_bavail * frsize;
            let used = st.f_blocks.saturating_sub(st.f_bfree);
            // Like df: used against what unprivileged users could have.
            let usable = used + st.f_bavail;
            space.used_percent = if usable == 0 { 0.0 } else { used as f64 * 100.0 / usable as f64 };
        }
        Err(e) => space.error = Some(format!("cannot measure {}: {e}", path.display())),
    }
    space
}

fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is NUL-terminated; statvfs fills st on success.
    if unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { st.assume_init() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn raw_meminfo_kib(field: &str) -> u64 {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap();
        let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn memory_load_and_uptime_are_sane() {
        let mut sampler = HealthSampler::new().unwrap();
        let r = sampler.sample(&[]).unwrap();
        assert_eq!(r.memory.total_bytes, raw_meminfo_kib("MemTotal") * 1024);
        assert!(r.memory.total_bytes > 64 << 20, "{:?}", r.memory);
        assert!(r.memory.available_bytes > 0 && r.memory.available_bytes <= r.memory.total_bytes);
        assert!(r.memory.swap_free_bytes <= r.memory.swap_total_bytes);
        for l in [r.load.one, r.load.five, r.load.fifteen] {
            assert!(l.is_finite() && (0.0..10_000.0).contains(&l), "{:?}", r.load);
        }
        let raw_uptime: f64 = std::fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap();
        assert!(r.uptime_secs > 0 && (r.uptime_secs as f64 - raw_uptime).abs() < 5.0, "{}", r.uptime_secs);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!(now.abs_diff(r.sampled_at) < 5);
    }

    #[test]
    fn own_rss_grows_with_touched_memory() {
        let before = own_rss().unwrap();
        assert!(before > 100 << 10 && before < 1 << 30, "{before}");
        let block = vec![1u8; 64 << 20];
        let during = own_rss().unwrap();
        assert!(during >= before + (48 << 20), "before {before}, with 64 MiB touched {during}");
        drop(std::hint::black_box(block));
    }

    #[test]
    fn io_rates_see_a_synced_write() {
        // Write 32 MiB with fsync to a file on the disk under the build
        // directory (not tmpfs): the device holding it must show writes.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let mut sampler = HealthSampler::new().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut f = std::fs::File::create(dir.path().join("io")).unwrap();
        for i in 0..32u8 {
            f.write_all(&vec![i.wrapping_mul(37) | 1; 1 << 20]).unwrap();
        }
        f.sync_all().unwrap();
        let r = sampler.sample(&[]).unwrap();
        assert!(r.io_interval_secs > 0.04 && r.io_interval_secs < 60.0, "{}", r.io_interval_secs);
        assert!(!r.disks.is_empty(), "no block devices in /proc/diskstats");
        let written: f64 = r.disks.iter().map(|d| d.write_bytes_per_sec * r.io_interval_secs).sum();
        assert!(written >= 30.0 * (1 << 20) as f64, "32 MiB synced but devices show {written} bytes written: {:?}", r.disks);
        for d in &r.disks {
            assert!(d.read_bytes_per_sec >= 0.0 && (0.0..=100.0).contains(&d.busy_percent), "{d:?}");
            assert!(!d.device.is_empty() && !d.device.contains('/'), "{d:?}");
        }
        // Partitions are left out: each device is a whole disk.
        let names: Vec<&str> = r.disks.iter().map(|d| d.device.as_str()).collect();
        for n in &names {
            assert!(Path::new("/sys/block").join(n).exists(), "{n} is not a whole block device");
        }
    }

    #[test]
    fn datastore_space_matches_df_and_names_missing_paths() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let s = datastore_space("main", dir.path());
        assert_eq!(s.error, None);
        assert!(s.total_bytes > 0 && s.available_bytes <= s.total_bytes, "{s:?}");
        assert!((0.0..=100.0).contains(&s.used_percent), "{s:?}");
        // df -B1 reports the same file system's size.
        let out = std::process::Command::new("df").args(["-B1", "--output=size,avail"]).arg(dir.path()).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let nums: Vec<u64> = text.lines().nth(1).unwrap().split_whitespace().map(|n| n.parse().unwrap()).collect();
        assert_eq!(s.total_bytes, nums[0]);
        assert!(s.available_bytes.abs_diff(nums[1]) < 64 << 20, "statvfs {} vs df {}", s.available_bytes, nums[1]);

        let gone = datastore_space("gone", &dir.path().join("missing"));
        let err = gone.error.unwrap();
        assert!(err.contains("missing") && err.contains("No such file"), "{err}");
        assert_eq!(gone.total_bytes, 0);
    }
}
