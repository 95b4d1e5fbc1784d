//! File-level restore from a VM snapshot (`lifeboat vm files`, as root): a
//! GPT disk made here with an ext4 partition (modes, owners, mtimes, a
//! symlink) and an empty one is backed up from a guestless QEMU; its files
//! list and extract equal to the originals, errors name the thing, and the
//! datastore stays clean.

mod common;

use common::guest::*;
use common::*;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

fn sh(c: &mut Command) {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn list_and_extract_from_gpt_ext4() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    sh(Command::new("chown").arg("1234:5678").arg(src.join("etc/hosts")));
    sh(Command::new("chmod").arg("640").arg(src.join("etc/hosts")));
    sh(Command::new("touch").arg("-d").arg("@1600000000").arg(src.join("etc/hosts")));
    std::os::unix::fs::symlink("hosts", src.join("etc/link")).unwrap();
    let fs = t.path().join("ext4.img");
    sh(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&src).arg(&fs).arg("16M"));
    let disk = t.path().join("disk.img");
    std::fs::File::create(&disk).unwrap().set_len(40 << 20).unwrap();
    sh(Command::new("sgdisk").args(["-n", "1:2048:+16M", "-n", "2:0:+4M"]).arg(&disk));
    sh(Command::new("dd").arg(format!("if={}", fs.display())).arg(format!("of={}", disk.display())).args(["bs=1M", "seek=1", "conv=notrunc"]));

    let ds = Ds::init(t.path().join("ds"));
    let snap = back_up_paused(&ds, &disk, "files", &t.path().join("vm"));
    let files = |args: &[&str]| {
        let mut c = lb_cmd();
        c.args(["vm", "files", "--datastore"]).arg(&ds.path).arg(&snap).args(args);
        run_cmd(c)
    };

    let o = files(&["/etc", "--json"]);
    o.expect_ok();
    let list = o.json();
    let names: Vec<_> = list.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["hosts", "link"]);
    assert_eq!(list[0]["uid"], 1234);
    assert_eq!(list[0]["mtime"], 1600000000);
    assert_eq!(list[1]["link_target"], "hosts");

    let out = t.path().join("out");
    files(&["/etc", "--extract", out.to_str().unwrap()]).expect_ok();
    for name in ["hosts", "link"] {
        let a = std::fs::symlink_metadata(src.join("etc").join(name)).unwrap();
        let b = std::fs::symlink_metadata(out.join(name)).unwrap();
        assert_eq!((a.mode(), a.uid(), a.gid(), a.size(), a.mtime()), (b.mode(), b.uid(), b.gid(), b.size(), b.mtime()), "{name}");
    }
    assert_eq!(std::fs::read(out.join("hosts")).unwrap(), std::fs::read(src.join("etc/hosts")).unwrap());

    files(&["/nope"]).expect_code(1);
    files(&["--disk", "nodisk", "/etc"]).expect_code(1);
    files(&["--partition", "2", "/etc"]).expect_code(1);
    ds.assert_check_clean();
}
