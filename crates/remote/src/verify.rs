//! The appliance's check of an uploaded pack, before any byte of it is
//! written: the pack header, then every record (header checksum, kind,
//! decoding, hash of the plain bytes against the id it claims), and the
//! blobs its trees name. A pack from a buggy or hostile agent can never
//! put wrong bytes under an id that other hosts deduplicate against.

use lifeboat_store::{BlobId, BlobKind, BlobLocation, Datastore, Encoding, PackId, RecordError, RecordHeader, Tree, TreeBlob, PACK_HEADER_LEN, PACK_MAGIC, RECORD_HEADER_LEN};
use rayon::prelude::*;

/// What a verified pack holds.
#[derive(Debug)]
pub struct VerifiedPack {
    /// Every record of the pack, in pack order, with where it would sit
    /// once the pack is stored under its id.
    pub blobs: Vec<(BlobId, BlobLocation)>,
    /// Blobs named by the pack's trees (contents, subtrees, pages) that are
    /// not in the pack itself, as (tree, named blob), one entry per named
    /// blob: they must be stored already.
    pub external_refs: Vec<(BlobId, BlobId)>,
}

/// Checks `bytes` as pack `id` for datastore `ds`. The error says what is
/// wrong and where (offset, blob).
pub fn verify_pack(ds: &Datastore, id: &PackId, bytes: &[u8]) -> Result<VerifiedPack, String> {
    let len = bytes.len() as u64;
    if len < PACK_HEADER_LEN || &bytes[..8] != PACK_MAGIC {
        return Err("not a Lifeboat pack (bad magic or too short)".into());
    }
    if bytes[8..24] != id.0 {
        return Err(format!("pack header names pack {}, uploaded as {id}", PackId(bytes[8..24].try_into().unwrap())));
    }
    let lz4_allowed = ds.config().features.iter().any(|f| f == lifeboat_store::FEATURE_LZ4);
    // Headers first (cheap, sequential), then the records in parallel.
    let mut records = Vec::new();
    let mut at = PACK_HEADER_LEN;
    while at < len {
        let end = at + RECORD_HEADER_LEN as u64;
        if end > len {
            return Err(format!("offset {at}: record header truncated"));
        }
        let h = RecordHeader::decode(&bytes[at as usize..end as usize]).map_err(|e| format!("offset {at}: {e}"))?;
        if !matches!(h.kind, BlobKind::FileChunk | BlobKind::SmallFile | BlobKind::Tree) {
            return Err(format!("offset {at}: blob {} is of kind {:?}; agents upload file data and trees only", h.id, h.kind));
        }
        if h.encoding == Encoding::Lz4 && !lz4_allowed {
            // Readers that predate LZ4 must see the datastore's feature
            // before they meet such a record.
            return Err(format!("offset {at}: blob {} is LZ4-compressed, but this datastore does not use LZ4", h.id));
        }
        let data_end = end + h.stored_len as u64;
        if data_end > len {
            return Err(format!("offset {at}: record of {} bytes runs past the end of the pack", h.stored_len));
        }
        records.push((at, h));
        at = data_end;
    }
    if records.is_empty() {
        return Err("pack holds no records".into());
    }
    let checked: Vec<Result<Vec<BlobId>, String>> = records
        .par_iter()
        .map(|(at, h)| {
            let start = (*at as usize) + RECORD_HEADER_LEN;
            let stored = &bytes[start..start + h.stored_len as usize];
            let plain = plain_bytes(h, stored).map_err(|e| format!("offset {at}: blob {}: {e}", h.id))?;
            if ds.blob_id(&plain) != h.id {
                return Err(format!("offset {at}: blob {}: content does not match its hash", h.id));
            }
            if h.kind != BlobKind::Tree {
                return Ok(Vec::new());
            }
            tree_refs(&h.id, &plain).map_err(|e| format!("offset {at}: tree {}: {e}", h.id))
        })
        .collect();
    let mut blobs = Vec::with_capacity(records.len());
    let mut refs = Vec::new();
    for ((at, h), r) in records.iter().zip(checked) {
        for child in r? {
            refs.push((h.id, child));
        }
        blobs.push((h.id, BlobLocation { pack: *id, offset: *at, stored_len: h.stored_len, plain_len: h.plain_len, kind: h.kind, encoding: h.encoding }));
    }
    let inside: std::collections::HashSet<BlobId> = blobs.iter().map(|b| b.0).collect();
    refs.retain(|(_, child)| !inside.contains(child));
    refs.sort_unstable_by_key(|a| a.1);
    refs.dedup_by(|a, b| a.1 == b.1);
    Ok(VerifiedPack { blobs, external_refs: refs })
}

/// A record's plain bytes, read in place (raw) or decompressed: no copy
/// of the upload per record. Sessions exist for unencrypted datastores
/// only, so a sealed record is refused.
fn plain_bytes<'a>(h: &RecordHeader, stored: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, RecordError> {
    if h.encrypted {
        return Err(RecordError::Sealed);
    }
    lifeboat_store::decode_stored(h.encoding, stored, h.plain_len as usize)
}

/// The blobs a tree blob names: its pages, or its nodes' contents and
/// subtrees.
pub fn tree_refs(id: &BlobId, plain: &[u8]) -> Result<Vec<BlobId>, String> {
    match Tree::parse(id, plain).map_err(|e| e.to_string())? {
        TreeBlob::Paged(pages) => Ok(pages),
        TreeBlob::Page(mut c) => {
            let mut out = Vec::new();
            while let Some(n) = c.next_node().map_err(|e| e.to_string())? {
                out.extend_from_slice(&n.content);
                out.extend(n.subtree);
            }
            Ok(out)
        }
    }
}
