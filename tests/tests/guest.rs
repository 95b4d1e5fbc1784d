//! The test guests of tests/guest/: built by tests/guest/build.sh (cached),
//! booted under `qemu-system-x86_64 -accel tcg` with QMP and virtio-serial
//! ports on unix sockets. These prove the guests do what the VM backup,
//! instant-restore and verification-lab tests rely on: banner on the
//! console, heartbeats, the control port writing data that really lands on
//! the disk, ping on a tap in a network namespace, clean power-off, and
//! qemu-guest-agent in the Debian guest. The Debian guest's kernel NFS
//! client also mounts an NFS export of its own backup (issue 21), so that
//! guest boots once for both.
//!
//! Needs root (loop mounts in the build, netns/tap); missing tools are
//! installed by the build script, never skipped.

mod common;

use common::guest::*;
use common::*;
use serde_json::{json, Value};
use std::io::Write;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (width, height, pixels brighter than dark grey) of a binary PPM (P6).
fn ppm_lit_pixels(p: &Path) -> (usize, usize, usize) {
    let data = std::fs::read(p).unwrap_or_else(|e| panic!("read screendump {}: {e}", p.display()));
    // header: "P6" WS width WS height WS maxval one-WS, then RGB bytes
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while data[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while !data[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(String::from_utf8_lossy(&data[start..i]).into_owned());
    }
    assert_eq!(fields[0], "P6", "screendump is not a P6 PPM");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let px = &data[i + 1..];
    assert_eq!(px.len(), w * h * 3, "screendump size");
    let lit = px.chunks_exact(3).filter(|c| c.iter().map(|&b| b as u32).sum::<u32>() > 3 * 64).count();
    (w, h, lit)
}

/// Reads heartbeats for a few seconds: at least `n`, numbered upwards,
/// uptime growing.
fn assert_heartbeats(hb: &mut Lines, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got: Vec<(u64, f64)> = Vec::new();
    let mut lines = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let Some(l) = hb.line(deadline.saturating_duration_since(Instant::now())) else { break };
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(f.len() == 3 && f[0] == "heartbeat", "not a heartbeat line: {l:?}");
        got.push((f[1].parse().unwrap(), f[2].parse().unwrap()));
        lines.push(l);
    }
    assert!(got.len() >= n, "only {} heartbeats within {timeout:?}: {lines:?}", got.len());
    for w in got.windows(2) {
        assert!(w[1].0 > w[0].0 && w[1].1 > w[0].1, "heartbeats do not advance: {lines:?}");
    }
    lines
}

// ------------------------------------------------------------ network

/// A network namespace with a bridge `br0` holding `addr` and a tap
/// `tap0` on it; deleted (with everything in it) on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(addr: &str) -> NetNs {
        let name = format!("lbguest-{}", std::process::id());
        let _ = tool("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        run_ok(tool("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", "br0", "type", "bridge"],
            vec!["addr", "add", addr, "dev", "br0"],
            vec!["link", "set", "br0", "up"],
            vec!["tuntap", "add", "dev", "tap0", "mode", "tap"],
            vec!["link", "set", "tap0", "master", "br0"],
            vec!["link", "set", "tap0", "up"],
        ] {
            run_ok(tool("ip").arg("-n").arg(&ns.name).args(&args));
        }
        ns
    }

    fn ping(&self, ip: &str) -> bool {
        tool("ip").args(["netns", "exec", &self.name, "ping", "-c", "1", "-W", "1", ip]).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = tool("ip").args(["netns", "del", &self.name]).status();
    }
}

// -------------------------------------------------------------- tests

