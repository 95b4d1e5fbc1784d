//! A seeded mutation fuzzer for the whole RPC path (record marking, XDR
//! decoding, MOUNT/NFS/PORTMAP dispatch, our file system) run as a normal
//! test: well-formed calls with a real file handle are mutated (bit
//! flips, length fields set to huge values, truncation, garbage appended,
//! bad record marks) and fed to `Service::serve` over in-memory pipes.
//! Checks: no panic anywhere (also in the server's spawned tasks, caught
//! by a panic hook), every connection ends within 10 s of the client
//! closing, and the service still mounts afterwards.

use lifeboat_nbd::{BlockDevice, FileDevice};
use lifeboat_nfs::{NfsDisk, Registry, Service};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static PANICS: AtomicUsize = AtomicUsize::new(0);

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn call(xid: u32, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for w in [xid, 0, 2, prog, vers, proc_, 0, 0, 0, 0] {
        b.extend_from_slice(&w.to_be_bytes());
    }
    b.extend_from_slice(args);
    b
}

fn opaque(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v.resize(v.len() + (4 - b.len() % 4) % 4, 0);
    v
}

fn record(body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() as u32) | 0x8000_0000).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Sends `bytes`, closes the write side, collects the replies.
async fn session(svc: &Service, bytes: Vec<u8>) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let svc = svc.clone();
    let task = tokio::spawn(async move { svc.serve(server, "127.0.0.1:999".parse().unwrap()).await });
    let _ = client.write_all(&bytes).await;
    let _ = client.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut out)).await;
    let done = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(done.is_ok(), "a connection did not end within 10 s of the client closing");
    out
}

/// Sends one call and waits for its reply (status words and all).
async fn exchange(svc: &Service, call: &[u8]) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let svc2 = svc.clone();
    let task = tokio::spawn(async move { svc2.serve(server, "127.0.0.1:997".parse().unwrap()).await });
    client.write_all(&record(call)).await.unwrap();
    let mut mark = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut mark)).await.expect("no reply").unwrap();
    let mut r = vec![0u8; (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize];
    client.read_exact(&mut r).await.unwrap();
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await.expect("the connection did not end");
    r
}

/// MOUNT MNT `path` and the file handle from its reply.
async fn mount(svc: &Service, path: &str) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let svc2 = svc.clone();
    let task = tokio::spawn(async move { svc2.serve(server, "127.0.0.1:998".parse().unwrap()).await });
    client.write_all(&record(&call(1, 100005, 3, 1, &opaque(path.as_bytes())))).await.unwrap();
    let mut mark = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut mark)).await.expect("no MNT reply").unwrap();
    let mut r = vec![0u8; (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize];
    client.read_exact(&mut r).await.unwrap();
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await.expect("the MNT connection did not end");
    let r: Vec<u8> = mark.iter().copied().chain(r).collect();
    assert!(r.len() > 32, "no MNT reply: {r:?}");
    let status = u32::from_be_bytes(r[28..32].try_into().unwrap());
    assert_eq!(status, 0, "MNT failed: {r:?}");
    let len = u32::from_be_bytes(r[32..36].try_into().unwrap()) as usize;
    r[36..36 + len].to_vec()
}

