//! A property of the whole VM path: every VM shape `vm backup` saves
//! restores byte-identical, and its instant restore starts a QEMU with
//! the same hardware.
//!
//! Shapes are generated (seeded, so a failure repeats): pc or q35, BIOS
//! or UEFI, with or without `-name`/`-uuid`, 1-4 disks of odd sizes in
//! qcow2 or raw on mixed buses (PIIX IDE, AHCI, LSI and virtio SCSI,
//! virtio-blk, NVMe; named and anonymous devices), 0-3 NICs. The cases
//! are laid out so that every bus appears on both machine types. Each is
//! a guestless QEMU (`-S`): nothing runs in it, but QEMU's inventory,
//! fleecing and NBD exports are the real ones. The instant restore runs
//! with the product's defaults (accelerator `auto`) and `--paused`;
//! `vm inspect` of the restored QEMU must describe the same hardware.

mod common;

use common::guest::{identical, qemu_img};
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Bus {
    Ide,
    Sata,
    Lsi,
    VirtioScsi,
    Virtio,
    Nvme,
}

const BUSES: [Bus; 6] = [Bus::Ide, Bus::Sata, Bus::Lsi, Bus::VirtioScsi, Bus::Virtio, Bus::Nvme];

#[derive(Debug)]
struct Shape {
    q35: bool,
    uefi: bool,
    name: Option<String>,
    uuid: Option<String>,
    /// (bus, size, qcow2, named device)
    disks: Vec<(Bus, u64, bool, bool)>,
    nics: Vec<&'static str>,
}

fn shapes(seed: u64, n: usize) -> Vec<Shape> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|i| {
            let q35 = i % 2 == 1;
            // Case i carries bus (i / 2) % 6 first, so 12 cases cover
            // every bus on both machines; the rest is drawn.
            let mut disks = vec![BUSES[(i / 2) % BUSES.len()]];
            for _ in 0..r.below(4) {
                disks.push(BUSES[r.below(BUSES.len() as u64) as usize]);
            }
            // At most 4 disks: PIIX's 4 places are always enough.
            let disks = disks
                .into_iter()
                .map(|b| {
                    // Odd sizes: a whole chunk plus sectors, a tail short of a chunk.
                    let size = r.range(1, 9) * (1 << 20) + r.below(64) * 512;
                    (b, size, r.below(2) == 0, r.below(3) != 0)
                })
                .collect();
            let nics = (0..r.below(4)).map(|_| ["e1000", "virtio-net-pci", "rtl8139"][r.below(3) as usize]).collect();
            Shape {
                q35,
                uefi: r.below(3) == 0,
                name: (r.below(2) == 0).then(|| format!("shape-{i}")),
                uuid: (r.below(3) == 0).then(|| format!("6f1e2d3c-aaaa-bbbb-cccc-{:012x}", r.below(1 << 40))),
                disks,
                nics,
            }
        })
        .collect()
}