/// Tiny guest on QEMU user networking: banner, heartbeats, QMP status,
/// `write 4` over the control port whose data and sha256 are on the disk
/// after `poweroff`, and a clean file system.
#[test]
fn tiny_guest_boots_heartbeats_writes_and_powers_off() {
    require_root();
    let dir = scratch("guest-tiny");
    let disk = build_guest("tiny", dir.path());
    let mut vm = Vm::boot(&disk, &dir.path().join("run"), &[], None);

    let ready = vm.wait_console("LIFEBOAT TEST GUEST lifeboat-tiny READY ip=10.0.2.15/24", Duration::from_secs(180));
    eprintln!("tiny guest: READY on the serial console {:.1} s after QEMU start", ready.as_secs_f64());

    let mut qmp = Qmp::connect(&vm.sock("qmp.sock"));
    let st = qmp.cmd("query-status", json!({}));
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["running"], true, "{st}");

    // The screen (tty0 on VGA) is not blank: text pixels on a dark background.
    let shot = vm.run.join("screen.ppm");
    qmp.cmd("screendump", json!({"filename": shot.to_str().unwrap()}));
    let (w, h, lit) = ppm_lit_pixels(&shot);
    eprintln!("tiny guest: screendump {w}x{h}, {lit} lit pixels");
    assert!(lit > 500 && lit < w * h / 2, "screen looks blank or garbage: {lit} of {} pixels lit", w * h);

    let mut hb = Lines::connect(&vm.sock("heartbeat.sock"), Duration::from_secs(10));
    let beats = assert_heartbeats(&mut hb, 3, Duration::from_secs(60));
    eprintln!("tiny guest: {beats:?}");

    let mut ctl = Lines::connect(&vm.sock("control.sock"), Duration::from_secs(10));
    ctl.send("ping");
    let pong = ctl.line(Duration::from_secs(30)).expect("answer to ping");
    assert_eq!(pong, "pong lifeboat-tiny");
    let t = Instant::now();
    ctl.send("write 4");
    let wrote = ctl.line(Duration::from_secs(120)).expect("answer to write 4");
    eprintln!("tiny guest: {wrote:?} after {:.1} s", t.elapsed().as_secs_f64());
    let f: Vec<&str> = wrote.split_whitespace().collect();
    assert!(f.len() == 4 && f[0] == "wrote" && f[1] == "4" && f[2].len() == 64 && f[3] == "/data/file-1", "unexpected answer {wrote:?}");
    let sha = f[2].to_string();
    ctl.send("sync");
    assert_eq!(ctl.line(Duration::from_secs(30)).as_deref(), Some("synced"));
    ctl.send("no-such-command");
    assert!(ctl.line(Duration::from_secs(30)).unwrap_or_default().starts_with("error "));

    ctl.send("poweroff");
    assert_eq!(ctl.line(Duration::from_secs(30)).as_deref(), Some("poweroff"));
    let t = Instant::now();
    drop((qmp, hb, ctl));
    let console_before = vm.console();
    vm.wait_exit(Duration::from_secs(90));
    eprintln!("tiny guest: powered off in {:.1} s", t.elapsed().as_secs_f64());
    let console = std::fs::read_to_string(dir.path().join("run/serial.log")).unwrap_or(console_before);
    assert!(console.contains("LIFEBOAT TEST GUEST lifeboat-tiny SHUTDOWN"), "no shutdown banner\n{console}");

    // The data is on the disk, with the sha the guest reported.
    let out = dir.path().join("file-1");
    debugfs_dump(&disk, "/data/file-1", &out);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 4 << 20);
    assert_eq!(sha256_file(&out), sha, "the data on the disk is not what the guest wrote");
    assert_fs_clean(&disk);
}

