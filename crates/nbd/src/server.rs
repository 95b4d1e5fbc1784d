//! The NBD server: fixed-newstyle handshake, optional TLS, transmission.
//!
//! One tokio task per connection reads requests in order; each accepted
//! request runs in its own task whose device call goes to the blocking
//! pool, so a slow read does not hold up the requests behind it, nor
//! other connections. Replies are written whole under a per-connection
//! lock (chunks of different requests never interleave mid-chunk). A
//! connection has at most `max_in_flight` requests and `IN_FLIGHT_BYTES`
//! of payload outstanding; past that it stops reading from the socket.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, WriteHalf};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::device::{BlockDevice, Extent, ReadChunk};
use crate::proto::*;
use crate::tls::TlsConfig;

/// Any byte stream the server can talk over (TCP, unix socket, TLS).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
type BoxStream = Box<dyn Stream>;

/// Payload bytes (reads and writes) outstanding per connection.
pub const IN_FLIGHT_BYTES: u32 = 128 * 1024 * 1024;
const BUDGET_UNIT: u32 = 64 * 1024;

/// One named export.
#[derive(Clone)]
pub struct Export {
    /// Name clients ask for (NBD_OPT_GO / NBD_OPT_EXPORT_NAME); unique
    /// within a server, a later export of the same name replaces it.
    pub name: String,
    /// Free text shown by NBD_OPT_LIST and NBD_INFO_DESCRIPTION; may be
    /// empty.
    pub description: String,
    /// The disk behind the export, shared by all its connections; whether
    /// it is writable decides the transmission flags.
    pub device: Arc<dyn BlockDevice>,
}

impl Export {
    /// An export named `name` of `device`, with no description.
    pub fn new(name: impl Into<String>, device: Arc<dyn BlockDevice>) -> Self {
        Export { name: name.into(), description: String::new(), device }
    }
    /// Set the description clients see when they list exports.
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }
}

/// Server settings.
pub struct ServerConfig {
    /// Export served to a client asking for the empty name.
    pub default_export: Option<String>,
    /// TLS, if offered (`required` refuses everything but STARTTLS first).
    pub tls: Option<TlsConfig>,
    /// Requests one connection may have outstanding.
    pub max_in_flight: usize,
    /// A client that has not finished the handshake by then is dropped.
    pub handshake_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { default_export: None, tls: None, max_in_flight: 16, handshake_timeout: Duration::from_secs(30) }
    }
}

struct Inner {
    cfg: ServerConfig,
    exports: RwLock<HashMap<String, Export>>,
}

/// An NBD server. Cheap to clone; exports can be added and removed while
/// it serves (existing connections keep their device).
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

/// What the handshake settled for the transmission phase.
struct Session {
    export: Export,
    flags: u16,
    neg: Negotiated,
}

impl Server {
    /// A server with no exports yet; it serves nothing until one of the
    /// `serve_*` methods or [`Server::handle`] runs.
    pub fn new(cfg: ServerConfig) -> Self {
        Server { inner: Arc::new(Inner { cfg, exports: RwLock::new(HashMap::new()) }) }
    }

    /// Offer `e` to new connections, replacing any export of the same name
    /// (connections already using the old one keep it).
    pub fn add_export(&self, e: Export) {
        self.inner.exports.write().insert(e.name.clone(), e);
    }

    /// Stop offering the export `name` to new connections and return it.
    /// Connections already in transmission keep using its device until
    /// they close.
    pub fn remove_export(&self, name: &str) -> Option<Export> {
        self.inner.exports.write().remove(name)
    }

