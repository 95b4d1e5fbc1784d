use crate::commands::open_datastore;
use crate::{ui, DatastoreArg, EXIT_ERROR};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub ds: DatastoreArg,
    /// Also read every blob and verify its hash
    #[arg(long)]
    pub read_data: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: CheckArgs) -> anyhow::Result<u8> {
    let ds = open_datastore(&a.ds)?;
    let pb = if a.read_data && !a.json && ui::stderr_is_terminal() {
        let total: u64 = ds.index().packs()?.iter().map(|(_, i)| i.len).sum();
        let pb = ProgressBar::new(total);
        pb.set_style(ProgressStyle::with_template("reading packs [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}").unwrap());
        Some(pb)
    } else {
        None
    };
    let rep = lifeboat_store::check(&ds, if a.read_data { lifeboat_store::CheckDepth::ReadData } else { lifeboat_store::CheckDepth::Structure }, &|n| {
        if let Some(pb) = &pb {
            pb.inc(n)
        }
    })?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        print_report(&rep, a.read_data);
    }
    Ok(if rep.ok() { 0 } else { EXIT_ERROR })
}

/// The readable check report, local or a daemon's verify job.
pub fn print_report(rep: &lifeboat_store::CheckReport, read_data: bool) {
    println!("checked {} snapshots, {} packs, {} blobs{}", rep.snapshots, rep.packs, rep.blobs, if read_data { format!(", read {}", ui::bytes(rep.bytes_read)) } else { String::new() });
    for e in &rep.errors {
        println!("error: {e}");
    }
    for f in &rep.affected {
        println!("damaged: {f}");
    }
    let unref: u64 = rep.unreferenced_packs.iter().map(|p| p.1).sum();
    if !rep.unreferenced_packs.is_empty() {
        println!("note: {} packs ({}) are not in the index (left by an interrupted backup; harmless, reclaimable)", rep.unreferenced_packs.len(), ui::bytes(unref));
    }
    if rep.unused_damaged_records > 0 {
        println!("note: {} damaged records in packs are not used by any snapshot (dropped by repair; harmless)", rep.unused_damaged_records);
    }
    if !rep.stale_partials.is_empty() {
        println!("note: {} partial packs of interrupted backups (removed by the next backup)", rep.stale_partials.len());
    }
    if rep.ok() {
        println!("no errors found");
    } else {
        println!("the datastore is damaged: {} errors, {} snapshot paths affected", rep.errors.len(), rep.affected.len());
    }
}
