//! Lab definitions (`/api/labs`), kept in `<state>/labs.json`: which VM
//! backups boot together in a verification lab, with which probes, and
//! when (on demand, by schedule, after every backup of one of them).

use crate::{read_json, write_json, Result, StateError};
use lifeboat_api_types::LabDefinition;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};

/// The lab definitions, held in memory and written whole to
/// `<state>/labs.json` (mode 0640, sorted by name) on every change.
pub struct LabStore {
    path: PathBuf,
    items: Mutex<Vec<LabDefinition>>,
}

impl std::fmt::Debug for LabStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabStore").field("path", &self.path).finish()
    }
}

impl LabStore {
    /// Reads `<state_dir>/labs.json` (none yet: no labs).
    pub fn open(state_dir: &Path) -> Result<LabStore> {
        let path = state_dir.join("labs.json");
        let items = read_json(&path)?.unwrap_or_default();
        Ok(LabStore { path, items: Mutex::new(items) })
    }

    /// Every definition, sorted by name.
    pub fn list(&self) -> Vec<LabDefinition> {
        self.items.lock().clone()
    }

    /// The definition named `name`, if any.
    pub fn get(&self, name: &str) -> Option<LabDefinition> {
        self.items.lock().iter().find(|l| l.name == name).cloned()
    }

    /// Adds a definition, or replaces the one of that name when `replace`.
    /// Refuses a bad name or no VMs (`Invalid`), an existing name when
    /// adding (`Conflict`), a missing one when replacing (`NotFound`).
    pub fn put(&self, lab: LabDefinition, replace: bool) -> Result<()> {
        crate::config::validate_name(&lab.name).map_err(StateError::Invalid)?;
        if lab.vms.is_empty() {
            return Err(StateError::Invalid("a lab needs at least one VM".into()));
        }
        let mut items = self.items.lock();
        let exists = items.iter().any(|l| l.name == lab.name);
        if exists && !replace {
            return Err(StateError::Conflict(format!("a lab named {:?} exists already", lab.name)));
        }
        if !exists && replace {
            return Err(StateError::NotFound(format!("lab {:?}", lab.name)));
        }
        let mut next: Vec<LabDefinition> = items.iter().filter(|l| l.name != lab.name).cloned().collect();
        next.push(lab);
        next.sort_by(|a, b| a.name.cmp(&b.name));
        write_json(&self.path, &next, 0o640)?;
        *items = next;
        Ok(())
    }

    /// Deletes the definition named `name`; `NotFound` if there is none.
    pub fn remove(&self, name: &str) -> Result<()> {
        let mut items = self.items.lock();
        if !items.iter().any(|l| l.name == name) {
            return Err(StateError::NotFound(format!("lab {name:?}")));
        }
        let next: Vec<LabDefinition> = items.iter().filter(|l| l.name != name).cloned().collect();
        write_json(&self.path, &next, 0o640)?;
        *items = next;
        Ok(())
    }

    /// The labs to run after a backup of VM `vm_name` (the name its
    /// snapshots carry, `vm:NAME`) into `datastore` succeeded.
    pub fn after_backup_of(&self, datastore: &str, vm_name: &str) -> Vec<LabDefinition> {
        let want = format!("vm:{vm_name}");
        self.items.lock().iter().filter(|l| l.after_backup && l.datastore == datastore && l.vms.iter().any(|v| v.snapshot == want)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_api_types::{LabVmSpec, NotifyWhen};

    fn lab(name: &str, vm: &str, after: bool) -> LabDefinition {
        LabDefinition {
            name: name.into(),
            datastore: "default".into(),
            vms: vec![LabVmSpec { snapshot: format!("vm:{vm}"), ip: None, delay: 0 }],
            probes: "ping".into(),
            boot_timeout: 60,
            after_backup: after,
            network: Default::default(),
            notify: NotifyWhen::Failure,
        }
    }

    #[test]
    fn put_replace_remove_persist_and_trigger() {
        let dir = tempfile::tempdir().unwrap();
        let s = LabStore::open(dir.path()).unwrap();
        s.put(lab("web", "web1", true), false).unwrap();
        assert!(matches!(s.put(lab("web", "web1", true), false), Err(StateError::Conflict(_))));
        assert!(matches!(s.put(lab("db", "db1", false), true), Err(StateError::NotFound(_))));
        assert!(matches!(s.put(lab("a/b", "x", false), false), Err(StateError::Invalid(_))));
        s.put(lab("db", "db1", false), false).unwrap();
        assert_eq!(s.after_backup_of("default", "web1").len(), 1);
        assert!(s.after_backup_of("default", "db1").is_empty() && s.after_backup_of("other", "web1").is_empty());
        s.put(lab("web", "web1", false), true).unwrap();
        assert!(s.after_backup_of("default", "web1").is_empty());
        let again = LabStore::open(dir.path()).unwrap();
        assert_eq!(again.list().len(), 2);
        again.remove("db").unwrap();
        assert!(matches!(again.remove("db"), Err(StateError::NotFound(_))));
        assert_eq!(LabStore::open(dir.path()).unwrap().list().len(), 1);
    }
}
