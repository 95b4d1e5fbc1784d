//! The verification lab against real network namespaces, bridges, taps,
//! nftables, QEMU (TCG) and headless Chromium.
//!
//! - Two labs hold guests with the same IP and MAC at once, each reached
//!   only by its own lab's probes; from inside a lab neither the host nor
//!   a "production" namespace answers; from the host no guest does.
//! - `lab verify` passes the tiny guest's backup (boot, ping, heartbeat,
//!   screenshot, a script) in two labs at once, and fails a backup whose
//!   boot sector is zeroed, naming the steps that failed.
//! - A run killed with SIGKILL leaves its namespace and QEMU behind;
//!   `lab cleanup` (and the next run) removes them.
//! - The HTML report renders in Chromium with its summary, table,
//!   timeline and screenshot.

mod common;

use common::guest::*;
use common::*;
use lifeboat_lab::net::{LabNetwork, NetSpec};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The tests here look at every lab namespace on the machine ("none left
/// behind"), so they run one at a time even under `--test-threads=2`.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

fn ok(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A stand-in guest: its own namespace, a veth into the lab's bridge,
/// the given address and MAC, and a web server answering `who`.
struct FakeGuest(String, std::process::Child);

impl FakeGuest {
    fn new(name: &str, lab: &LabNetwork, who: &str, dir: &Path) -> FakeGuest {
        let _ = sh(&format!("ip netns del {name} 2>/dev/null"));
        ok(&format!("ip netns add {name}"));
        ok(&format!("ip link add g0 netns {name} type veth peer name {name}p netns {}", lab.netns));
        ok(&format!("ip -n {name} link set g0 address 52:54:00:12:34:56 up"));
        ok(&format!("ip -n {name} link set lo up"));
        ok(&format!("ip -n {name} addr add 10.0.2.15/24 dev g0"));
        ok(&format!("ip -n {name} route add default via 10.0.2.2"));
        ok(&format!("ip -n {} link set {name}p master labbr0 up", lab.netns));
        let www = dir.join(name);
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("who"), who).unwrap();
        let server = Command::new("ip")
            .args(["netns", "exec", name, "python3", "-m", "http.server", "--bind", "10.0.2.15", "8080", "--directory"])
            .arg(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        FakeGuest(name.to_string(), server)
    }
}

impl Drop for FakeGuest {
    fn drop(&mut self) {
        let _ = sh(&format!("for p in $(ip netns pids {0}); do kill -9 $p; done; ip netns del {0}", self.0));
        let _ = self.1.kill();
        let _ = self.1.wait();
    }
}

#[test]
fn two_labs_hold_the_same_guest_and_nothing_leaves_a_lab() {
    require_root();
    let _serial = serial();
    let t = scratch("lab-net");
    let markers = t.path().join("markers");
    let spec = NetSpec { probe_addrs: vec!["10.0.2.2/24".into()], ..Default::default() };
    let a = LabNetwork::create("tnetA", &spec, &markers).unwrap();
    let b = LabNetwork::create("tnetB", &spec, &markers).unwrap();
    let _ga = FakeGuest::new("lbtguestA", &a, "guest in lab A", t.path());
    let _gb = FakeGuest::new("lbtguestB", &b, "guest in lab B", t.path());
    // "Production": a namespace linked to the host, as a real network is.
    let _ = sh("ip link del lbtprod0 2>/dev/null; ip netns del lbtprod 2>/dev/null");
    ok("ip netns add lbtprod && ip link add lbtprod0 type veth peer name p0 netns lbtprod && ip addr add 192.168.251.1/24 dev lbtprod0 && ip link set lbtprod0 up && ip -n lbtprod addr add 192.168.251.2/24 dev p0 && ip -n lbtprod link set p0 up && ip -n lbtprod link set lo up");
    struct Prod;
    impl Drop for Prod {
        fn drop(&mut self) {
            let _ = sh("ip link del lbtprod0; ip netns del lbtprod");
        }
    }
    let _prod = Prod;

    // Each lab's probes reach its own guest, same IP and MAC in both.
    let fetch = |ns: &str| {
        wait_until(Duration::from_secs(20), || sh(&format!("ip netns exec {ns} curl -sf --max-time 2 http://10.0.2.15:8080/who")).status.success());
        ok(&format!("ip netns exec {ns} curl -sf --max-time 2 http://10.0.2.15:8080/who"))
    };
    assert_eq!(fetch(&a.netns), "guest in lab A");
    assert_eq!(fetch(&b.netns), "guest in lab B");
    ok(&format!("ip netns exec {} ping -c1 -W2 10.0.2.15", a.netns));

    // From inside a lab: not the host, not production, not the other lab.
    let host_ip = ok("ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1");
    let host_ip = host_ip.trim();
    for ip in ["192.168.251.2", "192.168.251.1", host_ip].into_iter().filter(|i| !i.is_empty()) {
        let probe = format!("ip netns exec lbtguestA sh -c 'ping -c1 -W1 {ip} || timeout 2 bash -c \"</dev/tcp/{ip}/22\"'");
        assert!(!sh(&probe).status.success(), "the lab guest reached {ip}");
    }
    assert!(!sh(&format!("ip netns exec {} ping -c1 -W1 192.168.251.2", a.netns)).status.success(), "the lab's own stack reached production");
    // From the host and from production, no guest answers.
    assert!(!sh("ping -c1 -W1 10.0.2.15").status.success(), "the host reached a lab guest");
    assert!(!sh("ip netns exec lbtprod ping -c1 -W1 10.0.2.15").status.success(), "production reached a lab guest");
    // The firewall is in place: nothing forwarded.
    let fw = a.firewall_listing().unwrap();
    assert!(fw.contains("hook forward") && fw.contains("policy drop"), "{fw}");

    a.remove().unwrap();
    drop(b);
    assert!(!Path::new("/run/netns/lblab-tnetA").exists() && !Path::new("/run/netns/lblab-tnetB").exists());
}

/// Inside a lab: the masquerade map lets the lab's own commands reach a
/// guest under its production address, the lab's DNS answers the names
/// it defines (through /etc/netns/<ns>/resolv.conf), and DHCP hands a
/// guest the address fixed for its MAC; the lab learns addresses from
/// its leases and its neighbour table. Nothing of it stays behind.
#[test]
fn masquerade_dns_and_dhcp_inside_a_lab() {
    require_root();
    let _serial = serial();
    let t = scratch("lab-services");
    let markers = t.path().join("markers");
    let spec = NetSpec {
        probe_addrs: vec!["10.0.2.2/24".into()],
        masquerade: lifeboat_lab::parse_masquerade([("192.168.77.10", "10.0.2.15")]).unwrap(),
        dns: lifeboat_lab::parse_dns([("web.prod.example", "192.168.77.10")]).unwrap(),
        dhcp: Some(vec![("52:54:00:aa:bb:cc".into(), "10.0.2.77".parse().unwrap())]),
    };
    let lab = LabNetwork::create("tsvc", &spec, &markers).unwrap();
    let _g = FakeGuest::new("lbtguestS", &lab, "the web server", t.path());
    let fetch = |url: &str| sh(&format!("ip netns exec {} curl -sf --max-time 2 {url}", lab.netns));
    assert!(wait_until(Duration::from_secs(20), || fetch("http://192.168.77.10:8080/who").status.success()), "the production address did not reach the guest");
    assert_eq!(String::from_utf8_lossy(&fetch("http://web.prod.example:8080/who").stdout), "the web server");
    assert_eq!(ok(&format!("ip netns exec {} getent hosts web.prod.example", lab.netns)).split_whitespace().next(), Some("192.168.77.10"));
    // The masquerade is for the lab's own stack: the address is not on
    // the bridge, and the host does not resolve the lab's names.
    assert!(!sh("getent hosts web.prod.example").status.success());
    // A DHCP client with the MAC gets its fixed address.
    let _ = sh("ip netns del lbtdhcp 2>/dev/null");
    ok("ip netns add lbtdhcp");
    struct Ns;
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = sh("ip netns del lbtdhcp");
        }
    }
    let _ns = Ns;
    ok(&format!("ip link add d0 netns lbtdhcp type veth peer name lbtdhcpp netns {}", lab.netns));
    ok("ip -n lbtdhcp link set d0 address 52:54:00:aa:bb:cc up");
    ok(&format!("ip -n {} link set lbtdhcpp master labbr0 up", lab.netns));
    let o = sh("ip netns exec lbtdhcp busybox udhcpc -i d0 -n -q -t 10 -T 1 -s /bin/true 2>&1");
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success() && said.contains("10.0.2.77"), "udhcpc: {said}");
    let learned = lab.learned_addresses();
    assert!(learned.contains(&("52:54:00:aa:bb:cc".into(), "10.0.2.77".parse().unwrap())), "{learned:?}");
    assert!(
        learned.contains(&("52:54:00:12:34:56".into(), "10.0.2.15".parse().unwrap())),
        "the guest that answered is not in the neighbour table: {learned:?}\n{}",
        String::from_utf8_lossy(&sh(&format!("ip -n {} neigh show", lab.netns)).stdout)
    );
    let etc = Path::new("/etc/netns").join(&lab.netns);
    assert!(etc.join("resolv.conf").exists());
    lab.remove().unwrap();
    assert!(!etc.exists(), "the lab's resolv.conf stayed");
}

