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
    let out = Command::new("bash")
        .arg(workspace().join("image-build/build.sh"))
        .env("LIFEBOAT_BIN", bin())
        .stderr(Stdio::inherit())
        .output()
        .expect("run image-build/build.sh");
    assert!(out.status.success(), "image-build/build.sh failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let get = |k: &str| {
        text.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).map(PathBuf::from).unwrap_or_else(|| panic!("no {k}= in\n{text}"))
    };
    Images { qcow2: get("qcow2"), iso: get("iso") }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A QEMU guest whose serial line is a unix socket; everything it prints
/// feeds a VT100 emulator of the console's 80x24 screen.
struct Appliance {
    /// Killed on drop.
    _qemu: ChildGuard,
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
        Appliance { _qemu: qemu, serial, screen, raw, port }
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
        let deadline = Instant::now() + timeout;
        let mut last_repaint = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(text) {
                return s;
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
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
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
        let sh = format!(
            "openssl s_client -connect 127.0.0.1:{} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
            self.port
        );
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
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&imgs.qcow2)
        .arg(&disk)
        .status()
        .unwrap();
    assert!(st.success());
    let drive = format!("file={},if=virtio,format=qcow2", disk.display());
    let mut a = Appliance::boot(dir.path(), &["-drive", &drive]);

    a.wait_for("step 1 of 6: Network", BOOT);
    let health = a.wait_for_api(BOOT);
    assert_eq!(health["status"], "ok", "{health}");
    let (code, _) = a.curl(&[&a.url("/api/datastores")]);
    assert_eq!(code, 401, "the API must want a login");

    // The wizard over the serial line: DHCP, default name and zone.
    a.send(b"\r");
    a.wait_for("step 2 of 6: Hostname", STEP);
    a.send(b"\r");
    a.wait_for("step 3 of 6: Time", STEP);
    a.send(b"\r");
    a.wait_for("step 4 of 6: Admin password", STEP);
    a.send(b"lifeboat-serial-1\tlifeboat-serial-1\r");
    let s = a.wait_for("step 5 of 6: Datastore disk", STEP);
    let s = if s.contains("vdb") { s } else { a.wait_for("vdb", STEP) };
    assert!(s.contains("system disk (holds /)"), "{s}");
    // Move the selection to vdb (QEMU's empty DVD drive and vda, the
    // system disk, are listed too), confirm by typing its name.
    let rows: Vec<&str> = s.lines().filter(|l| (l.starts_with("> ") || l.starts_with("  ")) && l[2..].starts_with(|c: char| c.is_ascii_lowercase()) && l.contains("iB  ")).collect();
    let selected = rows.iter().position(|l| l.starts_with("> ")).unwrap_or_else(|| panic!("no selected row:\n{s}"));
    let vdb = rows.iter().position(|l| l[2..].starts_with("vdb ")).unwrap_or_else(|| panic!("vdb not listed:\n{s}"));
    assert!(vdb >= selected, "{s}");
    for _ in selected..vdb {
        a.send(b"\x1b[B");
    }
    a.send(b"\r");
    a.wait_for("WILL BE ERASED", STEP);
    a.send(b"vdb\r");
    let s = a.wait_for("step 6 of 6: Summary", STEP);
    assert!(s.contains("FORMAT /dev/vdb (4.0 GiB) as ext4"), "{s}");
    a.send(b"\r");
    let s = a.wait_for("Setup complete", BOOT);
    // The fingerprint: two lines of 16 bytes under its label.
    let lines: Vec<&str> = s.lines().collect();
    let at = lines.iter().position(|l| l.contains("SHA-256 fingerprint:")).unwrap_or_else(|| panic!("no fingerprint shown:\n{s}"));
    let shown = format!("{}:{}", lines[at + 1].trim(), lines[at + 2].trim());

    // The daemon restarted with the new password and the new datastore.
    std::thread::sleep(Duration::from_secs(2));
    a.wait_for_api(BOOT);
    let login = serde_json::json!({"username": "admin", "password": "lifeboat-serial-1"}).to_string();
    let (code, body) = a.curl(&["-H", "content-type: application/json", "-d", &login, &a.url("/api/login")]);
    assert_eq!(code, 200, "login with the console's password failed: {body}");
    let token = serde_json::from_str::<Value>(&body).unwrap()["token"].as_str().unwrap_or_else(|| panic!("no token: {body}")).to_string();
    let (code, body) = a.curl(&["-H", &format!("authorization: Bearer {token}"), &a.url("/api/datastores")]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("/srv/lifeboat/data-"), "the formatted disk's datastore is not served: {body}");

    // The fingerprint on the console is the served certificate's.
    assert_eq!(shown, a.served_fingerprint());
}

#[test]
fn iso_boots_live_under_uefi_to_the_console_and_the_api() {
    require_root();
    let imgs = images();
    let dir = scratch("image-iso");
    let ovmf = ["/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF.fd"].into_iter().find(|p| Path::new(p).exists()).expect("OVMF (scripts/setup.sh)");
    let cdrom = format!("file={},media=cdrom,readonly=on", imgs.iso.display());
    let mut a = Appliance::boot(dir.path(), &["-bios", ovmf, "-drive", &cdrom]);
    a.wait_for("step 1 of 6: Network", BOOT);
    let health = a.wait_for_api(BOOT);
    assert_eq!(health["status"], "ok", "{health}");
}
