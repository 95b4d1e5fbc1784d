//! NBD wire format: constants and pure parse/encode functions.
//!
//! Nothing here does IO, so the parsers can be fuzzed (`fuzz/`) and unit
//! tested byte for byte. Names follow the NBD protocol document
//! (`doc/proto.md` of the reference implementation).

use std::fmt;

// Handshake magics.
/// First 8 bytes of the server's greeting: ASCII "NBDMAGIC".
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943; // "NBDMAGIC"
/// ASCII "IHAVEOPT": follows [`NBDMAGIC`] in a newstyle greeting, and
/// starts every option the client sends.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054; // "IHAVEOPT"
/// Magic that starts every option reply (the spec's `0x3e889045565a9`).
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

// Handshake flags (server) and client flags.
/// NBD_FLAG_FIXED_NEWSTYLE (handshake flag): the server speaks fixed
/// newstyle, so it answers unknown options with an error instead of closing.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// NBD_FLAG_NO_ZEROES (handshake flag): the server may omit the 124 zero
/// bytes after NBD_OPT_EXPORT_NAME's reply if the client agrees.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// NBD_FLAG_C_FIXED_NEWSTYLE (client flag): the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// NBD_FLAG_C_NO_ZEROES (client flag): leave out the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Options.
/// NBD_OPT_EXPORT_NAME: pick an export and enter transmission; the old way,
/// with no error reply (an unknown name closes the connection).
pub const OPT_EXPORT_NAME: u32 = 1;
/// NBD_OPT_ABORT: the client ends the handshake without transmission.
pub const OPT_ABORT: u32 = 2;
/// NBD_OPT_LIST: list the exports (one NBD_REP_SERVER each, then ACK).
pub const OPT_LIST: u32 = 3;
/// NBD_OPT_STARTTLS: upgrade the connection to TLS before going on.
pub const OPT_STARTTLS: u32 = 5;
/// NBD_OPT_INFO: describe an export without entering transmission.
pub const OPT_INFO: u32 = 6;
/// NBD_OPT_GO: describe an export and enter transmission with it.
pub const OPT_GO: u32 = 7;
/// NBD_OPT_STRUCTURED_REPLY: the client accepts structured replies (READ in
/// chunks, holes, BLOCK_STATUS, error messages).
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// NBD_OPT_LIST_META_CONTEXT: which metadata contexts match a query.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// NBD_OPT_SET_META_CONTEXT: select the contexts BLOCK_STATUS will report.
pub const OPT_SET_META_CONTEXT: u32 = 10;

// Option reply types.
/// NBD_REP_ACK: the option succeeded (or the list of replies is complete).
pub const REP_ACK: u32 = 1;
/// NBD_REP_SERVER: one export of an NBD_OPT_LIST answer.
pub const REP_SERVER: u32 = 2;
/// NBD_REP_INFO: one NBD_INFO_* item of an INFO/GO answer.
pub const REP_INFO: u32 = 3;
/// NBD_REP_META_CONTEXT: one context id and name of a meta-context answer.
pub const REP_META_CONTEXT: u32 = 4;
/// NBD_REP_ERR_UNSUP: the server does not know or support the option.
pub const REP_ERR_UNSUP: u32 = (1 << 31) | 1;
/// NBD_REP_ERR_POLICY: refused by server policy.
pub const REP_ERR_POLICY: u32 = (1 << 31) | 2;
/// NBD_REP_ERR_INVALID: the option's payload or timing is wrong.
pub const REP_ERR_INVALID: u32 = (1 << 31) | 3;
/// NBD_REP_ERR_TLS_REQD: the server requires STARTTLS first.
pub const REP_ERR_TLS_REQD: u32 = (1 << 31) | 5;
/// NBD_REP_ERR_UNKNOWN: no export of that name.
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) | 6;
/// NBD_REP_ERR_TOO_BIG: the option's payload is longer than the server
/// accepts ([`MAX_OPTION_LEN`]).
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) | 9;