/// Tiny guest on a tap in a network namespace, with its address taken
/// from /etc/lifeboat-guest/ip on its disk: answers ping from the bridge;
/// QMP system_powerdown (ACPI power button) shuts it down cleanly.
#[test]
fn tiny_guest_answers_ping_on_a_tap_and_obeys_system_powerdown() {
    require_root();
    let dir = scratch("guest-tiny-net");
    let disk = build_guest("tiny", dir.path());
    run_ok(Command::new("bash").arg(guest_dir().join("set-ip.sh")).arg(&disk).arg("192.168.77.10/24 192.168.77.1"));

    let ns = NetNs::new("192.168.77.1/24");
    let mut vm = Vm::boot(&disk, &dir.path().join("run"), &[("GUEST_NET", "tap:tap0"), ("GUEST_MAC", "52:54:00:77:00:10")], Some(&ns.name));
    let ready = vm.wait_console("LIFEBOAT TEST GUEST lifeboat-tiny READY ip=192.168.77.10/24", Duration::from_secs(180));
    eprintln!("tiny guest (tap): READY {:.1} s after QEMU start", ready.as_secs_f64());

    let t = Instant::now();
    let pinged = wait_until(Duration::from_secs(60), || ns.ping("192.168.77.10"));
    assert!(pinged, "192.168.77.10 does not answer ping from netns {}\n--- console\n{}", ns.name, vm.console());
    eprintln!("tiny guest (tap): ping answered after {:.1} s", t.elapsed().as_secs_f64());
    assert!(!ns.ping("192.168.77.11"), "an address nobody has answers ping: the check proves nothing");

    let mut qmp = Qmp::connect(&vm.sock("qmp.sock"));
    assert_eq!(qmp.cmd("query-status", json!({}))["status"], "running");
    let t = Instant::now();
    // acpid opens the power button's input device right after boot; retry
    // the press in case the first one came before it listened.
    let mut pressed = 0;
    let off = wait_until(Duration::from_secs(90), || {
        if !vm.child.running() {
            return true;
        }
        if pressed == 0 || t.elapsed() > Duration::from_secs(20 * pressed) {
            let _ = qmp.0.s.write_all(b"{\"execute\":\"system_powerdown\"}\n");
            pressed += 1;
        }
        false
    });
    assert!(off, "system_powerdown did not stop the guest\n--- console\n{}", vm.console());
    let console = vm.console();
    drop(qmp);
    vm.wait_exit(Duration::from_secs(5));
    eprintln!("tiny guest (tap): system_powerdown -> exit in {:.1} s ({pressed} press(es))", t.elapsed().as_secs_f64());
    assert!(console.contains("SHUTDOWN"), "no clean shutdown on the console\n{console}");
    assert_fs_clean(&disk);
    drop(ns);
}

