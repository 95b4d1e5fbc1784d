//! `lifeboat console` driven in tmux against a scratch root and loop
//! devices as disks: the first-boot wizard end to end (files written,
//! disk formatted, datastore created), bad input refused on screen, an
//! existing datastore offered for import, the system disk never offered,
//! and a disk that disappears before formatting. Needs root (loop devices,
//! mount), tmux, e2fsprogs and xfsprogs.

mod common;

use common::loopdev::{mounts_of, LoopDisk};
use common::tmux::Tmux;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SHORT: Duration = Duration::from_secs(10);
const LONG: Duration = Duration::from_secs(120);

/// The console on `root`, offering only `disks`.
fn console(root: &Path, disks: &[&LoopDisk], extra: &[&str]) -> Tmux {
    let mut args: Vec<String> = vec!["console".into(), "--root".into(), root.display().to_string()];
    for d in disks {
        args.push("--disk".into());
        args.push(d.dev.display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Tmux::start(&bin(), &args)
}

fn blkid(dev: &Path, tag: &str) -> String {
    let out = Command::new("blkid").args(["-p", "-o", "value", "-s", tag]).arg(dev).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Walks the network, hostname, time and password pages with good
/// values (DHCP), ending on the disk page.
fn quick_wizard_to_disks(t: &Tmux) {
    t.wait_for("step 1 of 6: Network", SHORT);
    t.keys(&["Enter"]);
    wizard_hostname_to_disks(t);
}

/// The rest of `quick_wizard_to_disks`, from the hostname page on.
fn wizard_hostname_to_disks(t: &Tmux) {
    t.wait_for("step 2 of 6: Hostname", SHORT);
    t.keys(&["Enter"]);
    t.wait_for("step 3 of 6: Time", SHORT);
    t.keys(&["Enter"]);
    t.wait_for("step 4 of 6: Admin password", SHORT);
    t.type_text("swordfish-42");
    t.keys(&["Tab"]);
    t.type_text("swordfish-42");
    t.keys(&["Enter"]);
    t.wait_for("step 5 of 6: Datastore disk", SHORT);
}

#[test]
fn wizard_refuses_bad_input_then_writes_settings_and_formats_a_loop_disk() {
    require_root();
    let dir = scratch("console-wizard");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hosts"), "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n").unwrap();
    // The daemon's certificate, as it makes one on first start.
    let tls = root.join("var/lib/lifeboat/tls");
    std::fs::create_dir_all(&tls).unwrap();
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=lifeboat", "-days", "2"])
        .arg("-keyout")
        .arg(tls.join("api.key"))
        .arg("-out")
        .arg(tls.join("api.crt"))
        .output()
        .unwrap();
    assert!(st.status.success(), "openssl: {}", String::from_utf8_lossy(&st.stderr));
    let fp = Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha256", "-in"]).arg(tls.join("api.crt")).output().unwrap();
    let fingerprint = String::from_utf8_lossy(&fp.stdout).trim().split_once('=').unwrap().1.to_ascii_lowercase();
    let disk = LoopDisk::new(dir.path(), "data", 330);
    let t = console(&root, &[&disk], &[]);

    // Network: static, with a bad address first.
    let s = t.wait_for("step 1 of 6: Network", SHORT);
    assert!(s.contains("(DHCP)"), "{s}");
    t.keys(&["Right", "Tab", "Tab"]);
    t.type_text("300.1.2.3");
    t.keys(&["Enter"]);
    t.wait_for("Error: Address: \"300.1.2.3\" is not an IP address", SHORT);
    t.replace_field("192.168.50.20");
    t.keys(&["Tab"]);
    t.replace_field("33");
    t.keys(&["Enter"]);
    t.wait_for("Error: Prefix: \"33\" is not a prefix length", SHORT);
    t.replace_field("24");
    t.keys(&["Tab"]);
    t.type_text("192.168.51.1");
    t.keys(&["Enter"]);
    t.wait_for("Error: Gateway: 192.168.51.1 is not in the network 192.168.50.20/24", SHORT);
    t.replace_field("192.168.50.1");
    t.keys(&["Tab"]);
    t.type_text("192.168.50.53 9.9.9.9");
    t.keys(&["Enter"]);

    // Hostname: invalid, then valid.
    t.wait_for("step 2 of 6: Hostname", SHORT);
    t.replace_field("bad_name");
    t.keys(&["Enter"]);
    t.wait_for("Error: Hostname: \"bad_name\": '_' is not allowed", SHORT);
    t.replace_field("backup1.example.com");
    t.keys(&["Enter"]);

    // Time zone: unknown, then known, with NTP servers.
    t.wait_for("step 3 of 6: Time", SHORT);
    t.replace_field("Mars/Olympus_Mons");
    t.keys(&["Enter"]);
    t.wait_for("Error: Time zone: \"Mars/Olympus_Mons\" is not a known time zone", SHORT);
    t.replace_field("Europe/Berlin");
    t.keys(&["Tab"]);
    t.type_text("ntp1.example.com 192.0.2.123");
    t.keys(&["Enter"]);

    // Password: mismatch, too short, then good.
    t.wait_for("step 4 of 6: Admin password", SHORT);
    t.type_text("correct horse");
    t.keys(&["Tab"]);
    t.type_text("correct house");
    t.keys(&["Enter"]);
    let s = t.wait_for("Error: Password: the two passwords do not match", SHORT);
    assert!(!s.contains("correct"), "a password is shown in clear:\n{s}");
    t.type_text("short");
    t.keys(&["Tab"]);
    t.type_text("short");
    t.keys(&["Enter"]);
    t.wait_for("Error: Password: use at least 8 characters", SHORT);
    t.type_text("correct horse");
    t.keys(&["Tab"]);
    t.type_text("correct horse");
    t.keys(&["Enter"]);

    // Disk: the loop disk is listed empty; a wrong confirmation is refused.
    let s = t.wait_for("step 5 of 6: Datastore disk", SHORT);
    let s = if s.contains(&disk.name()) { s } else { t.wait_for(&disk.name(), SHORT) };
    assert!(s.contains("330 MiB") && s.contains("[empty]"), "{s}");
    t.keys(&["Enter"]);
    let s = t.wait_for(&format!("EVERYTHING ON {} WILL BE ERASED", disk.dev.display()), SHORT);
    assert!(s.contains("(ext4)"), "{s}");
    t.keys(&["Right"]); // xfs
    t.type_text("sda");
    t.keys(&["Enter"]);
    t.wait_for(&format!("Error: Type {} to confirm", disk.name()), SHORT);
    t.keys(&["C-u"]);
    t.type_text(&disk.name());
    t.keys(&["Enter"]);

    let s = t.wait_for("step 6 of 6: Summary", SHORT);
    assert!(s.contains("192.168.50.20/24 on en* eth*, gateway 192.168.50.1, DNS 192.168.50.53 9.9.9.9"), "{s}");
    assert!(s.contains("backup1.example.com") && s.contains("Europe/Berlin, NTP ntp1.example.com 192.0.2.123"), "{s}");
    assert!(s.contains(&format!("FORMAT {} (330 MiB) as xfs", disk.dev.display())), "{s}");
    assert!(!root.join("etc/hostname").exists(), "nothing may be written before the summary is confirmed");
    t.keys(&["Enter"]);
    let s = t.wait_for("Setup complete", LONG);
    assert!(s.contains("https://192.168.50.20:8007/"), "{s}");
    let halves: Vec<String> = fingerprint.split(':').collect::<Vec<_>>().chunks(16).map(|c| c.join(":")).collect();
    assert!(s.contains(&format!("TLS certificate SHA-256 fingerprint: {} {}", halves[0], halves[1])), "{fingerprint}\n{s}");

    // The files.
    let net = read(&root, "etc/systemd/network/10-lifeboat.network");
    assert!(net.contains("[Match]\nName=en* eth*\n"), "{net}");
    assert!(net.contains("Address=192.168.50.20/24\nGateway=192.168.50.1\nDNS=192.168.50.53\nDNS=9.9.9.9\n"), "{net}");
    assert_eq!(read(&root, "etc/hostname"), "backup1.example.com\n");
    let hosts = read(&root, "etc/hosts");
    assert!(hosts.contains("127.0.0.1\tlocalhost\n") && hosts.contains("127.0.1.1\tbackup1.example.com backup1\n"), "{hosts}");
    assert_eq!(std::fs::read_link(root.join("etc/localtime")).unwrap(), Path::new("/usr/share/zoneinfo/Europe/Berlin"));
    assert_eq!(read(&root, "etc/timezone"), "Europe/Berlin\n");
    assert!(read(&root, "etc/systemd/timesyncd.conf.d/lifeboat.conf").contains("NTP=ntp1.example.com 192.0.2.123\n"));
    let auth = read(&root, "var/lib/lifeboat/auth.json");
    assert!(!auth.contains("correct horse"), "{auth}");
    let store = lifeboat_state::AuthStore::open(&root.join("var/lib/lifeboat"), 1).unwrap();
    assert!(store.verify_admin_password("admin", "correct horse"), "the daemon does not accept the new password");
    assert!(!store.verify_admin_password("admin", "correct house"));

    // The disk: GPT, one xfs partition labelled for Lifeboat, in fstab by
    // UUID, mounted under the root, holding a datastore the daemon lists.
    let part = disk.part1();
    assert_eq!(blkid(&disk.dev, "PTTYPE"), "gpt");
    assert_eq!(blkid(&part, "TYPE"), "xfs");
    assert_eq!(blkid(&part, "LABEL"), "lifeboatdata");
    let uuid = blkid(&part, "UUID");
    let mount_point = format!("/srv/lifeboat/data-{}", &uuid.replace('-', "")[..8]);
    let fstab = read(&root, "etc/fstab");
    assert!(fstab.contains(&format!("UUID={uuid} {mount_point} xfs defaults,nofail 0 2\n")), "{fstab}");
    let mounted_at = root.join(mount_point.trim_start_matches('/'));
    assert_eq!(mounts_of(&disk.dev), vec![mounted_at.clone()]);
    let store = mounted_at.join("datastore");
    lifeboat_store::Datastore::open(&store).expect("the new datastore opens");
    let cfg = read(&root, "etc/lifeboat/lifeboat.toml");
    assert!(cfg.contains(&format!("path = \"{mount_point}/datastore\"")), "{cfg}");
    assert!(root.join("var/lib/lifeboat/console-setup.done").exists());

    // On to the status screen, which lists the datastore with its space.
    t.keys(&["Enter"]);
    t.wait_for("Lifeboat - Status", SHORT);
    t.keys(&["C-l"]); // repaint: must not disturb anything
    let s = t.wait_for("Lifeboat - Status", SHORT);
    assert!(s.contains(&format!("{mount_point}/datastore")) && s.contains("free of"), "{s}");
    // No daemon runs here: the screen says so.
    t.wait_for("Daemon : NOT RUNNING", SHORT);
    drop(t);

    // A later boot starts on the status screen; settings apply one by one.
    let t = console(&root, &[&disk], &[]);
    t.wait_for("Lifeboat - Status", SHORT);
    t.keys(&["h"]);
    t.wait_for("Lifeboat - Hostname", SHORT);
    t.replace_field("-nope");
    t.keys(&["Enter"]);
    t.wait_for("Error: Hostname", SHORT);
    assert_eq!(read(&root, "etc/hostname"), "backup1.example.com\n");
    t.replace_field("backup2");
    t.keys(&["Enter"]);
    t.wait_for("Hostname saved.", SHORT);
    assert_eq!(read(&root, "etc/hostname"), "backup2\n");
    t.keys(&["n"]);
    t.wait_for("Lifeboat - Network", SHORT);
    t.keys(&["Left"]); // back to DHCP
    t.keys(&["Enter"]);
    t.wait_for("Network settings saved.", SHORT);
    assert!(read(&root, "etc/systemd/network/10-lifeboat.network").contains("DHCP=yes\n"));
    t.keys(&["q"]);
    t.wait_for("[console exited with status 0]", SHORT);
}

#[test]
fn existing_datastore_is_imported_and_the_system_disk_is_never_offered() {
    require_root();
    let dir = scratch("console-import");
    // The console's root lives on its own loop disk: that is the system
    // disk as far as this console is concerned.
    let sys = LoopDisk::new(dir.path(), "system", 64);
    assert!(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&sys.dev).status().unwrap().success());
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    assert!(Command::new("mount").arg(&sys.dev).arg(&root).status().unwrap().success());

    // A disk with a file system holding a datastore with a backup in it.
    let old = LoopDisk::new(dir.path(), "old", 150);
    assert!(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "olddata"]).arg(&old.dev).status().unwrap().success());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    assert!(Command::new("mount").arg(&old.dev).arg(&mnt).status().unwrap().success());
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.txt"), "kept across the import\n").unwrap();
    let ds = Ds::init(mnt.join("backups"));
    let snap = ds.backup(&src, &[]);
    let id = ds.config()["id"].as_str().unwrap().to_string();
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());

    let t = console(&root, &[&sys, &old], &[]);
    quick_wizard_to_disks(&t);
    let s = t.wait_for("can be imported", SHORT);
    assert!(s.contains(&format!("Lifeboat datastore \"backups\" on {}: can be imported", old.dev.display())), "{s}");
    assert!(s.contains("[ext4 \"olddata\"]"), "{s}");
    assert!(s.contains(&format!("system disk (holds {})", root.display())), "{s}");

    // The system disk is refused. The list is sorted by kernel name.
    let sys_row = if sys.name() < old.name() { 0 } else { 1 };
    let old_row = 1 - sys_row;
    for _ in 0..sys_row {
        t.keys(&["Down"]);
    }
    t.keys(&["Enter"]);
    t.wait_for(&format!("Error: Cannot use this disk: {} is the system disk", sys.dev.display()), SHORT);
    assert_eq!(mounts_of(&sys.dev), vec![root.clone()], "the system disk was touched");

    // Import.
    if old_row > sys_row {
        t.keys(&["Down"]);
    } else {
        t.keys(&["Up"]);
    }
    t.keys(&["Enter"]);
    let s = t.wait_for(&format!("datastore \"backups\" (id {id})"), SHORT);
    assert!(s.contains("nothing is erased"), "{s}");
    t.keys(&["Enter"]);
    let s = t.wait_for("step 6 of 6: Summary", SHORT);
    assert!(s.contains(&format!("import the datastore \"backups\" on {} (nothing is erased)", old.dev.display())), "{s}");
    t.keys(&["Enter"]);
    t.wait_for("Setup complete", LONG);

    let uuid = blkid(&old.dev, "UUID");
    let mount_point = format!("/srv/lifeboat/data-{}", &uuid.replace('-', "")[..8]);
    let fstab = read(&root, "etc/fstab");
    assert!(fstab.contains(&format!("UUID={uuid} {mount_point} ext4 defaults,nofail 0 2\n")), "{fstab}");
    assert_eq!(blkid(&old.dev, "LABEL"), "olddata", "an imported file system is not reformatted");
    let cfg = read(&root, "etc/lifeboat/lifeboat.toml");
    assert!(cfg.contains("name = \"backups\"") && cfg.contains(&format!("path = \"{mount_point}/backups\"")), "{cfg}");
    let imported = Ds::at(root.join(mount_point.trim_start_matches('/')).join("backups"));
    assert_eq!(imported.config()["id"].as_str().unwrap(), id);
    assert_eq!(imported.snapshot_ids(), vec![snap["snapshot_id"].as_str().unwrap().to_string()]);
    drop(t);
    for mp in mounts_of(&old.dev) {
        Command::new("umount").arg(mp).status().unwrap();
    }
    assert!(Command::new("umount").arg(&root).status().unwrap().success());
}

