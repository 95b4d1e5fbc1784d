//! Remote mode: `lifeboat --server URL --token T <command>` drives a
//! daemon through its API. Datastores are named here (default
//! `default`), paths are on the appliance, and long jobs show a progress
//! bar fed by the server's event stream.
//!
//! One module per subcommand, as in `commands/` for the local CLI; each
//! has its arguments and one `run`.

mod backup;
mod check;
mod datastore;
mod forget;
mod gc;
mod jobs;
mod lab;
mod login;
mod restore;
mod schedule;
mod snapshots;
mod token;
pub(crate) mod vm;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lifeboat_api_types::*;
use lifeboat_client::{ApiClient, TlsTrust};
use std::io::IsTerminal;

#[derive(Parser)]
#[command(name = "lifeboat", version, about = "Lifeboat: drive an appliance through its API")]
pub struct RemoteCli {
    /// The appliance, e.g. https://backup.example:8007
    #[arg(long, env = "LIFEBOAT_SERVER", value_name = "URL")]
    pub server: String,
    /// API token or session token (from `login`)
    #[arg(long, env = "LIFEBOAT_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The appliance certificate's SHA-256 fingerprint (shown by `lifeboat serve` and the console)
    #[arg(long, env = "LIFEBOAT_FINGERPRINT", value_name = "SHA256")]
    pub fingerprint: Option<String>,
    /// Do not check the appliance's certificate (tests only)
    #[arg(long)]
    pub insecure: bool,
    #[command(subcommand)]
    pub command: RemoteCmd,
}

#[derive(clap::Args)]
pub struct DsName {
    /// Datastore name on the appliance
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub datastore: String,
}

#[derive(clap::Args)]
pub struct Wait {
    /// Print the job id and return instead of following the job
    #[arg(long)]
    pub no_wait: bool,
    /// Print the finished job as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum RemoteCmd {
    /// Log in as admin and print a session token (password from stdin or a prompt)
    Login,
    /// Datastores: list or create
    Datastore {
        #[command(subcommand)]
        cmd: datastore::DatastoreCmd,
    },
    /// List snapshots
    Snapshots(snapshots::SnapshotsArgs),
    /// Back up directories on the appliance
    Backup(backup::BackupArgs),
    /// Restore a snapshot into a directory on the appliance
    Restore(restore::RestoreArgs),
    /// Verify a datastore
    Check(check::CheckArgs),
    /// Reclaim space
    Gc(gc::GcArgs),
    /// Remove a snapshot by id
    Forget(forget::ForgetArgs),
    /// Jobs: list, show, log, cancel, watch
    Jobs {
        #[command(subcommand)]
        cmd: Option<jobs::JobsCmd>,
    },
    /// Schedules: list, add, delete, run
    Schedule {
        #[command(subcommand)]
        cmd: schedule::ScheduleCmd,
    },
    /// API tokens: list, create, revoke
    Token {
        #[command(subcommand)]
        cmd: token::TokenCmd,
    },
    /// VMs: list, register, backup, snapshots, restore, export
    Vm {
        #[command(subcommand)]
        cmd: vm::RemoteVmCmd,
    },
    /// Verification labs: define, list, run, history
    Lab {
        #[command(subcommand)]
        cmd: lab::RemoteLabCmd,
    },
}

/// Whether the command line asks for remote mode.
pub fn wanted() -> bool {
    std::env::var_os("LIFEBOAT_SERVER").is_some() || std::env::args().any(|a| a == "--server" || a.starts_with("--server="))
}

