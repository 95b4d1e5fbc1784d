//! Lifeboat's REST API: actix-web over the actors. TLS by default with
//! a self-signed certificate made on first start; plain HTTP only on a
//! loopback address. Every route but login and health wants a bearer
//! token (see `auth`); errors are `ApiError` documents (see `error`).
//! `daemon` starts the actor system the API sits on.

pub mod auth;
pub mod daemon;
pub mod error;
pub mod openapi;
pub mod routes;
pub mod tls;

use actix::Addr;
use lifeboat_actors::{ConnectorActor, Datastores, EventsActor, ExportActor, HealthActor, IngestActor, JobsActor, NotifierActor, SchedulerActor};
use lifeboat_state::{AuthStore, SettingsStore};
use std::path::PathBuf;
use std::sync::Arc;

/// What every handler can reach (actix `web::Data`).
pub struct ApiState {
    pub auth: Arc<AuthStore>,
    pub datastores: Datastores,
    pub jobs: Addr<JobsActor>,
    pub scheduler: Addr<SchedulerActor>,
    pub events: Addr<EventsActor>,
    /// Remote agents' upload sessions.
    pub ingest: Addr<IngestActor>,
    pub notifier: Addr<NotifierActor>,
    pub health: Addr<HealthActor>,
    /// Registered VMs and their inventory.
    pub connector: Addr<ConnectorActor>,
    /// NBD exports of backed-up disks.
    pub exports: Addr<ExportActor>,
    pub settings: Arc<SettingsStore>,
    /// Lab definitions (`/api/labs`).
    pub labs: Arc<lifeboat_state::LabStore>,
    /// The lab runs in progress.
    pub lab: Addr<lifeboat_actors::LabActor>,
    /// The CDP protections running now (their live journals).
    pub replicas: lifeboat_actors::cdp::Replicas,
    pub state_dir: PathBuf,
    /// Where jobs may read and write on the appliance (lifeboat.toml's
    /// roots, protected trees): checked here before a job exists.
    pub confine: lifeboat_state::confine::SharedConfinement,
    pub tz: chrono_tz::Tz,
    /// SHA-256 of the API's TLS certificate (`GET /api/settings/tls`).
    pub tls_fingerprint: String,
    /// Serializes datastore creation (check-then-insert).
    pub datastore_create: tokio::sync::Mutex<()>,
}

/// The app: routes, JSON error handlers, a JSON 404.
pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.app_data(error::json_config()).app_data(error::path_config()).app_data(error::query_config()).configure(routes::configure);
}

pub async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, error::ApiErr> {
    Err(error::ApiErr::NotFound(format!("no such API route: {} {}", req.method(), req.path())))
}
