//! `lifeboat serve`: opens the datastores, starts the actors, then
//! serves the API until SIGINT/SIGTERM. The binary calls `run` inside an
//! actix `System`.

use crate::ApiState;
use actix::Actor;
use actix_web::{web, App, HttpServer};
use anyhow::{Context, Result};
use lifeboat_actors::{ConnectorActor, DatastoreActor, Datastores, EventsActor, ExportActor, HealthActor, IngestActor, JobsActor, LabActor, NotifierActor, SchedulerActor, VmRegistry};
use lifeboat_state::{AuthStore, Config, Confinement, DatastoreEntry, JobStore, ScheduleStore, SettingsStore, VmStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the daemon tells its starter once it listens.
pub struct Started {
    pub https: std::net::SocketAddr,
    pub http: Option<std::net::SocketAddr>,
    pub fingerprint: String,
    /// Answers `GetHealth` while the actor system works (the service
    /// watchdog asks it).
    pub health: actix::Addr<HealthActor>,
}

/// How often the health actor samples procfs.
const HEALTH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens (or, for a new or empty directory, creates) a datastore and
/// starts its actor.
pub async fn open_datastore(entry: &DatastoreEntry, tz: chrono_tz::Tz) -> Result<actix::Addr<DatastoreActor>, String> {
    prepare_datastore(entry.clone(), NewDatastore::default(), tz).await
}

/// How `POST /api/datastores` makes a datastore that is not there yet.
#[derive(Default)]
pub struct NewDatastore {
    /// Refuse forget, snapshot deletion and gc from the start.
    pub append_only: bool,
    /// Encrypt it: the password opens one key slot; a random key file
    /// (`entry.key_file`, made here) opens another, which the daemon uses.
    pub password: Option<String>,
}

/// Opens the datastore of `entry`, or makes it (as `new` says) where its
/// directory is missing or empty.
pub async fn prepare_datastore(entry: DatastoreEntry, new: NewDatastore, tz: chrono_tz::Tz) -> Result<actix::Addr<DatastoreActor>, String> {
    let name = entry.name.clone();
    let ds = lifeboat_actors::datastore::blocking(move || -> Result<lifeboat_store::Datastore, String> {
        let e = entry;
        let empty = match std::fs::read_dir(&e.path) {
            Ok(mut rd) => rd.next().is_none(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => true,
            Err(err) => return Err(format!("{}: {err}", e.path.display())),
        };
        let key = e.key_file.clone().map(lifeboat_store::KeySource::KeyFile);
        let password = new.password.map(lifeboat_store::KeySource::passphrase);
        let r = if empty {
            let config = lifeboat_store::DatastoreConfig { append_only: new.append_only, ..Default::default() };
            match (&password, &key) {
                (Some(pw), Some(k)) => lifeboat_store::Datastore::init_encrypted(&e.path, config, pw).and_then(|_| {
                    lifeboat_store::Datastore::add_key(&e.path, pw, k)?;
                    lifeboat_store::Datastore::open_with_key(&e.path, k)
                }),
                (None, Some(_)) => return Err(format!("{}: no datastore there to unlock with the key file", e.path.display())),
                (_, None) => lifeboat_store::Datastore::init_with(&e.path, config),
            }
        } else {
            if new.append_only || password.is_some() {
                return Err(format!("{} holds a datastore already: append-only and encryption are chosen when a datastore is made (add it without them)", e.path.display()));
            }
            lifeboat_store::Datastore::open_with(&e.path, key.as_ref())
        };
        r.map_err(|err| format!("datastore {:?}: {err}", e.name))
    })
    .await??;
    Ok(DatastoreActor::named(&name, Arc::new(ds), tz).start())
}

/// Writes a random key file for the datastore `name` into
/// `<state_dir>/keys/` (root only) and returns its path.
pub fn new_key_file(state_dir: &Path, name: &str) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = state_dir.join("keys");
    ensure_private_dir(&dir)?;
    let path = dir.join(format!("{name}.key"));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).with_context(|| format!("creating the key file {}", path.display()))?;
    f.write_all(lifeboat_state::random_hex(32).as_bytes())?;
    f.sync_all()?;
    Ok(path)
}

