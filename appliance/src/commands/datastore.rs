use crate::commands::{new_key, open_datastore, unlock_key};
use crate::{ui, DatastoreArg, KeyArgs, EXIT_ERROR};
use clap::Subcommand;
use lifeboat_store::{Compression, Datastore, DatastoreConfig};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DatastoreCmd {
    /// Create a new, empty datastore in PATH (must not exist or be empty)
    Init {
        path: PathBuf,
        /// Encrypt everything stored (XChaCha20-Poly1305); the key is the
        /// passphrase (--password-file, LIFEBOAT_PASSWORD or typed twice) or
        /// --key-file (created with a random key if it does not exist)
        #[arg(long)]
        encrypt: bool,
        #[command(flatten)]
        key: KeyArgs,
        /// Refuse forget and gc from the start (see `datastore config`)
        #[arg(long)]
        append_only: bool,
        #[command(flatten)]
        compression: CompressionArgs,
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
        #[command(flatten)]
        compression: CompressionArgs,
    },
    /// Manage the keys of an encrypted datastore
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
}

/// How new blobs are compressed; blobs already stored stay as they are.
#[derive(clap::Args)]
pub struct CompressionArgs {
    /// lz4 (fastest backup and restore), zstd (smaller; see --zstd-level) or none
    #[arg(long, value_name = "lz4|zstd|none")]
    compression: Option<Compression>,
    /// zstd level (negative = faster, up to 19 = smaller)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    zstd_level: Option<i32>,
}

impl CompressionArgs {
    /// Applies the flags to `cfg`; true if anything changed.
    fn apply(&self, cfg: &mut DatastoreConfig) -> anyhow::Result<bool> {
        if self.compression.is_none() && self.zstd_level.is_none() {
            return Ok(false);
        }
        let compression = match (self.compression, self.zstd_level) {
            (Some(c), _) => c,
            (None, Some(_)) => Compression::Zstd,
            (None, None) => cfg.compression,
        };
        if compression != Compression::Zstd && self.zstd_level.is_some() {
            anyhow::bail!("--zstd-level goes with --compression zstd");
        }
        cfg.set_compression(compression, self.zstd_level).map_err(anyhow::Error::msg)?;
        Ok(true)
    }
}

