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
    let p1 = layout.partition(&disk, "1").unwrap().clone();
    let p2 = layout.partition(&disk, "2").unwrap().clone();
    for (img, p) in [(&fs, &p1), (&vfat, &p2)] {
        sh(Command::new("dd").arg(format!("if={}", img.display())).arg(format!("of={}", disk.display())).args(["bs=1M", "conv=notrunc,fsync", &format!("seek={}", p.start / MIB)]));
    }
    let before = hash(&disk);

    let layout = probe(&disk).unwrap();
    let fstypes: Vec<_> = layout.partitions.iter().map(|p| (p.number, p.fstype.clone())).collect();
    assert_eq!(fstypes, vec![(1, Some("ext4".into())), (2, Some("vfat".into())), (3, None)]);

    {
        let m = MountedFs::mount(&disk, layout.partition(&disk, "1").unwrap()).unwrap();
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
        let v = MountedFs::mount(&disk, layout.partition(&disk, "2").unwrap()).unwrap();
        assert_eq!(std::fs::read(v.root().join("BOOTX64.EFI")).unwrap(), b"efi");
    }

    match MountedFs::mount(&disk, layout.partition(&disk, "3").unwrap()) {
        Err(VmFilesError::NoFilesystem { name, .. }) if name == "3" => {}
        other => panic!("expected NoFilesystem, got {other:?}"),
    }
    let e = layout.partition(&disk, "9").unwrap_err();
    assert!(e.to_string().contains("no partition 9; partitions: 1, 2, 3"), "{e}");

    // The same disk through a FUSE file over a block device, as a
    // datastore disk is served.
    {
        let device = std::sync::Arc::new(lifeboat_nbd::FileDevice::open(&disk).unwrap());
        let file = DiskFile::serve(device).unwrap();
        let layout = probe(&file.path()).unwrap();
        assert_eq!(layout.partitions.len(), 3);
        let m = MountedFs::mount(&file.path(), layout.partition(&file.path(), "1").unwrap()).unwrap();
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

/// `dir`'s entries, recursively, relative to it, sorted.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.symlink_metadata().unwrap().is_dir() {
                todo.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

/// Every file of `src` is in `got` with the same content and mtime, and,
/// when the file system keeps them (`owners`), the same mode and owner.
fn assert_same_tree(src: &Path, got: &Path, owners: bool, what: &str) {
    let mut names = walk(got);
    // mkfs.xfs/btrfs/ntfs leave nothing of their own at the root except
    // ntfs-3g's hidden system files, which ntfs-3g does not list.
    names.retain(|n| n != Path::new("lost+found"));
    assert_eq!(names, walk(src), "{what}: file list");
    for rel in names {
        let a = std::fs::symlink_metadata(src.join(&rel)).unwrap();
        let b = std::fs::symlink_metadata(got.join(&rel)).unwrap();
        if owners {
            assert_eq!((a.mode(), a.uid(), a.gid()), (b.mode(), b.uid(), b.gid()), "{what}: {}", rel.display());
        }
        if !a.is_dir() {
            assert_eq!((a.size(), a.mtime()), (b.size(), b.mtime()), "{what}: {}", rel.display());
        }
        if a.is_file() {
            assert_eq!(std::fs::read(src.join(&rel)).unwrap(), std::fs::read(got.join(&rel)).unwrap(), "{what}: {}", rel.display());
        }
        if a.is_symlink() {
            assert_eq!(std::fs::read_link(src.join(&rel)).unwrap(), std::fs::read_link(got.join(&rel)).unwrap(), "{what}: {}", rel.display());
        }
    }
}

/// A file system image of `size` MiB of `fstype` holding a copy of `src`,
/// made with mkfs and filled through a read-write mount.
fn fs_image(dir: &Path, fstype: &str, size: u64, src: &Path) -> std::path::PathBuf {
    let img = dir.join(format!("{fstype}.img"));
    std::fs::File::create(&img).unwrap().set_len(size * MIB).unwrap();
    let mnt = dir.join(format!("{fstype}.mnt"));
    std::fs::create_dir_all(&mnt).unwrap();
    match fstype {
        // mkfs.xfs refuses file systems under 300 MB unless it believes
        // it runs under xfstests; a 40 MiB one keeps the test disk small.
        "xfs" => sh(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(&img).env("TEST_DIR", "1").env("TEST_DEV", "1").env("QA_CHECK_FS", "1")),
        // Mixed block groups: the default layout needs over 100 MiB.
        "btrfs" => sh(Command::new("mkfs.btrfs").args(["-q", "-M"]).arg(&img)),
        "ntfs" => sh(Command::new("mkntfs").args(["-q", "-F", "-f"]).arg(&img)),
        other => panic!("{other}"),
    }
    if fstype == "ntfs" {
        sh(Command::new("ntfs-3g").arg(&img).arg(&mnt));
        // ntfs-3g keeps no Unix owners or modes without a user mapping.
        sh(Command::new("cp").args(["-r", "--preserve=timestamps", "--no-dereference"]).arg(format!("{}/.", src.display())).arg(&mnt));
    } else {
        sh(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&mnt));
        sh(Command::new("cp").arg("-a").arg(format!("{}/.", src.display())).arg(&mnt));
    }
    sh(Command::new("umount").arg(&mnt));
    img
}

