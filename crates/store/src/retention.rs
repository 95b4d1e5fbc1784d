//! Keep rules for `forget`, with restic's semantics (which PBS shares):
//!
//! Snapshots are grouped by host and source paths; within a group they are
//! walked newest first. `last N` keeps the N newest. `hourly N` keeps the
//! newest snapshot of each of the N most recent hours that have one;
//! `daily`, `weekly` (ISO weeks), `monthly` and `yearly` likewise. A
//! snapshot kept by any rule is kept; the rules do not share their counts.
//! Periods are taken in the appliance's local time zone. Examples are in
//! docs/retention.md.

use crate::id::BlobId;
use crate::snapshot::Snapshot;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many snapshots of each period to keep (restic's `--keep-*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepPolicy {
    /// The N newest.
    #[serde(default)]
    pub last: u32,
    /// The newest of each of the N latest hours that have one.
    #[serde(default)]
    pub hourly: u32,
    /// Likewise per day.
    #[serde(default)]
    pub daily: u32,
    /// Likewise per ISO week.
    #[serde(default)]
    pub weekly: u32,
    /// Likewise per month.
    #[serde(default)]
    pub monthly: u32,
    /// Likewise per year.
    #[serde(default)]
    pub yearly: u32,
}

impl KeepPolicy {
    /// No rule at all: nothing would be kept, which is never what an
    /// admin means; callers refuse it.
    pub fn is_empty(&self) -> bool {
        self.rules().iter().all(|(_, n)| *n == 0)
    }

    fn rules(&self) -> [(&'static str, u32); 6] {
        [("last", self.last), ("hourly", self.hourly), ("daily", self.daily), ("weekly", self.weekly), ("monthly", self.monthly), ("yearly", self.yearly)]
    }
}

/// What a policy decided for one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct KeepDecision {
    /// The snapshot.
    pub id: BlobId,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// It stays.
    pub keep: bool,
    /// The rules that keep it ("daily", ...); empty when removed.
    pub reasons: Vec<&'static str>,
}

/// What retention groups snapshots by: (host, paths).
pub type GroupKey = (String, Vec<String>);

/// Snapshots grouped by (host, paths), each group oldest first.
pub fn group_by_source(snaps: &[(BlobId, Snapshot)]) -> BTreeMap<GroupKey, Vec<(BlobId, Snapshot)>> {
    let mut g: BTreeMap<GroupKey, Vec<(BlobId, Snapshot)>> = BTreeMap::new();
    for (id, s) in snaps {
        g.entry((s.hostname.clone(), s.paths.clone())).or_default().push((*id, s.clone()));
    }
    for v in g.values_mut() {
        v.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    }
    g
}

impl KeepPolicy {
    /// Applies the policy to one group, in the given time zone. Decisions
    /// come newest first.
    pub fn apply<Tz: TimeZone>(&self, group: &[(BlobId, Snapshot)], tz: &Tz) -> Vec<KeepDecision> {
        let policy = self;
        let mut order: Vec<&(BlobId, Snapshot)> = group.iter().collect();
        order.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
        let mut left: Vec<u32> = policy.rules().iter().map(|r| r.1).collect();
        let mut last_bucket: Vec<Option<i64>> = vec![None; left.len()];
        let mut out = Vec::new();
        for (n, (id, s)) in order.into_iter().enumerate() {
            let t = s.time.with_timezone(tz);
            let buckets: [i64; 6] = [
                n as i64,
                (t.year() as i64 * 10_000 + t.ordinal() as i64) * 100 + t.hour_of_day() as i64,
                t.year() as i64 * 10_000 + t.ordinal() as i64,
                t.iso_week().year() as i64 * 100 + t.iso_week().week() as i64,
                t.year() as i64 * 100 + t.month() as i64,
                t.year() as i64,
            ];
            let mut reasons = Vec::new();
            for (r, (name, _)) in policy.rules().iter().enumerate() {
                if left[r] > 0 && last_bucket[r] != Some(buckets[r]) {
                    left[r] -= 1;
                    last_bucket[r] = Some(buckets[r]);
                    reasons.push(*name);
                }
            }
            out.push(KeepDecision { id: *id, time: s.time, keep: !reasons.is_empty(), reasons });
        }
        out
    }
}

