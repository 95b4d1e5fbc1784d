use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{post, put, web, HttpResponse};
use lifeboat_api_types::{ApiError, LoginRequest, LoginResponse, PasswordChange, Role};

/// Log in as the admin; returns a session token.
#[utoipa::path(tag = "session", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = ApiError)))]
#[post("/api/login")]
pub async fn login(st: web::Data<ApiState>, body: web::Json<LoginRequest>) -> Result<web::Json<LoginResponse>, ApiErr> {
    let auth = st.auth.clone();
    let LoginRequest { username, password } = body.into_inner();
    let res = web::block(move || auth.login(&username, &password)).await.map_err(ApiErr::internal)?;
    match res {
        Some((token, expires_at)) => Ok(web::Json(LoginResponse { token, expires_at, role: Role::Admin })),
        None => {
            // Slows down guessing without holding a worker thread.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            tracing::warn!("failed login");
            Err(ApiErr::Unauthorized("wrong user name or password".into()))
        }
    }
}

/// End this session.
#[utoipa::path(tag = "session", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ApiError)))]
#[post("/api/logout")]
pub async fn logout(auth: Auth<perm::Any>, st: web::Data<ApiState>) -> Result<HttpResponse, ApiErr> {
    st.auth.logout(&auth.bearer);
    Ok(HttpResponse::NoContent().finish())
}

/// Change the admin password (ends every session).
#[utoipa::path(tag = "session", security(("bearer" = [])), request_body = PasswordChange,
    responses((status = 204), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[put("/api/password")]
pub async fn change_password(_auth: Auth<perm::Admin>, st: web::Data<ApiState>, body: web::Json<PasswordChange>) -> Result<HttpResponse, ApiErr> {
    let a = st.auth.clone();
    let b = body.into_inner();
    web::block(move || {
        if !a.verify_admin_password(lifeboat_state::auth::ADMIN_USER, &b.current_password) {
            return Err(ApiErr::BadRequest("the current password is wrong".into()));
        }
        a.set_admin_password(&b.new_password).map_err(ApiErr::from)
    })
    .await
    .map_err(ApiErr::internal)??;
    Ok(HttpResponse::NoContent().finish())
}
