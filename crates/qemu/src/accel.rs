//! Which accelerator QEMU runs a restored VM with.
//!
//! `auto` means what an admin expects: KVM where it works, TCG (software
//! emulation) where it does not, and a sentence saying which and why.
//! "Works" cannot be read off `/dev/kvm`: on some hosts (nested
//! virtualisation without the CPU features a stock kernel needs) the
//! device opens fine and every guest hangs. So the probe boots the host's
//! own kernel under KVM with no root file system and waits for its panic
//! message: a kernel that got that far ran long mode, paging and
//! interrupts. The answer is kept in `/run/lifeboat/` until the next boot.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the admin asked for (`--accel`, `qemu_accel` in lifeboat.toml).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when a probe guest boots under it, else TCG.
    #[default]
    Auto,
    /// KVM, without probing: QEMU fails to start if `/dev/kvm` is unusable.
    Kvm,
    /// TCG software emulation: works everywhere, much slower.
    Tcg,
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Accel, String> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            o => Err(format!("accelerator {o:?}: expected auto, kvm or tcg")),
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The accelerator chosen, and why, in words for the admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccelChoice {
    /// `Kvm` or `Tcg`, never `Auto`.
    pub accel: Accel,
    /// One sentence for logs and the admin: what was chosen and why (e.g.
    /// why KVM was not usable).
    pub reason: String,
}

impl AccelChoice {
    /// The `-accel` argument's value.
    pub fn qemu_arg(&self) -> &'static str {
        match self.accel {
            Accel::Kvm => "kvm",
            _ => "tcg",
        }
    }
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const CACHE: &str = "/run/lifeboat/accel-probe";

/// Resolves `auto`; an explicit choice is taken as it is.
pub fn choose(requested: Accel) -> AccelChoice {
    match requested {
        Accel::Kvm => AccelChoice { accel: Accel::Kvm, reason: "KVM, as asked (--accel kvm / qemu_accel)".into() },
        Accel::Tcg => AccelChoice { accel: Accel::Tcg, reason: "TCG software emulation, as asked (--accel tcg / qemu_accel)".into() },
        Accel::Auto => probe_cached(Path::new(CACHE)),
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

fn probe_cached(cache: &Path) -> AccelChoice {
    let boot = boot_id();
    if let Ok(text) = std::fs::read_to_string(cache) {
        let mut lines = text.lines();
        if let (Some(b), Some(a), Some(reason)) = (lines.next(), lines.next(), lines.next()) {
            if b == boot && !boot.is_empty() {
                if let Ok(accel @ (Accel::Kvm | Accel::Tcg)) = a.parse() {
                    return AccelChoice { accel, reason: format!("{reason} (probed earlier since this boot)") };
                }
            }
        }
    }
    let choice = probe(&kvm_device(), find_kernel().as_deref());
    // Best effort: without the cache the next start probes again.
    if let Some(dir) = cache.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(cache, format!("{boot}\n{}\n{}\n", choice.accel, choice.reason));
    choice
}

fn kvm_device() -> PathBuf {
    PathBuf::from("/dev/kvm")
}

/// The host's kernel, the one it runs first.
fn find_kernel() -> Option<PathBuf> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let own = PathBuf::from(format!("/boot/vmlinuz-{}", release.trim()));
    if own.is_file() {
        return Some(own);
    }
    let mut all: Vec<PathBuf> = std::fs::read_dir("/boot").ok()?.flatten().map(|e| e.path()).filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))).collect();
    all.sort();
    all.pop()
}

/// Decides between KVM and TCG by booting `kernel` under KVM.
pub(crate) fn probe(kvm: &Path, kernel: Option<&Path>) -> AccelChoice {
    let tcg = |reason: String| AccelChoice { accel: Accel::Tcg, reason };
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(kvm) {
        return tcg(format!("TCG software emulation: {} is not usable ({e})", kvm.display()));
    }
    let Some(kernel) = kernel else {
        return tcg(format!("TCG software emulation: {} exists, but there is no kernel in /boot to test it with; `--accel kvm` forces KVM", kvm.display()));
    };
    match boot_to_panic(kernel) {
        Ok(d) => AccelChoice { accel: Accel::Kvm, reason: format!("KVM: a test kernel booted under it in {:.1} s", d.as_secs_f64()) },
        Err(why) => tcg(format!("TCG software emulation: {} exists but {why}; `--accel kvm` forces KVM", kvm.display())),
    }
}

fn boot_to_panic(kernel: &Path) -> Result<Duration, String> {
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-machine", "pc", "-m", "256", "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("QEMU could not be started to test it ({e})"))?;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > PROBE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("a test kernel did not boot under KVM within {} s", PROBE_TIMEOUT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for the KVM test failed ({e})")),
        }
    }
    let mut out = String::new();
    let mut err = String::new();
    let _ = child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
    if out.contains("Kernel panic") {
        Ok(start.elapsed())
    } else {
        let why = err.lines().find(|l| !l.contains("warning")).unwrap_or("").trim().to_string();
        Err(format!("a test kernel did not boot under KVM ({})", if why.is_empty() { "no output" } else { &why }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for a in [Accel::Auto, Accel::Kvm, Accel::Tcg] {
            assert_eq!(a.to_string().parse::<Accel>().unwrap(), a);
        }
        assert!("kvm:tcg".parse::<Accel>().unwrap_err().contains("auto, kvm or tcg"));
    }

    #[test]
    fn explicit_choices_are_kept() {
        assert_eq!(choose(Accel::Tcg).accel, Accel::Tcg);
        assert_eq!(choose(Accel::Kvm).qemu_arg(), "kvm");
    }

    #[test]
    fn no_device_or_no_kernel_means_tcg_with_the_reason() {
        let c = probe(Path::new("/nonexistent/kvm"), None);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("/nonexistent/kvm"), "{}", c.reason);
        // /dev/null opens read-write like a usable device would.
        let c = probe(Path::new("/dev/null"), None);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("no kernel"), "{}", c.reason);
    }

    #[test]
    fn the_answer_is_cached_for_this_boot_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("probe");
        std::fs::write(&cache, format!("{}\nkvm\nKVM: a test kernel booted\n", boot_id())).unwrap();
        let c = probe_cached(&cache);
        assert_eq!(c.accel, Accel::Kvm);
        assert!(c.reason.contains("probed earlier"), "{}", c.reason);
        // Another boot's answer is not trusted (a real probe runs; it may
        // pick either, but the cache is rewritten for this boot).
        std::fs::write(&cache, "another-boot\nkvm\nold\n").unwrap();
        let _ = probe_cached(&cache);
        assert!(std::fs::read_to_string(&cache).unwrap().starts_with(&boot_id()));
    }
}
