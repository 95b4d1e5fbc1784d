//! `forget`: removes one snapshot.

use super::DsName;
use lifeboat_client::ApiClient;

#[derive(clap::Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub ds: DsName,
    /// Snapshot id (or a unique prefix)
    pub snapshot: String,
}

pub fn run(c: &ApiClient, a: ForgetArgs) -> anyhow::Result<u8> {
    c.delete::<()>(&format!("/api/datastores/{}/snapshots/{}", a.ds.datastore, a.snapshot))?;
    println!("removed snapshot {}; run gc to reclaim its space", a.snapshot);
    Ok(0)
}
