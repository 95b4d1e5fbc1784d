//! Remote ingest end to end, on real hosts: `lifeboat serve` in the root
//! network namespace; each agent in its own namespace behind a veth pair,
//! reaching the daemon over TLS (HTTP/2) at the host end's address.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A network namespace joined to the root namespace by a veth pair:
/// host end `10.X.Y.1/24`, namespace end `10.X.Y.2/24`. Removed on drop
/// (deleting the namespace deletes both veth ends).
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
}

fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(o.status.success(), "{} failed: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
}

impl Netns {
    fn new(tag: &str, subnet: u32) -> Netns {
        // Per-process names and addresses: tests of other checkouts may
        // run at the same time.
        let pid = std::process::id();
        let name = format!("lbag-{pid}-{tag}");
        let host_if = format!("lbh{}{tag}", pid % 100_000);
        let peer_if = format!("lbp{}{tag}", pid % 100_000);
        let net = format!("10.{}.{}", 100 + pid % 100, subnet);
        let ns = Netns { name: name.clone(), host_if: host_if.clone(), host_ip: format!("{net}.1") };
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if]);
        sh(&["ip", "link", "set", &peer_if, "netns", &name]);
        sh(&["ip", "addr", "add", &format!("{net}.1/24"), "dev", &host_if]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        sh(&["ip", "netns", "exec", &name, "ip", "addr", "add", &format!("{net}.2/24"), "dev", &peer_if]);
        sh(&["ip", "netns", "exec", &name, "ip", "link", "set", &peer_if, "up"]);
        sh(&["ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `lifeboat ARGS` run inside the namespace.
    fn lifeboat(&self) -> Command {
        let base = lb_cmd();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(base.get_program());
        c.stdin(std::process::Stdio::null());
        c.env_remove("LIFEBOAT_FAILPOINTS");
        c
    }

    /// Cuts the link (or mends it) the way a failing network does: every
    /// packet between the namespace and the host silently dropped by an
    /// nftables table of our own in the root namespace. (Taking the veth
    /// down would not do: the agent's kernel then drops its packets itself,
    /// which TCP rides out without ever timing out.)
    fn cut(&self, cut: bool) {
        let table = self.nft_table();
        if cut {
            sh(&["nft", "add", "table", "inet", &table]);
            for (chain, hook, dir) in [("input", "input", "iifname"), ("output", "output", "oifname")] {
                sh(&["nft", "add", "chain", "inet", &table, chain, &format!("{{ type filter hook {hook} priority 0; policy accept; }}")]);
                sh(&["nft", "add", "rule", "inet", &table, chain, dir, &self.host_if, "drop"]);
            }
        } else {
            sh(&["nft", "delete", "table", "inet", &table]);
        }
    }

    fn nft_table(&self) -> String {
        self.name.replace('-', "_")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("nft").args(["delete", "table", "inet", &self.nft_table()]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
    }
}

/// `lifeboat serve` with its own state dir, listening on every address of
/// the root namespace (the veth host ends included).
struct Daemon {
    _child: ChildGuard,
    port: u16,
    ds: Ds,
    admin: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port()
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let port = free_port();
        let state = dir.join("state");
        let ds_path = dir.join("datastore");
        Ds::init(&ds_path);
        // Small packs: the upload of the second agent's tree spans many of
        // them, so a link cut lands between pack uploads and inside one.
        let ds = Ds::at(&ds_path);
        ds.set_pack_target(2 << 20);
        let cfg = dir.join("lifeboat.toml");
        std::fs::write(&cfg, format!("state_dir = {:?}\nlisten = \"0.0.0.0:{port}\"\n\n[[datastore]]\nname = \"default\"\npath = {:?}\n", state.display().to_string(), ds_path.display().to_string()))
            .unwrap();
        let mut c = lb_cmd();
        c.args(["serve", "--config"]).arg(&cfg);
        let child = ChildGuard::spawn(c);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "lifeboat serve did not listen on {port} within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let password = std::fs::read_to_string(state.join("initial-admin-password")).unwrap().trim().to_string();
        let mut d = Daemon { _child: child, port, ds, admin: String::new() };
        let login = d.api("POST", "/api/login", Some(&serde_json::json!({"username": "admin", "password": password})), None);
        d.admin = login["token"].as_str().expect("login token").to_string();
        d
    }

    /// A call with curl, the way an admin script would make it.
    fn api(&self, method: &str, path: &str, body: Option<&Value>, token: Option<&str>) -> Value {
        let mut c = Command::new("curl");
        c.args(["-sS", "-k", "--fail-with-body", "-X", method, &format!("https://127.0.0.1:{}{path}", self.port)]);
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data", &b.to_string()]);
        }
        let o = c.output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "curl {method} {path}: {out} {}", String::from_utf8_lossy(&o.stderr));
        if out.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path}: {e}: {out}"))
        }
    }

    /// Registers an agent; returns its token.
    fn register_agent(&self, name: &str) -> String {
        let v = self.api("POST", "/api/agents", Some(&serde_json::json!({"name": name})), Some(&self.admin));
        v["token"].as_str().unwrap_or_else(|| panic!("no token in {v}")).to_string()
    }

    fn url(&self, ns: &Netns) -> String {
        format!("https://{}:{}", ns.host_ip, self.port)
    }
}

