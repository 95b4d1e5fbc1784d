//! The mail that tells an admin how a job ended.

use chrono::{DateTime, Utc};
use std::fmt::Write;

/// A finished job, as a report mail shows it.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// The job's id.
    pub job_id: String,
    /// What ran: "backup", "verify", "gc", ...
    pub kind: String,
    /// What it ran on: a datastore, a source path, a VM.
    pub target: String,
    /// The schedule that started it, if any.
    pub schedule: Option<String>,
    /// Whether the job did its work (a success, maybe with warnings).
    pub ok: bool,
    /// How it ended, in a word or two for the subject: "ok", "FAILED",
    /// "ok with warnings", "SKIPPED"...
    pub outcome: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// When it ended.
    pub finished: DateTime<Utc>,
    /// A few lines: what was done (files, bytes, snapshot id...).
    pub summary: String,
    /// Why it failed (the full error chain), for a failed job.
    pub error: Option<String>,
    /// The appliance's name, so mails from several appliances can be told apart.
    pub appliance: String,
    /// Files sent along (a lab run's HTML report).
    pub attachments: Vec<Attachment>,
}

/// A file attached to a report mail.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Its file name in the mail.
    pub filename: String,
    /// A MIME type, e.g. `text/html; charset=utf-8`.
    pub content_type: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

impl JobReport {
    /// The mail's subject: appliance, job kind, target, outcome.
    pub fn subject(&self) -> String {
        format!("[Lifeboat {}] {} {}: {}", self.appliance, self.kind, self.target, self.outcome)
    }

    /// The mail's plain-text body.
    pub fn body(&self) -> String {
        let mut b = String::new();
        let _ = writeln!(b, "Job {} ({} of {}): {}.", self.job_id, self.kind, self.target, self.outcome);
        b.push('\n');
        let _ = writeln!(b, "Job:       {}", self.job_id);
        let _ = writeln!(b, "Kind:      {}", self.kind);
        let _ = writeln!(b, "Target:    {}", self.target);
        if let Some(s) = &self.schedule {
            let _ = writeln!(b, "Schedule:  {s}");
        }
        let _ = writeln!(b, "Started:   {}", self.started.format("%Y-%m-%d %H:%M:%S UTC"));
        let secs = (self.finished - self.started).num_seconds().max(0);
        let _ = writeln!(b, "Finished:  {} (took {})", self.finished.format("%Y-%m-%d %H:%M:%S UTC"), human_duration(secs as u64));
        if !self.summary.trim().is_empty() {
            let _ = writeln!(b, "\nSummary:\n{}", indent(&self.summary));
        }
        if let Some(e) = &self.error {
            let _ = writeln!(b, "\nError:\n{}", indent(e));
        }
        let _ = writeln!(b, "\n-- \nLifeboat appliance {}", self.appliance);
        b
    }
}

fn indent(text: &str) -> String {
    text.trim_end().lines().map(|l| format!("  {l}\n")).collect::<String>().trim_end().to_string()
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_report_names_kind_target_outcome_and_error() {
        let started = DateTime::parse_from_rfc3339("2026-11-25T01:00:00Z").unwrap().with_timezone(&Utc);
        let r = JobReport {
            job_id: "42".into(),
            kind: "backup".into(),
            target: "/srv/data".into(),
            schedule: Some("nightly".into()),
            ok: false,
            outcome: "FAILED".into(),
            started,
            finished: started + chrono::Duration::seconds(75),
            summary: "1200 files, 3.1 GiB read".into(),
            error: Some("reading /srv/data/x: Permission denied\nsecond line".into()),
            appliance: "lb1".into(),
            attachments: Vec::new(),
        };
        assert_eq!(r.subject(), "[Lifeboat lb1] backup /srv/data: FAILED");
        let body = r.body();
        assert!(body.starts_with("Job 42 (backup of /srv/data): FAILED."), "{body}");
        assert!(body.contains("Schedule:  nightly"));
        assert!(body.contains("took 1 min 15 s"));
        assert!(body.contains("Summary:\n  1200 files"));
        assert!(body.contains("Error:\n  reading /srv/data/x: Permission denied\n  second line"), "{body}");
    }
}
