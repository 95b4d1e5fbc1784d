use crate::auth::{perm, Auth, SESSION_COOKIE};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::cookie::{time::Duration, Cookie, SameSite};
use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use lifeboat_api_types::{ApiError, LoginRequest, LoginResponse, PasswordChange, Permission, Role, WebLogin, WebSession};

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

/// The permissions a role has, as `WebSession` lists them.
fn permissions(role: Role) -> Vec<String> {
    [(Permission::Read, "read"), (Permission::Operate, "operate"), (Permission::Backup, "backup"), (Permission::Admin, "admin")]
        .into_iter()
        .filter(|(p, _)| role.allows(*p))
        .map(|(_, n)| n.to_string())
        .collect()
}

fn session_info(st: &ApiState, principal: &lifeboat_state::Principal, bearer: &str) -> WebSession {
    WebSession { user: principal.name.clone(), role: principal.role, permissions: permissions(principal.role), expires_at: st.auth.session_expiry(bearer), csrf_token: crate::auth::csrf_token(bearer) }
}

fn session_cookie(req: &HttpRequest, value: &str, max_age: Duration) -> Cookie<'static> {
    let mut c = Cookie::build(SESSION_COOKIE, value.to_string()).path("/").http_only(true).same_site(SameSite::Strict).max_age(max_age).finish();
    // Plain HTTP only exists on loopback; there a Secure cookie would not
    // come back.
    c.set_secure(req.connection_info().scheme() == "https");
    c
}

/// Sign in to the web console: as the admin (`username` + `password`)
/// or with an API token (`token`, the session then has its role). The
/// session is set as the HttpOnly cookie `lifeboat_session`; requests
/// that change something must carry the answer's `csrf_token` as
/// `X-CSRF-Token`.
#[utoipa::path(tag = "session", request_body = WebLogin,
    responses((status = 200, body = WebSession), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
#[post("/api/session")]
pub async fn open(req: HttpRequest, st: web::Data<ApiState>, body: web::Json<WebLogin>) -> Result<HttpResponse, ApiErr> {
    let auth = st.auth.clone();
    let b = body.into_inner();
    let opened = match (b.username, b.password, b.token) {
        (Some(user), Some(pw), None) => web::block(move || auth.login(&user, &pw).map(|(t, e)| (t, e, None))).await.map_err(ApiErr::internal)?,
        (None, None, Some(token)) => web::block(move || auth.login_with_token(&token).map(|(t, e, p)| (t, e, Some(p)))).await.map_err(ApiErr::internal)?,
        _ => return Err(ApiErr::BadRequest("send either `username` and `password` (the admin) or `token` (an API token)".into())),
    };
    let Some((bearer, expires, _)) = opened else {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        tracing::warn!("failed web console sign-in");
        return Err(ApiErr::Unauthorized("wrong user name, password or token".into()));
    };
    let principal = st.auth.authenticate(&bearer).ok_or_else(|| ApiErr::internal("a new session did not authenticate"))?;
    let info = session_info(&st, &principal, &bearer);
    let max_age = Duration::seconds((expires - chrono::Utc::now()).num_seconds().max(0));
    Ok(HttpResponse::Ok().cookie(session_cookie(&req, &bearer, max_age)).json(info))
}

/// Who this session (cookie) or token is, and its CSRF token.
#[utoipa::path(tag = "session", security(("bearer" = [])),
    responses((status = 200, body = WebSession), (status = 401, body = ApiError)))]
#[get("/api/session")]
pub async fn current(auth: Auth<perm::Any>, st: web::Data<ApiState>) -> web::Json<WebSession> {
    web::Json(session_info(&st, &auth.principal, &auth.bearer))
}

/// Sign out of the web console: ends the session and clears its cookie
/// (an API token used to sign in stays valid).
#[utoipa::path(tag = "session", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[delete("/api/session")]
pub async fn close(req: HttpRequest, auth: Auth<perm::Any>, st: web::Data<ApiState>) -> HttpResponse {
    if auth.bearer.starts_with("s.") {
        st.auth.logout(&auth.bearer);
    }
    HttpResponse::NoContent().cookie(session_cookie(&req, "", Duration::ZERO)).finish()
}
