//! A cheap counting walk that runs beside the backup so a progress bar can
//! show totals and an ETA (stat only, no reads).

use crate::exclude::Excludes;
use crate::progress::Progress;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

pub fn count_totals(sources: &[PathBuf], excludes: &Excludes, progress: &Progress) {
    let mut stack: Vec<PathBuf> = Vec::new();
    for s in sources {
        match std::fs::symlink_metadata(s) {
            Ok(m) if m.is_dir() => stack.push(s.clone()),
            Ok(m) if m.is_file() => add(progress, m.len()),
            _ => {}
        }
    }
    while let Some(dir) = stack.pop() {
        if progress.cancelled() {
            return;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p: PathBuf = e.path();
            if excludes.excluded(&p) {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => add(progress, e.metadata().map(|m| m.len()).unwrap_or(0)),
                _ => {}
            }
        }
    }
    progress.scan_done.store(true, Ordering::Relaxed);
}

fn add(p: &Progress, bytes: u64) {
    p.total_files.fetch_add(1, Ordering::Relaxed);
    p.total_bytes.fetch_add(bytes, Ordering::Relaxed);
}

