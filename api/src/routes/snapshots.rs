use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{delete, get, post, web, HttpResponse};
use lifeboat_actors::jobs::StartJob;
use lifeboat_api_types::{ApiError, JobInfo, JobSpec, LabReportInfo, RestoreRequest, SnapshotInfo};

fn datastore(st: &ApiState, name: &str) -> Result<actix::Addr<lifeboat_actors::DatastoreActor>, ApiErr> {
    st.datastores.get(name).ok_or_else(|| ApiErr::NotFound(format!("datastore {name:?} does not exist")))
}

/// Snapshots of a datastore, oldest first.
#[utoipa::path(tag = "snapshots", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = [SnapshotInfo]), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/datastores/{name}/snapshots")]
pub async fn list(_auth: Auth<perm::Read>, st: web::Data<ApiState>, name: web::Path<String>) -> Result<web::Json<Vec<SnapshotInfo>>, ApiErr> {
    let ds = datastore(&st, &name)?;
    Ok(web::Json(ds.send(lifeboat_actors::datastore::SnapshotInfos).await?.map_err(ApiErr::Internal)?))
}

/// Remove a snapshot (its space comes back with the next gc).
#[utoipa::path(tag = "snapshots", security(("bearer" = [])), params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[delete("/api/datastores/{name}/snapshots/{id}")]
pub async fn delete(_auth: Auth<perm::Operate>, st: web::Data<ApiState>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiErr> {
    let (name, id) = path.into_inner();
    let ds = datastore(&st, &name)?;
    ds.send(lifeboat_actors::datastore::ForgetSnapshots(vec![id])).await?.map_err(|e| {
        if e.contains("no snapshot") || e.contains("matches no") || e.contains("not found") {
            ApiErr::NotFound(e)
        } else {
            ApiErr::BadRequest(e)
        }
    })?;
    Ok(HttpResponse::NoContent().finish())
}

/// Restore a snapshot into a directory on the appliance (starts a job).
///
/// Needs operator or admin. `target` must lie under `restore_roots`
/// (lifeboat.toml), reached without symlinks and clear of the state
/// directory, config, datastores and system trees, else 403 before
/// anything is written; see `POST /api/jobs` for what each role's
/// restore recreates.
#[utoipa::path(tag = "snapshots", security(("bearer" = [])), params(("name" = String, Path), ("id" = String, Path)), request_body = RestoreRequest,
    responses((status = 202, body = JobInfo), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[post("/api/datastores/{name}/snapshots/{id}/restore")]
pub async fn restore(auth: Auth<perm::Operate>, st: web::Data<ApiState>, path: web::Path<(String, String)>, body: web::Json<RestoreRequest>) -> Result<HttpResponse, ApiErr> {
    let (name, id) = path.into_inner();
    let b = body.into_inner();
    let spec = JobSpec::Restore { datastore: name, snapshot: id, target: b.target, include: b.include };
    let grant = auth.principal.grant();
    crate::routes::jobs::validate(&st, &spec, grant)?;
    let job = st.jobs.send(StartJob::now(spec, grant)).await??;
    Ok(HttpResponse::Accepted().json(job))
}

/// Reports of lab verifications in a datastore, newest first.
#[utoipa::path(tag = "labs", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = [LabReportInfo]), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/datastores/{name}/lab-reports")]
pub async fn lab_reports(_auth: Auth<perm::Read>, st: web::Data<ApiState>, name: web::Path<String>) -> Result<web::Json<Vec<LabReportInfo>>, ApiErr> {
    let dir = lab_reports_dir(&st, &name).await?;
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read(e.path().join("report.json")) else { continue };
        let Ok(r) = serde_json::from_slice::<lifeboat_lab::LabReport>(&text) else { continue };
        out.push(LabReportInfo { id: e.file_name().to_string_lossy().into_owned(), passed: r.passed, started: r.started, ended: r.ended, vms: r.vms.iter().map(|v| (v.vm.clone(), v.passed)).collect() });
    }
    out.sort_by(|a, b| b.started.cmp(&a.started));
    Ok(web::Json(out))
}

/// One file of a lab report: `report.html` (self-contained),
/// `report.json`, or a screenshot named in it.
#[utoipa::path(tag = "labs", security(("bearer" = [])), params(("name" = String, Path), ("id" = String, Path), ("file" = String, Path)),
    responses((status = 200, description = "the file"), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/datastores/{name}/lab-reports/{id}/{file}")]
pub async fn lab_report_file(_auth: Auth<perm::Read>, st: web::Data<ApiState>, path: web::Path<(String, String, String)>) -> Result<HttpResponse, ApiErr> {
    let (name, id, file) = path.into_inner();
    for part in [&id, &file] {
        if part.is_empty() || part.starts_with('.') || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(ApiErr::BadRequest(format!("{part:?} is not a report or file name")));
        }
    }
    let p = lab_reports_dir(&st, &name).await?.join(&id).join(&file);
    let body = std::fs::read(&p).map_err(|_| ApiErr::NotFound(format!("lab report {id} has no file {file}")))?;
    let ctype = match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    // The page is self-contained: it needs no script and loads nothing.
    Ok(HttpResponse::Ok().content_type(ctype).insert_header(("Content-Security-Policy", "default-src 'none'; img-src data:; style-src 'unsafe-inline'")).body(body))
}

async fn lab_reports_dir(st: &ApiState, name: &str) -> Result<std::path::PathBuf, ApiErr> {
    let ds = datastore(st, name)?;
    let handle = ds.send(lifeboat_actors::datastore::DatastoreHandle).await?;
    Ok(handle.root().join("lab-reports"))
}
