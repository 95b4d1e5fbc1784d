//! Schedules, kept in `<state>/schedules.json`. Cron syntax and time
//! zone are checked by the scheduler actor's crate before a schedule is
//! stored; this file only keeps them.

use crate::{random_hex, read_json, write_json, Result, StateError};
use lifeboat_api_types::ScheduleSpec;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A schedule as kept in `schedules.json`: its spec with the id it
/// was given (the spec's fields sit flat beside `id` in the JSON).
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredSchedule {
    /// Random id (12 hex digits), given at creation, never changed.
    pub id: String,
    /// What to run and when; its `name` is unique among schedules.
    #[serde(flatten)]
    pub spec: ScheduleSpec,
}

/// The schedules, held in memory and written whole to
/// `<state>/schedules.json` (mode 0640) on every change.
pub struct ScheduleStore {
    path: PathBuf,
    items: Mutex<Vec<StoredSchedule>>,
}

impl ScheduleStore {
    /// Reads `<state_dir>/schedules.json` (none yet: no schedules).
    pub fn open(state_dir: &Path) -> Result<ScheduleStore> {
        let path = state_dir.join("schedules.json");
        let items = read_json(&path)?.unwrap_or_default();
        Ok(ScheduleStore { path, items: Mutex::new(items) })
    }

    /// Every schedule, in creation order.
    pub fn list(&self) -> Vec<StoredSchedule> {
        self.items.lock().clone()
    }

    /// The schedule with id `id`, if any.
    pub fn get(&self, id: &str) -> Option<StoredSchedule> {
        self.items.lock().iter().find(|s| s.id == id).cloned()
    }

    fn commit(&self, items: &mut Vec<StoredSchedule>, next: Vec<StoredSchedule>) -> Result<()> {
        write_json(&self.path, &next, 0o640)?;
        *items = next;
        Ok(())
    }

    /// Stores a new schedule under a fresh id; `Conflict` if one of
    /// that name exists. The spec is not checked here.
    pub fn create(&self, spec: ScheduleSpec) -> Result<StoredSchedule> {
        let mut items = self.items.lock();
        if items.iter().any(|s| s.spec.name == spec.name) {
            return Err(StateError::Conflict(format!("a schedule named {:?} exists already", spec.name)));
        }
        let s = StoredSchedule { id: random_hex(6), spec };
        let mut next = items.clone();
        next.push(s.clone());
        self.commit(&mut items, next)?;
        Ok(s)
    }

    /// Replaces the spec of schedule `id`, keeping its id; `NotFound`
    /// if there is none, `Conflict` if another schedule has the new name.
    pub fn update(&self, id: &str, spec: ScheduleSpec) -> Result<StoredSchedule> {
        let mut items = self.items.lock();
        if items.iter().any(|s| s.spec.name == spec.name && s.id != id) {
            return Err(StateError::Conflict(format!("a schedule named {:?} exists already", spec.name)));
        }
        let mut next = items.clone();
        let s = next.iter_mut().find(|s| s.id == id).ok_or_else(|| StateError::NotFound(format!("schedule {id}")))?;
        s.spec = spec;
        let out = s.clone();
        self.commit(&mut items, next)?;
        Ok(out)
    }

    /// Deletes schedule `id`; `NotFound` if there is none.
    pub fn delete(&self, id: &str) -> Result<()> {
        let mut items = self.items.lock();
        if !items.iter().any(|s| s.id == id) {
            return Err(StateError::NotFound(format!("schedule {id}")));
        }
        let next = items.iter().filter(|s| s.id != id).cloned().collect();
        self.commit(&mut items, next)
    }
}
