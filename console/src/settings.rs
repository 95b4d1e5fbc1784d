//! The console's settings as values: parsed and validated from what the
//! user typed, and rendered into the files they become (systemd-networkd
//! .network file, /etc/hostname, /etc/localtime, timesyncd drop-in).
//! Nothing here touches the system; `apply` writes prepared `FileChange`s.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A setting the user typed that cannot be used, with what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSetting {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidSetting {
    InvalidSetting { field, message: message.into() }
}

// ------------------------------------------------------------------ network

pub const NETWORK_FILE: &str = "etc/systemd/network/10-lifeboat.network";
pub const DEFAULT_INTERFACES: &str = "en* eth*";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticAddress {
    pub address: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    Dhcp,
    Static(StaticAddress),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSettings {
    /// systemd-networkd `Name=` match: interface names or globs.
    pub interfaces: String,
    pub mode: NetworkMode,
}

/// The raw text of the network form.
#[derive(Clone, Debug, Default)]
pub struct NetworkForm<'a> {
    pub dhcp: bool,
    pub interfaces: &'a str,
    pub address: &'a str,
    pub prefix: &'a str,
    pub gateway: &'a str,
    pub dns: &'a str,
}

fn parse_ip(field: &'static str, text: &str) -> Result<IpAddr, InvalidSetting> {
    text.trim().parse::<IpAddr>().map_err(|_| invalid(field, format!("\"{}\" is not an IP address (like 192.168.1.10 or fd00::10)", text.trim())))
}

fn in_subnet(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix as u32) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty())
}

impl NetworkSettings {
    pub fn parse(form: &NetworkForm) -> Result<Self, InvalidSetting> {
        let interfaces = form.interfaces.split_whitespace().collect::<Vec<_>>().join(" ");
        if interfaces.is_empty() {
            return Err(invalid("Interfaces", format!("name at least one interface or a pattern (default \"{DEFAULT_INTERFACES}\")")));
        }
        if let Some(bad) = interfaces.chars().find(|c| !(c.is_ascii_alphanumeric() || "*?[]-_.: ".contains(*c))) {
            return Err(invalid("Interfaces", format!("'{bad}' cannot be part of an interface name")));
        }
        if form.dhcp {
            return Ok(NetworkSettings { interfaces, mode: NetworkMode::Dhcp });
        }
        let address = parse_ip("Address", form.address)?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = form
            .prefix
            .trim()
            .trim_start_matches('/')
            .parse()
            .ok()
            .filter(|p| (1..=max).contains(p))
            .ok_or_else(|| invalid("Prefix", format!("\"{}\" is not a prefix length: give 1 to {max} (24 for 255.255.255.0)", form.prefix.trim())))?;
        if address.is_unspecified() || address.is_loopback() || address.is_multicast() {
            return Err(invalid("Address", format!("{address} cannot be a host address")));
        }
        if let IpAddr::V4(v4) = address {
            if prefix <= 30 {
                let host_bits = u32::from(v4) & !(u32::MAX << (32 - prefix as u32));
                let all = !(u32::MAX << (32 - prefix as u32));
                if host_bits == 0 || host_bits == all {
                    return Err(invalid("Address", format!("{address}/{prefix} is the network or broadcast address, not a host address")));
                }
            }
        }
        let gateway = match form.gateway.trim() {
            "" => None,
            g => {
                let gw = parse_ip("Gateway", g)?;
                if gw.is_ipv4() != address.is_ipv4() {
                    return Err(invalid("Gateway", format!("{gw} and the address {address} are not the same IP version")));
                }
                if gw == address {
                    return Err(invalid("Gateway", format!("{gw} is the appliance's own address")));
                }
                if !in_subnet(gw, address, prefix) {
                    return Err(invalid("Gateway", format!("{gw} is not in the network {address}/{prefix}")));
                }
                Some(gw)
            }
        };
        let dns = split_list(form.dns).map(|d| parse_ip("DNS servers", d)).collect::<Result<Vec<_>, _>>()?;
        Ok(NetworkSettings { interfaces, mode: NetworkMode::Static(StaticAddress { address, prefix, gateway, dns }) })
    }

