//! Shared helpers: an in-process server on 127.0.0.1, real client tools,
//! test images.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use lifeboat_nbd::{BlockDevice, Export, Server, ServerConfig};

pub struct TestServer {
    pub rt: tokio::runtime::Runtime,
    pub addr: SocketAddr,
    pub server: Server,
}

impl TestServer {
    pub fn start(cfg: ServerConfig, exports: Vec<(&str, Arc<dyn BlockDevice>)>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = Server::new(cfg);
        for (name, dev) in exports {
            server.add_export(Export::new(name, dev).with_description(format!("test export {name}")));
        }
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let s = server.clone();
        rt.spawn(async move { s.serve_tcp(listener).await });
        TestServer { rt, addr, server }
    }

    pub fn uri(&self, export: &str) -> String {
        format!("nbd://127.0.0.1:{}/{}", self.addr.port(), export)
    }
}

/// A real client tool, or a clear failure naming the package.
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    let pkg = match name {
        "nbdinfo" | "nbdcopy" => "libnbd-bin",
        _ => "qemu-utils",
    };
    panic!("{name} not found in PATH: run scripts/setup.sh (installs {pkg} from bookworm-backports)");
}

/// Run a tool under `timeout 120`, returning its output.
pub fn run(name: &str, args: &[&str]) -> Output {
    let bin = tool(name);
    let out = Command::new("timeout").arg("120").arg(&bin).args(args).output().unwrap_or_else(|e| panic!("running {name}: {e}"));
    out
}

/// Run a tool and insist it succeeds; returns stdout.
pub fn run_ok(name: &str, args: &[&str]) -> String {
    let out = run(name, args);
    assert!(out.status.success(), "{name} {args:?} failed ({}):\nstdout: {}\nstderr: {}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A sparse 64 MiB raw image: 1 MiB of 0xab at 0, 2 MiB of pseudo-random
/// bytes at 10 MiB, 64 KiB of 0xcd at 40 MiB, holes elsewhere.
pub const IMAGE_SIZE: u64 = 64 << 20;

pub fn make_image(path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(IMAGE_SIZE).unwrap();
    f.write_all_at(&vec![0xab; 1 << 20], 0).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let rnd: Vec<u8> = (0..(2 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    f.write_all_at(&rnd, 10 << 20).unwrap();
    f.write_all_at(&vec![0xcd; 65536], 40 << 20).unwrap();
    f.sync_all().unwrap();
}

pub fn sha(path: &Path) -> Vec<u8> {
    // Not cryptographic; enough to see that a file did not change.
    let data = std::fs::read(path).unwrap();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = Vec::new();
    for chunk in data.chunks(1 << 20) {
        for &b in chunk {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        out.extend_from_slice(&h.to_le_bytes());
    }
    out
}

/// `qemu-img compare` of two raw images (paths or NBD URIs); panics with
/// qemu-img's output when they differ.
pub fn qemu_img_compare(a: &str, b: &str) {
    run_ok("qemu-img", &["compare", "-f", "raw", "-F", "raw", a, b]);
}
