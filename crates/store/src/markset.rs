//! The set of reachable blobs during garbage collection, small enough for
//! datastores with hundreds of millions of blobs.
//!
//! Directory trees are kept exactly: the walk must know for certain which
//! trees it has already descended into, or it could skip a subtree and
//! sweep live data. Everything else (file chunks, small files, pages,
//! snapshot documents) goes into a Bloom filter at 16 bits per blob. A
//! false positive only keeps a dead blob one more round; the filter is
//! salted per run so the same blob is not kept forever. A false negative
//! cannot happen, so a live blob is never swept.

use crate::id::BlobId;
use std::collections::HashSet;

const BITS_PER_BLOB: u64 = 16;
const HASHES: u64 = 11;

pub struct MarkSet {
    trees: HashSet<BlobId>,
    bits: Vec<u64>,
    nbits: u64,
    salt: u64,
    leaves: u64,
}

impl MarkSet {
    /// A set sized for about `expected` blobs (an estimate; more still
    /// works, at a higher false-positive rate).
    pub fn with_capacity(expected: u64) -> Self {
        let nbits = (expected.max(4096) * BITS_PER_BLOB).next_multiple_of(64);
        let mut salt = [0u8; 8];
        getrandom::getrandom(&mut salt).expect("random salt");
        MarkSet { trees: HashSet::new(), bits: vec![0; (nbits / 64) as usize], nbits, salt: u64::from_le_bytes(salt), leaves: 0 }
    }

    fn positions(&self, id: &BlobId) -> impl Iterator<Item = u64> + '_ {
        // Blob ids are uniform hashes already: two words of the id give
        // the double-hashing pair.
        let h1 = u64::from_le_bytes(id.0[..8].try_into().unwrap()) ^ self.salt;
        let h2 = u64::from_le_bytes(id.0[8..16].try_into().unwrap()).rotate_left((self.salt & 63) as u32) | 1;
        (0..HASHES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % self.nbits)
    }

    /// Marks a blob that has no children to walk.
    pub fn insert(&mut self, id: &BlobId) {
        let pos: Vec<u64> = self.positions(id).collect();
        for p in pos {
            self.bits[(p / 64) as usize] |= 1 << (p % 64);
        }
        self.leaves += 1;
    }

    /// Marks a directory tree; false when it was marked before (its
    /// subtree need not be walked again).
    pub fn insert_tree(&mut self, id: &BlobId) -> bool {
        self.trees.insert(*id)
    }

    /// Reachable, or (rarely) a false positive for a non-tree blob.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.trees.contains(id) || self.positions(id).all(|p| self.bits[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }

    pub fn trees(&self) -> usize {
        self.trees.len()
    }

    /// Marks made (a blob reached twice counts twice).
    pub fn marks(&self) -> u64 {
        self.leaves + self.trees.len() as u64
    }

    /// Bytes the set holds in memory (roughly).
    pub fn memory(&self) -> u64 {
        self.bits.len() as u64 * 8 + self.trees.capacity() as u64 * 40
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_loses_a_member_and_rarely_invents_one() {
        let n = 200_000u64;
        let mut m = MarkSet::with_capacity(n);
        let id = |i: u64| BlobId::of(&i.to_le_bytes());
        for i in 0..n {
            m.insert(&id(i));
        }
        assert!(m.insert_tree(&id(u64::MAX)));
        assert!(!m.insert_tree(&id(u64::MAX)));
        assert!((0..n).all(|i| m.contains(&id(i))));
        assert!(m.contains(&id(u64::MAX)));
        let fp = (n..2 * n).filter(|i| m.contains(&id(*i))).count();
        assert!(fp < (n / 500) as usize, "{fp} false positives in {n}");
    }
}
