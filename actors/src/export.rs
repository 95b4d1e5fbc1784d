//! `ExportActor`: serves backed-up VM disks over NBD (`lifeboat_nbd`) or
//! NFSv3 (`lifeboat_nfs`) straight from the datastore
//! (`lifeboat_vm::image::DatastoreDisk`). Both protocols get the same
//! device stack. The NFS listener opens with the first NFS export and
//! closes after the last.
//! Writable exports put a `CowOverlay` on top whose file lives in the
//! state directory: the datastore is never written. The NBD server runs
//! on a small runtime of its own, so disk traffic never shares the API's
//! arbiters; device calls go to that runtime's blocking pool.
//!
//! An export pins its snapshot in the datastore actor (forget refuses
//! it, retention skips it), so gc keeps its chunks while it is served.
//! Exports do not outlive the daemon: their overlays are removed at start.

use crate::datastore::{blocking, DatastoreHandle, PinSnapshot};
use crate::Datastores;
use actix::prelude::*;
use chrono::Utc;
use lifeboat_api_types::{ExportCreate, ExportInfo, ExportProtocol};
use lifeboat_nbd::{BlockDevice, CowOverlay, Export, Extent, ReadChunk, Server, ServerConfig};
use lifeboat_nfs::{ClientRule, NfsDisk, NfsServer, Registry};
use lifeboat_store::BlobId;
use lifeboat_vm::image::DatastoreDisk;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
}

/// A device that stops answering once its export is deleted: clients
/// still connected get EIO instead of reading on (the server keeps a
/// connection's device until the client leaves).
struct Gated {
    inner: Arc<dyn BlockDevice>,
    open: AtomicBool,
}

impl Gated {
    fn check(&self) -> io::Result<()> {
        if self.open.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(io::Error::other("the export was deleted"))
        }
    }
}

impl BlockDevice for Gated {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn read_at(&self, off: u64, len: u32) -> io::Result<Vec<ReadChunk>> {
        self.check()?;
        self.inner.read_at(off, len)
    }
    fn block_status(&self, off: u64, len: u32) -> io::Result<Vec<Extent>> {
        self.check()?;
        self.inner.block_status(off, len)
    }
    fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.write_at(off, data)
    }
    fn write_zeroes(&self, off: u64, len: u32, may_trim: bool) -> io::Result<()> {
        self.check()?;
        self.inner.write_zeroes(off, len, may_trim)
    }
    fn trim(&self, off: u64, len: u32) -> io::Result<()> {
        self.check()?;
        self.inner.trim(off, len)
    }
    fn flush(&self) -> io::Result<()> {
        self.check()?;
        self.inner.flush()
    }
}

struct Live {
    info: ExportInfo,
    device: Arc<Gated>,
    /// The snapshot it pins; `None` for a CDP point in time.
    snapshot: Option<BlobId>,
    /// Its index in the NFS registry, for NFS exports.
    nfs: Option<u64>,
}

/// Where the NFS server listens (config `nfs_listen`,
/// `nfs_portmap_listen`; a portmap port of 0 means none).
#[derive(Debug, Clone, Copy)]
pub struct NfsListen {
    pub nfs: SocketAddr,
    pub portmap: SocketAddr,
}

pub struct ExportActor {
    listen: SocketAddr,
    /// `<state>/exports`: one directory per writable export's overlay.
    dir: PathBuf,
    datastores: Datastores,
    server: Server,
    runtime: Option<tokio::runtime::Runtime>,
    bound: Option<SocketAddr>,
    exports: BTreeMap<String, Live>,
    nfs_listen: NfsListen,
    nfs_registry: Arc<Registry>,
    nfs: Option<NfsServer>,
}