fn lab_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns").map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("lblab-")).collect()).unwrap_or_default()
}

fn verify(ds: &Ds, snap: &str, report: &Path, extra: &[&str]) -> Command {
    let mut c = lb_cmd();
    c.args(["lab", "verify", "--json", "--datastore"]).arg(&ds.path).arg(snap).args(["--ip", "10.0.2.15/24", "--report"]).arg(report).args(extra);
    c
}

#[test]
fn backups_are_verified_in_labs_and_a_broken_one_fails() {
    require_root();
    let _serial = serial();
    let t = scratch("lab-verify");
    let disk = build_guest("tiny", t.path());
    let ds = Ds::init(t.path().join("ds"));
    let good = back_up_paused(&ds, &disk, "lab-tiny", &t.path().join("q1"));
    // The same guest with its boot sector zeroed.
    let broken_disk = t.path().join("broken.raw");
    std::fs::copy(&disk, &broken_disk).unwrap();
    {
        use std::os::unix::fs::FileExt;
        std::fs::OpenOptions::new().write(true).open(&broken_disk).unwrap().write_all_at(&[0u8; 512], 0).unwrap();
    }
    let broken = back_up_paused(&ds, &broken_disk, "lab-broken", &t.path().join("q2"));

    // A script probe runs inside the lab with the guest's address.
    let script = t.path().join("check.sh");
    std::fs::write(&script, "#!/bin/sh\nping -c1 -W2 \"$LIFEBOAT_LAB_IP\" >/dev/null && echo \"reached $LIFEBOAT_LAB_VM at $LIFEBOAT_LAB_IP\"\n").unwrap();
    chmod(&script, 0o755);
    let probes = format!("ping,heartbeat,screenshot,script={}", script.display());
    // A script that says no fails the run, whatever the other probes say.
    let refuse = t.path().join("refuse.sh");
    std::fs::write(&refuse, "#!/bin/sh\necho \"the application on $LIFEBOAT_LAB_IP did not answer\"\nexit 3\n").unwrap();
    chmod(&refuse, 0o755);

    // Two labs at once, the same guest (same IP, same MAC) in each; no
    // accelerator given: the product's default.
    let r1 = t.path().join("r1");
    let r2 = t.path().join("r2");
    // The first lab also maps a production address and name onto the
    // guest: a script reaches it under both, from inside the lab.
    let prod = t.path().join("prod.sh");
    std::fs::write(&prod, "#!/bin/sh\nset -e\ngetent hosts web.prod.example | grep -q 192.168.77.15\nping -c1 -W2 web.prod.example >/dev/null\necho reached web.prod.example\n").unwrap();
    chmod(&prod, 0o755);
    let one_probes = format!("{probes},script={}", prod.display());
    let one = ChildGuard::spawn(verify(&ds, &good, &r1, &["--probe", &one_probes, "--masquerade", "192.168.77.15=10.0.2.15", "--dns", "web.prod.example=192.168.77.15"]));
    let two = ChildGuard::spawn(verify(&ds, &good, &r2, &["--probe", &format!("{probes},script={}", refuse.display())]));
    for (o, dir) in [(one.wait(), &r1), (two.wait(), &r2)] {
        let refused = dir == &r2;
        if refused {
            o.expect_code(1);
        } else {
            o.expect_ok();
        }
        let rep = o.json();
        assert_eq!(rep["passed"], !refused, "{rep:#}");
        let steps: Vec<(String, String)> = rep["vms"][0]["steps"].as_array().unwrap().iter().map(|s| (s["name"].as_str().unwrap().to_string(), s["outcome"].as_str().unwrap().to_string())).collect();
        let names: Vec<&str> = steps.iter().map(|s| s.0.as_str()).collect();
        if refused {
            assert_eq!(names, ["boot", "ping", "heartbeat", "screenshot", "script:check.sh", "script:refuse.sh", "shutdown"], "{rep:#}");
            let s = &rep["vms"][0]["steps"][5];
            assert_eq!(s["outcome"], "fail", "{rep:#}");
            assert!(s["detail"].as_str().unwrap().contains("exit 3") && s["detail"].as_str().unwrap().contains("did not answer"), "{rep:#}");
        } else {
            assert_eq!(names, ["boot", "ping", "heartbeat", "screenshot", "script:check.sh", "script:prod.sh", "shutdown"], "{rep:#}");
            assert!(steps[5].1 == "pass" && rep["vms"][0]["steps"][5]["detail"].as_str().unwrap().contains("reached web.prod.example"), "{rep:#}");
        }
        assert!(steps[..5].iter().all(|s| s.1 == "pass"), "{rep:#}");
        let shot = rep["vms"][0]["screenshot"].as_str().unwrap();
        assert!(dir.join(shot).is_file() && dir.join("report.html").is_file() && dir.join("report.json").is_file());
    }
    assert!(lab_netns().is_empty(), "labs left behind: {:?}", lab_netns());

    // The broken backup fails, and says where.
    let o = run_cmd(verify(&ds, &broken, &t.path().join("r3"), &["--boot-timeout", "45"]));
    o.expect_code(1);
    let rep = o.json();
    assert_eq!(rep["passed"], false);
    let step = |n: &str| rep["vms"][0]["steps"].as_array().unwrap().iter().find(|s| s["name"] == n).cloned().unwrap_or(Value::Null);
    assert_eq!(step("boot")["outcome"], "pass", "{rep:#}");
    for n in ["ping", "heartbeat", "screenshot"] {
        assert_eq!(step(n)["outcome"], "fail", "{n}: {rep:#}");
    }
    assert!(step("screenshot")["detail"].as_str().unwrap().contains("firmware"), "{rep:#}");

    // SIGKILL mid-run: the namespace and QEMU stay until cleanup.
    let mut c = verify(&ds, &broken, &t.path().join("r4"), &["--boot-timeout", "120"]);
    c.stdout(Stdio::null());
    let mut killed = ChildGuard::spawn(c);
    assert!(wait_until(Duration::from_secs(60), || !lab_netns().is_empty()), "no lab namespace appeared");
    std::thread::sleep(Duration::from_secs(3));
    killed.signal(libc::SIGKILL);
    let _ = killed.wait();
    let left = lab_netns();
    assert_eq!(left.len(), 1, "{left:?}");
    let pids = ok(&format!("ip netns pids {}", left[0]));
    assert!(!pids.trim().is_empty(), "QEMU should still run in the orphaned lab");
    let o = lb(["lab", "cleanup"]);
    o.expect_ok();
    assert!(o.stdout.contains(&left[0]), "{o}");
    assert!(lab_netns().is_empty());
    for p in pids.split_whitespace() {
        // Gone, or a zombie waiting for init to reap it (its parent was killed).
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'), "process {p} of the killed lab still runs: {stat}");
    }

    // The report renders in a real browser.
    let html = r1.join("report.html");
    let dom = chromium(&["--dump-dom".into(), format!("file://{}", html.display())]);
    assert!(dom.contains("id=\"summary\"") && dom.contains("lab-tiny") && dom.contains("<svg class=\"timeline\"") && dom.contains("data:image/png;base64,"), "{dom}");
    assert!(dom.contains("class=\"pass\">pass<"), "{dom}");
    let shot = t.path().join("report.png");
    chromium(&[format!("--screenshot={}", shot.display()), "--window-size=1200,1600".into(), format!("file://{}", html.display())]);
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "Chromium made no screenshot of the report");
    let keep = workspace().join("target").join("test-artifacts");
    let _ = std::fs::create_dir_all(&keep);
    let _ = std::fs::copy(&shot, keep.join("lab-report.png"));
}

