//! Test guests (tests/guest/): building them and talking to them while
//! they run under QEMU: QMP, virtio-serial ports, the serial console.

use super::*;

pub const PART_OFFSET: u64 = 2048 * 512;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A command for a system tool, found in the sbin directories too (a
/// root shell without a login PATH may lack them).
pub fn tool(name: &str) -> Command {
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(d).join(name);
        if p.is_file() {
            return Command::new(p);
        }
    }
    panic!("{name} not found in /usr/sbin, /sbin, /usr/bin, /bin (tests/guest/install-deps.sh installs it)");
}

pub fn guest_dir() -> PathBuf {
    workspace().join("tests").join("guest")
}

/// Runs build.sh for `kind` with `out` as OUTDIR; returns the fresh copy.
pub fn build_guest(kind: &str, out: &Path) -> PathBuf {
    let start = Instant::now();
    let o = Command::new("bash").arg(guest_dir().join("build.sh")).arg(format!("--{kind}")).arg(out).stdin(Stdio::null()).output().expect("run tests/guest/build.sh");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "tests/guest/build.sh --{kind} failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}", o.status);
    let prefix = format!("{kind}=");
    let path = stdout.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("build.sh printed no {prefix}PATH\n{stdout}\n{stderr}"));
    let path = PathBuf::from(path);
    assert!(path.is_file(), "{} does not exist", path.display());
    eprintln!("guest {kind}: build.sh took {:.1} s ({})", start.elapsed().as_secs_f64(), stderr.trim().replace('\n', "; "));
    path
}

/// Line-oriented reading from a unix socket with deadlines; keeps partial
/// lines between calls.
pub struct Lines {
    pub s: UnixStream,
    pub buf: Vec<u8>,
}

impl Lines {
    pub fn connect(path: &Path, timeout: Duration) -> Lines {
        let mut last = None;
        let ok = wait_until(timeout, || match UnixStream::connect(path) {
            Ok(s) => {
                last = Some(Ok(s));
                true
            }
            Err(e) => {
                last = Some(Err(e));
                false
            }
        });
        match last {
            Some(Ok(s)) if ok => Lines { s, buf: Vec::new() },
            other => panic!("cannot connect to {}: {:?}", path.display(), other.map(|r| r.err())),
        }
    }

    /// The next complete line (without the newline), or None at EOF or
    /// when `timeout` passes first.
    pub fn line(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&l[..i]).trim_end_matches('\r').to_string());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.s.set_read_timeout(Some((deadline - now).min(Duration::from_millis(250)))).unwrap();
            let mut tmp = [0u8; 4096];
            match self.s.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("read from socket: {e}"),
            }
        }
    }

    pub fn send(&mut self, line: &str) {
        self.s.write_all(format!("{line}\n").as_bytes()).unwrap_or_else(|e| panic!("write {line:?}: {e}"));
    }
}

/// A QMP session.
pub struct Qmp(pub Lines);

impl Qmp {
    pub fn connect(sock: &Path) -> Qmp {
        let mut l = Lines::connect(sock, Duration::from_secs(30));
        let greeting = l.line(Duration::from_secs(30)).expect("QMP greeting");
        assert!(greeting.contains("\"QMP\""), "not a QMP greeting: {greeting}");
        let mut q = Qmp(l);
        q.cmd("qmp_capabilities", json!({}));
        q
    }

    /// Runs a command; returns its "return" value (events are skipped).
    pub fn cmd(&mut self, name: &str, args: Value) -> Value {
        self.0.send(&json!({"execute": name, "arguments": args}).to_string());
        loop {
            let l = self.0.line(Duration::from_secs(60)).unwrap_or_else(|| panic!("no QMP answer to {name}"));
            let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad QMP line {l:?}: {e}"));
            if v.get("event").is_some() {
                continue;
            }
            if let Some(r) = v.get("return") {
                return r.clone();
            }
            panic!("QMP {name} failed: {l}");
        }
    }
}

/// QEMU running a guest disk via tests/guest/run-tiny.sh; killed on drop.
pub struct Vm {
    pub child: ChildGuard,
    pub run: PathBuf,
    pub started: Instant,
}

