//! A lab network: one network namespace per lab run, a bridge inside it,
//! one tap per VM, and an nftables ruleset.
//!
//! Isolation comes first from what is *not* there: the namespace has no
//! link to any other namespace (no veth, no route), so a guest can reach
//! nothing but the bridge. The appliance's probes run inside the
//! namespace (its own address on the bridge), QEMU runs inside it too
//! (its taps live there), and the disks come over a unix socket, which
//! no network rule can open up. The nftables ruleset is the second wall:
//! nothing is forwarded, and the namespace's own stack talks only to the
//! lab's subnets. Two labs are two namespaces, so the same guest IP and
//! MAC in both never meet.
//!
//! Inside, optionally: a masquerade map (DNAT on the namespace's own
//! output, so probes and scripts reach a guest under its production
//! address), and dnsmasq on the bridge answering DNS (names the lab
//! defines; `/etc/netns/<ns>/resolv.conf` points the lab's own commands
//! at it) and DHCP (fixed leases by MAC for guests that expect DHCP).
//! A guest's address is learned from those leases or from the bridge's
//! neighbour table (`learned_addresses`).
//!
//! Everything a lab makes is named `lblab-<id>` and recorded in a marker
//! file with the owning pid, so a lab whose owner died (SIGKILL of the
//! daemon or CLI) is found and removed by [`sweep_stale`].

use crate::LabError;
use nftables::{batch::Batch, expr, schema, stmt, types};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Prefix of every lab namespace.
pub const NETNS_PREFIX: &str = "lblab-";

/// Where lab runs leave a marker per namespace (the owner's pid), so
/// [`sweep_stale`] can tell a live run's namespace from a dead one's;
/// the daemon and the CLI share it.
pub const MARKERS: &str = "/run/lifeboat/labs";
const BRIDGE: &str = "labbr0";
const TABLE: &str = "lifeboat_lab";
/// `ip netns exec` bind-mounts files from here over /etc (resolv.conf).
const NETNS_ETC: &str = "/etc/netns";

/// A lab's network namespace, bridge and firewall. Dropping it removes
/// all of it (and kills what still runs inside).
#[derive(Debug)]
pub struct LabNetwork {
    /// The lab id the network was created for.
    pub id: String,
    /// The namespace's name, `lblab-<id>`: for `ip netns exec` and
    /// `ip -n` (see [`LabNetwork::command`]).
    pub netns: String,
    /// The probe addresses on the bridge (`ADDR/PREFIX`); more may be
    /// added while probes run (a subnet learned from a guest).
    probe_addrs: std::sync::Mutex<Vec<String>>,
    marker: PathBuf,
    taps: usize,
    removed: bool,
    masquerade: Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    /// dnsmasq's lease file, when it runs.
    leases: Option<PathBuf>,
}

/// How a lab's network looks from inside.
#[derive(Clone, Debug, Default)]
pub struct NetSpec {
    /// Addresses the appliance's probes use on the lab bridge, one per
    /// guest subnet (`10.0.2.2/24`): typically the guests' gateway.
    pub probe_addrs: Vec<String>,
    /// Production address -> lab address: what the probes and scripts
    /// send to the first reaches the guest at the second.
    pub masquerade: Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    /// Names the lab's DNS answers (name -> address).
    pub dns: Vec<(String, std::net::Ipv4Addr)>,
    /// Serve DHCP on the bridge: these fixed leases (MAC -> address),
    /// and a pool in the first probe subnet for other clients.
    pub dhcp: Option<Vec<(String, std::net::Ipv4Addr)>>,
}

impl NetSpec {
    fn needs_dnsmasq(&self) -> bool {
        !self.dns.is_empty() || self.dhcp.is_some()
    }
}

/// `a.b.c.d/len` as (address, prefix length).
fn parse_cidr(s: &str) -> Option<(std::net::Ipv4Addr, u32)> {
    let (a, l) = s.split_once('/')?;
    Some((a.parse().ok()?, l.parse().ok().filter(|l: &u32| *l <= 32)?))
}

/// The DHCP pool of a probe subnet: its upper half, without the
/// broadcast address and the probe's own.
fn dhcp_pool(probe: &str) -> Option<(std::net::Ipv4Addr, std::net::Ipv4Addr, std::net::Ipv4Addr)> {
    let (a, len) = parse_cidr(probe)?;
    if !(8..=29).contains(&len) {
        return None;
    }
    let mask = u32::MAX << (32 - len);
    let net = u32::from(a) & mask;
    let size = !mask + 1;
    let (start, end) = (net + size / 2, net + size - 2);
    let end = if end == u32::from(a) { end - 1 } else { end };
    Some((start.into(), end.into(), mask.into()))
}

