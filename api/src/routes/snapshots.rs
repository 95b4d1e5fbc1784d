use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{delete, get, post, web, HttpResponse};
use lifeboat_actors::jobs::StartJob;
use lifeboat_api_types::{ApiError, JobInfo, JobSpec, RestoreRequest, SnapshotInfo};

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
