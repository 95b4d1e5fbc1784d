//! The `Auth` extractor: every handler but login and health takes one,
//! first among its arguments, so a missing or wrong token is refused
//! (401) before anything else of the request is looked at, and
//! `require` refuses a token whose role lacks the permission (403).

use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use lifeboat_api_types::Permission;
use lifeboat_state::Principal;
use std::future::{ready, Ready};

pub struct Auth {
    pub principal: Principal,
    pub bearer: String,
}

impl Auth {
    pub fn require(&self, p: Permission) -> Result<(), ApiErr> {
        if self.principal.role.allows(p) {
            Ok(())
        } else {
            Err(ApiErr::Forbidden(format!(
                "this token's role ({}) may not do this; it needs {}",
                self.principal.role.as_str(),
                match p {
                    Permission::Read => "read-only or higher",
                    Permission::Operate => "operator or admin",
                    Permission::Backup => "backup-only, operator or admin",
                    Permission::Admin => "admin",
                }
            )))
        }
    }
}

impl FromRequest for Auth {
    type Error = ApiErr;
    type Future = Ready<Result<Auth, ApiErr>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Auth, ApiErr> {
    let st = req.app_data::<web::Data<ApiState>>().ok_or_else(|| ApiErr::internal("no API state"))?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiErr::Unauthorized("authentication required: send `Authorization: Bearer <token>` (POST /api/login gives one)".into()))?;
    let bearer = header
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(|| ApiErr::Unauthorized("the Authorization header must be `Bearer <token>`".into()))?;
    let principal = st
        .auth
        .authenticate(bearer)
        .ok_or_else(|| ApiErr::Unauthorized("the token is invalid, revoked or expired: log in again or create a new API token".into()))?;
    Ok(Auth { principal, bearer: bearer.to_string() })
}
