use crate::commands::open_datastore;
use crate::{ui, DatastoreArg};

#[derive(clap::Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub ds: DatastoreArg,
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: SnapshotsArgs) -> anyhow::Result<u8> {
    let ds = open_datastore(&a.ds)?;
    let snaps = ds.snapshots()?;
    // Snapshots `datastore repair` found losing data.
    let damaged = ds.damaged_snapshots()?;
    if a.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id.to_hex(),
                    "short_id": id.short(),
                    "time": s.time,
                    "hostname": s.hostname,
                    "paths": s.paths,
                    "tags": s.tags,
                    "tree": s.tree.to_hex(),
                    "parent": s.parent.map(|p| p.to_hex()),
                    "summary": s.summary,
                    "damaged": damaged.get(id),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!("{:<9} {:<20} {:<16} {:>9} {:>10}  {:<12} paths", "id", "time (UTC)", "host", "files", "size", "tags");
    for (id, s) in &snaps {
        println!(
            "{:<9} {:<20} {:<16} {:>9} {:>10}  {:<12} {}",
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            s.summary.files,
            ui::bytes(s.summary.total_bytes),
            s.tags.join(","),
            s.paths.join(" ")
        );
        if let Some(p) = damaged.get(id) {
            println!("          DAMAGED: {} paths lose data (see `lifeboat check --read-data`)", p.len());
        }
    }
    println!("{} snapshots", snaps.len());
    Ok(0)
}
