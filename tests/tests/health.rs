//! The health endpoints of the running appliance: liveness without a
//! token, the full report (procfs, statvfs) with one.

mod common;

use common::appliance::{path_str, Appliance};
use serde_json::json;

#[test]
fn liveness_is_open_and_details_need_a_token() {
    let app = Appliance::start("health", &[], &[]);
    let (status, v) = app.call("GET", "/api/health", None, None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    let (status, _) = app.call("GET", "/api/health/details", None, None);
    assert_eq!(status, 401);
    let (status, _) = app.call("GET", "/api/health/details", Some("bogus.token"), None);
    assert_eq!(status, 401);

    let admin = app.login();
    let ds = app.dir.path().join("ds");
    let (status, v) = app.call("POST", "/api/datastores", Some(&admin), Some(&json!({"name": "main", "path": path_str(&ds)})));
    assert_eq!(status, 200, "{v}");
    // A read-only token may read the report.
    let (_, ro) = app.call("POST", "/api/tokens", Some(&admin), Some(&json!({"name": "monitor", "role": "read-only"})));
    let ro = ro["token"].as_str().unwrap().to_string();

    // The new datastore shows up with the next sample (every 5 s).
    let mut report = json!(null);
    for _ in 0..100 {
        let (status, v) = app.call("GET", "/api/health/details", Some(&ro), None);
        assert_eq!(status, 200, "{v}");
        report = v;
        if report["datastores"].as_array().unwrap().iter().any(|d| d["name"] == "main") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo.lines().next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(report["memory"]["total_bytes"], total_kib * 1024, "{report}");
    assert!(report["memory"]["available_bytes"].as_u64().unwrap() > 0, "{report}");
    assert!(report["load"]["one"].as_f64().unwrap() >= 0.0, "{report}");
    assert!(report["uptime_secs"].as_u64().unwrap() > 0, "{report}");
    let rss = report["daemon_rss_bytes"].as_u64().unwrap();
    // The daemon's RSS as the kernel reports it for its pid.
    let status_text = std::fs::read_to_string(format!("/proc/{}/status", app.pid())).unwrap();
    let vmrss_kib: u64 = status_text.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(rss > 1 << 20 && rss.abs_diff(vmrss_kib * 1024) < 64 << 20, "report {rss}, kernel {} KiB", vmrss_kib);
    let main = report["datastores"].as_array().unwrap().iter().find(|d| d["name"] == "main").expect("datastore main in the report");
    assert!(main["total_bytes"].as_u64().unwrap() > 0 && main["error"].is_null(), "{main}");
    assert_eq!(main["path"], path_str(&ds));
    assert!(report["disks"].is_array() && report["io_interval_secs"].as_f64().unwrap() > 0.0, "{report}");
}
