use crate::commands::open_datastore;
use crate::DatastoreArg;
use lifeboat_mount::{serve, Ended, MountConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct MountArgs {
    #[command(flatten)]
    pub datastore: DatastoreArg,
    /// Empty directory to mount the datastore on (read-only):
    /// snapshots/<time>_<id>/... and latest
    pub mountpoint: PathBuf,
    /// Let other users browse too (the backed-up modes and owners still
    /// decide who reads what)
    #[arg(long)]
    pub allow_other: bool,
}

pub fn run(args: MountArgs) -> anyhow::Result<u8> {
    // Checked before opening the datastore: a typo in the mount point is
    // the likelier mistake and deserves the plainer message.
    lifeboat_mount::check_mountpoint(&args.mountpoint)?;
    let ds = open_datastore(&args.datastore)?;
    let cfg = MountConfig { allow_other: args.allow_other };
    let shown = args.datastore.datastore.display().to_string();
    let ended = serve(ds, &args.mountpoint, &cfg, |mp| {
        eprintln!("mounted {shown} at {}; press Ctrl-C to unmount", mp.display());
    })?;
    match ended {
        Ended::Signal => eprintln!("unmounted {}", args.mountpoint.display()),
        Ended::SignalDetached => eprintln!("unmounted {} (lazily: it was busy; open files there now fail)", args.mountpoint.display()),
        Ended::External => eprintln!("{} was unmounted", args.mountpoint.display()),
    }
    Ok(0)
}
