//! `restore`: a `restore` job on the appliance.

use super::{run_job, DsName, Wait};
use lifeboat_api_types::JobSpec;
use lifeboat_client::ApiClient;

#[derive(clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub ds: DsName,
    /// Restore only this path of the snapshot (repeatable)
    #[arg(long = "include", value_name = "PATH")]
    pub include: Vec<String>,
    #[command(flatten)]
    pub wait: Wait,
    /// Snapshot id, a unique prefix of it, or `latest`
    pub snapshot: String,
    /// Directory on the appliance to restore into
    pub target: String,
}

pub fn run(c: &ApiClient, a: RestoreArgs) -> anyhow::Result<u8> {
    run_job(c, JobSpec::Restore { datastore: a.ds.datastore, snapshot: a.snapshot, target: a.target, include: a.include }, &a.wait)
}