pub fn run(cli: RemoteCli) -> anyhow::Result<u8> {
    let trust = if cli.insecure {
        TlsTrust::Insecure
    } else if let Some(f) = cli.fingerprint.clone() {
        TlsTrust::Fingerprint(f)
    } else {
        TlsTrust::Unset
    };
    let trust = if cli.server.starts_with("http://") { TlsTrust::Insecure } else { trust };
    let needs_token = !matches!(cli.command, RemoteCmd::Login);
    if needs_token && cli.token.is_none() {
        anyhow::bail!("no token: pass --token or set LIFEBOAT_TOKEN (get one with `lifeboat --server {} login` or create an API token)", cli.server);
    }
    let c = ApiClient::new(&cli.server, cli.token.clone(), trust)?;
    match cli.command {
        RemoteCmd::Login => login::run(&c),
        RemoteCmd::Datastore { cmd } => datastore::run(&c, cmd),
        RemoteCmd::Snapshots(a) => snapshots::run(&c, a),
        RemoteCmd::Backup(a) => backup::run(&c, a),
        RemoteCmd::Restore(a) => restore::run(&c, a),
        RemoteCmd::Check(a) => check::run(&c, a),
        RemoteCmd::Gc(a) => gc::run(&c, a),
        RemoteCmd::Forget(a) => forget::run(&c, a),
        RemoteCmd::Jobs { cmd } => jobs::run(&c, cmd),
        RemoteCmd::Schedule { cmd } => schedule::run(&c, cmd),
        RemoteCmd::Token { cmd } => token::run(&c, cmd),
        RemoteCmd::Vm { cmd } => vm::run(&c, cmd),
        RemoteCmd::Lab { cmd } => lab::run(&c, cmd),
    }
}

/// Starts a job and, unless told not to, follows it to its end. The
/// event stream is opened first so no event of the job can be missed.
pub(crate) fn run_job(c: &ApiClient, spec: JobSpec, wait: &Wait) -> anyhow::Result<u8> {
    run_started(c, wait, |c| Ok(c.post("/api/jobs", &spec)?))
}

/// Starts a job with `start` (any route that answers with the job) and
/// follows it as `run_job` does.
pub(crate) fn run_started(c: &ApiClient, wait: &Wait, start: impl FnOnce(&ApiClient) -> anyhow::Result<JobInfo>) -> anyhow::Result<u8> {
    // Listen first: the job's events must not pass before we do.
    let events = if wait.no_wait { None } else { Some(c.events()?) };
    let job = start(c)?;
    match events {
        None => {
            println!("{}", job.id);
            Ok(0)
        }
        Some(ev) => follow(ev, job, wait.json),
    }
}

pub(crate) fn follow(events: lifeboat_client::EventStream, mut job: JobInfo, json: bool) -> anyhow::Result<u8> {
    let bar = if std::io::stderr().is_terminal() && !json {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        pb.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap());
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        Some(pb)
    } else {
        None
    };
    if !job.state.is_finished() {
        for ev in events {
            match ev {
                Event::JobProgress { id, progress } if id == job.id => {
                    if let Some(pb) = &bar {
                        pb.set_message(progress_line(&progress));
                    }
                }
                Event::JobState { job: j } if j.id == job.id && j.state.is_finished() => {
                    job = j;
                    break;
                }
                _ => {}
            }
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        print_result(&job);
        if job.state == JobState::Warnings {
            eprintln!("job {} finished with warnings: `lifeboat --server ... jobs log {}` lists them", job.id, job.id);
        }
    }
    match job.state {
        JobState::Succeeded => Ok(0),
        JobState::Warnings => Ok(crate::EXIT_PARTIAL),
        JobState::Running => anyhow::bail!("lost the event stream before job {} ended; follow it with `jobs watch {}`", job.id, job.id),
        _ => anyhow::bail!("job {} {}: {}", job.id, format!("{:?}", job.state).to_lowercase(), job.error.unwrap_or_default()),
    }
}

