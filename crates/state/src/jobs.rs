//! Job history: one JSON file per job (and a log beside it) under
//! `<state>/jobs/`. A job found `running` when the daemon starts was cut
//! off by a crash or a stop: it is marked `interrupted`, and the pack
//! bytes it left are unreferenced, which gc reclaims.

use crate::{io_err, random_hex, read_json, write_json, Result};
use chrono::Utc;
use lifeboat_api_types::{JobInfo, JobState};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The job history directory, `<state>/jobs/`: `<id>.json` (mode
/// 0640) holds a job's `JobInfo`, `<id>.log` its log lines.
pub struct JobStore {
    dir: PathBuf,
}

impl JobStore {
    /// Opens `<state_dir>/jobs/`, creating it if needed.
    pub fn open(state_dir: &Path) -> Result<JobStore> {
        let dir = state_dir.join("jobs");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(JobStore { dir })
    }

    /// A new job id: sorts by start time, unique within the second.
    pub fn new_id() -> String {
        format!("{}-{}", Utc::now().format("%Y%m%dT%H%M%S"), random_hex(3))
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Where job `id`'s log is (it may not exist yet).
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// Writes the job's record (whole, atomically), creating or
    /// replacing `<id>.json`.
    pub fn save(&self, job: &JobInfo) -> Result<()> {
        write_json(&self.path(&job.id), job, 0o640)
    }

    /// Appends one line to a job's log (with a timestamp).
    pub fn log(&self, id: &str, line: &str) -> Result<()> {
        let p = self.log_path(id);
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p).map_err(io_err(&p))?;
        writeln!(f, "{} {}", Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"), line).map_err(io_err(&p))
    }

    /// The whole log of job `id`; empty if it has none.
    pub fn read_log(&self, id: &str) -> Result<String> {
        let p = self.log_path(id);
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Loads the history, oldest first, marking jobs that were running
    /// as interrupted, and keeps at most `keep` (dropping the oldest
    /// finished ones). Unreadable files are skipped and reported.
    pub fn load_all(&self, keep: usize) -> Result<(Vec<JobInfo>, Vec<String>)> {
        let mut jobs = Vec::new();
        let mut problems = Vec::new();
        let rd = std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match read_json::<JobInfo>(&p) {
                Ok(Some(mut j)) => {
                    if j.state == JobState::Running {
                        j.state = JobState::Interrupted;
                        j.finished = Some(Utc::now());
                        j.error = Some("the daemon stopped while this job ran; its partial data is reclaimed by the next gc".into());
                        self.save(&j)?;
                        let _ = self.log(&j.id, "interrupted: the daemon stopped while this job ran");
                    }
                    jobs.push(j);
                }
                Ok(None) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        jobs.sort_by(|a, b| a.started.cmp(&b.started).then(a.id.cmp(&b.id)));
        while jobs.len() > keep {
            let j = jobs.remove(0);
            let _ = std::fs::remove_file(self.path(&j.id));
            let _ = std::fs::remove_file(self.log_path(&j.id));
        }
        Ok((jobs, problems))
    }

    /// Deletes job `id`'s record and log; missing files are ignored.
    pub fn remove(&self, id: &str) {
        let _ = std::fs::remove_file(self.path(id));
        let _ = std::fs::remove_file(self.log_path(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_api_types::{JobProgress, JobSpec};

    #[test]
    fn running_jobs_become_interrupted_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let s = JobStore::open(dir.path()).unwrap();
        let mk = |id: &str, state| JobInfo {
            id: id.into(),
            spec: JobSpec::Gc { datastore: "default".into() },
            state,
            schedule: None,
            started: Utc::now(),
            finished: None,
            progress: JobProgress::default(),
            error: None,
            error_kind: None,
            result: serde_json::Value::Null,
        };
        s.save(&mk("a", JobState::Succeeded)).unwrap();
        s.save(&mk("b", JobState::Running)).unwrap();
        s.log("b", "started").unwrap();
        std::fs::write(dir.path().join("jobs/c.json"), b"{not json").unwrap();
        let (jobs, problems) = s.load_all(10).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(problems.len(), 1);
        let b = jobs.iter().find(|j| j.id == "b").unwrap();
        assert_eq!(b.state, JobState::Interrupted);
        assert!(s.read_log("b").unwrap().contains("interrupted"));
        let (again, _) = JobStore::open(dir.path()).unwrap().load_all(1).unwrap();
        assert_eq!(again.len(), 1);
    }
}
