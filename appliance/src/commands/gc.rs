use crate::commands::open_datastore;
use crate::{ui, DatastoreArg};
use lifeboat_store::{GcEvent, GcOptions, GcReport};

#[derive(clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub ds: DatastoreArg,
    /// Only report what would be freed
    #[arg(long)]
    pub dry_run: bool,
    /// Repack a pack once this percentage of it is garbage
    #[arg(long, value_name = "PCT", default_value_t = 25, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub repack_threshold: u8,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn show_event(e: &GcEvent, quiet: bool) {
    if quiet {
        return;
    }
    match e {
        GcEvent::Marking => eprintln!("marking reachable blobs..."),
        GcEvent::Marked { snapshots, trees } => eprintln!("marked {snapshots} snapshots ({trees} directories)"),
        GcEvent::Repacking { done, total } => {
            if ui::stderr_is_terminal() || done == total {
                eprintln!("repacking: {} of {}", ui::bytes(*done), ui::bytes(*total));
            }
        }
        GcEvent::WaitingForWriters(n) => eprintln!("waiting for {n} running backup(s) that may use swept blobs..."),
        GcEvent::Sweeping => eprintln!("sweeping..."),
    }
}

pub fn print_report(rep: &GcReport) {
    let verb = if rep.dry_run { "would free" } else { "freed" };
    println!(
        "{} snapshots, {} directories; {verb} {} in {} packs ({} blobs), repacked {} packs ({} of live data moved)",
        rep.snapshots,
        rep.trees,
        ui::bytes(rep.bytes_freed),
        rep.packs_deleted,
        rep.blobs_deleted,
        rep.packs_repacked,
        ui::bytes(rep.bytes_repacked)
    );
    if rep.partly_used_packs > 0 {
        println!("{} packs keep {} of garbage (under the repack threshold)", rep.partly_used_packs, ui::bytes(rep.garbage_kept));
    }
    if rep.resurrected > 0 {
        println!("{} blobs were kept because a backup that ran meanwhile uses them", rep.resurrected);
    }
    if rep.recovered_packs > 0 {
        println!("finished the work of an interrupted gc ({} packs)", rep.recovered_packs);
    }
    if rep.damaged_blobs > 0 {
        println!("warning: {} live blobs failed verification while repacking; their packs were kept. Run `lifeboat check --read-data`", rep.damaged_blobs);
    }
}

pub fn run(a: GcArgs) -> anyhow::Result<u8> {
    let ds = open_datastore(&a.ds)?;
    let opts = GcOptions { dry_run: a.dry_run, repack_threshold: a.repack_threshold as f64 / 100.0 };
    let rep = lifeboat_store::gc(&ds, &opts, &|e| show_event(&e, a.json))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        print_report(&rep);
    }
    Ok(if rep.damaged_blobs > 0 { crate::EXIT_ERROR } else { 0 })
}