    /// Names of the exports currently offered, sorted.
    pub fn export_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.exports.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// Accept TCP connections forever, one task each.
    pub async fn serve_tcp(&self, listener: tokio::net::TcpListener) -> io::Result<()> {
        loop {
            let (sock, peer) = listener.accept().await?;
            let _ = sock.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move {
                debug!(%peer, "nbd: connection");
                if let Err(e) = me.handle(sock).await {
                    debug!(%peer, error = %e, "nbd: connection ended with an error");
                }
            });
        }
    }

    /// Binds a unix socket at `path` and serves it on `rt` until the
    /// runtime ends (what a process serving its own exports wants).
    pub fn spawn_unix(&self, rt: &tokio::runtime::Runtime, path: &std::path::Path) -> io::Result<()> {
        let listener = {
            let _g = rt.enter();
            tokio::net::UnixListener::bind(path)?
        };
        let me = self.clone();
        rt.spawn(async move { me.serve_unix(listener).await });
        Ok(())
    }

    /// Accept unix-socket connections forever, one task each.
    pub async fn serve_unix(&self, listener: tokio::net::UnixListener) -> io::Result<()> {
        loop {
            let (sock, _) = listener.accept().await?;
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.handle(sock).await {
                    debug!(error = %e, "nbd: connection ended with an error");
                }
            });
        }
    }

    /// Serve one connection to its end.
    pub async fn handle<S: Stream + 'static>(&self, stream: S) -> io::Result<()> {
        let t = self.inner.cfg.handshake_timeout;
        let negotiated = match tokio::time::timeout(t, self.negotiate(Box::new(stream))).await {
            Ok(r) => r?,
            Err(_) => {
                warn!("nbd: handshake timed out; closing");
                return Ok(());
            }
        };
        let Some((stream, sess)) = negotiated else {
            return Ok(());
        };
        info!(export = %sess.export.name, flags = sess.flags, "nbd: transmission");
        transmit(stream, sess, self.inner.cfg.max_in_flight).await
    }

    fn lookup(&self, name: &str) -> Option<Export> {
        let ex = self.inner.exports.read();
        if let Some(e) = ex.get(name) {
            return Some(e.clone());
        }
        if name.is_empty() {
            if let Some(d) = &self.inner.cfg.default_export {
                return ex.get(d).cloned();
            }
        }
        None
    }

    fn transmission_flags(dev: &dyn BlockDevice, structured: bool) -> u16 {
        let mut f = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_CAN_MULTI_CONN;
        if structured {
            f |= TF_SEND_DF;
        }
        if dev.read_only() {
            f |= TF_READ_ONLY;
        } else {
            f |= TF_SEND_FUA | TF_SEND_TRIM | TF_SEND_WRITE_ZEROES;
        }
        f
    }

    /// The handshake. `Ok(None)`: the client left (or was sent away)
    /// without entering transmission.
    async fn negotiate(&self, mut s: BoxStream) -> io::Result<Option<(BoxStream, Session)>> {
        let mut greet = Vec::with_capacity(18);
        greet.extend_from_slice(&NBDMAGIC.to_be_bytes());
        greet.extend_from_slice(&IHAVEOPT.to_be_bytes());
        greet.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        s.write_all(&greet).await?;
        s.flush().await?;
        let cflags = s.read_u32().await?;
        if cflags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
            warn!(cflags, "nbd: unknown client flags; closing");
            return Ok(None);
        }
        let no_zeroes = cflags & FLAG_C_NO_ZEROES != 0;

        let tls_cfg = self.inner.cfg.tls.as_ref();
        let mut tls_active = false;
        let mut structured = false;
        // (export name, selected base:allocation) from SET_META_CONTEXT.
        let mut meta: Option<(String, bool)> = None;

        loop {
            let mut hb = [0u8; 16];
            if let Err(e) = s.read_exact(&mut hb).await {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    return Ok(None);
                }
                return Err(e);
            }
            let h = match parse_option_header(&hb) {
                Ok(h) => h,
                Err(e) => {
                    warn!("nbd: option: {e}; closing");
                    return Ok(None);
                }
            };
            if h.len > MAX_OPTION_LEN {
                warn!(option = h.option, len = h.len, "nbd: option too long; closing");
                let msg = format!("option length {} exceeds {}", h.len, MAX_OPTION_LEN);
                let _ = send(&mut s, option_reply(h.option, REP_ERR_TOO_BIG, msg.as_bytes())).await;
                return Ok(None);
            }
            let mut data = vec![0u8; h.len as usize];
            s.read_exact(&mut data).await?;
            let opt = h.option;
            let reply = |t: u32, d: &[u8]| option_reply(opt, t, d);
            let err = |t: u32, msg: &str| option_reply(opt, t, msg.as_bytes());

            let tls_required = tls_cfg.is_some_and(|t| t.required) && !tls_active;
            if tls_required && opt != OPT_STARTTLS && opt != OPT_ABORT {
                if opt == OPT_EXPORT_NAME {
                    return Ok(None);
                }
                send(&mut s, err(REP_ERR_TLS_REQD, "this server requires TLS: use STARTTLS")).await?;
                continue;
            }

            match opt {
                OPT_ABORT => {
                    let _ = send(&mut s, reply(REP_ACK, &[])).await;
                    return Ok(None);
                }
                OPT_LIST => {
                    if !data.is_empty() {
                        send(&mut s, err(REP_ERR_INVALID, "NBD_OPT_LIST takes no data")).await?;
                        continue;
                    }
                    let exports: Vec<Export> = {
                        let ex = self.inner.exports.read();
                        let mut v: Vec<Export> = ex.values().cloned().collect();
                        v.sort_by(|a, b| a.name.cmp(&b.name));
                        v
                    };
                    let mut out = Vec::new();
                    for e in exports {
                        out.extend(reply(REP_SERVER, &rep_server(&e.name, &e.description)));
                    }
                    out.extend(reply(REP_ACK, &[]));
                    send(&mut s, out).await?;
                }
                OPT_STARTTLS => {
                    let Some(tls) = tls_cfg else {
                        send(&mut s, err(REP_ERR_UNSUP, "TLS is not configured on this server")).await?;
                        continue;
                    };
                    if tls_active || !data.is_empty() {
                        send(&mut s, err(REP_ERR_INVALID, "TLS already active, or data given")).await?;
                        continue;
                    }
                    send(&mut s, reply(REP_ACK, &[])).await?;
                    let tls_stream = match tls.acceptor.accept(s).await {
                        Ok(t) => t,
                        Err(e) => {
                            warn!("nbd: TLS handshake failed: {e}");
                            return Ok(None);
                        }
                    };
                    s = Box::new(tls_stream);
                    tls_active = true;
                    // Nothing negotiated in the clear carries over.
                    structured = false;
                    meta = None;
                }
                OPT_STRUCTURED_REPLY => {
                    if !data.is_empty() {
                        send(&mut s, err(REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data")).await?;
                        continue;
                    }
                    structured = true;
                    send(&mut s, reply(REP_ACK, &[])).await?;
                }
                OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                    let set = opt == OPT_SET_META_CONTEXT;
                    if set && !structured {
                        send(&mut s, err(REP_ERR_INVALID, "negotiate structured replies first")).await?;
                        continue;
                    }
                    let req = match parse_meta_context_request(&data) {
                        Ok(r) => r,
                        Err(e) => {
                            send(&mut s, err(REP_ERR_INVALID, &format!("bad meta context request: {e}"))).await?;
                            continue;
                        }
                    };
                    if self.lookup(&req.export).is_none() {
                        send(&mut s, err(REP_ERR_UNKNOWN, &format!("no export named {:?}", req.export))).await?;
                        continue;
                    }
                    let selected = if !set && req.queries.is_empty() { true } else { req.queries.iter().any(|q| query_matches_base_allocation(q, !set)) };
                    let mut out = Vec::new();
                    if selected {
                        out.extend(reply(REP_META_CONTEXT, &rep_meta_context(if set { 1 } else { 0 }, BASE_ALLOCATION)));
                    }
                    out.extend(reply(REP_ACK, &[]));
                    if set {
                        meta = Some((req.export.clone(), selected));
                    }
                    send(&mut s, out).await?;
                }
                OPT_INFO | OPT_GO => {
                    let req = match parse_info_request(&data) {
                        Ok(r) => r,
                        Err(e) => {
                            send(&mut s, err(REP_ERR_INVALID, &format!("bad info request: {e}"))).await?;
                            continue;
                        }
                    };
                    let Some(export) = self.lookup(&req.name) else {
                        send(&mut s, err(REP_ERR_UNKNOWN, &format!("no export named {:?}", req.name))).await?;
                        continue;
                    };
                    let dev = &export.device;
                    let flags = Self::transmission_flags(dev.as_ref(), structured);
                    let mut out = Vec::new();
                    out.extend(reply(REP_INFO, &info_export(dev.size(), flags)));
                    out.extend(reply(REP_INFO, &info_block_size(1, PREFERRED_BLOCK, MAX_PAYLOAD)));
                    if req.requests.contains(&INFO_NAME) {
                        out.extend(reply(REP_INFO, &info_string(INFO_NAME, &export.name)));
                    }
                    if req.requests.contains(&INFO_DESCRIPTION) && !export.description.is_empty() {
                        out.extend(reply(REP_INFO, &info_string(INFO_DESCRIPTION, &export.description)));
                    }
                    out.extend(reply(REP_ACK, &[]));
                    send(&mut s, out).await?;
                    if opt == OPT_GO {
                        let base_allocation = match &meta {
                            Some((name, true)) if *name == req.name => Some(1),
                            _ => None,
                        };
                        let neg = Negotiated { size: dev.size(), read_only: dev.read_only(), structured, base_allocation };
                        return Ok(Some((s, Session { export, flags, neg })));
                    }
                }
                OPT_EXPORT_NAME => {
                    let Ok(name) = parse_export_name(&data) else {
                        return Ok(None);
                    };
                    let Some(export) = self.lookup(&name) else {
                        warn!(name, "nbd: unknown export (NBD_OPT_EXPORT_NAME); closing");
                        return Ok(None);
                    };
                    let dev = &export.device;
                    let flags = Self::transmission_flags(dev.as_ref(), structured);
                    let mut out = Vec::with_capacity(134);
                    out.extend_from_slice(&dev.size().to_be_bytes());
                    out.extend_from_slice(&flags.to_be_bytes());
                    if !no_zeroes {
                        out.extend_from_slice(&[0u8; 124]);
                    }
                    send(&mut s, out).await?;
                    let base_allocation = match &meta {
                        Some((n, true)) if *n == name => Some(1),
                        _ => None,
                    };
                    let neg = Negotiated { size: dev.size(), read_only: dev.read_only(), structured, base_allocation };
                    return Ok(Some((s, Session { export, flags, neg })));
                }
                _ => {
                    send(&mut s, err(REP_ERR_UNSUP, &format!("option {opt} is not supported"))).await?;
                }
            }
        }
    }
}

