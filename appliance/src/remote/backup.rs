//! `backup`: a `backup` job on the appliance.

use super::{run_job, DsName, Wait};
use crate::commands::backup::BackupSelection;
use lifeboat_api_types::JobSpec;
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
    let BackupSelection { tags, excludes, one_file_system, exclude_nodump } = a.select;
    let spec = JobSpec::Backup { datastore: a.ds.datastore, paths: a.paths, tags, exclude: excludes, one_file_system, exclude_nodump };
    run_job(c, spec, &a.wait)
}
