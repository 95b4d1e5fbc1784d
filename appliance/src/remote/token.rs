//! `token list|create|revoke`.

use clap::Subcommand;
use lifeboat_api_types::{Role, TokenCreate, TokenCreated, TokenInfo};
use lifeboat_client::ApiClient;

#[derive(Subcommand)]
pub enum TokenCmd {
    /// API tokens (never their secrets)
    List,
    /// Create a token; its secret is printed once
    Create {
        /// What the token is for
        name: String,
        /// admin, operator, read-only or backup-only
        #[arg(long, default_value = "read-only")]
        role: Role,
    },
    /// Revoke a token
    Revoke { id: String },
}

pub fn run(c: &ApiClient, cmd: TokenCmd) -> anyhow::Result<u8> {
    match cmd {
        TokenCmd::List => {
            let list: Vec<TokenInfo> = c.get("/api/tokens")?;
            for t in list {
                println!("{:<18} {:<20} {:<12} {}{}", t.id, t.name, t.role.as_str(), t.created.format("%Y-%m-%d %H:%M"), if t.agent { "  agent" } else { "" });
            }
        }
        TokenCmd::Create { name, role } => {
            let t: TokenCreated = c.post("/api/tokens", &TokenCreate { name, role, original_location: false })?;
            eprintln!("token {} ({}) created; its secret is shown only now:", t.info.name, t.info.role.as_str());
            println!("{}", t.token);
        }
        TokenCmd::Revoke { id } => c.delete::<()>(&format!("/api/tokens/{id}"))?,
    }
    Ok(0)
}
