//! The NFS server against libnfs's own tools (nfs-ls, nfs-cp from
//! Debian's libnfs-utils, installed by scripts/setup.sh) and against
//! hostile RPC input. Disks are plain files here; the daemon tests in
//! tests/tests/nfs.rs serve real backups.

use lifeboat_nbd::{BlockDevice, CowOverlay, FileDevice};
use lifeboat_nfs::{NfsDisk, NfsServer, Registry};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i / 4096) as u8) ^ (i as u8).wrapping_mul(31)).collect()
}

fn disk(path: &Path, vm: &str, writable: bool, clients: &[&str], overlay: Option<&Path>) -> NfsDisk {
    let base = FileDevice::open(path).unwrap();
    let device: Arc<dyn BlockDevice> = match overlay {
        Some(o) => Arc::new(CowOverlay::open(base, o).unwrap()),
        None => Arc::new(base),
    };
    NfsDisk {
        vm: vm.into(),
        snapshot_time: "2026-12-04T100000Z".into(),
        disk: "disk0".into(),
        device,
        writable,
        clients: clients.iter().map(|c| c.parse().unwrap()).collect(),
        mtime: 1_700_000_000,
        meta: vec![("vm.json".into(), br#"{"name":"vm"}"#.to_vec())],
        files: overlay.map(|o| o.with_extension("files")),
    }
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("nfs://127.0.0.1{path}?nfsport={p}&mountport={p}", p = addr.port())
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("libnfs-utils (nfs-ls, nfs-cp) are installed by scripts/setup.sh");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// QEMU's `nfs://` driver asks the portmapper on port 111 (its URLs take
/// no port), so the tests that serve one take turns.
static PORT_111: std::sync::Mutex<()> = std::sync::Mutex::new(());
#[test]
fn libnfs_lists_copies_and_is_refused_where_it_should_be() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pattern(3 * 1024 * 1024 + 512);
    let raw = tmp.path().join("a.raw");
    std::fs::write(&raw, &data).unwrap();
    let rt = rt();
    let reg = Arc::new(Registry::default());
    reg.add(disk(&raw, "web/01", false, &["127.0.0.1"], None)).unwrap();
    // Another export only 10.9.9.9 may see: 127.0.0.1 must not.
    reg.add(disk(&raw, "secret", false, &["10.9.9.9"], None)).unwrap();
    let srv = NfsServer::start("127.0.0.1:0".parse().unwrap(), None, reg.clone(), rt.handle()).unwrap();
    let a = srv.local_addr();

    let (ok, out) = run(Command::new("nfs-ls").arg("-R").arg(url(a, "/")));
    assert!(ok, "nfs-ls: {out}");
    assert!(out.contains("web_01") && out.contains("disk0.img") && out.contains("disk0-flat.vmdk") && out.contains("disk0.vmdk"), "{out}");
    assert!(!out.contains("secret"), "a client saw an export it is not allowed: {out}");

    let copy = tmp.path().join("copy.raw");
    let (ok, out) = run(Command::new("nfs-cp").arg(url(a, "/web_01/2026-12-04T100000Z/disk0.img")).arg(&copy));
    assert!(ok, "nfs-cp: {out}");
    assert!(std::fs::read(&copy).unwrap() == data, "copied disk differs");

    let vmdk = tmp.path().join("d.vmdk");
    let (ok, out) = run(Command::new("nfs-cp").arg(url(a, "/web_01/2026-12-04T100000Z/disk0.vmdk")).arg(&vmdk));
    assert!(ok, "nfs-cp vmdk: {out}");
    let text = std::fs::read_to_string(&vmdk).unwrap();
    assert!(text.contains(&format!("RDONLY {} VMFS \"disk0-flat.vmdk\"", data.len() / 512)), "{text}");

    // Read-only: a WRITE is refused and the file is unchanged.
    let src = tmp.path().join("junk");
    std::fs::write(&src, vec![0xAAu8; 8192]).unwrap();
    let (ok, out) = run(Command::new("nfs-cp").arg(&src).arg(url(a, "/web_01/2026-12-04T100000Z/disk0.img")));
    assert!(!ok, "a read-only export took a write: {out}");
    assert!(std::fs::read(&raw).unwrap() == data);

    // A client no export names is refused at connect.
    reg.remove(1).unwrap();
    let (ok, out) = run(Command::new("nfs-ls").arg(url(a, "/")));
    assert!(!ok, "nfs-ls got in without being allowed: {out}");
    drop(srv);
}

#[test]
fn writable_export_writes_to_the_overlay_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pattern(1024 * 1024);
    let raw = tmp.path().join("b.raw");
    std::fs::write(&raw, &data).unwrap();
    let overlay = tmp.path().join("b.overlay");
    let rt = rt();
    let reg = Arc::new(Registry::default());
    reg.add(disk(&raw, "vm", true, &["127.0.0.0/8"], Some(&overlay))).unwrap();
    let srv = NfsServer::start("127.0.0.1:0".parse().unwrap(), None, reg.clone(), rt.handle()).unwrap();
    let a = srv.local_addr();
    // nfs-cp truncates nothing on an existing file: it writes from 0.
    let src = tmp.path().join("new");
    let new = vec![0x5Au8; 64 * 1024];
    std::fs::write(&src, &new).unwrap();
    let (ok, out) = run(Command::new("nfs-cp").arg(&src).arg(url(a, "/vm/2026-12-04T100000Z/disk0-flat.vmdk")));
    // nfs-cp may try to truncate first (SETATTR size), which a disk refuses;
    // what matters is that the base never changes.
    let back = tmp.path().join("back");
    let (ok2, out2) = run(Command::new("nfs-cp").arg(url(a, "/vm/2026-12-04T100000Z/disk0.img")).arg(&back));
    assert!(ok2, "{out2}");
    let got = std::fs::read(&back).unwrap();
    assert_eq!(got.len(), data.len());
    if ok {
        assert!(got[..new.len()] == new[..], "written bytes not read back");
    } else {
        eprintln!("nfs-cp write refused: {out}");
    }
    assert!(std::fs::read(&raw).unwrap() == data, "the base disk was written");
    drop(srv);
}

/// ESXi puts lock, swap and log files beside a running VM's disk: a
/// writable export takes new files in the snapshot directory (into its
/// files area, never beside the base disk), a read-only one refuses them,
/// and nobody can replace the fixed files.
#[test]
fn writable_export_takes_new_files_read_only_refuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pattern(1024 * 1024);
    let raw = tmp.path().join("c.raw");
    std::fs::write(&raw, &data).unwrap();
    let overlay = tmp.path().join("c.overlay");
    let rt = rt();
    let reg = Arc::new(Registry::default());
    reg.add(disk(&raw, "rw", true, &["127.0.0.1"], Some(&overlay))).unwrap();
    reg.add(disk(&raw, "ro", false, &["127.0.0.1"], None)).unwrap();
    let srv = NfsServer::start("127.0.0.1:0".parse().unwrap(), None, reg.clone(), rt.handle()).unwrap();
    let a = srv.local_addr();
    let dir = "/rw/2026-12-04T100000Z";

    let log = tmp.path().join("vmware.log");
    let text: Vec<u8> = (0..200_000u32).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    std::fs::write(&log, &text).unwrap();
    let (ok, out) = run(Command::new("nfs-cp").arg(&log).arg(url(a, &format!("{dir}/vmware.log"))));
    assert!(ok, "nfs-cp to a writable export: {out}");
    let (ok, out) = run(Command::new("nfs-cp").arg(&log).arg(url(a, &format!("{dir}/.lck-0001"))));
    assert!(ok, "nfs-cp of a lock file: {out}");
    let (ok, ls) = run(Command::new("nfs-ls").arg(url(a, dir)));
    assert!(ok && ls.contains("vmware.log") && ls.contains(".lck-0001") && ls.contains("disk0.img") && ls.contains("vm.json"), "{ls}");
    let back = tmp.path().join("back.log");
    let (ok, out) = run(Command::new("nfs-cp").arg(url(a, &format!("{dir}/vmware.log"))).arg(&back));
    assert!(ok, "{out}");
    assert!(std::fs::read(&back).unwrap() == text, "the file read back differs from the one written");
    let cat = Command::new("nfs-cat").arg(url(a, &format!("{dir}/vmware.log"))).output().unwrap();
    assert!(cat.status.success() && cat.stdout == text, "nfs-cat: {}", String::from_utf8_lossy(&cat.stderr));
    // Kept in the files area, beside the overlay; the base is untouched.
    let area = overlay.with_extension("files");
    assert!(std::fs::read(area.join("vmware.log")).unwrap() == text, "not in the files area {}", area.display());
    assert!(std::fs::read(&raw).unwrap() == data, "the base disk changed");
    let mut names: Vec<String> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["back.log", "c.files", "c.overlay", "c.overlay.bitmap", "c.raw", "vmware.log"], "files appeared outside the files area");

    // The metadata file reads as given and cannot be overwritten.
    let meta = tmp.path().join("vm.json");
    let (ok, out) = run(Command::new("nfs-cp").arg(url(a, &format!("{dir}/vm.json"))).arg(&meta));
    assert!(ok && std::fs::read(&meta).unwrap() == br#"{"name":"vm"}"#, "{out}");
    let (ok, out) = run(Command::new("nfs-cp").arg(&log).arg(url(a, &format!("{dir}/vm.json"))));
    assert!(!ok, "the metadata file was overwritten: {out}");

    // Read-only: no new files.
    let (ok, out) = run(Command::new("nfs-cp").arg(&log).arg(url(a, "/ro/2026-12-04T100000Z/vmware.log")));
    assert!(!ok, "a read-only export took a new file: {out}");
    let (_, ls) = run(Command::new("nfs-ls").arg(url(a, "/ro/2026-12-04T100000Z")));
    assert!(!ls.contains("vmware.log"), "{ls}");
    // Nor in the root or a VM directory of a writable export.
    let (ok, out) = run(Command::new("nfs-cp").arg(&log).arg(url(a, "/rw/stray.log")));
    assert!(!ok, "a file was made outside a snapshot directory: {out}");
    drop(srv);
}

