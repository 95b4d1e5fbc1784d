use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{delete, get, post, put, web, HttpResponse};
use lifeboat_actors::scheduler::{DeleteSchedule, GetSchedule, ListSchedules, PutSchedule, RunScheduleNow};
use lifeboat_api_types::{ApiError, JobInfo, ScheduleInfo, ScheduleSpec};
use lifeboat_state::Grant;

/// All schedules with their next run.
#[utoipa::path(tag = "schedules", security(("bearer" = [])),
    responses((status = 200, body = [ScheduleInfo]), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[get("/api/schedules")]
pub async fn list(_auth: Auth<perm::Read>, st: web::Data<ApiState>) -> Result<web::Json<Vec<ScheduleInfo>>, ApiErr> {
    Ok(web::Json(st.scheduler.send(ListSchedules).await?))
}

/// Create a schedule.
///
/// Needs operator or admin. Its job's paths are checked as for
/// `POST /api/jobs` (403 outside `backup_roots`/`restore_roots`), with no
/// caller's rights: scheduled runs get neither an admin's restore of
/// set-ID bits, device nodes and owners nor `original_location`. Each
/// run checks its paths again.
#[utoipa::path(tag = "schedules", security(("bearer" = [])), request_body = ScheduleSpec,
    responses((status = 201, body = ScheduleInfo), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 409, body = ApiError)))]
#[post("/api/schedules")]
pub async fn create(_auth: Auth<perm::Operate>, st: web::Data<ApiState>, body: web::Json<ScheduleSpec>) -> Result<HttpResponse, ApiErr> {
    // Scheduled runs have no caller: they get no grant (roots apply, no
    // set-ID bits, device nodes nor owners beyond the root's).
    crate::routes::jobs::validate(&st, &body.job, Grant::default())?;
    let s = st.scheduler.send(PutSchedule { id: None, spec: body.into_inner() }).await??;
    Ok(HttpResponse::Created().json(s))
}

/// One schedule.
#[utoipa::path(tag = "schedules", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = ScheduleInfo), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/schedules/{id}")]
pub async fn get(_auth: Auth<perm::Read>, st: web::Data<ApiState>, id: web::Path<String>) -> Result<web::Json<ScheduleInfo>, ApiErr> {
    Ok(web::Json(st.scheduler.send(GetSchedule(id.into_inner())).await??))
}

/// Replace a schedule.
///
/// Needs operator or admin; the job's paths are checked as for creation.
#[utoipa::path(tag = "schedules", security(("bearer" = [])), params(("id" = String, Path)), request_body = ScheduleSpec,
    responses((status = 200, body = ScheduleInfo), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
#[put("/api/schedules/{id}")]
pub async fn update(_auth: Auth<perm::Operate>, st: web::Data<ApiState>, id: web::Path<String>, body: web::Json<ScheduleSpec>) -> Result<web::Json<ScheduleInfo>, ApiErr> {
    crate::routes::jobs::validate(&st, &body.job, Grant::default())?;
    Ok(web::Json(st.scheduler.send(PutSchedule { id: Some(id.into_inner()), spec: body.into_inner() }).await??))
}

/// Delete a schedule (its past jobs stay in the history).
#[utoipa::path(tag = "schedules", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[delete("/api/schedules/{id}")]
pub async fn delete(_auth: Auth<perm::Operate>, st: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, ApiErr> {
    st.scheduler.send(DeleteSchedule(id.into_inner())).await??;
    Ok(HttpResponse::NoContent().finish())
}

/// Run a schedule now (skipped if its previous run still goes).
#[utoipa::path(tag = "schedules", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 202, body = JobInfo), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[post("/api/schedules/{id}/run")]
pub async fn run_now(_auth: Auth<perm::Operate>, st: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, ApiErr> {
    let job: JobInfo = st.scheduler.send(RunScheduleNow(id.into_inner())).await??;
    Ok(HttpResponse::Accepted().json(job))
}
