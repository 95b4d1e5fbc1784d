//! The listeners: NFS (MOUNT and PORTMAP answered on the same port) and
//! optionally a PORTMAP port (111) for clients that cannot be told the NFS
//! port, such as QEMU's `nfs://` driver and ESXi. The second listener runs
//! the same service, so it answers NFS and MOUNT too.

use crate::fs::ClientView;
use crate::guard::RecordGuard;
use crate::tree::Registry;
use nfs3_server::test_reexports::{process_socket, RPCContext, TransactionTracker};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;

/// Why the NFS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The NFS address could not be bound (in use, not local, or a
    /// privileged port without the right); the config's `nfs_listen`
    /// must name another.
    #[error("cannot listen for NFS on {addr}: {source}; set nfs_listen in the config to a free address")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
}

/// A running NFS server. Dropping it (or [`NfsServer::stop`]) closes
/// the listeners; connections still open see every file handle go stale
/// as exports are removed from the registry.
pub struct NfsServer {
    addr: SocketAddr,
    portmap: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl NfsServer {
    /// Binds `listen` for NFS and, when given, `portmap` for PORTMAP
    /// (a busy portmap port is logged and skipped: clients that can name
    /// the NFS port still work), and serves them on `rt`. Binding is
    /// synchronous, so a caller inside another runtime (an actor) can
    /// start it.
    pub fn start(listen: SocketAddr, portmap: Option<SocketAddr>, registry: Arc<Registry>, rt: &tokio::runtime::Handle) -> Result<NfsServer, ServerError> {
        let bind = |a: SocketAddr| -> std::io::Result<TcpListener> {
            let l = std::net::TcpListener::bind(a)?;
            l.set_nonblocking(true)?;
            let _in = rt.enter();
            TcpListener::from_std(l)
        };
        let nfs = bind(listen).map_err(|source| ServerError::Bind { addr: listen, source })?;
        let addr = nfs.local_addr().map_err(|source| ServerError::Bind { addr: listen, source })?;
        let sem = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut tasks = vec![rt.spawn(accept_loop(nfs, addr.port(), registry.clone(), sem.clone()))];
        let mut pm_addr = None;
        if let Some(pm) = portmap {
            match bind(pm) {
                Ok(l) => {
                    pm_addr = l.local_addr().ok();
                    tasks.push(rt.spawn(accept_loop(l, addr.port(), registry, sem)));
                }
                Err(e) => tracing::warn!("NFS: cannot answer PORTMAP on {pm}: {e}; clients must be given the NFS port {} (nfsport=/mountport=)", addr.port()),
            }
        }
        tracing::info!(%addr, portmap = ?pm_addr, "NFS server listening");
        Ok(NfsServer { addr, portmap: pm_addr, tasks })
    }

    /// The address NFS (with MOUNT and PORTMAP) is served on; the real
    /// port when `listen` asked for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PORTMAP listener's address; `None` when none was asked for or
    /// its port was busy.
    pub fn portmap_addr(&self) -> Option<SocketAddr> {
        self.portmap
    }

    /// Closes the listeners, as dropping does.
    pub fn stop(self) {}
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        tracing::info!(addr = %self.addr, "NFS server stopped");
    }
}

/// Serves NFS connections from any byte stream: what the listeners run
/// for each accepted socket, and what tests and fuzzers drive directly.
#[derive(Clone)]
pub struct Service {
    /// One file-handle generation for all connections: libnfs mounts on
    /// one connection and reads on another with the same handles.
    template: RPCContext<ClientView>,
    registry: Arc<Registry>,
    nfs_port: u16,
}

impl Service {
    /// `nfs_port` is what PORTMAP answers for NFS and MOUNT.
    pub fn new(registry: Arc<Registry>, nfs_port: u16) -> Service {
        let template = RPCContext::test_ctx("/", Arc::new(ClientView { registry: registry.clone(), peer: std::net::Ipv4Addr::UNSPECIFIED.into() }));
        Service { template, registry, nfs_port }
    }

    /// Serves one connection from `peer` until it closes or breaks the
    /// protocol; a peer no export names is refused at once.
    pub async fn serve<S>(&self, stream: S, peer: SocketAddr) -> anyhow::Result<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        if !self.registry.admits(peer.ip()) {
            anyhow::bail!("{peer} is not allowed by any NFS export");
        }
        let mut ctx = self.template.clone();
        ctx.local_port = self.nfs_port;
        ctx.client_addr = peer.to_string();
        ctx.vfs = Arc::new(ClientView { registry: self.registry.clone(), peer: peer.ip() });
        // Per connection, so it goes with the connection.
        ctx.transaction_tracker = Arc::new(TransactionTracker::new(Duration::from_secs(60), 256, 1024));
        process_socket(RecordGuard::new(stream), ctx).await
    }
}

async fn accept_loop(listener: TcpListener, nfs_port: u16, registry: Arc<Registry>, sem: Arc<Semaphore>) {
    let service = Service::new(registry.clone(), nfs_port);
    loop {
        let permit = match sem.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                tracing::warn!("NFS accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !registry.admits(peer.ip()) {
            tracing::warn!(%peer, "NFS: refused a client no export allows");
            drop(socket);
            continue;
        }
        let _ = socket.set_nodelay(true);
        tracing::debug!(%peer, "NFS client connected");
        let service = service.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = service.serve(socket, peer).await {
                tracing::debug!(%peer, "NFS connection ended: {e}");
            }
        });
    }
}
