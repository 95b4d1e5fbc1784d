//! A small blocking NBD client: fixed newstyle handshake, structured
//! replies, meta contexts, READ and BLOCK_STATUS. It is what the VM
//! backup uses to pull a disk from QEMU's export of a point in time
//! (`base:allocation` to skip holes, `qemu:dirty-bitmap:<name>` to read
//! only changed blocks), and what tests use to poke our own server.

use crate::proto::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Why an [`NbdClient`] call failed. Every variant but `BadUri` names the
/// URI given to [`NbdClient::connect`] (`uri`). After `Io` or `Protocol`
/// the connection may be out of step with the server: drop the client.
/// After `Command` (the reply was read whole) it can be used again.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing the socket failed (reads time out
    /// after 120 s).
    #[error("NBD {uri}: {source}")]
    Io {
        /// URI of the server.
        uri: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The server broke the protocol or refused the handshake.
    #[error("NBD {uri}: {what}")]
    Protocol {
        /// URI of the server.
        uri: String,
        /// What went wrong, for people.
        what: String,
    },
    /// NBD_OPT_GO got NBD_REP_ERR_UNKNOWN: no export of that name.
    #[error("NBD {uri}: the server has no export named '{name}'")]
    NoExport {
        /// URI of the server.
        uri: String,
        /// The export name from the URI.
        name: String,
    },
    /// A meta context asked for at connect time was not granted, or
    /// [`NbdClient::block_status`] named one that was not negotiated. For
    /// `qemu:dirty-bitmap:<name>` this means the bitmap is gone.
    #[error("NBD {uri}: the server does not offer meta context {context}")]
    NoContext {
        /// URI of the server.
        uri: String,
        /// The context name.
        context: String,
    },
    /// The server answered a request with an error.
    #[error("NBD {uri}: {command} at offset {offset} failed: error {errno} {msg}")]
    Command {
        /// URI of the server.
        uri: String,
        /// Which request: "read" or "block status".
        command: &'static str,
        /// Byte offset of the request.
        offset: u64,
        /// NBD error value (Linux errno numbers: 5 = EIO, 22 = EINVAL, ...).
        errno: u32,
        /// The server's message; empty when it sent a simple reply.
        msg: String,
    },
    /// The URI is neither `nbd://host:port/name` nor
    /// `nbd+unix:///name?socket=PATH`.
    #[error("bad NBD URI {0}: expected nbd://host:port/name or nbd+unix:///name?socket=PATH")]
    BadUri(String),
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A blocking connection to one export, in transmission phase. Each call
/// sends one request and waits for its whole reply (`&mut self`: one
/// request at a time per connection).
pub struct NbdClient {
    uri: String,
    s: Box<dyn Stream>,
    size: u64,
    flags: u16,
    contexts: HashMap<String, u32>,
    handle: u64,
}

/// One extent of a block status reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusExtent {
    /// Length in bytes (the wire field is 32 bits).
    pub len: u64,
    /// The context's flags: `STATE_HOLE`/`STATE_ZERO` for
    /// `base:allocation`, `STATE_DIRTY` for a dirty bitmap.
    pub flags: u32,
}

/// `base:allocation` flag NBD_STATE_HOLE: not allocated (same value as
/// [`crate::proto::STATE_HOLE`]).
pub const STATE_HOLE: u32 = 1;
/// `base:allocation` flag NBD_STATE_ZERO: reads as zeroes (same value as
/// [`crate::proto::STATE_ZERO`]).
pub const STATE_ZERO: u32 = 2;
/// `qemu:dirty-bitmap:*` flag: the block changed.
pub const STATE_DIRTY: u32 = 1;

fn parse_uri(uri: &str) -> Result<(Box<dyn Stream>, String), ClientError> {
    let bad = || ClientError::BadUri(uri.to_string());
    let io = |e| ClientError::Io { uri: uri.to_string(), source: e };
    if let Some(rest) = uri.strip_prefix("nbd+unix://") {
        let (path_part, query) = rest.split_once('?').ok_or_else(bad)?;
        let name = path_part.trim_start_matches('/').to_string();
        let socket = query.split('&').find_map(|kv| kv.strip_prefix("socket=")).ok_or_else(bad)?;
        let s = UnixStream::connect(socket).map_err(io)?;
        s.set_read_timeout(Some(Duration::from_secs(120))).ok();
        Ok((Box::new(s), name))
    } else if let Some(rest) = uri.strip_prefix("nbd://") {
        let (addr, name) = rest.split_once('/').unwrap_or((rest, ""));
        let s = std::net::TcpStream::connect(addr).map_err(io)?;
        s.set_nodelay(true).ok();
        s.set_read_timeout(Some(Duration::from_secs(120))).ok();
        Ok((Box::new(s), name.to_string()))
    } else {
        Err(bad())
    }
}

