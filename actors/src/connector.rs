//! `ConnectorActor`: the QEMU connector. Owns the registry of VMs (kept
//! by `lifeboat_state::VmStore`) and reports their live inventory, read
//! over QMP by `lifeboat_qemu` on the blocking pool. The registry's
//! entries name their source by kind, so a libvirt connector can sit
//! beside this one.
//!
//! A QMP socket serves one client at a time: while a backup holds a
//! VM's monitor (see `VmRegistry::begin`), listing shows that VM's last
//! inventory instead of waiting for the socket.

use crate::datastore::blocking;
use actix::prelude::*;
use chrono::Utc;
use lifeboat_api_types::{VmDiskInfo, VmInfo, VmSource, VmStatus};
use lifeboat_state::{StateError, VmEntry, VmStore};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long an inventory may wait for a VM's monitor.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{0}")]
    Invalid(String),
    /// The VM's socket did not answer (a 4xx: the caller named it).
    #[error("{0}")]
    Unreachable(String),
    #[error("VM {0:?} is not registered: list them with GET /api/vms")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("saving the VM registry: {0}")]
    State(String),
}

impl From<StateError> for ConnectorError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Invalid(m) => ConnectorError::Invalid(m),
            StateError::Conflict(m) => ConnectorError::Conflict(m),
            StateError::NotFound(m) => ConnectorError::NotFound(m),
            e => ConnectorError::State(e.to_string()),
        }
    }
}

/// The registered VMs and which of them a job is using; shared by the
/// connector (inventory) and the jobs actor (VM backups).
#[derive(Clone)]
pub struct VmRegistry {
    store: Arc<VmStore>,
    busy: Arc<Mutex<HashMap<String, String>>>,
    /// VMs running from backups: listed and backed up like registered
    /// ones, never saved in the registry's file.
    instant: crate::instant::InstantVms,
}

/// Marks a VM busy until dropped.
#[derive(Debug)]
pub struct VmBusy {
    name: String,
    busy: Arc<Mutex<HashMap<String, String>>>,
}

impl Drop for VmBusy {
    fn drop(&mut self) {
        self.busy.lock().remove(&self.name);
    }
}

impl VmRegistry {
    pub fn new(store: Arc<VmStore>, instant: crate::instant::InstantVms) -> Self {
        VmRegistry { store, busy: Default::default(), instant }
    }

    pub fn get(&self, name: &str) -> Option<VmEntry> {
        self.store.get(name).or_else(|| self.instant.entry(name))
    }

    pub fn instant(&self) -> &crate::instant::InstantVms {
        &self.instant
    }

    /// Registers a VM in the registry's file (after a migration back).
    pub fn add(&self, entry: VmEntry) -> Result<(), StateError> {
        self.store.add(entry)
    }

    /// Claims the VM for `what` (a job id); refused while another job has it.
    pub fn begin(&self, name: &str, what: &str) -> Result<VmBusy, String> {
        let mut b = self.busy.lock();
        if let Some(other) = b.get(name) {
            return Err(format!("VM {name:?} is busy with job {other}; wait for it to finish"));
        }
        b.insert(name.to_string(), what.to_string());
        Ok(VmBusy { name: name.to_string(), busy: self.busy.clone() })
    }

    fn busy_with(&self, name: &str) -> Option<String> {
        self.busy.lock().get(name).cloned()
    }
}

pub struct ConnectorActor {
    registry: VmRegistry,
    /// The last inventory of each VM, shown while it is busy.
    last: Arc<Mutex<HashMap<String, VmInfo>>>,
}

impl ConnectorActor {
    pub fn new(registry: VmRegistry) -> Self {
        ConnectorActor { registry, last: Default::default() }
    }
}

impl Actor for ConnectorActor {
    type Context = Context<Self>;
}

fn status_of(state: &str) -> VmStatus {
    match state {
        "running" => VmStatus::Running,
        "shutdown" | "guest-panicked" | "internal-error" => VmStatus::Stopped,
        _ => VmStatus::Paused,
    }
}

fn skeleton(e: &VmEntry) -> VmInfo {
    VmInfo {
        name: e.name.clone(),
        source: e.source.clone(),
        registered: e.registered,
        status: VmStatus::Unreachable,
        error: None,
        qemu_name: String::new(),
        cpus: 0,
        memory_mib: 0,
        disks: Vec::new(),
        instant: None,
    }
}

