//! `gc`: a `gc` job on the appliance.

use super::{run_job, DsName, Wait};
use lifeboat_api_types::JobSpec;
use lifeboat_client::ApiClient;

#[derive(clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub ds: DsName,
    #[command(flatten)]
    pub wait: Wait,
}

pub fn run(c: &ApiClient, a: GcArgs) -> anyhow::Result<u8> {
    run_job(c, JobSpec::Gc { datastore: a.ds.datastore }, &a.wait)
}
