use clap::Subcommand;
use lifeboat_store::Datastore;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DatastoreCmd {
    /// Create a new, empty datastore in PATH (must not exist or be empty)
    Init { path: PathBuf },
}

pub fn run(cmd: DatastoreCmd) -> anyhow::Result<u8> {
    match cmd {
        DatastoreCmd::Init { path } => {
            let ds = Datastore::init(&path)?;
            println!("created datastore {} (format {}, id {})", path.display(), ds.config().format_version, ds.config().id);
            Ok(0)
        }
    }
}
