//! A whole NFS connection (record marking, MOUNT/NFS/PORTMAP decoding and
//! dispatch, our file system) fed arbitrary client bytes over an
//! in-memory pipe. Two exports are served: a read-only disk and a
//! writable one whose snapshot directory takes new files into a files
//! area. The markers `@ROOT@` and `@WDIR@` in the input are replaced by
//! the (length-prefixed) handles of the root and of the writable
//! snapshot directory, which change with every process, so seeds can
//! name them. Checks: no panic anywhere (the hook aborts, so a panic in a
//! spawned task counts too), the connection ends within 10 s of the
//! client closing, and nothing appears outside the files area.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_nbd::{BlockDevice, FileDevice};
use lifeboat_nfs::{NfsDisk, Registry, Service};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct World {
    rt: tokio::runtime::Runtime,
    svc: Service,
    dir: PathBuf,
    root: Vec<u8>,
    wdir: Vec<u8>,
}

fn opaque(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v.resize(v.len() + (4 - b.len() % 4) % 4, 0);
    v
}

/// MOUNT MNT `path`: the handle from the reply.
async fn mount(svc: &Service, path: &str) -> Vec<u8> {
    let mut call = Vec::new();
    for w in [1u32, 0, 2, 100005, 3, 1, 0, 0, 0, 0] {
        call.extend_from_slice(&w.to_be_bytes());
    }
    call.extend(opaque(path.as_bytes()));
    let mut rec = ((call.len() as u32) | 0x8000_0000).to_be_bytes().to_vec();
    rec.extend(call);
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let s = svc.clone();
    let task = tokio::spawn(async move { s.serve(server, "127.0.0.1:998".parse().unwrap()).await });
    client.write_all(&rec).await.unwrap();
    let mut mark = [0u8; 4];
    client.read_exact(&mut mark).await.unwrap();
    let mut r = vec![0u8; (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize];
    client.read_exact(&mut r).await.unwrap();
    drop(client);
    let _ = task.await;
    assert_eq!(u32::from_be_bytes(r[24..28].try_into().unwrap()), 0, "MNT {path} failed");
    let len = u32::from_be_bytes(r[28..32].try_into().unwrap()) as usize;
    r[32..32 + len].to_vec()
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        std::panic::set_hook(Box::new(|i| {
            eprintln!("panic: {i}");
            std::process::abort();
        }));
        let dir = std::env::temp_dir().join(format!("lifeboat-nfs-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let reg = Arc::new(Registry::default());
        for (vm, writable) in [("vm", false), ("vw", true)] {
            let raw = dir.join(format!("{vm}.raw"));
            std::fs::write(&raw, vec![7u8; 256 * 1024]).unwrap();
            let device: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&raw).unwrap());
            let files = writable.then(|| dir.join("area"));
            let meta = vec![("vm.json".to_string(), b"{}".to_vec())];
            reg.add(NfsDisk { vm: vm.into(), snapshot_time: "t".into(), disk: "d".into(), device, writable, clients: vec!["127.0.0.1".parse().unwrap()], mtime: 0, meta, files }).unwrap();
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let svc = Service::new(reg, 2049);
        let (root, wdir) = rt.block_on(async { (mount(&svc, "/").await, mount(&svc, "/vw/t").await) });
        World { rt, svc, dir, root: opaque(&root), wdir: opaque(&wdir) }
    })
}

fn replace(data: &[u8], w: &World) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(b"@ROOT@") {
            out.extend_from_slice(&w.root);
            i += 6;
        } else if data[i..].starts_with(b"@WDIR@") {
            out.extend_from_slice(&w.wdir);
            i += 6;
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let bytes = replace(data, w);
    w.rt.block_on(async {
        let (client, server) = tokio::io::duplex(1 << 20);
        let svc = w.svc.clone();
        let task = tokio::spawn(async move { svc.serve(server, "127.0.0.1:999".parse().unwrap()).await });
        let (mut r, mut wr) = tokio::io::split(client);
        let writer = async move {
            let _ = wr.write_all(&bytes).await;
            let _ = wr.shutdown().await;
        };
        let reader = async move {
            let mut sink = vec![0u8; 1 << 16];
            while let Ok(n) = r.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(writer, reader);
            let _ = task.await.expect("the connection task panicked");
        })
        .await
        .expect("the connection did not end within 10 s of the client closing");
    });
    for e in std::fs::read_dir(&w.dir).unwrap().flatten() {
        let n = e.file_name();
        assert!(["vm.raw", "vw.raw", "area"].contains(&n.to_string_lossy().as_ref()), "a client made {n:?} outside the files area");
    }
});
