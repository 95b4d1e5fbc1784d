//! File-level restore from a VM snapshot (`lifeboat vm files`, as root): a
//! GPT disk made here with an ext4 partition (modes, owners, mtimes, a
//! symlink) and an empty one is backed up from a guestless QEMU; its files
//! list and extract equal to the originals, errors name the thing, and the
//! datastore stays clean; a run killed with its disk mounted leaves
//! mounts and loop devices that the next run undoes; the daemon's API,
//! the remote CLI (an agent host pulling guest files as tar) and `vms/`
//! in `lifeboat mount` show the same files. And the Debian test
//! guest's backup (ext4 on MBR) shows the guest's own files.

mod common;

use common::daemon::Daemon;
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
    // A guest link to its own root: followed inside the guest, it must
    // never reach the appliance's files.
    std::os::unix::fs::symlink("/", src.join("esc")).unwrap();
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/su"), "#!/bin/sh\n").unwrap();
    sh(Command::new("chmod").arg("4755").arg(src.join("bin/su")));
    sh(Command::new("setfattr").args(["-n", "user.origin", "-v", "guest"]).arg(src.join("etc/hosts")));
    let fs = t.path().join("ext4.img");
    sh(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&src).arg(&fs).arg("16M"));
    let disk = t.path().join("disk.img");
    std::fs::File::create(&disk).unwrap().set_len(40 << 20).unwrap();
    sh(Command::new("sgdisk").args(["-n", "1:2048:+16M", "-n", "2:0:+4M"]).arg(&disk));
    sh(Command::new("dd").arg(format!("if={}", fs.display())).arg(format!("of={}", disk.display())).args(["bs=1M", "seek=1", "conv=notrunc"]));

    // The daemon's datastore, written by the CLI beside it.
    let d = Daemon::start(&t.path().join("state"), None, &[]);
    let ds = Ds::at(t.path().join("state/datastores/default"));
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

    let e = files(&["/nope"]);
    assert!(e.expect_code(1).stderr.contains("/nope in partition 1 of disk"), "{e}");
    let e = files(&["--disk", "nodisk", "/etc"]);
    assert!(e.expect_code(1).stderr.contains("has no disk nodisk"), "{e}");
    let e = files(&["--partition", "2", "/etc"]);
    assert!(e.expect_code(1).stderr.contains("partition 2") && e.stderr.contains("no file system"), "{e}");
    let e = files(&["--partition", "vg/nope", "/etc"]);
    assert!(e.expect_code(1).stderr.contains("no partition vg/nope; partitions: 1, 2"), "{e}");

    // Killed while its disk is mounted: no guard runs, so the FUSE disk
    // file, the loop device over it and the mount stay...
    let mut c = lb_cmd();
    c.args(["vm", "files", "--datastore"]).arg(&ds.path).arg(&snap).arg("/etc");
    c.env("LIFEBOAT_FAILPOINTS", "vm-files-mounted=sleep60000").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let pid = child.id();
    let ours = move || leftovers(pid);
    assert!(wait_until(std::time::Duration::from_secs(60), || ours().0.len() == 2), "the run never mounted: {:?}", ours());
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let (mounts, loops) = ours();
    assert_eq!((mounts.len(), loops.len()), (2, 1), "a killed run leaves its mounts and loop device: {mounts:?} {loops:?}");
    // ...until the next run, which undoes them.
    files(&[]).expect_ok();
    assert_eq!(ours(), (vec![], vec![]), "the next run left the killed one's mounts or loop devices");
    let dirs: Vec<_> = std::fs::read_dir("/run/lifeboat/vmfiles").unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains(&format!("-{pid}-"))).collect();
    assert!(dirs.is_empty(), "directories of the killed run left: {dirs:?}");
    api(&d, &snap, &src, t.path());
    remote(&d, &snap, &src, t.path());
    mounted(&ds, &snap, &src, t.path());
    drop(d);
    ds.assert_check_clean();
}