fn ip(args: &[&str]) -> Result<String, LabError> {
    run(Command::new("ip").args(args))
}

fn run(c: &mut Command) -> Result<String, LabError> {
    let o = c.stdin(Stdio::null()).output().map_err(|e| LabError::Net(format!("cannot run {:?}: {e} (install iproute2 and nftables)", c.get_program())))?;
    if !o.status.success() {
        let args: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        return Err(LabError::Net(format!("{} {}: {}", c.get_program().to_string_lossy(), args.join(" "), String::from_utf8_lossy(&o.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

impl LabNetwork {
    /// Makes the namespace `lblab-<id>` with loopback, the bridge, the
    /// probe addresses and the firewall. `markers` is a directory that
    /// outlives the process (for [`sweep_stale`]).
    pub fn create(id: &str, spec: &NetSpec, markers: &Path) -> Result<LabNetwork, LabError> {
        if id.is_empty() || id.len() > 24 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(LabError::Invalid(format!("lab id {id:?}: 1-24 letters, digits or '-'")));
        }
        let netns = netns_name(id);
        std::fs::create_dir_all(markers).map_err(|e| LabError::Net(format!("creating {}: {e}", markers.display())))?;
        let marker = markers.join(&netns);
        std::fs::write(&marker, format!("{}\n", std::process::id())).map_err(|e| LabError::Net(format!("writing {}: {e}", marker.display())))?;
        let mut lab = LabNetwork {
            id: id.to_string(),
            netns: netns.clone(),
            probe_addrs: std::sync::Mutex::new(spec.probe_addrs.clone()),
            marker,
            taps: 0,
            removed: false,
            masquerade: spec.masquerade.clone(),
            leases: None,
        };
        ip(&["netns", "add", &netns])?;
        lab.exec_ok(&["ip", "link", "set", "lo", "up"])?;
        // A fixed, locally administered MAC: a bridge otherwise takes the
        // lowest MAC of its ports, so a tap added mid-run could change it,
        // which flushes the neighbour table and leaves guests' ARP caches
        // pointing at the old address.
        lab.exec_ok(&["ip", "link", "add", BRIDGE, "address", "02:4c:42:00:00:01", "type", "bridge"])?;
        lab.exec_ok(&["ip", "link", "set", BRIDGE, "up"])?;
        for a in &spec.probe_addrs {
            lab.exec_ok(&["ip", "addr", "add", a, "dev", BRIDGE])?;
        }
        lab.apply_firewall()?;
        // A socket to a production address needs a route before the
        // output hook can rewrite it: onto the bridge, never out.
        for (prod, _) in &spec.masquerade {
            lab.exec_ok(&["ip", "route", "add", &format!("{prod}/32"), "dev", BRIDGE])?;
        }
        if spec.needs_dnsmasq() {
            lab.start_dnsmasq(spec)?;
        }
        Ok(lab)
    }

    /// dnsmasq inside the namespace, on the bridge only: DNS for the
    /// lab's names (nothing is forwarded anywhere), DHCP when asked.
    fn start_dnsmasq(&mut self, spec: &NetSpec) -> Result<(), LabError> {
        let probe = self.probe_addrs().first().cloned().ok_or_else(|| LabError::Invalid("DNS or DHCP in a lab needs a probe address (give a guest address)".into()))?;
        let (probe_ip, _) = parse_cidr(&probe).ok_or_else(|| LabError::Invalid(format!("probe address {probe}")))?;
        let etc = Path::new(NETNS_ETC).join(&self.netns);
        std::fs::create_dir_all(&etc).map_err(|e| LabError::Net(format!("creating {}: {e}", etc.display())))?;
        std::fs::write(etc.join("resolv.conf"), format!("nameserver {probe_ip}\n")).map_err(|e| LabError::Net(format!("writing {}/resolv.conf: {e}", etc.display())))?;
        let leases = etc.join("dnsmasq.leases");
        let mut c = self.command("dnsmasq");
        c.args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces", "--user=root", "--log-facility=-"]);
        c.arg(format!("--interface={BRIDGE}")).arg(format!("--pid-file={}", etc.join("dnsmasq.pid").display()));
        c.arg(format!("--dhcp-leasefile={}", leases.display()));
        for (name, ip) in &spec.dns {
            if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '-') {
                return Err(LabError::Invalid(format!("DNS name {name:?}: letters, digits, '.' and '-'")));
            }
            c.arg(format!("--address=/{name}/{ip}"));
        }
        if let Some(hosts) = &spec.dhcp {
            let (start, end, mask) = dhcp_pool(&probe).ok_or_else(|| LabError::Invalid(format!("probe subnet {probe} is too small or too large for a DHCP pool")))?;
            c.arg(format!("--dhcp-range={start},{end},{mask},1h"));
            c.arg(format!("--dhcp-option=option:router,{probe_ip}")).arg(format!("--dhcp-option=option:dns-server,{probe_ip}"));
            for (mac, ip) in hosts {
                if mac.len() != 17 || !mac.chars().all(|ch| ch.is_ascii_hexdigit() || ch == ':') {
                    return Err(LabError::Invalid(format!("MAC address {mac:?}")));
                }
                c.arg(format!("--dhcp-host={mac},{ip}"));
            }
        }
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // It runs inside the namespace; removing the namespace kills it.
        let mut child = c.spawn().map_err(|e| LabError::Net(format!("cannot run dnsmasq: {e} (install dnsmasq-base)")))?;
        // Up when it answers on port 53 of the probe address.
        let up = (0..50).any(|_| {
            if let Ok(Some(st)) = child.try_wait() {
                tracing::warn!("dnsmasq in {} exited: {st}", self.netns);
                return true;
            }
            let listening = self.exec_ok(&["ss", "-lun", "sport", "=", ":53"]).map(|o| o.contains(&probe_ip.to_string())).unwrap_or(false);
            if !listening {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            listening
        });
        if !up || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            return Err(LabError::Net(format!("dnsmasq did not start in {} (check the DHCP and DNS settings)", self.netns)));
        }
        // Reap it when the namespace removal kills it.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        self.leases = Some(leases);
        Ok(())
    }

    /// Guest addresses seen in the lab, by MAC: DHCP leases handed out,
    /// then the bridge's neighbour table (guests that spoke ARP).
    pub fn learned_addresses(&self) -> Vec<(String, std::net::Ipv4Addr)> {
        let mut out: Vec<(String, std::net::Ipv4Addr)> = Vec::new();
        if let Some(text) = self.leases.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
            // "<expiry> <mac> <ip> <hostname> <client id>"
            for l in text.lines() {
                let f: Vec<&str> = l.split_whitespace().collect();
                if let (Some(mac), Some(Ok(ip))) = (f.get(1), f.get(2).map(|s| s.parse())) {
                    out.push((mac.to_ascii_lowercase(), ip));
                }
            }
        }
        // "10.0.2.15 lladdr 52:54:00:12:34:56 REACHABLE"
        for l in self.exec_ok(&["ip", "-4", "neigh", "show", "dev", BRIDGE]).unwrap_or_default().lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if let (Some(Ok(ip)), Some(2)) = (f.first().map(|s| s.parse()), f.iter().position(|x| *x == "lladdr").map(|p| p + 1)) {
                let mac = f[2].to_ascii_lowercase();
                if !out.iter().any(|(m, _)| *m == mac) {
                    out.push((mac, ip));
                }
            }
        }
        out
    }

    /// A command run inside the lab's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, program]);
        c
    }

    fn exec_ok(&self, argv: &[&str]) -> Result<String, LabError> {
        let mut c = self.command(argv[0]);
        c.args(&argv[1..]);
        run(&mut c)
    }

    /// A new tap on the lab bridge, for one VM NIC; QEMU (started inside
    /// the namespace) opens it by name.
    pub fn add_tap(&mut self) -> Result<String, LabError> {
        let name = format!("labtap{}", self.taps);
        self.add_tap_named(&name)
    }

    /// A tap of a given name (at most 15 bytes) on the lab bridge.
    pub fn add_tap_named(&mut self, name: &str) -> Result<String, LabError> {
        let name = name.to_string();
        self.taps += 1;
        self.exec_ok(&["ip", "tuntap", "add", "dev", &name, "mode", "tap"])?;
        self.exec_ok(&["ip", "link", "set", &name, "master", BRIDGE])?;
        self.exec_ok(&["ip", "link", "set", &name, "up"])?;
        Ok(name)
    }

    /// Another probe address on the bridge (a subnet learned at run
    /// time); the firewall is rebuilt to allow it.
    pub fn add_probe_addr(&self, addr: &str) -> Result<(), LabError> {
        let mut addrs = self.probe_addrs.lock().unwrap_or_else(|e| e.into_inner());
        if addrs.iter().any(|a| a == addr) {
            return Ok(());
        }
        self.exec_ok(&["ip", "addr", "add", addr, "dev", BRIDGE])?;
        addrs.push(addr.to_string());
        drop(addrs);
        self.exec_ok(&["nft", "delete", "table", "inet", TABLE])?;
        self.apply_firewall()
    }

    /// The probe addresses on the bridge now.
    pub fn probe_addrs(&self) -> Vec<String> {
        self.probe_addrs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The subnets of the probe addresses, e.g. `10.0.2.0/24`.
    fn subnets(&self) -> Vec<(String, u32)> {
        self.probe_addrs()
            .iter()
            .filter_map(|a| {
                let (addr, len) = a.split_once('/')?;
                let addr: std::net::Ipv4Addr = addr.parse().ok()?;
                let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                Some((std::net::Ipv4Addr::from(u32::from(addr) & mask).to_string(), len))
            })
            .collect()
    }

    /// The ruleset, built with the `nftables` crate (nft's JSON API), table
    /// `inet lifeboat_lab`, every filter chain dropping by default:
    /// forward: nothing; input: loopback, replies, DHCP requests (UDP port
    /// 67) and anything from the lab subnets; output: loopback, the lab
    /// subnets and the limited broadcast address (DHCP offers). With a
    /// masquerade map, a NAT output chain rewrites production addresses
    /// to lab addresses before the filter sees them.
    pub fn ruleset(&self) -> schema::Nftables<'static> {
        let table = || Cow::Borrowed(TABLE);
        let mut b = Batch::new();
        b.add(schema::NfListObject::Table(schema::Table { family: types::NfFamily::INet, name: table(), ..Default::default() }));
        let chain = |name: &'static str, hook: types::NfHook| {
            schema::NfListObject::Chain(schema::Chain {
                family: types::NfFamily::INet,
                table: table(),
                name: Cow::Borrowed(name),
                _type: Some(types::NfChainType::Filter),
                hook: Some(hook),
                prio: Some(0),
                policy: Some(types::NfChainPolicy::Drop),
                ..Default::default()
            })
        };
        b.add(chain("lab_input", types::NfHook::Input));
        b.add(chain("lab_forward", types::NfHook::Forward));
        b.add(chain("lab_output", types::NfHook::Output));
        if !self.masquerade.is_empty() {
            // Before the filter (priority 0) sees it: the filter then
            // checks the lab address, as for any probe.
            b.add(schema::NfListObject::Chain(schema::Chain {
                family: types::NfFamily::INet,
                table: table(),
                name: Cow::Borrowed("lab_masquerade"),
                _type: Some(types::NfChainType::NAT),
                hook: Some(types::NfHook::Output),
                prio: Some(-100),
                policy: Some(types::NfChainPolicy::Accept),
                ..Default::default()
            }));
        }
        let rule = |chain: &'static str, expr: Vec<stmt::Statement<'static>>| {
            schema::NfListObject::Rule(schema::Rule { family: types::NfFamily::INet, table: table(), chain: Cow::Borrowed(chain), expr: Cow::Owned(expr), ..Default::default() })
        };
        let is_lo = |dir: &'static str| {
            stmt::Statement::Match(stmt::Match {
                left: expr::Expression::Named(expr::NamedExpression::Meta(expr::Meta { key: if dir == "in" { expr::MetaKey::Iifname } else { expr::MetaKey::Oifname } })),
                right: expr::Expression::String(Cow::Borrowed("lo")),
                op: stmt::Operator::EQ,
            })
        };
        let established = || {
            stmt::Statement::Match(stmt::Match {
                left: expr::Expression::Named(expr::NamedExpression::CT(expr::CT { key: Cow::Borrowed("state"), family: None, dir: None })),
                right: expr::Expression::List(vec![expr::Expression::String(Cow::Borrowed("established")), expr::Expression::String(Cow::Borrowed("related"))]),
                op: stmt::Operator::IN,
            })
        };
        let subnet = |field: &'static str, net: &str, len: u32| {
            stmt::Statement::Match(stmt::Match {
                left: expr::Expression::Named(expr::NamedExpression::Payload(expr::Payload::PayloadField(expr::PayloadField { protocol: Cow::Borrowed("ip"), field: Cow::Borrowed(field) }))),
                right: expr::Expression::Named(expr::NamedExpression::Prefix(expr::Prefix { addr: Box::new(expr::Expression::String(Cow::Owned(net.to_string()))), len })),
                op: stmt::Operator::EQ,
            })
        };
        let accept = || stmt::Statement::Accept(None);
        let host = |field: &'static str, a: &str| {
            stmt::Statement::Match(stmt::Match {
                left: expr::Expression::Named(expr::NamedExpression::Payload(expr::Payload::PayloadField(expr::PayloadField { protocol: Cow::Borrowed("ip"), field: Cow::Borrowed(field) }))),
                right: expr::Expression::String(Cow::Owned(a.to_string())),
                op: stmt::Operator::EQ,
            })
        };
        for (prod, lab) in &self.masquerade {
            b.add(rule(
                "lab_masquerade",
                vec![
                    host("daddr", &prod.to_string()),
                    stmt::Statement::DNAT(Some(stmt::NAT { addr: Some(expr::Expression::String(Cow::Owned(lab.to_string()))), family: Some(stmt::NATFamily::IP), port: None, flags: None })),
                ],
            ));
        }
        {
            // DHCP: a client without an address asks from 0.0.0.0 to the
            // broadcast address; offers may go to the broadcast address.
            let udp_dport = |port: u32| {
                stmt::Statement::Match(stmt::Match {
                    left: expr::Expression::Named(expr::NamedExpression::Payload(expr::Payload::PayloadField(expr::PayloadField { protocol: Cow::Borrowed("udp"), field: Cow::Borrowed("dport") }))),
                    right: expr::Expression::Number(port),
                    op: stmt::Operator::EQ,
                })
            };
            b.add(rule("lab_input", vec![udp_dport(67), accept()]));
            b.add(rule("lab_output", vec![host("daddr", "255.255.255.255"), accept()]));
        }
        b.add(rule("lab_input", vec![is_lo("in"), accept()]));
        b.add(rule("lab_input", vec![established(), accept()]));
        b.add(rule("lab_output", vec![is_lo("out"), accept()]));
        for (net, len) in self.subnets() {
            b.add(rule("lab_output", vec![subnet("daddr", &net, len), accept()]));
            b.add(rule("lab_input", vec![subnet("saddr", &net, len), accept()]));
        }
        // ARP is not IP: the inet family does not see it, so neighbours
        // still resolve on the bridge.
        b.to_nftables()
    }

    fn apply_firewall(&self) -> Result<(), LabError> {
        let json = serde_json::to_vec(&self.ruleset()).map_err(|e| LabError::Net(format!("nftables ruleset: {e}")))?;
        let mut c = self.command("nft");
        c.args(["-j", "-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| LabError::Net(format!("cannot run nft: {e} (install nftables)")))?;
        use std::io::Write;
        child.stdin.take().expect("piped").write_all(&json).map_err(|e| LabError::Net(format!("nft: {e}")))?;
        let o = child.wait_with_output().map_err(|e| LabError::Net(format!("nft: {e}")))?;
        if !o.status.success() {
            return Err(LabError::Net(format!("nft -j -f - in {}: {}", self.netns, String::from_utf8_lossy(&o.stderr).trim())));
        }
        Ok(())
    }

    /// The ruleset as nft lists it (for reports and tests).
    pub fn firewall_listing(&self) -> Result<String, LabError> {
        self.exec_ok(&["nft", "list", "table", "inet", TABLE])
    }

    /// Removes the namespace with everything in it, killing what still
    /// runs there first (a QEMU left by a failed step).
    pub fn remove(mut self) -> Result<(), LabError> {
        self.removed = true;
        remove_netns(&self.netns)?;
        let _ = std::fs::remove_file(&self.marker);
        Ok(())
    }
}

impl Drop for LabNetwork {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = remove_netns(&self.netns) {
                tracing::warn!("lab {}: {e}", self.id);
            }
            let _ = std::fs::remove_file(&self.marker);
        }
    }
}