impl Vm {
    /// `netns`: run QEMU inside this network namespace (with GUEST_NET=tap:..).
    pub fn boot(disk: &Path, run: &Path, env: &[(&str, &str)], netns: Option<&str>) -> Vm {
        Vm::boot_with(disk, run, env, netns, &[])
    }

    /// Like `boot`, with extra QEMU arguments.
    pub fn boot_with(disk: &Path, run: &Path, env: &[(&str, &str)], netns: Option<&str>, extra: &[String]) -> Vm {
        std::fs::create_dir_all(run).unwrap();
        let script = guest_dir().join("run-tiny.sh");
        let mut c = match netns {
            Some(ns) => {
                let mut c = tool("ip");
                c.args(["netns", "exec", ns, "bash"]).arg(&script);
                c
            }
            None => {
                let mut c = Command::new("bash");
                c.arg(&script);
                c
            }
        };
        c.arg(disk).arg(run).args(extra).stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let child = ChildGuard::spawn(c);
        Vm { child, run: run.to_path_buf(), started: Instant::now() }
    }

    pub fn sock(&self, name: &str) -> PathBuf {
        self.run.join(name)
    }

    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.run.join("serial.log")).unwrap_or_default()).into_owned()
    }

    /// Waits until the serial console shows `needle`; panics with the log.
    pub fn wait_console(&mut self, needle: &str, timeout: Duration) -> Duration {
        let ok = wait_until(timeout, || self.console().contains(needle) || !self.child.running());
        let ok = ok && self.console().contains(needle);
        assert!(ok, "the console did not show {needle:?} within {timeout:?} (qemu running: {})\n--- console\n{}", self.child.running(), self.console());
        self.started.elapsed()
    }

    /// Waits for QEMU to exit by itself; returns its exit status.
    pub fn wait_exit(mut self, timeout: Duration) -> Out {
        let ok = wait_until(timeout, || !self.child.running());
        assert!(ok, "QEMU did not exit within {timeout:?}\n--- console\n{}", self.console());
        let console = self.console();
        let out = self.child.wait();
        assert!(out.ok(), "QEMU exited with {:?}\n{out}\n--- console\n{console}", out.status);
        out
    }
}

pub fn fs_spec(disk: &Path) -> String {
    format!("{}?offset={PART_OFFSET}", disk.display())
}

/// Copies a file out of the guest's ext4 partition with debugfs.
pub fn debugfs_dump(disk: &Path, guest_path: &str, out: &Path) {
    run_ok(tool("debugfs").arg("-R").arg(format!("dump {guest_path} {}", out.display())).arg(fs_spec(disk)));
    assert!(out.is_file(), "debugfs could not dump {guest_path} from {}", disk.display());
}

pub fn sha256_file(p: &Path) -> String {
    run_ok(tool("sha256sum").arg(p)).split_whitespace().next().unwrap().to_string()
}