// NBD_INFO types.
/// NBD_INFO_EXPORT: export size (u64) and transmission flags (u16); always
/// sent in an INFO/GO answer.
pub const INFO_EXPORT: u16 = 0;
/// NBD_INFO_NAME: the export's canonical name.
pub const INFO_NAME: u16 = 1;
/// NBD_INFO_DESCRIPTION: the export's human-readable description.
pub const INFO_DESCRIPTION: u16 = 2;
/// NBD_INFO_BLOCK_SIZE: minimum, preferred and maximum block size (u32 each).
pub const INFO_BLOCK_SIZE: u16 = 3;

// Transmission flags.
/// NBD_FLAG_HAS_FLAGS: must be set in every transmission-flags field.
pub const TF_HAS_FLAGS: u16 = 1 << 0;
/// NBD_FLAG_READ_ONLY: the export refuses writes.
pub const TF_READ_ONLY: u16 = 1 << 1;
/// NBD_FLAG_SEND_FLUSH: the server supports NBD_CMD_FLUSH.
pub const TF_SEND_FLUSH: u16 = 1 << 2;
/// NBD_FLAG_SEND_FUA: the server honours NBD_CMD_FLAG_FUA.
pub const TF_SEND_FUA: u16 = 1 << 3;
/// NBD_FLAG_SEND_TRIM: the server supports NBD_CMD_TRIM.
pub const TF_SEND_TRIM: u16 = 1 << 5;
/// NBD_FLAG_SEND_WRITE_ZEROES: the server supports NBD_CMD_WRITE_ZEROES.
pub const TF_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// NBD_FLAG_SEND_DF: the server honours NBD_CMD_FLAG_DF (structured replies
/// only).
pub const TF_SEND_DF: u16 = 1 << 7;
/// NBD_FLAG_CAN_MULTI_CONN: a flush on one connection covers writes
/// completed on every connection to the export.
pub const TF_CAN_MULTI_CONN: u16 = 1 << 8;

// Requests.
/// NBD_REQUEST_MAGIC: starts every transmission-phase request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Size in bytes of a request header (magic, flags, type, cookie, offset,
/// length); a WRITE's payload follows it.
pub const REQUEST_LEN: usize = 28;
/// NBD_CMD_READ.
pub const CMD_READ: u16 = 0;
/// NBD_CMD_WRITE: `len` bytes of payload follow the header.
pub const CMD_WRITE: u16 = 1;
/// NBD_CMD_DISC: the client disconnects after its in-flight requests.
pub const CMD_DISC: u16 = 2;
/// NBD_CMD_FLUSH: make every completed write durable; offset and length
/// must be 0.
pub const CMD_FLUSH: u16 = 3;
/// NBD_CMD_TRIM: advisory discard of a range.
pub const CMD_TRIM: u16 = 4;
/// NBD_CMD_WRITE_ZEROES: make a range read as zeroes, without payload.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// NBD_CMD_BLOCK_STATUS: extents of a range in the selected meta contexts.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// NBD_CMD_FLAG_FUA: the write is durable before the reply (force unit
/// access).
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// NBD_CMD_FLAG_NO_HOLE: WRITE_ZEROES must allocate, not punch a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// NBD_CMD_FLAG_DF ("don't fragment"): answer a READ with one data chunk.
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// NBD_CMD_FLAG_REQ_ONE: BLOCK_STATUS returns a single extent per context.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// NBD_CMD_FLAG_FAST_ZERO: fail WRITE_ZEROES rather than zero slowly. Not
/// accepted by our server (we do not advertise NBD_FLAG_SEND_FAST_ZERO).
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

