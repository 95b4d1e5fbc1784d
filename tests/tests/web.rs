//! The web console end to end: its session cookie and CSRF token, the
//! API it needs beyond the CLI's (snapshot browsing and download, forget
//! preview, health history, TLS fingerprint, datastores made encrypted
//! or append-only), the page's headers, and the page itself driven in
//! Debian's headless Chromium (web/app/e2e, Playwright).

mod common;

use common::daemon::Daemon;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// An answer with its headers (lower-cased names).
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().filter_map(|l| l.split_once(':')).find(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string())
    }
}

/// A curl call keeping cookies in `jar`, like a browser would; `csrf`
/// becomes the `X-CSRF-Token` header.
fn browser_call(base: &str, jar: &Path, method: &str, path: &str, body: Option<&Value>, csrf: Option<&str>) -> Answer {
    let headers = jar.with_extension(format!("h{}", std::process::id()));
    let mut c = Command::new("curl");
    c.args(["-s", "-S", "-k", "--max-time", "60", "-X", method, "-w", "\n%{http_code}", "-c"]).arg(jar).arg("-b").arg(jar).arg("-D").arg(&headers);
    if let Some(t) = csrf {
        c.args(["-H", &format!("X-CSRF-Token: {t}")]);
    }
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", &b.to_string()]);
    }
    c.arg(format!("{base}{path}"));
    let o = c.output().expect("curl runs");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let headers = std::fs::read_to_string(&headers).unwrap_or_default();
    Answer { status: code.trim().parse().unwrap_or(0), headers, body: body.to_string() }
}

#[test]
fn session_cookie_needs_csrf_for_changes_and_follows_roles() {
    let dir = scratch("web-session");
    let d = Daemon::start(&dir.path().join("state"), None, &[]);
    let jar = dir.path().join("cookies");
    let base = &d.https;

    let r = browser_call(base, &jar, "POST", "/api/session", Some(&json!({ "username": "admin", "password": "wrong password" })), None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.header("set-cookie").is_none(), "{}", r.headers);
    let r = browser_call(base, &jar, "POST", "/api/session", Some(&json!({ "password": "x" })), None);
    assert_eq!(r.status, 400, "half a credential: {}", r.body);

    let r = browser_call(base, &jar, "POST", "/api/session", Some(&json!({ "username": "admin", "password": d.admin_password })), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let cookie = r.header("set-cookie").expect("a session cookie");
    for attr in ["lifeboat_session=s.", "HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    let info = r.json();
    assert_eq!(info["role"], "admin");
    assert_eq!(info["user"], "admin");
    assert_eq!(info["permissions"], json!(["read", "operate", "backup", "admin"]));
    assert!(info["expires_at"].is_string(), "{info}");
    // The session's secret is only in the cookie, never where a script reads it.
    assert!(!r.body.contains("s."), "{}", r.body);
    let csrf = info["csrf_token"].as_str().unwrap().to_string();
    assert_eq!(csrf.len(), 64);

    let me = browser_call(base, &jar, "GET", "/api/session", None, None);
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["csrf_token"], csrf.as_str());
    assert_eq!(browser_call(base, &jar, "GET", "/api/jobs", None, None).status, 200, "reads need no CSRF token");

    // A change through the cookie alone is what a forged cross-site request is.
    let token = json!({ "name": "viewer", "role": "read-only" });
    let r = browser_call(base, &jar, "POST", "/api/tokens", Some(&token), None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.json()["message"].as_str().unwrap().contains("X-CSRF-Token"), "{}", r.body);
    let r = browser_call(base, &jar, "POST", "/api/tokens", Some(&token), Some(&"0".repeat(64)));
    assert_eq!(r.status, 403, "a wrong CSRF token: {}", r.body);
    let r = browser_call(base, &jar, "POST", "/api/tokens", Some(&token), Some(&csrf));
    assert_eq!(r.status, 201, "{}", r.body);
    let viewer = r.json()["token"].as_str().unwrap().to_string();
    let viewer_id = r.json()["id"].as_str().unwrap().to_string();
    // Bearer callers (CLI, agents) need no CSRF token: no browser sends their header.
    assert_eq!(d.call("GET", "/api/session", Some(&d.admin), None).status, 200);

    // A read-only user signs in with its token and gets its role, not more.
    let ro_jar = dir.path().join("ro-cookies");
    let r = browser_call(base, &ro_jar, "POST", "/api/session", Some(&json!({ "token": viewer })), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let ro = r.json();
    assert_eq!(ro["role"], "read-only");
    assert_eq!(ro["user"], "token:viewer");
    assert_eq!(ro["permissions"], json!(["read"]));
    let ro_csrf = ro["csrf_token"].as_str().unwrap().to_string();
    assert_ne!(ro_csrf, csrf);
    assert_eq!(browser_call(base, &ro_jar, "GET", "/api/datastores/default/snapshots", None, None).status, 200);
    let r = browser_call(base, &ro_jar, "POST", "/api/jobs", Some(&json!({ "kind": "gc", "datastore": "default" })), Some(&ro_csrf));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.json()["message"].as_str().unwrap().contains("read-only"), "{}", r.body);
    // A session cannot be turned into another one, nor the console's token.
    let r = browser_call(base, &ro_jar, "POST", "/api/session", Some(&json!({ "token": "s.0000" })), None);
    assert_eq!(r.status, 401);
    // Revoking the token ends the sessions opened with it.
    assert_eq!(browser_call(base, &jar, "DELETE", &format!("/api/tokens/{viewer_id}"), None, Some(&csrf)).status, 204);
    assert_eq!(browser_call(base, &ro_jar, "GET", "/api/session", None, None).status, 401);

    // Sign out: the cookie is cleared and the session is over.
    let jar_copy = dir.path().join("cookies-before-logout");
    std::fs::copy(&jar, &jar_copy).unwrap();
    assert_eq!(browser_call(base, &jar, "DELETE", "/api/session", None, None).status, 403, "sign-out needs the CSRF token too");
    let r = browser_call(base, &jar, "DELETE", "/api/session", None, Some(&csrf));
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"), "{}", r.headers);
    assert_eq!(browser_call(base, &jar, "GET", "/api/session", None, None).status, 401);
    assert_eq!(browser_call(base, &jar_copy, "GET", "/api/session", None, None).status, 401, "the old cookie is dead, not just forgotten");

    // Over plain HTTP (loopback only) the cookie cannot be Secure, or it would never come back.
    let plain_jar = dir.path().join("plain-cookies");
    let r = browser_call(&d.http, &plain_jar, "POST", "/api/session", Some(&json!({ "username": "admin", "password": d.admin_password })), None);
    assert_eq!(r.status, 200);
    assert!(!r.header("set-cookie").unwrap().contains("Secure"), "{}", r.headers);
    assert_eq!(browser_call(&d.http, &plain_jar, "GET", "/api/session", None, None).status, 200);
    let log = d.stop().stderr;
    for secret in [csrf.as_str(), viewer.as_str()] {
        assert!(!log.contains(secret), "a secret is in the log");
    }
}

fn wait_ok(d: &Daemon, id: &str) -> Value {
    let j = d.wait_job(id, Duration::from_secs(120));
    assert_eq!(j["state"], "succeeded", "{j}");
    j
}

fn backup(d: &Daemon, ds: &str, src: &Path) -> Value {
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "backup", "datastore": ds, "paths": [src] })));
    assert_eq!(r.status, 202, "{r:?}");
    wait_ok(d, r.json()["id"].as_str().unwrap())
}

