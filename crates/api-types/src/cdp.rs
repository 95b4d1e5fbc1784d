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
    /// `sync` or `async` (absent in sessions recorded before the mode was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A named moment on a protected VM's time axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CdpBookmark {
    /// Unique per VM.
    pub name: String,
    /// The moment (RFC 3339, UTC, to the nanosecond).
    pub time: DateTime<Utc>,
    /// How it was made: `manual` (CLI, API, web console), `every` (a
    /// protection's periodic bookmark), `daily`, or `log` (a line of a
    /// watched log matched).
    pub kind: String,
    /// The guest's file systems were frozen through its agent (qemu-ga)
    /// at this moment: application-consistent, not just crash-consistent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub consistent: bool,
    /// What made it, for people: the matched log text, or why a point
    /// asked to be application-consistent is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// When a protection names moments by itself (bookmarks of kinds
/// `every`, `daily` and `log`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CdpBookmarkPolicy {
    /// A bookmark every this many seconds (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_seconds: Option<u64>,
    /// A bookmark each day at these times, `HH:MM` in UTC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub daily: Vec<String>,
    /// A log file on the appliance to watch (inside the backup roots):
    /// each line appended while the protection runs that matches
    /// `log_regex` makes a bookmark, e.g. a database's checkpoint line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<String>,
    /// The regular expression (Rust `regex` syntax) for `log_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_regex: Option<String>,
    /// Make these bookmarks application-consistent: freeze the guest's
    /// file systems through its agent (the VM's registered `agent`
    /// socket) at the moment, thaw right after. A point that cannot be
    /// frozen is still bookmarked, with `consistent` false and the reason
    /// in `detail`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub consistent: bool,
}

impl CdpBookmarkPolicy {
    /// Whether it makes no bookmarks at all.
    pub fn is_empty(&self) -> bool {
        self.every_seconds.is_none() && self.daily.is_empty() && self.log_file.is_none()
    }
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

/// Body of `POST /api/datastores/{name}/cdp/{vm}/exports`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CdpExportCreate {
    /// The moment: RFC 3339 with fractions of a second, or a bookmark's
    /// name.
    pub at: String,
    /// One disk; default: every protected disk (one export each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
}
