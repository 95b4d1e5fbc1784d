use crate::commands::open_datastore;
use crate::{ui, DatastoreArg, EXIT_ERROR};
use clap::Subcommand;
use lifeboat_store::Datastore;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DatastoreCmd {
    /// Create a new, empty datastore in PATH (must not exist or be empty)
    Init {
        path: PathBuf,
        /// Refuse forget and gc from the start (see `datastore config`)
        #[arg(long)]
        append_only: bool,
    },
    /// Rebuild the index from the packs: after the index was lost or
    /// damaged, or to drop damaged blobs and record what they cost
    Repair {
        #[command(flatten)]
        ds: DatastoreArg,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show or change datastore settings
    Config {
        #[command(flatten)]
        ds: DatastoreArg,
        /// Append-only: refuse forget and gc (protects the backups from a
        /// compromised client)
        #[arg(long, value_name = "BOOL")]
        append_only: Option<bool>,
    },
}

pub fn run(cmd: DatastoreCmd) -> anyhow::Result<u8> {
    match cmd {
        DatastoreCmd::Init { path, append_only } => {
            let cfg = lifeboat_store::DatastoreConfig { append_only, ..Default::default() };
            let ds = Datastore::init_with(&path, cfg)?;
            println!("created datastore {} (format {}, id {})", path.display(), ds.config().format_version, ds.config().id);
            Ok(0)
        }
        DatastoreCmd::Repair { ds, json } => repair(&ds.datastore, json),
        DatastoreCmd::Config { ds, append_only } => {
            let store = open_datastore(&ds.datastore)?;
            let mut cfg = store.config().clone();
            if let Some(v) = append_only {
                cfg.append_only = v;
                cfg.save(&ds.datastore)?;
            }
            println!("{}", serde_json::to_string_pretty(&cfg)?);
            Ok(0)
        }
    }
}

fn repair(path: &std::path::Path, json: bool) -> anyhow::Result<u8> {
    let moved = lifeboat_store::repair::prepare(path)?;
    if let Some(m) = &moved {
        eprintln!("the index could not be opened; moved it to {} and rebuilding from the packs", m.display());
    }
    let ds = open_datastore(path)?;
    let term = ui::stderr_is_terminal() && !json;
    let pb = term.then(|| {
        let pb = indicatif::ProgressBar::new(0);
        pb.set_style(indicatif::ProgressStyle::with_template("reading packs [{wide_bar}] {bytes}/{total_bytes} ETA {eta}").unwrap());
        pb
    });
    let mut rep = lifeboat_store::repair::repair(&ds, &|done, total| {
        if let Some(pb) = &pb {
            pb.set_length(total);
            pb.set_position(done);
        }
    })?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    rep.old_index = moved.map(|m| m.display().to_string());
    if json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        println!(
            "rebuilt the index from {} packs ({}): {} blobs, {} snapshots ({} forgotten ones left out)",
            rep.packs,
            ui::bytes(rep.bytes_read),
            rep.blobs,
            rep.snapshots,
            rep.forgotten
        );
        for u in &rep.unreadable_packs {
            println!("damaged: {u}");
        }
        for l in &rep.lost_blobs {
            println!("lost blob {} (pack {} offset {}): {}", l.id, l.pack, l.offset, l.reason);
        }
        for a in &rep.affected {
            println!("damaged: {a}");
        }
        if rep.affected.is_empty() && rep.lost_blobs.is_empty() && rep.unreadable_packs.is_empty() {
            println!("no damage found");
        } else {
            println!(
                "{} snapshot paths lose data; the rest restores. A new backup of the same files stores the lost data again.",
                rep.affected.len()
            );
        }
    }
    Ok(if rep.affected.is_empty() && rep.lost_blobs.is_empty() { 0 } else { EXIT_ERROR })
}
