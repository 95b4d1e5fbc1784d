pub mod admin;
pub mod agent;
pub mod backup;
pub mod cdp;
pub mod check;
pub mod console;
pub mod datastore;
pub mod forget;
pub mod gc;
pub mod lab;
pub mod ls;
pub mod mount;
pub mod restore;
pub mod serve;
pub mod snapshots;
pub mod vm;

use crate::{DatastoreArg, KeyArgs};
use lifeboat_store::{Datastore, KeySource, StoreError};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Marker error for a run stopped by Ctrl-C / SIGTERM.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::error::Error for Interrupted {}
impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Opens the datastore, unlocking it first if it is encrypted. Store
/// errors already name the datastore path and the remedy.
pub fn open_datastore(a: &DatastoreArg) -> anyhow::Result<Arc<Datastore>> {
    let path = &a.datastore;
    if !Datastore::is_encrypted_at(path)? {
        return Ok(Arc::new(Datastore::open(path)?));
    }
    let key = unlock_key(&a.key, path)?;
    Ok(Arc::new(Datastore::open_with_key(path, &key)?))
}

/// The key that should unlock the encrypted datastore at `path`:
/// --key-file, --password-file, LIFEBOAT_PASSWORD, else a prompt when
/// stdin is a terminal.
pub fn unlock_key(k: &KeyArgs, path: &Path) -> anyhow::Result<KeySource> {
    if let Some(f) = &k.key_file {
        return Ok(KeySource::KeyFile(f.clone()));
    }
    if let Some(f) = &k.password_file {
        return Ok(KeySource::Passphrase(read_password_file(f)?));
    }
    if let Some(pw) = env_password("LIFEBOAT_PASSWORD") {
        return Ok(KeySource::Passphrase(pw));
    }
    if std::io::stdin().is_terminal() {
        let pw = Zeroizing::new(rpassword::prompt_password(format!("passphrase for datastore {}: ", path.display()))?);
        return Ok(KeySource::Passphrase(pw));
    }
    Err(StoreError::KeyRequired { path: path.to_path_buf() }.into())
}

/// A new key (for `datastore init --encrypt` and `datastore key add`):
/// a key file (created with 256 random bits if it does not exist), a
/// password file, the passphrase in `env`, or one typed twice.
pub fn new_key(key_file: Option<&PathBuf>, password_file: Option<&PathBuf>, env: &str, what: &str) -> anyhow::Result<KeySource> {
    if let Some(f) = key_file {
        if !f.exists() {
            create_key_file(f)?;
            eprintln!("created key file {}: keep a copy away from the datastore; without a key the backups cannot be read", f.display());
        }
        return Ok(KeySource::KeyFile(f.clone()));
    }
    if let Some(f) = password_file {
        return Ok(KeySource::Passphrase(read_password_file(f)?));
    }
    if let Some(pw) = env_password(env) {
        return Ok(KeySource::Passphrase(pw));
    }
    if std::io::stdin().is_terminal() {
        let a = Zeroizing::new(rpassword::prompt_password(format!("{what}: "))?);
        if a.is_empty() {
            anyhow::bail!("the passphrase is empty");
        }
        let b = Zeroizing::new(rpassword::prompt_password(format!("{what} again: "))?);
        if a != b {
            anyhow::bail!("the passphrases do not match");
        }
        return Ok(KeySource::Passphrase(a));
    }
    anyhow::bail!("no key given for the {what}: give --password-file, --key-file or {env}")
}

fn env_password(name: &str) -> Option<Zeroizing<String>> {
    std::env::var(name).ok().filter(|p| !p.is_empty()).map(Zeroizing::new)
}

/// The first line of `path`, without its line end.
fn read_password_file(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let raw = Zeroizing::new(std::fs::read(path).map_err(|e| anyhow::anyhow!("read password file {}: {e}", path.display()))?);
    let line = raw.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        anyhow::bail!("password file {} is empty", path.display());
    }
    let s = std::str::from_utf8(line).map_err(|_| anyhow::anyhow!("password file {} is not UTF-8", path.display()))?;
    Ok(Zeroizing::new(s.to_string()))
}

fn create_key_file(path: &Path) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut k = Zeroizing::new([0u8; 32]);
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut k[..]))?;
    let mut text = Zeroizing::new(String::with_capacity(65));
    for b in k.iter() {
        text.push_str(&format!("{b:02x}"));
    }
    text.push('\n');
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| anyhow::anyhow!("create key file {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

pub use lifeboat_ingest::hostname;
