//! Running `virsh` against one connection URI.

use crate::LibvirtError;
use std::path::Path;
use std::process::{Command, Stdio};

/// `virsh --connect URI`, one command per call.
#[derive(Clone, Debug)]
pub struct Virsh {
    /// libvirt connection URI, e.g. `qemu:///system` or
    /// `qemu+ssh://host/system`.
    pub uri: String,
}

impl Virsh {
    /// A runner for connection `uri`; nothing is started or checked yet.
    pub fn new(uri: &str) -> Self {
        Virsh { uri: uri.to_string() }
    }

    /// Runs `virsh --connect URI --quiet ARGS` in the C locale; stdout on
    /// success, else `LibvirtError::Virsh` with virsh's own error words
    /// (its `error:` lines) naming the command. `NoVirsh` when virsh
    /// cannot be started at all.
    pub fn run(&self, args: &[&str]) -> Result<String, LibvirtError> {
        let out = Command::new("virsh")
            .arg("--connect")
            .arg(&self.uri)
            .arg("--quiet")
            .args(args)
            // Parsed output (domblkinfo, domjobinfo) must not be translated.
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LibvirtError::NoVirsh(e.to_string()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let msg: Vec<&str> = err.lines().map(|l| l.trim().trim_start_matches("error: ").trim()).filter(|l| !l.is_empty()).collect();
            return Err(LibvirtError::Virsh { uri: self.uri.clone(), cmd: args.join(" "), msg: msg.join("; ") });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `run` with `files` appended to `args` as path arguments (e.g. the
    /// backup and checkpoint XML documents of `backup-begin`).
    pub fn run_with_file(&self, args: &[&str], files: &[&Path]) -> Result<String, LibvirtError> {
        let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(paths.iter().map(|s| s.as_str()));
        self.run(&all)
    }
}