// Replies.
/// NBD_SIMPLE_REPLY_MAGIC: starts a simple reply (errno, cookie, then a
/// READ's data).
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// NBD_STRUCTURED_REPLY_MAGIC: starts one chunk of a structured reply.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// NBD_REPLY_FLAG_DONE: this chunk is the last one of its request.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// NBD_REPLY_TYPE_NONE: an empty chunk (only to carry DONE).
pub const REPLY_TYPE_NONE: u16 = 0;
/// NBD_REPLY_TYPE_OFFSET_DATA: a u64 offset, then data read from there.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// NBD_REPLY_TYPE_OFFSET_HOLE: a u64 offset and u32 length that read as
/// zeroes.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// NBD_REPLY_TYPE_BLOCK_STATUS: a u32 context id, then (u32 length, u32
/// flags) extents.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// NBD_REPLY_TYPE_ERROR: u32 errno, u16 message length, message.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;
/// NBD_REPLY_TYPE_ERROR_OFFSET: like [`REPLY_TYPE_ERROR`], plus the u64
/// offset the error applies to.
pub const REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) | 2;

// base:allocation flags.
/// NBD_STATE_HOLE (`base:allocation`): the extent is not allocated.
pub const STATE_HOLE: u32 = 1 << 0;
/// NBD_STATE_ZERO (`base:allocation`): the extent reads as zeroes.
pub const STATE_ZERO: u32 = 1 << 1;
/// Name of the only meta context our server offers: allocation status.
pub const BASE_ALLOCATION: &str = "base:allocation";

// Errors (values fixed by the protocol, equal to Linux errno).
/// NBD_EPERM: operation not permitted (a write to a read-only export).
pub const EPERM: u32 = 1;
/// NBD_EIO: input/output error, the catch-all for device failures.
pub const EIO: u32 = 5;
/// NBD_ENOMEM: out of memory.
pub const ENOMEM: u32 = 12;
/// NBD_EINVAL: invalid request (bad flags, range past the end, zero length).
pub const EINVAL: u32 = 22;
/// NBD_ENOSPC: no space left; also a write past the end of the export.
pub const ENOSPC: u32 = 28;
/// NBD_EOVERFLOW: a DF read longer than fits in one chunk.
pub const EOVERFLOW: u32 = 75;
/// NBD_ENOTSUP: operation not supported.
pub const ENOTSUP: u32 = 95;
/// NBD_ESHUTDOWN: the server is shutting down.
pub const ESHUTDOWN: u32 = 108;

/// Largest payload we accept or send in one request (NBD_INFO_BLOCK_SIZE max).
pub const MAX_PAYLOAD: u32 = 32 * 1024 * 1024;
/// Preferred block size advertised to clients.
pub const PREFERRED_BLOCK: u32 = 4096;
/// Longest option payload read during the handshake; longer ones close the
/// connection (a name is at most 4096 bytes; a meta-context query list of a
/// few names fits easily).
pub const MAX_OPTION_LEN: u32 = 64 * 1024;
/// Longest string (export name, context query) the protocol allows.
pub const MAX_STRING: usize = 4096;

/// Why a byte string is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The message does not start with the magic its kind requires.
    BadMagic,
    /// The bytes end before the contents their length fields promise.
    Truncated,
    /// A length field exceeds its limit (a string over [`MAX_STRING`]).
    TooLong,
    /// Bytes remain after the declared contents.
    Trailing,
    /// A string is not UTF-8 or contains NUL.
    BadString,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ParseError::BadMagic => "bad magic",
            ParseError::Truncated => "message shorter than its declared contents",
            ParseError::TooLong => "length field exceeds the limit",
            ParseError::Trailing => "bytes left over after the declared contents",
            ParseError::BadString => "string is not valid UTF-8 or contains NUL",
        };
        f.write_str(s)
    }
}

impl std::error::Error for ParseError {}

/// A big-endian cursor over a byte slice that never panics.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        if self.buf.len() < n {
            return Err(ParseError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn string(&mut self, len: usize) -> Result<String, ParseError> {
        if len > MAX_STRING {
            return Err(ParseError::TooLong);
        }
        let b = self.take(len)?;
        if b.contains(&0) {
            return Err(ParseError::BadString);
        }
        String::from_utf8(b.to_vec()).map_err(|_| ParseError::BadString)
    }
    fn end(&self) -> Result<(), ParseError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ParseError::Trailing)
        }
    }
}

