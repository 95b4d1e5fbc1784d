//! A whole server session (handshake and transmission) fed arbitrary
//! client bytes over an in-memory pipe: it must end (no hang) and never
//! panic, whatever arrives.
#![no_main]

use std::io;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use lifeboat_nbd::{BlockDevice, Export, ReadChunk, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Mem(std::sync::Mutex<Vec<u8>>);

impl BlockDevice for Mem {
    fn size(&self) -> u64 {
        1 << 20
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&self, off: u64, len: u32) -> io::Result<Vec<ReadChunk>> {
        let d = self.0.lock().unwrap();
        let s = off as usize;
        let half = (len / 2) as usize;
        // Data then a zero run: exercises both chunk kinds.
        Ok(vec![
            ReadChunk::Data(d[s..s + half].to_vec()),
            ReadChunk::Zero(len - half as u32),
        ])
    }
    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d[off as usize..off as usize + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn write_zeroes(&self, off: u64, len: u32, _: bool) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d[off as usize..off as usize + len as usize].fill(0);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = Server::new(ServerConfig {
            default_export: Some("d".into()),
            handshake_timeout: Duration::from_secs(5),
            ..Default::default()
        });
        let dev = Mem(std::sync::Mutex::new(vec![0u8; 1 << 20]));
        server.add_export(Export::new("d", Arc::new(dev)));
        let (mut client, srv_end) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(async move { server.handle(srv_end).await });
        // The client: a valid greeting answer, then the fuzz bytes, then EOF.
        let mut greet = [0u8; 18];
        client.read_exact(&mut greet).await.unwrap();
        let drain = async {
            let mut sink = vec![0u8; 1 << 16];
            let (mut r, mut w) = tokio::io::split(client);
            let writer = async move {
                let _ = w.write_all(&3u32.to_be_bytes()).await;
                let _ = w.write_all(data).await;
                let _ = w.shutdown().await;
            };
            let reader = async move {
                while let Ok(n) = r.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            tokio::join!(writer, reader);
        };
        tokio::time::timeout(Duration::from_secs(20), async {
            drain.await;
            let _ = task.await.expect("server task panicked");
        })
        .await
        .expect("session did not end after the client closed");
    });
});