/// Asks the VM's hypervisor what it is now (blocking).
pub fn probe(e: &VmEntry) -> VmInfo {
    let mut info = skeleton(e);
    match &e.source {
        VmSource::Qmp { qmp, .. } => {
            let r = lifeboat_qemu::Qmp::connect_timeout(Path::new(qmp), PROBE_TIMEOUT).and_then(|mut q| {
                let (md, nodes) = lifeboat_qemu::capture(&mut q)?;
                let state = lifeboat_qemu::inventory::run_state(&mut q)?;
                Ok((md, nodes, state))
            });
            match r {
                Ok((md, nodes, state)) => {
                    info.status = status_of(&state);
                    info.qemu_name = md.name;
                    info.cpus = md.cpus;
                    info.memory_mib = md.memory_mib;
                    info.disks = nodes.into_iter().map(|d| VmDiskInfo { id: d.device, size: d.size, format: d.format, file: d.filename }).collect();
                }
                Err(err) => info.error = Some(err.to_string()),
            }
        }
        // One domain's state, not the whole list: `list_domains` asks
        // libvirt once per domain.
        VmSource::Libvirt { uri, domain } => match lifeboat_libvirt::domain_state(uri, domain).and_then(|state| Ok((state, lifeboat_libvirt::capture(uri, domain)?.0))) {
            Ok((state, md)) => {
                info.status = match state.as_str() {
                    "running" => VmStatus::Running,
                    "paused" => VmStatus::Paused,
                    _ => VmStatus::Stopped,
                };
                info.qemu_name = md.name;
                info.cpus = md.cpus;
                info.memory_mib = md.memory_mib;
                info.disks = md.disks.into_iter().map(|d| VmDiskInfo { id: d.id, size: d.size, format: d.format, file: d.source.unwrap_or_default() }).collect();
            }
            Err(err) => info.error = Some(err.to_string()),
        },
    }
    info
}

/// Every registered VM with its inventory, by name.
#[derive(Message)]
#[rtype(result = "Vec<VmInfo>")]
pub struct ListVms;

impl Handler<ListVms> for ConnectorActor {
    type Result = ResponseFuture<Vec<VmInfo>>;
    fn handle(&mut self, _: ListVms, _: &mut Context<Self>) -> Self::Result {
        let registry = self.registry.clone();
        let last = self.last.clone();
        let mut entries: Vec<(VmEntry, Option<lifeboat_api_types::InstantVmInfo>)> = registry.store.list().into_iter().map(|e| (e, None)).collect();
        entries.extend(registry.instant.list().into_iter().map(|(e, i)| (e, Some(i))));
        entries.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Box::pin(async move {
            // spawn_blocking starts each probe at once: they run side by side.
            let probes: Vec<_> = entries
                .into_iter()
                .map(|(e, instant)| {
                    let (registry, last) = (registry.clone(), last.clone());
                    tokio::task::spawn_blocking(move || {
                        let mut info = match registry.busy_with(&e.name) {
                            Some(job) => {
                                let mut info = last.lock().get(&e.name).cloned().unwrap_or_else(|| VmInfo { status: VmStatus::Running, ..skeleton(&e) });
                                info.error = Some(format!("job {job} holds the VM's monitor; this is the last inventory"));
                                info
                            }
                            None => {
                                let info = probe(&e);
                                if info.status != VmStatus::Unreachable {
                                    last.lock().insert(e.name.clone(), info.clone());
                                }
                                info
                            }
                        };
                        info.instant = instant;
                        info
                    })
                })
                .collect();
            let mut out = Vec::new();
            for p in probes {
                if let Ok(i) = p.await {
                    out.push(i);
                }
            }
            out
        })
    }
}

/// Registers a VM after checking it answers; `name` defaults to the
/// name QEMU reports.
#[derive(Message)]
#[rtype(result = "Result<VmInfo, ConnectorError>")]
pub struct RegisterVm {
    pub name: Option<String>,
    pub source: VmSource,
}

