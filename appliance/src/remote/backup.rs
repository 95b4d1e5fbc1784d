//! `backup`: a `backup` job on the appliance.

use super::{run_job, DsName, Wait};
use lifeboat_api_types::{BackupSelection, JobSpec};
use lifeboat_client::ApiClient;

#[derive(clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub ds: DsName,
    #[command(flatten)]
    pub select: BackupSelection,
    #[command(flatten)]
    pub wait: Wait,
    /// Files and directories on the appliance to back up
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
}

pub fn run(c: &ApiClient, a: BackupArgs) -> anyhow::Result<u8> {
    let spec = JobSpec::Backup { datastore: a.ds.datastore, paths: a.paths, select: a.select };
    run_job(c, spec, &a.wait)
}
