//! Terminal output: progress bars (only on a terminal), sizes, durations.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lifeboat_ingest::Progress;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Ctrl-C / SIGTERM set the run's cancel flag; a second Ctrl-C exits at
/// once.
pub fn install_cancel_handler(cancel: &Arc<AtomicBool>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, crate::EXIT_INTERRUPTED as i32, cancel.clone());
        let _ = signal_hook::flag::register(sig, cancel.clone());
    }
}

/// A bar fed from `Progress` by a sampling thread: files, bytes, rate, and
/// an ETA once the counting scan has finished.
pub struct Bar {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Bar {
    pub fn start(progress: Arc<Progress>, verb: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let scanning = ProgressStyle::with_template("{spinner} {msg}").unwrap();
            let known = ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}").unwrap().progress_chars("=> ");
            pb.set_style(scanning);
            let start = Instant::now();
            let mut styled = false;
            while !s2.load(Ordering::Relaxed) {
                let files = Progress::get(&progress.files);
                let b = Progress::get(&progress.bytes);
                if progress.scan_done.load(Ordering::Relaxed) {
                    if !styled {
                        pb.set_style(known.clone());
                        pb.set_length(Progress::get(&progress.total_bytes));
                        styled = true;
                    }
                    pb.set_position(b);
                    pb.set_message(format!("{files}/{} files", Progress::get(&progress.total_files)));
                } else {
                    let secs = start.elapsed().as_secs_f64().max(0.001);
                    pb.set_message(format!("{verb} {files} files, {} ({}/s); scanning: {} files so far", bytes(b), bytes((b as f64 / secs) as u64), Progress::get(&progress.total_files)));
                }
                pb.tick();
                std::thread::sleep(Duration::from_millis(200));
            }
            pb.finish_and_clear();
        });
        Bar { stop, handle: Some(handle) }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The bar of a backup run (local or agent), with totals from a counting
/// scan beside the run; none with --json or off a terminal.
pub fn backup_bar(progress: &Arc<Progress>, sources: &[std::path::PathBuf], excludes: &[String], json: bool) -> Option<Bar> {
    (!json && stderr_is_terminal()).then(|| {
        let (p, srcs) = (progress.clone(), sources.to_vec());
        if let Ok(ex) = lifeboat_ingest::exclude::Excludes::new(excludes) {
            std::thread::spawn(move || lifeboat_ingest::scan::count_totals(&srcs, &ex, &p));
        }
        Bar::start(progress.clone(), "backed up")
    })
}