/// The new key for `key add` / `key passwd`.
#[derive(clap::Args)]
pub struct NewKeyArgs {
    /// The new passphrase is the first line of FILE (else LIFEBOAT_NEW_PASSWORD, else typed twice)
    #[arg(long, value_name = "FILE", conflicts_with = "new_key_file")]
    pub new_password_file: Option<PathBuf>,
    /// The new key is key file FILE (created with a random key if it does not exist)
    #[arg(long, value_name = "FILE")]
    pub new_key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// List the key slots (each holds the master key, wrapped by one passphrase or key file)
    List {
        #[command(flatten)]
        ds: DatastoreArg,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Add a key slot for a new passphrase or key file (unlocked with a current key)
    Add {
        #[command(flatten)]
        ds: DatastoreArg,
        #[command(flatten)]
        new: NewKeyArgs,
    },
    /// Remove key slot SLOT (a current key must unlock the datastore; the last slot stays)
    Remove {
        #[command(flatten)]
        ds: DatastoreArg,
        slot: String,
    },
    /// Replace the key that unlocks the datastore: add the new one, remove the current one's slot
    Passwd {
        #[command(flatten)]
        ds: DatastoreArg,
        #[command(flatten)]
        new: NewKeyArgs,
    },
}

pub fn run(cmd: DatastoreCmd) -> anyhow::Result<u8> {
    match cmd {
        DatastoreCmd::Init { path, encrypt, key, append_only, compression } => {
            let mut cfg = DatastoreConfig { append_only, ..DatastoreConfig::new() };
            compression.apply(&mut cfg)?;
            let ds = if encrypt {
                let k = new_key(key.key_file.as_ref(), key.password_file.as_ref(), "LIFEBOAT_PASSWORD", "passphrase for the new datastore")?;
                Datastore::init_encrypted(&path, cfg, &k)?
            } else {
                if key.key_file.is_some() || key.password_file.is_some() {
                    anyhow::bail!("--key-file and --password-file need --encrypt with `datastore init`");
                }
                Datastore::init_with(&path, cfg)?
            };
            println!("created {}datastore {} (format {}, id {})", if encrypt { "encrypted " } else { "" }, path.display(), ds.config().format_version, ds.config().id);
            Ok(0)
        }
        DatastoreCmd::Key { cmd } => key(cmd),
        DatastoreCmd::Repair { ds, json } => repair(&ds, json),
        DatastoreCmd::Config { ds, append_only, compression } => {
            let store = open_datastore(&ds)?;
            let mut cfg = store.config().clone();
            let mut changed = compression.apply(&mut cfg)?;
            if let Some(v) = append_only {
                cfg.append_only = v;
                changed = true;
            }
            if changed {
                cfg.save(&ds.datastore)?;
            }
            let mut shown = serde_json::to_value(&cfg)?;
            // Key slots are not settings.
            if let Some(o) = shown.as_object_mut() {
                o.remove("encryption");
            }
            println!("{}", serde_json::to_string_pretty(&shown)?);
            Ok(0)
        }
    }
}

fn key(cmd: KeyCmd) -> anyhow::Result<u8> {
    match cmd {
        KeyCmd::List { ds, json } => {
            let cfg = DatastoreConfig::load(&ds.datastore)?;
            let Some(enc) = cfg.encryption else {
                anyhow::bail!("datastore {} is not encrypted; it has no keys", ds.datastore.display());
            };
            if json {
                let slots: Vec<_> = enc.slots.iter().map(|s| serde_json::json!({ "id": s.id, "kind": s.kind, "created": s.created })).collect();
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "cipher": enc.cipher, "slots": slots }))?);
            } else {
                println!("cipher {}", enc.cipher);
                for s in &enc.slots {
                    let kind = serde_json::to_value(s.kind)?;
                    println!("{}  {:<10}  created {}", s.id, kind.as_str().unwrap_or("?"), s.created.format("%Y-%m-%d %H:%M:%S UTC"));
                }
            }
            Ok(0)
        }
        KeyCmd::Add { ds, new } => {
            let cur = unlock_key(&ds.key, &ds.datastore)?;
            // Check the current key before asking for a new one.
            Datastore::unlocking_slot(&ds.datastore, &cur)?;
            let nk = new_key(new.new_key_file.as_ref(), new.new_password_file.as_ref(), "LIFEBOAT_NEW_PASSWORD", "new passphrase")?;
            let (id, _) = Datastore::add_key(&ds.datastore, &cur, &nk)?;
            println!("added key slot {id}");
            Ok(0)
        }
        KeyCmd::Remove { ds, slot } => {
            let cur = unlock_key(&ds.key, &ds.datastore)?;
            Datastore::remove_key(&ds.datastore, &cur, &slot)?;
            println!("removed key slot {slot}");
            Ok(0)
        }
        KeyCmd::Passwd { ds, new } => {
            let cur = unlock_key(&ds.key, &ds.datastore)?;
            Datastore::unlocking_slot(&ds.datastore, &cur)?;
            let nk = new_key(new.new_key_file.as_ref(), new.new_password_file.as_ref(), "LIFEBOAT_NEW_PASSWORD", "new passphrase")?;
            let (id, old) = Datastore::add_key(&ds.datastore, &cur, &nk)?;
            Datastore::remove_key(&ds.datastore, &nk, &old)?;
            println!("added key slot {id}, removed key slot {old}");
            Ok(0)
        }
    }
}

fn repair(a: &DatastoreArg, json: bool) -> anyhow::Result<u8> {
    let path = &a.datastore;
    let moved = lifeboat_store::prepare_repair(path)?;
    if let Some(m) = &moved {
        eprintln!("the index could not be opened; moved it to {} and rebuilding from the packs", m.display());
    }
    let ds = open_datastore(a)?;
    let term = ui::stderr_is_terminal() && !json;
    let pb = term.then(|| {
        let pb = indicatif::ProgressBar::new(0);
        pb.set_style(indicatif::ProgressStyle::with_template("reading packs [{wide_bar}] {bytes}/{total_bytes} ETA {eta}").unwrap());
        pb
    });
    let mut rep = lifeboat_store::repair(&ds, &|done, total| {
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
        println!("rebuilt the index from {} packs ({}): {} blobs, {} snapshots ({} forgotten ones left out)", rep.packs, ui::bytes(rep.bytes_read), rep.blobs, rep.snapshots, rep.forgotten);
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
            println!("{} snapshot paths lose data; the rest restores. A new backup of the same files stores the lost data again.", rep.affected.len());
        }
    }
    Ok(if rep.affected.is_empty() && rep.lost_blobs.is_empty() { 0 } else { EXIT_ERROR })
}
