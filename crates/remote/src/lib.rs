//! Remote file ingest: many file servers back up into one appliance.
//!
//! `lifeboat agent` walks, chunks, hashes and compresses on the file
//! server with crates/ingest's pipeline (an [`agent::AgentSink`] is its
//! `BackupTarget`), asks the appliance in batches which blobs it lacks,
//! builds packs in the datastore's own format from those only, and uploads
//! whole packs, in order, retrying the one in flight after a dropped
//! connection. The appliance ([`server::IngestSessions`]) verifies every
//! record of a pack (header checksum, decompression, hash) and that every
//! tree in it names only blobs already stored, then writes, fsyncs and
//! indexes it; the snapshot commit is the last request. So a tree in the
//! index always has its whole content in the index, and a commit only needs
//! its root tree present.
//!
//! Both sides talk through [`agent::Transport`]: HTTP/2 in the daemon and
//! the CLI, a direct call in tests. The protocol is in
//! `docs/agent-protocol.md`; its documents are in [`protocol`].
#![warn(missing_docs)]

pub mod agent;
pub mod http;
pub mod protocol;
pub mod server;
pub(crate) mod verify;

pub use agent::{run_agent_backup, AgentOptions, AgentOutcome, Transport, TransportError};
pub use server::{IngestSessions, RemoteError, UploadSession};
