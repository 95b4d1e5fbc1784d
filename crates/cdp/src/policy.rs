//! Bookmarks a protection makes by itself: every N seconds, daily at set
//! times, and when a watched log gains a matching line (a database's
//! checkpoint, an application's "consistent" message). [`BookmarkClock`]
//! only says which are due; the protection takes them (freezing the guest
//! first when asked, see `Replica::take_bookmark`).

use crate::{CdpError, Result};
use chrono::{DateTime, NaiveTime, SecondsFormat, Utc};
use lifeboat_api_types::CdpBookmarkPolicy;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

/// A bookmark that is due: its name, kind and detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueBookmark {
    /// Unique per VM (it carries the moment).
    pub name: String,
    /// `every`, `daily` or `log`.
    pub kind: &'static str,
    /// The matched log text, for `log`.
    pub detail: Option<String>,
}

/// The longest detail kept of a matched log line.
const DETAIL_MAX: usize = 200;
/// A log line longer than this is cut before matching: a runaway writer
/// cannot make the watcher hold unbounded memory.
const LINE_MAX: usize = 64 << 10;

/// Which of a policy's bookmarks are due (see the module doc).
pub struct BookmarkClock {
    every: Option<Duration>,
    next_every: Option<DateTime<Utc>>,
    daily: Vec<NaiveTime>,
    /// The last moment daily times were checked up to.
    checked: DateTime<Utc>,
    log: Option<LogWatch>,
    /// Freeze the guest for these bookmarks.
    pub consistent: bool,
}

struct LogWatch {
    path: PathBuf,
    regex: regex::Regex,
    /// Read up to here; a file that shrinks (rotated, truncated) is read
    /// again from its start.
    offset: u64,
    /// The start of a line whose end has not been written yet.
    partial: Vec<u8>,
}

/// Checks a policy without starting anything: what the API answers 400
/// for. The log file is not opened here (it may appear later).
pub fn check_policy(p: &CdpBookmarkPolicy) -> Result<()> {
    if p.consistent && p.is_empty() {
        return Err(CdpError::Invalid("application-consistent bookmarks need something that makes them: every_seconds, daily or log_file (--bookmark-every, --bookmark-daily, --bookmark-log)".into()));
    }
    if p.every_seconds == Some(0) {
        return Err(CdpError::Invalid("bookmark every 0 seconds: give at least 1".into()));
    }
    for d in &p.daily {
        parse_daily(d)?;
    }
    match (&p.log_file, &p.log_regex) {
        (Some(_), None) => return Err(CdpError::Invalid("a watched log needs a regular expression for its lines (log_regex)".into())),
        (None, Some(_)) => return Err(CdpError::Invalid("a regular expression for log lines needs the log file to watch (log_file)".into())),
        (Some(_), Some(r)) => {
            regex::Regex::new(r).map_err(|e| CdpError::Invalid(format!("log_regex {r:?}: {e}")))?;
        }
        (None, None) => {}
    }
    Ok(())
}

fn parse_daily(s: &str) -> Result<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| CdpError::Invalid(format!("daily bookmark time {s:?}: give HH:MM (UTC), e.g. 02:30")))
}

fn name_stamp(t: DateTime<Utc>) -> String {
    // A bookmark name allows letters, digits, '-', '_' and '.'.
    t.to_rfc3339_opts(SecondsFormat::Millis, true).replace(':', "")
}