#[test]
fn mutated_rpc_calls_never_panic_or_hang() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |i| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        prev(i)
    }));
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("f.raw");
    std::fs::write(&raw, vec![7u8; 256 * 1024]).unwrap();
    let reg = Arc::new(Registry::default());
    let device: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&raw).unwrap());
    reg.add(NfsDisk {
        vm: "vm".into(),
        snapshot_time: "t".into(),
        disk: "d".into(),
        device,
        writable: false,
        clients: vec!["127.0.0.1".parse().unwrap()],
        mtime: 0,
        meta: vec![("vm.json".into(), b"{}".to_vec())],
        files: None,
    })
    .unwrap();
    // A writable export too: its snapshot directory takes new files into
    // a files area, the one place a client's names reach the host.
    let wraw = tmp.path().join("w.raw");
    std::fs::write(&wraw, vec![9u8; 64 * 1024]).unwrap();
    let area = tmp.path().join("area");
    let wdev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&wraw).unwrap());
    reg.add(NfsDisk {
        vm: "vw".into(),
        snapshot_time: "t".into(),
        disk: "d".into(),
        device: wdev,
        writable: true,
        clients: vec!["127.0.0.1".parse().unwrap()],
        mtime: 0,
        meta: Vec::new(),
        files: Some(area.clone()),
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let svc = Service::new(reg.clone(), 2049);
        let root = mount(&svc, "/").await;
        let fh = opaque(&root);
        let wdir = opaque(&mount(&svc, "/vw/t").await);
        let with = |parts: &[&[u8]]| -> Vec<u8> { parts.concat() };
        let create_log = call(17, 100003, 3, 8, &with(&[&wdir, &opaque(b"vmware.log"), &0u32.to_be_bytes(), &[0u8; 24]]));
        let seeds: Vec<Vec<u8>> = vec![
            call(2, 100003, 3, 0, &[]),
            call(3, 100003, 3, 1, &fh),
            call(4, 100003, 3, 3, &with(&[&fh, &opaque(b"vm")])),
            call(5, 100003, 3, 6, &with(&[&fh, &0u64.to_be_bytes(), &4096u32.to_be_bytes()])),
            call(6, 100003, 3, 7, &with(&[&fh, &0u64.to_be_bytes(), &4u32.to_be_bytes(), &2u32.to_be_bytes(), &opaque(b"abcd")])),
            call(7, 100003, 3, 17, &with(&[&fh, &0u64.to_be_bytes(), &[0u8; 8], &4096u32.to_be_bytes(), &8192u32.to_be_bytes()])),
            call(8, 100003, 3, 16, &with(&[&fh, &0u64.to_be_bytes(), &[0u8; 8], &4096u32.to_be_bytes()])),
            call(9, 100003, 3, 19, &fh),
            call(10, 100003, 3, 18, &fh),
            call(11, 100003, 3, 4, &with(&[&fh, &31u32.to_be_bytes()])),
            call(12, 100003, 3, 21, &with(&[&fh, &0u64.to_be_bytes(), &0u32.to_be_bytes()])),
            call(13, 100003, 3, 8, &with(&[&fh, &opaque(b"new"), &0u32.to_be_bytes()])),
            call(14, 100005, 3, 1, &opaque(b"/vm/t")),
            // In the writable snapshot directory: CREATE, MKDIR, LOOKUP,
            // READDIR, REMOVE, RENAME (names a client should never get
            // past: "..", "a/b", empty).
            create_log.clone(),
            call(18, 100003, 3, 9, &with(&[&wdir, &opaque(b"sub"), &[0u8; 24]])),
            call(19, 100003, 3, 8, &with(&[&wdir, &opaque(b"../escape"), &0u32.to_be_bytes(), &[0u8; 24]])),
            call(20, 100003, 3, 3, &with(&[&wdir, &opaque(b"vmware.log")])),
            call(21, 100003, 3, 16, &with(&[&wdir, &0u64.to_be_bytes(), &[0u8; 8], &4096u32.to_be_bytes()])),
            call(22, 100003, 3, 12, &with(&[&wdir, &opaque(b"vmware.log")])),
            call(23, 100003, 3, 14, &with(&[&wdir, &opaque(b"sub"), &wdir, &opaque(b"..")])),
            call(24, 100003, 3, 14, &with(&[&wdir, &opaque(b"vmware.log"), &wdir, &opaque(b"d.img")])),
            call(15, 100005, 3, 5, &[]),
            call(16, 100000, 2, 3, &with(&[&100003u32.to_be_bytes(), &3u32.to_be_bytes(), &6u32.to_be_bytes(), &0u32.to_be_bytes()])),
        ];
        // The seeds reach the files area as they are.
        let reply = exchange(&svc, &create_log).await;
        assert!(area.join("vmware.log").is_file(), "the CREATE seed made no file in the files area: {reply:?}");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _round in 0..5000 {
            let mut stream = Vec::new();
            for _ in 0..1 + rng.below(4) {
                let mut m = seeds[rng.below(seeds.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    match rng.below(6) {
                        0 if !m.is_empty() => {
                            let i = rng.below(m.len());
                            m[i] ^= 1 << rng.below(8);
                        }
                        1 if m.len() >= 4 => {
                            // A length or count field claims gigabytes.
                            let i = rng.below(m.len() / 4) * 4;
                            m[i..i + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0xf0 | rng.below(16) as u8]);
                        }
                        2 => m.truncate(rng.below(m.len())),
                        3 => m.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
                        4 if !m.is_empty() => {
                            let i = rng.below(m.len());
                            m[i] = rng.next() as u8;
                        }
                        _ => {}
                    }
                }
                if rng.below(10) == 0 {
                    // A record mark that lies about the length.
                    let mut r = (((m.len() + rng.below(100)) as u32) | if rng.below(2) == 0 { 0x8000_0000 } else { 0 }).to_be_bytes().to_vec();
                    r.extend_from_slice(&m);
                    stream.extend(r);
                } else {
                    stream.extend(record(&m));
                }
            }
            session(&svc, stream).await;
        }
        // Still serving; and give requests still in flight time to finish.
        assert_eq!(mount(&svc, "/").await, root);
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    // Whatever clients made is inside the files area.
    let mut names: Vec<String> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert!(names.iter().all(|n| ["area", "f.raw", "w.raw"].contains(&n.as_str())), "mutated calls made files outside the files area: {names:?}");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the server panicked on mutated input (see stderr)");
}