/// The fixed 16-byte header of a client option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// Option code (`OPT_*`).
    pub option: u32,
    /// Length in bytes of the payload that follows; the caller decides
    /// whether to read it (see [`MAX_OPTION_LEN`]).
    pub len: u32,
}

/// Parse a client option header (`IHAVEOPT`, option, length); only the
/// magic is checked.
pub fn parse_option_header(b: &[u8; 16]) -> Result<OptionHeader, ParseError> {
    let magic = u64::from_be_bytes(b[0..8].try_into().unwrap());
    if magic != IHAVEOPT {
        return Err(ParseError::BadMagic);
    }
    let option = u32::from_be_bytes(b[8..12].try_into().unwrap());
    let len = u32::from_be_bytes(b[12..16].try_into().unwrap());
    Ok(OptionHeader { option, len })
}

/// Payload of NBD_OPT_INFO / NBD_OPT_GO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    /// Export name; empty asks for the server's default export.
    pub name: String,
    /// NBD_INFO_* items the client asks for, beyond the NBD_INFO_EXPORT it
    /// always gets.
    pub requests: Vec<u16>,
}

/// Parse the payload of NBD_OPT_INFO / NBD_OPT_GO; it must be consumed
/// exactly.
pub fn parse_info_request(data: &[u8]) -> Result<InfoRequest, ParseError> {
    let mut c = Cursor::new(data);
    let nlen = c.u32()? as usize;
    let name = c.string(nlen)?;
    let n = c.u16()? as usize;
    let mut requests = Vec::with_capacity(n.min(data.len() / 2));
    for _ in 0..n {
        requests.push(c.u16()?);
    }
    c.end()?;
    Ok(InfoRequest { name, requests })
}

/// Payload of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextRequest {
    /// Export the contexts are for.
    pub export: String,
    /// Context names or queries (e.g. `base:allocation`, or the namespace
    /// `base:` when listing); empty in a LIST means "all".
    pub queries: Vec<String>,
}

/// Parse the payload of NBD_OPT_LIST_META_CONTEXT /
/// NBD_OPT_SET_META_CONTEXT; it must be consumed exactly.
pub fn parse_meta_context_request(data: &[u8]) -> Result<MetaContextRequest, ParseError> {
    let mut c = Cursor::new(data);
    let nlen = c.u32()? as usize;
    let export = c.string(nlen)?;
    let n = c.u32()? as usize;
    let mut queries = Vec::with_capacity(n.min(data.len() / 4));
    for _ in 0..n {
        let l = c.u32()? as usize;
        queries.push(c.string(l)?);
    }
    c.end()?;
    Ok(MetaContextRequest { export, queries })
}

/// Payload of NBD_OPT_EXPORT_NAME: the whole payload is the name.
pub fn parse_export_name(data: &[u8]) -> Result<String, ParseError> {
    Cursor::new(data).string(data.len())
}

/// Which of our contexts a query selects (`base:allocation` is the only
/// one). `list` allows the namespace wildcard `base:` of LIST_META_CONTEXT.
pub fn query_matches_base_allocation(query: &str, list: bool) -> bool {
    query == BASE_ALLOCATION || (list && query == "base:")
}

/// A transmission-phase request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags (`CMD_FLAG_*`).
    pub flags: u16,
    /// Command type (`CMD_*`).
    pub cmd: u16,
    /// Opaque value the client picks; the reply echoes it (the spec's
    /// "cookie", formerly "handle").
    pub cookie: u64,
    /// Byte offset into the export.
    pub offset: u64,
    /// Length in bytes: of the range, and of the payload for a WRITE.
    pub len: u32,
}