/// QEMU's `nfs://` driver makes files too: `qemu-img create` is CREATE
/// plus SETATTR(size), as ESXi makes a `.vswp`.
#[test]
fn qemu_img_creates_a_sized_file_on_a_writable_export() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("d.raw");
    std::fs::write(&raw, pattern(1024 * 1024)).unwrap();
    let overlay = tmp.path().join("d.overlay");
    let rt = rt();
    let reg = Arc::new(Registry::default());
    reg.add(disk(&raw, "vm", true, &["127.0.0.1"], Some(&overlay))).unwrap();
    let _port_111 = PORT_111.lock().unwrap_or_else(|e| e.into_inner());
    let srv = NfsServer::start("127.0.0.1:0".parse().unwrap(), Some("127.0.0.1:111".parse().unwrap()), reg.clone(), rt.handle()).unwrap();
    assert!(srv.portmap_addr().is_some(), "port 111 is taken on this machine (rpcbind?)");
    let (ok, out) = run(Command::new("qemu-img").args(["create", "-f", "raw", "nfs://127.0.0.1/vm/2026-12-04T100000Z/vm-1.vswp", "3M"]));
    assert!(ok, "qemu-img create over nfs://: {out}");
    let f = overlay.with_extension("files").join("vm-1.vswp");
    assert_eq!(std::fs::metadata(&f).map(|m| m.len()).ok(), Some(3 << 20), "{out}");
    let (ok, out) = run(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x77 1M 64k", "-c", "read -P 0x77 1M 64k", "nfs://127.0.0.1/vm/2026-12-04T100000Z/vm-1.vswp"]));
    assert!(ok && !out.contains("Pattern verification failed"), "{out}");
    assert_eq!(std::fs::read(&f).unwrap()[1 << 20], 0x77);
    drop(srv);
}

