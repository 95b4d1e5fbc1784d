//! Real disks made here with sgdisk/mkfs, probed and mounted read-only as
//! root. Checks the guest's files come out as they went in and the image
//! is not written.

use lifeboat_vmfiles::{probe, DiskFile, MountedFs, VmFilesError};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn set_mtime(path: &Path, secs: i64) {
    sh(Command::new("touch").arg("-h").arg("-d").arg(format!("@{secs}")).arg(path));
}

fn hash(path: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(path).unwrap())
}

/// Files of various modes, owners, mtimes and a symlink.
fn guest_tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc/sub")).unwrap();
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::set_permissions(root.join("etc/hosts"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(root.join("etc/hosts"), Some(1234), Some(5678)).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("etc/sub/data.bin"), &big).unwrap();
    std::fs::set_permissions(root.join("etc/sub/data.bin"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../hosts", root.join("etc/sub/link")).unwrap();
    set_mtime(&root.join("etc/hosts"), 1_600_000_000);
    set_mtime(&root.join("etc/sub/data.bin"), 1_500_000_000);
    set_mtime(&root.join("etc/sub/link"), 1_400_000_000);
}

const MIB: u64 = 1 << 20;

#[test]
fn gpt_ext4_vfat_and_empty_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    guest_tree(&src);
    let fs = tmp.path().join("ext4.img");
    sh(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&src).arg(&fs).arg("16M"));
    let vfat = tmp.path().join("vfat.img");
    sh(Command::new("mkfs.vfat").arg("-C").arg(&vfat).arg("8192"));
    std::fs::write(tmp.path().join("BOOTX64.EFI"), "efi").unwrap();
    sh(Command::new("mcopy").arg("-i").arg(&vfat).arg(tmp.path().join("BOOTX64.EFI")).arg("::/"));
    let disk = tmp.path().join("disk.img");
    std::fs::File::create(&disk).unwrap().set_len(40 * MIB).unwrap();
    sh(Command::new("sgdisk").args(["-n", "1:2048:+16M", "-n", "2:0:+8M", "-n", "3:0:+4M"]).arg(&disk));
    let layout = probe(&disk).unwrap();
    assert_eq!(layout.table.as_deref(), Some("gpt"));
    let p1 = layout.partition(&disk, 1).unwrap().clone();
    let p2 = layout.partition(&disk, 2).unwrap().clone();
    for (img, p) in [(&fs, &p1), (&vfat, &p2)] {
        sh(Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", disk.display()))
            .args(["bs=1M", "conv=notrunc,fsync", &format!("seek={}", p.start / MIB)]));
    }
    let before = hash(&disk);

    let layout = probe(&disk).unwrap();
    let fstypes: Vec<_> = layout.partitions.iter().map(|p| (p.number, p.fstype.clone())).collect();
    assert_eq!(fstypes, vec![(1, Some("ext4".into())), (2, Some("vfat".into())), (3, None)]);

    {
        let m = MountedFs::mount(&disk, layout.partition(&disk, 1).unwrap()).unwrap();
        for rel in ["etc/hosts", "etc/sub/data.bin", "etc/sub/link", "etc/sub"] {
            let a = std::fs::symlink_metadata(src.join(rel)).unwrap();
            let b = std::fs::symlink_metadata(m.root().join(rel)).unwrap();
            assert_eq!((a.mode(), a.uid(), a.gid()), (b.mode(), b.uid(), b.gid()), "{rel}");
            // A directory's size is its block size, which differs.
            if !a.is_dir() {
                assert_eq!((a.size(), a.mtime()), (b.size(), b.mtime()), "{rel}");
            }
            if a.is_file() {
                assert_eq!(std::fs::read(src.join(rel)).unwrap(), std::fs::read(m.root().join(rel)).unwrap(), "{rel}");
            }
        }
        assert_eq!(std::fs::read_link(m.root().join("etc/sub/link")).unwrap(), Path::new("../hosts"));
        // Read-only: the kernel refuses writes.
        assert!(std::fs::write(m.root().join("new"), "x").is_err());
        let v = MountedFs::mount(&disk, layout.partition(&disk, 2).unwrap()).unwrap();
        assert_eq!(std::fs::read(v.root().join("BOOTX64.EFI")).unwrap(), b"efi");
    }

    match MountedFs::mount(&disk, layout.partition(&disk, 3).unwrap()) {
        Err(VmFilesError::NoFilesystem { number: 3, .. }) => {}
        other => panic!("expected NoFilesystem, got {other:?}"),
    }
    let e = layout.partition(&disk, 9).unwrap_err();
    assert!(e.to_string().contains("no partition 9; partitions: 1, 2, 3"), "{e}");

    // The same disk through a FUSE file over a block device, as a
    // datastore disk is served.
    {
        let device = std::sync::Arc::new(lifeboat_nbd::FileDevice::open(&disk).unwrap());
        let file = DiskFile::serve(device).unwrap();
        let layout = probe(&file.path()).unwrap();
        assert_eq!(layout.partitions.len(), 3);
        let m = MountedFs::mount(&file.path(), layout.partition(&file.path(), 1).unwrap()).unwrap();
        assert_eq!(std::fs::read(m.root().join("etc/sub/data.bin")).unwrap(), std::fs::read(src.join("etc/sub/data.bin")).unwrap());
        drop(m);
        let dir = file.dir().to_path_buf();
        drop(file);
        assert!(!dir.exists(), "FUSE mount point left behind");
    }

    // Nothing left attached, nothing written.
    let loops = Command::new("losetup").arg("-j").arg(&disk).output().unwrap();
    assert!(loops.stdout.is_empty(), "{}", String::from_utf8_lossy(&loops.stdout));
    assert_eq!(hash(&disk), before, "the image was written");
}