/// Parse a request header; only the magic is checked (see
/// [`check_request`] for the rest).
pub fn parse_request(b: &[u8; REQUEST_LEN]) -> Result<Request, ParseError> {
    let magic = u32::from_be_bytes(b[0..4].try_into().unwrap());
    if magic != REQUEST_MAGIC {
        return Err(ParseError::BadMagic);
    }
    Ok(Request {
        flags: u16::from_be_bytes(b[4..6].try_into().unwrap()),
        cmd: u16::from_be_bytes(b[6..8].try_into().unwrap()),
        cookie: u64::from_be_bytes(b[8..16].try_into().unwrap()),
        offset: u64::from_be_bytes(b[16..24].try_into().unwrap()),
        len: u32::from_be_bytes(b[24..28].try_into().unwrap()),
    })
}

/// Encode a request header (the client side of [`parse_request`]).
pub fn encode_request(r: &Request) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&r.flags.to_be_bytes());
    b[6..8].copy_from_slice(&r.cmd.to_be_bytes());
    b[8..16].copy_from_slice(&r.cookie.to_be_bytes());
    b[16..24].copy_from_slice(&r.offset.to_be_bytes());
    b[24..28].copy_from_slice(&r.len.to_be_bytes());
    b
}

/// What the connection state says about a request, decided before any IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Export size in bytes.
    pub size: u64,
    /// Writes, trims and zeroing get EPERM.
    pub read_only: bool,
    /// The client negotiated NBD_OPT_STRUCTURED_REPLY (allows DF, and is
    /// needed for BLOCK_STATUS).
    pub structured: bool,
    /// Context id of `base:allocation`, if the client selected it.
    pub base_allocation: Option<u32>,
}

/// The verdict on one request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Carry it out.
    Run {
        /// Bytes that follow the header (a WRITE's data), 0 otherwise.
        payload: u32,
    },
    /// Reply with this error; `payload` bytes follow and must be read and
    /// dropped to stay in step with the client.
    Error {
        /// NBD error value (`EINVAL`, `EPERM`, ...) for the reply.
        errno: u32,
        /// Bytes to read and drop before replying.
        payload: u32,
    },
    /// NBD_CMD_DISC: finish in-flight requests and close.
    Disconnect,
    /// Cannot stay in step (a write payload too large to read): close.
    Close,
}

/// Decide what to do with a request, purely from its header and the
/// negotiated state. The IO layer follows the verdict.
pub fn check_request(r: &Request, n: &Negotiated) -> Verdict {
    let payload = if r.cmd == CMD_WRITE { r.len } else { 0 };
    if r.cmd == CMD_WRITE && r.len > MAX_PAYLOAD {
        return Verdict::Close;
    }
    let err = |errno| Verdict::Error { errno, payload };
    let allowed_flags = match r.cmd {
        CMD_READ => {
            if n.structured {
                CMD_FLAG_DF
            } else {
                0
            }
        }
        CMD_WRITE => CMD_FLAG_FUA,
        // FAST_ZERO is not allowed: we do not advertise NBD_FLAG_SEND_FAST_ZERO.
        CMD_WRITE_ZEROES => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
        CMD_TRIM => CMD_FLAG_FUA,
        CMD_BLOCK_STATUS => CMD_FLAG_REQ_ONE,
        CMD_FLUSH | CMD_DISC => 0,
        _ => return err(EINVAL),
    };
    if r.flags & !allowed_flags != 0 {
        return err(EINVAL);
    }
    if r.cmd == CMD_DISC {
        return Verdict::Disconnect;
    }
    if r.cmd == CMD_FLUSH {
        if r.offset != 0 || r.len != 0 {
            return err(EINVAL);
        }
        return Verdict::Run { payload: 0 };
    }
    if matches!(r.cmd, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES) && n.read_only {
        return err(EPERM);
    }
    if r.cmd == CMD_BLOCK_STATUS && n.base_allocation.is_none() {
        return err(EINVAL);
    }
    if r.len == 0 {
        return err(EINVAL);
    }
    if r.cmd == CMD_READ && r.len > MAX_PAYLOAD {
        let e = if r.flags & CMD_FLAG_DF != 0 { EOVERFLOW } else { EINVAL };
        return err(e);
    }
    let end = r.offset.checked_add(r.len as u64);
    match end {
        Some(e) if e <= n.size => {}
        _ => {
            // Block status may ask past the end of the last extent as long
            // as it starts inside the export; the reply is clipped.
            if r.cmd == CMD_BLOCK_STATUS && r.offset < n.size {
                return Verdict::Run { payload: 0 };
            }
            let e = if matches!(r.cmd, CMD_WRITE | CMD_WRITE_ZEROES) { ENOSPC } else { EINVAL };
            return err(e);
        }
    }
    Verdict::Run { payload }
}

