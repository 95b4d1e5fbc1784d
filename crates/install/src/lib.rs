//! Installing the live appliance (the ISO's system) to a disk, with no UI:
//! the console's "Install to disk" screen calls `install` (which runs
//! `check` first) and shows the `Progress` it reports.
//!
//! The installed disk boots both ways without any NVRAM entry: a GPT with
//! a 1 MiB BIOS-boot partition (GRUB i386-pc core image), an EFI system
//! partition (GRUB x86_64-efi at the removable path EFI/BOOT/BOOTX64.EFI)
//! and an ext4 root. The root is a copy of the live system's pristine
//! squashfs (not of the running overlay, so nothing done in the live
//! session leaks into it and its first boot runs the setup wizard), the
//! kernel and initrd come from the live medium, fstab names the file
//! systems by UUID.
//!
//! Every precondition is checked before the disk is touched (the disk is
//! read again: same size, device number, model and serial as listed; not
//! the system disk or the live medium; nothing on it in use; the tools and
//! GRUB's modules are there). A failure after that unmounts what was
//! mounted and wipes the new partition table again, so the disk never
//! looks like a half-installed appliance, and the error names the step.
#![warn(missing_docs)]

use lifeboat_disks::Disk;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's live-boot mounts the squashfs (the pristine root file
/// system the install copies).
pub const LIVE_ROOTFS: &str = "/run/live/rootfs/filesystem.squashfs";
/// Where Debian's live-boot mounts the live medium (the ISO), which holds
/// `live/vmlinuz` and `live/initrd.img`.
pub const LIVE_MEDIUM: &str = "/run/live/medium";

/// The smallest disk the appliance is installed to, in bytes (2 GiB).
pub const MIN_DISK_SIZE: u64 = 2 << 30;

/// GPT partition types: BIOS boot, EFI system, Linux root (x86-64).
const BIOS_BOOT_GUID: &str = "21686148-6449-6E6F-744E-656564454649";
const ESP_GUID: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const LINUX_ROOT_X86_64_GUID: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// The installed root's ext4 label, also its GPT partition name.
pub const ROOT_LABEL: &str = "lifeboat-root";
/// The EFI system partition's FAT volume label (at most 11 characters,
/// upper case).
pub const ESP_LABEL: &str = "LIFEBOATEFI";

/// Kernel arguments of a live boot that must not reach the installed
/// system.
const LIVE_ONLY_ARGS: &[&str] = &["BOOT_IMAGE=", "initrd=", "boot=", "components", "live-media", "toram", "findiso=", "root="];

/// The live system to copy from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveSource {
    /// The pristine root file system (the mounted squashfs).
    pub rootfs: PathBuf,
    /// The mounted live medium: its disk is never an install target.
    pub medium: PathBuf,
    /// The kernel image to install (`live/vmlinuz` on the medium); it is
    /// copied to `/boot/vmlinuz-<version>`, the version being the copied
    /// root's last `/lib/modules` entry in name order.
    pub kernel: PathBuf,
    /// The initrd to install (`live/initrd.img` on the medium), copied to
    /// `/boot/initrd.img-<version>`.
    pub initrd: PathBuf,
}

impl LiveSource {
    /// The live system this process runs in, if it is one (live-boot's
    /// mounts are there and the medium holds a kernel).
    pub fn detect() -> Option<LiveSource> {
        let src = LiveSource::at(Path::new(LIVE_ROOTFS), Path::new(LIVE_MEDIUM));
        (src.rootfs.join("usr").is_dir() && src.kernel.is_file() && src.initrd.is_file()).then_some(src)
    }

    /// A live system laid out like the ISO: `live/vmlinuz` and
    /// `live/initrd.img` on the medium.
    pub fn at(rootfs: &Path, medium: &Path) -> LiveSource {
        LiveSource { rootfs: rootfs.into(), medium: medium.into(), kernel: medium.join("live/vmlinuz"), initrd: medium.join("live/initrd.img") }
    }
}

