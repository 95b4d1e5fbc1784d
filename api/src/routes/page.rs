//! The web console at `/`: the embedded app's files (lifeboat-web), the
//! app's page for any other path outside `/api/` (it routes in the
//! browser), and the headers that keep the page to itself.

use actix_web::http::{header, Method};
use actix_web::{HttpRequest, HttpResponse};

/// Only our own files, no inline script or style, no framing: an
/// injected `<script>` or `style=` does nothing, and no other site can
/// frame the console to trick a click.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Answers a request no API route took: a console file, the console's
/// page, or the API's JSON 404.
pub async fn fallback(req: HttpRequest) -> Result<HttpResponse, crate::error::ApiErr> {
    let path = req.path();
    if path.starts_with("/api/") || path == "/api" || !(req.method() == Method::GET || req.method() == Method::HEAD) {
        return crate::not_found(req).await;
    }
    let rel = path.trim_start_matches('/');
    let (name, bytes, cache) = match lifeboat_web::file(rel) {
        // Vite names them by content hash: a new build has new names.
        Some(b) if rel.starts_with("assets/") => (rel, b, "public, max-age=31536000, immutable"),
        Some(b) if !rel.is_empty() => (rel, b, "no-cache"),
        // A missing asset is a 404; any other path is a page of the app.
        _ if rel.starts_with("assets/") => return crate::not_found(req).await,
        _ => match lifeboat_web::file("index.html") {
            Some(b) => ("index.html", b, "no-cache"),
            None => {
                return Ok(HttpResponse::ServiceUnavailable()
                    .content_type("text/plain; charset=utf-8")
                    .body("this lifeboat binary was built without its web console (web/app was missing); use the API or the CLI\n"))
            }
        },
    };
    Ok(HttpResponse::Ok()
        .content_type(lifeboat_web::content_type(name))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(bytes))
}