fn agent_cmd(ns: &Netns, d: &Daemon, token: &str, host: &str, src: &Path) -> Command {
    let mut c = ns.lifeboat();
    c.args(["agent", "--server", &d.url(ns), "--token", token, "--insecure", "--hostname", host, "--json", "--retry-for", "120"]).arg(src);
    c
}

fn json_of(o: &Out) -> Value {
    o.expect_ok();
    o.json()
}

#[test]
fn two_agents_in_their_own_namespaces_back_up_into_one_datastore_through_a_link_cut() {
    require_root();
    let tmp = scratch("agent");
    let d = Daemon::start(tmp.path());
    let (a, b) = (Netns::new("a", 1), Netns::new("b", 2));
    let (src_a, src_b) = (tmp.path().join("host-a"), tmp.path().join("host-b"));
    gen_tree(&src_a, 11, TreeSpec::small());
    // Host b: ~30 MB, most of it incompressible, so ~15 upload packs.
    gen_tree(&src_b, 12, TreeSpec { dirs: 20, files: 400, max_file: 256 << 10, big_files: 5, big_size: 5 << 20 });
    let (tok_a, tok_b) = (d.register_agent("host-a"), d.register_agent("host-b"));

    // Both agents at once; b's uploads are held 400 ms each, and its link
    // is cut, once the first packs are in, for longer than the 10 s the
    // agent waits for unacknowledged data: its connection fails for real.
    let run_a = ChildGuard::spawn(agent_cmd(&a, &d, &tok_a, "host-a", &src_a));
    let mut cb = agent_cmd(&b, &d, &tok_b, "host-b", &src_b);
    cb.env("LIFEBOAT_FAILPOINTS", "agent-pack-upload=sleep400").env("LIFEBOAT_LOG", "warn");
    let mut run_b = ChildGuard::spawn(cb);
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.ds.packs().len() < 6 {
        assert!(run_b.running(), "agent b ended before the cut: {}", run_b.wait());
        assert!(Instant::now() < deadline, "no packs uploaded within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("cut at {} packs", d.ds.packs().len());
    b.cut(true);
    std::thread::sleep(Duration::from_secs(13));
    assert!(run_b.running(), "agent b must wait for the link, not give up");
    b.cut(false);
    let (out_a, run_b) = (json_of(&run_a.wait()), run_b.wait());
    let out_b = json_of(&run_b);
    assert!(out_b["upload"]["retries"].as_u64().unwrap() > 0, "the cut was noticed and retried: {run_b}");
    assert!(run_b.stderr.contains("timed out") && run_b.stderr.contains("retrying"), "{run_b}");
    assert!(out_a["upload"]["packs_uploaded"].as_u64().unwrap() > 0);

    // Both snapshots restore identical to their sources, from the one
    // datastore, and it checks clean.
    let snaps = d.ds.snapshots();
    let host_of = |id: &str| snaps.iter().find(|s| s["id"] == id).map(|s| s["hostname"].as_str().unwrap().to_string());
    let (id_a, id_b) = (out_a["snapshot_id"].as_str().unwrap(), out_b["snapshot_id"].as_str().unwrap());
    assert_eq!(host_of(id_a).as_deref(), Some("host-a"));
    assert_eq!(host_of(id_b).as_deref(), Some("host-b"));
    d.ds.assert_restores(id_a, &src_a, tmp.path());
    d.ds.assert_restores(id_b, &src_b, tmp.path());
    d.ds.assert_check_clean();

    // The next run of host a finds its parent over the network and reads
    // nothing but what changed.
    write_file(&src_a.join("added.txt"), b"one new file\n");
    let again = json_of(&run_cmd(agent_cmd(&a, &d, &tok_a, "host-a", &src_a)));
    assert_eq!(again["parent"].as_str(), Some(id_a));
    assert_eq!(again["summary"]["files_new"], 1);
    assert_eq!(again["summary"]["bytes_read"], 13);
    d.ds.assert_restores(again["snapshot_id"].as_str().unwrap(), &src_a, tmp.path());
    drop(d);
}

#[test]
fn a_wrong_token_is_refused_with_a_clear_error() {
    require_root();
    let tmp = scratch("agent-token");
    let d = Daemon::start(tmp.path());
    let ns = Netns::new("t", 3);
    let src = tmp.path().join("src");
    gen_tree(&src, 5, TreeSpec::small());
    let o = run_cmd(agent_cmd(&ns, &d, "not-a-token", "host-t", &src));
    o.expect_code(1);
    assert!(o.stderr.contains("401") && o.stderr.contains("token is invalid"), "{o}");
    assert!(d.ds.snapshots().is_empty());
    // A revoked agent is refused the same way.
    let tok = d.register_agent("host-t");
    let agents = d.api("GET", "/api/agents", None, Some(&d.admin));
    let id = agents.as_array().unwrap().iter().find(|a| a["name"] == "host-t").unwrap()["id"].as_str().unwrap().to_string();
    d.api("DELETE", &format!("/api/agents/{id}"), None, Some(&d.admin));
    let o = run_cmd(agent_cmd(&ns, &d, &tok, "host-t", &src));
    o.expect_code(1);
    assert!(o.stderr.contains("401"), "{o}");
    // Without --insecure or --fingerprint the agent explains what to pass.
    let mut c = ns.lifeboat();
    c.args(["agent", "--server", &d.url(&ns), "--token", &tok]).arg(&src);
    let o = run_cmd(c);
    assert!(o.code() == Some(1) && o.stderr.contains("--fingerprint"), "{o}");
}
