//! The actor layer: one actix actor per long-lived owner of state, as
//! DESIGN.md lists them. Actors are thin: they own handles and route
//! messages; the work is done by the crates, and anything blocking
//! (hashing, compression, file IO, RocksDB) runs on tokio's blocking pool,
//! never on an arbiter thread.
//!
//! So far: `DatastoreActor`. The daemon (`lifeboat serve`) adds Jobs,
//! Scheduler, Events, Ingest, Notifier and Health on top of it.

pub mod datastore;
pub mod health;
pub mod notifier;

pub use datastore::{DatastoreActor, ListSnapshots, RunBackup};
pub use health::{GetHealth, HealthActor, SetHealthDatastores};
pub use notifier::{JobFinished, MailOutcome, MailPolicy, NotifierActor, SendTestMail, SetSmtpSettings};
