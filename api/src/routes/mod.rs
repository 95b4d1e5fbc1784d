//! One file per resource. Each handler takes `Auth` first (except login
//! and health) and names its permission.

pub mod agent;
pub mod browse;
pub mod cdp;
pub mod datastores;
pub mod events;
pub mod exports;
pub mod health;
pub mod jobs;
pub mod labs;
pub mod page;
pub mod schedules;
pub mod session;
pub mod settings;
pub mod snapshots;
pub mod tokens;
pub mod vms;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(session::login)
        .service(session::logout)
        .service(session::open)
        .service(session::current)
        .service(session::close)
        .service(health::history)
        .service(settings::tls)
        .service(browse::tree)
        .service(browse::download)
        .service(snapshots::forget_preview)
        .service(cdp::list)
        .service(cdp::get)
        .service(cdp::bookmark)
        .service(cdp::export)
        .service(session::change_password)
        .service(health::health)
        .service(health::details)
        .service(settings::get_smtp)
        .service(settings::put_smtp)
        .service(settings::delete_smtp)
        .service(settings::test_smtp)
        .service(datastores::list)
        .service(datastores::create)
        .service(datastores::get)
        .service(snapshots::list)
        .service(snapshots::delete)
        .service(snapshots::restore)
        .service(snapshots::vm_file_download)
        .service(snapshots::vm_files_archive)
        .service(snapshots::vm_files)
        .service(snapshots::vm_restore_files)
        .service(snapshots::lab_reports)
        .service(snapshots::lab_report_file)
        .service(jobs::list)
        .service(jobs::start)
        .service(jobs::get)
        .service(jobs::cancel)
        .service(jobs::log)
        .service(schedules::list)
        .service(schedules::create)
        .service(schedules::get)
        .service(schedules::update)
        .service(schedules::delete)
        .service(schedules::run_now)
        .service(tokens::list)
        .service(tokens::create)
        .service(tokens::revoke)
        .service(tokens::list_agents)
        .service(tokens::register_agent)
        .service(tokens::revoke_agent)
        .service(agent::open)
        .service(agent::missing)
        .service(agent::put_pack)
        .service(agent::tree)
        .service(agent::commit)
        .service(agent::close)
        .service(labs::list)
        .service(labs::create)
        .service(labs::get)
        .service(labs::update)
        .service(labs::delete)
        .service(labs::run)
        .service(labs::runs)
        .service(labs::running)
        .service(vms::list)
        .service(vms::register)
        .service(vms::unregister)
        .service(exports::list)
        .service(exports::create)
        .service(exports::delete)
        .service(events::stream)
        .service(crate::openapi::serve_spec);
}
