//! `jobs list|show|log|cancel|watch`.

use clap::Subcommand;
use lifeboat_api_types::JobInfo;
use lifeboat_client::ApiClient;

#[derive(Subcommand)]
pub enum JobsCmd {
    /// Recent jobs, newest first
    List {
        /// Only those still running
        #[arg(long)]
        running: bool,
        /// Print them as JSON
        #[arg(long)]
        json: bool,
    },
    /// One job as JSON
    Show { id: String },
    /// A job's log
    Log { id: String },
    /// Ask a running job to stop
    Cancel { id: String },
    /// Follow a running job with a progress bar until it ends
    Watch { id: String },
}

pub fn run(c: &ApiClient, cmd: Option<JobsCmd>) -> anyhow::Result<u8> {
    match cmd.unwrap_or(JobsCmd::List { running: false, json: false }) {
        JobsCmd::List { running, json } => {
            let jobs: Vec<JobInfo> = c.get(&format!("/api/jobs?running={running}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                for j in jobs {
                    println!("{:<26} {:<12} {:<12} {:<10} {}", j.id, j.spec.kind(), format!("{:?}", j.state).to_lowercase(), j.spec.datastore(), j.error.unwrap_or_default());
                }
            }
        }
        JobsCmd::Show { id } => {
            let j: JobInfo = c.get(&format!("/api/jobs/{id}"))?;
            println!("{}", serde_json::to_string_pretty(&j)?);
        }
        JobsCmd::Log { id } => print!("{}", c.get_text(&format!("/api/jobs/{id}/log"))?),
        JobsCmd::Cancel { id } => {
            let _: JobInfo = c.post(&format!("/api/jobs/{id}/cancel"), &())?;
            println!("cancel requested for job {id}");
        }
        JobsCmd::Watch { id } => {
            let events = c.events()?;
            let job: JobInfo = c.get(&format!("/api/jobs/{id}"))?;
            return super::follow(events, job, false);
        }
    }
    Ok(0)
}