trait HourOfDay {
    fn hour_of_day(&self) -> u32;
}
impl<Tz: TimeZone> HourOfDay for DateTime<Tz> {
    fn hour_of_day(&self) -> u32 {
        chrono::Timelike::hour(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(t: &str) -> (BlobId, Snapshot) {
        let time = DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let s = Snapshot {
            time,
            hostname: "h".into(),
            paths: vec!["/d".into()],
            tags: vec![],
            tree: BlobId::of(b"t"),
            parent: None,
            summary: Default::default(),
            program: "test".into(),
            kind: Default::default(),
            root: None,
        };
        (BlobId::of(t.as_bytes()), s)
    }

    fn kept(p: &KeepPolicy, snaps: &[(BlobId, Snapshot)]) -> Vec<String> {
        let mut v: Vec<String> = p.apply(snaps, &Utc).into_iter().filter(|d| d.keep).map(|d| d.time.format("%Y-%m-%d %H:%M").to_string()).collect();
        v.sort();
        v
    }

    /// Four snapshots a day at 00, 06, 12, 18 from 2026-01-01 to 2026-03-31.
    fn quarter() -> Vec<(BlobId, Snapshot)> {
        let mut v = Vec::new();
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
        for h in (0..90 * 24).step_by(6) {
            let t = start + chrono::Duration::hours(h);
            v.push(snap(&t.to_rfc3339()));
        }
        v
    }

    #[test]
    fn last_keeps_the_newest() {
        let s = quarter();
        assert_eq!(kept(&KeepPolicy { last: 3, ..Default::default() }, &s), ["2026-03-31 06:00", "2026-03-31 12:00", "2026-03-31 18:00"]);
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day() {
        let s = quarter();
        assert_eq!(kept(&KeepPolicy { daily: 3, ..Default::default() }, &s), ["2026-03-29 18:00", "2026-03-30 18:00", "2026-03-31 18:00"]);
    }

    #[test]
    fn rules_combine_without_sharing_counts() {
        let s = quarter();
        let p = KeepPolicy { last: 2, daily: 2, weekly: 2, monthly: 3, ..Default::default() };
        // last: 31st 18:00 and 12:00; daily: 31st and 30th; weekly (ISO
        // weeks start Monday; 2026-03-29 is a Sunday): 31st and 29th;
        // monthly: March, February, January.
        assert_eq!(kept(&p, &s), ["2026-01-31 18:00", "2026-02-28 18:00", "2026-03-29 18:00", "2026-03-30 18:00", "2026-03-31 12:00", "2026-03-31 18:00"]);
    }

    #[test]
    fn hourly_and_yearly_count_periods_that_have_snapshots() {
        let s = vec![snap("2024-06-01T10:00:00Z"), snap("2025-06-01T10:15:00Z"), snap("2025-06-01T10:45:00Z"), snap("2025-06-01T13:00:00Z")];
        assert_eq!(kept(&KeepPolicy { hourly: 2, ..Default::default() }, &s), ["2025-06-01 10:45", "2025-06-01 13:00"]);
        assert_eq!(kept(&KeepPolicy { yearly: 5, ..Default::default() }, &s), ["2024-06-01 10:00", "2025-06-01 13:00"]);
    }

    #[test]
    fn groups_by_host_and_paths() {
        let mut a = snap("2025-01-01T00:00:00Z");
        let mut b = snap("2025-01-02T00:00:00Z");
        a.1.hostname = "a".into();
        b.1.hostname = "b".into();
        let g = group_by_source(&[a, b]);
        assert_eq!(g.len(), 2);
        assert!(KeepPolicy::default().is_empty());
    }
}