struct Guestless {
    child: Child,
    qmp: PathBuf,
    /// Each disk's image and its format.
    images: Vec<(PathBuf, &'static str)>,
}

impl Drop for Guestless {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_socket(p: &Path) -> bool {
    wait_until(Duration::from_secs(30), || std::os::unix::net::UnixStream::connect(p).is_ok())
}

fn start(shape: &Shape, dir: &Path, seed: u64) -> Guestless {
    std::fs::create_dir_all(dir).unwrap();
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-S", "-display", "none", "-nodefaults", "-m", "128"]);
    c.args(["-machine", if shape.q35 { "q35" } else { "pc" }]);
    if let Some(n) = &shape.name {
        c.args(["-name", n]);
    }
    if let Some(u) = &shape.uuid {
        c.args(["-uuid", u]);
    }
    if shape.uefi {
        std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", dir.join("vars.fd")).unwrap();
        c.args(["-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"]);
        c.arg("-drive").arg(format!("if=pflash,format=raw,unit=1,file={}", dir.join("vars.fd").display()));
    }
    let qmp = dir.join("qmp.sock");
    c.arg("-qmp").arg(format!("unix:{},server=on,wait=off", qmp.display()));
    let mut images = Vec::new();
    let mut ide = 0;
    let mut ahci = false;
    let (mut lsi, mut vscsi) = (false, false);
    for (i, (bus, size, qcow2, named)) in shape.disks.iter().enumerate() {
        let fmt = if *qcow2 { "qcow2" } else { "raw" };
        let img = dir.join(format!("src{i}.{fmt}"));
        let o = qemu_img(&["create", "-q", "-f", fmt, img.to_str().unwrap(), &size.to_string()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // Data at the start, in the middle and in the odd tail.
        let pat = (seed as usize + i) % 250 + 1;
        let o = Command::new("qemu-io")
            .args(["-f", fmt, "-c", &format!("write -P {pat} 0 64k"), "-c", &format!("write -P {} {} 4k", pat + 1, size / 2 / 512 * 512), "-c", &format!("write -P {} {} 512", pat + 2, size - 512)])
            .arg(&img)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let node = format!("n{i}");
        c.arg("-blockdev").arg(format!("driver={fmt},node-name={node},file.driver=file,file.filename={}", img.display()));
        let id = if *named { format!(",id=disk{i}x") } else { String::new() };
        let dev = match bus {
            Bus::Ide if shape.q35 => format!("ide-hd,drive={node}{id}"),
            Bus::Ide => {
                ide += 1;
                format!("ide-hd,drive={node},bus=ide.{},unit={}{id}", (ide - 1) / 2, (ide - 1) % 2)
            }
            Bus::Sata if shape.q35 => format!("ide-hd,drive={node}{id}"),
            Bus::Sata => {
                if !ahci {
                    c.args(["-device", "ahci,id=ahci0"]);
                    ahci = true;
                }
                format!("ide-hd,drive={node},bus=ahci0.{i}{id}")
            }
            Bus::Lsi => {
                if !lsi {
                    c.args(["-device", "lsi53c895a,id=lsi0"]);
                    lsi = true;
                }
                format!("scsi-hd,drive={node},bus=lsi0.0{id}")
            }
            Bus::VirtioScsi => {
                if !vscsi {
                    c.args(["-device", "virtio-scsi-pci,id=vs0"]);
                    vscsi = true;
                }
                format!("scsi-hd,drive={node},bus=vs0.0{id}")
            }
            Bus::Virtio => format!("virtio-blk-pci,drive={node}{id}"),
            Bus::Nvme => format!("nvme,drive={node},serial=s{i}{id}"),
        };
        c.arg("-device").arg(dev);
        images.push((img, fmt));
    }
    for (i, model) in shape.nics.iter().enumerate() {
        c.arg("-netdev").arg(format!("hubport,id=h{i},hubid={i}"));
        c.arg("-device").arg(format!("{model},netdev=h{i},mac=52:54:00:5e:00:{:02x},id=nic{i}", i + (seed as usize % 16) * 4));
    }
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(dir.join("qemu.log")).unwrap());
    let child = c.spawn().expect("start qemu-system-x86_64");
    let mut g = Guestless { child, qmp, images };
    if !wait_socket(&g.qmp) {
        let _ = g.child.kill();
        panic!("QEMU for {shape:?} did not start: {}", std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default());
    }
    g
}

fn inspect(qmp: &Path) -> Value {
    let mut c = lb_cmd();
    c.args(["vm", "inspect", "--qmp"]).arg(qmp);
    let o = run_cmd(c);
    o.expect_ok();
    serde_json::from_str(&o.stdout).unwrap()
}

/// What a restore must reproduce, in a form two inventories compare by.
fn hardware(md: &Value) -> Value {
    let disks: Vec<Value> = md["disks"].as_array().unwrap().iter().map(|d| serde_json::json!([d["id"], d["size"], d["bus"], d["controller"], d["model"]])).collect();
    let mut nics: Vec<Value> = md["nics"].as_array().unwrap().iter().map(|n| serde_json::json!([n["id"], n["mac"], n["model"]])).collect();
    // QOM lists devices in no fixed order.
    nics.sort_by_key(|n| n.to_string());
    serde_json::json!({ "disks": disks, "nics": nics, "cpus": md["cpus"], "memory": md["memory_mib"], "firmware": md["firmware"], "machine": md["machine"] })
}

#[test]
fn every_saved_vm_shape_restores_and_instant_restores() {
    require_root();
    let seed = 0x28;
    let t = scratch("vm-shapes");
    let ds = Ds::init(t.path().join("ds"));
    for (i, shape) in shapes(seed, 12).iter().enumerate() {
        let dir = t.path().join(format!("case{i}"));
        let vm = start(shape, &dir, seed + i as u64);
        let src = inspect(&vm.qmp);
        // The inventory tells the truth about buses.
        for ((bus, ..), d) in shape.disks.iter().zip(src["disks"].as_array().unwrap()) {
            let want = match (bus, shape.q35) {
                (Bus::Ide, false) => ("ide", Some("piix3-ide")),
                (Bus::Ide | Bus::Sata, _) => ("sata", Some("ich9-ahci")),
                (Bus::Lsi, _) => ("scsi", Some("lsi53c895a")),
                (Bus::VirtioScsi, _) => ("scsi", Some("virtio-scsi-pci")),
                (Bus::Virtio, _) => ("virtio", None),
                (Bus::Nvme, _) => ("nvme", None),
            };
            assert_eq!((d["bus"].as_str().unwrap(), d["controller"].as_str()), want, "case {i} {shape:?}: {d}");
        }
        assert_eq!(src["firmware"], if shape.uefi { "uefi" } else { "bios" }, "case {i}");
        assert_eq!(src["disks"].as_array().unwrap().len(), shape.disks.len(), "case {i}: the firmware's flash is no disk: {src}");

        let mut c = lb_cmd();
        c.args(["vm", "backup", "--json", "--datastore"]).arg(&ds.path).arg("--qmp").arg(&vm.qmp);
        let o = run_cmd(c);
        o.expect_ok();
        let out = o.json();
        let name = out["vm"].as_str().unwrap().to_string();
        let warned = out["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("no name"));
        match (&shape.name, &shape.uuid) {
            (Some(n), _) => assert!(name == *n && !warned, "case {i}: {out}"),
            (None, Some(u)) => assert!(name == *u && warned, "case {i}: {out}"),
            // The QMP socket's file name.
            (None, None) => assert!(name == "qmp" && warned, "case {i}: {out}"),
        }
        let sid = out["snapshot_id"].as_str().unwrap().to_string();

        // Restore: every disk byte-identical to its source.
        let back = dir.join("restored");
        let mut c = lb_cmd();
        c.args(["vm", "restore", "--datastore"]).arg(&ds.path).arg(&sid).arg(&back);
        run_cmd(c).expect_ok();
        for (d, (img, fmt)) in src["disks"].as_array().unwrap().iter().zip(&vm.images) {
            let restored = back.join(format!("{}.raw", d["id"].as_str().unwrap()));
            let (same, why) = identical(img, fmt, &restored);
            assert!(same, "case {i} disk {d}: {why}");
        }

        // Instant restore (product defaults, paused): the same hardware.
        let work = dir.join("instant");
        let mut c = lb_cmd();
        c.args(["vm", "instant-restore", "--paused", "--net", "none", "--datastore"]).arg(&ds.path).arg(&sid).arg("--workdir").arg(&work);
        let mut ir = ChildGuard::spawn(c);
        let qmp = work.join("qmp.sock");
        let up = wait_until(Duration::from_secs(60), || std::os::unix::net::UnixStream::connect(&qmp).is_ok() || !ir.running());
        assert!(up && ir.running(), "case {i}: instant restore did not start QEMU: {}", std::fs::read_to_string(work.join("qemu.log")).unwrap_or_default());
        let restored = inspect(&qmp);
        assert_eq!(restored["name"], format!("{name}-instant"));
        assert_eq!(hardware(&restored), hardware(&src), "case {i} {shape:?}");
        ir.signal(libc::SIGTERM);
        let o = ir.wait();
        assert_eq!(o.code(), Some(0), "{o}");
        assert!(o.stderr.contains("accelerator: "), "{o}");
        drop(vm);
    }
    ds.assert_check_clean();
}
