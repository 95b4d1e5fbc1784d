//! Content-defined chunking of a file through one reusable buffer.
//!
//! `fastcdc::v2020::StreamCDC` gives every chunk a freshly collected `Vec`
//! and then shifts the rest of its 8 MiB buffer to the front and zero-fills
//! it again: on a tree of 1-16 MiB files that is several copies of every
//! byte plus a page fault (and a TLB shoot-down) per fresh page. This
//! reader cuts chunks in place and hands them out as slices; the only copy
//! is moving the unfinished tail (less than one chunk) to the front before
//! the next read.
//!
//! Cut points are exactly StreamCDC's (same gear table, masks and
//! normalization level 1), so chunks stay deduplicated against datastores
//! written before: a cut is taken only once it cannot change with more
//! data, i.e. it lies before the end of what is buffered, or the file ended.

use fastcdc::v2020::{cut, logarithm2, MASKS};
use std::io::{self, Read};

/// What a chunk is read in addition to the largest chunk: the unit of one
/// `read` once a file is larger than the buffer.
const READ_SLACK: usize = 1 << 20;

/// Content-defined chunking with one datastore's size limits, cutting
/// exactly where `fastcdc::v2020::StreamCDC` would. Holds no buffer: one
/// `Chunker` serves every thread, each bringing its own buffer to `chunk`.
#[derive(Clone, Copy, Debug)]
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    /// A chunker for chunks of `min` to `max` bytes around `avg` (the
    /// datastore's `ChunkParams`; a file's last chunk may be shorter than
    /// `min`). The sizes are not checked: they must be ones
    /// `StreamCDC::new` accepts.
    pub fn new(min: u32, avg: u32, max: u32) -> Self {
        // Normalization level 1, as `StreamCDC::new`.
        let bits = logarithm2(avg);
        Chunker { min: min as usize, avg: avg as usize, max: max as usize, mask_s: MASKS[(bits + 1) as usize], mask_l: MASKS[(bits - 1) as usize] }
    }

    fn cut(&self, data: &[u8]) -> usize {
        cut(data, self.min, self.avg, self.max, self.mask_s, self.mask_l, self.mask_s << 1, self.mask_l << 1).1
    }

    /// Reads `src` to its end and calls `emit` with each chunk in order.
    /// `buf[..filled]` holds bytes already read from `src` (a file first
    /// read whole as a small one that turned out larger); `size_hint` is
    /// the expected total, to size reads. Returns the bytes read in all.
    pub fn chunk<E>(&self, src: &mut impl Read, buf: &mut Vec<u8>, filled: usize, size_hint: u64, io_error: impl Fn(io::Error) -> E, mut emit: impl FnMut(&[u8]) -> Result<(), E>) -> Result<u64, E> {
        let cap = self.max + READ_SLACK;
        let (mut start, mut len, mut eof) = (0usize, filled, false);
        let mut total = filled as u64;
        loop {
            while start < len {
                let avail = &buf[start..len];
                let n = self.cut(avail);
                if n == avail.len() && !eof {
                    break; // the cut may move with more data
                }
                emit(&avail[..n])?;
                start += n;
            }
            if eof {
                return Ok(total);
            }
            if start > 0 {
                buf.copy_within(start..len, 0);
                len -= start;
                start = 0;
            }
            let expected = size_hint.saturating_sub(total).saturating_add(1).max(64 << 10);
            let want = cap.min(len.saturating_add(usize::try_from(expected).unwrap_or(usize::MAX)));
            if buf.len() < want {
                buf.resize(want, 0);
            }
            match src.read(&mut buf[len..want]) {
                Ok(0) => eof = true,
                Ok(n) => {
                    len += n;
                    total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
    }
}

/// Reads from `src` into `buf` until `limit` bytes or the end, whichever
/// comes first; returns how many. `size_hint` (the expected file size)
/// sizes the reads. `buf` is grown as needed and may end up longer than
/// what was read: only `buf[..n]` holds the file's bytes.
pub fn read_up_to(src: &mut impl Read, buf: &mut Vec<u8>, limit: usize, size_hint: u64) -> io::Result<usize> {
    let mut len = 0;
    loop {
        // The expected size plus one (to see the end) in one read; more
        // in 64 KiB steps if the file grew.
        let expected = usize::try_from(size_hint).unwrap_or(usize::MAX).saturating_add(1);
        let want = limit.min(expected.max(len + (64 << 10)));
        if buf.len() < want {
            buf.resize(want, 0);
        }
        if len == want {
            return Ok(len);
        }
        match src.read(&mut buf[len..want]) {
            Ok(0) => return Ok(len),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most `step` bytes per read, to exercise cuts that
    /// must wait for more data.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min(self.step).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn sample(len: usize, seed: u64) -> Vec<u8> {
        // Half pseudo-random, half repetitive text: both kinds of cut.
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                if (i / 100_000) % 2 == 0 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                } else {
                    b"INFO GET /api/v1/items 200 12ms\n"[i % 32]
                }
            })
            .collect()
    }

    fn ours(data: &[u8], step: usize, prefill: usize, hint: u64) -> Vec<Vec<u8>> {
        let c = Chunker::new(4096, 16384, 65536);
        let mut buf = data[..prefill].to_vec();
        let mut out = Vec::new();
        let mut src = Trickle { data: &data[prefill..], step };
        let n = c
            .chunk(
                &mut src,
                &mut buf,
                prefill,
                hint,
                |e| e,
                |ch| {
                    out.push(ch.to_vec());
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(n, data.len() as u64);
        out
    }

    #[test]
    fn cuts_match_streamcdc_whatever_the_read_sizes() {
        for (len, seed) in [(0, 1), (100, 2), (4096, 3), (70_000, 4), (1_000_003, 5), (3_000_000, 6)] {
            let data = sample(len, seed);
            let want: Vec<Vec<u8>> = fastcdc::v2020::StreamCDC::new(&data[..], 4096, 16384, 65536).map(|c| c.unwrap().data).collect();
            for step in [1 << 20, 65536, 5000, 777] {
                for (prefill, hint) in [(0, len as u64), (0, 0), (len.min(3000), len as u64), (len / 2, 1 << 30)] {
                    assert_eq!(ours(&data, step, prefill, hint), want, "len {len} step {step} prefill {prefill} hint {hint}");
                }
            }
        }
    }

    #[test]
    fn all_zeroes_cut_at_the_maximum() {
        let data = vec![0u8; 200_000];
        let sizes: Vec<usize> = ours(&data, 1 << 20, 0, 200_000).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![65536, 65536, 65536, 200_000 - 3 * 65536]);
    }

    #[test]
    fn read_errors_are_passed_on() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let c = Chunker::new(4096, 16384, 65536);
        let err = c.chunk(&mut Broken, &mut Vec::new(), 0, 10, |e| e.to_string(), |_| Ok(())).unwrap_err();
        assert_eq!(err, "disk on fire");
    }

    #[test]
    fn read_up_to_stops_at_the_limit_or_the_end() {
        let data = sample(300_000, 9);
        let mut buf = Vec::new();
        assert_eq!(read_up_to(&mut Trickle { data: &data, step: 1000 }, &mut buf, 100_001, 5).unwrap(), 100_001);
        assert_eq!(&buf[..100_001], &data[..100_001]);
        assert_eq!(read_up_to(&mut Trickle { data: &data[..500], step: 7 }, &mut buf, 100_001, 1 << 40).unwrap(), 500);
        assert_eq!(&buf[..500], &data[..500]);
    }
}
