//! The VMs the daemon runs from backups (instant restore), by name.
//!
//! A `vm-instant-restore` job boots one (`lifeboat_qemu::InstantVm`) and
//! leaves it here; `/api/vms` lists it beside the registered VMs, a VM
//! backup can take it like any QMP VM, and it ends in one of two ways:
//! stopped (`DELETE /api/vms/{name}`: QEMU killed, overlays removed) or
//! migrated back (a `vm-migrate-back` job moves its disks onto local
//! images; it then becomes an ordinary registered VM). While it runs, its
//! snapshot is pinned in its datastore: forget refuses it, gc keeps it.
//!
//! Nothing here outlives the daemon: `stop_all` runs at shutdown, and
//! `sweep` at start removes what a killed daemon left (its QEMUs too).

use crate::datastore::{DatastoreActor, PinSnapshot};
use actix::Addr;
use lifeboat_api_types::{InstantVmInfo, VmSource};
use lifeboat_qemu::InstantVm;
use lifeboat_state::VmEntry;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Live {
    entry: VmEntry,
    info: InstantVmInfo,
    /// None while a migration has it.
    vm: Option<InstantVm>,
    datastore: Addr<DatastoreActor>,
}

impl Live {
    fn unpin(&self, vm: &InstantVm) {
        if let Some(id) = vm.snapshot {
            self.datastore.do_send(PinSnapshot { id, pin: false });
        }
    }
}

#[derive(Clone)]
pub struct InstantVms {
    dir: PathBuf,
    live: Arc<Mutex<BTreeMap<String, Live>>>,
}

impl InstantVms {
    /// `dir` (`<state>/instant`) holds one work directory per VM.
    pub fn new(dir: PathBuf) -> Self {
        InstantVms { dir, live: Default::default() }
    }

    /// The work directory for a VM of this name.
    pub fn workdir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Removes what instant restores of a previous, killed daemon left.
    pub fn sweep(&self) -> Vec<PathBuf> {
        lifeboat_qemu::instant_vm::sweep_stale(&self.dir)
    }

    /// Whether an instant-restored VM of this name runs.
    pub fn contains(&self, name: &str) -> bool {
        self.live.lock().contains_key(name)
    }

    /// Keeps a booted VM; its snapshot is pinned until it ends. A name
    /// already taken gives the VM back (boxed: it is large) to be discarded.
    pub fn insert(&self, name: &str, vm: InstantVm, info: InstantVmInfo, datastore: Addr<DatastoreActor>) -> Result<(), (Box<InstantVm>, String)> {
        let mut live = self.live.lock();
        if live.contains_key(name) {
            return Err((Box::new(vm), format!("an instant-restored VM named {name:?} runs already")));
        }
        if let Some(id) = vm.snapshot {
            datastore.do_send(PinSnapshot { id, pin: true });
        }
        let entry = VmEntry { name: name.to_string(), source: VmSource::Qmp { qmp: vm.qmp.display().to_string(), agent: None }, registered: info.started };
        live.insert(name.to_string(), Live { entry, info, vm: Some(vm), datastore });
        Ok(())
    }

    pub fn entry(&self, name: &str) -> Option<VmEntry> {
        self.live.lock().get(name).map(|l| l.entry.clone())
    }

    pub fn list(&self) -> Vec<(VmEntry, InstantVmInfo)> {
        self.live.lock().values().map(|l| (l.entry.clone(), l.info.clone())).collect()
    }

    pub fn info(&self, name: &str) -> Option<InstantVmInfo> {
        self.live.lock().get(name).map(|l| l.info.clone())
    }

    /// Hands the VM to a migration; it stays listed (as migrating).
    pub fn take_for_migration(&self, name: &str) -> Result<InstantVm, String> {
        let mut live = self.live.lock();
        let l = live.get_mut(name).ok_or_else(|| format!("no instant-restored VM named {name:?}: list them with GET /api/vms"))?;
        let vm = l.vm.take().ok_or_else(|| format!("VM {name:?} is being migrated already"))?;
        l.info.migrating = true;
        Ok(vm)
    }

    /// A migration ended: on success the VM leaves this list (the caller
    /// registers it as an ordinary VM) and its snapshot is released; on
    /// failure it goes back to running from the datastore.
    pub fn end_migration(&self, name: &str, vm: InstantVm, migrated: bool) -> Option<u32> {
        let mut live = self.live.lock();
        if migrated {
            if let Some(l) = live.remove(name) {
                l.unpin(&vm);
            }
            drop(live);
            return vm.release();
        }
        match live.get_mut(name) {
            Some(l) => {
                l.info.migrating = false;
                l.vm = Some(vm);
            }
            None => vm.discard(),
        }
        None
    }

    /// Powers the VM off and removes its overlays.
    pub fn stop(&self, name: &str) -> Result<(), String> {
        let (l, vm) = {
            let mut live = self.live.lock();
            let l = live.get(name).ok_or_else(|| format!("no instant-restored VM named {name:?}"))?;
            if l.vm.is_none() {
                return Err(format!("VM {name:?} is being migrated back; wait for the job to end"));
            }
            let mut l = live.remove(name).expect("checked above");
            let vm = l.vm.take().expect("checked above");
            (l, vm)
        };
        l.unpin(&vm);
        vm.discard();
        tracing::info!(vm = name, "instant-restored VM stopped, its overlays removed");
        Ok(())
    }

    /// At shutdown: every VM still running from a backup is stopped (a
    /// VM whose disks are overlays of a daemon that is gone cannot run).
    pub fn stop_all(&self) {
        let names: Vec<String> = self.live.lock().keys().cloned().collect();
        for n in names {
            let _ = self.stop(&n);
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
