//! `login`: a session token for the admin.

use lifeboat_api_types::{LoginRequest, LoginResponse};
use lifeboat_client::ApiClient;
use std::io::IsTerminal;

/// Reads the admin password (a prompt, or a line of stdin) and prints
/// the session token the appliance gives for it.
pub fn run(c: &ApiClient) -> anyhow::Result<u8> {
    let pw = if std::io::stdin().is_terminal() {
        zeroize::Zeroizing::new(rpassword::prompt_password("admin password: ")?)
    } else {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s)?;
        zeroize::Zeroizing::new(s.trim_end_matches(['\r', '\n']).to_string())
    };
    let r: LoginResponse = c.post("/api/login", &LoginRequest { username: "admin".into(), password: pw.to_string() })?;
    println!("{}", r.token);
    Ok(0)
}