/// A finished job's result in the words the local command uses for the
/// same work; kinds without a readable form (and results this client
/// cannot read) are shown as JSON.
fn print_result(job: &JobInfo) {
    use lifeboat_actors::work::outcome::*;
    use serde_json::from_value;
    let short = |id: &str| id.chars().take(8).collect::<String>();
    let secs = job.finished.map(|f| (f - job.started).num_milliseconds().max(0) as f64 / 1000.0).unwrap_or(0.0);
    let forgotten = |ids: &[String]| {
        if !ids.is_empty() {
            println!("retention: removed {} snapshots ({})", ids.len(), ids.iter().map(|i| short(i)).collect::<Vec<_>>().join(", "));
        }
    };
    let r = job.result.clone();
    let shown = match &job.spec {
        _ if r.is_null() => true,
        JobSpec::Backup { .. } | JobSpec::AgentBackup { .. } => from_value::<BackupJobOutcome>(r.clone())
            .map(|b| {
                crate::commands::backup::print_summary(&short(&b.snapshot), &b.summary);
                forgotten(&b.forgotten.unwrap_or_default());
            })
            .is_ok(),
        JobSpec::Restore { target, .. } => {
            from_value::<RestoreJobOutcome>(r.clone()).map(|x| crate::commands::restore::print_summary(&short(&x.snapshot), target, x.files, x.dirs, x.bytes, secs)).is_ok()
        }
        JobSpec::Verify { read_data, .. } => from_value::<lifeboat_store::CheckReport>(r.clone()).map(|rep| crate::commands::check::print_report(&rep, *read_data)).is_ok(),
        JobSpec::Gc { .. } => from_value::<lifeboat_store::GcReport>(r.clone()).map(|rep| crate::commands::gc::print_report(&rep)).is_ok(),
        JobSpec::Forget { .. } => from_value::<ForgetJobOutcome>(r.clone()).map(|f| println!("removed {} snapshots; run `gc` to reclaim their space", f.forgotten.len())).is_ok(),
        JobSpec::VmBackup { .. } => from_value::<VmBackupJobOutcome>(r.clone())
            .map(|b| {
                println!("snapshot {} of VM {} saved ({}-consistent)", short(&b.snapshot), b.vm, b.consistency);
                for d in &b.disks {
                    crate::commands::vm::print_disk_stats(&d.id, &d.stats);
                }
                forgotten(&b.forgotten.unwrap_or_default());
            })
            .is_ok(),
        JobSpec::LabVerify { .. } => from_value::<lifeboat_lab::LabReport>(r.clone()).map(|rep| print!("{}", rep.summary_text())).is_ok(),
        JobSpec::VmInstantRestore { .. } => from_value::<VmInstantRestoreJobOutcome>(r.clone())
            .map(|x| {
                println!("VM {} runs from snapshot {} ({}, QEMU pid {}); serial log on the appliance: {}", x.vm, short(&x.snapshot), x.state, x.pid, x.serial_log);
                println!("stop it with `vm stop {}`, or move it onto local disks with `vm migrate-back {} DIR`", x.vm, x.vm);
            })
            .is_ok(),
        JobSpec::VmMigrateBack { .. } => from_value::<VmMigrateBackJobOutcome>(r.clone())
            .map(|x| {
                for f in &x.files {
                    println!("disk: {f}");
                }
                println!("VM {} runs on local disks now; it stays registered under that name", x.vm);
            })
            .is_ok(),
        JobSpec::VmRestore { target, .. } => from_value::<VmRestoreJobOutcome>(r.clone())
            .map(|x| {
                for f in &x.files {
                    println!("disk: {f}");
                }
                println!("restored VM {} to {target} (hardware in vm.json)", x.vm);
            })
            .is_ok(),
        JobSpec::VmRestoreFiles { paths, target, .. } => {
            from_value::<VmRestoreFilesJobOutcome>(r.clone()).map(|x| println!("copied {} from partition {} of disk {} to {target}", paths.join(", "), x.partition, x.disk)).is_ok()
        }
        JobSpec::CdpProtect { .. } => from_value::<CdpProtectJobOutcome>(r.clone()).map(|x| println!("the protection of VM {} ({}) ended", x.vm, x.disks.join(", "))).is_ok(),
    };
    if !shown {
        println!("job {} ({}): {}", job.id, job.spec.kind(), format!("{:?}", job.state).to_lowercase());
        println!("{}", serde_json::to_string_pretty(&job.result).unwrap_or_default());
    }
}

fn progress_line(p: &JobProgress) -> String {
    let mut s = format!("{}: {} files, {}", p.phase, p.files_done, crate::ui::bytes(p.bytes_done));
    if let (Some(ft), Some(bt)) = (p.files_total, p.bytes_total) {
        s.push_str(&format!(" of {} files, {}", ft, crate::ui::bytes(bt)));
    }
    s
}
