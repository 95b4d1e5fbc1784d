//! A real QEMU's disk mirrored into the journal: the initial copy lands
//! in it, and in sync mode a guest write has reached the journal by the
//! time QEMU reports it done.

use lifeboat_cdp::capture::{Capture, MirrorMode};
use lifeboat_cdp::{Journal, JournalOptions, JournalTarget, SyncPolicy};
use lifeboat_nbd::{Export, Server, ServerConfig};
use serde_json::json;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn at(j: &Journal, t: u64, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    j.read_at(t, off, &mut b).unwrap();
    b
}

#[test]
fn a_qemu_disk_is_copied_then_every_write_is_journaled_before_it_completes() {
    let d = tempfile::tempdir().unwrap();
    const SIZE: u64 = 16 << 20;
    let disk = d.path().join("disk.raw");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(SIZE).unwrap();
    f.write_all_at(&vec![0x5a; 2 << 20], 0).unwrap();
    drop(f);

    let journal = Arc::new(Journal::create(&d.path().join("journal"), SIZE, JournalOptions::default()).unwrap());
    let server = Server::new(ServerConfig::default());
    server.add_export(Export::new("target", Arc::new(JournalTarget::new(journal.clone(), SyncPolicy::EveryWrite))));
    let sock = d.path().join("nbd.sock");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    server.spawn_unix(&rt, &sock).unwrap();

    let qmp = d.path().join("qmp.sock");
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-S", "-display", "none", "-nodefaults", "-machine", "pc", "-m", "64", "-name", "cdp-test"]);
    c.arg("-drive").arg(format!("file={},format=raw,if=none,id=drv0", disk.display()));
    c.args(["-device", "virtio-blk-pci,drive=drv0,id=disk0"]);
    c.arg("-qmp").arg(format!("unix:{},server=on,wait=off", qmp.display()));
    let _qemu = Kill(c.stdin(Stdio::null()).spawn().expect("qemu-system-x86_64 runs"));
    for _ in 0..100 {
        if std::os::unix::net::UnixStream::connect(&qmp).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // A disk that is not there is named with the ones that are.
    let mut cap = Capture::connect(&qmp).unwrap();
    let e = cap.add(Some("nope"), &sock, "target", MirrorMode::Sync, Duration::from_secs(60)).err().unwrap();
    assert!(e.to_string().contains("disk0"), "{e}");
    assert_eq!(cap.vm_name().unwrap(), "cdp-test");
    assert_eq!(cap.add(Some("disk0"), &sock, "target", MirrorMode::Sync, Duration::from_secs(60)).unwrap().disk.size, SIZE);
    // The initial copy is in the journal.
    let copied = journal.range().expect("the initial copy wrote to the journal").1;
    assert!(at(&journal, u64::MAX, 0, 2 << 20).iter().all(|&b| b == 0x5a));
    assert!(at(&journal, u64::MAX, 2 << 20, 1 << 20).iter().all(|&b| b == 0));

    // A write through the VM's block layer: by the time QEMU says it is
    // done, the journal holds it (write-blocking).
    let r = cap.monitor().execute("human-monitor-command", json!({ "command-line": "qemu-io drv0 \"write -P 0x11 1M 64k\"" })).unwrap();
    assert!(!r.as_str().unwrap_or("").contains("error"), "{r}");
    assert!(at(&journal, u64::MAX, 1 << 20, 64 << 10).iter().all(|&b| b == 0x11), "the acknowledged write is not in the journal");
    // The moment before it still reads the copy.
    assert!(at(&journal, copied, 1 << 20, 64 << 10).iter().all(|&b| b == 0x5a));
    cap.check().unwrap();

    // Stopped: the VM keeps its own disk (which has the write too), the
    // target is gone from it.
    cap.stop().unwrap();
    let mut q = lifeboat_qemu::Qmp::connect(&qmp).unwrap();
    let nodes = q.execute("query-named-block-nodes", json!({})).unwrap();
    assert!(!nodes.to_string().contains("lbcdp-"), "{nodes}");
    assert!(q.execute("query-block-jobs", json!({})).unwrap().as_array().unwrap().is_empty());
    let r = q.execute("human-monitor-command", json!({ "command-line": "qemu-io drv0 \"read -P 0x11 1M 64k\"" })).unwrap();
    assert!(!r.as_str().unwrap_or("").contains("fail"), "{r}");
    let mut b = vec![0u8; 64 << 10];
    std::fs::File::open(&disk).unwrap().read_exact_at(&mut b, 1 << 20).unwrap();
    assert!(b.iter().all(|&x| x == 0x11));
    // Writes after the stop are not journaled.
    let before = journal.range().unwrap().1;
    q.execute("human-monitor-command", json!({ "command-line": "qemu-io drv0 \"write -P 0x22 0 4k\"" })).unwrap();
    assert_eq!(journal.range().unwrap().1, before);
}