/// Sends `bytes` on a fresh connection and reads until the server closes
/// or answers; never hangs longer than a few seconds.
fn poke(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() >= 4 {
                    break;
                }
            }
        }
    }
    out
}

fn record(body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() as u32) | 0x8000_0000).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn call(xid: u32, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for w in [xid, 0, 2, prog, vers, proc_, 0, 0, 0, 0] {
        b.extend_from_slice(&w.to_be_bytes());
    }
    b.extend_from_slice(args);
    record(&b)
}

#[test]
fn hostile_rpc_input_gets_an_error_or_a_close_and_the_server_stays_up() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("c.raw");
    std::fs::write(&raw, pattern(65536)).unwrap();
    let rt = rt();
    let reg = Arc::new(Registry::default());
    reg.add(disk(&raw, "vm", false, &["127.0.0.1"], None)).unwrap();
    let srv = NfsServer::start("127.0.0.1:0".parse().unwrap(), None, reg.clone(), rt.handle()).unwrap();
    let a = srv.local_addr();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a 2 GiB fragment header", (0x7fff_ffffu32 | 0x8000_0000).to_be_bytes().to_vec()),
        ("non-last fragments adding up", {
            let mut v = Vec::new();
            for _ in 0..40 {
                v.extend_from_slice(&(64 * 1024u32).to_be_bytes());
                v.extend(vec![0u8; 64 * 1024]);
            }
            v
        }),
        ("garbage XDR", record(&[0xff; 37])),
        ("a truncated call", record(&[0, 0, 0, 1, 0, 0])),
        ("a reply instead of a call", record(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])),
        ("an unknown program", call(7, 4242, 1, 0, &[])),
        ("an unknown NFS procedure", call(8, 100003, 3, 999, &[])),
        ("an unknown MOUNT procedure", call(9, 100005, 3, 77, &[])),
        ("NFS version 2", call(10, 100003, 2, 1, &[])),
        ("a file handle claiming 4 GiB", call(11, 100003, 3, 1, &[0xff, 0xff, 0xff, 0xfc])),
        ("a bad file handle", call(12, 100003, 3, 1, &[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])),
        ("READ with a huge count", {
            let mut args = vec![0, 0, 0, 8];
            args.extend([9u8; 8]);
            args.extend(0u64.to_be_bytes());
            args.extend(u32::MAX.to_be_bytes());
            call(13, 100003, 3, 6, &args)
        }),
        ("MOUNT of a 4 GiB path", call(14, 100005, 3, 1, &[0xff, 0xff, 0xff, 0xf0])),
        ("an abrupt disconnect mid-header", vec![0x80, 0]),
    ];
    for (what, bytes) in cases {
        let _ = poke(a, &bytes);
        // The server still answers a real client after each.
        let (ok, out) = run(Command::new("nfs-ls").arg(url(a, "/vm")));
        assert!(ok && out.contains("2026-12-04T100000Z"), "after {what}: nfs-ls failed: {out}");
    }
    drop(srv);
}