/// e2fsck -fn on the partition: the guest left its file system clean.
pub fn assert_fs_clean(disk: &Path) {
    let o = tool("e2fsck").arg("-fn").arg(fs_spec(disk)).output().expect("run e2fsck");
    assert!(o.status.success(), "e2fsck -fn {} found problems:\n{}{}", disk.display(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let h = run_ok(tool("dumpe2fs").arg("-h").arg(fs_spec(disk)));
    assert!(h.lines().any(|l| l.strip_prefix("Filesystem state:").map(str::trim) == Some("clean")), "file system not marked clean:\n{h}");
}

pub fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed: {}\n{}{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// QEMU arguments giving a VM started by lifeboat (instant restore, a
/// CDP boot) the virtio-serial ports the test guests' services use: one
/// socket server per `(chardev id, socket path, port name)`.
pub fn serial_port_args(ports: &[(&str, &Path, &str)]) -> Vec<String> {
    let mut a = vec!["-device".to_string(), "virtio-serial-pci,id=vser0".into()];
    for (id, path, name) in ports {
        a.extend(["-chardev".into(), format!("socket,id={id},path={},server=on,wait=off", path.display()), "-device".into(), format!("virtserialport,bus=vser0.0,chardev={id},name={name}")]);
    }
    a
}

/// QEMU arguments for a second QMP monitor at RUN/lb-qmp.sock, for
/// lifeboat, while the test keeps the first.
pub fn lifeboat_qmp_args(run: &Path) -> Vec<String> {
    vec!["-chardev".into(), format!("socket,id=lbqmp,path={}/lb-qmp.sock,server=on,wait=off", run.display()), "-mon".into(), "chardev=lbqmp,mode=control".into()]
}

pub fn qemu_img(args: &[&str]) -> std::process::Output {
    Command::new("qemu-img").args(args).output().expect("run qemu-img")
}

/// Copies a (paused, hence flushed) guest disk of format `fmt` as raw.
pub fn snapshot_disk(disk: &Path, fmt: &str, to: &Path) {
    let o = qemu_img(&["convert", "-U", "-f", fmt, "-O", "raw", disk.to_str().unwrap(), to.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `qemu-img compare` of `a` (an image of format `fa`, or an nbd:// URI)
/// with the raw image `b`: whether they are equal, and what it said.
pub fn identical(a: impl AsRef<std::ffi::OsStr>, fa: &str, b: &Path) -> (bool, String) {
    let o = Command::new("qemu-img").args(["compare", "-U", "-f", fa, "-F", "raw"]).arg(a).arg(b).output().expect("run qemu-img");
    (o.status.code() == Some(0), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// Sends a command to the guest's control port and checks the answer.
pub fn control(ctl: &mut Lines, cmd: &str, want: &str, timeout: Duration) -> String {
    ctl.send(cmd);
    let l = ctl.line(timeout).unwrap_or_else(|| panic!("no answer to {cmd:?}"));
    assert!(l.starts_with(want), "{cmd:?} answered {l:?}");
    l
}

/// A guestless QEMU (-S, never booted) on `disk` with the tiny guest's
/// hardware: its backup is the pristine disk.
pub fn back_up_paused(ds: &Ds, disk: &Path, name: &str, dir: &Path) -> String {
    back_up_paused_with(ds, disk, name, dir, "256", "52:54:00:12:34:56")
}

pub fn back_up_paused_with(ds: &Ds, disk: &Path, name: &str, dir: &Path, mem: &str, mac: &str) -> String {
    back_up_paused_as(ds, disk, name, dir, &PausedHardware { mem, mac, drive: "if=virtio", nic: "virtio-net-pci" })
}

/// The devices a guestless QEMU is backed up with.
pub struct PausedHardware<'a> {
    pub mem: &'a str,
    pub mac: &'a str,
    /// `-drive` options after `file=...,format=raw,` (`if=virtio`,
    /// `if=ide,index=0,media=disk`).
    pub drive: &'a str,
    /// The NIC's `-device` model (`virtio-net-pci`, `e1000`).
    pub nic: &'a str,
}

/// Backs up `disk` (raw) attached to a paused `pc` QEMU with `hw`;
/// returns the snapshot id.
pub fn back_up_paused_as(ds: &Ds, disk: &Path, name: &str, dir: &Path, hw: &PausedHardware) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let qmp = dir.join("qmp.sock");
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-S", "-display", "none", "-nodefaults", "-machine", "pc", "-m", hw.mem, "-name", name]);
    c.arg("-drive").arg(format!("file={},format=raw,{}", disk.display(), hw.drive));
    c.args(["-netdev", "hubport,id=n0,hubid=0", "-device"]).arg(format!("{},netdev=n0,mac={}", hw.nic, hw.mac));
    c.arg("-qmp").arg(format!("unix:{},server=on,wait=off", qmp.display()));
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    assert!(wait_until(Duration::from_secs(30), || std::os::unix::net::UnixStream::connect(&qmp).is_ok()));
    let mut b = lb_cmd();
    b.args(["vm", "backup", "--json", "--datastore"]).arg(&ds.path).arg("--qmp").arg(&qmp);
    let o = run_cmd(b);
    let _ = child.kill();
    let _ = child.wait();
    o.expect_ok();
    o.json()["snapshot_id"].as_str().unwrap().to_string()
}
