//! Loop devices over sparse files, as test disks: detached (and their
//! file systems unmounted) on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct LoopDisk {
    pub dev: PathBuf,
    pub file: PathBuf,
}

impl LoopDisk {
    /// A `size_mib` sparse file in `dir` attached to a free loop device.
    pub fn new(dir: &Path, name: &str, size_mib: u64) -> LoopDisk {
        let file = dir.join(format!("{name}.img"));
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(size_mib << 20).unwrap();
        let out = Command::new("losetup").args(["--find", "--show"]).arg(&file).output().expect("run losetup");
        assert!(out.status.success(), "losetup failed: {}", String::from_utf8_lossy(&out.stderr));
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        LoopDisk { dev, file }
    }

    /// `loop3` for /dev/loop3.
    pub fn name(&self) -> String {
        self.dev.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// The first partition's node (after `partx --add`).
    pub fn part1(&self) -> PathBuf {
        PathBuf::from(format!("{}p1", self.dev.display()))
    }

    /// Detaches the device now (a disk that disappears).
    pub fn detach(&self) {
        let st = Command::new("losetup").arg("-d").arg(&self.dev).status().unwrap();
        assert!(st.success(), "losetup -d {} failed", self.dev.display());
    }
}

/// Mount points whose source is `dev` or one of its partitions, deepest first.
pub fn mounts_of(dev: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let d = dev.display().to_string();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            let src = f.get(sep + 2)?;
            (*src == d || src.strip_prefix(d.as_str()).is_some_and(|r| r.starts_with('p'))).then(|| PathBuf::from(f[4].replace("\\040", " ")))
        })
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        // Only our own device: it still points at our file.
        let back = std::fs::read_to_string(format!("/sys/block/{}/loop/backing_file", self.name())).unwrap_or_default();
        if back.trim() != self.file.display().to_string() {
            return;
        }
        for mp in mounts_of(&self.dev) {
            let _ = Command::new("umount").arg(&mp).status();
        }
        let _ = Command::new("partx").arg("-d").arg(&self.dev).output();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}