#[test]
fn an_application_group_boots_in_order_and_the_agent_names_an_address() {
    require_root();
    let _serial = serial();
    let t = scratch("lab-group");
    let debian = build_guest("debian", t.path());
    let tiny = build_guest("tiny", t.path());
    // Both guests default to 10.0.2.15: the application server moves.
    run_ok(Command::new("bash").arg(guest_dir().join("set-ip.sh")).arg(&tiny).arg("10.0.2.16/24 10.0.2.2"));
    let ds = Ds::init(t.path().join("ds"));
    let db = back_up_paused_with(&ds, &debian, "lab-db", &t.path().join("q1"), "768", "52:54:00:00:00:01");
    let app = back_up_paused_with(&ds, &tiny, "lab-app", &t.path().join("q2"), "256", "52:54:00:00:00:02");
    // The database first; the application 5 s later. No address for the
    // database: its qemu-ga tells it.
    let mut c = lb_cmd();
    c.args(["lab", "verify", "--json", "--datastore"]).arg(&ds.path).args([db.as_str(), app.as_str()]);
    c.args(["--ip", "-", "--ip", "10.0.2.16/24", "--delay", "5", "--boot-timeout", "240", "--report"]).arg(t.path().join("r"));
    let o = run_cmd(c);
    o.expect_ok();
    let rep = o.json();
    assert_eq!(rep["passed"], true, "{rep:#}");
    let vms = rep["vms"].as_array().unwrap();
    assert_eq!((vms[0]["vm"].as_str(), vms[1]["vm"].as_str()), (Some("lab-db"), Some("lab-app")));
    let learned = vms[0]["steps"].as_array().unwrap().iter().find(|s| s["name"] == "address").cloned().unwrap_or_default();
    assert_eq!(learned["outcome"], "pass", "{rep:#}");
    assert_eq!(vms[0]["ip"], "10.0.2.15/24", "{rep:#}");
    let boot = |v: &Value| chrono_secs(v["steps"][0]["started"].as_str().unwrap());
    assert!(boot(&vms[1]) - boot(&vms[0]) >= 5.0, "the application booted before its delay: {rep:#}");
    for v in vms {
        for n in ["ping", "heartbeat", "screenshot"] {
            assert!(v["steps"].as_array().unwrap().iter().any(|s| s["name"] == n && s["outcome"] == "pass"), "{n} of {}: {rep:#}", v["vm"]);
        }
    }
}

