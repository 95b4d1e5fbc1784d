pub mod backup;
pub mod check;
pub mod datastore;
pub mod forget;
pub mod gc;
pub mod ls;
pub mod mount;
pub mod restore;
pub mod snapshots;

use lifeboat_store::Datastore;
use std::path::Path;
use std::sync::Arc;

/// Marker error for a run stopped by Ctrl-C / SIGTERM.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::error::Error for Interrupted {}
impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Store errors already name the datastore path and the remedy.
pub fn open_datastore(path: &Path) -> anyhow::Result<Arc<Datastore>> {
    Ok(Arc::new(Datastore::open(path)?))
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
