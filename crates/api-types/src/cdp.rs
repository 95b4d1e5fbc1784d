//! Continuous data protection as the API and the CLI show it: a
//! protected VM's journals, protection sessions and bookmarks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One stretch of protection of a disk: every moment from `ready` to
/// `ended` can be read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CdpSession {
    /// The initial copy was complete: from here every moment is in the
    /// journal.
    pub ready: DateTime<Utc>,
    /// The protection stopped cleanly; absent while it runs, or when it
    /// was killed (then the journal's last write bounds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<DateTime<Utc>>,
}

/// A named moment on a protected VM's time axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CdpBookmark {
    /// Unique per VM.
    pub name: String,
    /// The moment (RFC 3339, UTC, to the nanosecond).
    pub time: DateTime<Utc>,
    /// How it was made: `manual` (CLI, API, web console).
    pub kind: String,
}

/// One protected disk of a VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CdpDiskInfo {
    /// The disk's device id in the VM.
    pub disk: String,
    /// The disk's size in bytes, if its journal could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The journal's first and last write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_write: Option<DateTime<Utc>>,
    /// The journal's last write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write: Option<DateTime<Utc>>,
    /// The stretches of time that can be read back.
    pub sessions: Vec<CdpSession>,
    /// Why the journal could not be read, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A protected VM in a datastore (`<datastore>/cdp/<vm>/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CdpVmInfo {
    /// The datastore holding its journals.
    pub datastore: String,
    /// The VM's name (QEMU's `-name`).
    pub vm: String,
    /// A protection is running now (in this daemon).
    pub protecting: bool,
    /// The `cdp-protect` job running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Its disks.
    pub disks: Vec<CdpDiskInfo>,
    /// Its bookmarks, oldest first.
    pub bookmarks: Vec<CdpBookmark>,
}

/// Body of `POST /api/datastores/{name}/cdp/{vm}/bookmarks`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CdpBookmarkCreate {
    /// The bookmark's name: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// The moment; default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}
