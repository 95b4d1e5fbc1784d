//! The documents agent and appliance exchange (JSON), and the binary
//! bodies' layouts. See `docs/agent-protocol.md`.

use lifeboat_store::BackupSummary;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Opens an upload session: the snapshot this run will commit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct OpenSession {
    /// The datastore to back up into; the appliance's default when absent.
    #[serde(default)]
    pub datastore: Option<String>,
    /// The agent's host name, recorded in the snapshot. With `paths` it
    /// picks the parent: the newest snapshot of the same host name and
    /// the same set of paths.
    pub hostname: String,
    /// Absolute, canonical source paths on the agent.
    pub paths: Vec<String>,
    /// Tags recorded in the snapshot.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Read every file even if a parent snapshot exists.
    #[serde(default)]
    pub force_full: bool,
}

/// How the agent must cut and encode blobs: the datastore's parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct BlobParams {
    /// Files of at most this many bytes are one `SmallFile` blob; larger
    /// ones are chunked.
    pub small_file_max: u64,
    /// Smallest content-defined chunk, in bytes.
    pub chunk_min: u32,
    /// Average chunk size the cut points aim at, in bytes.
    pub chunk_avg: u32,
    /// Largest chunk, in bytes.
    pub chunk_max: u32,
    /// "auto", "lz4", "zstd" or "none"; absent from appliances older than the
    /// setting, which compress with zstd.
    #[serde(default)]
    #[schema(value_type = String)]
    pub compression: lifeboat_store::Compression,
    /// The zstd level, when blobs are compressed with zstd.
    pub zstd_level: i32,
    /// Upload packs are sealed at this many bytes (the datastore's pack
    /// target, at most [`crate::server::AGENT_PACK_MAX`]; agents use 1 MiB
    /// at least).
    pub pack_target: u64,
}

impl BlobParams {
    /// The codec the agent compresses blobs with.
    pub fn codec(&self) -> lifeboat_store::Codec {
        use lifeboat_store::Codec;
        match self.compression {
            lifeboat_store::Compression::None => Codec::None,
            lifeboat_store::Compression::Lz4 => Codec::Lz4,
            // The agent's bottleneck is usually its link to the
            // appliance: every byte saved there counts.
            lifeboat_store::Compression::Zstd | lifeboat_store::Compression::Auto => Codec::Zstd(self.zstd_level),
        }
    }
}

/// The parent snapshot an incremental run compares against.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ParentInfo {
    /// Snapshot id (hex).
    pub snapshot: String,
    /// Its root tree (hex): the agent fetches trees below it as it walks.
    pub tree: String,
    /// Its trees record extended attributes and inode flags (false for
    /// snapshots made before they were kept: the agent then reads them
    /// for unchanged files too).
    #[serde(default)]
    pub ext_metadata: bool,
}

/// The answer to [`OpenSession`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct SessionInfo {
    /// The session id (hex), for the session's routes.
    pub session: String,
    /// The datastore the session writes into (the default's name when the
    /// request named none).
    pub datastore: String,
    /// How to cut and encode blobs.
    pub params: BlobParams,
    /// The snapshot to compare against; `None`: read every file (no
    /// earlier snapshot of this host and paths, or `force_full`).
    pub parent: Option<ParentInfo>,
}

/// The answer to a pack upload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct PackStored {
    /// The pack's id (hex).
    pub pack: String,
    /// Records in the pack.
    pub blobs: u32,
    /// The pack was stored by an earlier try of the same upload.
    pub already_stored: bool,
}

/// The last request of a session.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CommitRequest {
    /// Root tree (hex).
    pub tree: String,
    /// When the run started.
    pub time: chrono::DateTime<chrono::Utc>,
    /// The run's counters, as `lifeboat backup` records them.
    #[schema(value_type = Object)]
    pub summary: BackupSummary,
    /// The source directory's own owner, mode, mtime, xattrs and flags
    /// (one directory as the source). Older agents send none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub root: Option<lifeboat_store::RootDir>,
}

/// The answer to a [`CommitRequest`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Committed {
    /// The snapshot's id (hex).
    pub snapshot: String,
}

/// Ids per missing-blob query at most (the body is 32 bytes per id).
pub const MISSING_QUERY_MAX: usize = 4096;
/// Pack uploads at most this many bytes are accepted (the body limit of
/// the pack route).
pub const PACK_UPLOAD_MAX: u64 = 64 << 20;

/// Body of a missing-blob query: ids as 32 raw bytes each, back to back.
pub fn encode_ids(ids: &[lifeboat_store::BlobId]) -> Vec<u8> {
    let mut b = Vec::with_capacity(ids.len() * 32);
    for id in ids {
        b.extend_from_slice(&id.0);
    }
    b
}

/// Reads a missing-blob query's body (see [`encode_ids`]); `None` when
/// its length is not a multiple of 32. The count is not checked here.
pub fn decode_ids(body: &[u8]) -> Option<Vec<lifeboat_store::BlobId>> {
    if !body.len().is_multiple_of(32) {
        return None;
    }
    Some(body.chunks_exact(32).map(|c| lifeboat_store::BlobId(c.try_into().unwrap())).collect())
}

/// Answer of a missing-blob query: one bit per queried id, in order,
/// least significant bit first; set = the appliance lacks the blob.
pub fn encode_bits(bits: &[bool]) -> Vec<u8> {
    let mut b = vec![0u8; bits.len().div_ceil(8)];
    for (i, &m) in bits.iter().enumerate() {
        if m {
            b[i / 8] |= 1 << (i % 8);
        }
    }
    b
}

/// Reads the answer to a query of `n` ids (see [`encode_bits`]); `None`
/// when the body is not exactly `ceil(n / 8)` bytes.
pub fn decode_bits(body: &[u8], n: usize) -> Option<Vec<bool>> {
    if body.len() != n.div_ceil(8) {
        return None;
    }
    Some((0..n).map(|i| body[i / 8] & (1 << (i % 8)) != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_bits_round_trip() {
        let ids: Vec<_> = (0..10u8).map(|i| lifeboat_store::BlobId::of(&[i])).collect();
        assert_eq!(decode_ids(&encode_ids(&ids)).unwrap(), ids);
        assert!(decode_ids(&[0u8; 33]).is_none());
        let bits: Vec<bool> = (0..13).map(|i| i % 3 == 0).collect();
        assert_eq!(decode_bits(&encode_bits(&bits), 13).unwrap(), bits);
        assert!(decode_bits(&[0u8; 3], 13).is_none());
    }
}
