//! `lifeboat console`: the appliance's terminal UI (first-boot wizard,
//! status, settings); the UI itself is the lifeboat-console crate.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ConsoleArgs {
    /// The system to configure; everything the console writes (network,
    /// hostname, time zone, fstab, mounts) goes under it
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Offer only this disk (device path or name); repeat for more.
    /// Default: every disk
    #[arg(long = "disk", value_name = "DISK")]
    pub disks: Vec<PathBuf>,
    /// Time zone database the zone name is checked against
    #[arg(long, value_name = "DIR", default_value = "/usr/share/zoneinfo")]
    pub zoneinfo: PathBuf,
    /// Run the first-boot wizard even when setup was done
    #[arg(long)]
    pub wizard: bool,
}

pub fn run(a: ConsoleArgs) -> anyhow::Result<u8> {
    lifeboat_console::run(lifeboat_console::ConsoleOptions { root: a.root, disks: a.disks, zoneinfo: a.zoneinfo, wizard: a.wizard })?;
    Ok(0)
}