// ---- encoders (server -> client) ----

/// An option reply: [`REPLY_MAGIC`], the option it answers, reply type
/// (`REP_*`), then `data` with its length.
pub fn option_reply(option: u32, rtype: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + data.len());
    v.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&rtype.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// NBD_INFO_EXPORT payload: size in bytes and transmission flags.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v
}

/// NBD_INFO_BLOCK_SIZE payload: minimum, preferred and maximum block size
/// in bytes.
pub fn info_block_size(min: u32, preferred: u32, max: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(14);
    v.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    v.extend_from_slice(&min.to_be_bytes());
    v.extend_from_slice(&preferred.to_be_bytes());
    v.extend_from_slice(&max.to_be_bytes());
    v
}

/// NBD_INFO_NAME / NBD_INFO_DESCRIPTION payload: the type `kind`, then
/// `s` (no length: the reply's length covers it).
pub fn info_string(kind: u16, s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + s.len());
    v.extend_from_slice(&kind.to_be_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

/// NBD_REP_SERVER payload for NBD_OPT_LIST: name with its length, then the
/// description.
pub fn rep_server(name: &str, description: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + name.len() + description.len());
    v.extend_from_slice(&(name.len() as u32).to_be_bytes());
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(description.as_bytes());
    v
}

/// NBD_REP_META_CONTEXT payload: context id, then its name.
pub fn rep_meta_context(id: u32, name: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + name.len());
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(name.as_bytes());
    v
}

/// A simple reply header: errno (0 = success) and the request's cookie. A
/// successful READ's data follows it.
pub fn simple_reply(errno: u32, cookie: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&errno.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// The 20-byte header of a structured reply chunk: flags
/// (`REPLY_FLAG_*`), type (`REPLY_TYPE_*`), cookie, and the length of the
/// chunk payload that follows.
pub fn structured_header(flags: u16, rtype: u16, cookie: u64, len: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&rtype.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..20].copy_from_slice(&len.to_be_bytes());
    b
}

