//! The libvirt connector end to end: a private libvirtd (its own mount
//! namespace, so it touches none of the machine's libvirt state), the tiny
//! test guest defined and started as a TCG domain on a qcow2 disk, listed,
//! backed up twice through libvirt's pull-mode backup API (the second one
//! incremental from the first one's checkpoint), restored byte-identical to
//! the disk at each backup point; a failed backup ends its job and drops
//! its checkpoint; a deleted checkpoint falls back to a full read with the
//! reason. Registered with the daemon, the domain is listed live and
//! backed up by vm-backup jobs.

mod common;

use common::daemon::Daemon;
use common::guest::*;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const DOMAIN: &str = "lifeboat-libvirt-test";
const MAC: &str = "52:54:00:4c:42:01";

/// libvirtd run as root with every state directory (/etc/libvirt,
/// /run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt)
/// bind-mounted from a temporary directory in a private mount namespace,
/// and its sockets in that directory. No systemd, cgroups, security driver
/// or virtlogd needed. On drop: domains destroyed and undefined, daemon
/// stopped.
struct Libvirtd {
    child: Option<Child>,
    dir: PathBuf,
    uri: String,
}

impl Libvirtd {
    fn start(dir: &Path) -> Libvirtd {
        let sock = dir.join("sock");
        for d in ["etc", "run", "lib", "cache", "log", "sock"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(
            dir.join("etc/libvirtd.conf"),
            format!(
                "unix_sock_dir = \"{}\"\nunix_sock_rw_perms = \"0700\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n\
                 log_outputs = \"3:file:{}\"\n",
                sock.display(),
                dir.join("libvirtd.log").display()
            ),
        )
        .unwrap();
        // Root QEMU without confinement: this build machine has no
        // cgroup controllers, AppArmor or virtlogd for libvirt.
        std::fs::write(
            dir.join("etc/qemu.conf"),
            "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nremember_owner = 0\nsecurity_driver = \"none\"\n\
             cgroup_controllers = [ ]\nnamespaces = [ ]\nstdio_handler = \"file\"\n",
        )
        .unwrap();
        let d = dir.display();
        let script = format!(
            "set -e\nfor m in etc:/etc/libvirt run:/run/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt log:/var/log/libvirt; do\n\
             mkdir -p \"${{m#*:}}\"; mount --bind \"{d}/${{m%%:*}}\" \"${{m#*:}}\"\ndone\n\
             exec libvirtd --config {d}/etc/libvirtd.conf"
        );
        let mut c = tool("unshare");
        c.args(["--mount", "--propagation", "private", "bash", "-c", &script]);
        let log = std::fs::File::create(dir.join("libvirtd.out")).unwrap();
        c.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        let child = c.spawn().expect("start libvirtd (apt-get install libvirt-daemon-driver-qemu libvirt-clients)");
        let uri = format!("qemu+unix:///system?socket={}", sock.join("libvirt-sock").display());
        let mut lv = Libvirtd { child: Some(child), dir: dir.to_path_buf(), uri };
        let deadline = Instant::now() + Duration::from_secs(60);
        while lv.virsh_out(&["version"]).is_err() {
            let exited = lv.child.as_mut().unwrap().try_wait().unwrap();
            assert!(exited.is_none() && Instant::now() < deadline, "libvirtd did not answer (exit {exited:?}):\n{}", lv.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
        lv
    }

    fn logs(&self) -> String {
        let r = |n: &str| String::from_utf8_lossy(&std::fs::read(self.dir.join(n)).unwrap_or_default()).into_owned();
        format!("--- libvirtd.out\n{}\n--- libvirtd.log (tail)\n{}", r("libvirtd.out"), {
            let l = r("libvirtd.log");
            let v: Vec<&str> = l.lines().collect();
            v[v.len().saturating_sub(40)..].join("\n")
        })
    }

    fn virsh_out(&self, args: &[&str]) -> Result<String, String> {
        let o = tool("virsh").args(["-c", &self.uri, "-q"]).args(args).env("LC_ALL", "C").output().expect("run virsh");
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }

    #[track_caller]
    fn virsh(&self, args: &[&str]) -> String {
        self.virsh_out(args).unwrap_or_else(|e| panic!("virsh {args:?}: {e}\n{}", self.logs()))
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        // QEMU outlives libvirtd: destroy the domains first.
        if let Ok(names) = self.virsh_out(&["list", "--all", "--name"]) {
            for n in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
                let _ = self.virsh_out(&["destroy", n]);
                let _ = self.virsh_out(&["undefine", n, "--checkpoints-metadata"]);
            }
        }
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn domain_xml(disk: &Path, run: &Path) -> String {
    // Only the control channel: the guest reopens an unconnected
    // virtio-serial port every second, and each open/close is a libvirt
    // event that waits for the domain job lock a backup holds (30 s each),
    // which stalls the end of the backup job. The test keeps the control
    // port connected.
    format!(
        "<domain type='qemu'>\n  <name>{DOMAIN}</name>\n  <memory unit='MiB'>256</memory>\n  <vcpu>1</vcpu>\n\
         <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>\n  <devices>\n\
         <emulator>/usr/bin/qemu-system-x86_64</emulator>\n\
         <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='vda' bus='virtio'/></disk>\n\
         <interface type='user'><mac address='{MAC}'/><model type='virtio'/></interface>\n\
         <serial type='file'><source path='{}'/><target port='0'/></serial>\n\
         <channel type='unix'><source mode='bind' path='{}'/><target type='virtio' name='org.lifeboat.control'/></channel>\n\
         <video><model type='none'/></video>\n  </devices>\n</domain>\n",
        disk.display(),
        run.join("serial.log").display(),
        run.join("control.sock").display()
    )
}

fn vm_backup(ds: &Ds, uri: &str, failpoints: Option<&str>) -> ChildGuard {
    let mut c = lb_cmd();
    c.args(["vm", "backup", "--datastore"]).arg(&ds.path).args(["--libvirt", uri, "--domain", DOMAIN, "--json"]);
    if let Some(fp) = failpoints {
        c.env("LIFEBOAT_FAILPOINTS", fp);
    }
    ChildGuard::spawn(c)
}

fn export_socket(ds: &Path) -> Option<PathBuf> {
    std::fs::read_dir(ds.join("tmp")).ok()?.flatten().map(|e| e.path().join("nbd.sock")).find(|p| p.exists())
}

fn restore(ds: &Ds, id: &str, to: &Path) -> Value {
    let o = run_cmd({
        let mut c = lb_cmd();
        c.args(["vm", "restore", "--datastore"]).arg(&ds.path).arg(id).arg(to);
        c
    });
    o.expect_ok();
    serde_json::from_slice(&std::fs::read(to.join("vm.json")).unwrap()).unwrap()
}

#[test]
fn libvirt_pull_backup_incremental_restore() {
    require_root();
    let started = Instant::now();
    let t = scratch("libvirt");
    let raw = build_guest("tiny", t.path());
    let disk = t.path().join("tiny.qcow2");
    let o = qemu_img(&["convert", "-f", "raw", "-O", "qcow2", raw.to_str().unwrap(), disk.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(&raw).unwrap();
    let run = t.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let lv = Libvirtd::start(&t.path().join("libvirt"));
    let xml = t.path().join("domain.xml");
    std::fs::write(&xml, domain_xml(&disk, &run)).unwrap();
    lv.virsh(&["define", xml.to_str().unwrap()]);

    // The inventory shows it, defined and then running.
    let list = |want: &str| {
        let o = run_cmd({
            let mut c = lb_cmd();
            c.args(["vm", "list", "--libvirt", &lv.uri, "--json"]);
            c
        });
        o.expect_ok();
        let v = o.json();
        assert!(v.as_array().unwrap().iter().any(|d| d["name"] == DOMAIN && d["state"] == want), "{v}");
    };
    list("shut off");
    lv.virsh(&["start", DOMAIN]);
    list("running");
    let console = || String::from_utf8_lossy(&std::fs::read(run.join("serial.log")).unwrap_or_default()).into_owned();
    let booted = Instant::now();
    while !console().contains("LIFEBOAT TEST GUEST lifeboat-tiny READY") {
        assert!(booted.elapsed() < Duration::from_secs(180), "the guest did not boot\n--- console\n{}\n{}", console(), lv.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("libvirt: daemon up and guest booted after {:.1} s", started.elapsed().as_secs_f64());
    let mut ctl = Lines::connect(&run.join("control.sock"), Duration::from_secs(10));
    control(&mut ctl, "write 8", "wrote 8", Duration::from_secs(120));
    control(&mut ctl, "sync", "synced", Duration::from_secs(60));
    let ds = Ds::init(t.path().join("ds"));

    // 1. Full backup; the guest writes after the point, during the read.
    lv.virsh(&["suspend", DOMAIN]);
    let ref1 = t.path().join("ref1.raw");
    snapshot_disk(&disk, "qcow2", &ref1);
    let mut b = vm_backup(&ds, &lv.uri, Some("vm-fleeced=sleep4000"));
    if !wait_until(Duration::from_secs(60), || export_socket(&ds.path).is_some() || !b.running()) || !b.running() {
        b.signal(libc::SIGKILL);
        panic!("the backup never exported its point in time: {}\n{}", b.wait(), lv.logs());
    }
    lv.virsh(&["resume", DOMAIN]);
    control(&mut ctl, "write 16", "wrote 16", Duration::from_secs(120));
    control(&mut ctl, "sync", "synced", Duration::from_secs(60));
    let o = b.wait();
    assert!(o.ok(), "{o}\n{}", lv.logs());
    let full = o.json();
    let id1 = full["snapshot_id"].as_str().unwrap().to_string();
    let d = &full["disks"][0];
    assert_eq!(d[0], "vda", "{full}");
    assert!(full["parent"].is_null() && d[1]["chunks_read"].as_u64().unwrap() > 0 && d[1]["chunks_zero"].as_u64().unwrap() > 0, "{full}");
    let cps = lv.virsh(&["checkpoint-list", DOMAIN, "--name"]);
    assert_eq!(cps.lines().filter(|l| l.starts_with("lifeboat-")).count(), 1, "one checkpoint after the first backup: {cps}");
    assert!(lv.virsh(&["domjobinfo", DOMAIN]).contains("None"), "the backup job was not ended");
    let (same, _) = identical(&disk, "qcow2", &ref1);
    assert!(!same, "the guest did not change its disk after the backup point");
    let md = restore(&ds, &id1, &t.path().join("restore1"));
    let (same, why) = identical(t.path().join("restore1/vda.raw"), "raw", &ref1);
    assert!(same, "restored disk differs from the disk at the backup point: {why}");
    assert_eq!((md["name"].as_str(), md["source"].as_str(), md["cpus"].as_u64(), md["memory_mib"].as_u64()), (Some(DOMAIN), Some("libvirt"), Some(1), Some(256)), "{md}");
    assert_eq!((md["nics"][0]["mac"].as_str(), md["nics"][0]["model"].as_str()), (Some(MAC), Some("virtio-net-pci")), "{md}");
    assert_eq!((md["disks"][0]["format"].as_str(), md["disks"][0]["size"].as_u64(), md["firmware"].as_str()), (Some("qcow2"), Some(256 << 20), Some("bios")), "{md}");
    std::fs::remove_dir_all(t.path().join("restore1")).unwrap();

    // 2. Incremental from the first backup's checkpoint: only the blocks
    // the guest wrote since are read.
    control(&mut ctl, "write 4", "wrote 4", Duration::from_secs(120));
    control(&mut ctl, "sync", "synced", Duration::from_secs(60));
    lv.virsh(&["suspend", DOMAIN]);
    let ref2 = t.path().join("ref2.raw");
    snapshot_disk(&disk, "qcow2", &ref2);
    let o = vm_backup(&ds, &lv.uri, None).wait();
    lv.virsh(&["resume", DOMAIN]);
    assert!(o.ok(), "{o}\n{}", lv.logs());
    let inc = o.json();
    let d = &inc["disks"][0][1];
    let (read, reused, chunks) = (d["chunks_read"].as_u64().unwrap(), d["chunks_reused"].as_u64().unwrap(), d["chunks"].as_u64().unwrap());
    eprintln!("libvirt incremental: {read} of {chunks} chunks read ({} bytes of {}), {reused} reused", d["bytes_read"], d["size"]);
    assert!(d["full_reason"].is_null(), "{inc}");
    assert_eq!(inc["parent"].as_str(), Some(id1.as_str()));
    // 16 + 4 MiB written since the first point (5 chunks at least) plus
    // file system metadata: far less than the 64-chunk disk.
    assert!((5..=16).contains(&read) && reused + read + d["chunks_zero"].as_u64().unwrap() == chunks, "{inc}");
    assert!(d["bytes_read"].as_u64().unwrap() * 3 < d["size"].as_u64().unwrap(), "{inc}");
    let id2 = inc["snapshot_id"].as_str().unwrap().to_string();
    restore(&ds, &id2, &t.path().join("restore2"));
    let (same, why) = identical(t.path().join("restore2/vda.raw"), "raw", &ref2);
    assert!(same, "incremental restore differs from the disk at its point: {why}");
    std::fs::remove_dir_all(t.path().join("restore2")).unwrap();
    let cps = lv.virsh(&["checkpoint-list", DOMAIN, "--name"]);
    let cps: Vec<&str> = cps.lines().filter(|l| l.starts_with("lifeboat-")).collect();
    assert_eq!(cps.len(), 1, "the older checkpoint is deleted after a good backup: {cps:?}");

    // 3. A backup failing after the point: the job is ended, its new
    // checkpoint deleted, the previous one kept for the next incremental.
    let o = vm_backup(&ds, &lv.uri, Some("vm-fleeced=error")).wait();
    assert!(!o.ok() && o.stderr.contains("failpoint"), "{o}");
    assert!(lv.virsh(&["domjobinfo", DOMAIN]).contains("None"), "the failed backup's job was not ended");
    let after = lv.virsh(&["checkpoint-list", DOMAIN, "--name"]);
    assert_eq!(after.lines().filter(|l| l.starts_with("lifeboat-")).collect::<Vec<_>>(), cps, "checkpoints after a failed backup");

    // 4. The checkpoint deleted behind our back: a full read, with why.
    lv.virsh(&["checkpoint-delete", DOMAIN, cps[0]]);
    let o = vm_backup(&ds, &lv.uri, None).wait();
    assert!(o.ok(), "{o}\n{}", lv.logs());
    let again = o.json();
    let d = &again["disks"][0][1];
    assert!(d["full_reason"].as_str().is_some_and(|r| r.contains("no longer exists")), "{again}");
    assert_eq!(d["chunks_reused"].as_u64(), Some(0), "{again}");
    ds.assert_check_clean();

    // 5. The same domain registered with the daemon: listed live, backed
    // up by vm-backup jobs, the second one incremental.
    let d = Daemon::start(&t.path().join("state"), None, &[]);
    let bad = d.call("POST", "/api/vms", Some(&d.admin), Some(&json!({ "source": { "kind": "libvirt", "uri": lv.uri, "domain": "no-such-domain" } })));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.body.contains("no-such-domain"), "{bad:?}");
    let v = d.admin_ok("POST", "/api/vms", Some(&json!({ "name": "web1", "source": { "kind": "libvirt", "uri": lv.uri, "domain": DOMAIN } })));
    assert_eq!((v["name"].as_str(), v["status"].as_str(), v["disks"].as_array().map(Vec::len)), (Some("web1"), Some("running"), Some(1)), "{v}");
    let job = |expect_parent: bool| {
        let j = d.admin_ok("POST", "/api/jobs", Some(&json!({ "kind": "vm-backup", "datastore": "default", "vm": "web1" })));
        let j = d.wait_job(j["id"].as_str().unwrap(), Duration::from_secs(300));
        assert_eq!(j["state"], "succeeded", "{j}\n{}", lv.logs());
        assert_eq!(j["result"]["parent"].is_string(), expect_parent, "{j}");
        j["result"].clone()
    };
    let first = job(false);
    let second = job(true);
    let (r1, r2) = (first["bytes_read"].as_u64().unwrap(), second["bytes_read"].as_u64().unwrap());
    assert!(r2 < r1 / 4, "the second job read {r2} bytes, the first {r1}: {second}");
    drop(d);
    drop(ctl);

    // 6. What `vm restore --target kvm` writes, libvirt itself takes:
    // `virsh define` parses the domain XML against the emulator's
    // capabilities (machine type, devices, firmware).
    let kvm = t.path().join("to-kvm");
    let o = run_cmd({
        let mut c = lb_cmd();
        c.args(["vm", "restore", "--datastore"]).arg(&ds.path).arg(&id1).args(["--target", "kvm", "--no-repair", "--map", "mac=new", "--json"]).arg(&kvm);
        c
    });
    o.expect_ok();
    let new_mac = o.json()["macs"]["net0"][1]
        .as_str()
        .map(String::from)
        .or_else(|| o.json()["macs"].as_object().and_then(|m| m.values().next()).and_then(|v| v[1].as_str().map(String::from)))
        .unwrap_or_else(|| panic!("no new MAC in {o}"));
    lv.virsh(&["destroy", DOMAIN]);
    lv.virsh(&["undefine", DOMAIN, "--checkpoints-metadata"]);
    lv.virsh(&["define", kvm.join("domain.xml").to_str().unwrap()]);
    let dumped = lv.virsh(&["dumpxml", DOMAIN]);
    assert!(dumped.contains(&new_mac) && dumped.contains(&kvm.display().to_string()), "libvirt's view of the restored domain lacks its MAC or disk:\n{dumped}");
    drop(lv);
    eprintln!("libvirt: whole test {:.1} s", started.elapsed().as_secs_f64());
}
