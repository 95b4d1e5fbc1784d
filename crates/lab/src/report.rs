//! A verification run's report: JSON for machines, one self-contained
//! HTML page for people (an auditor opens it with no network: styles,
//! screenshots and the timeline chart are inside the file).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The result of one step; serialized as `"pass"`, `"fail"` or `"skip"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The step did what it checks for.
    Pass,
    /// The step failed; the VM (and so the run) fails.
    Fail,
    /// The step did not run, or could not decide (e.g. no address to
    /// ping, the VM did not boot, the guest had to be stopped): does not
    /// fail the VM by itself.
    Skip,
}

impl Outcome {
    /// `pass`, `fail` or `skip`: the JSON spelling, also used in the
    /// summary text and as the HTML badge's CSS class.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Skip => "skip",
        }
    }
}

/// One step of one VM's verification.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    /// `boot`, `address` (only when the address had to be learned),
    /// `ping`, `heartbeat`, `screenshot`, `script:<file name>`, `shutdown`,
    /// in the order they ran.
    pub name: String,
    /// How the step ended.
    pub outcome: Outcome,
    /// When the step began.
    pub started: DateTime<Utc>,
    /// When the step's outcome was known.
    pub ended: DateTime<Utc>,
    /// One line for people: what was seen, or why it failed or was skipped
    /// (for a script, its last 5 output lines, after its exit code when it
    /// failed).
    pub detail: String,
}

/// One VM's verification: its steps, from boot to shutdown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmReport {
    /// The VM's name, from the backup's description.
    pub vm: String,
    /// The verified snapshot's id (64 hex digits; reports show the first 8).
    pub snapshot: String,
    /// The address probes used, when one was known.
    pub ip: Option<String>,
    /// No step failed (skipped steps do not count against it).
    pub passed: bool,
    /// When this VM's boot began.
    pub started: DateTime<Utc>,
    /// When it was shut down and its report closed.
    pub ended: DateTime<Utc>,
    /// The steps, in the order they ran.
    pub steps: Vec<Step>,
    /// File name of the screenshot beside the report.
    pub screenshot: Option<String>,
    /// Warnings from reading the backup's description.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl VmReport {
    /// The first step called `name` (see [`Step::name`]), if it ran.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// A whole verification run: what [`crate::verify()`] returns, written
/// as `report.json` (this struct) and `report.html` by [`LabReport::write`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabReport {
    /// The lab id: names the run, its namespace (`lblab-<id>`) and its
    /// report directory.
    pub lab: String,
    /// Every VM passed.
    pub passed: bool,
    /// When the run began.
    pub started: DateTime<Utc>,
    /// When the last VM was shut down and the lab network removed.
    pub ended: DateTime<Utc>,
    /// The accelerator QEMU used and why, one sentence (KVM, or TCG and
    /// why KVM was not usable).
    pub accelerator: String,
    /// One report per VM, in boot order.
    pub vms: Vec<VmReport>,
    /// The run was cancelled (by the job's cancel, or the daemon
    /// stopping): steps it cut short are skipped, and it did not pass.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

impl LabReport {
    /// How many VMs passed.
    pub fn passed_count(&self) -> usize {
        self.vms.iter().filter(|v| v.passed).count()
    }

    /// One line per VM, for a terminal or a mail body.
    pub fn summary_text(&self) -> String {
        let mut s = format!(
            "lab {}: {} ({} of {} VMs passed) in {:.1} s\n",
            self.lab,
            if self.cancelled {
                "CANCELLED"
            } else if self.passed {
                "PASSED"
            } else {
                "FAILED"
            },
            self.passed_count(),
            self.vms.len(),
            (self.ended - self.started).num_milliseconds() as f64 / 1000.0
        );
        for v in &self.vms {
            let steps: Vec<String> = v.steps.iter().map(|st| format!("{} {}", st.name, st.outcome.as_str())).collect();
            s.push_str(&format!("  {} ({}): {} - {}\n", v.vm, &v.snapshot[..v.snapshot.len().min(8)], if v.passed { "passed" } else { "FAILED" }, steps.join(", ")));
            for st in v.steps.iter().filter(|st| st.outcome == Outcome::Fail) {
                s.push_str(&format!("    {}: {}\n", st.name, st.detail));
            }
        }
        s
    }