impl Handler<RegisterVm> for ConnectorActor {
    type Result = ResponseFuture<Result<VmInfo, ConnectorError>>;
    fn handle(&mut self, msg: RegisterVm, _: &mut Context<Self>) -> Self::Result {
        let registry = self.registry.clone();
        let last = self.last.clone();
        Box::pin(async move {
            match &msg.source {
                VmSource::Qmp { qmp, agent } => {
                    for (p, what) in [(Some(qmp), "qmp"), (agent.as_ref(), "agent")] {
                        if let Some(p) = p {
                            if !p.starts_with('/') {
                                return Err(ConnectorError::Invalid(format!("{what} socket {p:?} must be an absolute path on the appliance")));
                            }
                        }
                    }
                }
                VmSource::Libvirt { uri, domain } => {
                    if uri.is_empty() || domain.is_empty() {
                        return Err(ConnectorError::Invalid("a libvirt VM needs \"uri\" (e.g. qemu:///system) and \"domain\"".into()));
                    }
                }
            }
            blocking(move || {
                let probe_entry = VmEntry { name: msg.name.clone().unwrap_or_default(), source: msg.source.clone(), registered: Utc::now() };
                let mut info = probe(&probe_entry);
                if info.status == VmStatus::Unreachable {
                    let why = info.error.unwrap_or_default();
                    return Err(ConnectorError::Unreachable(match &msg.source {
                        VmSource::Qmp { qmp, .. } => {
                            format!("cannot reach the VM at QMP socket {qmp}: {why}; start QEMU with -qmp unix:{qmp},server=on,wait=off (or a second -mon for lifeboat) and register again")
                        }
                        VmSource::Libvirt { uri, domain } => format!("cannot reach libvirt domain {domain} at {uri}: {why}; check `virsh -c {uri} dominfo {domain}` and register again"),
                    }));
                }
                let name = match msg.name {
                    Some(n) => n,
                    None if !info.qemu_name.is_empty() => sanitize(&info.qemu_name),
                    None => return Err(ConnectorError::Invalid("QEMU reports no name for this VM (-name): give one in \"name\"".into())),
                };
                if registry.instant.contains(&name) {
                    return Err(ConnectorError::Conflict(format!("an instant-restored VM is named {name:?}; give another name")));
                }
                let entry = VmEntry { name: name.clone(), source: msg.source, registered: probe_entry.registered };
                registry.store.add(entry)?;
                info.name = name.clone();
                last.lock().insert(name.clone(), info.clone());
                tracing::info!(vm = %name, "VM registered");
                Ok(info)
            })
            .await
            .unwrap_or_else(|e| Err(ConnectorError::State(e)))
        })
    }
}

/// A QEMU name as a registry name: anything but letters, digits, `-`
/// and `_` becomes `-`.
fn sanitize(n: &str) -> String {
    let s: String = n.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).take(64).collect();
    s.trim_start_matches('-').to_string()
}

#[derive(Message)]
#[rtype(result = "Result<(), ConnectorError>")]
pub struct UnregisterVm(pub String);

impl Handler<UnregisterVm> for ConnectorActor {
    type Result = ResponseFuture<Result<(), ConnectorError>>;
    fn handle(&mut self, msg: UnregisterVm, _: &mut Context<Self>) -> Self::Result {
        let registry = self.registry.clone();
        let last = self.last.clone();
        Box::pin(async move {
            blocking(move || {
                // An instant-restored VM is ours: removing it stops it.
                if registry.instant.contains(&msg.0) {
                    last.lock().remove(&msg.0);
                    return registry.instant.stop(&msg.0).map_err(ConnectorError::Conflict);
                }
                registry.store.remove(&msg.0).map_err(|e| match e {
                    StateError::NotFound(_) => ConnectorError::NotFound(msg.0.clone()),
                    e => e.into(),
                })?;
                last.lock().remove(&msg.0);
                tracing::info!(vm = %msg.0, "VM unregistered");
                Ok(())
            })
            .await
            .unwrap_or_else(|e| Err(ConnectorError::State(e)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_states() {
        assert_eq!(sanitize("lifeboat test.guest"), "lifeboat-test-guest");
        assert_eq!(status_of("running"), VmStatus::Running);
        assert_eq!(status_of("paused"), VmStatus::Paused);
        assert_eq!(status_of("shutdown"), VmStatus::Stopped);
    }

    #[test]
    fn busy_is_exclusive_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let r = VmRegistry::new(Arc::new(VmStore::open(dir.path()).unwrap()), crate::instant::InstantVms::new(dir.path().join("instant")));
        let g = r.begin("a", "job1").unwrap();
        assert!(r.begin("a", "job2").unwrap_err().contains("job1"));
        drop(g);
        assert!(r.begin("a", "job3").is_ok());
    }
}
