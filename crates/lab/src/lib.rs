//! The verification lab: proves a VM backup boots, without touching
//! production.
//!
//! - `net`: a lab network per run: its own network namespace, a bridge,
//!   taps, an nftables ruleset; nothing routes out, and what a run leaves
//!   after a crash is swept at the next start.
//! - `verify`: boots the backups of a run straight from their
//!   instant-restore exports (NBD over a unix socket, throw-away
//!   overlays) inside the lab, probes them (ping, heartbeat, screenshot,
//!   scripts) and shuts them down.
//! - `screen`: whether a screenshot shows a booted guest.
//! - `report`: the run's report, JSON and a self-contained HTML page.
//!
//! No actix here; the daemon's `Lab` actor and the CLI drive it.

pub mod net;
pub mod report;
pub mod screen;
pub mod verify;

pub use report::{LabReport, Outcome, Step, VmReport};
pub use verify::{verify, LabVm, Probes, VerifyOptions};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("lab network: {0}")]
    Net(String),
    #[error("{0}")]
    Invalid(String),
    #[error("probe: {0}")]
    Probe(String),
}
