use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{delete, get, post, web, HttpResponse};
use lifeboat_actors::export::{CreateExport, DeleteExport, ListExports};
use lifeboat_api_types::{ApiError, ExportCreate, ExportInfo};

/// NBD and NFS exports being served.
#[utoipa::path(tag = "exports", security(("bearer" = [])),
    responses((status = 200, body = [ExportInfo]), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[get("/api/exports")]
pub async fn list(_auth: Auth<perm::Read>, st: web::Data<ApiState>) -> Result<web::Json<Vec<ExportInfo>>, ApiErr> {
    Ok(web::Json(st.exports.send(ListExports).await?))
}

/// Serve one disk of a VM snapshot over NBD or NFS (read-only unless
/// `writable`, whose writes go to an overlay, never to the datastore).
///
/// `protocol: nfs` shows the disk as `/<vm>/<snapshot time>/<disk>.img`
/// (+ `.vmdk` descriptor and `-flat.vmdk` extent) on the NFSv3 server at
/// `nfs_listen`, to the `clients` listed only (needed; 400 without).
///
/// Needs operator or admin. Takes no path: a writable export's overlay
/// is a file in the state directory named by the daemon; `disk` must be
/// a plain name (400 otherwise).
#[utoipa::path(tag = "exports", security(("bearer" = [])), request_body = ExportCreate,
    responses((status = 201, body = ExportInfo), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[post("/api/exports")]
pub async fn create(auth: Auth<perm::Operate>, st: web::Data<ApiState>, body: web::Json<ExportCreate>) -> Result<HttpResponse, ApiErr> {
    let b = body.into_inner();
    if let Some(d) = &b.disk {
        lifeboat_state::confine::check_plain_name(d).map_err(|m| ApiErr::BadRequest(format!("disk: {m}")))?;
    }
    let info = st.exports.send(CreateExport(b)).await??;
    tracing::info!(export = %info.id, by = %auth.principal.name, "export created");
    Ok(HttpResponse::Created().json(info))
}

/// Close an export and remove its overlay.
#[utoipa::path(tag = "exports", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[delete("/api/exports/{id}")]
pub async fn delete(_auth: Auth<perm::Operate>, st: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, ApiErr> {
    st.exports.send(DeleteExport(id.into_inner())).await??;
    Ok(HttpResponse::NoContent().finish())
}