/// Minimal Debian guest: boots from its extlinux disk to the point where
/// qemu-guest-agent answers guest-ping over org.qemu.guest_agent.0, sends
/// heartbeats, then shuts down cleanly through the agent.
#[test]
fn debian_guest_boots_to_qemu_guest_agent() {
    require_root();
    let dir = scratch("guest-debian");
    let disk = build_guest("debian", dir.path());
    // A second QMP monitor for `lifeboat vm backup` (below).
    let run = dir.path().join("run");
    let mut vm = Vm::boot_with(&disk, &run, &[("GUEST_MEM", "1024"), ("GUEST_SMP", "2")], None, &lifeboat_qmp_args(&run));

    // guest-sync with a fresh id until the agent echoes one back.
    let mut qga = Lines::connect(&vm.sock("qga.sock"), Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut sent = Vec::new();
    let mut synced = false;
    while !synced && Instant::now() < deadline && vm.child.running() {
        let id = 1000 + sent.len() as u64;
        qga.send(&json!({"execute": "guest-sync", "arguments": {"id": id}}).to_string());
        sent.push(id);
        let until = Instant::now() + Duration::from_secs(5);
        while let Some(l) = qga.line(until.saturating_duration_since(Instant::now())) {
            if let Ok(v) = serde_json::from_str::<Value>(&l) {
                if v["return"].as_u64() == Some(id) {
                    synced = true;
                    break;
                }
            }
        }
    }
    assert!(synced, "qemu-guest-agent did not answer guest-sync within 300 s\n--- console\n{}", vm.console());
    eprintln!("debian guest: qemu-guest-agent answers {:.1} s after QEMU start", vm.started.elapsed().as_secs_f64());

    let mut call = |cmd: &str| -> Value {
        qga.send(&json!({"execute": cmd}).to_string());
        let l = qga.line(Duration::from_secs(30)).unwrap_or_else(|| panic!("no answer to {cmd}"));
        let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad qga line {l:?}: {e}"));
        v.get("return").cloned().unwrap_or_else(|| panic!("{cmd} failed: {l}"))
    };
    assert_eq!(call("guest-ping"), json!({}));
    assert_eq!(call("guest-get-host-name")["host-name"], "lifeboat-debian");
    // eth0 has the static address from /etc/network/interfaces.
    // (networking.service may still be starting when the agent answers)
    let mut ifs = Value::Null;
    let has_ip = wait_until(Duration::from_secs(120), || {
        ifs = call("guest-network-get-interfaces");
        let ok = ifs.as_array().into_iter().flatten().any(|i| i["name"] == "eth0" && i["ip-addresses"].as_array().into_iter().flatten().any(|a| a["ip-address"] == "10.0.2.15"));
        if !ok {
            std::thread::sleep(Duration::from_secs(1));
        }
        ok
    });
    assert!(has_ip, "eth0 does not have 10.0.2.15: {ifs}\n--- console\n{}", vm.console());
    // fsfreeze (application-consistent points) works on the root fs.
    let frozen = call("guest-fsfreeze-freeze");
    assert!(frozen.as_u64().unwrap_or(0) >= 1, "guest-fsfreeze-freeze froze nothing: {frozen}");
    assert_eq!(call("guest-fsfreeze-status"), "frozen");
    assert!(call("guest-fsfreeze-thaw").as_u64().unwrap_or(0) >= 1);
    assert_eq!(call("guest-fsfreeze-status"), "thawed");

    let mut hb = Lines::connect(&vm.sock("heartbeat.sock"), Duration::from_secs(10));
    assert_heartbeats(&mut hb, 2, Duration::from_secs(60));

    let mut qmp = Qmp::connect(&vm.sock("qmp.sock"));
    assert_eq!(qmp.cmd("query-status", json!({}))["status"], "running");
    vm.wait_console("lifeboat-debian login:", Duration::from_secs(120));

    // The same control port as the tiny guest.
    let mut ctl = Lines::connect(&vm.sock("control.sock"), Duration::from_secs(10));
    ctl.send("ping");
    assert_eq!(ctl.line(Duration::from_secs(60)).as_deref(), Some("pong lifeboat-debian"));
    ctl.send("write 2");
    let wrote = ctl.line(Duration::from_secs(120)).expect("answer to write 2");
    let f: Vec<&str> = wrote.split_whitespace().collect();
    assert!(f.len() == 4 && f[0] == "wrote" && f[1] == "2" && f[2].len() == 64, "unexpected answer {wrote:?}");
    let (sha, path) = (f[2].to_string(), f[3].to_string());
    drop(ctl);

    // An application-consistent VM backup: lifeboat freezes the guest's
    // file systems through qemu-ga around the point, and thaws them.
    drop(qga);
    let ds = Ds::init(dir.path().join("ds"));
    let mut c = lb_cmd();
    c.args(["vm", "backup", "--datastore"]).arg(&ds.path).arg("--qmp").arg(run.join("lb-qmp.sock"));
    c.arg("--agent").arg(vm.sock("qga.sock")).arg("--json");
    let o = run_cmd(c);
    o.expect_ok();
    let b = o.json();
    assert_eq!(b["consistency"], "application", "{b}");
    assert!(b["frozen_filesystems"].as_u64().unwrap_or(0) >= 1, "{b}");
    let restored = dir.path().join("vm-restore");
    let mut c = lb_cmd();
    c.args(["vm", "restore", "--datastore"]).arg(&ds.path).arg(b["snapshot_id"].as_str().unwrap()).arg(&restored);
    run_cmd(c).expect_ok();
    let md: Value = serde_json::from_slice(&std::fs::read(restored.join("vm.json")).unwrap()).unwrap();
    assert_eq!(md["guest_os"]["id"], "debian", "the agent's OS info is in the metadata: {md}");
    // The guest is thawed and keeps working.
    let mut qga = Lines::connect(&vm.sock("qga.sock"), Duration::from_secs(30));
    qga.send(&json!({"execute": "guest-sync-delimited", "arguments": {"id": 4242}}).to_string());
    let synced = wait_until(Duration::from_secs(30), || qga.line(Duration::from_secs(5)).is_some_and(|l| l.contains("4242")));
    assert!(synced, "qemu-guest-agent does not answer after the backup");
    qga.send(&json!({"execute": "guest-fsfreeze-status"}).to_string());
    let st = qga.line(Duration::from_secs(30)).unwrap_or_default();
    assert!(st.contains("thawed"), "the guest was left frozen: {st}");
    let beats = assert_heartbeats(&mut hb, 2, Duration::from_secs(60));
    eprintln!("debian guest: after an application-consistent backup: {beats:?}");

    // The Linux kernel's NFS client in the guest mounts the backup's NFS
    // export over QEMU's user network (10.0.2.2 is the host, whose
    // loopback the export allows) and reads the disk and the metadata.
    let snap_id = b["snapshot_id"].as_str().unwrap();
    let mut c = lb_cmd();
    c.args(["vm", "export", "--datastore"]).arg(&ds.path);
    c.args(["--client", "127.0.0.1", "--listen", "127.0.0.1:0", "--portmap", "127.0.0.1:0", snap_id]);
    c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::inherit());
    let mut export = KillOnDrop(c.spawn().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(export.0.stdout.take().unwrap()), &mut line).unwrap();
    let uri = line.trim().to_string();
    let (port, img) = uri.strip_prefix("nfs://127.0.0.1:").and_then(|r| r.split_once('/')).unwrap_or_else(|| panic!("vm export printed {uri:?}"));
    let (dir_path, img_name) = img.rsplit_once('/').unwrap();
    let disk_id = img_name.strip_suffix(".img").unwrap();
    const MIB: usize = 32;
    let script = format!(
        "set -e; modprobe nfs; mkdir -p /mnt/nfs; \
         mount -i -t nfs -o ro,vers=3,proto=tcp,port={port},mountport={port},mountproto=tcp,nolock,addr=10.0.2.2 10.0.2.2:/{dir_path} /mnt/nfs; \
         ls /mnt/nfs; grep -c '\"name\"' /mnt/nfs/vm.json; \
         dd if=/mnt/nfs/{img_name} bs=1M count={MIB} 2>/dev/null | sha256sum; umount /mnt/nfs"
    );
    let (code, out, err) = qga_exec(&mut qga, &script, Duration::from_secs(300));
    assert_eq!(code, 0, "the guest's NFS mount failed\n--- stdout\n{out}\n--- stderr\n{err}\n--- console\n{}", vm.console());
    for want in [img_name.to_string(), format!("{disk_id}.vmdk"), format!("{disk_id}-flat.vmdk"), "vm.json".into(), "vm.ovf".into()] {
        assert!(out.lines().any(|l| l == want), "the guest's listing of the export shows no {want}: {out}");
    }
    let mut head = vec![0u8; MIB << 20];
    std::io::Read::read_exact(&mut std::fs::File::open(restored.join(format!("{disk_id}.raw"))).unwrap(), &mut head).unwrap();
    let want = sha256_hex(&head);
    assert!(out.contains(&want), "the first {MIB} MiB the guest read over NFS differ from the restored disk (sha256 {want}): {out}");
    drop(export);

    // CDP with application-consistent bookmarks: `cdp protect` freezes
    // the guest's file systems through qemu-ga for each periodic
    // bookmark (the mirrors caught up meanwhile) and thaws them.
    drop(qga);
    let mut c = lb_cmd();
    c.args(["cdp", "protect", "--datastore"]).arg(&ds.path).arg("--qmp").arg(run.join("lb-qmp.sock"));
    c.arg("--agent").arg(vm.sock("qga.sock")).args(["--consistent", "--bookmark-every", "2", "--mode", "async"]);
    let mut protect = ChildGuard::spawn(c);
    let consistent_mark = || -> Option<Value> {
        let dir = std::fs::read_dir(ds.path.join("cdp")).ok()?;
        dir.flatten().find_map(|vm| {
            let b: Value = serde_json::from_slice(&std::fs::read(vm.path().join("bookmarks.json")).ok()?).ok()?;
            b.as_array()?.iter().find(|b| b["consistent"] == true).cloned()
        })
    };
    assert!(wait_until(Duration::from_secs(600), || consistent_mark().is_some()), "no application-consistent CDP bookmark within 600 s");
    protect.signal(libc::SIGTERM);
    let o = protect.wait();
    o.expect_ok();
    assert!(o.stdout.contains("(application-consistent)"), "{o}");
    assert_eq!(consistent_mark().unwrap()["kind"], "every");
    let mut qga = Lines::connect(&vm.sock("qga.sock"), Duration::from_secs(30));
    qga.send(&json!({"execute": "guest-sync-delimited", "arguments": {"id": 4343}}).to_string());
    assert!(wait_until(Duration::from_secs(30), || qga.line(Duration::from_secs(5)).is_some_and(|l| l.contains("4343"))), "qemu-guest-agent does not answer after CDP");
    qga.send(&json!({"execute": "guest-fsfreeze-status"}).to_string());
    let st = qga.line(Duration::from_secs(30)).unwrap_or_default();
    assert!(st.contains("thawed"), "CDP left the guest frozen: {st}");
    assert_heartbeats(&mut hb, 2, Duration::from_secs(60));

    // guest-shutdown sends no answer on success.
    qga.send(r#"{"execute":"guest-shutdown"}"#);
    let t = Instant::now();
    drop((qga, hb, qmp));
    vm.wait_exit(Duration::from_secs(180));
    eprintln!("debian guest: guest-shutdown -> exit in {:.1} s", t.elapsed().as_secs_f64());
    assert_fs_clean(&disk);
    let out = dir.path().join("written");
    debugfs_dump(&disk, &path, &out);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 2 << 20);
    assert_eq!(sha256_file(&out), sha, "the data on the disk is not what the Debian guest wrote");
}