impl BookmarkClock {
    /// The clock of `p`, started at `now`: the first periodic bookmark is
    /// one period after it, a watched log is read from its current end
    /// (what was logged before the protection is not bookmarked).
    pub fn new(p: &CdpBookmarkPolicy, now: DateTime<Utc>) -> Result<BookmarkClock> {
        check_policy(p)?;
        let every = p.every_seconds.map(Duration::from_secs);
        let log = match (&p.log_file, &p.log_regex) {
            (Some(f), Some(r)) => {
                let path = PathBuf::from(f);
                let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                Some(LogWatch { path, regex: regex::Regex::new(r).map_err(|e| CdpError::Invalid(format!("log_regex {r:?}: {e}")))?, offset, partial: Vec::new() })
            }
            _ => None,
        };
        Ok(BookmarkClock {
            every,
            next_every: every.map(|d| now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)),
            daily: p.daily.iter().map(|d| parse_daily(d)).collect::<Result<_>>()?,
            checked: now,
            log,
            consistent: p.consistent,
        })
    }

    /// Whether it makes any bookmark at all.
    pub fn is_idle(&self) -> bool {
        self.every.is_none() && self.daily.is_empty() && self.log.is_none()
    }

    /// The bookmarks due at `now` since the last call. A periodic one
    /// that was missed several times (the machine slept) is made once.
    /// A log that cannot be read is an error naming it; the clock goes on.
    pub fn due(&mut self, now: DateTime<Utc>) -> Result<Vec<DueBookmark>> {
        let mut out = Vec::new();
        if let (Some(every), Some(next)) = (self.every, self.next_every) {
            if now >= next {
                out.push(DueBookmark { name: format!("every-{}", name_stamp(now)), kind: "every", detail: None });
                let step = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
                let mut n = next;
                while n <= now {
                    n += step;
                }
                self.next_every = Some(n);
            }
        }
        let from = self.checked;
        for t in &self.daily {
            // Each day between the last check and now whose time falls
            // in (from, now]: at most the latest one is made.
            let today = now.date_naive().and_time(*t).and_utc();
            let yesterday = today - chrono::Duration::days(1);
            if let Some(at) = [today, yesterday].into_iter().find(|at| *at > from && *at <= now) {
                out.push(DueBookmark { name: format!("daily-{}", at.format("%Y-%m-%dT%H%MZ")), kind: "daily", detail: None });
            }
        }
        self.checked = now;
        if let Some(w) = &mut self.log {
            for line in w.read_new()? {
                if w.regex.is_match(&line) {
                    let mut detail: String = line.trim_end().to_string();
                    if detail.len() > DETAIL_MAX {
                        let mut cut = DETAIL_MAX;
                        while !detail.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        detail.truncate(cut);
                    }
                    // Several matches within a millisecond get a suffix.
                    let base = format!("log-{}", name_stamp(now));
                    let n = out.iter().filter(|b: &&DueBookmark| b.name.starts_with(&base)).count();
                    let name = if n == 0 { base } else { format!("{base}.{n}") };
                    out.push(DueBookmark { name, kind: "log", detail: Some(detail) });
                }
            }
        }
        Ok(out)
    }
}