#[test]
fn the_daemon_runs_lab_verifications_as_jobs_and_serves_their_reports() {
    require_root();
    let _serial = serial();
    let t = scratch("lab-daemon");
    let tiny = build_guest("tiny", t.path());
    let scripts = t.path().join("lab-scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(scripts.join("hello.sh"), "#!/bin/sh\nping -c1 -W2 \"$LIFEBOAT_LAB_IP\" >/dev/null && echo hello from the lab\n").unwrap();
    chmod(&scripts.join("hello.sh"), 0o755);
    let state = t.path().join("state");
    let cfg = format!("timezone = \"UTC\"\nbackup_roots = [\"{0}\"]\nrestore_roots = [\"{0}/restores\"]\nlab_scripts_dir = \"{1}\"\n", t.path().display(), scripts.display());
    let d = common::daemon::Daemon::start(&state, Some(&cfg), &[]);
    // The VM is backed up by the CLI on the appliance into the daemon's datastore.
    let ds = Ds::at(state.join("datastores/default"));
    back_up_paused(&ds, &tiny, "lab-tiny", &t.path().join("q"));
    let spec = serde_json::json!({ "kind": "lab-verify", "datastore": "default",
        "vms": [{ "snapshot": "vm:lab-tiny", "ip": "10.0.2.15/24" }], "probes": "ping,heartbeat,screenshot,script=hello.sh", "boot_timeout": 120 });
    // A read-only token may read reports, not start a lab.
    let ro = d.token("ro", "read-only");
    assert_eq!(d.call("POST", "/api/jobs", Some(&ro), Some(&spec)).status, 403);
    // A script is a name in lab_scripts_dir, never a path.
    let mut bad = spec.clone();
    bad["probes"] = "script=/bin/sh".into();
    assert_eq!(d.call("POST", "/api/jobs", Some(&d.admin), Some(&bad)).status, 400);
    let job = d.admin_ok("POST", "/api/jobs", Some(&spec));
    let done = d.wait_job(job["id"].as_str().unwrap(), Duration::from_secs(300));
    assert_eq!(done["state"], "succeeded", "{done:#}\n{}", d.call("GET", &format!("/api/jobs/{}/log", job["id"].as_str().unwrap()), Some(&d.admin), None).body);
    assert_eq!(done["result"]["passed"], true);
    let reports = d.call("GET", "/api/datastores/default/lab-reports", Some(&ro), None).json();
    assert_eq!(reports.as_array().unwrap().len(), 1, "{reports}");
    assert_eq!(reports[0]["vms"][0], serde_json::json!(["lab-tiny", true]));
    let id = reports[0]["id"].as_str().unwrap();
    let html = d.call("GET", &format!("/api/datastores/default/lab-reports/{id}/report.html"), Some(&ro), None);
    assert_eq!(html.status, 200);
    assert!(html.body.contains("lab-tiny") && html.body.contains("script:hello.sh") && html.body.contains("hello from the lab"), "{}", html.body);
    assert_eq!(d.call("GET", &format!("/api/datastores/default/lab-reports/{id}/..%2Fx"), Some(&ro), None).status / 100, 4);
    assert!(lab_netns().is_empty());

    // A lab definition that follows every backup of its VM and mails its
    // report: a VM backup job through the daemon starts the run, whose
    // mail carries the summary and the HTML report attached.
    let sink = lifeboat_notify::testing::SmtpSink::start("none", None, false, &[]);
    d.admin_ok("PUT", "/api/settings/smtp", Some(&serde_json::json!({ "host": "127.0.0.1", "port": sink.port, "security": "none", "from": "lifeboat@appliance.test", "to": ["ops@example.test"] })));
    let def = serde_json::json!({ "name": "tiny-lab", "datastore": "default", "vms": [{ "snapshot": "vm:lab-tiny", "ip": "10.0.2.15/24" }],
        "probes": "ping,heartbeat", "boot_timeout": 120, "after_backup": true, "notify": "always" });
    assert_eq!(d.call("POST", "/api/labs", Some(&ro), Some(&def)).status, 403);
    let mut bad = def.clone();
    bad["datastore"] = "nope".into();
    assert_eq!(d.call("POST", "/api/labs", Some(&d.admin), Some(&bad)).status, 404);
    d.admin_ok("POST", "/api/labs", Some(&def));
    assert_eq!(d.call("POST", "/api/labs", Some(&d.admin), Some(&def)).status, 409);
    assert_eq!(d.call("GET", "/api/labs", Some(&ro), None).json()[0]["name"], "tiny-lab");
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&serde_json::json!({ "kind": "lab-verify", "datastore": "default", "lab": "no-such-lab" })));
    assert_eq!(r.status, 404, "{r:?}");
    let q = t.path().join("q2");
    std::fs::create_dir_all(&q).unwrap();
    let qmp = q.join("qmp.sock");
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-S", "-display", "none", "-nodefaults", "-machine", "pc", "-m", "256", "-name", "lab-tiny"]);
    c.arg("-drive").arg(format!("file={},format=raw,if=virtio,readonly=on", tiny.display()));
    c.args(["-netdev", "hubport,id=n0,hubid=0", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"]);
    c.arg("-qmp").arg(format!("unix:{},server=on,wait=off", qmp.display()));
    let _qemu = ChildGuard::spawn(c);
    assert!(wait_until(Duration::from_secs(30), || std::os::unix::net::UnixStream::connect(&qmp).is_ok()));
    d.admin_ok("POST", "/api/vms", Some(&serde_json::json!({ "source": { "kind": "qmp", "qmp": qmp } })));
    let b = d.admin_ok("POST", "/api/jobs", Some(&serde_json::json!({ "kind": "vm-backup", "datastore": "default", "vm": "lab-tiny" })));
    assert_eq!(d.wait_job(b["id"].as_str().unwrap(), Duration::from_secs(120))["state"], "succeeded");
    let mut runs = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(30), || {
            runs = d.call("GET", "/api/labs/tiny-lab/runs", Some(&ro), None).json();
            runs.as_array().is_some_and(|a| !a.is_empty())
        }),
        "no lab run followed the VM backup: {runs}"
    );
    let run = d.wait_job(runs[0]["id"].as_str().unwrap(), Duration::from_secs(300));
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["spec"]["lab"], "tiny-lab");
    let mail = sink.next_mail();
    assert!(mail["subject"].as_str().unwrap().contains("lab-verify"), "{mail}");
    assert!(mail["body"].as_str().unwrap().contains("passed"), "{mail}");
    let att = &mail["attachments"][0];
    assert!(att["filename"].as_str().unwrap().starts_with("lab-report-") && att["content_type"] == "text/html", "{mail}");
    assert!(att["text"].as_str().unwrap().contains("lab-tiny"), "{mail}");
    // Lab schedules: daily, weekly and monthly runs of the lab (cron in
    // the appliance's time zone, UTC here); the weekly one run now.
    let mut ids = Vec::new();
    for (name, cron) in [("lab-daily", "0 30 2 * * *"), ("lab-weekly", "0 0 3 * * Sun"), ("lab-monthly", "0 0 4 1 * *")] {
        let s = d.admin_ok(
            "POST",
            "/api/schedules",
            Some(&serde_json::json!({ "name": name, "cron": cron, "job": { "kind": "lab-verify", "datastore": "default", "lab": "tiny-lab" }, "notify": "always" })),
        );
        let next = chrono::DateTime::parse_from_rfc3339(s["next_run"].as_str().unwrap_or_else(|| panic!("{s}"))).unwrap().with_timezone(&chrono::Utc);
        let ahead = next - chrono::Utc::now();
        use chrono::{Datelike, Timelike};
        match name {
            "lab-daily" => assert!(ahead <= chrono::Duration::hours(24) && (next.hour(), next.minute()) == (2, 30), "{s}"),
            "lab-weekly" => assert!(ahead <= chrono::Duration::days(7) && next.weekday() == chrono::Weekday::Sun && next.hour() == 3, "{s}"),
            _ => assert!(ahead <= chrono::Duration::days(31) && next.day() == 1 && next.hour() == 4, "{s}"),
        }
        ids.push(s["id"].as_str().unwrap().to_string());
    }
    let r = d.call(
        "POST",
        "/api/schedules",
        Some(&d.admin),
        Some(&serde_json::json!({ "name": "lab-nope", "cron": "0 0 3 * * *", "job": { "kind": "lab-verify", "datastore": "default", "lab": "no-such-lab" } })),
    );
    assert_eq!(r.status, 404, "a schedule of a lab that is not defined: {r:?}");
    let weekly = d.admin_ok("POST", &format!("/api/schedules/{}/run", ids[1]), None);
    let weekly = d.wait_job(weekly["id"].as_str().unwrap(), Duration::from_secs(300));
    assert_eq!((weekly["state"].as_str(), weekly["schedule"].as_str(), weekly["spec"]["lab"].as_str()), (Some("succeeded"), Some(ids[1].as_str()), Some("tiny-lab")), "{weekly:#}");
    assert_eq!(weekly["result"]["vms"][0]["vm"], "lab-tiny", "{weekly:#}");
    // Its mail: the lab's own summary, not a dump of the result.
    let mail = sink.next_mail();
    let body = mail["body"].as_str().unwrap();
    assert!(body.contains("PASSED (1 of 1 VMs passed)") && body.contains("lab-tiny (") && body.contains("ping pass, heartbeat pass") && body.contains("(attached)"), "{body}");

    // The remote CLI shows the lab and its history.
    let o = run_cmd({
        let mut c = d.remote(&ro);
        c.args(["lab", "list"]);
        c
    });
    o.expect_ok();
    assert!(o.stdout.contains("tiny-lab") && o.stdout.contains("after every backup"), "{o}");
    let o = run_cmd({
        let mut c = d.remote(&ro);
        c.args(["lab", "runs", "tiny-lab"]);
        c
    });
    o.expect_ok();
    assert!(o.stdout.contains(run["id"].as_str().unwrap()) && o.stdout.contains("passed"), "{o}");
    assert!(lab_netns().is_empty());
}

