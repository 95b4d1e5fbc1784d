//! Lab verification job: boot VM snapshots in an isolated lab network and
//! probe them (`lifeboat_lab::verify`); the report (JSON, HTML,
//! screenshots) lands in `<datastore>/lab-reports/<lab id>/`, served by
//! `GET /api/datastores/{name}/lab-reports/{lab id}/report.html`.

use super::{err, JobFailure, JobHandle, JobOutput, JobResult};
use crate::lab::LabRuns;
use lifeboat_api_types::{LabNetworkSpec, LabRunInfo, LabVmSpec};
use lifeboat_lab::{LabVm, Probes, VerifyOptions};
use lifeboat_store::Datastore;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// One run, as the job spec and the daemon's settings give it.
pub struct Request<'a> {
    /// The job's id.
    pub job: &'a str,
    /// The datastore's name.
    pub datastore: &'a str,
    /// The lab definition it runs, if any.
    pub lab: Option<&'a str>,
    /// The application group, in boot order.
    pub vms: &'a [LabVmSpec],
    /// Comma-separated probes.
    pub probes: &'a str,
    /// Seconds from power-on to answering.
    pub boot_timeout: u64,
    /// Masquerade map, DNS, DHCP.
    pub network: &'a LabNetworkSpec,
    /// The configured accelerator.
    pub accel: lifeboat_qemu::Accel,
    /// Where script probes come from (`lab_scripts_dir`).
    pub scripts_dir: &'a std::path::Path,
    /// The daemon's live runs (the `Lab` actor's), if it keeps them.
    pub runs: Option<&'a LabRuns>,
}

pub fn run(ds: &Arc<Datastore>, r: &Request, h: &JobHandle) -> JobResult {
    let Request { vms, probes, boot_timeout, network, accel, scripts_dir, .. } = *r;
    let mut probes: Probes = probes.parse().map_err(JobFailure::Invalid)?;
    // Scripts run as root inside the lab: only the admin's, from the
    // configured directory, by plain name.
    for s in probes.scripts.iter_mut() {
        let name = s.to_string_lossy().into_owned();
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(JobFailure::Invalid(format!("script {name:?}: give the plain name of a script in {}", scripts_dir.display())));
        }
        *s = scripts_dir.join(&name);
        if !s.is_file() {
            return Err(JobFailure::NotFound(format!("script {name:?} is not in {} (lab_scripts_dir)", scripts_dir.display())));
        }
    }
    // "The newest backup" includes those another process (the CLI on the
    // appliance, an agent session) committed since this view was opened.
    ds.refresh_index()?;
    let mut lab_vms = Vec::new();
    for v in vms {
        lab_vms.push(LabVm { snapshot: ds.resolve_snapshot(&v.snapshot)?.0.to_hex(), ip: v.ip.clone(), delay: Duration::from_secs(v.delay) });
    }
    let id = format!("{}-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S"), &lifeboat_store::PackId::random().to_hex()[..6]);
    let report_dir = ds.root().join("lab-reports").join(&id);
    // Listed while it runs; a clean stop of the daemon cancels it through
    // the job's own flag and waits for its VMs and network to go.
    let _live = r.runs.map(|runs| {
        let info = LabRunInfo {
            id: id.clone(),
            job: r.job.to_string(),
            datastore: r.datastore.to_string(),
            lab: r.lab.map(str::to_string),
            vms: vms.iter().map(|v| v.snapshot.clone()).collect(),
            netns: lifeboat_lab::net::netns_name(&id),
            started: chrono::Utc::now(),
        };
        runs.register(info, h.progress.cancel.clone())
    });
    h.set_phase("verifying in the lab");
    h.log(&format!("lab {id}: {} VM(s)", lab_vms.len()));
    let p = &h.progress;
    p.total_files.store(lab_vms.len() as u64, Ordering::Relaxed);
    p.scan_done.store(true, Ordering::Relaxed);
    let opts = VerifyOptions {
        lab_id: id.clone(),
        vms: lab_vms,
        probes,
        boot_timeout: Duration::from_secs(boot_timeout),
        workdir: ds.root().join("tmp").join(format!("lab-{id}")),
        report_dir: report_dir.clone(),
        markers: PathBuf::from(lifeboat_lab::net::MARKERS),
        accel,
        probe_addrs: Vec::new(),
        masquerade: lifeboat_lab::parse_masquerade(network.masquerade.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(JobFailure::Invalid)?,
        dns: lifeboat_lab::parse_dns(network.dns.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(JobFailure::Invalid)?,
        dhcp: network.dhcp,
        cancel: p.cancel.clone(),
    };
    let rep = lifeboat_lab::verify(ds.clone(), &opts).map_err(err)?;
    rep.write(&report_dir).map_err(|e| JobFailure::Failed(format!("writing the report into {}: {e}", report_dir.display())))?;
    p.files.store(rep.vms.len() as u64, Ordering::Relaxed);
    for line in rep.summary_text().lines() {
        h.log(line);
    }
    let mut result = serde_json::to_value(&rep).map_err(err)?;
    result["report_dir"] = serde_json::json!(report_dir.display().to_string());
    if !rep.passed {
        h.set_failed_result(result);
        let failed: Vec<String> = rep
            .vms
            .iter()
            .filter(|v| !v.passed)
            .map(|v| format!("{} failed at {}", v.vm, v.steps.iter().filter(|s| s.outcome == lifeboat_lab::Outcome::Fail).map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")))
            .collect();
        return Err(JobFailure::Failed(format!(
            "lab {id}: {} (report {id} in GET /api/datastores/<name>/lab-reports; on the appliance {})",
            failed.join("; "),
            report_dir.join("report.html").display()
        )));
    }
    Ok(JobOutput { result, warnings: vec![] })
}
