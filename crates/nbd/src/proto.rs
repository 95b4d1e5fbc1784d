//! NBD wire format: constants and pure parse/encode functions.
//!
//! Nothing here does IO, so the parsers can be fuzzed (`fuzz/`) and unit
//! tested byte for byte. Names follow the NBD protocol document
//! (`doc/proto.md` of the reference implementation).

use std::fmt;

// Handshake magics.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943; // "NBDMAGIC"
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054; // "IHAVEOPT"
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;

// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = (1 << 31) | 1;
pub const REP_ERR_POLICY: u32 = (1 << 31) | 2;
pub const REP_ERR_INVALID: u32 = (1 << 31) | 3;
pub const REP_ERR_TLS_REQD: u32 = (1 << 31) | 5;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) | 6;
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) | 9;

// NBD_INFO types.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Transmission flags.
pub const TF_HAS_FLAGS: u16 = 1 << 0;
pub const TF_READ_ONLY: u16 = 1 << 1;
pub const TF_SEND_FLUSH: u16 = 1 << 2;
pub const TF_SEND_FUA: u16 = 1 << 3;
pub const TF_SEND_TRIM: u16 = 1 << 5;
pub const TF_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TF_SEND_DF: u16 = 1 << 7;
pub const TF_CAN_MULTI_CONN: u16 = 1 << 8;

// Requests.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const REQUEST_LEN: usize = 28;
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

// Replies.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;
pub const REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) | 2;

// base:allocation flags.
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;
pub const BASE_ALLOCATION: &str = "base:allocation";

// Errors (values fixed by the protocol, equal to Linux errno).
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
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
    BadMagic,
    Truncated,
    TooLong,
    Trailing,
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
    pub option: u32,
    pub len: u32,
}

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
    pub name: String,
    pub requests: Vec<u16>,
}

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
    pub export: String,
    pub queries: Vec<String>,
}

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
    pub flags: u16,
    pub cmd: u16,
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

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
    pub size: u64,
    pub read_only: bool,
    pub structured: bool,
    /// Context id of `base:allocation`, if the client selected it.
    pub base_allocation: Option<u32>,
}

/// The verdict on one request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Carry it out. `payload` bytes follow the header (writes).
    Run { payload: u32 },
    /// Reply with this error; `payload` bytes follow and must be read and
    /// dropped to stay in step with the client.
    Error { errno: u32, payload: u32 },
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

pub fn option_reply(option: u32, rtype: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + data.len());
    v.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&rtype.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v
}

pub fn info_block_size(min: u32, preferred: u32, max: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(14);
    v.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    v.extend_from_slice(&min.to_be_bytes());
    v.extend_from_slice(&preferred.to_be_bytes());
    v.extend_from_slice(&max.to_be_bytes());
    v
}

pub fn info_string(kind: u16, s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + s.len());
    v.extend_from_slice(&kind.to_be_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

pub fn rep_server(name: &str, description: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + name.len() + description.len());
    v.extend_from_slice(&(name.len() as u32).to_be_bytes());
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(description.as_bytes());
    v
}

pub fn rep_meta_context(id: u32, name: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + name.len());
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(name.as_bytes());
    v
}

pub fn simple_reply(errno: u32, cookie: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&errno.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

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
