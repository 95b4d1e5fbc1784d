//! `lifeboat serve`: the appliance daemon (actors + REST API).

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Configuration file (default /etc/lifeboat/lifeboat.toml; without
    /// one every key takes its default)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Overrides `state_dir` of the config
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Overrides `listen` (the TLS listener)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Overrides `listen_plain` (loopback only)
    #[arg(long, value_name = "ADDR")]
    pub listen_plain: Option<SocketAddr>,
}

pub fn run(a: ServeArgs) -> anyhow::Result<u8> {
    let mut cfg = lifeboat_state::Config::load(a.config.as_deref())?;
    if let Some(d) = a.state_dir {
        cfg.state_dir = d;
    }
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if let Some(p) = a.listen_plain {
        if !p.ip().is_loopback() {
            anyhow::bail!("--listen-plain {p}: plain HTTP is only allowed on a loopback address");
        }
        cfg.listen_plain = Some(p);
    }
    let state_dir = cfg.state_dir.clone();
    // A daemon or `vm files` killed while reading a VM's files leaves
    // mounts and loop devices; undo those before serving.
    lifeboat_vmfiles::clean_stale();
    actix_web::rt::System::new()
        .block_on(lifeboat_api::daemon::run(cfg, |s| {
            println!("lifeboat: API on https://{} (certificate SHA-256 fingerprint {})", s.https, s.fingerprint);
            if let Some(h) = s.http {
                println!("lifeboat: plain HTTP on http://{h} (loopback only)");
            }
            let pw = state_dir.join("initial-admin-password");
            if pw.exists() {
                println!("lifeboat: the first admin password is in {} (readable by root only)", pw.display());
            }
            crate::systemd::notify_ready();
            if let Some(every) = crate::systemd::watchdog_interval() {
                start_watchdog(s.health.clone(), every);
            }
        }))
        .context("lifeboat serve")?;
    Ok(0)
}

/// Pings systemd's watchdog each time the health actor answers, so a
/// daemon whose actor system hangs stops pinging and is restarted.
fn start_watchdog(health: actix::Addr<lifeboat_actors::HealthActor>, every: std::time::Duration) {
    actix::spawn(async move {
        loop {
            match tokio::time::timeout(every, health.send(lifeboat_actors::GetHealth)).await {
                Ok(Ok(_)) => crate::systemd::notify_watchdog(),
                Ok(Err(e)) => tracing::error!("watchdog: the health actor is gone: {e}"),
                Err(_) => tracing::error!("watchdog: the health actor did not answer within {every:?}"),
            }
            tokio::time::sleep(every).await;
        }
    });
}
