//! `lifeboat admin password`: set the admin password offline (console,
//! recovery), straight in the daemon's state directory.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum AdminCmd {
    /// Set the admin password (read from stdin, or prompted twice on a terminal)
    Password {
        /// The daemon's state directory
        #[arg(long, value_name = "DIR", default_value = "/var/lib/lifeboat")]
        state_dir: PathBuf,
    },
}

pub fn run(cmd: AdminCmd) -> anyhow::Result<u8> {
    match cmd {
        AdminCmd::Password { state_dir } => {
            let pw = if std::io::stdin().is_terminal() {
                let a = zeroize::Zeroizing::new(rpassword::prompt_password("new admin password: ")?);
                let b = zeroize::Zeroizing::new(rpassword::prompt_password("again: ")?);
                if *a != *b {
                    anyhow::bail!("the passwords do not match; nothing changed");
                }
                a
            } else {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string())
            };
            let auth = lifeboat_state::AuthStore::open(&state_dir, 1)?;
            auth.set_admin_password(&pw)?;
            let _ = std::fs::remove_file(state_dir.join("initial-admin-password"));
            eprintln!("admin password set; restart the daemon (`systemctl restart lifeboat`) if it runs, so it reads it");
            Ok(0)
        }
    }
}
