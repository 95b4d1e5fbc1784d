use crate::ApiState;
use actix_web::{get, web};
use lifeboat_api_types::HealthStatus;

/// Liveness: answers without a token.
#[utoipa::path(tag = "health", responses((status = 200, body = HealthStatus)))]
#[get("/api/health")]
pub async fn health(_st: web::Data<ApiState>) -> web::Json<HealthStatus> {
    web::Json(HealthStatus { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() })
}
