//! The journal behind our NBD server, driven by QEMU's own NBD client
//! (`qemu-io`, `qemu-img`): writes land in the journal as they are
//! acknowledged, and each moment reads back exactly as it was.

use lifeboat_cdp::{Journal, JournalOptions, JournalTarget, PointInTime, SyncPolicy};
use lifeboat_nbd::{Export, Server, ServerConfig};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn qemu_io(sock: &Path, export: &str, read_only: bool, cmds: &[&str]) -> (bool, String) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw"]);
    if read_only {
        c.arg("-r");
    }
    c.arg(format!("nbd+unix:///{export}?socket={}", sock.display()));
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let o = c.output().expect("qemu-io runs");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.success() && !text.contains("failed") && !text.contains("error"), text)
}

#[test]
fn qemu_writes_through_the_target_and_reads_every_moment_back() {
    let d = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::create(&d.path().join("journal"), 16 << 20, JournalOptions::default()).unwrap());
    let server = Server::new(ServerConfig::default());
    server.add_export(Export::new("target", Arc::new(JournalTarget::new(journal.clone(), SyncPolicy::EveryWrite))));
    let sock = d.path().join("nbd.sock");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    server.spawn_unix(&rt, &sock).unwrap();

    // Three moments: a 64 KiB pattern, another over its second half and
    // beyond, then zeroes in the middle.
    let (ok, out) = qemu_io(&sock, "target", false, &["write -P 0xaa 0 64k"]);
    assert!(ok, "{out}");
    let t1 = journal.range().unwrap().1;
    let (ok, out) = qemu_io(&sock, "target", false, &["write -P 0xbb 32k 64k"]);
    assert!(ok, "{out}");
    let t2 = journal.range().unwrap().1;
    let (ok, out) = qemu_io(&sock, "target", false, &["write -z 40k 8k", "flush"]);
    assert!(ok, "{out}");
    assert!(t1 < t2 && t2 < journal.range().unwrap().1);

    // The live target reads as now.
    let (ok, out) = qemu_io(&sock, "target", true, &["read -P 0xaa 0 32k", "read -P 0xbb 32k 8k", "read -P 0 40k 8k", "read -P 0xbb 48k 48k", "read -P 0 96k 32k"]);
    assert!(ok, "{out}");

    // Each moment as an export of its own, read-only.
    server.add_export(Export::new("t1", Arc::new(PointInTime::new(journal.clone(), t1))));
    server.add_export(Export::new("t2", Arc::new(PointInTime::new(journal.clone(), t2))));
    let (ok, out) = qemu_io(&sock, "t1", true, &["read -P 0xaa 0 64k", "read -P 0 64k 64k"]);
    assert!(ok, "{out}");
    let (ok, out) = qemu_io(&sock, "t2", true, &["read -P 0xaa 0 32k", "read -P 0xbb 32k 64k"]);
    assert!(ok, "{out}");
    // A wrong expectation is caught (the check above can fail).
    let (ok, _) = qemu_io(&sock, "t1", true, &["read -P 0xbb 32k 8k"]);
    assert!(!ok, "qemu-io should see 0xaa at t1, not 0xbb");
    // A point in time is never written.
    let (ok, out) = qemu_io(&sock, "t1", false, &["write -P 0xcc 0 4k"]);
    assert!(!ok, "a point in time took a write: {out}");

    // The whole volume at t2, copied out by qemu-img, byte for byte.
    let out = d.path().join("t2.raw");
    let st = Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "raw"]).arg(format!("nbd+unix:///t2?socket={}", sock.display())).arg(&out).status().unwrap();
    assert!(st.success());
    let got = std::fs::read(&out).unwrap();
    let mut want = vec![0u8; 16 << 20];
    want[..64 << 10].fill(0xaa);
    want[32 << 10..96 << 10].fill(0xbb);
    assert!(got == want, "the copy of t2 differs");
    drop(rt);
    for e in ["target", "t1", "t2"] {
        server.remove_export(e);
    }
    drop(server);

    // Closed and opened again (as after a restart), the moments stay.
    let journal = Arc::try_unwrap(journal).ok().expect("no other user of the journal");
    journal.close().unwrap();
    let journal = Journal::open(&d.path().join("journal")).unwrap();
    let mut b = vec![0u8; 16 << 10];
    journal.read_at(t1, 32 << 10, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0xaa));
    journal.read_at(u64::MAX, 40 << 10, &mut b[..8192]).unwrap();
    assert!(b[..8192].iter().all(|&x| x == 0));
}
