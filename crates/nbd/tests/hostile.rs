//! Malformed and hostile input: every case gets the protocol's error reply
//! or a clean close, and the server goes on serving other clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lifeboat_nbd::proto::*;
use lifeboat_nbd::{BlockDevice, FileDevice, ServerConfig};

struct Raw {
    s: TcpStream,
}

impl Raw {
    fn connect(srv: &TestServer) -> Raw {
        let s = TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = Raw { s };
        let mut g = [0u8; 18];
        r.s.read_exact(&mut g).unwrap();
        assert_eq!(&g[0..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(u16::from_be_bytes([g[16], g[17]]), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        r.s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes()).unwrap();
        r
    }
    fn opt(&mut self, opt: u32, data: &[u8]) {
        let mut v = Vec::new();
        v.extend_from_slice(&IHAVEOPT.to_be_bytes());
        v.extend_from_slice(&opt.to_be_bytes());
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        self.s.write_all(&v).unwrap();
    }
    /// Next option reply: (type, data).
    fn opt_reply(&mut self) -> (u32, Vec<u8>) {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(u64::from_be_bytes(h[0..8].try_into().unwrap()), REPLY_MAGIC);
        let t = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let n = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut d = vec![0u8; n as usize];
        self.s.read_exact(&mut d).unwrap();
        (t, d)
    }
    fn go(&mut self, name: &str, structured: bool) {
        if structured {
            self.opt(OPT_STRUCTURED_REPLY, &[]);
            assert_eq!(self.opt_reply().0, REP_ACK);
            let mut m = Vec::new();
            m.extend_from_slice(&(name.len() as u32).to_be_bytes());
            m.extend_from_slice(name.as_bytes());
            m.extend_from_slice(&1u32.to_be_bytes());
            m.extend_from_slice(&(BASE_ALLOCATION.len() as u32).to_be_bytes());
            m.extend_from_slice(BASE_ALLOCATION.as_bytes());
            self.opt(OPT_SET_META_CONTEXT, &m);
            let (t, d) = self.opt_reply();
            assert_eq!(t, REP_META_CONTEXT);
            assert_eq!(&d[4..], BASE_ALLOCATION.as_bytes());
            assert_eq!(self.opt_reply().0, REP_ACK);
        }
        self.opt(OPT_GO, &info_payload(name));
        loop {
            let (t, _) = self.opt_reply();
            if t == REP_ACK {
                break;
            }
            assert_eq!(t, REP_INFO);
        }
    }
    fn req(&mut self, cmd: u16, flags: u16, cookie: u64, offset: u64, len: u32) {
        let r = Request { flags, cmd, cookie, offset, len };
        self.s.write_all(&encode_request(&r)).unwrap();
    }
    /// Simple reply: (errno, cookie).
    fn simple(&mut self) -> (u32, u64) {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(u32::from_be_bytes(h[0..4].try_into().unwrap()), SIMPLE_REPLY_MAGIC);
        (u32::from_be_bytes(h[4..8].try_into().unwrap()), u64::from_be_bytes(h[8..16].try_into().unwrap()))
    }
    /// Structured chunk: (flags, type, cookie, payload).
    fn chunk(&mut self) -> (u16, u16, u64, Vec<u8>) {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(u32::from_be_bytes(h[0..4].try_into().unwrap()), STRUCTURED_REPLY_MAGIC);
        let n = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut d = vec![0u8; n as usize];
        self.s.read_exact(&mut d).unwrap();
        (u16::from_be_bytes([h[4], h[5]]), u16::from_be_bytes([h[6], h[7]]), u64::from_be_bytes(h[8..16].try_into().unwrap()), d)
    }
    /// True if the server closed the connection (EOF, not a timeout).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn info_payload(name: &str) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&(name.len() as u32).to_be_bytes());
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&1u16.to_be_bytes());
    d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    d
}

fn setup() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("base.raw");
    make_image(&img);
    let ro: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&img).unwrap());
    let rw_path = dir.path().join("rw.raw");
    std::fs::copy(&img, &rw_path).unwrap();
    let rw: Arc<dyn BlockDevice> = Arc::new(FileDevice::open_writable(&rw_path).unwrap());
    let srv = TestServer::start(ServerConfig::default(), vec![("disk", ro), ("rw", rw)]);
    (dir, srv)
}

