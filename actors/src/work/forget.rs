//! Forget job: keep rules over a datastore's snapshots (restic
//! semantics, see docs/retention.md).

use super::{JobFailure, JobHandle, JobOutput, JobResult};
use lifeboat_api_types::KeepRules;
use lifeboat_store::{group_by_source, KeepPolicy};
use lifeboat_store::{BlobId, Datastore};
use std::collections::HashSet;
use std::sync::Arc;

pub fn policy(k: &KeepRules) -> KeepPolicy {
    KeepPolicy { last: k.last.unwrap_or(0), hourly: k.hourly.unwrap_or(0), daily: k.daily.unwrap_or(0), weekly: k.weekly.unwrap_or(0), monthly: k.monthly.unwrap_or(0), yearly: k.yearly.unwrap_or(0) }
}

pub fn run(ds: &Arc<Datastore>, keep: &KeepRules, pinned: &HashSet<BlobId>, tz: chrono_tz::Tz, h: &JobHandle) -> JobResult {
    h.set_phase("applying retention");
    let removed = apply_keep(ds, keep, None, pinned, tz, h)?;
    Ok(JobOutput::new(&super::outcome::ForgetJobOutcome { forgotten: removed }, vec![]))
}

/// Applies `keep` to every (host, paths) group, or only to `only`.
/// Snapshots in `pinned` (served by exports) are kept whatever the
/// rules say. Returns the ids removed.
pub fn apply_keep(ds: &Arc<Datastore>, keep: &KeepRules, only: Option<(&String, &Vec<String>)>, pinned: &HashSet<BlobId>, tz: chrono_tz::Tz, h: &JobHandle) -> Result<Vec<String>, JobFailure> {
    let policy = policy(keep);
    if policy.is_empty() {
        return Err(JobFailure::Invalid("the keep rules are empty, so nothing would be kept: set at least one of last/hourly/daily/weekly/monthly/yearly".into()));
    }
    if ds.config().append_only {
        return Err(lifeboat_store::StoreError::AppendOnly { path: ds.root().to_path_buf(), op: "forget" }.into());
    }
    let all = ds.snapshots()?;
    let mut remove = Vec::new();
    for ((host, paths), group) in group_by_source(&all) {
        if let Some((oh, op)) = only {
            if &host != oh || &paths != op {
                continue;
            }
        }
        for d in policy.apply(&group, &tz) {
            if !d.keep {
                if pinned.contains(&d.id) {
                    h.log(&format!("keeping snapshot {}: an NBD export serves it", d.id.short()));
                    continue;
                }
                remove.push(d.id);
            }
        }
    }
    lifeboat_store::forget_snapshots(ds, &remove)?;
    h.log(&format!("forgot {} snapshots", remove.len()));
    Ok(remove.iter().map(|i| i.to_hex()).collect())
}