    /// The systemd-networkd .network file.
    pub fn network_file(&self) -> String {
        let mut s = format!("# Written by the Lifeboat console.\n[Match]\nName={}\n\n[Network]\n", self.interfaces);
        match &self.mode {
            NetworkMode::Dhcp => s.push_str("DHCP=yes\n"),
            NetworkMode::Static(st) => {
                s.push_str(&format!("Address={}/{}\n", st.address, st.prefix));
                if let Some(gw) = st.gateway {
                    s.push_str(&format!("Gateway={gw}\n"));
                }
                for d in &st.dns {
                    s.push_str(&format!("DNS={d}\n"));
                }
            }
        }
        s
    }

    /// Reads the settings back from a .network file this module wrote.
    pub fn from_network_file(text: &str) -> Option<Self> {
        let mut interfaces = None;
        let mut dhcp = false;
        let (mut address, mut gateway, mut dns) = (None, None, Vec::new());
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else { continue };
            match k.trim() {
                "Name" => interfaces = Some(v.trim().to_string()),
                "DHCP" => dhcp = v.trim() == "yes",
                "Address" => address = Some(v.trim().to_string()),
                "Gateway" => gateway = v.trim().parse().ok(),
                "DNS" => dns.extend(v.trim().parse::<IpAddr>().ok()),
                _ => {}
            }
        }
        let interfaces = interfaces?;
        if dhcp {
            return Some(NetworkSettings { interfaces, mode: NetworkMode::Dhcp });
        }
        let (a, p) = address?.split_once('/').map(|(a, p)| (a.parse().ok(), p.parse().ok()))?;
        Some(NetworkSettings { interfaces, mode: NetworkMode::Static(StaticAddress { address: a?, prefix: p?, gateway, dns }) })
    }
}

impl fmt::Display for NetworkSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mode {
            NetworkMode::Dhcp => write!(f, "DHCP on {}", self.interfaces),
            NetworkMode::Static(st) => {
                write!(f, "{}/{} on {}", st.address, st.prefix, self.interfaces)?;
                if let Some(gw) = st.gateway {
                    write!(f, ", gateway {gw}")?;
                }
                if !st.dns.is_empty() {
                    let d: Vec<String> = st.dns.iter().map(|d| d.to_string()).collect();
                    write!(f, ", DNS {}", d.join(" "))?;
                }
                Ok(())
            }
        }
    }
}

// ----------------------------------------------------------------- hostname

/// A valid host name (RFC 1123): dot-separated labels of letters, digits
/// and inner hyphens, 1-63 characters each, 253 in all.
pub fn parse_hostname(text: &str) -> Result<String, InvalidSetting> {
    let name = text.trim();
    if name.is_empty() {
        return Err(invalid("Hostname", "type a name, like lifeboat or backup1.example.com"));
    }
    if name.len() > 253 {
        return Err(invalid("Hostname", "longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("Hostname", format!("\"{name}\": each dot-separated part must be 1 to 63 characters")));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(invalid("Hostname", format!("\"{name}\": '{c}' is not allowed (letters, digits and '-' only)")));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("Hostname", format!("\"{name}\": a part cannot start or end with '-'")));
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// /etc/hosts with the 127.0.1.1 line naming `hostname` (Debian's way),
/// keeping every other line of `old`.
pub fn hosts_file(old: &str, hostname: &str) -> String {
    let short = hostname.split('.').next().unwrap_or(hostname);
    let names = if short == hostname { hostname.to_string() } else { format!("{hostname} {short}") };
    let mut out = String::new();
    let mut has_localhost = false;
    for line in old.lines() {
        if line.split_whitespace().next() == Some("127.0.1.1") {
            continue;
        }
        if line.split_whitespace().next() == Some("127.0.0.1") {
            has_localhost = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !has_localhost {
        out.insert_str(0, "127.0.0.1\tlocalhost\n");
    }
    out.push_str(&format!("127.0.1.1\t{names}\n"));
    out
}

// --------------------------------------------------------------------- time

pub const TIMESYNCD_DROPIN: &str = "etc/systemd/timesyncd.conf.d/lifeboat.conf";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeSettings {
    /// IANA zone name: `UTC`, `Europe/Berlin`.
    pub zone: String,
    /// NTP servers; empty means the distribution's defaults.
    pub ntp: Vec<String>,
}

impl TimeSettings {
    /// `zoneinfo` is the zone database to check the name against
    /// (/usr/share/zoneinfo).
    pub fn parse(zone: &str, ntp: &str, zoneinfo: &Path) -> Result<Self, InvalidSetting> {
        let zone = zone.trim();
        if zone.is_empty() {
            return Err(invalid("Time zone", "type a zone like UTC or Europe/Berlin"));
        }
        let ok_chars = zone.chars().all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c));
        // UTC needs no zone file: without /etc/localtime the system is UTC.
        let utc = matches!(zone, "UTC" | "Etc/UTC");
        if !utc && (!ok_chars || zone.starts_with('/') || zone.split('/').any(|p| p.is_empty() || p == "..") || !zoneinfo.join(zone).is_file()) {
            return Err(invalid("Time zone", format!("\"{zone}\" is not a known time zone (like UTC, Europe/Berlin, America/New_York)")));
        }
        let ntp: Vec<String> = split_list(ntp).map(str::to_string).collect();
        for server in &ntp {
            if server.parse::<IpAddr>().is_err() && parse_hostname(server).is_err() {
                return Err(invalid("NTP servers", format!("\"{server}\" is neither a host name nor an IP address")));
            }
        }
        Ok(TimeSettings { zone: zone.to_string(), ntp })
    }

    pub fn timesyncd_dropin(&self) -> String {
        format!("# Written by the Lifeboat console; empty NTP= means the defaults.\n[Time]\nNTP={}\n", self.ntp.join(" "))
    }
}

