use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{get, post, web, HttpResponse};
use lifeboat_actors::jobs::{CancelJob, GetJob, GetJobLog, ListJobs, StartJob};
use lifeboat_api_types::{ApiError, JobInfo, JobSpec};
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
#[utoipa::path(tag = "jobs", security(("bearer" = [])), request_body = JobSpec,
    responses((status = 202, body = JobInfo), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[post("/api/jobs")]
pub async fn start(auth: Auth<perm::Operate>, st: web::Data<ApiState>, body: web::Json<JobSpec>) -> Result<HttpResponse, ApiErr> {
    let spec = body.into_inner();
    validate(&spec)?;
    let job = st.jobs.send(StartJob::now(spec)).await??;
    tracing::info!(job = %job.id, by = %auth.principal.name, "job started");
    Ok(HttpResponse::Accepted().json(job))
}

pub fn validate(spec: &JobSpec) -> Result<(), ApiErr> {
    let abs = |p: &str, what: &str| {
        if p.starts_with('/') {
            Ok(())
        } else {
            Err(ApiErr::BadRequest(format!("{what} {p:?} must be an absolute path on the appliance")))
        }
    };
    match spec {
        JobSpec::Backup { paths, .. } => {
            if paths.is_empty() {
                return Err(ApiErr::BadRequest("a backup needs at least one path".into()));
            }
            paths.iter().try_for_each(|p| abs(p, "path"))
        }
        JobSpec::Restore { target, .. } | JobSpec::VmRestore { target, .. } => abs(target, "target"),
        _ => Ok(()),
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
