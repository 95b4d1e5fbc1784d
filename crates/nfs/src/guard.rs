//! Record-marking guard: watches the RPC record headers (RFC 5531 §11)
//! a client sends and ends the connection when one record would exceed
//! [`MAX_RECORD`]. `nfs3_server` allocates each fragment's announced
//! length (up to 2 GiB) before reading it, and concatenates fragments
//! without a limit; this keeps a 4-byte header from costing gigabytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest RPC record a client may send, in bytes (the sum of its
/// fragments' lengths): a WRITE of 1 MiB (the advertised wtmax) plus its
/// headers fits.
pub const MAX_RECORD: u64 = (1 << 20) + 64 * 1024;

/// A client connection's byte stream with the record-size check: reads
/// and writes pass through unchanged, and a read fails with
/// `InvalidData` (which ends the connection) as soon as a record header
/// makes the record larger than [`MAX_RECORD`].
pub struct RecordGuard<S> {
    inner: S,
    header: [u8; 4],
    header_have: usize,
    fragment_left: u64,
    last: bool,
    record: u64,
}

impl<S> RecordGuard<S> {
    /// Wraps `inner`, which must be at the start of a record (a fresh
    /// connection).
    pub fn new(inner: S) -> Self {
        RecordGuard { inner, header: [0; 4], header_have: 0, fragment_left: 0, last: false, record: 0 }
    }

    /// Follows the record marks through `data`; an error names the
    /// oversized record.
    fn scan(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.fragment_left > 0 {
                let n = (self.fragment_left.min(data.len() as u64)) as usize;
                self.fragment_left -= n as u64;
                data = &data[n..];
                if self.fragment_left == 0 && self.last {
                    self.record = 0;
                }
                continue;
            }
            self.header[self.header_have] = data[0];
            self.header_have += 1;
            data = &data[1..];
            if self.header_have == 4 {
                self.header_have = 0;
                let h = u32::from_be_bytes(self.header);
                self.last = h & 0x8000_0000 != 0;
                self.fragment_left = (h & 0x7fff_ffff) as u64;
                self.record += self.fragment_left;
                if self.record > MAX_RECORD {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("RPC record of {} bytes or more (limit {MAX_RECORD})", self.record)));
                }
                if self.fragment_left == 0 && self.last {
                    self.record = 0;
                }
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RecordGuard<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = buf.filled()[before..].to_vec();
                if let Err(e) = self.scan(&new) {
                    buf.set_filled(before);
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RecordGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(len: u32, last: bool) -> [u8; 4] {
        (len | if last { 0x8000_0000 } else { 0 }).to_be_bytes()
    }

    #[test]
    fn small_records_pass_byte_by_byte() {
        let mut g = RecordGuard::new(());
        let mut msg = hdr(8, true).to_vec();
        msg.extend([1u8; 8]);
        for _ in 0..3 {
            for b in &msg {
                g.scan(std::slice::from_ref(b)).unwrap();
            }
        }
    }

    #[test]
    fn huge_fragment_is_refused() {
        let mut g = RecordGuard::new(());
        assert!(g.scan(&hdr(0x7fff_ffff, true)).is_err());
    }

    #[test]
    fn many_small_fragments_add_up() {
        let mut g = RecordGuard::new(());
        let frag = 512 * 1024;
        let mut failed = false;
        for _ in 0..4 {
            let mut m = hdr(frag, false).to_vec();
            m.extend(vec![0u8; frag as usize]);
            if g.scan(&m).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }
}