    /// Writes `report.json` and `report.html` into `dir` (screenshots are
    /// already there, named in the VM reports).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self).expect("report serializes"))?;
        std::fs::write(dir.join("report.html"), self.html(dir))
    }

    /// The HTML page; screenshots are read from `dir` and embedded.
    pub fn html(&self, dir: &Path) -> String {
        use base64::Engine;
        let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
        let t = |d: &DateTime<Utc>| d.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let secs = |a: &DateTime<Utc>, b: &DateTime<Utc>| (*b - *a).num_milliseconds() as f64 / 1000.0;
        let badge = |o: Option<Outcome>| match o {
            Some(o) => format!("<span class=\"{0}\">{0}</span>", o.as_str()),
            None => "<span class=\"skip\">-</span>".into(),
        };
        let mut h = String::new();
        h.push_str("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Lifeboat verification report</title><style>");
        h.push_str("body{font:14px/1.4 sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}th{background:#f0f0f0}.pass{color:#fff;background:#2e7d32;padding:1px 6px;border-radius:3px}.fail{color:#fff;background:#c62828;padding:1px 6px;border-radius:3px}.skip{color:#333;background:#ddd;padding:1px 6px;border-radius:3px}img{max-width:640px;border:1px solid #999}h2{margin-top:2em}svg text{font:11px sans-serif}");
        h.push_str("</style></head><body>");
        h.push_str(&format!("<h1>Verification report: lab {}</h1>", esc(&self.lab)));
        h.push_str("<table id=\"summary\"><tr><th>State</th><th>VMs</th><th>Passed</th><th>Start</th><th>End</th><th>Duration</th><th>Accelerator</th></tr>");
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td><td>{}</td></tr></table>",
            if self.cancelled { "<span class=\"skip\">cancelled</span>".to_string() } else { badge(Some(if self.passed { Outcome::Pass } else { Outcome::Fail })) },
            self.vms.len(),
            self.passed_count(),
            t(&self.started),
            t(&self.ended),
            secs(&self.started, &self.ended),
            esc(&self.accelerator)
        ));
        h.push_str("<table id=\"vms\"><tr><th>VM</th><th>Snapshot</th><th>State</th><th>Start</th><th>End</th><th>Ping</th><th>Heartbeat</th><th>Screenshot</th></tr>");
        for v in &self.vms {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&v.vm),
                esc(&v.snapshot[..v.snapshot.len().min(8)]),
                badge(Some(if v.passed { Outcome::Pass } else { Outcome::Fail })),
                t(&v.started),
                t(&v.ended),
                badge(v.step("ping").map(|s| s.outcome)),
                badge(v.step("heartbeat").map(|s| s.outcome)),
                badge(v.step("screenshot").map(|s| s.outcome)),
            ));
        }
        h.push_str("</table>");
        for v in &self.vms {
            h.push_str(&format!("<h2>{}</h2>", esc(&v.vm)));
            if let Some(ip) = &v.ip {
                h.push_str(&format!("<p>Address in the lab: {}</p>", esc(ip)));
            }
            for w in &v.warnings {
                h.push_str(&format!("<p class=\"warning\">warning: {}</p>", esc(w)));
            }
            // The timeline: one bar per step, on the VM's own time axis.
            let total = secs(&v.started, &v.ended).max(0.001);
            let (w, row) = (720.0, 22.0);
            h.push_str(&format!("<svg class=\"timeline\" width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"step timeline of {}\">", w + 160.0, row * v.steps.len() as f64 + 24.0, esc(&v.vm)));
            for (i, st) in v.steps.iter().enumerate() {
                let x = 150.0 + w * secs(&v.started, &st.started) / total;
                let bw = (w * secs(&st.started, &st.ended) / total).max(2.0);
                let y = row * i as f64 + 4.0;
                let color = match st.outcome {
                    Outcome::Pass => "#2e7d32",
                    Outcome::Fail => "#c62828",
                    Outcome::Skip => "#9e9e9e",
                };
                h.push_str(&format!("<text x=\"0\" y=\"{}\">{}</text>", y + 14.0, esc(&st.name)));
                h.push_str(&format!(
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"16\" fill=\"{color}\"><title>{}: {} ({:.1} s) {}</title></rect>",
                    esc(&st.name),
                    st.outcome.as_str(),
                    secs(&st.started, &st.ended),
                    esc(&st.detail)
                ));
            }
            h.push_str(&format!(
                "<text x=\"150\" y=\"{}\">0 s</text><text x=\"{}\" y=\"{}\">{total:.1} s</text></svg>",
                row * v.steps.len() as f64 + 20.0,
                w + 110.0,
                row * v.steps.len() as f64 + 20.0
            ));
            h.push_str("<table class=\"steps\"><tr><th>Step</th><th>Result</th><th>Start</th><th>Duration</th><th>Detail</th></tr>");
            for st in &v.steps {
                h.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td><td>{}</td></tr>",
                    esc(&st.name),
                    badge(Some(st.outcome)),
                    t(&st.started),
                    secs(&st.started, &st.ended),
                    esc(&st.detail)
                ));
            }
            h.push_str("</table>");
            if let Some(png) = v.screenshot.as_ref().and_then(|f| std::fs::read(dir.join(f)).ok()) {
                h.push_str(&format!("<img alt=\"screenshot of {}\" src=\"data:image/png;base64,{}\">", esc(&v.vm), base64::engine::general_purpose::STANDARD.encode(png)));
            }
        }
        h.push_str("</body></html>\n");
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_self_contained_and_escapes() {
        let now = Utc::now();
        let st = |n: &str, o| Step { name: n.into(), outcome: o, started: now, ended: now + chrono::Duration::seconds(3), detail: "<b>x</b>".into() };
        let r = LabReport {
            lab: "l1".into(),
            passed: false,
            started: now,
            ended: now + chrono::Duration::seconds(10),
            accelerator: "tcg".into(),
            vms: vec![VmReport {
                vm: "web<1>".into(),
                snapshot: "0123456789abcdef".into(),
                ip: Some("10.0.2.15".into()),
                passed: false,
                started: now,
                ended: now + chrono::Duration::seconds(10),
                steps: vec![st("boot", Outcome::Pass), st("ping", Outcome::Fail)],
                screenshot: None,
                warnings: vec![],
            }],
            cancelled: false,
        };
        let h = r.html(Path::new("/nonexistent"));
        assert!(h.contains("web&lt;1&gt;") && !h.contains("<b>x</b>"));
        assert!(!h.contains("http://") && !h.contains("https://"), "no outside resources");
        assert!(h.contains("<svg class=\"timeline\""));
        assert!(r.summary_text().contains("FAILED") && r.summary_text().contains("ping: <b>x</b>"));
        let c = LabReport { cancelled: true, ..r };
        assert!(c.summary_text().starts_with("lab l1: CANCELLED"), "{}", c.summary_text());
        assert!(c.html(Path::new("/nonexistent")).contains(">cancelled<"));
    }
}