fn ensure_private_dir(p: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(p).with_context(|| format!("creating the state directory {}", p.display()))
}

/// Sets a random admin password on first start and leaves it, readable
/// by root only, in `initial-admin-password` (never in the log).
fn first_start_password(auth: &AuthStore, state_dir: &Path) -> Result<()> {
    if auth.has_admin_password() {
        return Ok(());
    }
    let pw = lifeboat_state::random_hex(12);
    auth.set_admin_password(&pw)?;
    let p = state_dir.join("initial-admin-password");
    lifeboat_state::write_atomic(&p, format!("{pw}\n").as_bytes(), 0o600)?;
    tracing::warn!(path = %p.display(), "no admin password was set: a random one was written to this file; change it with `lifeboat admin password` or the console");
    Ok(())
}

pub async fn run(config: Config, on_ready: impl FnOnce(&Started)) -> Result<()> {
    let tz = lifeboat_actors::scheduler::parse_timezone(&config.timezone).map_err(anyhow::Error::msg)?;
    let state_dir = config.state_dir.clone();
    // Again: `--state-dir` may have moved the state under a root.
    config.validate().map_err(|m| anyhow::anyhow!("{}: {m}", config.loaded_from.as_deref().unwrap_or(Path::new("the config")).display()))?;
    ensure_private_dir(&state_dir)?;
    let auth = Arc::new(AuthStore::open(&state_dir, config.session_minutes)?);
    first_start_password(&auth, &state_dir)?;

    let datastores = Datastores::default();
    let mut entries = config.effective_datastores();
    entries.extend(lifeboat_state::config::added_datastores(&state_dir)?);
    for e in &entries {
        if datastores.contains(&e.name) {
            tracing::error!(name = %e.name, "datastore configured twice; keeping the first");
            continue;
        }
        match open_datastore(e, tz).await {
            Ok(addr) => datastores.insert(&e.name, addr),
            // One broken datastore must not keep the others offline.
            Err(err) => tracing::error!(name = %e.name, path = %e.path.display(), "datastore unavailable: {err}"),
        }
    }

    let audit = state_dir.join("audit.log");
    let events = actix::Supervisor::start(move |_| EventsActor::new(Some(audit.clone())));
    let job_store = Arc::new(JobStore::open(&state_dir)?);
    // Every datastore is protected, those that failed to open too.
    let confine = Confinement::new(&config, config.loaded_from.as_deref(), &entries).shared();
    let guests = lifeboat_actors::jobs::GuestSettings {
        accel: config.qemu_accel.parse().map_err(|e: String| anyhow::anyhow!(e))?,
        scripts_dir: config.lab_scripts_dir.clone(),
        windows_drivers: config.windows_drivers.clone(),
    };
    // Made before any job can start a run: it sweeps the namespaces and
    // VMs of lab runs a crash of the daemon cut off.
    let lab_actor = LabActor::new(std::path::Path::new(lifeboat_lab::net::MARKERS));
    let lab_runs = lab_actor.runs();
    let lab = lab_actor.start();
    let labs = Arc::new(lifeboat_state::LabStore::open(&state_dir)?);
    let replicas = lifeboat_actors::cdp::Replicas::default().with_events(events.clone().recipient());
    let jobs = JobsActor::new(job_store, config.job_history, datastores.clone(), events.clone(), confine.clone())?
        .with_guests(guests)
        .with_labs(labs.clone())
        .with_lab_runs(lab_runs)
        .with_replicas(replicas.clone());
    let last_jobs = jobs.last_job_per_schedule();
    let jobs = jobs.start();
    let schedules = Arc::new(ScheduleStore::open(&state_dir)?);
    let scheduler = SchedulerActor::new(schedules, tz, jobs.clone(), datastores.clone()).with_last_jobs(last_jobs).start();
    let ingest = IngestActor::new(datastores.clone(), jobs.clone()).start();
    let instant = lifeboat_actors::instant::InstantVms::new(state_dir.join("instant"));
    // VMs run from backups by a daemon that was killed: their overlays
    // belong to nobody now.
    for stale in instant.sweep() {
        tracing::warn!("removed the instant-restored VM {} of a daemon that did not stop cleanly", stale.display());
    }
    let vms = VmRegistry::new(Arc::new(VmStore::open(&state_dir)?), instant.clone());
    jobs.do_send(lifeboat_actors::jobs::SetVmRegistry(vms.clone()));
    let connector = ConnectorActor::new(vms).start();
    let exports = ExportActor::new(config.nbd_listen, lifeboat_actors::export::NfsListen { nfs: config.nfs_listen, portmap: config.nfs_portmap_listen }, &state_dir, datastores.clone())
        .context("preparing exports")?
        .start();

    let hostname = lifeboat_actors::work::backup::hostname();
    let settings = Arc::new(SettingsStore::open(&state_dir)?);
    let smtp = settings.smtp();
    let appliance = hostname.clone();
    let notifier = actix::Supervisor::start(move |_| NotifierActor::new(smtp.clone(), appliance.clone()));
    jobs.do_send(lifeboat_actors::jobs::SetNotifier(notifier.clone().recipient()));
    let watched: Vec<_> = entries.iter().map(|e| (e.name.clone(), e.path.clone())).collect();
    let health_actor = HealthActor::new(HEALTH_EVERY, watched).context("reading /proc for the health actor")?;
    let health = actix::Supervisor::start(move |_| health_actor);
    let cert = crate::tls::load_or_create(&state_dir, &hostname)?;
    let state = web::Data::new(ApiState {
        auth,
        datastores,
        jobs,
        scheduler,
        events,
        ingest,
        notifier,
        health: health.clone(),
        connector,
        exports,
        settings,
        labs,
        lab: lab.clone(),
        replicas: replicas.clone(),
        state_dir: state_dir.clone(),
        confine,
        tz,
        tls_fingerprint: cert.fingerprint.clone(),
        datastore_create: tokio::sync::Mutex::new(()),
    });
    let app_state = state.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .wrap(actix_web::middleware::Logger::new("%a \"%r\" %s %b %Dms").exclude("/api/health"))
            .configure(crate::configure)
            .default_service(web::to(crate::routes::page::fallback))
    })
    .workers(2)
    // Agents make many small requests (missing-blob queries, parent trees):
    // without this, Nagle and delayed ACKs hold each answer back ~40 ms.
    .tcp_nodelay(true)
    .shutdown_timeout(5)
    .bind_rustls_0_23(config.listen, cert.config)
    .with_context(|| format!("listening on {} (TLS): is another lifeboat running? set `listen` in the config", config.listen))?;
    if let Some(plain) = config.listen_plain {
        server = server.bind(plain).with_context(|| format!("listening on {plain} (plain HTTP)"))?;
    }
    let addrs = server.addrs();
    let https = *addrs.first().context("no listener")?;
    let http = config.listen_plain.and_then(|_| addrs.get(1).copied());
    let started = Started { https, http, fingerprint: cert.fingerprint, health };
    tracing::info!(https = %started.https, fingerprint = %started.fingerprint, "API listening");
    // The console's read-only way in (lifeboat_state::console).
    let access = lifeboat_state::console::ConsoleAccess {
        url: lifeboat_state::console::ConsoleAccess::url_for(https, http),
        fingerprint: started.fingerprint.clone(),
        token: state.auth.issue_console_token(),
        pid: std::process::id(),
    };
    access.write(&state_dir).context("writing the console's access file")?;
    on_ready(&started);
    let res = server.run().await.context("the API server failed");
    // CDP protections end their sessions and close their journals; the
    // VMs go on with their own disks.
    let stopped = lifeboat_actors::datastore::blocking(move || replicas.stop_all(std::time::Duration::from_secs(30))).await.unwrap_or(0);
    if stopped > 0 {
        tracing::info!("stopped {stopped} CDP protection(s)");
    }
    // Lab runs power their VMs off and remove their networks; what does
    // not end in time is swept at the next start.
    let _ = lab.send(lifeboat_actors::lab::StopLabs { wait: std::time::Duration::from_secs(60) }).await;
    // VMs running from backups cannot outlive the exports they read.
    let _ = lifeboat_actors::datastore::blocking(move || instant.stop_all()).await;
    let _ = std::fs::remove_file(lifeboat_state::console::ConsoleAccess::path(&state_dir));
    res
}