#[test]
fn a_disk_that_disappears_before_formatting_changes_nothing() {
    require_root();
    let dir = scratch("console-gone");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let disk = LoopDisk::new(dir.path(), "gone", 210);
    let t = console(&root, &[&disk], &[]);
    quick_wizard_to_disks(&t);
    t.wait_for(&disk.name(), SHORT);
    t.keys(&["Enter"]);
    t.wait_for("WILL BE ERASED", SHORT);
    t.type_text(&disk.name());
    t.keys(&["Enter"]);
    t.wait_for("step 6 of 6: Summary", SHORT);
    disk.detach();
    t.keys(&["Enter"]);
    let s = t.wait_for("Error: nothing was changed", LONG);
    assert!(s.contains(&format!("disk {} is gone", disk.dev.display())), "{s}");
    for rel in ["etc/hostname", "etc/systemd/network/10-lifeboat.network", "etc/fstab", "var/lib/lifeboat/console-setup.done", "var/lib/lifeboat/auth.json"] {
        assert!(!root.join(rel).exists(), "{rel} was written although the disk step failed");
    }
    // Only the console's runtime setup lock (it is still in the wizard).
    let leftovers: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| !p.ends_with("run")).collect();
    assert!(lock_owner(&root).is_some());
    assert!(leftovers.is_empty(), "the root was changed: {leftovers:?}");
}

