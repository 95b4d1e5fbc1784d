//! API tokens, and agents (a registered agent is a backup-only token
//! marked as an agent).

use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{delete, get, post, web, HttpResponse};
use lifeboat_api_types::{ApiError, Role, TokenCreate, TokenCreated, TokenInfo};
use serde::Deserialize;
use utoipa::ToSchema;

/// API tokens (secrets are never shown again after creation).
#[utoipa::path(tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = [TokenInfo]), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[get("/api/tokens")]
pub async fn list(_auth: Auth<perm::Admin>, st: web::Data<ApiState>) -> Result<web::Json<Vec<TokenInfo>>, ApiErr> {
    Ok(web::Json(st.auth.tokens()))
}

/// Create an API token with a role; the answer holds its secret once.
///
/// Admin only. `original_location` (admin tokens only, else 400) lets
/// the token's jobs read and write outside `backup_roots` and
/// `restore_roots` and in system trees, to restore files where they were.
#[utoipa::path(tag = "tokens", security(("bearer" = [])), request_body = TokenCreate,
    responses((status = 201, body = TokenCreated), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 409, body = ApiError)))]
#[post("/api/tokens")]
pub async fn create(_auth: Auth<perm::Admin>, st: web::Data<ApiState>, body: web::Json<TokenCreate>) -> Result<HttpResponse, ApiErr> {
    let a = st.auth.clone();
    let b = body.into_inner();
    let t = web::block(move || a.create_token(&b.name, b.role, false, b.original_location)).await.map_err(ApiErr::internal)??;
    tracing::info!(token = %t.info.id, name = %t.info.name, role = t.info.role.as_str(), "API token created");
    Ok(HttpResponse::Created().json(t))
}

/// Revoke an API token.
#[utoipa::path(tag = "tokens", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[delete("/api/tokens/{id}")]
pub async fn revoke(_auth: Auth<perm::Admin>, st: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, ApiErr> {
    let a = st.auth.clone();
    let t = web::block(move || a.revoke_token(&id)).await.map_err(ApiErr::internal)??;
    tracing::info!(token = %t.id, name = %t.name, "API token revoked");
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
pub struct AgentRegister {
    /// The agent's name, usually its host name.
    pub name: String,
}

/// Registered ingest agents.
#[utoipa::path(tag = "agents", security(("bearer" = [])),
    responses((status = 200, body = [TokenInfo]), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[get("/api/agents")]
pub async fn list_agents(_auth: Auth<perm::Admin>, st: web::Data<ApiState>) -> Result<web::Json<Vec<TokenInfo>>, ApiErr> {
    Ok(web::Json(st.auth.tokens().into_iter().filter(|t| t.agent).collect()))
}

/// Register an agent: returns its backup-only token (shown once).
#[utoipa::path(tag = "agents", security(("bearer" = [])), request_body = AgentRegister,
    responses((status = 201, body = TokenCreated), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 409, body = ApiError)))]
#[post("/api/agents")]
pub async fn register_agent(_auth: Auth<perm::Admin>, st: web::Data<ApiState>, body: web::Json<AgentRegister>) -> Result<HttpResponse, ApiErr> {
    let a = st.auth.clone();
    let name = body.into_inner().name;
    let t = web::block(move || a.create_token(&name, Role::BackupOnly, true, false)).await.map_err(ApiErr::internal)??;
    tracing::info!(agent = %t.info.name, "agent registered");
    Ok(HttpResponse::Created().json(t))
}

/// Revoke an agent's token.
#[utoipa::path(tag = "agents", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[delete("/api/agents/{id}")]
pub async fn revoke_agent(_auth: Auth<perm::Admin>, st: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, ApiErr> {
    if !st.auth.tokens().iter().any(|t| t.id == *id && t.agent) {
        return Err(ApiErr::NotFound(format!("agent {id} not found")));
    }
    let a = st.auth.clone();
    let t = web::block(move || a.revoke_token(&id)).await.map_err(ApiErr::internal)??;
    // Its upload sessions end with it (the token is refused from now on);
    // sessions belong to the principal's name (lifeboat_state::Principal).
    st.ingest.do_send(lifeboat_actors::ingest::DropAgentSessions { owner: format!("token:{}", t.name) });
    Ok(HttpResponse::NoContent().finish())
}