fn dd_into(img: &Path, disk: &Path, offset: u64) {
    sh(Command::new("dd").arg(format!("if={}", img.display())).arg(format!("of={}", disk.display())).args(["bs=1M", "conv=notrunc,fsync", &format!("seek={}", offset / MIB)]));
}

/// GPT with an EFI FAT partition, an LVM PV holding xfs and btrfs
/// volumes (and one split volume we cannot read without device-mapper),
/// and NTFS: every file comes out as it went in.
#[test]
fn gpt_lvm_xfs_btrfs_vfat_ntfs() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    guest_tree(&src);
    let disk = tmp.path().join("disk.img");
    std::fs::File::create(&disk).unwrap().set_len(140 * MIB).unwrap();
    sh(Command::new("sgdisk").args(["-n", "1:2048:+8M", "-t", "1:ef00", "-n", "2:0:+100M", "-t", "2:8e00", "-n", "3:0:+16M"]).arg(&disk));
    let layout = probe(&disk).unwrap();
    let (p1, p2, p3) = (layout.partition(&disk, "1").unwrap().clone(), layout.partition(&disk, "2").unwrap().clone(), layout.partition(&disk, "3").unwrap().clone());

    // The PV: 1 MiB of metadata, then 4 MiB extents; each volume placed on
    // extents we choose, so the test knows their offsets without LVM.
    let pv = String::from_utf8(Command::new("losetup").args(["--find", "--show", "--offset", &p2.start.to_string(), "--sizelimit", &p2.size.to_string()]).arg(&disk).output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let lvm = |args: &[&str]| {
        let config = format!("devices{{filter=[\"a|^{pv}$|\",\"r|.*|\"] obtain_device_list_from_udev=0}} activation{{udev_sync=0 udev_rules=0}} backup{{backup=0 archive=0}}");
        let out = Command::new("lvm").args(args).args(["--config", &config]).env("LVM_SUPPRESS_FD_WARNINGS", "1").output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let made = [
        lvm(&["pvcreate", "-q", "--dataalignment", "1m", &pv]),
        lvm(&["vgcreate", "-q", "-s", "4m", "guestvg", &pv]),
        // --driverloaded n: no device-mapper on the test kernels; the
        // volumes need not be active to be made, only not zeroed.
        lvm(&["lvcreate", "-q", "--driverloaded", "n", "-an", "-Zn", "-n", "root", "-l", "10", "guestvg", &format!("{pv}:0-9")]),
        lvm(&["lvcreate", "-q", "--driverloaded", "n", "-an", "-Zn", "-n", "data", "-l", "10", "guestvg", &format!("{pv}:12-21")]),
        lvm(&["lvcreate", "-q", "--driverloaded", "n", "-an", "-Zn", "-n", "split", "-l", "2", "guestvg", &format!("{pv}:10-10"), &format!("{pv}:22-22")]),
    ];
    sh(Command::new("losetup").arg("-d").arg(&pv));
    for (ok, err) in &made {
        assert!(ok, "{err}");
    }
    let lv_offset = |extent: u64| p2.start + MIB + extent * 4 * MIB;
    dd_into(&fs_image(tmp.path(), "xfs", 40, &src), &disk, lv_offset(0));
    dd_into(&fs_image(tmp.path(), "btrfs", 40, &src), &disk, lv_offset(12));
    dd_into(&fs_image(tmp.path(), "ntfs", 16, &src), &disk, p3.start);
    let vfat = tmp.path().join("vfat.img");
    sh(Command::new("mkfs.vfat").arg("-C").arg(&vfat).arg("8192"));
    // FAT keeps neither owners nor modes nor symlinks, and mtimes in 2 s
    // steps: its tree is plain files with even mtimes.
    let efi = tmp.path().join("efi");
    std::fs::create_dir_all(efi.join("EFI/BOOT")).unwrap();
    std::fs::write(efi.join("EFI/BOOT/BOOTX64.EFI"), vec![7u8; 70_000]).unwrap();
    set_mtime(&efi.join("EFI/BOOT/BOOTX64.EFI"), 1_600_000_000);
    sh(Command::new("mcopy").args(["-s", "-m", "-i"]).arg(&vfat).arg(efi.join("EFI")).arg("::/"));
    dd_into(&vfat, &disk, p1.start);
    let before = hash(&disk);

    let layout = probe(&disk).unwrap();
    let got: Vec<_> = layout.partitions.iter().map(|p| (p.name.as_str(), p.fstype.as_deref(), p.unsupported.is_some(), p.has_files())).collect();
    assert_eq!(
        got,
        [
            ("1", Some("vfat"), false, true),
            ("2", Some("LVM2_member"), false, false),
            ("3", Some("ntfs"), false, true),
            ("guestvg/data", Some("btrfs"), false, true),
            ("guestvg/root", Some("xfs"), false, true),
            ("guestvg/split", None, true, false),
        ]
    );
    // Through a FUSE disk file, as `vm files` reads a datastore disk.
    let device = std::sync::Arc::new(lifeboat_nbd::FileDevice::open(&disk).unwrap());
    let file = DiskFile::serve(device).unwrap();
    let image = file.path();
    for (name, owners) in [("guestvg/root", true), ("guestvg/data", true), ("3", false)] {
        let m = MountedFs::mount(&image, layout.partition(&image, name).unwrap()).unwrap();
        assert_same_tree(&src, m.root(), owners, name);
        assert!(std::fs::write(m.root().join("new"), "x").is_err(), "{name} is writable");
    }
    let m = MountedFs::mount(&image, layout.partition(&image, "1").unwrap()).unwrap();
    assert_same_tree(&efi, m.root(), false, "vfat");
    drop(m);
    let e = MountedFs::mount(&image, layout.partition(&image, "guestvg/split").unwrap()).unwrap_err();
    assert!(e.to_string().contains("guestvg/split") && e.to_string().contains("not contiguous"), "{e}");
    let e = MountedFs::mount(&image, layout.partition(&image, "2").unwrap()).unwrap_err();
    assert!(e.to_string().contains("LVM2_member"), "{e}");
    drop(file);

    let loops = Command::new("losetup").arg("-j").arg(&disk).output().unwrap();
    assert!(loops.stdout.is_empty(), "{}", String::from_utf8_lossy(&loops.stdout));
    assert_eq!(hash(&disk), before, "the image was written");
}
