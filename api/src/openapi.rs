//! The OpenAPI document, generated from the handlers' annotations and
//! the types in `lifeboat-api-types`. A test keeps docs/openapi.json in
//! step with it and calls every path without a token.

use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::routes;
use actix_web::{get, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Lifeboat API", description = "Backup and disaster-recovery appliance. Authenticate with `Authorization: Bearer <token>`: a session token from POST /api/login or an API token."),
    paths(
        routes::session::login, routes::session::logout, routes::session::change_password, routes::session::open, routes::session::current, routes::session::close,
        routes::health::health, routes::health::details, routes::health::history, routes::settings::tls,
        routes::settings::get_smtp, routes::settings::put_smtp, routes::settings::delete_smtp, routes::settings::test_smtp,
        routes::datastores::list, routes::datastores::create, routes::datastores::get,
        routes::snapshots::list, routes::snapshots::delete, routes::browse::tree, routes::browse::download, routes::snapshots::forget_preview, routes::snapshots::restore, routes::snapshots::vm_files, routes::snapshots::vm_file_download, routes::snapshots::vm_files_archive, routes::snapshots::vm_restore_files, routes::snapshots::lab_reports, routes::snapshots::lab_report_file,
        routes::jobs::list, routes::jobs::start, routes::jobs::get, routes::jobs::cancel, routes::jobs::log,
        routes::schedules::list, routes::schedules::create, routes::schedules::get, routes::schedules::update,
        routes::schedules::delete, routes::schedules::run_now,
        routes::tokens::list, routes::tokens::create, routes::tokens::revoke,
        routes::tokens::list_agents, routes::tokens::register_agent, routes::tokens::revoke_agent,
        routes::agent::open, routes::agent::missing, routes::agent::put_pack, routes::agent::tree, routes::agent::commit, routes::agent::close,
        routes::labs::list, routes::labs::create, routes::labs::get, routes::labs::update, routes::labs::delete, routes::labs::run, routes::labs::runs, routes::labs::running,
        routes::vms::list, routes::vms::register, routes::vms::unregister,
        routes::exports::list, routes::exports::create, routes::exports::delete,
        routes::cdp::list, routes::cdp::get, routes::cdp::bookmark, routes::cdp::export,
        routes::events::stream,
        serve_spec,
    ),
    components(schemas(lifeboat_api_types::Event, routes::tokens::AgentRegister)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// This document.
#[utoipa::path(tag = "meta", security(("bearer" = [])),
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json"), (status = 401, body = lifeboat_api_types::ApiError)))]
#[get("/api/openapi.json")]
pub async fn serve_spec(_auth: Auth<perm::Read>) -> Result<HttpResponse, ApiErr> {
    Ok(HttpResponse::Ok().content_type("application/json").body(document()))
}

pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes")
}
