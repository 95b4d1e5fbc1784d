//! `snapshots`: a datastore's snapshots.

use super::DsName;
use lifeboat_api_types::SnapshotInfo;
use lifeboat_client::ApiClient;

#[derive(clap::Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub ds: DsName,
    /// Print them as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(c: &ApiClient, a: SnapshotsArgs) -> anyhow::Result<u8> {
    let list: Vec<SnapshotInfo> = c.get(&format!("/api/datastores/{}/snapshots", a.ds.datastore))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    for s in list {
        println!(
            "{:<9} {:<20} {:<16} {:>9} {:>10}  {:<12} {}{}",
            &s.id[..8.min(s.id.len())],
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            s.files,
            crate::ui::bytes(s.bytes),
            s.tags.join(","),
            s.paths.join(" "),
            if s.damaged { "  DAMAGED" } else { "" }
        );
    }
    Ok(0)
}
