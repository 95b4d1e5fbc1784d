//! Our small client against our server and against QEMU's qemu-nbd:
//! reads (data and holes), block status maps, unknown exports.

mod common;

use std::sync::Arc;

use common::*;
use lifeboat_nbd::client::{ClientError, NbdClient, STATE_HOLE, STATE_ZERO};
use lifeboat_nbd::{BlockDevice, FileDevice, ServerConfig};

#[test]
fn client_reads_and_maps_our_server() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("base.raw");
    make_image(&img);
    let want = std::fs::read(&img).unwrap();
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&img).unwrap());
    let srv = TestServer::start(ServerConfig::default(), vec![("disk", dev)]);

    let mut c = NbdClient::connect(&srv.uri("disk"), &["base:allocation"]).unwrap();
    assert_eq!(c.size(), want.len() as u64);
    assert!(c.read_only());
    // Whole image in 1 MiB reads, holes included.
    let mut got = Vec::new();
    let mut off = 0u64;
    while off < c.size() {
        let n = (c.size() - off).min(1 << 20) as u32;
        got.extend(c.read(off, n).unwrap());
        off += n as u64;
    }
    assert!(got == want, "client read differs from the image");
    // The map agrees with the file's holes: every hole extent reads as zeros,
    // and there is at least one hole and one data extent.
    let map = c.map("base:allocation").unwrap();
    assert_eq!(map.iter().map(|e| e.1).sum::<u64>(), want.len() as u64);
    assert!(map.iter().any(|e| e.2 & STATE_HOLE != 0) && map.iter().any(|e| e.2 == 0), "{map:?}");
    for (o, l, f) in &map {
        if f & STATE_ZERO != 0 {
            assert!(want[*o as usize..(*o + *l) as usize].iter().all(|b| *b == 0));
        }
    }
    // Past the end: the server's error, named.
    let e = c.read(c.size() - 10, 100).unwrap_err();
    assert!(matches!(e, ClientError::Command { .. }), "{e}");
    // The connection still works after an error.
    assert_eq!(c.read(0, 16).unwrap(), want[..16]);
    c.disconnect();

    match NbdClient::connect(&srv.uri("nope"), &[]) {
        Err(ClientError::NoExport { name, .. }) => assert_eq!(name, "nope"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("connected to a missing export"),
    }
    match NbdClient::connect(&srv.uri("disk"), &["qemu:dirty-bitmap:x"]) {
        Err(ClientError::NoContext { .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a context the server lacks was accepted"),
    }
}
