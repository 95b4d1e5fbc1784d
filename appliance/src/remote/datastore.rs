//! `datastore list|create`.

use clap::Subcommand;
use lifeboat_api_types::{DatastoreCreate, DatastoreInfo};
use lifeboat_client::ApiClient;

#[derive(Subcommand)]
pub enum DatastoreCmd {
    /// Datastores with their usage
    List,
    /// Create a datastore in a directory on the appliance
    Create {
        /// Its name in the API and the CLI
        name: String,
        /// An empty or new directory on the appliance
        path: String,
    },
}

pub fn run(c: &ApiClient, cmd: DatastoreCmd) -> anyhow::Result<u8> {
    match cmd {
        DatastoreCmd::List => {
            let list: Vec<DatastoreInfo> = c.get("/api/datastores")?;
            for d in list {
                println!(
                    "{:<16} {:>5} snapshots  {:>10} used  {:>10} free  {:<7}  {}{}",
                    d.name,
                    d.snapshots,
                    crate::ui::bytes(d.used_bytes),
                    crate::ui::bytes(d.free_bytes),
                    d.compression,
                    d.path,
                    if d.encrypted { "  (encrypted)" } else { "" }
                );
            }
        }
        DatastoreCmd::Create { name, path } => {
            let d: DatastoreInfo = c.post("/api/datastores", &DatastoreCreate { name, path, append_only: false, encryption_password: None })?;
            println!("datastore {} at {}", d.name, d.path);
        }
    }
    Ok(0)
}