// ----------------------------------------------------------------- password

pub const MIN_PASSWORD_LEN: usize = 8;

/// The admin password from the two fields, when they match and it is
/// long enough.
pub fn parse_password(first: &str, second: &str) -> Result<String, InvalidSetting> {
    if first != second {
        return Err(invalid("Password", "the two passwords do not match: type the same password twice"));
    }
    if first.chars().count() < MIN_PASSWORD_LEN {
        return Err(invalid("Password", format!("use at least {MIN_PASSWORD_LEN} characters")));
    }
    Ok(first.to_string())
}

// ------------------------------------------------------------- file changes

/// One file the console writes under the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileChange {
    /// Replace the file (path relative to the root) with this content.
    Write { path: PathBuf, content: String },
    /// Make the path a symlink to `target`.
    Symlink { path: PathBuf, target: PathBuf },
}

impl FileChange {
    pub fn path(&self) -> &Path {
        match self {
            FileChange::Write { path, .. } | FileChange::Symlink { path, .. } => path,
        }
    }

    /// Writes the change: a temporary file (or link) beside it, renamed
    /// over the old one, so a crash leaves the old or the new file.
    pub fn apply(&self, root: &Path) -> std::io::Result<()> {
        let dest = root.join(self.path());
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = dest.with_file_name(format!(".{}.lifeboat-tmp", dest.file_name().unwrap_or_default().to_string_lossy()));
        let _ = std::fs::remove_file(&tmp);
        match self {
            FileChange::Write { content, .. } => {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(content.as_bytes())?;
                f.sync_all()?;
            }
            FileChange::Symlink { target, .. } => std::os::unix::fs::symlink(target, &tmp)?,
        }
        std::fs::rename(&tmp, &dest)
    }
}

pub fn network_changes(net: &NetworkSettings) -> Vec<FileChange> {
    vec![FileChange::Write { path: NETWORK_FILE.into(), content: net.network_file() }]
}

pub fn hostname_changes(root: &Path, hostname: &str) -> Vec<FileChange> {
    let old_hosts = std::fs::read_to_string(root.join("etc/hosts")).unwrap_or_default();
    vec![FileChange::Write { path: "etc/hostname".into(), content: format!("{hostname}\n") }, FileChange::Write { path: "etc/hosts".into(), content: hosts_file(&old_hosts, hostname) }]
}

