//! A QEMU guest boots with its disk on `nbd://` (a CoW overlay export):
//! the host's kernel plus a busybox initramfs whose /init loads virtio,
//! reads the disk through the export, writes to it, and powers off.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use lifeboat_nbd::{BlockDevice, CowOverlay, FileDevice, ServerConfig};

const MODULES: &[&str] = &["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk"];

/// Newest /boot/vmlinuz-* and its module directory.
fn host_kernel() -> (PathBuf, PathBuf) {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot").map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    kernels.retain(|p| p.file_name().unwrap().to_string_lossy().starts_with("vmlinuz-"));
    kernels.sort();
    let k = kernels.pop().expect("no /boot/vmlinuz-*: run scripts/setup.sh (installs linux-image-amd64 for guest tests)");
    let ver = k.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_string();
    let mods = PathBuf::from(format!("/lib/modules/{ver}"));
    assert!(mods.is_dir(), "{} missing: reinstall linux-image-{ver}", mods.display());
    (k, mods)
}

fn find_module(dir: &Path, name: &str) -> PathBuf {
    let want = format!("{name}.ko");
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap().to_string_lossy() == want {
                return p;
            }
        }
    }
    panic!("kernel module {want} not found under {}", dir.display());
}

/// A cpio "newc" archive writer: enough for an initramfs.
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let hdr = format!("070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}", self.ino, mode, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0);
        self.out.extend_from_slice(hdr.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        while self.out.len() & 3 != 0 {
            self.out.push(0);
        }
        self.out.extend_from_slice(data);
        while self.out.len() & 3 != 0 {
            self.out.push(0);
        }
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

fn initramfs(mods: &Path) -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox missing: run scripts/setup.sh (installs busybox-static)");
    let mut insmods = String::new();
    for m in MODULES {
        insmods.push_str(&format!("insmod /lib/modules/{m}.ko\n"));
    }
    let init = format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
{insmods}
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
echo "GUEST-MARKER: $(dd if=/dev/vda bs=32 count=1 2>/dev/null)"
echo "GUEST-MD5: $(md5sum /dev/vda)"
printf 'written-by-guest' | dd of=/dev/vda bs=4096 seek=1 conv=fsync,notrunc 2>/dev/null
sync
echo GUEST-DONE
poweroff -f
"#
    );
    let mut c = Cpio { out: Vec::new(), ino: 0 };
    for d in ["bin", "dev", "proc", "sys", "lib", "lib/modules"] {
        c.entry(d, 0o040755, &[]);
    }
    c.entry("bin/busybox", 0o100755, &busybox);
    c.entry("init", 0o100755, init.as_bytes());
    for m in MODULES {
        let data = std::fs::read(find_module(mods, m)).unwrap();
        c.entry(&format!("lib/modules/{m}.ko"), 0o100644, &data);
    }
    c.finish()
}

#[test]
fn qemu_guest_boots_from_nbd_cow_export() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, mods) = host_kernel();
    let initrd = dir.path().join("initrd.cpio");
    std::fs::write(&initrd, initramfs(&mods)).unwrap();

    // A 16 MiB disk: a marker in the first sector, patterned data after.
    let img = dir.path().join("disk.raw");
    let mut disk = vec![0u8; 16 << 20];
    disk[..32].copy_from_slice(b"LIFEBOAT-NBD-BOOT-DISK-MARKER-01");
    for (i, b) in disk[1 << 20..8 << 20].iter_mut().enumerate() {
        *b = (i % 253) as u8;
    }
    std::fs::write(&img, &disk).unwrap();
    let md5 = run_ok("md5sum", &[img.to_str().unwrap()]);
    let md5 = md5.split_whitespace().next().unwrap().to_string();
    let before = sha(&img);

    let ov = dir.path().join("overlay.raw");
    let cow = CowOverlay::open(FileDevice::open(&img).unwrap(), &ov).unwrap();
    let dev: Arc<dyn BlockDevice> = Arc::new(cow);
    let srv = TestServer::start(ServerConfig::default(), vec![("vm", dev)]);

    let drive = format!("file={},format=raw,if=virtio", srv.uri("vm"));
    let out = run(
        "qemu-system-x86_64",
        &[
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
            kernel.to_str().unwrap(),
            "-initrd",
            initrd.to_str().unwrap(),
            "-append",
            "console=ttyS0 panic=-1 quiet",
            "-drive",
            &drive,
        ],
    );
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(console.contains("GUEST-MARKER: LIFEBOAT-NBD-BOOT-DISK-MARKER-01"), "console:\n{console}\nstderr:\n{err}");
    assert!(console.contains(&format!("GUEST-MD5: {md5}")), "console:\n{console}\nstderr:\n{err}");
    assert!(console.contains("GUEST-DONE"), "console:\n{console}\nstderr:\n{err}");

    // The guest's write is in the overlay; the base is untouched.
    let io = run_ok("qemu-io", &["-f", "raw", "-r", "-c", "read -v 4096 16", &srv.uri("vm")]);
    assert!(io.contains("written-by-guest") || io.contains("77 72 69 74"), "{io}");
    assert_eq!(before, sha(&img), "the base image changed");
}
