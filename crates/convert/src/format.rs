//! Disk image formats a restore writes, and `qemu-img convert` doing it.
//!
//! qemu-img reads the disk straight from lifeboat's NBD export of the
//! snapshot (holes arrive as holes), so no raw copy is ever made; it
//! writes every format here correctly and is what the tests check with.

use serde::Serialize;
use std::path::Path;
use std::process::Command;

/// A disk image format a restore writes (`--format`, `PLATFORM:FORMAT`).
/// Serialized, parsed and displayed as its lowercase name, which is also
/// the written file's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// A plain image, sparse where the disk has holes.
    Raw,
    /// QEMU's copy-on-write format (KVM and OpenStack's default).
    Qcow2,
    /// monolithicSparse, or streamOptimized inside an OVA.
    Vmdk,
    /// Dynamic (grows as written).
    Vhdx,
}

impl DiskFormat {
    /// Every format, in the order error messages list them.
    pub const ALL: [DiskFormat; 4] = [DiskFormat::Raw, DiskFormat::Qcow2, DiskFormat::Vmdk, DiskFormat::Vhdx];

    /// The format's name: qemu-img's `-O` value and the file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vhdx => "vhdx",
        }
    }

    /// `-O` and `-o` of `qemu-img convert`. `stream`: the VMDK goes into
    /// an OVA (streamOptimized: compressed grains, written in one pass).
    pub fn qemu_img_args(self, stream: bool) -> Vec<&'static str> {
        match self {
            DiskFormat::Raw => vec!["-O", "raw"],
            DiskFormat::Qcow2 => vec!["-O", "qcow2"],
            DiskFormat::Vmdk if stream => vec!["-O", "vmdk", "-o", "subformat=streamOptimized"],
            DiskFormat::Vmdk => vec!["-O", "vmdk", "-o", "subformat=monolithicSparse"],
            DiskFormat::Vhdx => vec!["-O", "vhdx", "-o", "subformat=dynamic"],
        }
    }
}

impl std::fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DiskFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<DiskFormat, String> {
        DiskFormat::ALL.into_iter().find(|f| f.as_str() == s).ok_or_else(|| format!("unknown disk format {s:?} (known: raw, qcow2, vmdk, vhdx)"))
    }
}

/// The NBD URI of export `name` on a unix socket, as qemu-img and
/// libguestfs take it.
pub fn nbd_unix_uri(socket: &Path, name: &str) -> String {
    format!("nbd+unix:///{name}?socket={}", socket.display())
}

/// `qemu-img convert -f raw SRC -O FMT OUT`: SRC is an NBD URI or a raw
/// file. qemu-img's own words become the error.
pub fn convert(src: &str, fmt: DiskFormat, stream: bool, out: &Path) -> Result<(), String> {
    let mut c = Command::new("qemu-img");
    c.args(["convert", "-f", "raw"]).args(fmt.qemu_img_args(stream)).arg(src).arg(out);
    let o = c.output().map_err(|e| format!("cannot run qemu-img: {e}"))?;
    if !o.status.success() {
        return Err(format!("qemu-img convert to {fmt} ({}): {}", out.display(), String::from_utf8_lossy(&o.stderr).trim()));
    }
    Ok(())
}

/// Bytes of a file as stored (a sparse file's allocated size).
pub fn allocated(p: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(p)?.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_pick_their_subformat() {
        for f in DiskFormat::ALL {
            assert_eq!(f.as_str().parse::<DiskFormat>().unwrap(), f);
        }
        assert!("vdi".parse::<DiskFormat>().unwrap_err().contains("raw, qcow2, vmdk, vhdx"));
        assert!(DiskFormat::Vmdk.qemu_img_args(true).contains(&"subformat=streamOptimized"));
        assert!(DiskFormat::Vmdk.qemu_img_args(false).contains(&"subformat=monolithicSparse"));
        assert!(DiskFormat::Vhdx.qemu_img_args(false).contains(&"subformat=dynamic"));
        assert_eq!(nbd_unix_uri(Path::new("/run/x/nbd.sock"), "disk0"), "nbd+unix:///disk0?socket=/run/x/nbd.sock");
    }

    /// Every format from a raw file with holes and an odd tail reads back
    /// identical (qemu-img compare) and checks clean.
    #[test]
    fn every_format_round_trips_an_odd_sparse_disk() {
        let t = tempfile::tempdir().unwrap();
        let raw = t.path().join("src.raw");
        let size = 3 * 1024 * 1024 + 12345; // not a multiple of 64 KiB
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::create(&raw).unwrap();
            f.set_len(size).unwrap();
            f.write_all_at(&[0xa5; 70000], 100).unwrap();
            f.write_all_at(b"tail", size - 4).unwrap();
        }
        for f in DiskFormat::ALL {
            for stream in [false, true] {
                let out = t.path().join(format!("out-{stream}.{f}"));
                convert(raw.to_str().unwrap(), f, stream, &out).unwrap();
                let o = Command::new("qemu-img").args(["compare", "-f", f.as_str(), "-F", "raw"]).arg(&out).arg(&raw).output().unwrap();
                assert!(o.status.success(), "{f} stream={stream}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            }
        }
    }
}