/// (mode, uid, gid, size, mtime) of an entry, not following a link.
fn meta(p: &std::path::Path) -> (u32, u32, u32, u64, i64) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.mode(), m.uid(), m.gid(), m.size(), m.mtime())
}

/// An agent host's restore: the remote CLI pulls the guest's files as a
/// tar stream and unpacks them where it runs (here as root: owners and
/// set-ID bits kept), lists them, and starts a restore on the appliance.
fn remote(d: &Daemon, snap: &str, src: &std::path::Path, scratch: &std::path::Path) {
    let ro = d.token("files-remote-reader", "read-only");
    let files = |args: &[&str]| {
        let mut c = d.remote(&ro);
        c.args(["vm", "files", snap]).args(args);
        run_cmd(c)
    };
    let o = files(&["/etc", "--json"]);
    o.expect_ok();
    let names: Vec<_> = o.json().as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["hosts", "link"], "{o}");
    let o = files(&[]);
    assert!(o.expect_ok().stdout.contains("partition table: gpt") && o.stdout.contains("ext4"), "{o}");

    // A directory to a new name: DST is the guest's /etc.
    let out = scratch.join("agent-etc");
    files(&["/etc", "--extract", out.to_str().unwrap()]).expect_ok();
    for name in ["hosts", "link"] {
        assert_eq!(meta(&src.join("etc").join(name)), meta(&out.join(name)), "{name}");
    }
    assert_eq!(std::fs::read(out.join("hosts")).unwrap(), std::fs::read(src.join("etc/hosts")).unwrap());
    // A file into an existing directory; set-ID kept for root here.
    files(&["/bin/su", "--extract", out.to_str().unwrap()]).expect_ok();
    assert_eq!(meta(&out.join("su")), meta(&src.join("bin/su")));
    // The guest root: everything, the guest's own link to / kept as a link.
    let all = scratch.join("agent-root");
    files(&["/", "--extract", all.to_str().unwrap()]).expect_ok();
    assert_eq!(std::fs::read_link(all.join("esc")).unwrap(), std::path::Path::new("/"));
    assert_eq!(meta(&all.join("etc/hosts")), meta(&src.join("etc/hosts")));
    let e = files(&["/nope", "--extract", scratch.join("agent-nope").to_str().unwrap()]);
    assert!(e.expect_code(1).stderr.contains("/nope in partition 1 of disk"), "{e}");
    assert!(!scratch.join("agent-nope").exists(), "a failed extract left its target");
    let e = files(&["/etc/hosts", "--extract", out.join("hosts").to_str().unwrap()]);
    assert!(e.expect_code(1).stderr.contains("exists and is not a directory"), "{e}");

    // And onto the appliance, as a job: a read-only token is refused.
    let target = scratch.join("remote-restored");
    let mut c = d.remote(&ro);
    c.args(["vm", "restore-files", snap]).arg(&target).arg("/etc");
    let e = run_cmd(c);
    assert!(e.expect_code(1).stderr.contains("(HTTP 403)"), "{e}");
    let op = d.token("files-remote-operator", "operator");
    let mut c = d.remote(&op);
    c.args(["vm", "restore-files", snap]).arg(&target).arg("/etc");
    let o = run_cmd(c);
    assert!(o.expect_ok().stdout.contains("copied /etc from partition 1"), "{o}");
    assert_eq!(std::fs::read(target.join("etc/hosts")).unwrap(), std::fs::read(src.join("etc/hosts")).unwrap());
}

