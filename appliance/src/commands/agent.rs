//! `lifeboat agent`: back up this machine's files into an appliance over
//! the network (crates/remote; protocol in docs/agent-protocol.md).

use crate::commands::{hostname, Interrupted};
use crate::{ui, EXIT_PARTIAL};
use anyhow::Context;
use lifeboat_client::{ApiClient, TlsTrust};
use lifeboat_ingest::{BackupOptions, Progress};
use lifeboat_remote::http::HttpTransport;
use lifeboat_remote::{run_agent_backup, AgentOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// The appliance's API, e.g. https://backup.example:8443
    #[arg(long, env = "LIFEBOAT_SERVER", value_name = "URL")]
    pub server: String,
    /// This agent's API token (role backup-only; `POST /api/agents` makes one)
    #[arg(long, env = "LIFEBOAT_TOKEN", value_name = "T", hide_env_values = true)]
    pub token: String,
    /// SHA-256 fingerprint of the appliance's certificate (`lifeboat serve` shows it)
    #[arg(long, value_name = "SHA256", conflicts_with = "insecure")]
    pub fingerprint: Option<String>,
    /// Accept any certificate (tests, first contact)
    #[arg(long)]
    pub insecure: bool,
    /// Datastore on the appliance (default: the appliance's default datastore)
    #[arg(long = "datastore", value_name = "NAME")]
    pub datastore: Option<String>,
    /// Host name recorded in the snapshot (default: this machine's)
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    #[command(flatten)]
    pub select: lifeboat_ingest::BackupSelection,
    /// Read every file even if the parent snapshot has it unchanged
    #[arg(long)]
    pub force: bool,
    /// Worker threads (default: from the core count)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Keep retrying this long (seconds) while the appliance cannot be reached
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub retry_for: u64,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
    /// Files and directories to back up
    #[arg(required = true, value_name = "PATH")]
    pub sources: Vec<PathBuf>,
}

pub fn run(a: AgentArgs) -> anyhow::Result<u8> {
    let trust = match (&a.fingerprint, a.insecure) {
        // A plain-HTTP loopback listener has no certificate to check.
        _ if a.server.starts_with("http://") => TlsTrust::Insecure,
        (Some(f), _) => TlsTrust::Fingerprint(f.clone()),
        (None, true) => TlsTrust::Insecure,
        (None, false) => TlsTrust::Unset,
    };
    let client = ApiClient::new_agent(&a.server, Some(a.token.clone()), trust).context("connecting to the appliance")?;
    let transport = Arc::new(HttpTransport::new(client));
    let progress = Arc::new(Progress::new());
    ui::install_cancel_handler(&progress.cancel);
    let opts = AgentOptions {
        backup: BackupOptions { sources: a.sources.clone(), hostname: a.hostname.clone().unwrap_or_else(hostname), threads: a.threads, force_full: a.force, select: a.select.clone() },
        datastore: a.datastore.clone(),
        retry_for: Duration::from_secs(a.retry_for),
    };
    let bar = ui::backup_bar(&progress, &a.sources, &a.select.excludes, a.json);
    let res = run_agent_backup(transport, &opts, &progress);
    drop(bar);
    let out = match res {
        Ok(o) => o,
        Err(e) if e.is_interrupted() => return Err(Interrupted("agent interrupted; no snapshot was written, earlier snapshots are intact".into()).into()),
        Err(e) => return Err(e.into()),
    };
    let s = &out.summary;
    if a.json {
        let v = serde_json::json!({
            "snapshot_id": out.snapshot_id,
            "short_id": &out.snapshot_id[..8.min(out.snapshot_id.len())],
            "parent": out.parent,
            "summary": s,
            "upload": out.upload,
            "warnings": out.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for w in &out.warnings {
            eprintln!("warning: {w}");
        }
        let secs = s.duration_ms as f64 / 1000.0;
        println!("snapshot {} saved on {}", &out.snapshot_id[..8.min(out.snapshot_id.len())], a.server);
        println!("files:   {} new, {} changed, {} unchanged ({} total, {} dirs, {} dirs unchanged)", s.files_new, s.files_changed, s.files_unchanged, s.files, s.dirs, s.dirs_unchanged);
        println!(
            "data:    {} in files, {} read, {} new, {} uploaded in {} packs",
            ui::bytes(s.total_bytes),
            ui::bytes(s.bytes_read),
            ui::bytes(s.bytes_added),
            ui::bytes(out.upload.bytes_uploaded),
            out.upload.packs_uploaded
        );
        if out.upload.retries > 0 {
            println!("network: {} requests sent again after connection failures", out.upload.retries);
        }
        println!("time:    {secs:.2} s ({}/s)", ui::bytes((s.total_bytes as f64 / secs.max(0.001)) as u64));
    }
    Ok(if s.warnings > 0 { EXIT_PARTIAL } else { 0 })
}
