//! A guestfish session in remote-control mode: one libguestfs appliance
//! (started once, ~20 s under TCG) answering many small commands, so the
//! repair logic stays in Rust and every command's output and failure is
//! seen separately.
//!
//! guestfish stops its server on the first failing command, so callers
//! test with `exists`/`is-file` instead of letting a read fail.

use std::path::Path;
use std::process::{Command, Stdio};

/// A running guestfish server (`guestfish --listen`) with the guest's
/// disks added and the appliance booted. Dropping it abandons the
/// session without a sync; `close` ends it cleanly.
pub struct Guestfish {
    /// The server's process id (`GUESTFISH_PID`), used by `--remote`.
    pid: u32,
    /// Scratch directory for uploads.
    tmp: std::path::PathBuf,
}

/// A guestfish command that failed or could not be run (see the module
/// docs on what a failing command does to the server).
#[derive(Debug, thiserror::Error)]
#[error("guestfish {cmd}: {msg}")]
pub struct GfError {
    /// The command and its arguments (`--listen` for the start).
    pub cmd: String,
    /// The error: the server log's last line mentioning `error`, else
    /// guestfish's stderr, or why it could not run.
    pub msg: String,
}

impl Guestfish {
    /// Starts the server with `drives` (paths or NBD URIs of `format`)
    /// and boots the appliance. `tcg`: the appliance runs under TCG
    /// (where /dev/kvm exists but cannot boot a stock kernel).
    pub fn launch(drives: &[String], format: &str, tcg: bool, tmp: &Path) -> Result<Guestfish, GfError> {
        let mut c = Command::new("guestfish");
        c.arg("--listen").arg(format!("--format={format}"));
        for d in drives {
            c.arg("-a").arg(d);
        }
        env(&mut c, tcg);
        // The server it forks keeps stderr open for its whole life: a
        // pipe there would never reach EOF. Its messages go to a file.
        let log = std::fs::File::create(tmp.join("guestfish.log")).map_err(|e| GfError { cmd: "--listen".into(), msg: format!("{}: {e}", tmp.join("guestfish.log").display()) })?;
        c.stdin(Stdio::null()).stderr(log);
        let o = c.output().map_err(|e| GfError { cmd: "--listen".into(), msg: format!("cannot run guestfish (install libguestfs-tools): {e}") })?;
        let out = String::from_utf8_lossy(&o.stdout);
        let pid = out.split(|c: char| c == ';' || c.is_whitespace()).find_map(|w| w.strip_prefix("GUESTFISH_PID=")).and_then(|p| p.parse().ok()).ok_or_else(|| GfError {
            cmd: "--listen".into(),
            msg: format!("no GUESTFISH_PID in its output: {} {}", out.trim(), std::fs::read_to_string(tmp.join("guestfish.log")).unwrap_or_default().trim()),
        })?;
        let g = Guestfish { pid, tmp: tmp.to_path_buf() };
        g.run(&["run"])?;
        Ok(g)
    }

    /// One command; its standard output.
    pub fn run(&self, args: &[&str]) -> Result<String, GfError> {
        let mut c = Command::new("guestfish");
        c.arg(format!("--remote={}", self.pid)).arg("--").args(args).stdin(Stdio::null());
        let o = c.output().map_err(|e| GfError { cmd: args.join(" "), msg: format!("cannot run guestfish: {e}") })?;
        if !o.status.success() {
            // The server prints the command's error, into its log.
            let log = std::fs::read_to_string(self.tmp.join("guestfish.log")).unwrap_or_default();
            let err = String::from_utf8_lossy(&o.stderr);
            let msg = log.lines().rev().find(|l| l.contains("error")).map(str::to_string).unwrap_or_else(|| err.trim().to_string());
            return Err(GfError { cmd: args.join(" "), msg });
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// One command; its output's non-empty lines.
    pub fn lines(&self, args: &[&str]) -> Result<Vec<String>, GfError> {
        Ok(self.run(args)?.lines().map(str::to_string).filter(|l| !l.is_empty()).collect())
    }

    /// One command that prints `true` or `false` (`is-file`, `is-dir`,
    /// `exists`); anything else counts as false.
    pub fn is_true(&self, args: &[&str]) -> Result<bool, GfError> {
        Ok(self.run(args)?.trim() == "true")
    }

    /// Whether guest path `p` is a regular file (`is-file`).
    pub fn is_file(&self, p: &str) -> Result<bool, GfError> {
        self.is_true(&["is-file", p])
    }

    /// A guest file's text, or None when there is no such file.
    pub fn read(&self, p: &str) -> Result<Option<String>, GfError> {
        if !self.is_file(p)? {
            return Ok(None);
        }
        let local = self.tmp.join("download");
        let _ = std::fs::remove_file(&local);
        self.run(&["download", p, &local.display().to_string()])?;
        let b = std::fs::read(&local).map_err(|e| GfError { cmd: format!("download {p}"), msg: e.to_string() })?;
        Ok(Some(String::from_utf8_lossy(&b).into_owned()))
    }

    /// Replaces a guest file's content (mode and owner stay).
    pub fn write(&self, p: &str, text: &str) -> Result<(), GfError> {
        let local = self.tmp.join("upload");
        std::fs::write(&local, text).map_err(|e| GfError { cmd: format!("upload {p}"), msg: e.to_string() })?;
        self.run(&["upload", &local.display().to_string(), p])?;
        Ok(())
    }

    /// Paths matching a glob in the guest.
    pub fn glob(&self, pattern: &str) -> Result<Vec<String>, GfError> {
        self.lines(&["glob-expand", pattern])
    }

    /// Unmounts, syncs and stops the appliance (changes are on the
    /// disks only after this).
    pub fn close(self) -> Result<(), GfError> {
        let r = self.run(&["umount-all"]).and_then(|_| self.run(&["sync"])).and_then(|_| self.run(&["exit"]));
        // The server exits after `exit`; wait so its QEMU has let go of
        // the disks before anyone reads them.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::path::Path::new(&format!("/proc/{}", self.pid)).exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::mem::forget(self);
        r.map(|_| ())
    }
}

impl Drop for Guestfish {
    fn drop(&mut self) {
        // An abandoned session: no sync of a half-repaired guest.
        let _ = Command::new("guestfish").arg(format!("--remote={}", self.pid)).args(["--", "exit"]).stderr(Stdio::null()).status();
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
    }
}

/// libguestfs' backend settings: its own QEMU, and TCG when asked.
fn env(c: &mut Command, tcg: bool) {
    c.env("LIBGUESTFS_BACKEND", "direct");
    if tcg {
        c.env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg");
    }
}