/// A complete NBD_REPLY_TYPE_ERROR chunk (with DONE) carrying `msg`.
pub fn structured_error(cookie: u64, errno: u32, msg: &str) -> Vec<u8> {
    let msg = &msg.as_bytes()[..msg.len().min(MAX_STRING)];
    let mut v = Vec::with_capacity(26 + msg.len());
    v.extend_from_slice(&structured_header(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, 6 + msg.len() as u32));
    v.extend_from_slice(&errno.to_be_bytes());
    v.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

/// Map an IO error to the NBD error the client sees.
pub fn errno_of(e: &std::io::Error) -> u32 {
    if let Some(code) = e.raw_os_error() {
        let c = code as u32;
        if [EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN].contains(&c) {
            return c;
        }
        if code == libc::EROFS || code == libc::EACCES {
            return EPERM;
        }
        if code == libc::EDQUOT || code == libc::EFBIG {
            return ENOSPC;
        }
        return EIO;
    }
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => EPERM,
        std::io::ErrorKind::InvalidInput => EINVAL,
        std::io::ErrorKind::OutOfMemory => ENOMEM,
        std::io::ErrorKind::Unsupported => ENOTSUP,
        _ => EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg(size: u64) -> Negotiated {
        Negotiated { size, read_only: false, structured: true, base_allocation: Some(1) }
    }
    fn req(cmd: u16, flags: u16, offset: u64, len: u32) -> Request {
        Request { flags, cmd, cookie: 7, offset, len }
    }

    #[test]
    fn request_roundtrip_and_bad_magic() {
        let r = req(CMD_WRITE, CMD_FLAG_FUA, 1 << 40, 4096);
        let b = encode_request(&r);
        assert_eq!(parse_request(&b), Ok(r));
        let mut bad = b;
        bad[0] ^= 1;
        assert_eq!(parse_request(&bad), Err(ParseError::BadMagic));
    }

    #[test]
    fn verdicts() {
        let n = neg(1 << 20);
        assert_eq!(check_request(&req(CMD_READ, 0, 0, 4096), &n), Verdict::Run { payload: 0 });
        assert_eq!(check_request(&req(CMD_READ, 0, (1 << 20) - 1, 2), &n), Verdict::Error { errno: EINVAL, payload: 0 });
        assert_eq!(check_request(&req(CMD_READ, 0, u64::MAX, 2), &n), Verdict::Error { errno: EINVAL, payload: 0 });
        assert_eq!(check_request(&req(CMD_WRITE, 0, (1 << 20) - 1, 2), &n), Verdict::Error { errno: ENOSPC, payload: 2 });
        assert_eq!(check_request(&req(CMD_WRITE, 0, 0, u32::MAX), &n), Verdict::Close);
        assert_eq!(check_request(&req(CMD_READ, CMD_FLAG_DF, 0, MAX_PAYLOAD + 1), &n), Verdict::Error { errno: EOVERFLOW, payload: 0 });
        assert_eq!(check_request(&req(99, 0, 0, 1), &n), Verdict::Error { errno: EINVAL, payload: 0 });
        assert_eq!(check_request(&req(CMD_BLOCK_STATUS, 0, 4096, u32::MAX), &n), Verdict::Run { payload: 0 });
        let ro = Negotiated { read_only: true, ..n };
        assert_eq!(check_request(&req(CMD_WRITE, 0, 0, 512), &ro), Verdict::Error { errno: EPERM, payload: 512 });
        assert_eq!(check_request(&req(CMD_DISC, 0, 0, 0), &n), Verdict::Disconnect);
        let unstructured = Negotiated { structured: false, base_allocation: None, ..n };
        assert_eq!(check_request(&req(CMD_READ, CMD_FLAG_DF, 0, 1), &unstructured), Verdict::Error { errno: EINVAL, payload: 0 });
        assert_eq!(check_request(&req(CMD_BLOCK_STATUS, 0, 0, 1), &unstructured), Verdict::Error { errno: EINVAL, payload: 0 });
    }

    #[test]
    fn option_payloads() {
        let mut d = Vec::new();
        d.extend_from_slice(&3u32.to_be_bytes());
        d.extend_from_slice(b"vm1");
        d.extend_from_slice(&2u16.to_be_bytes());
        d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        d.extend_from_slice(&INFO_NAME.to_be_bytes());
        let r = parse_info_request(&d).unwrap();
        assert_eq!(r.name, "vm1");
        assert_eq!(r.requests, vec![INFO_BLOCK_SIZE, INFO_NAME]);
        assert_eq!(parse_info_request(&d[..d.len() - 1]), Err(ParseError::Truncated));
        let mut long = d.clone();
        long.push(0);
        assert_eq!(parse_info_request(&long), Err(ParseError::Trailing));
        let mut huge = Vec::new();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_info_request(&huge), Err(ParseError::TooLong));

        let mut m = Vec::new();
        m.extend_from_slice(&0u32.to_be_bytes());
        m.extend_from_slice(&1u32.to_be_bytes());
        m.extend_from_slice(&15u32.to_be_bytes());
        m.extend_from_slice(BASE_ALLOCATION.as_bytes());
        let r = parse_meta_context_request(&m).unwrap();
        assert_eq!(r.queries, vec![BASE_ALLOCATION.to_string()]);
        // A count that promises more queries than bytes exist.
        let mut m2 = m.clone();
        m2[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_meta_context_request(&m2), Err(ParseError::Truncated));
    }
}