/// `lifeboat mount` shows the guest's files under vms/, mounted when
/// looked at and unmounted (with their loop devices) when it ends.
fn mounted(ds: &Ds, snap: &str, src: &std::path::Path, scratch: &std::path::Path) {
    let mp = scratch.join("mp");
    std::fs::create_dir_all(&mp).unwrap();
    let mut c = ds.cmd("mount");
    c.arg(&mp);
    let mut child = ChildGuard::spawn(c);
    let pid = child.pid() as u32;
    assert!(wait_until(std::time::Duration::from_secs(20), || mp.join("vms").is_dir()), "vms/ never appeared");
    let vms: Vec<String> = std::fs::read_dir(mp.join("vms")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let [name] = vms.as_slice() else { panic!("one VM snapshot expected under vms/: {vms:?}") };
    assert!(name.contains(&snap[..8]) && name.ends_with("_files"), "{name}");
    let disks: Vec<String> = std::fs::read_dir(mp.join("vms").join(name)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let [disk] = disks.as_slice() else { panic!("one disk expected: {disks:?}") };
    let d = mp.join("vms").join(name).join(disk);
    let parts: Vec<String> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(parts, ["1"], "only the partition with a file system is shown");
    let g = d.join("1");
    for rel in ["etc/hosts", "etc/link", "bin/su", "esc"] {
        assert_eq!(meta(&g.join(rel)), meta(&src.join(rel)), "{rel}");
    }
    assert_eq!(std::fs::read(g.join("etc/hosts")).unwrap(), std::fs::read(src.join("etc/hosts")).unwrap());
    assert_eq!(std::fs::read_link(g.join("etc/link")).unwrap(), std::path::Path::new("hosts"));
    // Extended attributes come through (mkfs.ext4 -d copied it).
    let o = Command::new("getfattr").args(["--only-values", "-n", "user.origin"]).arg(g.join("etc/hosts")).output().unwrap();
    assert_eq!((o.status.success(), String::from_utf8_lossy(&o.stdout).as_ref()), (true, "guest"), "{}", String::from_utf8_lossy(&o.stderr));
    // The same snapshot by an id prefix.
    assert!(mp.join("vms").join(&snap[..12]).join(disk).join("1/etc/hosts").is_file());
    assert!(std::fs::write(g.join("etc/new"), b"x").is_err(), "wrote into a guest under vms/");
    assert_eq!(leftovers(pid).0.len(), 2, "the partition and its disk file are mounted: {:?}", leftovers(pid));
    // Ended with a guest file still open (the mount is detached lazily):
    // the guest file systems go all the same.
    let held = std::fs::File::open(g.join("etc/hosts")).unwrap();
    child.signal(libc::SIGTERM);
    assert!(wait_until(std::time::Duration::from_secs(20), || !child.running()), "lifeboat mount still running after SIGTERM");
    assert_eq!(leftovers(pid), (vec![], vec![]), "lifeboat mount left guest mounts or loop devices");
    drop(held);
}

/// The same through the daemon: browsing needs read rights, restoring the
/// operator role; wrong names give 404s naming them.
fn api(d: &Daemon, snap: &str, src: &std::path::Path, scratch: &std::path::Path) {
    use serde_json::json;
    let ro = d.token("files-reader", "read-only");
    let op = d.token("files-operator", "operator");
    let base = format!("/api/datastores/default/snapshots/{snap}");
    let r = d.call("GET", &format!("{base}/vm-files"), Some(&ro), None);
    assert_eq!(r.status, 200, "{r:?}");
    let parts = r.json();
    assert_eq!((parts["table"].as_str(), parts["partitions"][0]["fstype"].as_str()), (Some("gpt"), Some("ext4")), "{parts}");
    let r = d.call("GET", &format!("{base}/vm-files?path=/etc"), Some(&ro), None);
    assert_eq!(r.status, 200, "{r:?}");
    let l = r.json();
    let names: Vec<_> = l["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hosts", "link"], "{l}");
    assert_eq!((l["entries"][0]["uid"].as_u64(), l["entries"][0]["mtime"].as_i64(), l["partition"].as_str()), (Some(1234), Some(1600000000), Some("1")), "{l}");
    assert_eq!(l["entries"][1]["link_target"], "hosts");

    let r = d.call("GET", &format!("{base}/vm-files/download?path=/etc/hosts"), Some(&ro), None);
    assert_eq!((r.status, r.body.as_str()), (200, "127.0.0.1 localhost\n"), "{r:?}");
    // Through the guest's `/esc -> /`: the guest's /etc, not the appliance's.
    let r = d.call("GET", &format!("{base}/vm-files/download?path=/esc/etc/hosts"), Some(&ro), None);
    assert_eq!((r.status, r.body.as_str()), (200, "127.0.0.1 localhost\n"), "{r:?}");
    let r = d.call("GET", &format!("{base}/vm-files/download?path=/esc/etc/passwd"), Some(&ro), None);
    assert_eq!(r.status, 404, "the appliance's /etc/passwd through a guest link: {r:?}");
    let r = d.call("GET", &format!("{base}/vm-files?path=/nope/x"), Some(&ro), None);
    assert!(r.status == 404 && r.body.contains("/nope/x in partition 1 of disk"), "{r:?}");
    let r = d.call("GET", &format!("{base}/vm-files?path=/etc&disk=nodisk"), Some(&ro), None);
    assert!(r.status == 404 && r.body.contains("no disk nodisk"), "{r:?}");
    let r = d.call("GET", &format!("{base}/vm-files?path=/etc&partition=7"), Some(&ro), None);
    assert!(r.status == 404 && r.body.contains("no partition 7"), "{r:?}");
    let r = d.call("GET", &format!("{base}/vm-files?path=/etc&partition=2"), Some(&ro), None);
    assert!(r.status == 400 && r.body.contains("no file system"), "{r:?}");
    let r = d.call("GET", "/api/datastores/default/snapshots/ffffffff/vm-files", Some(&ro), None);
    assert_eq!(r.status, 404, "{r:?}");
    let r = d.call("GET", &format!("{base}/vm-files/download?path=/etc"), Some(&ro), None);
    assert!(r.status == 400 && r.body.contains("not a regular file"), "{r:?}");

    let body = |target: &std::path::Path, paths: &[&str]| json!({ "paths": paths, "target": target });
    let out = scratch.join("restored");
    let r = d.call("POST", &format!("{base}/vm-restore-files"), Some(&ro), Some(&body(&out, &["/etc"])));
    assert_eq!(r.status, 403, "a read-only token restored: {r:?}");
    let r = d.call("POST", &format!("{base}/vm-restore-files"), Some(&op), Some(&body(&out, &["/etc/nope"])));
    assert_eq!(r.status, 202, "{r:?}");
    let j = d.wait_job(r.json()["id"].as_str().unwrap(), std::time::Duration::from_secs(60));
    assert!(j["state"] == "failed" && j["error"].as_str().unwrap().contains("/etc/nope"), "{j:#}");
    assert_eq!(j["error_kind"], "not-found", "{j:#}");
    assert!(!out.exists(), "a failed restore wrote its target");
    // An operator: modes, times and links, no set-ID bits, no owners.
    let r = d.call("POST", &format!("{base}/vm-restore-files"), Some(&op), Some(&body(&out, &["/etc", "/bin/su"])));
    assert_eq!(r.status, 202, "{r:?}");
    let j = d.wait_job(r.json()["id"].as_str().unwrap(), std::time::Duration::from_secs(60));
    assert_eq!(j["state"], "warnings", "{j:#}");
    let m = std::fs::symlink_metadata(out.join("etc/hosts")).unwrap();
    assert_eq!((m.mode(), m.uid(), m.mtime()), (0o100640, 0, 1600000000));
    assert_eq!(std::fs::read(out.join("etc/hosts")).unwrap(), std::fs::read(src.join("etc/hosts")).unwrap());
    assert_eq!(std::fs::read_link(out.join("etc/link")).unwrap(), std::path::Path::new("hosts"));
    assert_eq!(std::fs::metadata(out.join("su")).unwrap().mode() & 0o7777, 0o755, "set-ID bit kept for an operator");
    // The admin's keeps owners and set-ID bits.
    let out = scratch.join("restored-admin");
    let j = d.admin_ok("POST", &format!("{base}/vm-restore-files"), Some(&body(&out, &["/etc", "/bin/su"])));
    let j = d.wait_job(j["id"].as_str().unwrap(), std::time::Duration::from_secs(60));
    assert_eq!(j["state"], "succeeded", "{j:#}");
    for rel in ["etc/hosts", "etc/link", "etc"] {
        let a = std::fs::symlink_metadata(src.join(rel)).unwrap();
        let b = std::fs::symlink_metadata(out.join(rel)).unwrap();
        assert_eq!((a.mode(), a.uid(), a.gid()), (b.mode(), b.uid(), b.gid()), "{rel}");
        if !a.is_dir() {
            assert_eq!(a.mtime(), b.mtime(), "{rel}");
        }
    }
    assert_eq!(std::fs::metadata(out.join("su")).unwrap().mode() & 0o7777, 0o4755);
    // Outside restore_roots: refused before anything runs.
    let r = d.call("POST", &format!("{base}/vm-restore-files"), Some(&op), Some(&json!({ "paths": ["/etc"], "target": "/var/tmp/lifeboat-vmfiles-escape" })));
    assert_eq!(r.status, 403, "{r:?}");
}

/// Mount points and loop devices (`NAME BACK-FILE`) of the `vm files` run
/// `pid`, found by the names crates/vmfiles gives its directories.
fn leftovers(pid: u32) -> (Vec<String>, Vec<String>) {
    let tag = format!("-{pid}-");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with("/run/lifeboat/vmfiles/") && m.contains(&tag))
        .map(str::to_string)
        .collect();
    let out = Command::new("losetup").args(["--list", "--noheadings", "--raw", "--output", "NAME,BACK-FILE"]).output().unwrap();
    let loops = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("/run/lifeboat/vmfiles/") && l.contains(&tag)).map(str::to_string).collect();
    (mounts, loops)
}

