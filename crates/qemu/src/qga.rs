//! The QEMU guest agent (qemu-ga) over its virtio-serial socket: used to
//! freeze the guest's filesystems around the backup point, making the
//! backup application-consistent, and to learn the guest OS.
//!
//! The socket carries no framing. A client first sends
//! `guest-sync-delimited` with a random id and skips everything up to the
//! 0xFF byte the agent sends back, which discards any stale replies left
//! by an earlier client.

use lifeboat_vm::GuestOs;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why talking to the guest agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The socket could not be used, nothing answered in time (often: no
    /// qemu-ga in the guest), or the answer was not QGA JSON.
    #[error("guest agent {path}: {msg}")]
    Io {
        /// The agent's socket on the host (QEMU's virtio-serial chardev).
        path: PathBuf,
        /// What went wrong, for people.
        msg: String,
    },
    /// The agent answered the command with an error.
    #[error("guest agent refused {command}: {desc}")]
    Command {
        /// The QGA command, e.g. `guest-fsfreeze-freeze`.
        command: String,
        /// The agent's `desc`.
        desc: String,
    },
}

/// A synchronized connection to qemu-ga. Commands are answered in order;
/// every read waits at most the `timeout` given to [`GuestAgent::connect`].
pub struct GuestAgent {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl GuestAgent {
    /// Connects and synchronizes; fails within `timeout` when no agent
    /// runs in the guest.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, AgentError> {
        let io = |m: String| AgentError::Io { path: path.into(), msg: m };
        let s = UnixStream::connect(path).map_err(|e| io(e.to_string()))?;
        s.set_read_timeout(Some(timeout)).ok();
        let writer = s.try_clone().map_err(|e| io(e.to_string()))?;
        let mut a = GuestAgent { path: path.into(), reader: BufReader::new(s), writer };
        let id: u32 = std::process::id() ^ (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()));
        a.send(&json!({ "execute": "guest-sync-delimited", "arguments": { "id": id } }))?;
        // Skip to the 0xFF delimiter, then read the sync answer.
        let mut b = [0u8; 1];
        loop {
            a.reader.read_exact(&mut b).map_err(|e| io(format!("no answer ({e}); is qemu-ga running in the guest?")))?;
            if b[0] == 0xFF {
                break;
            }
        }
        let r = a.read_reply("guest-sync-delimited")?;
        if r.as_u64() != Some(id as u64) {
            return Err(io("guest-sync-delimited answered with another id".into()));
        }
        Ok(a)
    }

    fn send(&mut self, v: &Value) -> Result<(), AgentError> {
        let mut b = serde_json::to_vec(v).expect("json");
        b.push(b'\n');
        self.writer.write_all(&b).map_err(|e| AgentError::Io { path: self.path.clone(), msg: e.to_string() })
    }

    fn read_reply(&mut self, command: &str) -> Result<Value, AgentError> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).map_err(|e| AgentError::Io { path: self.path.clone(), msg: e.to_string() })?;
            if n == 0 {
                return Err(AgentError::Io { path: self.path.clone(), msg: "connection closed".into() });
            }
            let t = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{FF}');
            if t.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(t).map_err(|e| AgentError::Io { path: self.path.clone(), msg: format!("bad JSON: {e}") })?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(AgentError::Command { command: command.into(), desc: e["desc"].as_str().unwrap_or("").into() });
            }
        }
    }

    /// Runs a QGA command and returns its `return` value; `Value::Null`
    /// sends no `arguments`.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, AgentError> {
        let msg = if arguments.is_null() { json!({ "execute": command }) } else { json!({ "execute": command, "arguments": arguments }) };
        self.send(&msg)?;
        self.read_reply(command)
    }

    /// Freezes all guest filesystems; returns how many.
    pub fn freeze(&mut self) -> Result<u64, AgentError> {
        Ok(self.execute("guest-fsfreeze-freeze", Value::Null)?.as_u64().unwrap_or(0))
    }

    /// Thaws the guest filesystems (`guest-fsfreeze-thaw`); returns how
    /// many. Call it after every successful [`GuestAgent::freeze`]: qemu-ga
    /// does not thaw a Linux guest on its own.
    pub fn thaw(&mut self) -> Result<u64, AgentError> {
        Ok(self.execute("guest-fsfreeze-thaw", Value::Null)?.as_u64().unwrap_or(0))
    }

    /// The guest OS (`guest-get-osinfo`), or `None` when the agent cannot
    /// tell (an older agent, or any error).
    pub fn os_info(&mut self) -> Option<GuestOs> {
        let v = self.execute("guest-get-osinfo", Value::Null).ok()?;
        Some(GuestOs {
            id: v["id"].as_str().unwrap_or("").into(),
            name: v["pretty-name"].as_str().or(v["name"].as_str()).unwrap_or("").into(),
            version: v["version-id"].as_str().map(String::from),
            kernel: v["kernel-release"].as_str().map(String::from),
        })
    }
}
