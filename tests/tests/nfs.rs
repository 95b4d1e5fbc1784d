//! NFS exports through the daemon, with clients nobody here wrote: a VM
//! backup of the tiny guest is exported over NFS from the remote CLI
//! (`vm export --protocol nfs`), listed with libnfs's nfs-ls (raw disk,
//! VMware descriptor and flat extent), copied with nfs-cp byte-identical
//! to the disk; a read-only export answers WRITE with NFS3ERR_ROFS; a
//! client no export names is refused; the listener closes with the last
//! NFS export. QEMU boots the guest from a writable export over its
//! `nfs://` driver (PORTMAP on 111): the guest writes, the writes land in
//! the export's overlay, and the snapshot still reads as the original.
//! Hostile RPC input is covered in crates/nfs/tests/libnfs.rs.

mod common;

use common::daemon::Daemon;
use common::guest::*;
use common::*;
use serde_json::json;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

fn libnfs_url(uri: &str) -> String {
    // nfs://HOST:PORT/PATH -> libnfs wants the port as options.
    let rest = uri.strip_prefix("nfs://").expect("an nfs:// URI");
    let (hostport, path) = rest.split_once('/').unwrap();
    let (host, port) = hostport.rsplit_once(':').unwrap();
    format!("nfs://{host}/{path}?nfsport={port}&mountport={port}")
}

/// QEMU's driver takes no port: it asks PORTMAP on 111.
fn qemu_url(uri: &str) -> String {
    let rest = uri.strip_prefix("nfs://").unwrap();
    let (hostport, path) = rest.split_once('/').unwrap();
    format!("nfs://{}/{path}", hostport.rsplit_once(':').unwrap().0)
}