/// The setup lock file's (pid, tty).
fn lock_owner(root: &Path) -> Option<(u32, String)> {
    let text = std::fs::read_to_string(root.join("run/lifeboat-console/setup.lock")).ok()?;
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::to_string);
    Some((get("pid=")?.parse().ok()?, get("tty=")?))
}

/// tty1 and the serial console share one setup: two consoles on one
/// root; the one a key is pressed on first runs the wizard, the other says
/// where setup is in progress and switches to the status screen when it is
/// done. A console killed mid-setup leaves a stale lock that the other
/// takes over.
#[test]
fn two_consoles_share_one_setup_and_take_over_a_dead_ones_lock() {
    let dir = scratch("console-two");
    // Two consoles on one fresh root; the first leaves the network page,
    // which takes the setup lock. No disks are offered (a name that
    // matches none): the wizard skips that page.
    let two_consoles = |root: &Path| {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let a = console(root, &[], &["--disk", "no-such-disk"]);
        let b = console(root, &[], &["--disk", "no-such-disk"]);
        a.wait_for("step 1 of 6: Network", SHORT);
        b.wait_for("step 1 of 6: Network", SHORT);
        a.keys(&["Enter"]);
        a.wait_for("step 2 of 6: Hostname", SHORT);
        let (pid_a, tty_a) = lock_owner(root).expect("the first console took the setup lock");
        (a, b, pid_a, tty_a)
    };
    let root = dir.path().join("root");
    let (a, b, pid_a, tty_a) = two_consoles(&root);
    assert!(tty_a.starts_with("pts/"), "{tty_a}");
    let s = b.wait_for(&format!("Setup is in progress on {tty_a} (setup, pid {pid_a})"), Duration::from_secs(3));
    assert!(s.contains("setup in progress"), "{s}");
    // Keys on the waiting console do nothing.
    b.keys(&["Enter"]);
    assert_eq!(lock_owner(&root).unwrap().0, pid_a);

    wizard_hostname_to_disks(&a);
    a.wait_for("Skip: no data disk now", SHORT);
    a.keys(&["Enter"]);
    a.wait_for("step 6 of 6: Summary", SHORT);
    a.keys(&["Enter"]);
    a.wait_for("Setup complete", SHORT);
    assert!(lock_owner(&root).is_none(), "the lock is released when setup is done");
    // The other console follows within a second or two.
    let s = b.wait_for("Lifeboat - Status", Duration::from_secs(3));
    assert!(s.contains(&format!("Setup was completed on {tty_a}")), "{s}");
    drop(a);
    drop(b);

    // A console killed mid-setup: its lock is stale, the other takes over.
    let root = dir.path().join("root2");
    let (a, b, pid_a, tty_a) = two_consoles(&root);
    b.wait_for(&format!("Setup is in progress on {tty_a}"), Duration::from_secs(3));
    unsafe { libc::kill(pid_a as i32, libc::SIGKILL) };
    a.wait_for("[console exited with status", SHORT);
    assert_eq!(lock_owner(&root).unwrap().0, pid_a, "SIGKILL leaves the lock file behind");
    b.wait_for("step 1 of 6: Network", Duration::from_secs(3));
    b.keys(&["Enter"]);
    b.wait_for("step 2 of 6: Hostname", SHORT);
    let (pid_b, tty_b) = lock_owner(&root).unwrap();
    assert_ne!(pid_b, pid_a);
    assert_ne!(tty_b, tty_a);
}

