//! QMP over a unix socket: JSON lines, a greeting, `qmp_capabilities`,
//! then `{"execute": ..., "arguments": ...}` answered by `return` or
//! `error`, with asynchronous events interleaved.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a QMP call failed. `path` is always the QMP socket. After
/// `Command` the connection is still in step; after `Closed`, `Io` or
/// `Protocol` it is not, and a new one is needed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected: no VM runs with a QMP socket
    /// there.
    #[error("QMP socket {path}: {source}; is the VM running with -qmp unix:{path},server=on,wait=off?")]
    Connect {
        /// QMP socket.
        path: PathBuf,
        /// The connect error.
        source: std::io::Error,
    },
    /// Reading or writing the connected socket failed.
    #[error("QMP {path}: {source}")]
    Io {
        /// QMP socket.
        path: PathBuf,
        /// The socket error.
        source: std::io::Error,
    },
    /// QEMU closed the connection (it exited, or dropped the monitor).
    #[error("QMP {path}: the VM closed the connection")]
    Closed {
        /// QMP socket.
        path: PathBuf,
    },
    /// What came back is not QMP: no greeting, bad JSON, or a message that
    /// is neither `return`, `error` nor an event.
    #[error("QMP {path}: not a QMP server: {what}")]
    Protocol {
        /// QMP socket.
        path: PathBuf,
        /// What was wrong, for people.
        what: String,
    },
    /// QEMU refused a command; `class` is QEMU's error class.
    #[error("QEMU refused {command}: {desc}")]
    Command {
        /// The QMP command, e.g. `blockdev-add`.
        command: String,
        /// QEMU's error class, e.g. `GenericError`, `DeviceNotFound`.
        class: String,
        /// QEMU's message.
        desc: String,
    },
    /// No answer (or awaited event) within the time allowed. A greeting
    /// that never comes usually means another client holds the monitor
    /// (QEMU serves one at a time).
    #[error("QMP {path}: no {what} within {secs} s")]
    Timeout {
        /// QMP socket.
        path: PathBuf,
        /// What was awaited: `answer`, or `<NAME> event`.
        what: String,
        /// The limit, in seconds.
        secs: u64,
    },
}

/// A connection to a VM's QMP monitor, past the greeting and
/// `qmp_capabilities`. Blocking: commands are sent one at a time and wait
/// for their answer; events that arrive meanwhile are kept for
/// [`Qmp::wait_event`].
pub struct Qmp {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: VecDeque<Value>,
    /// QEMU's version, from the greeting: "10.0.2".
    pub version: String,
    /// How long an answer may take.
    timeout: Duration,
}

const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

impl Qmp {
    /// Connects to the QMP socket at `path` and negotiates capabilities;
    /// waits up to 60 s for each answer (see [`Qmp::connect_timeout`]).
    pub fn connect(path: &Path) -> Result<Self, QmpError> {
        Self::connect_timeout(path, COMMAND_TIMEOUT)
    }

    /// `connect` with a shorter wait for the greeting and every answer:
    /// a QMP socket serves one client at a time, so an inventory must
    /// not hang while a backup holds the VM's monitor.
    pub fn connect_timeout(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let s = UnixStream::connect(path).map_err(|e| QmpError::Connect { path: path.into(), source: e })?;
        s.set_read_timeout(Some(timeout)).ok();
        let writer = s.try_clone().map_err(|e| QmpError::Io { path: path.into(), source: e })?;
        let mut q = Qmp { path: path.into(), reader: BufReader::new(s), writer, events: VecDeque::new(), version: String::new(), timeout };
        let greeting = q.read_message()?;
        let v = greeting.pointer("/QMP/version/qemu").ok_or_else(|| q.protocol("no QMP greeting"))?;
        q.version = format!("{}.{}.{}", v["major"], v["minor"], v["micro"]);
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn protocol(&self, what: &str) -> QmpError {
        QmpError::Protocol { path: self.path.clone(), what: what.into() }
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).map_err(|e| {
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                    QmpError::Timeout { path: self.path.clone(), what: "answer".into(), secs: self.timeout.as_secs() }
                } else {
                    QmpError::Io { path: self.path.clone(), source: e }
                }
            })?;
            if n == 0 {
                return Err(QmpError::Closed { path: self.path.clone() });
            }
            if line.trim().is_empty() {
                continue;
            }
            return serde_json::from_str(&line).map_err(|e| self.protocol(&format!("bad JSON: {e}")));
        }
    }

    /// Runs a command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let msg = if arguments.as_object().is_some_and(|o| o.is_empty()) || arguments.is_null() { json!({ "execute": command }) } else { json!({ "execute": command, "arguments": arguments }) };
        tracing::debug!("qmp -> {msg}");
        let mut bytes = serde_json::to_vec(&msg).expect("json");
        bytes.push(b'\n');
        self.writer.write_all(&bytes).map_err(|e| QmpError::Io { path: self.path.clone(), source: e })?;
        loop {
            let m = self.read_message()?;
            if m.get("event").is_some() {
                self.events.push_back(m);
                continue;
            }
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                return Err(QmpError::Command { command: command.into(), class: e["class"].as_str().unwrap_or("").into(), desc: e["desc"].as_str().unwrap_or("").into() });
            }
            return Err(self.protocol(&format!("unexpected message {m}")));
        }
    }

    /// Waits for an event named `name` whose data satisfies `matches`
    /// (events seen earlier count too).
    pub fn wait_event(&mut self, name: &str, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Result<Value, QmpError> {
        let found = |e: &Value| e["event"] == name && matches(&e["data"]);
        if let Some(i) = self.events.iter().position(found) {
            return Ok(self.events.remove(i).unwrap());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QmpError::Timeout { path: self.path.clone(), what: format!("{name} event"), secs: timeout.as_secs() });
            }
            self.reader.get_ref().set_read_timeout(Some(left)).ok();
            let m = self.read_message();
            self.reader.get_ref().set_read_timeout(Some(self.timeout)).ok();
            let m = m?;
            if found(&m) {
                return Ok(m);
            }
            if m.get("event").is_some() {
                self.events.push_back(m);
            }
        }
    }

    /// The QMP socket this connection uses.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
