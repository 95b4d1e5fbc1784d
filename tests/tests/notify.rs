//! Mail from the running appliance: SMTP settings through the API (admin
//! only, password never shown), a test mail and job report mails reaching
//! a real SMTP server on loopback (aiosmtpd with STARTTLS and AUTH), the
//! relay's errors as API answers, and no secret in the daemon's log.

mod common;

use common::appliance::{path_str, Appliance};
use lifeboat_notify::testing::{SmtpSink, TestPki, PASSWORD, USER};
use serde_json::{json, Value};

fn smtp_body(sink: &SmtpSink, pki: &TestPki, password: &str) -> Value {
    json!({
        "host": "localhost",
        "port": sink.port,
        "security": "starttls",
        "username": USER,
        "password": password,
        "from": "Lifeboat <lifeboat@appliance.test>",
        "to": ["ops@example.test"],
        "ca_file": path_str(&pki.ca_cert),
    })
}

#[test]
fn smtp_settings_test_mail_and_job_reports_through_the_api() {
    let pki = TestPki::new();
    let sink = SmtpSink::start("starttls", Some(&pki), true, &[]);
    let app = Appliance::start("notify-api", &["--log-format", "json"], &[("LIFEBOAT_LOG", "debug")]);
    let admin = app.login();

    // Nothing configured yet.
    let (status, _) = app.call("GET", "/api/settings/smtp", Some(&admin), None);
    assert_eq!(status, 404);
    let (status, v) = app.call("POST", "/api/settings/smtp/test", Some(&admin), None);
    assert_eq!(status, 404, "{v}");

    // Bad input is refused with the field named.
    let mut bad = smtp_body(&sink, &pki, PASSWORD);
    bad["security"] = json!("none");
    bad["host"] = json!("mail.example.test");
    let (status, v) = app.call("PUT", "/api/settings/smtp", Some(&admin), Some(&bad));
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("only allowed for a relay on this machine"), "{v}");

    // Set, and read back masked.
    let (status, v) = app.call("PUT", "/api/settings/smtp", Some(&admin), Some(&smtp_body(&sink, &pki, PASSWORD)));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["password"], "********");
    let (status, v) = app.call("GET", "/api/settings/smtp", Some(&admin), None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["password"], "********");
    assert_eq!(v["username"], USER);
    assert!(!v.to_string().contains(PASSWORD));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(app.state_dir().join("smtp.json")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "smtp.json holds the relay password");

    // A test mail reaches the relay through STARTTLS with AUTH.
    let (status, v) = app.call("POST", "/api/settings/smtp/test", Some(&admin), None);
    assert_eq!(status, 204, "{v}");
    let mail = sink.next_mail();
    assert!(mail["subject"].as_str().unwrap().ends_with("] test mail"), "{mail}");
    assert_eq!(mail["rcpt_tos"], json!(["ops@example.test"]));
    assert_eq!(mail["auth_user"], USER);
    assert_eq!(mail["encrypted"], true);

    // Sending the mask back keeps the stored password.
    let (status, v) = app.call("PUT", "/api/settings/smtp", Some(&admin), Some(&smtp_body(&sink, &pki, "********")));
    assert_eq!(status, 200, "{v}");
    let (status, v) = app.call("POST", "/api/settings/smtp/test", Some(&admin), None);
    assert_eq!(status, 204, "{v}");
    sink.next_mail();

    // A failing scheduled job is mailed (notify: failure)...
    let ds = app.dir.path().join("ds");
    let (status, v) = app.call("POST", "/api/datastores", Some(&admin), Some(&json!({"name": "main", "path": path_str(&ds)})));
    assert_eq!(status, 200, "{v}");
    let schedule = json!({
        "name": "restore-drill",
        "cron": "0 0 0 1 1 * 2099",
        "job": {"kind": "restore", "datastore": "main", "snapshot": "feedfacefeedface", "target": path_str(&app.dir.path().join("out"))},
        "notify": "failure",
    });
    let (status, s) = app.call("POST", "/api/schedules", Some(&admin), Some(&schedule));
    assert_eq!(status, 201, "{s}");
    let (status, job) = app.call("POST", &format!("/api/schedules/{}/run", s["id"].as_str().unwrap()), Some(&admin), None);
    assert_eq!(status, 202, "{job}");
    let job = app.wait_job(&admin, job["id"].as_str().unwrap());
    assert_eq!(job["state"], "failed", "{job}");
    let mail = sink.next_mail();
    let subject = mail["subject"].as_str().unwrap();
    assert!(subject.contains("restore main/feedfacefeedface to ") && subject.ends_with(": FAILED"), "{subject}");
    let body = mail["body"].as_str().unwrap();
    assert!(body.contains(&format!("Job {} (restore of", job["id"].as_str().unwrap())), "{body}");
    assert!(body.contains("Error:") && body.contains(job["error"].as_str().unwrap().lines().next().unwrap()), "{body}");
    assert!(body.contains(&format!("Schedule:  {}", s["id"].as_str().unwrap())), "{body}");

    // ...a successful one under notify: failure is not, under always it is.
    let src = app.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"mail me").unwrap();
    for (notify, mailed) in [("failure", false), ("always", true)] {
        let schedule = json!({
            "name": format!("backup-{notify}"),
            "cron": "0 0 0 1 1 * 2099",
            "job": {"kind": "backup", "datastore": "main", "paths": [path_str(&src)]},
            "notify": notify,
        });
        let (status, s) = app.call("POST", "/api/schedules", Some(&admin), Some(&schedule));
        assert_eq!(status, 201, "{s}");
        let (_, job) = app.call("POST", &format!("/api/schedules/{}/run", s["id"].as_str().unwrap()), Some(&admin), None);
        let job = app.wait_job(&admin, job["id"].as_str().unwrap());
        assert_eq!(job["state"], "succeeded", "{job}");
        if mailed {
            let mail = sink.next_mail();
            assert!(mail["subject"].as_str().unwrap().ends_with(&format!("backup {} to main: ok", path_str(&src))), "{mail}");
        } else {
            sink.assert_no_mail();
        }
    }

    // A wrong relay password: the test mail fails with 502 naming the relay.
    let (status, v) = app.call("PUT", "/api/settings/smtp", Some(&admin), Some(&smtp_body(&sink, &pki, "wrong-relay-pass")));
    assert_eq!(status, 200, "{v}");
    let (status, v) = app.call("POST", "/api/settings/smtp/test", Some(&admin), None);
    assert_eq!(status, 502, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains(&format!("localhost:{}", sink.port)) && msg.contains("password"), "{msg}");
    assert!(!msg.contains("wrong-relay-pass"), "{msg}");

    // Removing the relay turns mails off.
    let (status, _) = app.call("DELETE", "/api/settings/smtp", Some(&admin), None);
    assert_eq!(status, 204);
    let (status, _) = app.call("GET", "/api/settings/smtp", Some(&admin), None);
    assert_eq!(status, 404);

    // Secrets never reach the log, which is JSON lines.
    let admin_password = app.admin_password();
    let log = app.stop();
    assert!(log.contains("SMTP settings changed"), "the log lacks the settings change:\n{log}");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{line}");
    }
    for (what, secret) in [("admin password", admin_password.as_str()), ("session token", admin.as_str()), ("SMTP password", PASSWORD), ("wrong SMTP password", "wrong-relay-pass")] {
        assert!(!log.contains(secret), "the daemon logged the {what}:\n{log}");
    }
}

#[test]
fn settings_are_admin_only_and_need_a_token() {
    let app = Appliance::start("notify-auth", &[], &[]);
    let admin = app.login();
    let (status, op) = app.call("POST", "/api/tokens", Some(&admin), Some(&json!({"name": "ops", "role": "operator"})));
    assert_eq!(status, 201, "{op}");
    let operator = op["token"].as_str().unwrap();
    let body = json!({"host": "127.0.0.1", "security": "none", "from": "a@b.test", "to": ["c@d.test"]});
    for (method, path, body) in [("GET", "/api/settings/smtp", None), ("PUT", "/api/settings/smtp", Some(&body)), ("DELETE", "/api/settings/smtp", None), ("POST", "/api/settings/smtp/test", None)] {
        let (status, _) = app.call(method, path, None, body);
        assert_eq!(status, 401, "{method} {path} without a token");
        let (status, _) = app.call(method, path, Some("bogus.token"), body);
        assert_eq!(status, 401, "{method} {path} with a wrong token");
        let (status, _) = app.call(method, path, Some(operator), body);
        assert_eq!(status, 403, "{method} {path} as operator");
    }
}