/// The kernel command line for the installed system: the live one
/// without live-boot's arguments (console, quiet, ... are kept).
pub fn installed_kernel_args(live_cmdline: &str) -> String {
    live_cmdline
        .split_whitespace()
        .filter(|a| !LIVE_ONLY_ARGS.iter().any(|l| if l.ends_with('=') { a.starts_with(l) } else { a == l || a.starts_with(&format!("{l}=")) }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What to install where.
#[derive(Clone, Debug)]
pub struct InstallRequest {
    /// The target disk as the user saw it when they chose it.
    pub disk: Disk,
    /// The live system copied to it.
    pub source: LiveSource,
    /// The installed system's kernel arguments (besides `root=`, which
    /// the GRUB menu adds), usually `installed_kernel_args` of
    /// /proc/cmdline.
    pub kernel_args: String,
    /// Directories whose disks are never targets (the live medium is
    /// added by `check`).
    pub system_paths: Vec<PathBuf>,
}

/// The install's steps, in order. An `InstallError` names the step that
/// failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Reading the disk again and checking it, the tools, GRUB's modules
    /// and the live source; nothing is written.
    Check,
    /// wipefs, then sfdisk: a GPT with a 1 MiB BIOS boot partition, a
    /// 128 MiB EFI system partition and the root on the rest.
    Partition,
    /// mkfs.vfat on the ESP, mkfs.ext4 on the root (fresh UUIDs, labels
    /// `ESP_LABEL` and `ROOT_LABEL`), both mounted under /run.
    Filesystems,
    /// rsync of the live root file system to the new root (most of the
    /// time and of the percentage).
    Copy,
    /// Kernel and initrd into /boot, /etc/fstab, /boot/grub/grub.cfg.
    BootFiles,
    /// `grub-install --target=i386-pc` to the disk (BIOS boot).
    GrubBios,
    /// `grub-install --target=x86_64-efi --removable` to the ESP.
    GrubUefi,
    /// sync and unmount.
    Finish,
}

impl Step {
    /// What the step does, as a phrase that follows "while" (the
    /// `Display` text too): `copying the system`.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Check => "checking the disk and the tools",
            Step::Partition => "partitioning (GPT: BIOS boot, EFI system, root)",
            Step::Filesystems => "creating the file systems",
            Step::Copy => "copying the system",
            Step::BootFiles => "writing kernel, initrd, fstab and the GRUB menu",
            Step::GrubBios => "installing GRUB for BIOS (i386-pc)",
            Step::GrubUefi => "installing GRUB for UEFI (x86_64-efi, EFI/BOOT/BOOTX64.EFI)",
            Step::Finish => "flushing and unmounting",
        }
    }

    /// Overall percent when the step starts (the copy is most of it).
    fn start_percent(self) -> u8 {
        match self {
            Step::Check => 0,
            Step::Partition => 2,
            Step::Filesystems => 5,
            Step::Copy => 10,
            Step::BootFiles => 85,
            Step::GrubBios => 88,
            Step::GrubUefi => 93,
            Step::Finish => 97,
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Where the install is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The step running now.
    pub step: Step,
    /// 0-100 over the whole install.
    pub percent: u8,
    /// What the step works on or how far it is (a device, `1.2 GiB
    /// copied`, `done`); may be empty.
    pub detail: String,
}

/// What was installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// The disk installed to (device path).
    pub disk: PathBuf,
    /// UUID of the new ext4 root, as in fstab and grub.cfg.
    pub root_uuid: String,
    /// Volume id of the EFI system partition, `XXXX-XXXX` (the form blkid
    /// and fstab use for FAT).
    pub esp_uuid: String,
    /// The installed kernel's version (its /lib/modules directory name).
    pub kernel_version: String,
}

/// A failed install: the step, what went wrong, and what was done to the
/// disk afterwards.
#[derive(Debug, thiserror::Error)]
#[error("installing to {disk} failed while {step}: {detail}. {aftermath}")]
pub struct InstallError {
    /// The target disk (device path).
    pub disk: PathBuf,
    /// The step that failed; `Step::Check` means the disk was not touched.
    pub step: Step,
    /// What went wrong (the failing command and the end of its output).
    pub detail: String,
    /// What the disk holds now, for the user: nothing written, wiped again
    /// (no partition table, no file system), or a partial install to wipe
    /// by hand when the cleanup failed too.
    pub aftermath: String,
}

const UNTOUCHED: &str = "Nothing was written to the disk.";

/// Checks the request against the disk as it is now; touches nothing.
/// Returns the disk as read now.
pub fn check(req: &InstallRequest) -> Result<Disk, InstallError> {
    let fail = |detail: String| InstallError { disk: req.disk.path.clone(), step: Step::Check, detail, aftermath: UNTOUCHED.into() };
    let mut system_paths = req.system_paths.clone();
    system_paths.push(req.source.medium.clone());
    let now = lifeboat_disks::find_disk(&req.disk.path, &system_paths).map_err(|e| fail(e.to_string()))?;
    if now.size != req.disk.size || now.devno != req.disk.devno || now.model != req.disk.model || now.serial != req.disk.serial {
        return Err(fail(format!(
            "the disk changed since it was listed (it was {} {}, now {} {}): list the disks again",
            lifeboat_disks::human_size(req.disk.size),
            req.disk.model.as_deref().unwrap_or("unknown model"),
            lifeboat_disks::human_size(now.size),
            now.model.as_deref().unwrap_or("unknown model")
        )));
    }
    if let Some(why) = now.format_refusal() {
        return Err(fail(why));
    }
    if now.size < MIN_DISK_SIZE {
        return Err(fail(format!("{} holds {}, the appliance needs at least {}", now.path.display(), lifeboat_disks::human_size(now.size), lifeboat_disks::human_size(MIN_DISK_SIZE))));
    }
    for tool in ["wipefs", "sfdisk", "partx", "mkfs.ext4", "mkfs.vfat", "rsync", "grub-install", "mount", "umount"] {
        if which(tool).is_none() {
            return Err(fail(format!("{tool} is not installed in this live system")));
        }
    }
    for dir in ["/usr/lib/grub/i386-pc", "/usr/lib/grub/x86_64-efi"] {
        if !Path::new(dir).is_dir() {
            return Err(fail(format!("{dir} is missing (GRUB's modules: grub-pc-bin, grub-efi-amd64-bin)")));
        }
    }
    for (what, p) in [("live root file system", &req.source.rootfs), ("kernel", &req.source.kernel), ("initrd", &req.source.initrd)] {
        if !p.exists() {
            return Err(fail(format!("the {what} {} is missing", p.display())));
        }
    }
    Ok(now)
}

/// Installs the live system to the disk, reporting progress (on the
/// calling thread, at each step and at most 4 times a second while
/// copying). Runs `check` first: a failed check leaves the disk
/// untouched. A later failure unmounts and wipes the disk again, leaving
/// it without a partition table when that works; `InstallError::aftermath`
/// says which. Needs root (mkfs, mount, grub-install).
pub fn install(req: &InstallRequest, progress: &mut dyn FnMut(Progress)) -> Result<Installed, InstallError> {
    progress(Progress { step: Step::Check, percent: 0, detail: req.disk.path.display().to_string() });
    let disk = check(req)?;
    let mut job = Job { disk: &disk, req, mounted: Vec::new(), work: PathBuf::from(format!("/run/lifeboat-install.{}", std::process::id())), step: Step::Partition };
    match job.run(progress) {
        Ok(done) => Ok(done),
        Err(detail) => {
            let aftermath = job.undo();
            Err(InstallError { disk: disk.path.clone(), step: job.step, detail, aftermath })
        }
    }
}

struct Job<'a> {
    disk: &'a Disk,
    req: &'a InstallRequest,
    /// Mount points to unmount, in mount order.
    mounted: Vec<PathBuf>,
    work: PathBuf,
    step: Step,
}