fn out(c: &mut Command) -> (bool, String) {
    let o = c.output().expect("libnfs-utils and qemu-block-extra are installed by scripts/setup.sh");
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn with_root(url: &str, dir: &str) -> String {
    // The export's root listing, same options.
    let (base, opts) = url.split_once('?').unwrap();
    let host_end = base["nfs://".len()..].find('/').unwrap() + "nfs://".len();
    format!("{}{dir}?{opts}", &base[..host_end])
}

#[test]
fn nfs_exports_serve_vm_backups_to_libnfs_and_qemu() {
    require_root();
    let t = scratch("nfs");
    let disk = build_guest("tiny", t.path());
    let state = t.path().join("state");
    let cfg = "nbd_listen = \"127.0.0.1:0\"\nnfs_listen = \"127.0.0.1:0\"\nnfs_portmap_listen = \"127.0.0.1:111\"\n";
    // Backed up by the CLI on the appliance before the daemon opens the datastore.
    std::fs::create_dir_all(state.join("datastores")).unwrap();
    let ds = Ds::init(state.join("datastores/default"));
    let snap = back_up_paused(&ds, &disk, "nfs-tiny", &t.path().join("q"));
    let d = Daemon::start(&state, Some(cfg), &[]);

    // NFS needs an allow-list; `clients` means nothing to NBD.
    let r = d.call("POST", "/api/exports", Some(&d.admin), Some(&json!({ "datastore": "default", "snapshot": snap, "protocol": "nfs" })));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("clients"), "{r:?}");
    let r = d.call("POST", "/api/exports", Some(&d.admin), Some(&json!({ "datastore": "default", "snapshot": snap, "protocol": "nfs", "clients": ["not-an-ip"] })));
    assert_eq!(r.status, 400, "{r:?}");
    let r = d.call("POST", "/api/exports", Some(&d.admin), Some(&json!({ "datastore": "default", "snapshot": snap, "clients": ["127.0.0.1"] })));
    assert_eq!(r.status, 400, "{r:?}");

    // 1. Read-only, from the remote CLI: prints the nfs:// URI.
    let o = run_cmd({
        let mut c = d.remote(&d.admin);
        c.args(["vm", "export", "--datastore", "default", "--protocol", "nfs", "--client", "127.0.0.1", &snap]);
        c
    });
    o.expect_ok();
    let uri = o.stdout.trim().to_string();
    assert!(uri.starts_with("nfs://127.0.0.1:") && uri.ends_with(".img") && uri.contains("/nfs-tiny/"), "{o}");
    let listed = d.admin_ok("GET", "/api/exports", None);
    assert_eq!((listed[0]["protocol"].as_str(), listed[0]["uri"].as_str()), (Some("nfs"), Some(uri.as_str())), "{listed}");
    assert_eq!(listed[0]["clients"], json!(["127.0.0.1/32"]), "{listed}");
    let ro_id = listed[0]["id"].as_str().unwrap().to_string();
    let url = libnfs_url(&uri);

    let (ok, ls) = out(Command::new("nfs-ls").arg("-R").arg(with_root(&url, "/")));
    assert!(ok, "nfs-ls: {ls}");
    for want in ["nfs-tiny", ".img", ".vmdk", "-flat.vmdk", "vm.json", "vm.ovf"] {
        assert!(ls.contains(want), "nfs-ls shows no {want}: {ls}");
    }
    let copy = t.path().join("copy.raw");
    let (ok, o2) = out(Command::new("nfs-cp").arg(&url).arg(&copy));
    assert!(ok, "nfs-cp: {o2}");
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(&disk).unwrap(), "the disk copied over NFS differs from the backed-up disk");
    let vmdk = t.path().join("d.vmdk");
    let (ok, o2) = out(Command::new("nfs-cp").arg(url.replacen(".img?", ".vmdk?", 1)).arg(&vmdk));
    assert!(ok, "nfs-cp vmdk: {o2}");
    let text = std::fs::read_to_string(&vmdk).unwrap();
    assert!(text.contains("createType=\"vmfs\"") && text.contains("-flat.vmdk\"") && text.contains("RDONLY"), "{text}");

    // Read-only: WRITE refused (QEMU's driver, through PORTMAP on 111).
    let (_, w) = out(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x11 0 4096", &qemu_url(&uri)]));
    assert!(w.contains("NFS3ERR_ROFS"), "the read-only export did not refuse WRITE: {w}");

    // 2. Only listed clients get in: an export for another address does
    // not let 127.0.0.1 connect; deleting the last export closes the port.
    d.admin_ok("DELETE", &format!("/api/exports/{ro_id}"), None);
    let other = d.admin_ok("POST", "/api/exports", Some(&json!({ "datastore": "default", "snapshot": snap, "protocol": "nfs", "clients": ["10.9.9.0/24"] })));
    let (ok, o2) = out(Command::new("nfs-ls").arg(libnfs_url(other["uri"].as_str().unwrap())));
    assert!(!ok, "a client outside the allow-list got in: {o2}");
    let port: u16 = other["uri"].as_str().unwrap()["nfs://127.0.0.1:".len()..].split('/').next().unwrap().parse().unwrap();
    d.admin_ok("DELETE", &format!("/api/exports/{}", other["id"].as_str().unwrap()), None);
    assert!(wait_until(Duration::from_secs(5), || TcpStream::connect(("127.0.0.1", port)).is_err()), "the NFS listener stayed open without NFS exports");

    // 3. Writable: QEMU boots the guest from nfs://, the guest writes.
    let wr = d.admin_ok("POST", "/api/exports", Some(&json!({ "datastore": "default", "snapshot": snap, "protocol": "nfs", "writable": true, "clients": ["127.0.0.1"] })));
    let wuri = wr["uri"].as_str().unwrap().to_string();
    let run = t.path().join("run");
    let mut vm = Vm::boot(std::path::Path::new(&qemu_url(&wuri)), &run, &[], None);
    vm.wait_console("LIFEBOAT TEST GUEST lifeboat-tiny READY", Duration::from_secs(180));
    let mut ctl = Lines::connect(&vm.sock("control.sock"), Duration::from_secs(10));
    control(&mut ctl, "write 4", "wrote 4", Duration::from_secs(120));
    control(&mut ctl, "sync", "synced", Duration::from_secs(60));
    let mut qmp = Qmp::connect(&vm.sock("qmp.sock"));
    qmp.cmd("quit", json!({}));
    drop(vm);
    let overlay_dir = state.join("exports").join(wr["id"].as_str().unwrap());
    let overlay_bytes: u64 = std::fs::read_dir(&overlay_dir).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
    assert!(overlay_bytes > 0, "no writes in the overlay {}", overlay_dir.display());
    // A hypervisor's lock/log files: made in the snapshot directory of the
    // writable export, kept in its files area beside the overlay.
    let log = t.path().join("vmware.log");
    std::fs::write(&log, b"lifeboat nfs test\n").unwrap();
    let wurl = libnfs_url(&wuri);
    let (base, opts) = wurl.split_once('?').unwrap();
    let (ok, o2) = out(Command::new("nfs-cp").arg(&log).arg(format!("{}/vmware.log?{opts}", base.rsplit_once('/').unwrap().0)));
    assert!(ok, "nfs-cp of a new file to the writable export: {o2}");
    assert_eq!(std::fs::read(overlay_dir.join("files/vmware.log")).ok().as_deref(), Some(&b"lifeboat nfs test\n"[..]), "the new file is not in the export's files area");
    // The snapshot itself is untouched: read back over NBD, it is the original disk.
    let nbd = d.admin_ok("POST", "/api/exports", Some(&json!({ "datastore": "default", "snapshot": snap })));
    let (same, why) = identical(nbd["uri"].as_str().unwrap(), "raw", &disk);
    assert!(same, "the snapshot changed under a writable NFS export: {why}");
    let check = run_cmd({
        let mut c = lb_cmd();
        c.args(["check", "--datastore"]).arg(&ds.path);
        c
    });
    check.expect_ok();
    for x in d.admin_ok("GET", "/api/exports", None).as_array().unwrap() {
        d.admin_ok("DELETE", &format!("/api/exports/{}", x["id"].as_str().unwrap()), None);
    }
    assert_eq!(d.admin_ok("GET", "/api/exports", None), json!([]));
}

/// `vm export` on the appliance without the daemon: serves the disk over
/// NFS until interrupted and prints its URI.
#[test]
fn local_vm_export_serves_nfs_without_the_daemon() {
    require_root();
    let t = scratch("nfs-local");
    let disk = build_guest("tiny", t.path());
    let ds = Ds::init(t.path().join("ds"));
    let snap = back_up_paused(&ds, &disk, "nfs-local", &t.path().join("q"));
    // The allow-list is needed.
    let mut c = lb_cmd();
    c.args(["vm", "export", "--datastore"]).arg(&ds.path).arg(&snap);
    let o = run_cmd(c);
    assert!(!o.status.success() && o.stderr.contains("--client"), "{o}");

    let mut c = lb_cmd();
    c.args(["vm", "export", "--datastore"]).arg(&ds.path);
    c.args(["--client", "127.0.0.1", "--listen", "127.0.0.1:0", "--portmap", "127.0.0.1:0", &snap]);
    c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::inherit());
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let uri = line.trim().to_string();
    assert!(uri.starts_with("nfs://127.0.0.1:") && uri.contains("/nfs-local/"), "{uri:?}");
    let copy = t.path().join("copy.raw");
    let (ok, o2) = out(Command::new("nfs-cp").arg(libnfs_url(&uri)).arg(&copy));
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "nfs-cp: {o2}");
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(&disk).unwrap(), "the disk copied over NFS differs");
}
