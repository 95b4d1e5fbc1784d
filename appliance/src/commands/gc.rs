use crate::commands::open_datastore;
use crate::{ui, DatastoreArg};

#[derive(clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub ds: DatastoreArg,
    /// Only report what would be freed
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: GcArgs) -> anyhow::Result<u8> {
    let ds = open_datastore(&a.ds)?;
    if lifeboat_store::fsutil::DatastoreLock::try_exclusive(ds.root())?.is_none() && !a.json {
        eprintln!("waiting for running backups to finish...");
    }
    let rep = lifeboat_store::gc::gc(&ds, a.dry_run)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
        return Ok(0);
    }
    let verb = if a.dry_run { "would free" } else { "freed" };
    println!(
        "{} snapshots, {} reachable blobs; {verb} {} in {} packs ({} blobs)",
        rep.snapshots,
        rep.reachable_blobs,
        ui::bytes(rep.bytes_freed),
        rep.packs_deleted,
        rep.blobs_deleted
    );
    if rep.partly_used_packs > 0 {
        println!("{} packs hold {} of garbage next to live data (kept)", rep.partly_used_packs, ui::bytes(rep.garbage_in_partly_used));
    }
    Ok(0)
}