/// QEMU processes in a lab's namespace.
fn netns_pids(ns: &str) -> Vec<String> {
    ok(&format!("ip netns pids {ns}")).split_whitespace().map(str::to_string).collect()
}

/// Gone, or a zombie waiting for init to reap it (its parent was killed).
fn assert_gone(pids: &[String]) {
    for p in pids {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'), "process {p} of the lab still runs: {stat}");
    }
}

#[test]
fn a_daemon_that_stops_ends_its_lab_runs_and_one_that_was_killed_sweeps_them_at_start() {
    require_root();
    let _serial = serial();
    let t = scratch("lab-daemon-stop");
    let tiny = build_guest("tiny", t.path());
    let state = t.path().join("state");
    let cfg = format!("backup_roots = [\"{0}\"]\nrestore_roots = [\"{0}/restores\"]\n", t.path().display());
    let d = common::daemon::Daemon::start(&state, Some(&cfg), &[]);
    let ds = Ds::at(state.join("datastores/default"));
    back_up_paused(&ds, &tiny, "lab-tiny", &t.path().join("q"));
    // An address the guest does not have: the run pings until its boot
    // timeout, long after the test has stopped the daemon.
    let spec = serde_json::json!({ "kind": "lab-verify", "datastore": "default", "vms": [{ "snapshot": "vm:lab-tiny", "ip": "10.0.2.99/24" }], "probes": "ping", "boot_timeout": 600 });
    let ro = d.token("ro", "read-only");
    let start_run = |d: &common::daemon::Daemon| -> (String, String, Vec<String>) {
        let job = d.admin_ok("POST", "/api/jobs", Some(&spec));
        let id = job["id"].as_str().unwrap().to_string();
        let mut runs = Value::Null;
        assert!(
            wait_until(Duration::from_secs(60), || {
                runs = d.call("GET", "/api/lab-runs", Some(&ro), None).json();
                runs.as_array().is_some_and(|a| !a.is_empty()) && !lab_netns().is_empty()
            }),
            "no lab run listed: {runs}"
        );
        assert_eq!(runs[0]["job"], id.as_str(), "{runs:#}");
        assert_eq!(runs[0]["vms"], serde_json::json!(["vm:lab-tiny"]), "{runs:#}");
        let ns = runs[0]["netns"].as_str().unwrap().to_string();
        assert_eq!(lab_netns(), std::slice::from_ref(&ns));
        // QEMU is up in the lab, and the guest's kernel talks on its serial
        // line: its disks are open.
        let serial = state.join("datastores/default/tmp").join(format!("lab-{}", ns.trim_start_matches("lblab-"))).join("vm0/serial.log");
        assert!(wait_until(Duration::from_secs(90), || std::fs::metadata(&serial).is_ok_and(|m| m.len() > 0)), "the guest never wrote to {}", serial.display());
        let pids = netns_pids(&ns);
        assert!(!pids.is_empty(), "no QEMU in {ns}");
        (id, ns, pids)
    };

    // A clean stop cancels the run: its VM is stopped and its network
    // removed before the daemon exits.
    let (job, _ns, pids) = start_run(&d);
    let running = d.admin_ok("GET", &format!("/api/jobs/{job}"), None);
    assert_eq!(running["state"], "running", "{running:#}\n{}", d.call("GET", &format!("/api/jobs/{job}/log"), Some(&d.admin), None).body);
    let t0 = std::time::Instant::now();
    let out = d.stop();
    assert!(out.status.success(), "{out}");
    assert!(t0.elapsed() < Duration::from_secs(60), "the daemon took {:?} to stop", t0.elapsed());
    assert!(lab_netns().is_empty(), "a clean stop left {:?}", lab_netns());
    assert_gone(&pids);
    assert!(out.stderr.contains("stopping 1 lab run"), "{out}");

    // After a SIGKILL the namespace and QEMU stay, until the next start.
    let d = common::daemon::Daemon::start(&state, Some(&cfg), &[]);
    let before = d.admin_ok("GET", &format!("/api/jobs/{job}"), None);
    assert!(["cancelled", "interrupted"].contains(&before["state"].as_str().unwrap()), "{before:#}");
    let (job2, ns, pids) = start_run(&d);
    let running = d.admin_ok("GET", &format!("/api/jobs/{job2}"), None);
    assert_eq!(running["state"], "running", "{running:#}\n{}", d.call("GET", &format!("/api/jobs/{job2}/log"), Some(&d.admin), None).body);
    d.kill();
    assert_eq!(lab_netns(), std::slice::from_ref(&ns), "the killed daemon's lab should still be there");
    assert!(!netns_pids(&ns).is_empty(), "QEMU should still run in the orphaned lab");
    let d = common::daemon::Daemon::start(&state, Some(&cfg), &[]);
    assert!(lab_netns().is_empty(), "the start did not sweep {:?}", lab_netns());
    assert_gone(&pids);
    assert!(d.log_text().contains(&format!("removed the lab network {ns}")), "{}", d.log_text());
    assert_eq!(d.admin_ok("GET", &format!("/api/jobs/{job2}"), None)["state"], "interrupted");
    assert!(d.call("GET", "/api/lab-runs", Some(&d.admin), None).json().as_array().unwrap().is_empty());
}

/// Seconds since the epoch of an RFC 3339 time.
fn chrono_secs(t: &str) -> f64 {
    let o = Command::new("date").args(["-d", t, "+%s.%N"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

fn chromium(args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium (scripts/setup.sh installs it)");
    assert!(o.status.success(), "chromium {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}