type StepResult<T> = Result<T, String>;

impl Job<'_> {
    fn begin(&mut self, step: Step, progress: &mut dyn FnMut(Progress), detail: String) {
        self.step = step;
        progress(Progress { step, percent: step.start_percent(), detail });
    }

    fn run(&mut self, progress: &mut dyn FnMut(Progress)) -> StepResult<Installed> {
        let disk = &self.disk.path;
        self.begin(Step::Partition, progress, disk.display().to_string());
        run(Command::new("wipefs").args(["--all", "--quiet"]).arg(disk))?;
        let script = format!(
            "label: gpt\n\
             start=2048, size=2048, type={BIOS_BOOT_GUID}, name=bios-boot\n\
             size=128MiB, type={ESP_GUID}, name=efi\n\
             type={LINUX_ROOT_X86_64_GUID}, name={ROOT_LABEL}\n"
        );
        run_with_input(Command::new("sfdisk").args(["--quiet", "--wipe", "always", "--wipe-partitions", "always"]).arg(disk), &script)?;
        let parts = partition_nodes(self.disk, 3)?;
        let (esp, root) = (&parts[1], &parts[2]);

        self.begin(Step::Filesystems, progress, format!("vfat on {}, ext4 on {}", esp.display(), root.display()));
        let root_uuid = random_uuid();
        let esp_id = random_hex(4);
        let esp_uuid = format!("{}-{}", &esp_id[..4], &esp_id[4..]).to_ascii_uppercase();
        run(Command::new("mkfs.vfat").args(["-n", ESP_LABEL, "-i", &esp_id]).arg(esp))?;
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", ROOT_LABEL, "-U", &root_uuid]).arg(root))?;
        let target = self.work.join("root");
        std::fs::create_dir_all(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
        self.mount(root, &target, "ext4")?;
        let efi_dir = target.join("boot/efi");
        std::fs::create_dir_all(&efi_dir).map_err(|e| format!("cannot create {}: {e}", efi_dir.display()))?;
        self.mount(esp, &efi_dir, "vfat")?;

        self.begin(Step::Copy, progress, format!("{} to {}", self.req.source.rootfs.display(), root.display()));
        self.copy(&target, progress)?;

        self.begin(Step::BootFiles, progress, String::new());
        let kver = kernel_version(&target)?;
        let boot = target.join("boot");
        copy_file(&self.req.source.kernel, &boot.join(format!("vmlinuz-{kver}")))?;
        copy_file(&self.req.source.initrd, &boot.join(format!("initrd.img-{kver}")))?;
        write_file(&target.join("etc/fstab"), &fstab(&root_uuid, &esp_uuid))?;
        write_file(&boot.join("grub/grub.cfg"), &grub_cfg(&root_uuid, &kver, &self.req.kernel_args))?;

        self.begin(Step::GrubBios, progress, disk.display().to_string());
        run(Command::new("grub-install").args(["--target=i386-pc", "--modules=part_gpt ext2", "--no-floppy"]).arg(format!("--boot-directory={}", boot.display())).arg(disk))?;

        self.begin(Step::GrubUefi, progress, esp.display().to_string());
        run(Command::new("grub-install")
            .args(["--target=x86_64-efi", "--removable", "--no-nvram", "--modules=part_gpt ext2 fat"])
            .arg(format!("--efi-directory={}", efi_dir.display()))
            .arg(format!("--boot-directory={}", boot.display())))?;
        if !efi_dir.join("EFI/BOOT/BOOTX64.EFI").is_file() {
            return Err(format!("grub-install wrote no {}", efi_dir.join("EFI/BOOT/BOOTX64.EFI").display()));
        }

        self.begin(Step::Finish, progress, String::new());
        unsafe { libc::sync() };
        // The install is complete and synced: a mount that will not let go
        // (a shell left in it) is detached lazily, never a reason to undo
        // (which would wipe the disk).
        while let Some(mp) = self.mounted.pop() {
            if let Err(e) = run(Command::new("umount").arg(&mp)) {
                tracing::warn!("unmounting {}: {e}; detaching it lazily", mp.display());
                let _ = run(Command::new("umount").arg("--lazy").arg(&mp));
            }
        }
        let _ = std::fs::remove_dir(&target);
        let _ = std::fs::remove_dir(&self.work);
        progress(Progress { step: Step::Finish, percent: 100, detail: "done".into() });
        Ok(Installed { disk: disk.clone(), root_uuid, esp_uuid, kernel_version: kver })
    }

    fn mount(&mut self, dev: &Path, at: &Path, fstype: &str) -> StepResult<()> {
        run(Command::new("mount").args(["-t", fstype]).arg(dev).arg(at))?;
        self.mounted.push(at.to_path_buf());
        Ok(())
    }

    /// rsync of the pristine root, its --info=progress2 percent mapped
    /// onto the copy's share of the whole.
    fn copy(&self, target: &Path, progress: &mut dyn FnMut(Progress)) -> StepResult<()> {
        let mut src = self.req.source.rootfs.clone().into_os_string();
        src.push("/");
        let mut dst = target.to_path_buf().into_os_string();
        dst.push("/");
        let mut child = Command::new("rsync")
            .args(["-aHAX", "--numeric-ids", "--no-inc-recursive", "--info=progress2", "--no-human-readable"])
            .arg(&src)
            .arg(&dst)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run rsync: {e}"))?;
        let mut stderr = child.stderr.take().expect("piped");
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut out = child.stdout.take().expect("piped");
        let (from, to) = (Step::Copy.start_percent() as u32, Step::BootFiles.start_percent() as u32);
        let mut line = Vec::new();
        let mut buf = [0u8; 4096];
        let mut last = Instant::now() - Duration::from_secs(1);
        loop {
            let n = match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &b in &buf[..n] {
                if b != b'\r' && b != b'\n' {
                    line.push(b);
                    continue;
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                line.clear();
                if let Some((bytes, pct)) = parse_rsync_progress(&text) {
                    if last.elapsed() >= Duration::from_millis(250) || pct == 100 {
                        last = Instant::now();
                        let overall = from + (to - from) * pct as u32 / 100;
                        progress(Progress { step: Step::Copy, percent: overall as u8, detail: format!("{} copied", lifeboat_disks::human_size(bytes)) });
                    }
                }
            }
        }
        let status = child.wait().map_err(|e| format!("rsync: {e}"))?;
        let err = err_reader.join().unwrap_or_default();
        if !status.success() {
            return Err(format!("rsync failed ({status}): {}", last_lines(&err, 3)));
        }
        Ok(())
    }

    /// After a failure: unmount, wipe the partitions' and the disk's
    /// signatures. Returns what the user is told about the disk.
    fn undo(&mut self) -> String {
        let mut problems = Vec::new();
        while let Some(mp) = self.mounted.pop() {
            if run(Command::new("umount").arg(&mp)).is_err() && run(Command::new("umount").arg("-l").arg(&mp)).is_err() {
                problems.push(format!("{} could not be unmounted", mp.display()));
            }
        }
        let _ = std::fs::remove_dir(self.work.join("root"));
        let _ = std::fs::remove_dir(&self.work);
        let disk = &self.disk.path;
        for p in partition_paths(self.disk, 3) {
            if p.exists() {
                let _ = run(Command::new("wipefs").args(["--all", "--quiet"]).arg(&p));
            }
        }
        match run(Command::new("wipefs").args(["--all", "--quiet"]).arg(disk)) {
            Ok(()) => {
                let _ = Command::new("partx").arg("--update").arg(disk).output();
            }
            Err(e) => problems.push(format!("wiping {} again failed ({e})", disk.display())),
        }
        if problems.is_empty() {
            format!("{} was wiped again: it holds no partition table and no file system now", disk.display())
        } else {
            format!("{} may hold a partial install: {}. Wipe it before using it", disk.display(), problems.join("; "))
        }
    }
}

/// `(bytes, percent)` from an rsync --info=progress2 line like
/// `  123456789  42%   12.34MB/s    0:00:10 (xfr#12, to-chk=3/40)`.
pub(crate) fn parse_rsync_progress(line: &str) -> Option<(u64, u8)> {
    let mut f = line.split_whitespace();
    let bytes = f.next()?.replace(',', "").parse().ok()?;
    let pct = f.next()?.strip_suffix('%')?.parse::<u8>().ok()?;
    Some((bytes, pct.min(100)))
}

/// The installed system's /etc/fstab: the root and the ESP (`nofail`,
/// private to root) by UUID.
pub(crate) fn fstab(root_uuid: &str, esp_uuid: &str) -> String {
    format!(
        "# Written by the Lifeboat installer.\n\
         UUID={root_uuid} / ext4 errors=remount-ro 0 1\n\
         UUID={esp_uuid} /boot/efi vfat umask=0077,nofail 0 2\n"
    )
}

/// The GRUB configuration both the BIOS and the UEFI GRUB read: serial
/// and screen, the root by UUID, and no menu: a menu's countdown stops at
/// any key, and a key typed (or line noise) on the serial console while
/// the firmware starts would leave the appliance waiting at the menu.
pub(crate) fn grub_cfg(root_uuid: &str, kver: &str, kernel_args: &str) -> String {
    format!(
        "# Written by the Lifeboat installer.\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         search --no-floppy --fs-uuid --set=root {root_uuid}\n\
         echo 'Booting Lifeboat'\n\
         linux /boot/vmlinuz-{kver} root=UUID={root_uuid} ro {kernel_args}\n\
         initrd /boot/initrd.img-{kver}\n\
         boot\n"
    )
}

/// The kernel version of the copied root: its last /lib/modules entry in
/// name order (not version order: `6.10` sorts before `6.9`).
fn kernel_version(root: &Path) -> StepResult<String> {
    let dir = root.join("lib/modules");
    let mut v: Vec<String> = std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v.pop().ok_or_else(|| format!("{} is empty: the live root has no kernel modules", dir.display()))
}

fn partition_paths(disk: &Disk, n: u32) -> Vec<PathBuf> {
    let sep = if disk.name.ends_with(|c: char| c.is_ascii_digit()) { "p" } else { "" };
    (1..=n).map(|i| PathBuf::from(format!("/dev/{}{sep}{i}", disk.name))).collect()
}

/// Makes the kernel see the new partitions and waits for their nodes
/// (`partx --add` covers loop devices, whose partition scan is off).
fn partition_nodes(disk: &Disk, n: u32) -> StepResult<Vec<PathBuf>> {
    let nodes = partition_paths(disk, n);
    let _ = Command::new("partx").arg("--update").arg(&disk.path).output();
    if !nodes.iter().all(|p| p.exists()) {
        let _ = Command::new("partx").arg("--add").arg(&disk.path).output();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if nodes.iter().all(|p| p.exists()) {
            return Ok(nodes);
        }
        if Instant::now() > deadline {
            let missing: Vec<String> = nodes.iter().filter(|p| !p.exists()).map(|p| p.display().to_string()).collect();
            return Err(format!("the partition devices {} did not appear", missing.join(", ")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn copy_file(from: &Path, to: &Path) -> StepResult<()> {
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    std::fs::copy(from, to).map(|_| ()).map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

fn write_file(path: &Path, text: &str) -> StepResult<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::getrandom(&mut b).expect("the kernel's random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A random (version 4) UUID.
fn random_uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("the kernel's random source");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from)).map(|d| d.join(tool)).find(|p| p.is_file())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

fn program_of(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

fn run(cmd: &mut Command) -> StepResult<()> {
    let program = program_of(cmd);
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        let mut msg = String::from_utf8_lossy(&out.stderr).into_owned();
        if msg.trim().is_empty() {
            msg = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        return Err(format!("{program} failed ({}): {}", out.status, last_lines(&msg, 3)));
    }
    Ok(())
}

fn run_with_input(cmd: &mut Command, input: &str) -> StepResult<()> {
    use std::io::Write;
    let program = program_of(cmd);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
    child.stdin.take().expect("piped").write_all(input.as_bytes()).map_err(|e| format!("cannot write to {program}: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} failed ({}): {}", out.status, last_lines(&String::from_utf8_lossy(&out.stderr), 3)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_arguments_are_dropped_from_the_installed_command_line() {
        let live = "BOOT_IMAGE=/live/vmlinuz initrd=/live/initrd.img boot=live components console=tty0 console=ttyS0,115200 quiet loglevel=3 net.ifnames=0";
        assert_eq!(installed_kernel_args(live), "console=tty0 console=ttyS0,115200 quiet loglevel=3 net.ifnames=0");
    }

    #[test]
    fn rsync_progress_lines_parse() {
        assert_eq!(parse_rsync_progress("    123456789  42%   12.34MB/s    0:00:10 (xfr#12, to-chk=3/40)"), Some((123456789, 42)));
        assert_eq!(parse_rsync_progress("  1,234  100%  1.00kB/s  0:00:00"), Some((1234, 100)));
        assert_eq!(parse_rsync_progress("sending incremental file list"), None);
    }

    #[test]
    fn uuids_are_version_4() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }

    #[test]
    fn grub_menu_and_fstab_name_the_root_by_uuid() {
        let g = grub_cfg("u-1", "6.1.0-1-amd64", "console=ttyS0");
        assert!(g.contains("search --no-floppy --fs-uuid --set=root u-1"));
        assert!(g.contains("linux /boot/vmlinuz-6.1.0-1-amd64 root=UUID=u-1 ro console=ttyS0"));
        assert!(fstab("u-1", "AB-CD").contains("UUID=u-1 / ext4"));
    }
}
