//! Appliance settings, admin only: the SMTP relay for report mails (the
//! relay password is write-only, GET shows it masked) and the TLS
//! certificate's fingerprint.

use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{delete, get, post, put, web, HttpResponse};
use lifeboat_actors::{SendTestMail, SetSmtpSettings};
use lifeboat_api_types::{ApiError, SmtpSettings, TlsInfo};
use lifeboat_notify::{Mailer, NotifyError};

/// The SMTP relay for report mails, password masked.
#[utoipa::path(tag = "settings", security(("bearer" = [])),
    responses((status = 200, body = SmtpSettings), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/settings/smtp")]
pub async fn get_smtp(_auth: Auth<perm::Admin>, st: web::Data<ApiState>) -> Result<web::Json<SmtpSettings>, ApiErr> {
    let s = st.settings.smtp().ok_or_else(|| ApiErr::NotFound("no SMTP relay configured: PUT /api/settings/smtp sets one".into()))?;
    Ok(web::Json(s.masked()))
}

/// Set the SMTP relay. A password left out or sent back masked keeps the
/// stored one; an empty password removes it.
#[utoipa::path(tag = "settings", security(("bearer" = [])), request_body = SmtpSettings,
    responses((status = 200, body = SmtpSettings), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[put("/api/settings/smtp")]
pub async fn put_smtp(_auth: Auth<perm::Admin>, st: web::Data<ApiState>, body: web::Json<SmtpSettings>) -> Result<web::Json<SmtpSettings>, ApiErr> {
    let mut s = body.into_inner();
    s.keep_password_from(st.settings.smtp().as_ref());
    // Mailer::new checks every field and reads the CA file, if any.
    let check = s.clone();
    web::block(move || Mailer::new(&check).map(drop)).await.map_err(ApiErr::internal)?.map_err(|e| ApiErr::BadRequest(e.to_string()))?;
    let store = st.settings.clone();
    let stored = s.clone();
    web::block(move || store.set_smtp(Some(stored))).await.map_err(ApiErr::internal)??;
    st.notifier.send(SetSmtpSettings(Some(s.clone()))).await.map_err(ApiErr::internal)?;
    tracing::info!(server = %s.server(), security = ?s.security, recipients = s.to.len(), "SMTP settings changed");
    Ok(web::Json(s.masked()))
}

/// Remove the SMTP relay: no more report mails.
#[utoipa::path(tag = "settings", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[delete("/api/settings/smtp")]
pub async fn delete_smtp(_auth: Auth<perm::Admin>, st: web::Data<ApiState>) -> Result<HttpResponse, ApiErr> {
    let store = st.settings.clone();
    web::block(move || store.set_smtp(None)).await.map_err(ApiErr::internal)??;
    st.notifier.send(SetSmtpSettings(None)).await.map_err(ApiErr::internal)?;
    tracing::info!("SMTP settings removed");
    Ok(HttpResponse::NoContent().finish())
}

/// Send a test mail through the stored relay; a failure says what the
/// relay answered (502).
#[utoipa::path(tag = "settings", security(("bearer" = [])),
    responses((status = 204, description = "the relay took the mail"), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 502, body = ApiError)))]
#[post("/api/settings/smtp/test")]
pub async fn test_smtp(_auth: Auth<perm::Admin>, st: web::Data<ApiState>) -> Result<HttpResponse, ApiErr> {
    let settings = st.settings.smtp().ok_or_else(|| ApiErr::NotFound("no SMTP relay configured: PUT /api/settings/smtp sets one".into()))?;
    match st.notifier.send(SendTestMail { settings: Some(settings) }).await.map_err(ApiErr::internal)? {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(e @ (NotifyError::Invalid(_) | NotifyError::CaFile { .. })) => Err(ApiErr::BadRequest(e.to_string())),
        Err(e) => Err(ApiErr::BadGateway(e.to_string())),
    }
}

/// The certificate the API serves: its SHA-256 fingerprint, to compare
/// with what a browser or `lifeboat remote` shows before trusting it.
#[utoipa::path(tag = "settings", security(("bearer" = [])),
    responses((status = 200, body = TlsInfo), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[get("/api/settings/tls")]
pub async fn tls(_auth: Auth<perm::Admin>, st: web::Data<ApiState>) -> web::Json<TlsInfo> {
    web::Json(TlsInfo { fingerprint: st.tls_fingerprint.clone() })
}
