//! `check`: a `verify` job on the appliance.

use super::{run_job, DsName, Wait};
use lifeboat_api_types::JobSpec;
use lifeboat_client::ApiClient;

#[derive(clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub ds: DsName,
    /// Also read every blob and verify it against its hash
    #[arg(long)]
    pub read_data: bool,
    #[command(flatten)]
    pub wait: Wait,
}

pub fn run(c: &ApiClient, a: CheckArgs) -> anyhow::Result<u8> {
    run_job(c, JobSpec::Verify { datastore: a.ds.datastore, read_data: a.read_data }, &a.wait)
}
