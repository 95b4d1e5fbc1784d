use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{delete, get, post, web, HttpResponse};
use lifeboat_actors::connector::{ListVms, RegisterVm, UnregisterVm};
use lifeboat_api_types::{ApiError, VmInfo, VmRegister};

/// Registered VMs with their live inventory (status, CPUs, memory, disks).
#[utoipa::path(tag = "vms", security(("bearer" = [])),
    responses((status = 200, body = [VmInfo]), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[get("/api/vms")]
pub async fn list(_auth: Auth<perm::Read>, st: web::Data<ApiState>) -> Result<web::Json<Vec<VmInfo>>, ApiErr> {
    Ok(web::Json(st.connector.send(ListVms).await?))
}

/// Register a VM by its QMP socket; it must answer.
#[utoipa::path(tag = "vms", security(("bearer" = [])), request_body = VmRegister,
    responses((status = 201, body = VmInfo), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 409, body = ApiError)))]
#[post("/api/vms")]
pub async fn register(auth: Auth<perm::Operate>, st: web::Data<ApiState>, body: web::Json<VmRegister>) -> Result<HttpResponse, ApiErr> {
    let b = body.into_inner();
    let info = st.connector.send(RegisterVm { name: b.name, source: b.source }).await??;
    tracing::info!(vm = %info.name, by = %auth.principal.name, "VM registered");
    Ok(HttpResponse::Created().json(info))
}

/// Forget a registered VM (its backups stay). An instant-restored VM is
/// powered off and its overlays removed (409 while it is being migrated
/// back).
#[utoipa::path(tag = "vms", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
#[delete("/api/vms/{name}")]
pub async fn unregister(_auth: Auth<perm::Operate>, st: web::Data<ApiState>, name: web::Path<String>) -> Result<HttpResponse, ApiErr> {
    st.connector.send(UnregisterVm(name.into_inner())).await??;
    Ok(HttpResponse::NoContent().finish())
}
