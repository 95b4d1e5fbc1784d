use crate::commands::{open_datastore, Interrupted};
use crate::{ui, DatastoreArg, EXIT_PARTIAL};
use lifeboat_ingest::{restore, Progress, RestoreOptions};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub ds: DatastoreArg,
    /// Snapshot id (or a unique prefix) or "latest"
    pub snapshot: String,
    /// Directory to restore into (created if missing)
    pub target: PathBuf,
    /// Restore only this path of the snapshot (repeatable)
    #[arg(long = "include", value_name = "PATH")]
    pub includes: Vec<String>,
    /// Worker threads (default: from the core count)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: RestoreArgs) -> anyhow::Result<u8> {
    let ds = open_datastore(&a.ds)?;
    let (id, snap) = ds.resolve_snapshot(&a.snapshot)?;
    let progress = Arc::new(Progress::new());
    ui::install_cancel_handler(&progress.cancel);
    progress.total_files.store(snap.summary.files, Ordering::Relaxed);
    progress.total_bytes.store(snap.summary.total_bytes, Ordering::Relaxed);
    progress.scan_done.store(a.includes.is_empty(), Ordering::Relaxed);
    let opts = RestoreOptions {
        target: a.target.clone(),
        includes: a.includes.clone(),
        owners: unsafe { libc::geteuid() } == 0,
        // The local user's own rights decide (mknod fails without root
        // and is reported); confinement is for the daemon's callers.
        special: true,
        threads: a.threads,
        target_dir: None,
    };
    let bar = (!a.json && ui::stderr_is_terminal()).then(|| ui::Bar::start(progress.clone(), "restored"));
    let start = std::time::Instant::now();
    let res = restore(&ds, &snap, &opts, &progress);
    drop(bar);
    let out = match res {
        Ok(o) => o,
        Err(e) if e.is_interrupted() => return Err(Interrupted("restore interrupted; the target holds a partial restore".into()).into()),
        Err(e) => return Err(e.into()),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"snapshot_id": id.to_hex(), "restore": out}))?);
    } else {
        for w in &out.warnings {
            eprintln!("warning: {w}");
        }
        print_summary(&id.short(), &a.target.display().to_string(), out.files, out.dirs, out.bytes, start.elapsed().as_secs_f64());
    }
    Ok(if out.warnings.is_empty() { 0 } else { EXIT_PARTIAL })
}

/// One line for a finished restore, local or a daemon's job.
pub fn print_summary(short_id: &str, target: &str, files: u64, dirs: u64, bytes: u64, secs: f64) {
    println!("restored snapshot {short_id} to {target}: {files} files, {dirs} dirs, {} in {secs:.2} s", ui::bytes(bytes));
}