impl LogWatch {
    /// The complete lines appended since the last read.
    fn read_new(&mut self) -> Result<Vec<String>> {
        let io = |e: std::io::Error| CdpError::Invalid(format!("watched log {}: {e}", self.path.display()));
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            // Not there (yet, or between a rotation and the new file).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let len = f.metadata().map_err(io)?.len();
        if len < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset {
            return Ok(Vec::new());
        }
        f.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut buf = Vec::new();
        // At most a few MiB per tick: a log written faster is caught up
        // with over the next ticks.
        (&mut f).take(4 << 20).read_to_end(&mut buf).map_err(io)?;
        self.offset += buf.len() as u64;
        let mut lines = Vec::new();
        for piece in buf.split_inclusive(|&b| b == b'\n') {
            if self.partial.len() < LINE_MAX {
                let room = LINE_MAX - self.partial.len();
                self.partial.extend_from_slice(&piece[..piece.len().min(room)]);
            }
            if piece.ends_with(b"\n") {
                lines.push(String::from_utf8_lossy(&self.partial).into_owned());
                self.partial.clear();
            }
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn periodic_bookmarks_come_once_per_period_and_a_missed_stretch_once() {
        let p = CdpBookmarkPolicy { every_seconds: Some(60), ..Default::default() };
        let mut c = BookmarkClock::new(&p, at("2026-12-06T10:00:00Z")).unwrap();
        assert!(c.due(at("2026-12-06T10:00:59Z")).unwrap().is_empty());
        let d = c.due(at("2026-12-06T10:01:00.5Z")).unwrap();
        assert_eq!(d, vec![DueBookmark { name: "every-2026-12-06T100100.500Z".into(), kind: "every", detail: None }]);
        assert!(c.due(at("2026-12-06T10:01:30Z")).unwrap().is_empty());
        // Asleep for ten minutes: one bookmark, then the grid goes on.
        assert_eq!(c.due(at("2026-12-06T10:11:10Z")).unwrap().len(), 1);
        assert!(c.due(at("2026-12-06T10:11:59Z")).unwrap().is_empty());
        assert_eq!(c.due(at("2026-12-06T10:12:00Z")).unwrap().len(), 1);
    }

    #[test]
    fn daily_bookmarks_fire_when_their_time_passes_also_across_midnight() {
        let p = CdpBookmarkPolicy { daily: vec!["23:59".into(), "00:01".into()], ..Default::default() };
        let mut c = BookmarkClock::new(&p, at("2026-12-06T23:58:00Z")).unwrap();
        assert!(c.due(at("2026-12-06T23:58:59Z")).unwrap().is_empty());
        let d = c.due(at("2026-12-07T00:02:00Z")).unwrap();
        let names: Vec<_> = d.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["daily-2026-12-06T2359Z", "daily-2026-12-07T0001Z"]);
        assert!(c.due(at("2026-12-07T12:00:00Z")).unwrap().is_empty());
        assert!(BookmarkClock::new(&CdpBookmarkPolicy { daily: vec!["25:00".into()], ..Default::default() }, Utc::now()).is_err());
    }

    #[test]
    fn a_watched_log_bookmarks_matching_lines_appended_later_even_across_a_rotation() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("db.log");
        std::fs::write(&log, "checkpoint complete before the protection\n").unwrap();
        let p = CdpBookmarkPolicy { log_file: Some(log.display().to_string()), log_regex: Some("checkpoint (complete|done)".into()), ..Default::default() };
        let mut c = BookmarkClock::new(&p, Utc::now()).unwrap();
        assert!(c.due(Utc::now()).unwrap().is_empty(), "lines from before the start are not bookmarked");
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        write!(f, "noise\ncheckpoint done lsn=42\nhalf a line: checkpoint").unwrap();
        let got = c.due(Utc::now()).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].kind, "log");
        assert_eq!(got[0].detail.as_deref(), Some("checkpoint done lsn=42"));
        f.write_all(b" complete\n").unwrap();
        assert_eq!(c.due(Utc::now()).unwrap()[0].detail.as_deref(), Some("half a line: checkpoint complete"));
        // Rotated: a new, shorter file is read from its start.
        drop(f);
        std::fs::write(&log, "checkpoint complete again\n").unwrap();
        assert_eq!(c.due(Utc::now()).unwrap().len(), 1);
        std::fs::remove_file(&log).unwrap();
        assert!(c.due(Utc::now()).unwrap().is_empty(), "a log that is gone for now is not an error");
    }

    #[test]
    fn bad_policies_are_refused_with_what_to_give() {
        let bad = |p: CdpBookmarkPolicy| check_policy(&p).unwrap_err().to_string();
        assert!(bad(CdpBookmarkPolicy { every_seconds: Some(0), ..Default::default() }).contains("at least 1"));
        assert!(bad(CdpBookmarkPolicy { log_file: Some("/var/log/x".into()), ..Default::default() }).contains("log_regex"));
        assert!(bad(CdpBookmarkPolicy { log_file: Some("/var/log/x".into()), log_regex: Some("(".into()), ..Default::default() }).contains("log_regex"));
        assert!(bad(CdpBookmarkPolicy { daily: vec!["2pm".into()], ..Default::default() }).contains("HH:MM"));
        assert!(bad(CdpBookmarkPolicy { consistent: true, ..Default::default() }).contains("every_seconds"));
    }
}
