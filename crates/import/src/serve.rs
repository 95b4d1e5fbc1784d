//! `qemu-nbd` serving one image read-only on a unix socket, for the
//! backup path's NBD reader. It reads every format an import meets
//! (VMDK flat/sparse/streamOptimized, VHDX, VHD, qcow2, raw), and through
//! a raw offset window a disk inside an OVA in place.

use crate::ImportError;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where a disk image to import is.
#[derive(Clone, Debug)]
pub enum ImageSource {
    /// An image file of its own.
    File { path: PathBuf, format: Option<&'static str> },
    /// An image stored inside another file (a tar member of an OVA).
    Window { path: PathBuf, offset: u64, size: u64, format: Option<&'static str> },
}

/// The qemu block driver for an image file's name; `None` lets qemu
/// probe (only for names that say nothing).
pub fn format_of(p: &Path) -> Option<&'static str> {
    match p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).as_deref() {
        Some("vmdk") => Some("vmdk"),
        Some("vhdx") => Some("vhdx"),
        Some("vhd") => Some("vpc"),
        Some("qcow2") => Some("qcow2"),
        Some("raw" | "img" | "iso") => Some("raw"),
        _ => None,
    }
}

/// Commas in a qemu option value are written twice.
fn opt(s: &str) -> String {
    s.replace(',', ",,")
}

impl ImageSource {
    fn path(&self) -> &Path {
        match self {
            ImageSource::File { path, .. } | ImageSource::Window { path, .. } => path,
        }
    }

    /// qemu `--image-opts` for the source.
    fn image_opts(&self) -> String {
        match self {
            ImageSource::File { path, format } => {
                let f = format.map(|f| format!("driver={f},")).unwrap_or_default();
                format!("{f}file.driver=file,file.filename={}", opt(&path.to_string_lossy()))
            }
            ImageSource::Window { path, offset, size, format } => {
                format!("driver={},file.driver=raw,file.offset={offset},file.size={size},file.file.driver=file,file.file.filename={}", format.unwrap_or("raw"), opt(&path.to_string_lossy()))
            }
        }
    }
}

/// A running `qemu-nbd` serving one image read-only as export `disk`;
/// killed, and its socket removed, when dropped.
pub struct ImageServer {
    child: Child,
    socket: PathBuf,
    /// The disk's size as the guest sees it.
    pub size: u64,
}

impl ImageServer {
    /// Asks `qemu-img info` for the image's virtual size, then starts
    /// `qemu-nbd` on `socket` and waits (up to 30 s) until the socket is
    /// there. `ImportError::Reader` carries qemu's words when it fails.
    pub fn start(src: &ImageSource, socket: &Path) -> Result<ImageServer, ImportError> {
        let shown = src.path().display().to_string();
        let reader = |message: String| ImportError::Reader { path: shown.clone(), message };
        // The virtual size first: it also tells a file qemu cannot read
        // apart, with qemu's own words.
        let o = Command::new("qemu-img").args(["info", "--output=json", "--image-opts", &src.image_opts()]).output().map_err(|e| reader(format!("cannot run qemu-img: {e} (install qemu-utils)")))?;
        if !o.status.success() {
            return Err(reader(String::from_utf8_lossy(&o.stderr).trim().to_string()));
        }
        let info: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| reader(format!("qemu-img info: {e}")))?;
        let size = info["virtual-size"].as_u64().filter(|s| *s > 0).ok_or_else(|| reader("the image has no size".into()))?;
        let mut child = Command::new("qemu-nbd")
            .args(["--read-only", "--persistent", "--shared=4", "-x", "disk", "-k"])
            .arg(socket)
            .args(["--image-opts", &src.image_opts()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| reader(format!("cannot run qemu-nbd: {e} (install qemu-utils)")))?;
        let start = Instant::now();
        while !socket.exists() {
            if let Ok(Some(st)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(reader(format!("qemu-nbd exited ({st}): {}", err.trim())));
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(reader("qemu-nbd did not open its socket within 30 s".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(ImageServer { child, socket: socket.to_path_buf(), size })
    }

    /// The NBD URI of the export, as the backup path's reader takes it.
    pub fn uri(&self) -> String {
        format!("nbd+unix:///disk?socket={}", self.socket.display())
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}