pub fn time_changes(time: &TimeSettings) -> Vec<FileChange> {
    vec![
        FileChange::Symlink { path: "etc/localtime".into(), target: Path::new("/usr/share/zoneinfo").join(&time.zone) },
        FileChange::Write { path: "etc/timezone".into(), content: format!("{}\n", time.zone) },
        FileChange::Write { path: TIMESYNCD_DROPIN.into(), content: time.timesyncd_dropin() },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form<'a>(address: &'a str, prefix: &'a str, gateway: &'a str, dns: &'a str) -> NetworkForm<'a> {
        NetworkForm { dhcp: false, interfaces: "en* eth*", address, prefix, gateway, dns }
    }

    #[test]
    fn static_network_renders_a_networkd_file_and_reads_back() {
        let net = NetworkSettings::parse(&form("192.168.7.20", "24", "192.168.7.1", "1.1.1.1, 9.9.9.9")).unwrap();
        let text = net.network_file();
        assert!(text.contains("[Match]\nName=en* eth*\n"), "{text}");
        assert!(text.contains("Address=192.168.7.20/24\nGateway=192.168.7.1\nDNS=1.1.1.1\nDNS=9.9.9.9\n"), "{text}");
        assert_eq!(NetworkSettings::from_network_file(&text), Some(net));
        let dhcp = NetworkSettings::parse(&NetworkForm { dhcp: true, interfaces: "eth0", ..Default::default() }).unwrap();
        assert!(dhcp.network_file().contains("DHCP=yes"));
        assert_eq!(NetworkSettings::from_network_file(&dhcp.network_file()), Some(dhcp));
    }

    #[test]
    fn bad_addresses_are_refused_with_the_field_named() {
        let e = NetworkSettings::parse(&form("300.1.2.3", "24", "", "")).unwrap_err();
        assert_eq!(e.field, "Address");
        assert!(e.to_string().contains("\"300.1.2.3\" is not an IP address"), "{e}");
        assert_eq!(NetworkSettings::parse(&form("10.0.0.5", "33", "", "")).unwrap_err().field, "Prefix");
        assert_eq!(NetworkSettings::parse(&form("10.0.0.5", "abc", "", "")).unwrap_err().field, "Prefix");
        assert_eq!(NetworkSettings::parse(&form("10.0.0.0", "24", "", "")).unwrap_err().field, "Address");
        assert_eq!(NetworkSettings::parse(&form("10.0.0.5", "24", "10.0.1.1", "")).unwrap_err().field, "Gateway");
        assert_eq!(NetworkSettings::parse(&form("10.0.0.5", "24", "10.0.0.1", "8.8.8")).unwrap_err().field, "DNS servers");
        assert!(NetworkSettings::parse(&form("fd00::5", "64", "fd00::1", "fd00::53")).is_ok());
    }

    #[test]
    fn hostnames_follow_rfc1123() {
        assert_eq!(parse_hostname(" Backup1.example.com ").unwrap(), "backup1.example.com");
        assert!(parse_hostname("bad_name").is_err());
        assert!(parse_hostname("-x").is_err());
        assert!(parse_hostname("").is_err());
        let hosts = hosts_file("127.0.0.1\tlocalhost\n127.0.1.1\told\n::1 localhost\n", "b1.example.com");
        assert_eq!(hosts, "127.0.0.1\tlocalhost\n::1 localhost\n127.0.1.1\tb1.example.com b1\n");
    }

    #[test]
    fn time_zones_are_checked_against_the_zone_database() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("Europe")).unwrap();
        std::fs::write(dir.path().join("Europe/Berlin"), "TZif").unwrap();
        let t = TimeSettings::parse("Europe/Berlin", "ntp1.example.com 192.0.2.1", dir.path()).unwrap();
        assert_eq!(t.ntp, vec!["ntp1.example.com", "192.0.2.1"]);
        assert!(TimeSettings::parse("Mars/Olympus", "", dir.path()).is_err());
        assert!(TimeSettings::parse("Etc/UTC", "", &dir.path().join("no-zoneinfo")).is_ok());
        assert!(TimeSettings::parse("../etc/passwd", "", dir.path()).is_err());
        assert!(TimeSettings::parse("Europe/Berlin", "bad_server!", dir.path()).is_err());
    }

    #[test]
    fn passwords_must_match_and_be_long_enough() {
        assert!(parse_password("correct horse", "correct horse").is_ok());
        assert!(parse_password("correct horse", "correct house").unwrap_err().message.contains("do not match"));
        assert!(parse_password("short", "short").is_err());
    }

    #[test]
    fn file_changes_replace_files_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let t = TimeSettings { zone: "UTC".into(), ntp: vec![] };
        for c in time_changes(&t) {
            c.apply(dir.path()).unwrap();
        }
        let t = TimeSettings { zone: "Europe/Berlin".into(), ntp: vec![] };
        for c in time_changes(&t) {
            c.apply(dir.path()).unwrap();
        }
        assert_eq!(std::fs::read_link(dir.path().join("etc/localtime")).unwrap(), Path::new("/usr/share/zoneinfo/Europe/Berlin"));
        assert_eq!(std::fs::read_to_string(dir.path().join("etc/timezone")).unwrap(), "Europe/Berlin\n");
    }
}
