use crate::commands::{hostname, open_datastore, Interrupted};
use crate::{ui, DatastoreArg, EXIT_PARTIAL};
use lifeboat_ingest::{backup, BackupOptions, BackupSelection, Progress};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub ds: DatastoreArg,
    #[command(flatten)]
    pub select: BackupSelection,
    /// Read every file even if the parent snapshot has it unchanged
    #[arg(long)]
    pub force: bool,
    /// Worker threads (default: from the core count)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
    /// Files and directories to back up
    #[arg(required = true, value_name = "SRC")]
    pub sources: Vec<PathBuf>,
}

pub fn run(a: BackupArgs) -> anyhow::Result<u8> {
    let ds = open_datastore(&a.ds)?;
    let progress = Arc::new(Progress::new());
    ui::install_cancel_handler(&progress.cancel);
    let opts = BackupOptions { sources: a.sources.clone(), hostname: hostname(), threads: a.threads, force_full: a.force, select: a.select.clone() };
    let bar = ui::backup_bar(&progress, &a.sources, &a.select.excludes, a.json);
    let res = backup(ds, &opts, &progress);
    drop(bar);
    let out = match res {
        Ok(o) => o,
        Err(e) if e.is_interrupted() => return Err(Interrupted("backup interrupted; no snapshot was written, earlier snapshots are intact".into()).into()),
        Err(e) => return Err(e.into()),
    };
    let s = &out.snapshot.summary;
    if a.json {
        let v = serde_json::json!({
            "snapshot_id": out.snapshot_id.to_hex(),
            "short_id": out.snapshot_id.short(),
            "parent": out.snapshot.parent.map(|p| p.to_hex()),
            "summary": s,
            "warnings": out.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for w in &out.warnings {
            eprintln!("warning: {w}");
        }
        if s.warnings as usize > out.warnings.len() {
            eprintln!("warning: ... and {} more", s.warnings as usize - out.warnings.len());
        }
        print_summary(&out.snapshot_id.short(), s);
    }
    Ok(if s.warnings > 0 { EXIT_PARTIAL } else { 0 })
}

/// The summary of a saved backup, the same for a local run and a daemon's
/// job (`lifeboat --server ... backup`).
pub fn print_summary(short_id: &str, s: &lifeboat_store::BackupSummary) {
    let secs = s.duration_ms as f64 / 1000.0;
    println!("snapshot {short_id} saved");
    println!("files:   {} new, {} changed, {} unchanged ({} total, {} dirs, {} dirs unchanged)", s.files_new, s.files_changed, s.files_unchanged, s.files, s.dirs, s.dirs_unchanged);
    println!("data:    {} in files, {} read, {} new ({} stored after compression)", ui::bytes(s.total_bytes), ui::bytes(s.bytes_read), ui::bytes(s.bytes_added), ui::bytes(s.bytes_stored));
    // bytes_added also counts new directory listings, so clamp at 0.
    let dedup = if s.bytes_read > 0 { (100.0 * (1.0 - s.bytes_added as f64 / s.bytes_read as f64)).max(0.0) } else { 0.0 };
    println!("dedup:   {dedup:.1}% of the bytes read were already stored");
    println!("time:    {secs:.2} s ({}/s)", ui::bytes((s.total_bytes as f64 / secs.max(0.001)) as u64));
    if s.warnings > 0 {
        println!("{} files or directories could not be read (see warnings above)", s.warnings);
    }
}
