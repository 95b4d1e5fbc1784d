use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{get, web};
use lifeboat_actors::{GetHealth, GetHealthHistory};
use lifeboat_api_types::{ApiError, HealthReport, HealthSample, HealthStatus};

/// Liveness: answers without a token.
#[utoipa::path(tag = "health", responses((status = 200, body = HealthStatus)))]
#[get("/api/health")]
pub async fn health(_st: web::Data<ApiState>) -> web::Json<HealthStatus> {
    web::Json(HealthStatus { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() })
}

/// Memory, load, uptime, disk IO rates, free space per datastore and the
/// daemon's memory, from the latest sample (taken every few seconds).
#[utoipa::path(tag = "health", security(("bearer" = [])),
    responses((status = 200, body = HealthReport), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[get("/api/health/details")]
pub async fn details(_auth: Auth<perm::Read>, st: web::Data<ApiState>) -> Result<web::Json<HealthReport>, ApiErr> {
    let report = st.health.send(GetHealth).await.map_err(ApiErr::internal)?.map_err(ApiErr::internal)?;
    Ok(web::Json(report))
}

/// Load, memory and datastore space over the last day, oldest first: a
/// point a minute at most, kept in memory (a daemon restart begins anew).
#[utoipa::path(tag = "health", security(("bearer" = [])),
    responses((status = 200, body = [HealthSample]), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[get("/api/health/history")]
pub async fn history(_auth: Auth<perm::Read>, st: web::Data<ApiState>) -> Result<web::Json<Vec<HealthSample>>, ApiErr> {
    Ok(web::Json(st.health.send(GetHealthHistory).await.map_err(ApiErr::internal)?))
}