impl ExportActor {
    /// Removes overlays left by a previous run (exports do not survive a
    /// restart). The listener is opened with the first export.
    pub fn new(listen: SocketAddr, nfs_listen: NfsListen, state_dir: &std::path::Path, datastores: Datastores) -> io::Result<Self> {
        let dir = state_dir.join("exports");
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("removing old export overlays in {}: {e}", dir.display()))),
        }
        Ok(ExportActor {
            listen,
            dir,
            datastores,
            server: Server::new(ServerConfig::default()),
            runtime: None,
            bound: None,
            exports: BTreeMap::new(),
            nfs_listen,
            nfs_registry: Arc::new(Registry::default()),
            nfs: None,
        })
    }

    /// The runtime both servers run on (disk traffic stays off the API's arbiters).
    fn runtime(&mut self) -> Result<tokio::runtime::Handle, ExportError> {
        if let Some(rt) = &self.runtime {
            return Ok(rt.handle().clone());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("export")
            .enable_all()
            .build()
            .map_err(|e| ExportError::Unavailable(format!("starting the export runtime: {e}")))?;
        let h = rt.handle().clone();
        self.runtime = Some(rt);
        Ok(h)
    }

    fn ensure_nfs(&mut self) -> Result<SocketAddr, ExportError> {
        if let Some(s) = &self.nfs {
            return Ok(s.local_addr());
        }
        let h = self.runtime()?;
        let pm = Some(self.nfs_listen.portmap).filter(|a| a.port() != 0);
        let s = NfsServer::start(self.nfs_listen.nfs, pm, self.nfs_registry.clone(), &h).map_err(|e| ExportError::Unavailable(e.to_string()))?;
        let a = s.local_addr();
        self.nfs = Some(s);
        Ok(a)
    }

    fn ensure_listening(&mut self) -> Result<SocketAddr, ExportError> {
        if let Some(a) = self.bound {
            return Ok(a);
        }
        let h = self.runtime()?;
        let listen = self.listen;
        let fail = |e: io::Error| ExportError::Unavailable(format!("cannot serve NBD on {listen}: {e}; set nbd_listen in the config"));
        let std_listener = std::net::TcpListener::bind(self.listen).map_err(fail)?;
        std_listener.set_nonblocking(true).map_err(fail)?;
        let addr = std_listener.local_addr().map_err(fail)?;
        let listener = {
            let _in = h.enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(fail)?
        };
        let server = self.server.clone();
        h.spawn(async move {
            if let Err(e) = server.serve_tcp(listener).await {
                tracing::error!("NBD server stopped: {e}");
            }
        });
        tracing::info!(%addr, "NBD server for exports listening");
        self.bound = Some(addr);
        Ok(addr)
    }

    fn uri(addr: SocketAddr, name: &str) -> String {
        format!("nbd://{}/{name}", Self::host_port(addr))
    }

    fn host_port(addr: SocketAddr) -> String {
        let host = if addr.ip().is_unspecified() {
            lifeboat_ingest::hostname()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        format!("{host}:{}", addr.port())
    }
}

impl ExportActor {
    /// The NFS listener lives only while an NFS export does.
    fn stop_nfs_if_idle(&mut self) {
        if self.nfs_registry.is_empty() {
            self.nfs = None;
        }
    }
}

impl Actor for ExportActor {
    type Context = Context<Self>;
}

impl Drop for ExportActor {
    fn drop(&mut self) {
        self.nfs = None;
        // Dropping a runtime inside another one panics; let it go quietly.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(Message)]
#[rtype(result = "Result<ExportInfo, ExportError>")]
pub struct CreateExport(pub ExportCreate);

/// A VM disk of a snapshot, opened for an export (behind its overlay
/// when writable).
struct OpenedDisk {
    sid: BlobId,
    disk: String,
    device: Arc<dyn BlockDevice>,
    md: lifeboat_vm::VmMetadata,
    snap_time: chrono::DateTime<Utc>,
}

impl Handler<CreateExport> for ExportActor {
    type Result = ResponseActFuture<Self, Result<ExportInfo, ExportError>>;
    fn handle(&mut self, msg: CreateExport, _: &mut Context<Self>) -> Self::Result {
        let req = msg.0;
        let ds_addr = match self.datastores.get(&req.datastore) {
            Some(a) => a,
            None => return Box::pin(actix::fut::ready(Err(ExportError::NotFound(format!("datastore {:?} does not exist: list them with GET /api/datastores", req.datastore))))),
        };
        let clients: Vec<ClientRule> = match req.clients.iter().map(|c| c.parse::<ClientRule>()).collect::<Result<_, _>>() {
            Ok(c) => c,
            Err(m) => return Box::pin(actix::fut::ready(Err(ExportError::Invalid(m)))),
        };
        match req.protocol {
            ExportProtocol::Nfs if clients.is_empty() => {
                return Box::pin(actix::fut::ready(Err(ExportError::Invalid("an NFS export needs the client addresses allowed to mount it: \"clients\": [\"10.0.0.5\", \"10.0.0.0/24\"]".into()))))
            }
            ExportProtocol::Nbd if !clients.is_empty() => {
                return Box::pin(actix::fut::ready(Err(ExportError::Invalid("\"clients\" restricts NFS exports; NBD listens on nbd_listen only (keep it on a trusted network)".into()))))
            }
            _ => {}
        }
        let id = lifeboat_state::random_hex(4);
        let overlay_dir = self.dir.join(&id);
        let req2 = req.clone();
        let fut = async move {
            let ds = ds_addr.send(DatastoreHandle).await.map_err(|e| ExportError::Unavailable(format!("datastore {:?}: {e}", req2.datastore)))?;
            let r = blocking(move || -> Result<OpenedDisk, ExportError> {
                // The snapshot may come from another process (the CLI, an
                // agent): look at the index as it is now.
                ds.refresh_index().map_err(|e| ExportError::Unavailable(format!("datastore {:?}: {e}", req2.datastore)))?;
                let (sid, snap) = ds.resolve_snapshot(&req2.snapshot).map_err(|e| ExportError::NotFound(format!("{e:#}")))?;
                let vm = lifeboat_qemu::load_vm(&ds, &snap).map_err(|e| ExportError::Invalid(format!("snapshot {}: {e}", sid.short())))?;
                let md = &vm.md;
                let ids: Vec<&str> = md.disks.iter().map(|d| d.id.as_str()).collect();
                let disk = match &req2.disk {
                    Some(d) => d.clone(),
                    None if ids.len() == 1 => ids[0].to_string(),
                    None => return Err(ExportError::Invalid(format!("VM {} has {} disks ({}): name one in \"disk\"", md.name, ids.len(), ids.join(", ")))),
                };
                // The id names the overlay file in <state>/exports/<id>/;
                // a snapshot's metadata is untrusted, so it must be a
                // plain name, never a path.
                lifeboat_state::confine::check_plain_name(&disk).map_err(|m| ExportError::Invalid(format!("disk id: {m}")))?;
                let (_, node) = vm.disk(&disk).ok_or_else(|| ExportError::NotFound(format!("VM {} in snapshot {} has no disk {disk:?} (disks: {})", md.name, sid.short(), ids.join(", "))))?;
                let base = DatastoreDisk::new(ds.clone(), node);
                let device: Arc<dyn BlockDevice> = if req2.writable {
                    std::fs::create_dir_all(&overlay_dir).map_err(|e| ExportError::Unavailable(format!("creating {}: {e}", overlay_dir.display())))?;
                    let p = overlay_dir.join(format!("{disk}.overlay"));
                    Arc::new(CowOverlay::open(base, &p).map_err(|e| ExportError::Unavailable(format!("creating the overlay {}: {e}", p.display())))?)
                } else {
                    Arc::new(base)
                };
                Ok(OpenedDisk { sid, disk, device, md: md.clone(), snap_time: snap.time })
            })
            .await
            .unwrap_or_else(|e| Err(ExportError::Unavailable(e)))?;
            Ok((ds_addr, r))
        };
        Box::pin(fut.into_actor(self).map(move |res: Result<_, ExportError>, act, _| {
            let (ds_addr, OpenedDisk { sid, disk, device, md, snap_time }) = res?;
            let device = Arc::new(Gated { inner: device, open: AtomicBool::new(true) });
            // Only a valid request opens a listener.
            let (name, uri, nfs) = match req.protocol {
                ExportProtocol::Nbd => {
                    let addr = act.ensure_listening()?;
                    let name = id.clone();
                    act.server.add_export(Export::new(name.clone(), device.clone()).with_description(format!("{} disk {disk}", sid.short())));
                    let uri = Self::uri(addr, &name);
                    (name, uri, None)
                }
                ExportProtocol::Nfs => {
                    let mut nd = NfsDisk {
                        vm: md.name.clone(),
                        snapshot_time: snap_time.format("%Y-%m-%dT%H%M%SZ").to_string(),
                        disk: disk.clone(),
                        device: device.clone(),
                        writable: req.writable,
                        clients: clients.clone(),
                        mtime: snap_time.timestamp().clamp(0, u32::MAX as i64) as u32,
                        meta: Vec::new(),
                        // Beside the overlay, so it goes with the export.
                        files: req.writable.then(|| act.dir.join(&id).join("files")),
                    };
                    nd.meta = nfs_metadata_files(&md, &nd).map_err(|m| ExportError::Invalid(format!("VM {}: {m}", md.name)))?;
                    let addr = act.ensure_nfs()?;
                    let idx = match act.nfs_registry.add(nd) {
                        Ok(i) => i,
                        Err(e) => {
                            act.stop_nfs_if_idle();
                            return Err(ExportError::Invalid(e.to_string()));
                        }
                    };
                    let path = act.nfs_registry.path(idx).unwrap_or_default();
                    let uri = format!("nfs://{}{path}", Self::host_port(addr));
                    (path, uri, Some(idx))
                }
            };
            ds_addr.do_send(PinSnapshot { id: sid, pin: true });
            let info = ExportInfo {
                id: id.clone(),
                datastore: req.datastore.clone(),
                snapshot: sid.to_hex(),
                disk,
                writable: req.writable,
                size: device.size(),
                uri,
                name,
                created: Utc::now(),
                protocol: req.protocol,
                clients: clients.iter().map(|c| c.to_string()).collect(),
            };
            tracing::info!(export = %info.id, uri = %info.uri, writable = info.writable, "export created");
            act.exports.insert(id, Live { info: info.clone(), device, snapshot: Some(sid), nfs });
            Ok(info)
        }))
    }
}

/// The platform metadata an NFS export shows beside its disk (`vm.json`,
/// `vm.ovf` naming the disk's `.vmdk` descriptor); the same files the
/// cross-platform restore writes.
pub fn nfs_metadata_files(md: &lifeboat_vm::VmMetadata, d: &NfsDisk) -> Result<Vec<(String, Vec<u8>)>, String> {
    let vmdk = lifeboat_convert::writers::DiskFile {
        id: d.disk.clone(),
        file: format!("{}.vmdk", lifeboat_nfs::plain_name(&d.disk)),
        format: lifeboat_convert::DiskFormat::Vmdk,
        size: d.device.size(),
        file_bytes: d.vmdk_descriptor().len() as u64,
    };
    lifeboat_convert::writers::nfs_export_files(md, &[vmdk])
}

/// Serves a device that is not a snapshot's disk (a CDP point in time)
/// read-only over NBD, listed and closed like any export.
#[derive(Message)]
#[rtype(result = "Result<ExportInfo, ExportError>")]
pub struct ExportDevice {
    /// The datastore it is read from.
    pub datastore: String,
    /// What it shows, in `ExportInfo.snapshot` (e.g. `cdp:web1@<time>`).
    pub source: String,
    /// The disk's id.
    pub disk: String,
    /// The device.
    pub device: Arc<dyn BlockDevice>,
}

impl Handler<ExportDevice> for ExportActor {
    type Result = Result<ExportInfo, ExportError>;
    fn handle(&mut self, msg: ExportDevice, _: &mut Context<Self>) -> Self::Result {
        let addr = self.ensure_listening()?;
        let id = lifeboat_state::random_hex(4);
        let device = Arc::new(Gated { inner: msg.device, open: AtomicBool::new(true) });
        self.server.add_export(Export::new(id.clone(), device.clone()).with_description(format!("{} disk {}", msg.source, msg.disk)));
        let info = ExportInfo {
            id: id.clone(),
            datastore: msg.datastore,
            snapshot: msg.source,
            disk: msg.disk,
            writable: false,
            size: device.size(),
            uri: Self::uri(addr, &id),
            name: id.clone(),
            created: Utc::now(),
            protocol: ExportProtocol::Nbd,
            clients: Vec::new(),
        };
        tracing::info!(export = %info.id, uri = %info.uri, source = %info.snapshot, "export created");
        self.exports.insert(id, Live { info: info.clone(), device, snapshot: None, nfs: None });
        Ok(info)
    }
}

#[derive(Message)]
#[rtype(result = "Vec<ExportInfo>")]
pub struct ListExports;

impl Handler<ListExports> for ExportActor {
    type Result = MessageResult<ListExports>;
    fn handle(&mut self, _: ListExports, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.exports.values().map(|l| l.info.clone()).collect())
    }
}

/// Closes an export: new clients cannot open it, connected ones get
/// errors, its overlay is removed, its snapshot unpinned.
#[derive(Message)]
#[rtype(result = "Result<(), ExportError>")]
pub struct DeleteExport(pub String);

impl Handler<DeleteExport> for ExportActor {
    type Result = Result<(), ExportError>;
    fn handle(&mut self, msg: DeleteExport, _: &mut Context<Self>) -> Self::Result {
        let live = self.exports.remove(&msg.0).ok_or_else(|| ExportError::NotFound(format!("export {} not found: list them with GET /api/exports", msg.0)))?;
        match live.nfs {
            Some(idx) => {
                self.nfs_registry.remove(idx);
                self.stop_nfs_if_idle();
            }
            None => {
                self.server.remove_export(&live.info.name);
            }
        }
        live.device.open.store(false, Ordering::Release);
        if let (Some(ds), Some(id)) = (self.datastores.get(&live.info.datastore), live.snapshot) {
            ds.do_send(PinSnapshot { id, pin: false });
        }
        let dir = self.dir.join(&live.info.id);
        actix::spawn(async move {
            let _ = blocking(move || match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => tracing::warn!("removing {}: {e}", dir.display()),
                _ => {}
            })
            .await;
        });
        tracing::info!(export = %live.info.id, "export deleted");
        Ok(())
    }
}
