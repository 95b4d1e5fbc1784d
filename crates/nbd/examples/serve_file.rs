//! Serve a raw image over NBD, for trying the server by hand:
//!
//!     cargo run --release -p lifeboat-nbd --example serve_file -- disk.raw \
//!         [--name disk] [--listen 127.0.0.1:10809] [--cow overlay.raw] \
//!         [--tls-cert cert.pem --tls-key key.pem]
//!
//! Read-only unless `--cow` names an overlay file (created if missing);
//! the image itself is never written.

use std::path::PathBuf;
use std::sync::Arc;

use lifeboat_nbd::{BlockDevice, CowOverlay, Export, FileDevice, Server, ServerConfig, TlsConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut image = None;
    let (mut name, mut listen) = ("disk".to_string(), "127.0.0.1:10809".to_string());
    let (mut cow, mut cert, mut key) = (None, None, None);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--name" => name = val()?,
            "--listen" => listen = val()?,
            "--cow" => cow = Some(PathBuf::from(val()?)),
            "--tls-cert" => cert = Some(PathBuf::from(val()?)),
            "--tls-key" => key = Some(PathBuf::from(val()?)),
            _ if image.is_none() => image = Some(PathBuf::from(&a)),
            _ => return Err(format!("unexpected argument {a}").into()),
        }
    }
    let image = image.ok_or("usage: serve_file IMAGE [--name N] [--listen ADDR] [--cow OVERLAY]")?;
    let base = FileDevice::open(&image)?;
    let dev: Arc<dyn BlockDevice> = match cow {
        Some(ov) => Arc::new(CowOverlay::open(base, &ov)?),
        None => Arc::new(base),
    };
    let tls = match (cert, key) {
        (Some(c), Some(k)) => Some(TlsConfig::from_pem_files(&c, &k, true)?),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let server = Server::new(ServerConfig { default_export: Some(name.clone()), tls, ..Default::default() });
    server.add_export(Export::new(name.clone(), dev));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind(&listen).await?;
        eprintln!("serving {} as nbd://{}/{name}", image.display(), l.local_addr()?);
        server.serve_tcp(l).await
    })?;
    Ok(())
}
