//! `schedule list|add|delete|run`.

use anyhow::Context;
use clap::Subcommand;
use lifeboat_api_types::{JobInfo, ScheduleInfo, ScheduleSpec};
use lifeboat_client::ApiClient;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ScheduleCmd {
    /// Schedules with their next run
    List {
        /// Print them as JSON
        #[arg(long)]
        json: bool,
    },
    /// Add a schedule from a JSON ScheduleSpec file (see /api/openapi.json)
    Add { file: PathBuf },
    /// Remove a schedule
    Delete { id: String },
    /// Start a schedule's job now
    Run { id: String },
}

pub fn run(c: &ApiClient, cmd: ScheduleCmd) -> anyhow::Result<u8> {
    match cmd {
        ScheduleCmd::List { json } => {
            let list: Vec<ScheduleInfo> = c.get("/api/schedules")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for s in list {
                    println!("{:<12} {:<20} {:<16} {:<8} next {}", s.id, s.spec.name, s.spec.cron, s.spec.job.kind(), s.next_run.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into()));
                }
            }
        }
        ScheduleCmd::Add { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let spec: ScheduleSpec = serde_json::from_str(&text).with_context(|| format!("{} is not a schedule (JSON ScheduleSpec)", file.display()))?;
            let s: ScheduleInfo = c.post("/api/schedules", &spec)?;
            println!("schedule {} ({}) added", s.id, s.spec.name);
        }
        ScheduleCmd::Delete { id } => c.delete::<()>(&format!("/api/schedules/{id}"))?,
        ScheduleCmd::Run { id } => {
            let j: JobInfo = c.post(&format!("/api/schedules/{id}/run"), &())?;
            println!("{}", j.id);
        }
    }
    Ok(0)
}
