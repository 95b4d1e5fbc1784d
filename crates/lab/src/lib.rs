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
#![warn(missing_docs)]

pub mod net;
pub mod report;
pub mod screen;
pub mod verify;

pub use report::{LabReport, Outcome, Step, VmReport};
pub use verify::{verify, LabVm, Probes, VerifyOptions};

/// Parses the `PROD=LAB` address pairs of a masquerade map (both IPv4)
/// into [`VerifyOptions::masquerade`]; the error names the pair that is
/// not two IPv4 addresses.
pub fn parse_masquerade<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)>, String> {
    pairs
        .into_iter()
        .map(|(p, l)| match (p.parse(), l.parse()) {
            (Ok(p), Ok(l)) => Ok((p, l)),
            _ => Err(format!("masquerade {p}={l}: give a production IPv4 address = a lab IPv4 address")),
        })
        .collect()
}

/// Parses the `NAME=ADDR` entries of the lab's DNS into
/// [`VerifyOptions::dns`]: a host name of at most 253 letters, digits,
/// `.` and `-`, and an IPv4 address; the error names the bad entry.
pub fn parse_dns<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Vec<(String, std::net::Ipv4Addr)>, String> {
    pairs
        .into_iter()
        .map(|(n, a)| {
            let ok = !n.is_empty() && n.len() <= 253 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            match a.parse() {
                Ok(a) if ok => Ok((n.to_string(), a)),
                _ => Err(format!("dns {n}={a}: give a host name (letters, digits, '.', '-') = an IPv4 address")),
            }
        })
        .collect()
}

/// Splits `K=V` at the first `=` into a pair (a clap value parser for
/// the `--masquerade` and `--dns` flags); an error when there is no `=`.
pub fn split_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn maps_parse_and_refuse_nonsense() {
        assert_eq!(super::parse_masquerade([("192.168.1.10", "10.0.2.15")]).unwrap()[0].1.to_string(), "10.0.2.15");
        assert!(super::parse_masquerade([("db", "10.0.2.15")]).is_err());
        assert_eq!(super::parse_dns([("db.prod.example", "192.168.1.10")]).unwrap()[0].0, "db.prod.example");
        assert!(super::parse_dns([("a/b", "192.168.1.10")]).is_err() && super::parse_dns([("db", "x")]).is_err());
    }
}

/// Why a lab run could not start, or a lab step could not be done. A VM
/// that fails a probe is not an error: that is a failed step in the report.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Setting up or removing the lab failed on the host: a command
    /// (`ip`, `nft`, dnsmasq, QEMU) failed or is missing, or the run's
    /// directories, sockets, logs or runtime could not be made. The text
    /// names the command or path; the host, not the input, needs fixing.
    #[error("lab network: {0}")]
    Net(String),
    /// The request is wrong: a bad lab id, address, MAC or DNS name, no VM
    /// at all, or a snapshot that does not exist or cannot be read.
    #[error("{0}")]
    Invalid(String),
    /// A probe's own material could not be read: a screenshot file that
    /// cannot be opened or decoded as a PNG.
    #[error("probe: {0}")]
    Probe(String),
}