#[test]
fn browse_download_preview_history_tls_and_new_datastores() {
    let dir = scratch("web-api");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("hello.txt"), b"hello console\n").unwrap();
    // Several chunks, so the download streams blob after blob.
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(src.join("sub/data.bin"), &big).unwrap();
    std::os::unix::fs::symlink("hello.txt", src.join("link")).unwrap();
    let d = Daemon::start(&dir.path().join("state"), None, &[]);
    backup(&d, "default", &src);
    backup(&d, "default", &src);
    let snaps = d.admin_ok("GET", "/api/datastores/default/snapshots", None);
    let id = snaps[1]["id"].as_str().unwrap().to_string();

    // The root is the backed-up directory (as `lifeboat ls` shows it).
    let path = String::from("/");
    let l = d.admin_ok("GET", &format!("/api/datastores/default/snapshots/{}/tree?path={path}", &id[..12]), None);
    let sub = d.admin_ok("GET", &format!("/api/datastores/default/snapshots/{id}/tree?path=/sub"), None);
    assert_eq!(sub["entries"][0]["name"], "data.bin");
    assert_eq!(sub["entries"][0]["size"], big.len());
    assert_eq!(l["path"], "/");
    let names: Vec<&str> = l["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hello.txt", "link", "sub"]);
    let hello = &l["entries"][0];
    assert_eq!((hello["kind"].as_str(), hello["size"].as_u64(), hello["mode"].as_u64().map(|m| m & 0o777)), (Some("file"), Some(14), Some(0o644)));
    let mtime = std::fs::metadata(src.join("hello.txt")).unwrap().modified().unwrap();
    let shown = chrono::DateTime::parse_from_rfc3339(hello["mtime"].as_str().unwrap()).unwrap();
    assert_eq!(shown.timestamp_nanos_opt().unwrap(), mtime.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64);
    assert_eq!(l["entries"][1]["kind"], "symlink");
    assert_eq!(l["entries"][1]["target"], "hello.txt");

    // Download: the same bytes, with a file name.
    let out = dir.path().join("got.bin");
    let o = Command::new("curl")
        .args(["-s", "-S", "-f", "-D", "-", "-o"])
        .arg(&out)
        .args(["-H", &format!("Authorization: Bearer {}", d.admin)])
        .arg(format!("{}/api/datastores/default/snapshots/{id}/download?path=/sub/data.bin", d.http))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("attachment; filename=\"data.bin\""), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(std::fs::read(&out).unwrap() == big, "the download differs from the file");
    // Bad paths are named.
    for (p, status, what) in [("/nope", 404, "is not in this snapshot"), ("/sub", 400, "not a regular file"), ("/sub/../../etc/passwd", 400, "`..`"), ("/hello.txt/x", 404, "is not a directory")] {
        let r = d.call("GET", &format!("/api/datastores/default/snapshots/{id}/download?path={p}"), Some(&d.admin), None);
        assert_eq!(r.status, status, "{p}: {r:?}");
        assert!(r.json()["message"].as_str().unwrap().contains(what), "{p}: {r:?}");
    }
    let r = d.call("GET", &format!("/api/datastores/default/snapshots/{id}/tree?path=/hello.txt"), Some(&d.admin), None);
    assert_eq!(r.status, 400, "{r:?}");
    let r = d.call("GET", "/api/datastores/default/snapshots/ffffffffffff/tree", Some(&d.admin), None);
    assert_eq!(r.status, 404, "{r:?}");

    // Forget preview: what `last: 1` would remove, with nothing removed.
    let p = d.admin_ok("POST", "/api/datastores/default/forget-preview", Some(&json!({ "last": 1 })));
    assert_eq!(p["keep"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["remove"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["keep"][0]["id"], snaps[1]["id"], "the newest is kept");
    assert_eq!(p["remove"][0]["id"], snaps[0]["id"]);
    assert_eq!(d.admin_ok("GET", "/api/datastores/default/snapshots", None).as_array().unwrap().len(), 2, "a preview removes nothing");
    let r = d.call("POST", "/api/datastores/default/forget-preview", Some(&d.admin), Some(&json!({})));
    assert_eq!(r.status, 400, "{r:?}");

    // Health history and the certificate's fingerprint.
    let h = d.admin_ok("GET", "/api/health/history", None);
    let h = h.as_array().unwrap();
    assert!(!h.is_empty());
    let last = h.last().unwrap();
    assert!(last["memory_available_bytes"].as_u64().unwrap() > 0, "{last}");
    assert!(last["datastores"].as_array().unwrap().iter().any(|x| x["name"] == "default" && x["used_bytes"].as_u64().unwrap() > 0), "{last}");
    assert_eq!(d.admin_ok("GET", "/api/settings/tls", None)["fingerprint"], d.fingerprint.as_str());

    // A datastore made encrypted and append-only from the API (the
    // console's settings page), used, and opened again after a restart.
    let r = d.call("POST", "/api/datastores", Some(&d.admin), Some(&json!({ "name": "vault", "path": dir.path().join("vault"), "encryption_password": "short" })));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(!dir.path().join("vault").join("config").exists());
    let info = d.admin_ok("POST", "/api/datastores", Some(&json!({ "name": "vault", "path": dir.path().join("vault"), "append_only": true, "encryption_password": "correct horse battery" })));
    assert_eq!((info["encrypted"].as_bool(), info["append_only"].as_bool()), (Some(true), Some(true)), "{info}");
    let key = d.state_dir.join("keys/vault.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    backup(&d, "vault", &src);
    let vs = d.admin_ok("GET", "/api/datastores/vault/snapshots", None);
    let r = d.call("DELETE", &format!("/api/datastores/vault/snapshots/{}", vs[0]["id"].as_str().unwrap()), Some(&d.admin), None);
    assert_eq!(r.status, 400, "append-only refuses deletion: {r:?}");
    let r = d.call("POST", "/api/datastores", Some(&d.admin), Some(&json!({ "name": "vault2", "path": dir.path().join("vault"), "encryption_password": "correct horse battery" })));
    assert!(r.status == 400 || r.status == 403, "an existing datastore is not made again: {r:?}");
    let state = d.state_dir.clone();
    let log = d.stop().stderr;
    assert!(!log.contains("correct horse battery"), "the password is in the log");
    // The password unlocks it from the CLI; the daemon opens it with its key file.
    let mut c = lb_cmd();
    c.args(["snapshots", "--datastore"]).arg(dir.path().join("vault")).env("LIFEBOAT_PASSWORD", "correct horse battery");
    let o = run_cmd(c);
    assert!(o.status.success(), "{}", o.stderr);
    assert_eq!(o.stdout.lines().filter(|l| l.contains("src")).count(), 1, "{}", o.stdout);
    let d = Daemon::start(&state, None, &[]);
    assert_eq!(d.admin_ok("GET", "/api/datastores/vault/snapshots", None).as_array().unwrap().len(), 1);
}

#[test]
fn the_console_page_is_served_with_a_strict_policy() {
    let dir = scratch("web-page");
    let d = Daemon::start(&dir.path().join("state"), None, &[]);
    let jar = dir.path().join("cookies");
    let r = browser_call(&d.https, &jar, "GET", "/", None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("content-type").unwrap().starts_with("text/html"), "{}", r.headers);
    let csp = r.header("content-security-policy").expect("a CSP");
    for d in ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"] {
        assert!(csp.contains(d), "{d} missing in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"));
    assert!(r.body.contains("<script type=\"module\""), "{}", r.body);
    assert!(!r.body.contains("<script>") && !r.body.contains("style="), "inline code would be refused by the CSP: {}", r.body);
    // Its scripts come from the binary, cached forever under hashed names.
    let script = r.body.split("src=\"").nth(1).and_then(|s| s.split('"').next()).expect("a script src").to_string();
    assert!(script.starts_with("/assets/"), "{script}");
    let js = browser_call(&d.https, &jar, "GET", &script, None, None);
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().starts_with("text/javascript"), "{}", js.headers);
    assert!(js.header("cache-control").unwrap().contains("immutable"));
    // Any other page of the app is the app; the API keeps its JSON 404.
    let r = browser_call(&d.https, &jar, "GET", "/snapshots/default", None, None);
    assert_eq!(r.status, 200);
    assert!(r.body.contains(&script));
    assert_eq!(browser_call(&d.https, &jar, "GET", "/assets/nope.js", None, None).status, 404);
    let r = browser_call(&d.https, &jar, "GET", "/api/nope", None, None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not-found");
    assert_eq!(browser_call(&d.https, &jar, "POST", "/", None, None).status, 404);
}

/// The console in Debian's headless Chromium (web/app/e2e/*.test.mjs,
/// Playwright): sign in, back up with live progress, browse, download,
/// restore, schedule, continuous protection of a guestless QEMU VM
/// (bookmark, export a moment), a read-only user, Chinese, no console errors,
/// accessibility; screenshots of each page in
/// target/web-console-screenshots.
#[test]
fn the_console_in_chromium() {
    let dir = scratch("web-chromium");
    // A tiny guestless VM under continuous protection, for the CDP page
    // (as tests/tests/cdp.rs does it). Declared before the daemon, so it is
    // killed after it.
    let disk = dir.path().join("cdp-disk.raw");
    std::fs::File::create(&disk).unwrap().set_len(16 << 20).unwrap();
    let qmp = dir.path().join("cdp-qmp.sock");
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-S", "-display", "none", "-nodefaults", "-machine", "pc", "-m", "64", "-name", "cdp-web"]);
    c.arg("-drive").arg(format!("file={},format=raw,if=none,id=drv0", disk.display()));
    c.args(["-device", "virtio-blk-pci,drive=drv0,id=disk0"]);
    c.arg("-qmp").arg(format!("unix:{},server=on,wait=off", qmp.display()));
    let qmp2 = dir.path().join("cdp-qmp2.sock");
    c.arg("-qmp").arg(format!("unix:{},server=on,wait=off", qmp2.display()));
    let _qemu = ChildGuard::spawn(c);
    assert!(wait_until(Duration::from_secs(30), || std::os::unix::net::UnixStream::connect(&qmp).is_ok()), "QEMU's monitor never came up");
    let d = Daemon::start(&dir.path().join("state"), Some("nbd_listen = \"127.0.0.1:0\"\n"), &[]);
    d.admin_ok("POST", "/api/vms", Some(&json!({ "name": "cdpweb", "source": { "kind": "qmp", "qmp": qmp } })));
    let r = d.call("POST", "/api/jobs", Some(&d.admin), Some(&json!({ "kind": "cdp-protect", "datastore": "default", "vm": "cdpweb", "mode": "sync" })));
    assert_eq!(r.status, 202, "{r:?}");
    let cdp_job = r.json()["id"].as_str().unwrap().to_string();
    // The job opens the journal first (asking /api/cdp meanwhile can race
    // it for the journal's lock), then the list shows its session.
    let phase = |d: &Daemon| d.admin_ok("GET", &format!("/api/jobs/{cdp_job}"), None)["progress"]["phase"].as_str().unwrap_or("").to_string();
    assert!(wait_until(Duration::from_secs(120), || phase(&d).contains("protecting")), "the protection never started: {}", phase(&d));
    let protecting = wait_until(Duration::from_secs(120), || {
        let l = d.admin_ok("GET", "/api/cdp", None);
        l[0]["protecting"] == true && l[0]["job"] == cdp_job.as_str() && l[0]["disks"][0]["sessions"].as_array().is_some_and(|s| s.last().is_some_and(|s| s.get("ended").is_none()))
    });
    assert!(protecting, "the protection never became ready: {}", d.admin_ok("GET", &format!("/api/jobs/{cdp_job}"), None));
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("hello.txt"), b"hello from the console test\n").unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2246822519) >> 11) as u8).collect();
    std::fs::write(src.join("sub/data.bin"), &data).unwrap();
    let ds_path = dir.path().join("console-ds");
    d.admin_ok("POST", "/api/datastores", Some(&json!({ "name": "console", "path": ds_path })));
    let ro = d.token("viewer", "read-only");
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/app");
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/web-console-screenshots");
    std::fs::create_dir_all(&artifacts).unwrap();
    // An open session can be read back up to its last write: the VM keeps
    // writing while the page runs, so the page's bookmark (made "now") is
    // inside the protected time by the time it is exported.
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (writing, qmp2) = (writing.clone(), qmp2.clone());
        std::thread::spawn(move || {
            let mut q = lifeboat_qemu::Qmp::connect(&qmp2).unwrap();
            let mut n = 0u32;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let line = format!("qemu-io drv0 \"write -P 0x{:02x} {}k 4k\"", n % 200 + 1, (n % 1000) * 4);
                q.execute("human-monitor-command", json!({ "command-line": line })).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let o = Command::new("node")
        .arg("--test")
        .arg("--test-reporter=spec")
        .arg(app.join("e2e"))
        .current_dir(&app)
        .env("LIFEBOAT_URL", &d.https)
        .env("LIFEBOAT_ADMIN_PASSWORD", &d.admin_password)
        .env("LIFEBOAT_READONLY_TOKEN", &ro)
        .env("LIFEBOAT_DATASTORE", "console")
        .env("LIFEBOAT_SOURCE", &src)
        .env("LIFEBOAT_RESTORE_TARGET", dir.path().join("restored"))
        .env("LIFEBOAT_ARTIFACTS", &artifacts)
        .env("LIFEBOAT_CDP_VM", "cdp-web")
        .env("LIFEBOAT_CDP_DATASTORE", "default")
        .env("LIFEBOAT_CDP_JOB", &cdp_job)
        .output()
        .expect("node runs (scripts/setup.sh installs it)");
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let out = format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "the browser tests failed:\n{out}\n--- daemon log ---\n{}", d.log_text());
    // The run really tested something (node --test passes on zero tests).
    let passed: u32 = out.lines().filter_map(|l| l.trim().strip_prefix("ℹ pass ")).filter_map(|n| n.trim().parse::<u32>().ok()).sum();
    assert!(passed >= 5, "only {passed} browser tests passed:\n{out}");
    assert!(out.contains("ℹ fail 0"), "{out}");
    // What the page did, seen from the appliance.
    let snaps = d.admin_ok("GET", "/api/datastores/console/snapshots", None);
    assert!(!snaps.as_array().unwrap().is_empty(), "the page's backup made no snapshot");
    let restored = walk_files(&dir.path().join("restored"));
    assert!(restored.iter().any(|p| p.ends_with("sub/data.bin") && std::fs::read(p).unwrap() == data), "the page's restore: {restored:?}");
    assert!(!d.admin_ok("GET", "/api/schedules", None).as_array().unwrap().is_empty(), "the page's schedule");
    // The bookmark made on the CDP page, and the protection still running.
    let info = d.admin_ok("GET", "/api/datastores/default/cdp/cdp-web", None);
    assert!(info["bookmarks"].as_array().unwrap().iter().any(|b| b["name"] == "e2e-mark"), "the page's bookmark: {info}");
    assert_eq!(info["protecting"], true, "{info}");
    let shots = std::fs::read_dir(&artifacts).unwrap().count();
    assert!(shots >= 5, "only {shots} screenshots");
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