/// A well-behaved client still gets served.
fn still_serving(srv: &TestServer) {
    let mut c = Raw::connect(srv);
    c.go("disk", true);
    c.req(CMD_READ, 0, 1, 0, 4096);
    let (flags, t, cookie, d) = c.chunk();
    assert_eq!((flags & REPLY_FLAG_DONE, t, cookie), (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 1));
    assert!(d[8..].iter().all(|&b| b == 0xab));
    c.req(CMD_DISC, 0, 2, 0, 0);
    assert!(c.closed());
}

#[test]
fn handshake_abuse() {
    let (_d, srv) = setup();

    // Bad option magic: closed.
    let mut c = Raw::connect(&srv);
    c.s.write_all(&[0x55; 16]).unwrap();
    assert!(c.closed());

    // Unknown client flags: closed.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    s.write_all(&0xffff_ffffu32.to_be_bytes()).unwrap();
    let mut c = Raw { s };
    assert!(c.closed());

    // Huge option length: an error, then closed, without reading 4 GiB.
    let mut c = Raw::connect(&srv);
    let mut v = Vec::new();
    v.extend_from_slice(&IHAVEOPT.to_be_bytes());
    v.extend_from_slice(&OPT_GO.to_be_bytes());
    v.extend_from_slice(&u32::MAX.to_be_bytes());
    c.s.write_all(&v).unwrap();
    assert_eq!(c.opt_reply().0, REP_ERR_TOO_BIG);
    assert!(c.closed());

    // Unknown options, bad payloads, unknown export: errors, the session goes on.
    let mut c = Raw::connect(&srv);
    c.opt(99, b"whatever");
    assert_eq!(c.opt_reply().0, REP_ERR_UNSUP);
    c.opt(OPT_GO, &[0, 0, 0, 200, b'x']); // name length beyond the payload
    assert_eq!(c.opt_reply().0, REP_ERR_INVALID);
    c.opt(OPT_INFO, &info_payload("nope"));
    assert_eq!(c.opt_reply().0, REP_ERR_UNKNOWN);
    c.opt(OPT_LIST, b"junk");
    assert_eq!(c.opt_reply().0, REP_ERR_INVALID);
    c.opt(OPT_STARTTLS, &[]);
    assert_eq!(c.opt_reply().0, REP_ERR_UNSUP); // no TLS configured
    let mut m = Vec::new();
    m.extend_from_slice(&4u32.to_be_bytes());
    m.extend_from_slice(b"disk");
    m.extend_from_slice(&0u32.to_be_bytes());
    c.opt(OPT_SET_META_CONTEXT, &m); // before structured replies
    assert_eq!(c.opt_reply().0, REP_ERR_INVALID);
    c.opt(OPT_LIST_META_CONTEXT, &m); // list with no queries: all contexts
    let (t, d) = c.opt_reply();
    assert_eq!((t, &d[4..]), (REP_META_CONTEXT, BASE_ALLOCATION.as_bytes()));
    assert_eq!(c.opt_reply().0, REP_ACK);
    c.opt(OPT_ABORT, &[]);
    assert_eq!(c.opt_reply().0, REP_ACK);
    assert!(c.closed());

    // NBD_OPT_EXPORT_NAME of an unknown export: closed (no error reply exists).
    let mut c = Raw::connect(&srv);
    c.opt(OPT_EXPORT_NAME, b"nope");
    assert!(c.closed());
    // ... and of a known one: size, flags, no zeroes.
    let mut c = Raw::connect(&srv);
    c.opt(OPT_EXPORT_NAME, b"disk");
    let mut b = [0u8; 10];
    c.s.read_exact(&mut b).unwrap();
    assert_eq!(u64::from_be_bytes(b[0..8].try_into().unwrap()), IMAGE_SIZE);
    let flags = u16::from_be_bytes([b[8], b[9]]);
    assert!(flags & TF_READ_ONLY != 0 && flags & TF_CAN_MULTI_CONN != 0);
    c.req(CMD_READ, 0, 5, 0, 512);
    assert_eq!(c.simple(), (0, 5));
    let mut data = [0u8; 512];
    c.s.read_exact(&mut data).unwrap();
    assert!(data.iter().all(|&x| x == 0xab));

    // Abrupt disconnect in the middle of an option.
    let mut c = Raw::connect(&srv);
    c.s.write_all(&IHAVEOPT.to_be_bytes()[..5]).unwrap();
    drop(c);

    still_serving(&srv);
}

