//! The `lifeboat` binary: a thin CLI over the crates. Each command lives
//! in its own file under `commands/`.

mod commands;
mod logging;
mod remote;
mod systemd;
mod ui;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes (like restic): 0 ok, 1 error, 3 backup done but some
/// files could not be read, 130 interrupted.
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_PARTIAL: u8 = 3;
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(name = "lifeboat", version, about = "Lifeboat backup and disaster-recovery appliance")]
struct Cli {
    /// Log format on stderr: auto is JSON under systemd's journal, human otherwise
    #[arg(long, global = true, value_enum, env = "LIFEBOAT_LOG_FORMAT", default_value_t = logging::LogFormat::Auto)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct DatastoreArg {
    /// Datastore directory
    #[arg(long, env = "LIFEBOAT_DATASTORE", value_name = "PATH")]
    pub datastore: PathBuf,
    #[command(flatten)]
    pub key: KeyArgs,
}

/// What unlocks an encrypted datastore. Without either option the
/// passphrase comes from LIFEBOAT_PASSWORD, else (on a terminal) a prompt.
#[derive(clap::Args, Clone, Default)]
pub struct KeyArgs {
    /// Encrypted datastore: read the passphrase from FILE (its first line)
    #[arg(long, env = "LIFEBOAT_PASSWORD_FILE", value_name = "FILE", conflicts_with = "key_file")]
    pub password_file: Option<PathBuf>,
    /// Encrypted datastore: unlock it with key file FILE
    #[arg(long, env = "LIFEBOAT_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Create or inspect datastores
    Datastore {
        #[command(subcommand)]
        cmd: commands::datastore::DatastoreCmd,
    },
    /// Back up files and directories into a new snapshot
    Backup(commands::backup::BackupArgs),
    /// List snapshots
    Snapshots(commands::snapshots::SnapshotsArgs),
    /// List the contents of a directory in a snapshot
    Ls(commands::ls::LsArgs),
    /// Restore a snapshot (or parts of it) into a directory
    Restore(commands::restore::RestoreArgs),
    /// Browse the snapshots read-only through a FUSE mount, until Ctrl-C
    Mount(commands::mount::MountArgs),
    /// Verify the datastore: index against packs, snapshots, and with
    /// --read-data every blob's content
    Check(commands::check::CheckArgs),
    /// Virtual machines: inspect, back up, list, restore, instant-restore
    Vm {
        #[command(subcommand)]
        cmd: commands::vm::VmCmd,
    },
    /// Verification lab: boot VM backups in an isolated network and
    /// prove they work (ping, heartbeat, screenshot, scripts)
    Lab {
        #[command(subcommand)]
        cmd: commands::lab::LabCmd,
    },
    /// Continuous data protection: journal every write of a running VM's
    /// disks, and read, export or bookmark any moment of them
    Cdp {
        #[command(subcommand)]
        cmd: commands::cdp::CdpCmd,
    },
    /// Remove snapshots by keep rules (restic semantics) or by id
    Forget(commands::forget::ForgetArgs),
    /// Reclaim space: delete packs no snapshot needs, repack mostly-dead
    /// ones, remove leftovers of interrupted backups. Safe while backups run
    Gc(commands::gc::GcArgs),
    /// Run the appliance daemon: actors and the REST API (see also
    /// `lifeboat --server URL --token T ...` to drive one remotely)
    Serve(commands::serve::ServeArgs),
    /// Back up this machine's files into an appliance over the network
    /// (`lifeboat agent --server URL --token T PATH...`)
    Agent(commands::agent::AgentArgs),
    /// Offline administration of the daemon's state
    Admin {
        #[command(subcommand)]
        cmd: commands::admin::AdminCmd,
    },
    /// The appliance console: first-boot setup wizard, then status and
    /// settings (network, hostname, time, admin password, data disk)
    Console(commands::console::ConsoleArgs),
}

/// glibc malloc tuning: big buffers (chunks, packs, trees) come from
/// mmap and go back to the OS when freed, and few arenas are kept, so
/// resident memory follows what is live instead of the high-water mark
/// of every worker thread.
fn tune_malloc() {
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Raises the soft limit on open files to the hard one: backup and
/// restore hold every directory on the way down open (they work relative
/// to directory descriptors), so a deep tree needs its depth in
/// descriptors per worker, beyond the usual soft limit of 1024.
fn raise_open_file_limit() {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn main() -> ExitCode {
    tune_malloc();
    raise_open_file_limit();
    // `lifeboat agent --server ...` is a command of its own, not the
    // remote mode that `--server` otherwise selects.
    let agent = std::env::args().nth(1).as_deref() == Some("agent");
    if !agent && remote::wanted() {
        logging::init(logging::LogFormat::Auto, "error");
        return finish(remote::run(remote::RemoteCli::parse()));
    }
    let cli = Cli::parse();
    // The daemon logs what it does; CLI commands print their own results
    // and log only errors.
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "error" };
    logging::init(cli.log_format, default_level);
    let res = match cli.command {
        Command::Datastore { cmd } => commands::datastore::run(cmd),
        Command::Backup(a) => commands::backup::run(a),
        Command::Snapshots(a) => commands::snapshots::run(a),
        Command::Ls(a) => commands::ls::run(a),
        Command::Restore(a) => commands::restore::run(a),
        Command::Mount(a) => commands::mount::run(a),
        Command::Check(a) => commands::check::run(a),
        Command::Forget(a) => commands::forget::run(a),
        Command::Vm { cmd } => commands::vm::run(cmd),
        Command::Lab { cmd } => commands::lab::run(cmd),
        Command::Cdp { cmd } => commands::cdp::run(cmd),
        Command::Gc(a) => commands::gc::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Admin { cmd } => commands::admin::run(cmd),
        Command::Agent(a) => commands::agent::run(a),
        Command::Console(a) => commands::console::run(a),
    };
    finish(res)
}

fn finish(res: anyhow::Result<u8>) -> ExitCode {
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if e.downcast_ref::<commands::Interrupted>().is_some() {
                eprintln!("lifeboat: {e:#}");
                return ExitCode::from(EXIT_INTERRUPTED);
            }
            eprintln!("lifeboat: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
