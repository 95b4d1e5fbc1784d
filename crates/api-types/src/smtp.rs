//! SMTP settings for report mails, as the admin gives them and as
//! `GET/PUT /api/settings/smtp` carries them. The password is never
//! shown: `Debug` hides it and the API returns `masked()`. Checks that
//! need an address parser live in lifeboat-notify (`validate`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use utoipa::ToSchema;

/// What a masked password reads as. An update carrying exactly this keeps
/// the stored password, so a client may send back what it was given.
pub const PASSWORD_MASK: &str = "********";

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte, "SMTPS" (port 465).
    Tls,
    /// No encryption: only for a relay on this machine (loopback), port 25.
    None,
}

impl SmtpSecurity {
    /// The port a relay usually listens on with this protection: 587,
    /// 465 or 25.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        }
    }
}

/// The mail relay and the addresses of report mails.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SmtpSettings {
    /// Relay host name or IP address.
    pub host: String,
    /// Relay port; absent means the usual port of `security`.
    #[serde(default)]
    pub port: Option<u16>,
    /// How the connection is protected; default `starttls`.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// Login for AUTH (PLAIN or LOGIN); absent: no AUTH.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for AUTH. Never logged; APIs return it masked.
    #[serde(default)]
    pub password: Option<String>,
    /// Sender address, e.g. `Lifeboat <lifeboat@example.org>`.
    pub from: String,
    /// Recipients of report mails.
    pub to: Vec<String>,
    /// An extra trusted CA certificate (PEM file) for a relay whose
    /// certificate is signed by a private CA or is self-signed. The system
    /// trust store is used as well.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| PASSWORD_MASK))
            .field("from", &self.from)
            .field("to", &self.to)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl SmtpSettings {
    /// The port to connect to: `port`, or else the usual port of
    /// `security`.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.security.default_port())
    }

    /// `host:port`, how errors name the relay.
    pub fn server(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port()),
            _ => format!("{}:{}", self.host, self.port()),
        }
    }

    /// A copy safe to show: the password, if any, replaced by `PASSWORD_MASK`.
    pub fn masked(&self) -> SmtpSettings {
        SmtpSettings { password: self.password.as_ref().map(|_| PASSWORD_MASK.to_string()), ..self.clone() }
    }

    /// For an update from a client that saw only the masked settings: an
    /// absent password or the mask itself keeps `previous`'s password (an
    /// empty string clears it).
    pub fn keep_password_from(&mut self, previous: Option<&SmtpSettings>) {
        match self.password.as_deref() {
            None | Some(PASSWORD_MASK) => self.password = previous.and_then(|p| p.password.clone()),
            Some("") => self.password = None,
            Some(_) => {}
        }
    }

    /// Whether `host` is this machine: `localhost` or a loopback address.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SmtpSettings {
        SmtpSettings {
            host: "mail.example.org".into(),
            port: None,
            security: SmtpSecurity::Starttls,
            username: Some("lifeboat".into()),
            password: Some("hunter2-secret".into()),
            from: "Lifeboat <lifeboat@example.org>".into(),
            to: vec!["ops@example.org".into()],
            ca_file: None,
        }
    }

    #[test]
    fn debug_and_masked_never_show_the_password() {
        let s = settings();
        assert!(!format!("{s:?}").contains("hunter2"));
        let m = s.masked();
        assert_eq!(m.password.as_deref(), Some(PASSWORD_MASK));
        assert!(!serde_json::to_string(&m).unwrap().contains("hunter2"));
    }

    #[test]
    fn update_keeps_password_when_absent_or_masked() {
        let old = settings();
        let mut new = old.masked();
        new.keep_password_from(Some(&old));
        assert_eq!(new.password, old.password);
        new.password = None;
        new.keep_password_from(Some(&old));
        assert_eq!(new.password, old.password);
        new.password = Some("other".into());
        new.keep_password_from(Some(&old));
        assert_eq!(new.password.as_deref(), Some("other"));
        new.password = Some(String::new());
        new.keep_password_from(Some(&old));
        assert_eq!(new.password, None);
    }

    #[test]
    fn defaults_from_json() {
        let s: SmtpSettings = serde_json::from_str(r#"{"host":"h","security":"tls","from":"a@b.c","to":["d@e.f"]}"#).unwrap();
        assert_eq!(s.port(), 465);
        assert_eq!(s.server(), "h:465");
        assert_eq!(s.username, None);
    }

    #[test]
    fn loopback_hosts() {
        let mut s = settings();
        for host in ["localhost", "127.0.0.1", "127.0.0.53", "::1", "[::1]"] {
            s.host = host.into();
            assert!(s.is_loopback(), "{host}");
        }
        s.host = "10.0.0.1".into();
        assert!(!s.is_loopback());
    }
}