fn remove_netns(netns: &str) -> Result<(), LabError> {
    let _ = std::fs::remove_dir_all(Path::new(NETNS_ETC).join(netns));
    if !netns_exists(netns) {
        return Ok(());
    }
    for _ in 0..50 {
        let pids = ip(&["netns", "pids", netns]).unwrap_or_default();
        // A zombie (its parent, the killed owner, gone and not reaped by
        // init yet) holds nothing; only live processes count.
        let pids: Vec<i32> = pids.split_whitespace().filter_map(|p| p.parse().ok()).filter(|p| !is_zombie(*p)).collect();
        if pids.is_empty() {
            break;
        }
        for p in pids {
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    ip(&["netns", "del", netns]).map(|_| ())
}

fn is_zombie(pid: i32) -> bool {
    // /proc/PID/stat: "pid (comm) S ..."; comm may hold spaces and parens.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.rsplit_once(')').is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'))).unwrap_or(true)
}

fn netns_exists(netns: &str) -> bool {
    Path::new("/run/netns").join(netns).exists()
}

/// The network namespace of the lab run `id`.
pub fn netns_name(id: &str) -> String {
    format!("{NETNS_PREFIX}{id}")
}

/// The directory of the unix sockets of the run in namespace `netns`
/// (beside its marker, so the sweep finds both).
pub fn socket_dir(markers: &Path, netns: &str) -> PathBuf {
    markers.join(format!("{netns}.d"))
}

/// Removes lab namespaces whose owner (the pid in their marker) is gone,
/// and namespaces with our prefix that have no marker at all, with their
/// socket directories. Returns their names. Run at daemon start and
/// before each CLI verification.
pub fn sweep_stale(markers: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir("/run/netns") else { return removed };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(NETNS_PREFIX) {
            continue;
        }
        let marker = markers.join(&name);
        let owner: Option<i32> = std::fs::read_to_string(&marker).ok().and_then(|s| s.trim().parse().ok());
        let alive = owner.is_some_and(|p| p as u32 != std::process::id() && Path::new(&format!("/proc/{p}")).exists()) || owner == Some(std::process::id() as i32);
        if alive {
            continue;
        }
        if remove_netns(&name).is_ok() {
            let _ = std::fs::remove_file(&marker);
            let _ = std::fs::remove_dir_all(socket_dir(markers, &name));
            removed.push(name);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_drops_by_default_and_opens_only_the_lab_subnets() {
        let lab = LabNetwork {
            id: "t".into(),
            netns: "lblab-t".into(),
            probe_addrs: std::sync::Mutex::new(vec!["10.0.2.2/24".into(), "192.168.7.1/16".into()]),
            marker: PathBuf::new(),
            taps: 0,
            removed: true,
            masquerade: vec![("192.168.50.10".parse().unwrap(), "10.0.2.15".parse().unwrap())],
            leases: None,
        };
        assert_eq!(lab.subnets(), [("10.0.2.0".to_string(), 24), ("192.168.0.0".to_string(), 16)]);
        let json = serde_json::to_string(&lab.ruleset()).unwrap();
        assert_eq!(json.matches("\"policy\":\"drop\"").count(), 3, "{json}");
        assert!(json.contains("\"hook\":\"forward\""));
        assert!(json.contains("\"addr\":\"10.0.2.0\",\"len\":24"), "{json}");
        assert!(!json.contains("0.0.0.0"), "{json}");
        // The masquerade map: DNAT on the namespace's own output only.
        assert!(json.contains("\"type\":\"nat\"") && json.contains("\"dnat\":{\"addr\":\"10.0.2.15\",\"family\":\"ip\"}"), "{json}");
        assert!(json.contains("\"right\":\"192.168.50.10\""), "{json}");
    }

    #[test]
    fn dhcp_pool_is_the_upper_half_without_the_probe() {
        let p = |s: &str| dhcp_pool(s).map(|(a, b, m)| (a.to_string(), b.to_string(), m.to_string()));
        assert_eq!(p("10.0.2.2/24"), Some(("10.0.2.128".into(), "10.0.2.254".into(), "255.255.255.0".into())));
        assert_eq!(p("10.0.2.254/24"), Some(("10.0.2.128".into(), "10.0.2.253".into(), "255.255.255.0".into())));
        assert_eq!(p("10.0.2.2/30"), None);
    }

    #[test]
    fn ids_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(LabNetwork::create("a b", &NetSpec::default(), dir.path()).is_err());
        assert!(LabNetwork::create("", &NetSpec::default(), dir.path()).is_err());
    }
}