impl NbdClient {
    /// Connects, negotiates structured replies and the given meta
    /// contexts, and opens the export named in the URI.
    pub fn connect(uri: &str, contexts: &[&str]) -> Result<Self, ClientError> {
        let (s, name) = parse_uri(uri)?;
        let mut c = NbdClient { uri: uri.to_string(), s, size: 0, flags: 0, contexts: HashMap::new(), handle: 1 };
        c.handshake(&name, contexts)?;
        Ok(c)
    }

    fn io(&self, e: std::io::Error) -> ClientError {
        ClientError::Io { uri: self.uri.clone(), source: e }
    }
    fn proto(&self, what: impl Into<String>) -> ClientError {
        ClientError::Protocol { uri: self.uri.clone(), what: what.into() }
    }

    fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, ClientError> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b).map_err(|e| self.io(e))?;
        Ok(b)
    }
    fn u16(&mut self) -> Result<u16, ClientError> {
        Ok(u16::from_be_bytes(self.read_exact(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, ClientError> {
        Ok(u32::from_be_bytes(self.read_exact(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, ClientError> {
        Ok(u64::from_be_bytes(self.read_exact(8)?.try_into().unwrap()))
    }
    fn send(&mut self, b: &[u8]) -> Result<(), ClientError> {
        self.s.write_all(b).map_err(|e| self.io(e))
    }

    fn send_opt(&mut self, opt: u32, data: &[u8]) -> Result<(), ClientError> {
        let mut b = Vec::with_capacity(16 + data.len());
        b.extend_from_slice(&IHAVEOPT.to_be_bytes());
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.send(&b)
    }

    /// One option reply: (type, data).
    fn opt_reply(&mut self, opt: u32) -> Result<(u32, Vec<u8>), ClientError> {
        if self.u64()? != REPLY_MAGIC {
            return Err(self.proto("bad option reply magic"));
        }
        if self.u32()? != opt {
            return Err(self.proto("option reply for another option"));
        }
        let typ = self.u32()?;
        let len = self.u32()? as usize;
        if len > 64 << 20 {
            return Err(self.proto("option reply too long"));
        }
        let data = self.read_exact(len)?;
        Ok((typ, data))
    }

    fn handshake(&mut self, name: &str, contexts: &[&str]) -> Result<(), ClientError> {
        if self.u64()? != NBDMAGIC || self.u64()? != IHAVEOPT {
            return Err(self.proto("not a newstyle NBD server"));
        }
        let hflags = self.u16()?;
        if hflags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(self.proto("server lacks fixed newstyle negotiation"));
        }
        let cflags = FLAG_C_FIXED_NEWSTYLE | if hflags & FLAG_NO_ZEROES != 0 { FLAG_C_NO_ZEROES } else { 0 };
        self.send(&cflags.to_be_bytes())?;

        self.send_opt(OPT_STRUCTURED_REPLY, &[])?;
        let (t, _) = self.opt_reply(OPT_STRUCTURED_REPLY)?;
        if t != REP_ACK {
            return Err(self.proto("server does not support structured replies"));
        }
        if !contexts.is_empty() {
            let mut d = Vec::new();
            d.extend_from_slice(&(name.len() as u32).to_be_bytes());
            d.extend_from_slice(name.as_bytes());
            d.extend_from_slice(&(contexts.len() as u32).to_be_bytes());
            for c in contexts {
                d.extend_from_slice(&(c.len() as u32).to_be_bytes());
                d.extend_from_slice(c.as_bytes());
            }
            self.send_opt(OPT_SET_META_CONTEXT, &d)?;
            loop {
                let (t, data) = self.opt_reply(OPT_SET_META_CONTEXT)?;
                match t {
                    REP_ACK => break,
                    REP_META_CONTEXT if data.len() >= 4 => {
                        let id = u32::from_be_bytes(data[..4].try_into().unwrap());
                        self.contexts.insert(String::from_utf8_lossy(&data[4..]).into_owned(), id);
                    }
                    t if t & (1 << 31) != 0 => return Err(self.proto(format!("meta context negotiation refused ({t:#x})"))),
                    _ => {}
                }
            }
            for c in contexts {
                if !self.contexts.contains_key(*c) {
                    return Err(ClientError::NoContext { uri: self.uri.clone(), context: c.to_string() });
                }
            }
        }
        let mut d = Vec::new();
        d.extend_from_slice(&(name.len() as u32).to_be_bytes());
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&0u16.to_be_bytes());
        self.send_opt(OPT_GO, &d)?;
        loop {
            let (t, data) = self.opt_reply(OPT_GO)?;
            match t {
                REP_ACK => break,
                REP_INFO if data.len() >= 12 && u16::from_be_bytes([data[0], data[1]]) == INFO_EXPORT => {
                    self.size = u64::from_be_bytes(data[2..10].try_into().unwrap());
                    self.flags = u16::from_be_bytes([data[10], data[11]]);
                }
                REP_INFO => {}
                REP_ERR_UNKNOWN => return Err(ClientError::NoExport { uri: self.uri.clone(), name: name.to_string() }),
                t => return Err(self.proto(format!("export refused ({t:#x}): {}", String::from_utf8_lossy(&data)))),
            }
        }
        Ok(())
    }

    /// Export size in bytes, from NBD_INFO_EXPORT (0 if the server sent
    /// none).
    pub fn size(&self) -> u64 {
        self.size
    }
    /// The server flagged the export NBD_FLAG_READ_ONLY.
    pub fn read_only(&self) -> bool {
        self.flags & TF_READ_ONLY != 0
    }

    fn request(&mut self, cmd: u16, flags: u16, offset: u64, len: u32) -> Result<u64, ClientError> {
        let h = self.handle;
        self.handle += 1;
        let mut b = Vec::with_capacity(REQUEST_LEN);
        b.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&cmd.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        self.send(&b)?;
        Ok(h)
    }

    /// Reads the reply chunks of request `h`, calling `chunk(type, payload)`.
    fn replies(&mut self, h: u64, command: &'static str, offset: u64, chunk: &mut dyn FnMut(u16, Vec<u8>) -> Result<(), ClientError>) -> Result<(), ClientError> {
        loop {
            let magic = self.u32()?;
            if magic == SIMPLE_REPLY_MAGIC {
                let err = self.u32()?;
                if self.u64()? != h {
                    return Err(self.proto("reply to an unknown request"));
                }
                if err != 0 {
                    return Err(ClientError::Command { uri: self.uri.clone(), command, offset, errno: err, msg: String::new() });
                }
                return chunk(u16::MAX, Vec::new());
            }
            if magic != STRUCTURED_REPLY_MAGIC {
                return Err(self.proto("bad reply magic"));
            }
            let flags = self.u16()?;
            let typ = self.u16()?;
            if self.u64()? != h {
                return Err(self.proto("reply to an unknown request"));
            }
            let len = self.u32()? as usize;
            if len > (64 << 20) {
                return Err(self.proto("reply chunk too long"));
            }
            let payload = self.read_exact(len)?;
            if typ & (1 << 15) != 0 {
                let errno = payload.get(..4).map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()));
                let mlen = payload.get(4..6).map_or(0, |b| u16::from_be_bytes(b.try_into().unwrap()) as usize);
                let msg = payload.get(6..6 + mlen).map(|m| String::from_utf8_lossy(m).into_owned()).unwrap_or_default();
                // Drain the rest of this request's chunks before failing.
                if flags & REPLY_FLAG_DONE == 0 {
                    let _ = self.replies(h, command, offset, &mut |_, _| Ok(()));
                }
                return Err(ClientError::Command { uri: self.uri.clone(), command, offset, errno, msg });
            }
            if typ != REPLY_TYPE_NONE {
                chunk(typ, payload)?;
            }
            if flags & REPLY_FLAG_DONE != 0 {
                return Ok(());
            }
        }
    }

    /// Reads `len` bytes at `offset`; holes come back as zeros.
    pub fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, ClientError> {
        let h = self.request(CMD_READ, 0, offset, len)?;
        let mut buf = vec![0u8; len as usize];
        let mut simple = false;
        let uri = self.uri.clone();
        let bad = |w: &str| ClientError::Protocol { uri: uri.clone(), what: w.to_string() };
        let mut got: Vec<(u64, u64)> = Vec::new();
        self.replies(h, "read", offset, &mut |typ, p| {
            match typ {
                u16::MAX => simple = true,
                REPLY_TYPE_OFFSET_DATA => {
                    let off = u64::from_be_bytes(p.get(..8).ok_or_else(|| bad("short data chunk"))?.try_into().unwrap());
                    let start = off.checked_sub(offset).ok_or_else(|| bad("data chunk before the request"))? as usize;
                    let data = &p[8..];
                    buf.get_mut(start..start + data.len()).ok_or_else(|| bad("data chunk past the request"))?.copy_from_slice(data);
                    got.push((off, data.len() as u64));
                }
                REPLY_TYPE_OFFSET_HOLE => {
                    let off = u64::from_be_bytes(p.get(..8).ok_or_else(|| bad("short hole chunk"))?.try_into().unwrap());
                    let n = u32::from_be_bytes(p.get(8..12).ok_or_else(|| bad("short hole chunk"))?.try_into().unwrap());
                    off.checked_sub(offset).filter(|s| s + n as u64 <= len as u64).ok_or_else(|| bad("hole chunk outside the request"))?;
                    got.push((off, n as u64));
                }
                _ => return Err(bad("unexpected reply chunk to a read")),
            }
            Ok(())
        })?;
        if simple {
            self.s.read_exact(&mut buf).map_err(|e| self.io(e))?;
        } else if got.iter().map(|g| g.1).sum::<u64>() != len as u64 {
            return Err(self.proto("read reply does not cover the request"));
        }
        Ok(buf)
    }

    /// Block status of `[offset, offset+len)` in one meta context. The
    /// extents may stop short of `len` (the server decides); callers
    /// loop.
    pub fn block_status(&mut self, offset: u64, len: u32, context: &str) -> Result<Vec<StatusExtent>, ClientError> {
        let id = *self.contexts.get(context).ok_or_else(|| ClientError::NoContext { uri: self.uri.clone(), context: context.into() })?;
        let h = self.request(CMD_BLOCK_STATUS, 0, offset, len)?;
        let mut out = Vec::new();
        let uri = self.uri.clone();
        self.replies(h, "block status", offset, &mut |typ, p| {
            if typ != REPLY_TYPE_BLOCK_STATUS || p.len() < 4 {
                return Err(ClientError::Protocol { uri: uri.clone(), what: "unexpected reply chunk to block status".into() });
            }
            if u32::from_be_bytes(p[..4].try_into().unwrap()) == id {
                for d in p[4..].chunks_exact(8) {
                    out.push(StatusExtent { len: u32::from_be_bytes(d[..4].try_into().unwrap()) as u64, flags: u32::from_be_bytes(d[4..].try_into().unwrap()) });
                }
            }
            Ok(())
        })?;
        if out.is_empty() {
            return Err(self.proto("empty block status reply"));
        }
        Ok(out)
    }

    /// All extents of a context over the whole disk, as `(offset, length,
    /// flags)` in bytes, adjacent runs with the same flags merged.
    pub fn map(&mut self, context: &str) -> Result<Vec<(u64, u64, u32)>, ClientError> {
        let mut out: Vec<(u64, u64, u32)> = Vec::new();
        let mut off = 0u64;
        while off < self.size {
            let len = (self.size - off).min(1 << 30) as u32;
            let asked = off;
            for e in self.block_status(off, len, context)? {
                let e_len = e.len.min(self.size - off);
                if e_len == 0 {
                    break;
                }
                match out.last_mut() {
                    Some(last) if last.2 == e.flags && last.0 + last.1 == off => last.1 += e_len,
                    _ => out.push((off, e_len, e.flags)),
                }
                off += e_len;
                if off >= self.size {
                    break;
                }
            }
            // The spec has the first extent cover at least one byte; a
            // server that answers with nothing would be asked forever.
            if off == asked {
                return Err(self.proto(format!("BLOCK_STATUS at offset {asked} returned no extent of non-zero length")));
            }
        }
        Ok(out)
    }

    /// Send NBD_CMD_DISC and drop the connection (errors are ignored;
    /// dropping the client without this just closes the socket).
    pub fn disconnect(mut self) {
        let _ = self.request(CMD_DISC, 0, 0, 0);
    }
}