/// QEMU's `nfs://` driver (qemu-block-extra, libnfs) cannot be told a
/// port: it asks PORTMAP on 111, which the server answers too.
#[test]
fn qemu_io_writes_land_in_the_overlay_and_read_only_refuses_write() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pattern(2 * 1024 * 1024);
    let raw = tmp.path().join("q.raw");
    std::fs::write(&raw, &data).unwrap();
    let overlay = tmp.path().join("q.overlay");
    let rt = rt();
    let reg = Arc::new(Registry::default());
    let mut ro = disk(&raw, "ro", false, &["127.0.0.1"], None);
    ro.disk = "sda".into();
    reg.add(disk(&raw, "rw", true, &["127.0.0.1"], Some(&overlay))).unwrap();
    reg.add(ro).unwrap();
    let _port_111 = PORT_111.lock().unwrap_or_else(|e| e.into_inner());
    let srv = NfsServer::start("127.0.0.1:0".parse().unwrap(), Some("127.0.0.1:111".parse().unwrap()), reg.clone(), rt.handle()).unwrap();
    assert!(srv.portmap_addr().is_some(), "port 111 is taken on this machine (rpcbind?)");
    let rw = "nfs://127.0.0.1/rw/2026-12-04T100000Z/disk0.img";
    let (ok, out) = run(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x5a 4096 65536", "-c", "read -P 0x5a 4096 65536", rw]));
    assert!(ok && !out.contains("error") && !out.contains("Pattern verification failed"), "qemu-io on the writable export: {out}");
    let back = tmp.path().join("back");
    let (ok, out) = run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "raw", rw]).arg(&back));
    assert!(ok, "{out}");
    let got = std::fs::read(&back).unwrap();
    assert!(got[4096..4096 + 65536].iter().all(|b| *b == 0x5a) && got[..4096] == data[..4096] && got[70000..] == data[70000..]);
    assert!(std::fs::read(&raw).unwrap() == data, "the base disk was written");
    assert!(std::fs::metadata(&overlay).unwrap().len() > 0);

    let ro = "nfs://127.0.0.1/ro/2026-12-04T100000Z/sda.img";
    let (_, out) = run(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x11 0 4096", ro]));
    eprintln!("qemu-io write on the read-only export: {out}");
    assert!(out.contains("NFS3ERR_ROFS"), "the read-only export did not refuse WRITE: {out}");
    let (ok, out) = run(Command::new("qemu-io").args(["-f", "raw", "-r", "-c", "read 0 4096", ro]));
    assert!(ok, "{out}");
    assert!(std::fs::read(&raw).unwrap() == data);
    drop(srv);
}
