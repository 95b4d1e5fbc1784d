//! The appliance image (image-build/build.sh) booted under QEMU TCG with a
//! second, empty disk and user networking with a host port forward to the
//! API: the console comes up on the serial line, the daemon answers over
//! TLS, and the first-boot wizard driven over the serial line formats the
//! second disk and sets the admin password the API then accepts. The ISO
//! boots the same system live under UEFI (OVMF).
//!
//! The images are cached by image-build (by a hash of the inputs, the
//! lifeboat binary included); a fresh build takes minutes. Needs root.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(420);
const STEP: Duration = Duration::from_secs(60);

struct Images {
    qcow2: PathBuf,
    iso: PathBuf,
}

/// Builds (or finds cached) images, serialised across the tests of this
/// binary by the build script's own lock.
fn images() -> Images {
    let out = Command::new("bash").arg(workspace().join("image-build/build.sh")).env("LIFEBOAT_BIN", bin()).stderr(Stdio::inherit()).output().expect("run image-build/build.sh");
    assert!(out.status.success(), "image-build/build.sh failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).map(PathBuf::from).unwrap_or_else(|| panic!("no {k}= in\n{text}"));
    Images { qcow2: get("qcow2"), iso: get("iso") }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A QEMU guest whose serial line is a unix socket; everything it prints
/// feeds a VT100 emulator of the console's 80x24 screen.
struct Appliance {
    /// Killed on drop.
    qemu: ChildGuard,
    serial: UnixStream,
    screen: Arc<Mutex<vt100::Parser>>,
    raw: Arc<Mutex<Vec<u8>>>,
    port: u16,
}

impl Appliance {
    fn boot(dir: &Path, boot_args: &[&str]) -> Appliance {
        let data = dir.join("data.qcow2");
        assert!(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&data).arg("4G").status().unwrap().success());
        let sock = dir.join("serial.sock");
        let _ = std::fs::remove_file(&sock);
        let port = free_port();
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-accel", "tcg", "-m", "2048", "-smp", "2", "-display", "none", "-monitor", "none", "-no-reboot"])
            .args(boot_args)
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=qcow2", data.display()))
            .arg("-nic")
            .arg(format!("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:8007"))
            .arg("-chardev")
            .arg(format!("socket,id=ser0,path={},server=on,wait=on", sock.display()))
            .args(["-serial", "chardev:ser0"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let qemu = ChildGuard::spawn(c);
        let deadline = Instant::now() + Duration::from_secs(30);
        let serial = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!("QEMU's serial socket {}: {e}", sock.display()),
            }
        };
        let screen = Arc::new(Mutex::new(vt100::Parser::new(24, 80, 0)));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, s2, r2) = (serial.try_clone().unwrap(), screen.clone(), raw.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s2.lock().unwrap().process(&buf[..n]);
                r2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Appliance { qemu, serial, screen, raw, port }
    }

    /// Waits for QEMU to exit (the guest powered off; -no-reboot).
    #[track_caller]
    fn wait_exit(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.qemu.running() {
            assert!(Instant::now() < deadline, "QEMU did not exit within {timeout:?}; screen:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Moves the selection (`> `) of a disk list on screen `s` down to
    /// the row of disk `name`.
    #[track_caller]
    fn select_disk(&mut self, s: &str, name: &str) {
        let rows: Vec<&str> = s.lines().filter(|l| (l.starts_with("> ") || l.starts_with("  ")) && l[2..].starts_with(|c: char| c.is_ascii_lowercase()) && l.contains("iB  ")).collect();
        let selected = rows.iter().position(|l| l.starts_with("> ")).unwrap_or_else(|| panic!("no selected row:\n{s}"));
        let want = rows.iter().position(|l| l[2..].starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} not listed:\n{s}"));
        let n = rows.len();
        for _ in 0..(want + n - selected) % n {
            self.send(b"\x1b[B");
        }
    }

    /// The first-boot wizard over the serial line: DHCP, default name
    /// and zone, `password`, format the empty 4 GiB `vdb`. Returns the
    /// fingerprint shown at the end.
    fn run_wizard(&mut self, password: &str) -> String {
        let a = self;
        a.send(b"\r");
        a.wait_for("step 2 of 6: Hostname", STEP);
        a.send(b"\r");
        a.wait_for("step 3 of 6: Time", STEP);
        a.send(b"\r");
        a.wait_for("step 4 of 6: Admin password", STEP);
        a.send(format!("{password}\t{password}\r").as_bytes());
        let s = a.wait_for("step 5 of 6: Datastore disk", STEP);
        let s = if s.contains("vdb") { s } else { a.wait_for("vdb", STEP) };
        assert!(s.contains("system disk (holds /)"), "{s}");
        // vda, the system disk, (and QEMU's empty DVD drive) are listed too.
        a.select_disk(&s, "vdb");
        a.send(b"\r");
        a.wait_for("WILL BE ERASED", STEP);
        a.send(b"vdb\r");
        let s = a.wait_for("step 6 of 6: Summary", STEP);
        assert!(s.contains("FORMAT /dev/vdb (4.0 GiB) as ext4"), "{s}");
        a.send(b"\r");
        a.wait_for("Setup complete", BOOT);
        // The fingerprint: two lines of 16 bytes under its label. The
        // screen may be caught mid-redraw, so read it until both lines
        // are whole.
        let whole = |l: &str| {
            let parts: Vec<&str> = l.trim().split(':').collect();
            parts.len() == 16 && parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        };
        let deadline = Instant::now() + STEP;
        loop {
            let s = a.screen();
            let lines: Vec<&str> = s.lines().collect();
            if let Some(at) = lines.iter().position(|l| l.contains("SHA-256 fingerprint:")) {
                if let (Some(l1), Some(l2)) = (lines.get(at + 1), lines.get(at + 2)) {
                    if whole(l1) && whole(l2) {
                        return format!("{}:{}", l1.trim(), l2.trim());
                    }
                }
            }
            assert!(Instant::now() < deadline, "no whole fingerprint shown:\n{s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// After the wizard: the restarted daemon takes the new password over
    /// TLS, serves the formatted disk's datastore, and its certificate is
    /// the one whose fingerprint the console showed.
    fn check_api_after_wizard(&mut self, password: &str, shown_fingerprint: &str) {
        let a = self;
        std::thread::sleep(Duration::from_secs(2));
        a.wait_for_api(BOOT);
        let login = serde_json::json!({"username": "admin", "password": password}).to_string();
        let (code, body) = a.curl(&["-H", "content-type: application/json", "-d", &login, &a.url("/api/login")]);
        assert_eq!(code, 200, "login with the console's password failed: {body}");
        let token = serde_json::from_str::<Value>(&body).unwrap()["token"].as_str().unwrap_or_else(|| panic!("no token: {body}")).to_string();
        let (code, body) = a.curl(&["-H", &format!("authorization: Bearer {token}"), &a.url("/api/datastores")]);
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("/srv/lifeboat/data-"), "the formatted disk's datastore is not served: {body}");
        assert_eq!(shown_fingerprint, a.served_fingerprint());
    }

    fn screen(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.serial.write_all(bytes).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Waits until the console's screen shows `text`, repainting it
    /// (Ctrl-L) now and then in case boot messages overwrote it.
    #[track_caller]
    fn wait_for(&mut self, text: &str, timeout: Duration) -> String {
        self.wait_for_unless(text, &[], timeout)
    }

    /// `wait_for`, failing at once when the screen shows one of `fatal`.
    #[track_caller]
    fn wait_for_unless(&mut self, text: &str, fatal: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last_repaint = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(text) {
                return s;
            }
            if let Some(f) = fatal.iter().find(|f| s.contains(*f)) {
                panic!("the console shows {f:?} while waiting for {text:?}:\n{s}");
            }
            if Instant::now() > deadline {
                let tail = String::from_utf8_lossy(&self.raw.lock().unwrap()).chars().rev().take(3000).collect::<String>();
                let tail: String = tail.chars().rev().collect();
                panic!("the console did not show {text:?} within {timeout:?}; screen:\n{s}\n--- last serial output:\n{tail}");
            }
            if last_repaint.elapsed() > Duration::from_secs(5) && !self.raw.lock().unwrap().is_empty() {
                self.send(b"\x0c");
                last_repaint = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn curl(&self, args: &[&str]) -> (u16, String) {
        let out = Command::new("curl").args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"]).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Waits for GET /api/health to answer over TLS.
    #[track_caller]
    fn wait_for_api(&mut self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, body) = self.curl(&[&self.url("/api/health")]);
            if code == 200 {
                return serde_json::from_str(&body).unwrap_or_else(|e| panic!("health is not JSON ({e}): {body}"));
            }
            assert!(Instant::now() < deadline, "the API did not answer within {timeout:?} (last: {code} {body})\n{}", self.screen());
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// The SHA-256 fingerprint of the certificate the API serves.
    fn served_fingerprint(&self) -> String {
        let sh = format!("openssl s_client -connect 127.0.0.1:{} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256", self.port);
        let out = Command::new("sh").args(["-c", &sh]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        text.split_once('=').map(|(_, f)| f.to_ascii_lowercase()).unwrap_or_else(|| panic!("no certificate served: {text}"))
    }
}

#[test]
fn qcow2_boots_to_the_console_and_the_wizard_sets_up_disk_and_password() {
    require_root();
    let imgs = images();
    let dir = scratch("image-qcow2");
    let disk = dir.path().join("appliance.qcow2");
    let st = Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"]).arg(&imgs.qcow2).arg(&disk).status().unwrap();
    assert!(st.success());
    let drive = format!("file={},if=virtio,format=qcow2", disk.display());
    let mut a = Appliance::boot(dir.path(), &["-drive", &drive]);

    a.wait_for("step 1 of 6: Network", BOOT);
    let health = a.wait_for_api(BOOT);
    assert_eq!(health["status"], "ok", "{health}");
    let (code, _) = a.curl(&[&a.url("/api/datastores")]);
    assert_eq!(code, 401, "the API must want a login");

    // The wizard over the serial line, then the API with its password.
    let shown = a.run_wizard("lifeboat-serial-1");
    a.check_api_after_wizard("lifeboat-serial-1", &shown);
}

#[test]
fn iso_boots_live_under_uefi_to_the_console_and_the_api() {
    require_root();
    let imgs = images();
    let dir = scratch("image-iso");
    let cdrom = format!("file={},media=cdrom,readonly=on", imgs.iso.display());
    let mut a = Appliance::boot(dir.path(), &["-bios", ovmf(), "-drive", &cdrom]);
    a.wait_for("Install Lifeboat to a disk", BOOT);
    let health = a.wait_for_api(BOOT);
    assert_eq!(health["status"], "ok", "{health}");
}

fn ovmf() -> &'static str {
    ["/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF.fd"].into_iter().find(|p| Path::new(p).exists()).expect("OVMF (scripts/setup.sh)")
}

/// `count` 512-byte sectors of a qcow2 image from sector `skip`.
fn read_sectors(image: &Path, skip: u64, count: u64) -> Vec<u8> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let st = Command::new("qemu-img")
        .args(["dd", "-f", "qcow2", "-O", "raw", "bs=512"])
        .arg(format!("skip={skip}"))
        .arg(format!("count={}", skip + count))
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", out.path().display()))
        .status()
        .unwrap();
    assert!(st.success(), "qemu-img dd of {}", image.display());
    let data = std::fs::read(out.path()).unwrap();
    data[..(count as usize * 512).min(data.len())].to_vec()
}

/// The ISO boots live under SeaBIOS (its BIOS path), "Install to disk"
/// driven over the serial line installs to the empty vda, the guest powers
/// off; then the installed disk alone boots under OVMF (UEFI, no NVRAM
/// entry: the removable path), runs the first-boot wizard (formatting the
/// data disk vdb) and the API takes the new password over TLS.
#[test]
fn iso_installs_to_disk_under_bios_and_the_installed_disk_boots_under_uefi() {
    require_root();
    let imgs = images();
    let dir = scratch("image-install");
    let target = dir.path().join("target.qcow2");
    assert!(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&target).arg("4G").status().unwrap().success());
    let target_drive = format!("file={},if=virtio,format=qcow2", target.display());
    let cdrom = format!("file={},media=cdrom,readonly=on", imgs.iso.display());

    {
        let mut a = Appliance::boot(dir.path(), &["-boot", "order=d", "-drive", &target_drive, "-drive", &cdrom]);
        a.wait_for("Install Lifeboat to a disk", BOOT);
        a.send(b"i");
        let s = a.wait_for("Pick the disk to install", STEP);
        let s = if s.contains("vdb") { s } else { a.wait_for("vdb", STEP) };
        // The live medium is listed but never a target.
        assert!(s.contains("sr0") && s.contains("live medium"), "{s}");
        a.select_disk(&s, "vda");
        a.send(b"\r");
        a.wait_for("WILL BE ERASED", STEP);
        a.send(b"vdb\r");
        a.wait_for("installing erases everything on /dev/vda", STEP);
        a.send(b"\x15vda\r");
        a.wait_for("Installing Lifeboat to /dev/vda", STEP);
        let s = a.wait_for_unless("Lifeboat is installed on /dev/vda", &["The install failed"], BOOT);
        // The screen may be caught mid-redraw (the progress overlay still
        // on it): the rest of the summary follows in the next frames.
        let s = if s.contains("GRUB for BIOS and UEFI") { s } else { a.wait_for("GRUB for BIOS and UEFI", STEP) };
        assert!(s.contains("GRUB for BIOS and UEFI"), "{s}");
        a.send(b"p");
        a.wait_exit(STEP);
    }

    // The BIOS path on disk: GRUB's boot.img in the protective MBR, a GPT,
    // and the core image in the BIOS boot partition (sectors 2048-4095).
    let head = read_sectors(&target, 0, 2);
    assert!(head[..512].windows(4).any(|w| w == b"GRUB"), "no GRUB boot code in the MBR");
    assert_eq!(&head[512..520], b"EFI PART", "no GPT header");
    let core = read_sectors(&target, 2048, 2048);
    assert!(core.iter().any(|b| *b != 0), "the BIOS boot partition is empty: no GRUB core image");

    let mut a = Appliance::boot(dir.path(), &["-bios", ovmf(), "-drive", &target_drive]);
    a.wait_for("step 1 of 6: Network", BOOT);
    let shown = a.run_wizard("lifeboat-install-1");
    a.check_api_after_wizard("lifeboat-install-1", &shown);
}
