//! VMs registered with the daemon, kept in `<state>/vms.json`: a name
//! and where the VM is reached (`VmSource`, tagged so libvirt entries can
//! sit beside QMP ones). The live inventory is not stored: the connector
//! asks the hypervisor each time.

use crate::{read_json, write_json, Result, StateError};
use chrono::{DateTime, Utc};
use lifeboat_api_types::VmSource;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One registered VM, an element of `vms.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEntry {
    /// The name the API and CLI use for it (checked by `validate_name`,
    /// unique); not necessarily the hypervisor's name.
    pub name: String,
    /// How the VM is reached (a QMP socket, a libvirt domain ...);
    /// one VM cannot be registered twice under different names.
    pub source: VmSource,
    /// When it was registered.
    pub registered: DateTime<Utc>,
}

/// The registered VMs, held in memory and written whole to
/// `<state>/vms.json` (mode 0640) on every change.
pub struct VmStore {
    path: PathBuf,
    items: Mutex<Vec<VmEntry>>,
}

impl VmStore {
    /// Reads `<state_dir>/vms.json` (none yet: no VMs).
    pub fn open(state_dir: &Path) -> Result<VmStore> {
        let path = state_dir.join("vms.json");
        let items = read_json(&path)?.unwrap_or_default();
        Ok(VmStore { path, items: Mutex::new(items) })
    }

    /// Every registered VM, in registration order.
    pub fn list(&self) -> Vec<VmEntry> {
        self.items.lock().clone()
    }

    /// The VM registered as `name`, if any.
    pub fn get(&self, name: &str) -> Option<VmEntry> {
        self.items.lock().iter().find(|v| v.name == name).cloned()
    }

    /// Registers a VM: `Invalid` for a bad name, `Conflict` if the name
    /// or the same source is registered already.
    pub fn add(&self, entry: VmEntry) -> Result<()> {
        crate::config::validate_name(&entry.name).map_err(StateError::Invalid)?;
        let mut items = self.items.lock();
        if items.iter().any(|v| v.name == entry.name) {
            return Err(StateError::Conflict(format!("a VM named {:?} is registered already; remove it first or choose another name", entry.name)));
        }
        if let Some(other) = items.iter().find(|v| v.source == entry.source) {
            return Err(StateError::Conflict(format!("this VM is registered already as {:?}", other.name)));
        }
        let mut next = items.clone();
        next.push(entry);
        write_json(&self.path, &next, 0o640)?;
        *items = next;
        Ok(())
    }

    /// Unregisters VM `name` and returns its entry; `NotFound` if there
    /// is none. Its backups stay.
    pub fn remove(&self, name: &str) -> Result<VmEntry> {
        let mut items = self.items.lock();
        let gone = items.iter().find(|v| v.name == name).cloned().ok_or_else(|| StateError::NotFound(format!("VM {name:?}")))?;
        let next: Vec<VmEntry> = items.iter().filter(|v| v.name != name).cloned().collect();
        write_json(&self.path, &next, 0o640)?;
        *items = next;
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_remove_persist() {
        let dir = tempfile::tempdir().unwrap();
        let s = VmStore::open(dir.path()).unwrap();
        let src = VmSource::Qmp { qmp: "/run/a.sock".into(), agent: None };
        s.add(VmEntry { name: "a".into(), source: src.clone(), registered: Utc::now() }).unwrap();
        assert!(matches!(s.add(VmEntry { name: "a".into(), source: VmSource::Qmp { qmp: "/b".into(), agent: None }, registered: Utc::now() }), Err(StateError::Conflict(_))));
        assert!(matches!(s.add(VmEntry { name: "b".into(), source: src.clone(), registered: Utc::now() }), Err(StateError::Conflict(_))));
        assert!(matches!(s.add(VmEntry { name: "a/b".into(), source: src, registered: Utc::now() }), Err(StateError::Invalid(_))));
        let text = std::fs::read_to_string(dir.path().join("vms.json")).unwrap();
        assert!(text.contains("\"kind\": \"qmp\""), "{text}");
        let s = VmStore::open(dir.path()).unwrap();
        assert_eq!(s.list().len(), 1);
        s.remove("a").unwrap();
        assert!(matches!(s.remove("a"), Err(StateError::NotFound(_))));
        assert!(VmStore::open(dir.path()).unwrap().list().is_empty());
    }
}