/// The status screen reads the daemon's API with the read-only credential
/// `lifeboat serve` leaves in its state directory (mode 0600): "not
/// running" before the daemon starts and after it stops; its datastore and
/// a failed job while it runs. The credential reads and cannot change
/// anything.
#[test]
fn status_screen_reads_the_running_daemon_through_its_api() {
    let dir = scratch("console-status");
    let root = dir.path().join("root");
    let state = root.join("var/lib/lifeboat");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("console-setup.done"), "1\n").unwrap();
    let store = dir.path().join("store-main");
    Ds::init(&store);
    let t = console(&root, &[], &["--disk", "no-such-disk"]);
    t.wait_for("Lifeboat - Status", SHORT);
    t.wait_for("Daemon : NOT RUNNING", SHORT);

    let config = format!("[[datastore]]\nname = \"main\"\npath = {:?}\n", store.display().to_string());
    let d = common::daemon::Daemon::start(&state, Some(&config), &[]);
    let access_file = state.join("console-access.json");
    let mode = std::fs::metadata(&access_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the console's credential must be root-only");
    let access: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&access_file).unwrap()).unwrap();
    let token = access["token"].as_str().unwrap().to_string();
    assert_eq!(access["url"].as_str().unwrap(), d.http, "the console uses the plain loopback listener");
    // Read-only: it reads, it cannot start a job or make a token.
    assert_eq!(d.call("GET", "/api/datastores", Some(&token), None).status, 200);
    // Missing, but under the backup root the harness configures (the
    // scratch directory holding the state), so the job runs and fails.
    let missing = state.parent().unwrap().join("nonexistent-lifeboat-source");
    let bad = serde_json::json!({ "kind": "backup", "datastore": "main", "paths": [missing] });
    assert_eq!(d.call("POST", "/api/jobs", Some(&token), Some(&bad)).status, 403);

    let s = t.wait_for("Daemon : running", Duration::from_secs(6));
    assert!(s.contains(&format!("main {}", store.display())) && s.contains("snapshots"), "{s}");
    // A failed job shows among the last failures.
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&bad));
    assert_eq!(r.status, 202, "{r:?}");
    let id = r.json()["id"].as_str().unwrap().to_string();
    let job = d.wait_job(&id, Duration::from_secs(30));
    assert_eq!(job["state"], "failed", "{job}");
    let s = t.wait_for(&format!("{id} backup failed"), Duration::from_secs(6));
    assert!(s.contains("Last failures"), "{s}");

    let out = d.stop();
    assert!(out.status.success(), "{out}");
    assert!(!access_file.exists(), "a clean stop removes the console's credential");
    t.wait_for("Daemon : NOT RUNNING", Duration::from_secs(6));
}
