//! Lab definitions: VM backups verified together in a lab, run on
//! demand, by a schedule (a `lab-verify` job naming the lab), or after
//! every backup of one of their VMs. Their runs are `lab-verify` jobs;
//! reports are under `/api/datastores/{name}/lab-reports`.

use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{delete, get, post, put, web, HttpResponse};
use lifeboat_actors::jobs::{ListJobs, StartJob};
use lifeboat_api_types::{ApiError, JobInfo, JobSpec, LabDefinition, LabRunInfo};

fn check(st: &ApiState, lab: &LabDefinition) -> Result<(), ApiErr> {
    if !st.datastores.contains(&lab.datastore) {
        return Err(ApiErr::NotFound(format!("datastore {:?} does not exist: list them with GET /api/datastores", lab.datastore)));
    }
    // The same checks as a lab-verify job with these VMs.
    let spec = JobSpec::LabVerify { datastore: lab.datastore.clone(), lab: None, vms: lab.vms.clone(), probes: lab.probes.clone(), boot_timeout: lab.boot_timeout, network: lab.network.clone() };
    crate::routes::jobs::validate(st, &spec, lifeboat_state::Grant::default())
}

/// Lab definitions.
#[utoipa::path(tag = "labs", security(("bearer" = [])),
    responses((status = 200, body = [LabDefinition]), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[get("/api/labs")]
pub async fn list(_auth: Auth<perm::Read>, st: web::Data<ApiState>) -> Result<web::Json<Vec<LabDefinition>>, ApiErr> {
    Ok(web::Json(st.labs.list()))
}

/// Define a lab. Needs operator or admin.
#[utoipa::path(tag = "labs", security(("bearer" = [])), request_body = LabDefinition,
    responses((status = 201, body = LabDefinition), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
#[post("/api/labs")]
pub async fn create(auth: Auth<perm::Operate>, st: web::Data<ApiState>, body: web::Json<LabDefinition>) -> Result<HttpResponse, ApiErr> {
    let lab = body.into_inner();
    check(&st, &lab)?;
    st.labs.put(lab.clone(), false)?;
    tracing::info!(lab = %lab.name, by = %auth.principal.name, "lab defined");
    Ok(HttpResponse::Created().json(lab))
}

/// One lab definition.
#[utoipa::path(tag = "labs", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = LabDefinition), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/labs/{name}")]
pub async fn get(_auth: Auth<perm::Read>, st: web::Data<ApiState>, name: web::Path<String>) -> Result<web::Json<LabDefinition>, ApiErr> {
    st.labs.get(&name).map(web::Json).ok_or_else(|| ApiErr::NotFound(format!("lab {name:?} is not defined: list them with GET /api/labs")))
}

/// Replace a lab definition (the name in the body must match).
#[utoipa::path(tag = "labs", security(("bearer" = [])), params(("name" = String, Path)), request_body = LabDefinition,
    responses((status = 200, body = LabDefinition), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[put("/api/labs/{name}")]
pub async fn update(_auth: Auth<perm::Operate>, st: web::Data<ApiState>, name: web::Path<String>, body: web::Json<LabDefinition>) -> Result<web::Json<LabDefinition>, ApiErr> {
    let lab = body.into_inner();
    if lab.name != *name {
        return Err(ApiErr::BadRequest(format!("the body names lab {:?}, the path {name:?}", lab.name)));
    }
    check(&st, &lab)?;
    st.labs.put(lab.clone(), true)?;
    Ok(web::Json(lab))
}

/// Remove a lab definition (its reports and past runs stay).
#[utoipa::path(tag = "labs", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[delete("/api/labs/{name}")]
pub async fn delete(_auth: Auth<perm::Operate>, st: web::Data<ApiState>, name: web::Path<String>) -> Result<HttpResponse, ApiErr> {
    st.labs.remove(&name)?;
    Ok(HttpResponse::NoContent().finish())
}

/// Run a lab now: a `lab-verify` job with the lab's VMs and probes, its
/// report mailed as the lab's `notify` says.
#[utoipa::path(tag = "labs", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 202, body = JobInfo), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[post("/api/labs/{name}/run")]
pub async fn run(auth: Auth<perm::Operate>, st: web::Data<ApiState>, name: web::Path<String>) -> Result<HttpResponse, ApiErr> {
    let lab = st.labs.get(&name).ok_or_else(|| ApiErr::NotFound(format!("lab {name:?} is not defined: list them with GET /api/labs")))?;
    let spec = JobSpec::LabVerify { datastore: lab.datastore, lab: Some(lab.name), vms: Vec::new(), probes: String::new(), boot_timeout: 0, network: Default::default() };
    let mut start = StartJob::now(spec, auth.principal.grant());
    start.notify = lab.notify;
    let job = st.jobs.send(start).await??;
    Ok(HttpResponse::Accepted().json(job))
}

/// The lab's runs, newest first (from the job history).
#[utoipa::path(tag = "labs", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = [JobInfo]), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/labs/{name}/runs")]
pub async fn runs(_auth: Auth<perm::Read>, st: web::Data<ApiState>, name: web::Path<String>) -> Result<web::Json<Vec<JobInfo>>, ApiErr> {
    if st.labs.get(&name).is_none() {
        return Err(ApiErr::NotFound(format!("lab {name:?} is not defined")));
    }
    let all = st.jobs.send(ListJobs { running_only: false, limit: usize::MAX }).await?;
    Ok(web::Json(all.into_iter().filter(|j| matches!(&j.spec, JobSpec::LabVerify { lab: Some(l), .. } if *l == *name)).collect()))
}

/// Lab runs in progress, oldest first: which VMs, in which network
/// namespace, for which job (cancel a run through its job).
#[utoipa::path(tag = "labs", security(("bearer" = [])),
    responses((status = 200, body = [LabRunInfo]), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[get("/api/lab-runs")]
pub async fn running(_auth: Auth<perm::Read>, st: web::Data<ApiState>) -> Result<web::Json<Vec<LabRunInfo>>, ApiErr> {
    Ok(web::Json(st.lab.send(lifeboat_actors::lab::RunningLabs).await?))
}