/// The Debian test guest (ext4 on MBR), backed up paused: its files read
/// from the backup equal those in the guest's image.
#[test]
fn debian_guest_files() {
    require_root();
    let t = scratch("vm-files-debian");
    let disk = build_guest("debian", t.path());
    let ds = Ds::init(t.path().join("ds"));
    let snap = back_up_paused(&ds, &disk, "debian-files", &t.path().join("vm"));
    let files = |args: &[&str]| {
        let mut c = lb_cmd();
        c.args(["vm", "files", "--datastore"]).arg(&ds.path).arg(&snap).args(args);
        run_cmd(c)
    };
    let o = files(&["--json"]);
    let layout = o.expect_ok().json();
    assert_eq!(layout["table"], "dos", "{o}");
    assert_eq!(layout["partitions"][0]["fstype"], "ext4", "{o}");

    let out = t.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for (guest, name) in [("/etc/hostname", "hostname"), ("/usr/lib/os-release", "os-release")] {
        files(&[guest, "--extract", out.join(name).to_str().unwrap()]).expect_ok();
        let want = t.path().join(format!("{name}.debugfs"));
        debugfs_dump(&disk, guest, &want);
        assert_eq!(std::fs::read(out.join(name)).unwrap(), std::fs::read(&want).unwrap(), "{guest}");
    }
    assert_eq!(std::fs::read_to_string(out.join("hostname")).unwrap(), "lifeboat-debian\n");
    assert!(std::fs::read_to_string(out.join("os-release")).unwrap().contains("ID=debian"));
    let o = files(&["/etc", "--json"]);
    let etc = o.expect_ok().json();
    let entry = |n: &str| etc.as_array().unwrap().iter().find(|e| e["name"] == n).cloned().unwrap_or_else(|| panic!("no /etc/{n}: {o}"));
    assert_eq!(entry("os-release")["link_target"], "../usr/lib/os-release");
    let stat = run_ok(tool("debugfs").arg("-R").arg("stat /etc/hostname").arg(fs_spec(&disk)));
    let mode = entry("hostname")["mode"].as_u64().unwrap();
    assert!(stat.contains(&format!("Mode:  {:04o}", mode & 0o7777)), "mode {mode:o} vs debugfs:\n{stat}");
    ds.assert_check_clean();
}
