//! How a job that ran ends when it fails: a message for the admin and a
//! kind (`JobInfo::error_kind`) that says what to do next, so the API, the
//! notifier and a web page can tell a cancelled run from a request to fix,
//! a policy refusal or a datastore to repair without parsing the text.

use lifeboat_api_types::JobErrorKind;
use lifeboat_ingest::IngestError;
use lifeboat_state::confine::ConfineError;
use lifeboat_store::StoreError;
use lifeboat_vmfiles::VmFilesError;

/// A job's failure. Errors of the crates convert with `?` and keep their
/// message (the alternate `{:#}` form, with its causes) and their kind;
/// a bare message has no `From`, so each says which kind it is.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    /// Stopped on request.
    #[error("cancelled")]
    Cancelled,
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// A snapshot, VM or path it names is not there.
    #[error("{0}")]
    NotFound(String),
    /// Policy said no (confinement, append-only, in use, locked).
    #[error("{0}")]
    Refused(String),
    /// The datastore is damaged where the job read it.
    #[error("{0}")]
    Damaged(String),
    /// Anything else, with what it was doing.
    #[error("{0}")]
    Failed(String),
}

impl JobFailure {
    /// The kind the API reports.
    pub fn kind(&self) -> JobErrorKind {
        match self {
            JobFailure::Cancelled => JobErrorKind::Cancelled,
            JobFailure::Invalid(_) => JobErrorKind::Invalid,
            JobFailure::NotFound(_) => JobErrorKind::NotFound,
            JobFailure::Refused(_) => JobErrorKind::Refused,
            JobFailure::Damaged(_) => JobErrorKind::Damaged,
            JobFailure::Failed(_) => JobErrorKind::Failed,
        }
    }

    /// The same failure with `what` in front of its message ("VM web1: ...").
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        let wrap = |m: String| format!("{what}: {m}");
        match self {
            JobFailure::Cancelled => JobFailure::Cancelled,
            JobFailure::Invalid(m) => JobFailure::Invalid(wrap(m)),
            JobFailure::NotFound(m) => JobFailure::NotFound(wrap(m)),
            JobFailure::Refused(m) => JobFailure::Refused(wrap(m)),
            JobFailure::Damaged(m) => JobFailure::Damaged(wrap(m)),
            JobFailure::Failed(m) => JobFailure::Failed(wrap(m)),
        }
    }

    /// Any other error, as `Failed` with its causes.
    pub fn failed(e: impl std::fmt::Display) -> Self {
        JobFailure::Failed(format!("{e:#}"))
    }
}

impl From<StoreError> for JobFailure {
    fn from(e: StoreError) -> Self {
        let m = format!("{e:#}");
        match e {
            StoreError::Interrupted => JobFailure::Cancelled,
            StoreError::NoSuchSnapshot { .. } | StoreError::AmbiguousSnapshot { .. } | StoreError::NoSnapshots => JobFailure::NotFound(m),
            StoreError::AppendOnly { .. } | StoreError::IndexLocked { .. } | StoreError::KeyRequired { .. } | StoreError::WrongKey { .. } => JobFailure::Refused(m),
            StoreError::MissingBlob { .. }
            | StoreError::CorruptBlob { .. }
            | StoreError::CorruptPack { .. }
            | StoreError::BadTree { .. }
            | StoreError::BadSnapshot { .. }
            | StoreError::SharedBlobLost { .. } => JobFailure::Damaged(m),
            _ => JobFailure::Failed(m),
        }
    }
}

impl From<IngestError> for JobFailure {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Store(e) => e.into(),
            IngestError::Interrupted => JobFailure::Cancelled,
            IngestError::NotInSnapshot { .. } | IngestError::SourceMissing { .. } => JobFailure::NotFound(format!("{e:#}")),
            IngestError::BadPattern { .. } | IngestError::SourceNameClash { .. } => JobFailure::Invalid(format!("{e:#}")),
            e => JobFailure::failed(e),
        }
    }
}

impl From<lifeboat_qemu::VmBackupError> for JobFailure {
    fn from(e: lifeboat_qemu::VmBackupError) -> Self {
        match e {
            lifeboat_qemu::VmBackupError::Store(e) => e.into(),
            e => JobFailure::failed(e),
        }
    }
}

impl From<ConfineError> for JobFailure {
    fn from(e: ConfineError) -> Self {
        if e.is_forbidden() {
            JobFailure::Refused(e.to_string())
        } else if matches!(e, ConfineError::NotAbsolute { .. }) {
            JobFailure::Invalid(e.to_string())
        } else {
            JobFailure::failed(e)
        }
    }
}

impl From<VmFilesError> for JobFailure {
    fn from(e: VmFilesError) -> Self {
        let m = format!("{e:#}");
        match e {
            VmFilesError::NoSuchDisk { .. } | VmFilesError::NoSuchPartition { .. } | VmFilesError::NoSuchPath { .. } => JobFailure::NotFound(m),
            VmFilesError::ChooseDisk { .. } | VmFilesError::ChoosePartition { .. } => JobFailure::Invalid(m),
            _ => JobFailure::Failed(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn crate_errors_keep_message_and_get_their_kind() {
        let f: JobFailure = StoreError::NoSuchSnapshot { query: "abc".into() }.into();
        assert_eq!(f.kind(), JobErrorKind::NotFound);
        assert_eq!(f.to_string(), StoreError::NoSuchSnapshot { query: "abc".into() }.to_string());

        let f: JobFailure = IngestError::Store(StoreError::CorruptPack { pack: "p".into(), reason: "bad".into() }).into();
        assert_eq!(f.kind(), JobErrorKind::Damaged);
        let f: JobFailure = IngestError::Interrupted.into();
        assert_eq!(f.kind(), JobErrorKind::Cancelled);
        let f: JobFailure = StoreError::AppendOnly { path: PathBuf::from("/ds"), op: "forget" }.into();
        assert_eq!(f.kind(), JobErrorKind::Refused);

        let f: JobFailure = ConfineError::OutsideRoots { path: "/x".into(), setting: "backup_roots", roots: "/srv".into() }.into();
        assert_eq!(f.kind(), JobErrorKind::Refused);
        let f: JobFailure = ConfineError::NotAbsolute { path: "x".into() }.into();
        assert_eq!(f.kind(), JobErrorKind::Invalid);
    }

    #[test]
    fn context_keeps_the_kind() {
        let f = JobFailure::NotFound("no such disk".into()).context("VM web1");
        assert_eq!(f.kind(), JobErrorKind::NotFound);
        assert_eq!(f.to_string(), "VM web1: no such disk");
        assert_eq!(JobFailure::Cancelled.context("x").to_string(), "cancelled");
    }
}
