//! The server against real NBD clients: qemu-img, qemu-io, nbdinfo, nbdcopy.

mod common;

use std::sync::Arc;

use common::*;
use lifeboat_nbd::{BlockDevice, CowOverlay, FileDevice, ServerConfig};

fn ro_server(dir: &std::path::Path) -> (TestServer, std::path::PathBuf) {
    let img = dir.join("base.raw");
    make_image(&img);
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&img).unwrap());
    let cfg = ServerConfig { default_export: Some("disk".into()), ..Default::default() };
    (TestServer::start(cfg, vec![("disk", dev.clone()), ("other", dev)]), img)
}

#[test]
fn qemu_img_info_convert_compare_and_qemu_io_read() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, img) = ro_server(dir.path());
    let uri = srv.uri("disk");

    let info = run_ok("qemu-img", &["info", "--output=json", &uri]);
    assert!(info.contains(&format!("\"virtual-size\": {IMAGE_SIZE}")), "{info}");

    let out = dir.path().join("out.raw");
    run_ok("qemu-img", &["convert", "-f", "raw", "-O", "raw", &uri, out.to_str().unwrap()]);
    qemu_img_compare(img.to_str().unwrap(), out.to_str().unwrap());
    // Compare straight against the export too.
    qemu_img_compare(&uri, img.to_str().unwrap());

    let io = run_ok("qemu-io", &["-f", "raw", "-r", "-c", "read -P 0xab 0 1M", "-c", "read -P 0 1M 9M", "-c", "read -P 0xcd 40M 64k", &uri]);
    assert!(!io.contains("Pattern verification failed"), "{io}");
    assert!(io.contains("read 65536/65536 bytes"), "{io}");

    // The export is read-only: a write is refused.
    let w = run("qemu-io", &["-f", "raw", "-c", "write -P 0x11 0 4k", &uri]);
    let text = format!("{}{}", String::from_utf8_lossy(&w.stdout), String::from_utf8_lossy(&w.stderr));
    assert!(!w.status.success() || text.to_lowercase().contains("read-only") || text.contains("failed"), "{text}");
}

#[test]
fn nbdinfo_map_list_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, _) = ro_server(dir.path());
    let map = run_ok("nbdinfo", &["--map", &srv.uri("disk")]);
    // Data at 0 (1 MiB), a hole after it, data at 10 MiB.
    let lines: Vec<Vec<&str>> = map.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(lines.iter().any(|l| l.len() >= 4 && l[0] == "0" && l[3] == "data"), "{map}");
    assert!(lines.iter().any(|l| l[0] == "1048576" && l.join(" ").contains("hole,zero")), "{map}");
    assert!(lines.iter().any(|l| l[0] == "10485760" && l.last() == Some(&"data")), "{map}");
    let total: u64 = lines.iter().map(|l| l[1].parse::<u64>().unwrap()).sum();
    assert_eq!(total, IMAGE_SIZE, "{map}");

    let list = run_ok("nbdinfo", &["--list", &format!("nbd://127.0.0.1:{}", srv.addr.port())]);
    assert!(list.contains("export=\"disk\""), "{list}");
    assert!(list.contains("export=\"other\""), "{list}");
    assert!(list.contains("test export disk"), "{list}");

    let json = run_ok("nbdinfo", &["--json", &srv.uri("disk")]);
    for want in ["\"is_read_only\": true", "\"can_multi_conn\": true", "\"can_flush\": true", "\"block_size_maximum\": 33554432"] {
        assert!(json.contains(want), "missing {want} in {json}");
    }
    // The default export answers the empty name.
    let info = run_ok("nbdinfo", &["--size", &format!("nbd://127.0.0.1:{}", srv.addr.port())]);
    assert_eq!(info.trim(), IMAGE_SIZE.to_string());
    // An unknown export is refused by name.
    let bad = run("nbdinfo", &[&srv.uri("nope")]);
    assert!(!bad.status.success());
}

#[test]
fn nbdcopy_with_four_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, img) = ro_server(dir.path());
    let out = dir.path().join("copy.raw");
    run_ok("nbdcopy", &["--connections=4", "--requests=8", &srv.uri("disk"), out.to_str().unwrap()]);
    assert_eq!(sha(&img), sha(&out));
}

#[test]
fn cow_overlay_writes_and_base_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("base.raw");
    make_image(&img);
    let before = sha(&img);
    let ov = dir.path().join("overlay.raw");
    let cow = CowOverlay::open(FileDevice::open(&img).unwrap(), &ov).unwrap();
    let dev: Arc<dyn BlockDevice> = Arc::new(cow);
    let srv = TestServer::start(ServerConfig::default(), vec![("rw", dev)]);
    let uri = srv.uri("rw");

    let io = run_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x5a 100k 300k", // unaligned: copy-up at both ends
            "-c",
            "write -z 2M 1M", // write zeroes over data
            "-c",
            "discard 20M 1M",
            "-c",
            "flush",
            "-c",
            "read -P 0x5a 100k 300k",
            "-c",
            "read -P 0xab 0 100k", // base bytes around the write survive
            "-c",
            "read -P 0xab 400k 624k",
            "-c",
            "read -P 0 2M 1M",
            &uri,
        ],
    );
    assert!(!io.contains("Pattern verification failed") && !io.contains("failed"), "{io}");

    // Write a whole new image through four connections, then compare.
    let src = dir.path().join("src.raw");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(IMAGE_SIZE).unwrap();
        for i in 0..64u64 {
            if i % 3 != 0 {
                f.write_all_at(&vec![i as u8 + 1; 1 << 20], i << 20).unwrap();
            }
        }
    }
    run_ok("nbdcopy", &["--connections=4", src.to_str().unwrap(), &uri]);
    qemu_img_compare(&uri, src.to_str().unwrap());
    assert_eq!(before, sha(&img), "the base image changed");

    // Block status of the overlay shows where the copy zeroed things.
    let json = run_ok("nbdinfo", &["--json", &uri]);
    assert!(json.contains("\"is_read_only\": false"), "{json}");
    drop(srv);
    // Reopening the overlay (bitmap persisted) gives the same disk.
    let cow = CowOverlay::open(FileDevice::open(&img).unwrap(), &ov).unwrap();
    let dev: Arc<dyn BlockDevice> = Arc::new(cow);
    let srv = TestServer::start(ServerConfig::default(), vec![("rw", dev)]);
    qemu_img_compare(&srv.uri("rw"), src.to_str().unwrap());
}
