//! The actor layer: one actix actor per long-lived owner of state, as
//! DESIGN.md lists them. Actors are thin: they own handles and route
//! messages; the work is done by the crates (one file per job kind under
//! `work/`), and anything blocking (hashing, compression, file IO,
//! RocksDB) runs on tokio's blocking pool, never on an arbiter thread.
//!
//! `Datastore` (one per datastore) runs the work; `Jobs` owns job
//! lifecycles and history; `Scheduler` starts due schedules; `Events`
//! fans state changes out to the API's event stream and the audit log;
//! `Notifier` mails job reports; `Health` samples the machine;
//! `Ingest` owns remote agents' upload sessions; `Connector` the
//! registered VMs and their inventory (QMP) with the VMs running from
//! backups (`instant`); `Export` the NBD exports of backed-up disks;
//! `Lab` the verification lab's runs (listed while they run, stopped
//! cleanly with the daemon, swept after a crash); `cdp::Replicas` the
//! CDP protections running as jobs (their live journals for the API).

pub mod cdp;
pub mod connector;
pub mod datastore;
pub mod events;
pub mod export;
pub mod health;
pub mod ingest;
pub mod instant;
pub mod jobs;
pub mod lab;
pub mod notifier;
pub mod scheduler;
pub mod work;

pub use connector::{ConnectorActor, VmRegistry};
pub use datastore::{DatastoreActor, ListSnapshots, RunBackup};
pub use events::EventsActor;
pub use export::ExportActor;
pub use health::{GetHealth, GetHealthHistory, HealthActor, WatchDatastore};
pub use ingest::IngestActor;
pub use jobs::JobsActor;
pub use lab::LabActor;
pub use notifier::{MailJobReport, MailOutcome, NotifierActor, SendTestMail, SetSmtpSettings};
pub use scheduler::SchedulerActor;

use actix::Addr;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The open datastores by name. Shared by the API, the jobs and the
/// scheduler; changed only when an admin adds a datastore.
#[derive(Clone, Default)]
pub struct Datastores(Arc<RwLock<BTreeMap<String, Addr<DatastoreActor>>>>);

impl Datastores {
    pub fn get(&self, name: &str) -> Option<Addr<DatastoreActor>> {
        self.0.read().get(name).cloned()
    }

    pub fn insert(&self, name: &str, addr: Addr<DatastoreActor>) {
        self.0.write().insert(name.to_string(), addr);
    }

    pub fn names(&self) -> Vec<String> {
        self.0.read().keys().cloned().collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.read().contains_key(name)
    }
}