async fn send(s: &mut BoxStream, data: Vec<u8>) -> io::Result<()> {
    s.write_all(&data).await?;
    s.flush().await
}

type Writer = Arc<Mutex<BufWriter<WriteHalf<BoxStream>>>>;

async fn transmit(stream: BoxStream, sess: Session, max_in_flight: usize) -> io::Result<()> {
    let (mut rd, wr) = tokio::io::split(stream);
    let wr: Writer = Arc::new(Mutex::new(BufWriter::with_capacity(256 * 1024, wr)));
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let budget = Arc::new(Semaphore::new((IN_FLIGHT_BYTES / BUDGET_UNIT) as usize));
    let sess = Arc::new(sess);
    let mut tasks = JoinSet::new();
    let mut hdr = [0u8; REQUEST_LEN];
    loop {
        while tasks.try_join_next().is_some() {}
        if let Err(e) = rd.read_exact(&mut hdr).await {
            if e.kind() != io::ErrorKind::UnexpectedEof {
                debug!("nbd: read error: {e}");
            } else {
                debug!("nbd: client went away without NBD_CMD_DISC");
            }
            break;
        }
        let req = match parse_request(&hdr) {
            Ok(r) => r,
            Err(e) => {
                warn!(export = %sess.export.name, "nbd: request: {e}; closing");
                break;
            }
        };
        match check_request(&req, &sess.neg) {
            Verdict::Close => {
                warn!(export = %sess.export.name, len = req.len, "nbd: write payload too large; closing");
                break;
            }
            Verdict::Disconnect => {
                debug!("nbd: NBD_CMD_DISC");
                break;
            }
            Verdict::Error { errno, payload } => {
                if payload > 0 {
                    let n = tokio::io::copy(&mut (&mut rd).take(payload as u64), &mut tokio::io::sink()).await?;
                    if n < payload as u64 {
                        break;
                    }
                }
                debug!(cmd = req.cmd, errno, "nbd: request refused");
                let msg = format!("request refused (cmd {}, offset {}, length {})", req.cmd, req.offset, req.len);
                if write_error(&wr, &sess.neg, &req, errno, &msg).await.is_err() {
                    break;
                }
            }
            Verdict::Run { payload } => {
                let units = match req.cmd {
                    CMD_READ | CMD_WRITE => req.len.div_ceil(BUDGET_UNIT).max(1),
                    _ => 1,
                };
                let slot = slots.clone().acquire_owned().await.expect("semaphore never closed");
                let bytes = budget.clone().acquire_many_owned(units).await.expect("semaphore never closed");
                let mut data = Vec::new();
                if payload > 0 {
                    data = vec![0u8; payload as usize];
                    if rd.read_exact(&mut data).await.is_err() {
                        break;
                    }
                }
                let (wr, sess) = (wr.clone(), sess.clone());
                tasks.spawn(run_request(wr, sess, req, data, (slot, bytes)));
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let mut w = wr.lock().await;
    let _ = w.flush().await;
    let _ = w.shutdown().await;
    Ok(())
}

enum Outcome {
    Done,
    Read(Vec<ReadChunk>),
    Status(Vec<Extent>),
}

async fn run_request(wr: Writer, sess: Arc<Session>, req: Request, data: Vec<u8>, _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit)) {
    let dev = sess.export.device.clone();
    let size = sess.neg.size;
    if req.cmd == CMD_READ {
        if let Some(r) = dev.read_ready(req.offset, req.len) {
            let res = match r.and_then(|c| checked_read(c, req.len)) {
                Ok(chunks) => write_read(&wr, &sess.neg, &req, chunks).await,
                Err(e) => reply_error(&wr, &sess, &req, e).await,
            };
            if let Err(e) = res {
                debug!("nbd: reply not sent: {e}");
            }
            return;
        }
    }
    let r = tokio::task::spawn_blocking(move || -> io::Result<Outcome> {
        let fua = req.flags & CMD_FLAG_FUA != 0;
        match req.cmd {
            CMD_READ => Ok(Outcome::Read(checked_read(dev.read_at(req.offset, req.len)?, req.len)?)),
            CMD_WRITE => {
                dev.write_at(req.offset, &data)?;
                if fua {
                    dev.flush()?;
                }
                Ok(Outcome::Done)
            }
            CMD_WRITE_ZEROES => {
                dev.write_zeroes(req.offset, req.len, req.flags & CMD_FLAG_NO_HOLE == 0)?;
                if fua {
                    dev.flush()?;
                }
                Ok(Outcome::Done)
            }
            CMD_TRIM => {
                dev.trim(req.offset, req.len)?;
                if fua {
                    dev.flush()?;
                }
                Ok(Outcome::Done)
            }
            CMD_FLUSH => {
                dev.flush()?;
                Ok(Outcome::Done)
            }
            CMD_BLOCK_STATUS => {
                let len = (req.len as u64).min(size - req.offset) as u32;
                let mut ext = dev.block_status(req.offset, len)?;
                // Keep the reply within what was asked and well formed.
                let mut left = len;
                ext.retain(|e| e.len > 0);
                let mut out = Vec::with_capacity(ext.len());
                for mut e in ext {
                    if left == 0 {
                        break;
                    }
                    e.len = e.len.min(left);
                    left -= e.len;
                    out.push(e);
                    if req.flags & CMD_FLAG_REQ_ONE != 0 {
                        break;
                    }
                }
                if out.is_empty() {
                    return Err(io::Error::other("device returned no extents"));
                }
                Ok(Outcome::Status(out))
            }
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    })
    .await;
    let r = match r {
        Ok(r) => r,
        Err(e) => Err(io::Error::other(format!("device call panicked: {e}"))),
    };
    let res = match r {
        Ok(Outcome::Done) => write_all_locked(&wr, &simple_reply(0, req.cookie)).await,
        Ok(Outcome::Read(chunks)) => write_read(&wr, &sess.neg, &req, chunks).await,
        Ok(Outcome::Status(ext)) => {
            let id = sess.neg.base_allocation.unwrap_or(0);
            let mut v = Vec::with_capacity(20 + 4 + ext.len() * 8);
            v.extend_from_slice(&structured_header(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, req.cookie, 4 + 8 * ext.len() as u32));
            v.extend_from_slice(&id.to_be_bytes());
            for e in &ext {
                v.extend_from_slice(&e.len.to_be_bytes());
                v.extend_from_slice(&e.flags().to_be_bytes());
            }
            write_all_locked(&wr, &v).await
        }
        Err(e) => reply_error(&wr, &sess, &req, e).await,
    };
    if let Err(e) = res {
        debug!("nbd: reply not sent: {e}");
    }
}

fn checked_read(chunks: Vec<ReadChunk>, len: u32) -> io::Result<Vec<ReadChunk>> {
    let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    if total != len as u64 {
        return Err(io::Error::other("device returned a short read"));
    }
    Ok(chunks)
}

async fn reply_error(wr: &Writer, sess: &Session, req: &Request, e: io::Error) -> io::Result<()> {
    let errno = errno_of(&e);
    warn!(export = %sess.export.name, cmd = req.cmd, offset = req.offset, len = req.len, "nbd: device error: {e}");
    write_error(wr, &sess.neg, req, errno, &e.to_string()).await
}

async fn write_all_locked(wr: &Writer, b: &[u8]) -> io::Result<()> {
    let mut w = wr.lock().await;
    w.write_all(b).await?;
    w.flush().await
}

async fn write_error(wr: &Writer, neg: &Negotiated, req: &Request, errno: u32, msg: &str) -> io::Result<()> {
    if neg.structured && matches!(req.cmd, CMD_READ | CMD_BLOCK_STATUS) {
        write_all_locked(wr, &structured_error(req.cookie, errno, msg)).await
    } else {
        write_all_locked(wr, &simple_reply(errno, req.cookie)).await
    }
}

static ZEROES: [u8; 64 * 1024] = [0u8; 64 * 1024];

async fn write_zero_bytes(w: &mut BufWriter<WriteHalf<BoxStream>>, mut n: u64) -> io::Result<()> {
    while n > 0 {
        let k = n.min(ZEROES.len() as u64) as usize;
        w.write_all(&ZEROES[..k]).await?;
        n -= k as u64;
    }
    Ok(())
}

async fn write_read(wr: &Writer, neg: &Negotiated, req: &Request, chunks: Vec<ReadChunk>) -> io::Result<()> {
    let mut w = wr.lock().await;
    let df = req.flags & CMD_FLAG_DF != 0;
    if !neg.structured || df {
        if neg.structured {
            w.write_all(&structured_header(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, req.cookie, 8 + req.len)).await?;
            w.write_all(&req.offset.to_be_bytes()).await?;
        } else {
            w.write_all(&simple_reply(0, req.cookie)).await?;
        }
        for c in &chunks {
            match c {
                ReadChunk::Data(d) => w.write_all(d).await?,
                ReadChunk::Zero(n) => write_zero_bytes(&mut w, *n as u64).await?,
            }
        }
        return w.flush().await;
    }
    let mut off = req.offset;
    let last = chunks.len().saturating_sub(1);
    for (i, c) in chunks.iter().enumerate() {
        let flags = if i == last { REPLY_FLAG_DONE } else { 0 };
        match c {
            ReadChunk::Data(d) => {
                w.write_all(&structured_header(flags, REPLY_TYPE_OFFSET_DATA, req.cookie, 8 + d.len() as u32)).await?;
                w.write_all(&off.to_be_bytes()).await?;
                w.write_all(d).await?;
            }
            ReadChunk::Zero(n) => {
                w.write_all(&structured_header(flags, REPLY_TYPE_OFFSET_HOLE, req.cookie, 12)).await?;
                w.write_all(&off.to_be_bytes()).await?;
                w.write_all(&n.to_be_bytes()).await?;
            }
        }
        off += c.len() as u64;
    }
    w.flush().await
}
