//! The journal as NBD block devices.

use crate::Journal;
use bytes::Bytes;
use lifeboat_nbd::{BlockDevice, ReadChunk};
use std::io;
use std::sync::Arc;

fn io(e: crate::CdpError) -> io::Error {
    match e {
        crate::CdpError::Invalid(m) | crate::CdpError::InUse(m) => io::Error::new(io::ErrorKind::InvalidInput, m),
        e => io::Error::other(e.to_string()),
    }
}

/// When a journaled write is durable before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every write is on disk before its reply (CDP's sync mode: an
    /// acknowledged write survives a crash of the appliance).
    EveryWrite,
    /// Writes are made durable when the client flushes (or sends FUA),
    /// as a disk's volatile cache would.
    OnFlush,
}

/// The writable target a protected disk is mirrored into: every write
/// is journaled with its time; reads return the volume as it is now.
pub struct JournalTarget {
    journal: Arc<Journal>,
    policy: SyncPolicy,
}

impl JournalTarget {
    /// A target appending to `journal`.
    pub fn new(journal: Arc<Journal>, policy: SyncPolicy) -> Self {
        JournalTarget { journal, policy }
    }

    fn done(&self) -> io::Result<()> {
        match self.policy {
            SyncPolicy::EveryWrite => self.journal.sync().map_err(io),
            SyncPolicy::OnFlush => Ok(()),
        }
    }
}

fn read(journal: &Journal, at: u64, off: u64, len: u32) -> io::Result<Vec<ReadChunk>> {
    let mut buf = vec![0u8; len as usize];
    journal.read_at(at, off, &mut buf).map_err(io)?;
    Ok(vec![ReadChunk::Data(Bytes::from(buf))])
}

impl BlockDevice for JournalTarget {
    fn size(&self) -> u64 {
        self.journal.size()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&self, off: u64, len: u32) -> io::Result<Vec<ReadChunk>> {
        read(&self.journal, u64::MAX, off, len)
    }
    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        self.journal.append(off, data).map_err(io)?;
        self.done()
    }
    fn write_zeroes(&self, off: u64, len: u32, _may_trim: bool) -> io::Result<()> {
        self.journal.append_zeroes(off, len).map_err(io)?;
        self.done()
    }
    fn trim(&self, _off: u64, _len: u32) -> io::Result<()> {
        // Advisory: the range keeps reading as it did, which a discard
        // allows; the journal records nothing for it.
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        self.journal.sync().map_err(io)
    }
}

/// The volume as it was at one moment, read-only: to export, boot or
/// restore a point in time.
pub struct PointInTime {
    journal: Arc<Journal>,
    at: u64,
}

impl PointInTime {
    /// The volume at `at` (ns since the Unix epoch): every write at or
    /// before it, none after.
    pub fn new(journal: Arc<Journal>, at: u64) -> Self {
        PointInTime { journal, at }
    }

    /// The moment this view shows.
    pub fn at(&self) -> u64 {
        self.at
    }
}

impl BlockDevice for PointInTime {
    fn size(&self) -> u64 {
        self.journal.size()
    }
    fn read_at(&self, off: u64, len: u32) -> io::Result<Vec<ReadChunk>> {
        read(&self.journal, self.at, off, len)
    }
}
