use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{get, post, web, HttpResponse};
use lifeboat_actors::jobs::{CancelJob, GetJob, GetJobLog, ListJobs, StartJob};
use lifeboat_api_types::{ApiError, JobInfo, JobSpec};
use lifeboat_state::confine::{ConfineError, Grant, PathUse};
use serde::Deserialize;
use utoipa::IntoParams;

#[derive(Deserialize, IntoParams)]
pub struct JobQuery {
    /// Only running jobs.
    #[serde(default)]
    pub running: bool,
    /// At most this many (newest first); default 100.
    pub limit: Option<usize>,
}

/// Jobs, newest first.
#[utoipa::path(tag = "jobs", security(("bearer" = [])), params(JobQuery),
    responses((status = 200, body = [JobInfo]), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[get("/api/jobs")]
pub async fn list(_auth: Auth<perm::Read>, st: web::Data<ApiState>, q: web::Query<JobQuery>) -> Result<web::Json<Vec<JobInfo>>, ApiErr> {
    let limit = q.limit.unwrap_or(100).min(10_000);
    Ok(web::Json(st.jobs.send(ListJobs { running_only: q.running, limit }).await?))
}

/// Start a job (backup, restore, verify, forget, gc, vm-backup, vm-restore).
///
/// Needs operator or admin. Files on the appliance: a `backup` reads only
/// `paths` under `backup_roots`, a `restore` or `vm-restore` writes only
/// below a `target` under `restore_roots` (lifeboat.toml). A path outside
/// them, with a `..` segment, reached through a symlink, or touching the
/// state directory, the config, a datastore or a system tree (/etc,
/// /usr, ...) is refused with 403 before anything is read or written.
/// An operator's restore recreates no set-ID bits or device nodes (they
/// are listed in `warnings`, `result.left_out` counts them) and keeps
/// owners only under a root with `owners = true`; an admin's keeps them.
/// An admin token with `original_location` may also use paths outside
/// the roots and in system trees, never the daemon's own state, config
/// or datastores.
#[utoipa::path(tag = "jobs", security(("bearer" = [])), request_body = JobSpec,
    responses((status = 202, body = JobInfo), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[post("/api/jobs")]
pub async fn start(auth: Auth<perm::Operate>, st: web::Data<ApiState>, body: web::Json<JobSpec>) -> Result<HttpResponse, ApiErr> {
    let spec = body.into_inner();
    let grant = auth.principal.grant();
    validate(&st, &spec, grant)?;
    let job = st.jobs.send(StartJob::now(spec, grant)).await??;
    tracing::info!(job = %job.id, by = %auth.principal.name, "job started");
    Ok(HttpResponse::Accepted().json(job))
}

/// The paths a job spec names, checked against the confinement for
/// `grant` (lexically, and what exists of them resolved without
/// symlinks): 400 for a malformed path, 403 for one outside the roots or
/// in a protected tree. The job checks again when it runs.
pub fn validate(st: &ApiState, spec: &JobSpec, grant: Grant) -> Result<(), ApiErr> {
    let c = st.confine.read();
    let check = |p: &str, what: PathUse| c.check_resolved(p, what, grant).map(|_| ()).map_err(confine_err);
    match spec {
        JobSpec::Backup { paths, .. } => {
            if paths.is_empty() {
                return Err(ApiErr::BadRequest("a backup needs at least one path".into()));
            }
            paths.iter().try_for_each(|p| check(p, PathUse::BackupSource))
        }
        JobSpec::Restore { target, .. } | JobSpec::VmRestore { target, .. } | JobSpec::VmMigrateBack { target, .. } | JobSpec::VmRestoreFiles { target, .. } => check(target, PathUse::RestoreTarget),
        JobSpec::CdpProtect { mode, bookmarks, .. } => {
            mode.parse::<lifeboat_cdp::capture::MirrorMode>().map_err(ApiErr::BadRequest)?;
            lifeboat_cdp::check_policy(bookmarks).map_err(|e| ApiErr::BadRequest(e.to_string()))?;
            // The daemon reads the watched log: only a file a backup of
            // this caller could read.
            bookmarks.log_file.as_deref().map_or(Ok(()), |f| check(f, PathUse::BackupSource))
        }
        JobSpec::VmInstantRestore { net, .. } => net.parse::<lifeboat_qemu::NetMode>().map(|_| ()).map_err(ApiErr::BadRequest),
        JobSpec::LabVerify { lab: Some(name), vms, .. } if vms.is_empty() => match st.labs.get(name) {
            Some(_) => Ok(()),
            None => Err(ApiErr::NotFound(format!("lab {name:?} is not defined: list them with GET /api/labs"))),
        },
        JobSpec::LabVerify { vms, probes, boot_timeout, network, .. } => {
            if vms.is_empty() {
                return Err(ApiErr::BadRequest("a lab verification needs at least one VM, or a lab (GET /api/labs)".into()));
            }
            let p: lifeboat_lab::Probes = probes.parse().map_err(ApiErr::BadRequest)?;
            // A script is a name in lab_scripts_dir, never a path.
            if let Some(s) = p.scripts.iter().find(|s| s.components().count() != 1 || s.to_string_lossy().starts_with('.')) {
                return Err(ApiErr::BadRequest(format!("script {}: give the plain name of a script in lab_scripts_dir", s.display())));
            }
            if *boot_timeout == 0 || *boot_timeout > 3600 {
                return Err(ApiErr::BadRequest("boot_timeout: 1 to 3600 seconds".into()));
            }
            lifeboat_lab::parse_masquerade(network.masquerade.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(ApiErr::BadRequest)?;
            lifeboat_lab::parse_dns(network.dns.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(ApiErr::BadRequest)?;
            Ok(())
        }
        _ => Ok(()),
    }
}

pub fn confine_err(e: ConfineError) -> ApiErr {
    if e.is_forbidden() {
        ApiErr::Forbidden(e.to_string())
    } else {
        ApiErr::BadRequest(e.to_string())
    }
}

/// One job, with live progress while it runs.
#[utoipa::path(tag = "jobs", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = JobInfo), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/jobs/{id}")]
pub async fn get(_auth: Auth<perm::Read>, st: web::Data<ApiState>, id: web::Path<String>) -> Result<web::Json<JobInfo>, ApiErr> {
    Ok(web::Json(st.jobs.send(GetJob(id.into_inner())).await??))
}

/// Ask a running job to stop.
#[utoipa::path(tag = "jobs", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 202, body = JobInfo), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
#[post("/api/jobs/{id}/cancel")]
pub async fn cancel(_auth: Auth<perm::Operate>, st: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, ApiErr> {
    let job = st.jobs.send(CancelJob(id.into_inner())).await??;
    Ok(HttpResponse::Accepted().json(job))
}

/// A job's log, as text.
#[utoipa::path(tag = "jobs", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = String, content_type = "text/plain"), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/jobs/{id}/log")]
pub async fn log(_auth: Auth<perm::Read>, st: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, ApiErr> {
    let text = st.jobs.send(GetJobLog(id.into_inner())).await??;
    Ok(HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(text))
}
