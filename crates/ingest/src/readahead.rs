//! Read-ahead of the files a backup is about to read.
//!
//! The walk reads each file on a worker thread that then hashes and
//! compresses it; on a cold page cache every read waits for the disk
//! with only as many requests in flight as there are workers (a few),
//! and small random reads at such a depth leave a disk mostly idle. Here a
//! few threads open the next files of the walk and ask the kernel to read
//! them in the background (`POSIX_FADV_WILLNEED` starts the reads and
//! returns), so many reads are in flight at once and the workers find
//! their files in the page cache. Opening also brings the inode in, so the
//! workers' own `open` and `fstat` do not wait either.
//!
//! Hints are best effort: when the read-ahead threads fall behind, new
//! hints are dropped rather than making the walk wait.

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::thread::JoinHandle;

/// Hints queued at most: the walk hints about one directory batch ahead,
/// so this only caps a burst.
const QUEUE: usize = 4096;

/// The read-ahead threads and the queue of hints to them. Shared by the
/// walk's threads (`hint` takes `&self`). Dropping it closes the queue and
/// joins the threads once they have worked through the hints still queued.
pub struct Readahead {
    tx: Option<Sender<PathBuf>>,
    threads: Vec<JoinHandle<()>>,
}

impl Readahead {
    /// Starts `threads` read-ahead threads (0: none; `hint` does nothing).
    pub fn start(threads: usize) -> Self {
        if threads == 0 {
            return Readahead { tx: None, threads: Vec::new() };
        }
        let (tx, rx) = bounded::<PathBuf>(QUEUE);
        let threads = (0..threads)
            .filter_map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new().name(format!("readahead-{i}")).spawn(move || read_ahead(rx)).ok()
            })
            .collect();
        Readahead { tx: Some(tx), threads }
    }

    /// Asks for `path`'s contents to be read into the page cache soon.
    /// Never blocks.
    pub fn hint(&self, path: PathBuf) {
        if let Some(tx) = &self.tx {
            match tx.try_send(path) {
                Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

impl Drop for Readahead {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn read_ahead(rx: Receiver<PathBuf>) {
    for path in rx {
        // O_NOATIME where allowed (our own files, or root): read-ahead
        // should not change what the user sees. Errors are the walk's to
        // report when it opens the file itself.
        let file = OpenOptions::new().read(true).custom_flags(libc::O_NOATIME).open(&path).or_else(|_| File::open(&path));
        if let Ok(f) = file {
            // SAFETY: a plain syscall on a descriptor we own.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Pages of `f` in the page cache.
    fn resident_pages(f: &File, len: usize) -> usize {
        // SAFETY: a private read-only map of a file we hold open, unmapped
        // before returning; `vec` has one byte per page as mincore wants.
        unsafe {
            let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0);
            assert_ne!(p, libc::MAP_FAILED);
            let pages = len.div_ceil(4096);
            let mut vec = vec![0u8; pages];
            assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
            libc::munmap(p, len);
            vec.iter().filter(|b| **b & 1 != 0).count()
        }
    }

    #[test]
    fn a_hinted_file_is_read_into_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let len = 4 << 20;
        std::fs::write(&path, vec![7u8; len]).unwrap();
        let f = File::open(&path).unwrap();
        f.sync_all().unwrap();
        // SAFETY: a plain syscall on a descriptor we own.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if resident_pages(&f, len) > 0 {
            eprintln!("this filesystem keeps the file cached (tmpfs?); residency cannot show the read-ahead");
            return;
        }
        let ra = Readahead::start(2);
        ra.hint(dir.path().join("missing")); // errors are skipped
        ra.hint(path.clone());
        // WILLNEED is advice: under load (a whole test suite beside it) the
        // kernel may leave some pages out, so most of the file will do.
        let start = Instant::now();
        while resident_pages(&f, len) < len / 4096 / 2 {
            assert!(start.elapsed() < Duration::from_secs(20), "hinted file not read ahead: {} of {} pages resident", resident_pages(&f, len), len / 4096);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn hints_never_block_and_stop_joins_the_threads() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let ra = Readahead::start(1);
        let start = Instant::now();
        for _ in 0..4 * QUEUE {
            ra.hint(f.clone()); // more than the queue holds: the rest are dropped
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        drop(ra);
        Readahead::start(0).hint(f); // read-ahead off: a no-op
    }
}