#[test]
fn transmission_abuse() {
    let (_d, srv) = setup();
    let mut c = Raw::connect(&srv);
    c.go("disk", true);

    // Read past the end, overflowing offset, huge length, zero length.
    for (cookie, off, len, want) in [(10, IMAGE_SIZE - 10, 4096u32, EINVAL), (11, u64::MAX - 10, 4096, EINVAL), (12, 0, u32::MAX, EINVAL), (13, 0, 0, EINVAL), (14, IMAGE_SIZE, 1, EINVAL)] {
        c.req(CMD_READ, 0, cookie, off, len);
        let (f, t, ck, d) = c.chunk();
        assert_eq!((f, t, ck), (REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie));
        assert_eq!(u32::from_be_bytes(d[0..4].try_into().unwrap()), want);
    }
    // DF with a too-large read: EOVERFLOW.
    c.req(CMD_READ, CMD_FLAG_DF, 15, 0, MAX_PAYLOAD + 1);
    let (_, t, _, d) = c.chunk();
    assert_eq!((t, u32::from_be_bytes(d[0..4].try_into().unwrap())), (REPLY_TYPE_ERROR, EOVERFLOW));
    // Unknown command and unknown flags: EINVAL.
    c.req(42, 0, 16, 0, 512);
    assert_eq!(c.simple(), (EINVAL, 16));
    c.req(CMD_FLUSH, 0x8000, 17, 0, 0);
    assert_eq!(c.simple(), (EINVAL, 17));
    // Writes to a read-only export: EPERM, and the payload is skipped.
    c.req(CMD_WRITE, 0, 18, 0, 8192);
    c.s.write_all(&[0x77; 8192]).unwrap();
    assert_eq!(c.simple(), (EPERM, 18));
    c.req(CMD_TRIM, 0, 19, 0, 8192);
    assert_eq!(c.simple(), (EPERM, 19));
    // Still in step: a read works, with a hole chunk for the hole.
    c.req(CMD_READ, 0, 20, (1 << 20) - 4096, 8192);
    let (f1, t1, _, d1) = c.chunk();
    assert_eq!((f1, t1), (0, REPLY_TYPE_OFFSET_DATA));
    assert_eq!(d1.len(), 8 + 4096);
    let (f2, t2, _, d2) = c.chunk();
    assert_eq!((f2, t2), (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_HOLE));
    assert_eq!(u64::from_be_bytes(d2[0..8].try_into().unwrap()), 1 << 20);
    assert_eq!(u32::from_be_bytes(d2[8..12].try_into().unwrap()), 4096);
    // Block status past the end is clipped; REQ_ONE gives one extent.
    c.req(CMD_BLOCK_STATUS, 0, 21, IMAGE_SIZE - 65536, u32::MAX);
    let (f, t, _, d) = c.chunk();
    assert_eq!((f, t), (REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS));
    let total: u64 = d[4..].chunks(8).map(|e| u32::from_be_bytes(e[0..4].try_into().unwrap()) as u64).sum();
    assert_eq!(total, 65536);
    c.req(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 22, 0, 32 << 20);
    let (_, _, _, d) = c.chunk();
    assert_eq!(d.len(), 4 + 8);
    assert_eq!(u32::from_be_bytes(d[4..8].try_into().unwrap()), 1 << 20);
    // Many requests in flight: all answered, by cookie.
    for i in 0..64u64 {
        c.req(CMD_READ, CMD_FLAG_DF, 1000 + i, i * 4096, 4096);
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..64 {
        let (f, t, ck, d) = c.chunk();
        assert_eq!((f, t, d.len()), (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 8 + 4096));
        seen.insert(ck);
    }
    assert_eq!(seen.len(), 64);
    // Bad request magic: closed.
    c.s.write_all(&[0u8; 28]).unwrap();
    assert!(c.closed());

    // Block status without a selected context: EINVAL.
    let mut c = Raw::connect(&srv);
    c.opt(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(c.opt_reply().0, REP_ACK);
    c.opt(OPT_GO, &info_payload("disk"));
    while c.opt_reply().0 != REP_ACK {}
    c.req(CMD_BLOCK_STATUS, 0, 1, 0, 4096);
    let (_, t, _, d) = c.chunk();
    assert_eq!((t, u32::from_be_bytes(d[0..4].try_into().unwrap())), (REPLY_TYPE_ERROR, EINVAL));

    // A write with a huge length: closed, nothing allocated.
    let mut c = Raw::connect(&srv);
    c.go("rw", false);
    c.req(CMD_WRITE, 0, 1, 0, u32::MAX);
    assert!(c.closed());

    // A write past the end on a writable export: ENOSPC, payload skipped.
    let mut c = Raw::connect(&srv);
    c.go("rw", false);
    c.req(CMD_WRITE, 0, 2, IMAGE_SIZE - 100, 200);
    c.s.write_all(&[1u8; 200]).unwrap();
    assert_eq!(c.simple(), (ENOSPC, 2));
    c.req(CMD_WRITE, CMD_FLAG_FUA, 3, 4096, 4);
    c.s.write_all(b"abcd").unwrap();
    assert_eq!(c.simple(), (0, 3));
    c.req(CMD_READ, 0, 4, 4096, 4);
    assert_eq!(c.simple(), (0, 4));
    let mut b = [0u8; 4];
    c.s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"abcd");
    // Abrupt disconnect halfway through a write payload.
    c.req(CMD_WRITE, 0, 5, 0, 1 << 20);
    c.s.write_all(&[9u8; 1000]).unwrap();
    drop(c);

    // A connection that stops mid-header.
    let mut c = Raw::connect(&srv);
    c.go("disk", false);
    c.s.write_all(&REQUEST_MAGIC.to_be_bytes()).unwrap();
    drop(c);

    still_serving(&srv);
}

/// A device whose reads at offset 0 take two seconds.
struct Slow;

impl BlockDevice for Slow {
    fn size(&self) -> u64 {
        1 << 20
    }
    fn read_at(&self, off: u64, len: u32) -> std::io::Result<Vec<lifeboat_nbd::ReadChunk>> {
        if off == 0 {
            std::thread::sleep(Duration::from_secs(2));
        }
        Ok(vec![lifeboat_nbd::ReadChunk::Data(vec![off as u8; len as usize].into())])
    }
}

#[test]
fn slow_read_stalls_neither_the_connection_nor_others() {
    let dev: Arc<dyn BlockDevice> = Arc::new(Slow);
    let srv = TestServer::start(ServerConfig::default(), vec![("slow", dev)]);
    let mut a = Raw::connect(&srv);
    a.go("slow", false);
    let t0 = std::time::Instant::now();
    a.req(CMD_READ, 0, 1, 0, 512); // slow
    a.req(CMD_READ, 0, 2, 4096, 512); // fast, sent after

    // The fast one is answered first, long before the slow one.
    assert_eq!(a.simple(), (0, 2));
    let mut buf = [0u8; 512];
    a.s.read_exact(&mut buf).unwrap();
    assert!(t0.elapsed() < Duration::from_millis(1500), "{:?}", t0.elapsed());
    // Another connection is served meanwhile.
    let mut b = Raw::connect(&srv);
    b.go("slow", false);
    b.req(CMD_READ, 0, 3, 8192, 512);
    assert_eq!(b.simple(), (0, 3));
    assert!(t0.elapsed() < Duration::from_millis(1500), "{:?}", t0.elapsed());
    assert_eq!(a.simple(), (0, 1));
}

#[test]
fn unix_socket_with_qemu_img() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("base.raw");
    make_image(&img);
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&img).unwrap());
    let srv = TestServer::start(ServerConfig::default(), vec![]);
    srv.server.add_export(lifeboat_nbd::Export::new("disk", dev));
    let sock = dir.path().join("nbd.sock");
    let l = srv.rt.block_on(async { tokio::net::UnixListener::bind(&sock) }).unwrap();
    let s = srv.server.clone();
    srv.rt.spawn(async move { s.serve_unix(l).await });
    let uri = format!("nbd+unix:///disk?socket={}", sock.display());
    qemu_img_compare(&uri, img.to_str().unwrap());
    // Exports come and go while the server runs.
    assert!(srv.server.remove_export("disk").is_some());
    assert!(!run("qemu-img", &["info", &uri]).status.success());
}
