//! `lifeboat lab ...`: prove that VM backups boot, in an isolated lab.

use crate::commands::open_datastore;
use crate::{ui, DatastoreArg, EXIT_ERROR};
use clap::Subcommand;
use lifeboat_lab::{LabVm, Probes, VerifyOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

// Markers live on tmpfs, so a reboot forgets them with the namespaces.
use lifeboat_lab::net::MARKERS;

#[derive(Subcommand)]
// Parsed once per process.
#[allow(clippy::large_enum_variant)]
pub enum LabCmd {
    /// Boot VM snapshots in a fresh isolated lab network straight from
    /// their instant-restore exports, probe them, and report. Several
    /// snapshots form an application group: they boot in the order given
    /// and are verified together. Exit 0 when every VM passed, 1 when one
    /// failed
    Verify {
        #[command(flatten)]
        ds: DatastoreArg,
        /// Snapshots (id, prefix or latest), booted in this order
        #[arg(required = true, value_name = "SNAPSHOT")]
        snapshots: Vec<String>,
        /// Probes: ping, heartbeat, screenshot, script=PATH (comma-separated)
        #[arg(long, default_value = "ping,heartbeat,screenshot")]
        probe: Probes,
        /// Seconds a guest may take from power-on to answering the probes
        #[arg(long, default_value_t = 180)]
        boot_timeout: u64,
        /// A VM's address in the lab, ADDR/PREFIX, in the order of the
        /// snapshots (repeat for each; `-` for none)
        #[arg(long = "ip", value_name = "ADDR/PREFIX")]
        ips: Vec<String>,
        /// Seconds to wait before booting each further VM of the group
        #[arg(long, default_value_t = 0)]
        delay: u64,
        /// The probes' own address on the lab bridge (default: the highest
        /// free host address of each VM's subnet)
        #[arg(long, value_name = "ADDR/PREFIX")]
        probe_ip: Vec<String>,
        /// Masquerade map: probes and scripts reach the guest at LAB under
        /// its production address PROD (repeat for each)
        #[arg(long = "masquerade", value_name = "PROD=LAB", value_parser = lifeboat_lab::split_pair)]
        masquerade: Vec<(String, String)>,
        /// A name the lab's DNS answers (repeat for each); scripts in the
        /// lab resolve through it
        #[arg(long = "dns", value_name = "NAME=ADDR", value_parser = lifeboat_lab::split_pair)]
        dns: Vec<(String, String)>,
        /// Serve DHCP in the lab (each VM gets its --ip for its MAC)
        #[arg(long)]
        dhcp: bool,
        /// Directory for report.json, report.html and the screenshots
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Accelerator: auto, kvm or tcg (default: qemu_accel, else auto)
        #[arg(long)]
        accel: Option<lifeboat_qemu::Accel>,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove what lab runs that were killed left behind (namespaces,
    /// taps, QEMU processes); also done before every run
    Cleanup,
}

pub fn run(cmd: LabCmd) -> anyhow::Result<u8> {
    match cmd {
        LabCmd::Cleanup => {
            let removed = lifeboat_lab::net::sweep_stale(std::path::Path::new(MARKERS));
            println!("removed {} lab networks{}", removed.len(), if removed.is_empty() { String::new() } else { format!(": {}", removed.join(", ")) });
            Ok(0)
        }
        LabCmd::Verify { ds, snapshots, probe, boot_timeout, ips, delay, probe_ip, masquerade, dns, dhcp, report, accel, json } => {
            if ips.len() > snapshots.len() {
                anyhow::bail!("{} --ip given for {} snapshots", ips.len(), snapshots.len());
            }
            let accel = match accel {
                Some(a) => a,
                None => lifeboat_state::Config::load(None)?.qemu_accel.parse().map_err(|e: String| anyhow::anyhow!(e))?,
            };
            let store = open_datastore(&ds)?;
            let id = format!("{}-{:04x}", chrono::Utc::now().format("%H%M%S"), std::process::id() & 0xffff);
            let report_dir = report.unwrap_or_else(|| store.root().join("lab-reports").join(&id));
            let vms = snapshots
                .iter()
                .enumerate()
                .map(|(i, s)| LabVm { snapshot: s.clone(), ip: ips.get(i).filter(|ip| ip.as_str() != "-").cloned(), delay: Duration::from_secs(if i > 0 { delay } else { 0 }) })
                .collect();
            let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
            ui::install_cancel_handler(&cancel);
            let opts = VerifyOptions {
                lab_id: id.clone(),
                vms,
                probes: probe,
                boot_timeout: Duration::from_secs(boot_timeout),
                workdir: store.root().join("tmp").join(format!("lab-{id}")),
                report_dir: report_dir.clone(),
                markers: PathBuf::from(MARKERS),
                accel,
                probe_addrs: probe_ip,
                masquerade: lifeboat_lab::parse_masquerade(masquerade.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(anyhow::Error::msg)?,
                dns: lifeboat_lab::parse_dns(dns.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(anyhow::Error::msg)?,
                dhcp,
                cancel,
            };
            if !json {
                eprintln!("verifying {} VM(s) in lab {id}...", snapshots.len());
            }
            let rep = lifeboat_lab::verify(store, &opts)?;
            rep.write(&report_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                print!("{}", rep.summary_text());
                println!("report: {}", report_dir.join("report.html").display());
            }
            Ok(if rep.passed { 0 } else { EXIT_ERROR })
        }
    }
}
