//! The `Auth` extractor: every handler but login and health takes one,
//! first among its arguments, so a missing or wrong token is refused
//! (401) and a token whose role lacks the permission the handler names
//! (403) before anything else of the request is looked at.
//!
//! Two ways in: an `Authorization: Bearer` header (CLI, agents,
//! scripts), or the web console's HttpOnly session cookie. A browser
//! sends cookies on requests other sites make it send, so a request the
//! cookie authenticates that changes something must also carry the
//! session's CSRF token in `X-CSRF-Token`, which only a page of ours can
//! have read (from `GET /api/session`).

use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use lifeboat_api_types::Permission;
use lifeboat_state::Principal;
use std::future::{ready, Ready};

/// Bytes of a refused request's body read before giving up on it.
const DRAIN_LIMIT: usize = 1 << 20;

/// Permission markers: a handler states what it needs in its signature,
/// `Auth<perm::Operate>`, and the check happens in the extractor, before
/// the body is parsed — so a weak token gets 403 whatever it sends.
pub mod perm {
    use lifeboat_api_types::Permission;

    pub trait Need: 'static {
        const NEEDS: Option<Permission>;
    }
    /// Any valid token (e.g. logout).
    pub struct Any;
    pub struct Read;
    pub struct Operate;
    pub struct Backup;
    pub struct Admin;
    impl Need for Any {
        const NEEDS: Option<Permission> = None;
    }
    impl Need for Read {
        const NEEDS: Option<Permission> = Some(Permission::Read);
    }
    impl Need for Operate {
        const NEEDS: Option<Permission> = Some(Permission::Operate);
    }
    impl Need for Backup {
        const NEEDS: Option<Permission> = Some(Permission::Backup);
    }
    impl Need for Admin {
        const NEEDS: Option<Permission> = Some(Permission::Admin);
    }
}

/// The session cookie of the web console.
pub const SESSION_COOKIE: &str = "lifeboat_session";
/// The header a cookie-authenticated change must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

pub struct Auth<N: perm::Need = perm::Any> {
    pub principal: Principal,
    pub bearer: String,
    /// The bearer came from the session cookie, not a header.
    pub by_cookie: bool,
    _need: std::marker::PhantomData<N>,
}

/// The CSRF token of a session: derived from its secret bearer, so it
/// needs no storage, and useless without the cookie.
pub fn csrf_token(bearer: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::new().chain_update(b"lifeboat-csrf\0").chain_update(bearer.as_bytes()).finalize();
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl<N: perm::Need> Auth<N> {
    fn require(&self, p: Permission) -> Result<(), ApiErr> {
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

impl<N: perm::Need> FromRequest for Auth<N> {
    type Error = ApiErr;
    type Future = Ready<Result<Auth<N>, ApiErr>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let res = authenticate(req).and_then(|a| {
            if let Some(p) = N::NEEDS {
                a.require(p)?;
            }
            Ok(a)
        });
        if res.is_err() {
            drain(payload.take());
        }
        ready(res)
    }
}

/// Reads (a bounded part of) a refused request's body in the background.
/// Over HTTP/2, a request body dropped unread resets the stream, and the
/// client sees a framing error instead of our 401/403.
fn drain(mut body: Payload) {
    actix_web::rt::spawn(async move {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.len();
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    });
}

fn authenticate<N: perm::Need>(req: &HttpRequest) -> Result<Auth<N>, ApiErr> {
    let st = req.app_data::<web::Data<ApiState>>().ok_or_else(|| ApiErr::internal("no API state"))?;
    let header = req.headers().get(actix_web::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let (bearer, by_cookie) = match (header, req.cookie(SESSION_COOKIE)) {
        (Some(h), _) => (h.strip_prefix("Bearer ").map(str::trim).ok_or_else(|| ApiErr::Unauthorized("the Authorization header must be `Bearer <token>`".into()))?.to_string(), false),
        (None, Some(c)) => (c.value().to_string(), true),
        (None, None) => return Err(ApiErr::Unauthorized("authentication required: send `Authorization: Bearer <token>` (POST /api/login gives one)".into())),
    };
    let principal = st.auth.authenticate(&bearer).ok_or_else(|| ApiErr::Unauthorized("the token is invalid, revoked or expired: log in again or create a new API token".into()))?;
    if by_cookie && !req.method().is_safe() {
        let sent = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !constant_time_eq(sent.as_bytes(), csrf_token(&bearer).as_bytes()) {
            return Err(ApiErr::Forbidden("this request changes something and came with the session cookie but without its X-CSRF-Token header (GET /api/session gives it): reload the page".into()));
        }
    }
    Ok(Auth { principal, bearer, by_cookie, _need: std::marker::PhantomData })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
