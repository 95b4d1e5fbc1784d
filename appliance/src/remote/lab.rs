//! Remote mode for labs: `lifeboat --server URL --token T lab ...`.
//! Definitions live in the appliance (`/api/labs`); a run is a
//! `lab-verify` job followed like any other.

use super::{run_started, Wait};
use clap::Subcommand;
use lifeboat_api_types::{JobInfo, JobState, LabDefinition};
use lifeboat_client::ApiClient;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum RemoteLabCmd {
    /// Lab definitions
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add a lab from a JSON file (a LabDefinition, see /api/openapi.json);
    /// --replace changes an existing one
    Define {
        #[arg(long)]
        replace: bool,
        file: PathBuf,
    },
    /// Remove a lab definition (its reports stay)
    Remove { name: String },
    /// Run a lab now and follow it; exit 1 when a VM failed
    Run {
        #[command(flatten)]
        wait: Wait,
        name: String,
    },
    /// A lab's past runs, newest first
    Runs {
        #[arg(long)]
        json: bool,
        name: String,
    },
}

pub fn run(c: &ApiClient, cmd: RemoteLabCmd) -> anyhow::Result<u8> {
    match cmd {
        RemoteLabCmd::List { json } => {
            let labs: Vec<LabDefinition> = c.get("/api/labs")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&labs)?);
                return Ok(0);
            }
            for l in labs {
                let vms: Vec<&str> = l.vms.iter().map(|v| v.snapshot.as_str()).collect();
                println!("{:<20} {:<12} {}{}", l.name, l.datastore, vms.join(", "), if l.after_backup { "  (after every backup)" } else { "" });
            }
            Ok(0)
        }
        RemoteLabCmd::Define { replace, file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let lab: LabDefinition = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not a lab definition: {e}", file.display()))?;
            let saved: LabDefinition = if replace { c.put(&format!("/api/labs/{}", lab.name), &lab)? } else { c.post("/api/labs", &lab)? };
            println!("lab {} defined ({} VMs)", saved.name, saved.vms.len());
            Ok(0)
        }
        RemoteLabCmd::Remove { name } => {
            c.delete::<()>(&format!("/api/labs/{name}"))?;
            println!("lab {name} removed; its reports stay");
            Ok(0)
        }
        RemoteLabCmd::Run { wait, name } => run_started(c, &wait, |c| Ok(c.post::<_, JobInfo>(&format!("/api/labs/{name}/run"), &serde_json::json!({}))?)),
        RemoteLabCmd::Runs { json, name } => {
            let runs: Vec<JobInfo> = c.get(&format!("/api/labs/{name}/runs"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
                return Ok(0);
            }
            for j in runs {
                let state = match j.state {
                    JobState::Succeeded => "passed".to_string(),
                    JobState::Failed => "FAILED".to_string(),
                    s => format!("{s:?}").to_lowercase(),
                };
                println!("{:<18} {}  {}{}", j.id, j.started.format("%Y-%m-%d %H:%M:%S"), state, j.error.map(|e| format!(": {e}")).unwrap_or_default());
            }
            Ok(0)
        }
    }
}
