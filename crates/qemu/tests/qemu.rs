//! Against a real QEMU (TCG, no guest OS needed): inventory into the
//! neutral format, and a fleecing export read with a real NBD client.

use lifeboat_qemu::{capture, FleeceSession, Qmp};
use lifeboat_vm::Firmware;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn need(tool: &str) {
    let ok = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "{tool} is not installed: run scripts/setup.sh (qemu-system-x86 and libnbd-bin from bookworm-backports)");
}

struct Vm {
    child: Child,
    qmp: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().expect("spawn");
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn start_vm(dir: &Path) -> Vm {
    need("qemu-system-x86_64");
    need("qemu-img");
    let d0 = dir.join("d0.qcow2");
    let d1 = dir.join("d1.raw");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&d0).arg("64M"));
    run(Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 0x11 0 8M", "-c", "write -P 0x22 40M 4M"]).arg(&d0));
    run(Command::new("qemu-img").args(["create", "-q", "-f", "raw"]).arg(&d1).arg("16M"));
    run(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x33 1M 2M"]).arg(&d1));
    let qmp = dir.join("qmp.sock");
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-name", "web1", "-uuid", "6f1e2d3c-aaaa-bbbb-cccc-111122223333", "-machine", "q35"])
        .args(["-smp", "2", "-m", "128", "-nodefaults", "-display", "none", "-S"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .arg("-blockdev")
        .arg(format!("driver=qcow2,node-name=n0,file.driver=file,file.filename={}", d0.display()))
        .args(["-device", "virtio-blk-pci,drive=n0,id=disk0,bootindex=1"])
        .arg("-blockdev")
        .arg(format!("driver=raw,node-name=n1,file.driver=file,file.filename={}", d1.display()))
        .args(["-device", "ide-hd,drive=n1,id=disk1"])
        .args(["-netdev", "user,id=u0", "-device", "e1000,netdev=u0,id=net0,mac=52:54:00:aa:bb:cc,bootindex=2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu");
    let t = Instant::now();
    // The socket file appears at bind(), before QEMU listens on it.
    while std::os::unix::net::UnixStream::connect(&qmp).is_err() {
        assert!(t.elapsed() < Duration::from_secs(20), "QEMU did not open its QMP socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    Vm { child, qmp }
}

#[test]
fn inventory_reads_the_hardware_into_the_neutral_format() {
    let dir = tempfile::tempdir().unwrap();
    let vm = start_vm(dir.path());
    let mut q = Qmp::connect(&vm.qmp).unwrap();
    assert!(q.version.starts_with("10."), "{}", q.version);
    let (md, nodes) = capture(&mut q).unwrap();
    md.validate().unwrap();
    assert_eq!(md.name, "web1");
    assert_eq!(md.uuid.as_deref(), Some("6f1e2d3c-aaaa-bbbb-cccc-111122223333"));
    assert_eq!(md.cpus, 2);
    assert_eq!(md.memory_mib, 128);
    assert_eq!(md.firmware, Firmware::Bios);
    assert!(md.machine.starts_with("pc-q35-"), "{}", md.machine);
    let ids: Vec<(&str, &str, u64, &str)> = md.disks.iter().map(|d| (d.id.as_str(), d.bus.as_str(), d.size, d.format.as_str())).collect();
    assert_eq!(ids, [("disk0", "virtio", 64 << 20, "qcow2"), ("disk1", "sata", 16 << 20, "raw")]);
    assert_eq!(md.nics.len(), 1);
    assert_eq!((md.nics[0].id.as_str(), md.nics[0].mac.as_str(), md.nics[0].model.as_str()), ("net0", "52:54:00:aa:bb:cc", "e1000"));
    assert_eq!(md.boot_order, ["disk0", "net0"]);
    assert_eq!(nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(), ["n0", "n1"]);
}

#[test]
fn fleecing_exports_the_disks_and_cleans_up() {
    need("nbdcopy");
    let dir = tempfile::tempdir().unwrap();
    let vm = start_vm(dir.path());
    let mut q = Qmp::connect(&vm.qmp).unwrap();
    let (_, nodes) = capture(&mut q).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();

    // First backup: no bitmap yet, so a full read with the reason given.
    let s = FleeceSession::start(&mut q, &nodes, &work, true).unwrap();
    for d in &s.disks {
        assert!(d.bitmap.is_none());
        assert!(d.full_reason.as_deref().unwrap_or("").contains("no changed-block bitmap"), "{:?}", d.full_reason);
        let out = dir.path().join(format!("{}.raw", d.device));
        run(Command::new("nbdcopy").arg(s.uri(d)).arg(&out));
        let src = if d.device == "disk0" { dir.path().join("d0.qcow2") } else { dir.path().join("d1.raw") };
        let fmt = if d.device == "disk0" { "qcow2" } else { "raw" };
        // The source is in use by QEMU: compare with -U (no lock).
        run(Command::new("qemu-img").args(["compare", "-U", "-f", fmt, "-F", "raw"]).arg(&src).arg(&out));
    }
    s.finish(&mut q, true).unwrap();
    assert!(!work.join("nbd.sock").exists());
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0, "overlays left behind");

    // Second backup: the bitmap started by the first is exported.
    let s = FleeceSession::start(&mut q, &nodes, &work, true).unwrap();
    for d in &s.disks {
        assert_eq!(d.bitmap.as_deref(), Some("lifeboat-a"), "{d:?}");
        let map = run(Command::new("nbdinfo").arg("--map=qemu:dirty-bitmap:lifeboat-a").arg(s.uri(d)));
        // Nothing was written in between: all clean.
        assert!(map.lines().all(|l| l.contains("clean")), "{map}");
    }
    // A failed backup keeps the changes for the next one.
    s.finish(&mut q, false).unwrap();
    let s = FleeceSession::start(&mut q, &nodes, &work, true).unwrap();
    assert!(s.disks.iter().all(|d| d.bitmap.as_deref() == Some("lifeboat-b")), "{:?}", s.disks);
    s.finish(&mut q, true).unwrap();
    // The VM is still fine.
    let st = q.execute("query-status", serde_json::json!({})).unwrap();
    assert_eq!(st["status"], "prelaunch");
}