/// Kills the process when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sha256_hex(data: &[u8]) -> String {
    let mut c = Command::new("sha256sum");
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), data).unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// Runs `script` with /bin/sh in the guest through qemu-guest-agent's
/// guest-exec; (exit code, stdout, stderr).
fn qga_exec(qga: &mut Lines, script: &str, timeout: Duration) -> (i64, String, String) {
    let mut call = |cmd: Value| -> Value {
        qga.send(&cmd.to_string());
        let l = qga.line(Duration::from_secs(30)).unwrap_or_else(|| panic!("no answer to {cmd}"));
        let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad qga line {l:?}: {e}"));
        v.get("return").cloned().unwrap_or_else(|| panic!("{cmd} failed: {l}"))
    };
    let pid = call(json!({"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", script], "capture-output": true}}))["pid"].clone();
    let deadline = Instant::now() + timeout;
    loop {
        let st = call(json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}));
        if st["exited"] == true {
            let text = |k: &str| st[k].as_str().map(|b| String::from_utf8_lossy(&base64_decode(b)).into_owned()).unwrap_or_default();
            return (st["exitcode"].as_i64().unwrap_or(-1), text("out-data"), text("err-data"));
        }
        assert!(Instant::now() < deadline, "the guest command did not finish within {timeout:?}: {script}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).map(val).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for q in digits.chunks(4) {
        let n = q.iter().enumerate().fold(0u32, |n, (i, d)| n | (*d as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..q.len()]);
    }
    out
}
