//! Checks of SMTP settings that need an e-mail address parser.

use lifeboat_api_types::{SmtpSecurity, SmtpSettings};

/// Checks everything that can be checked without a connection; the
/// message names the field and what to do.
pub fn validate(s: &SmtpSettings) -> Result<(), String> {
    if s.host.trim().is_empty() || s.host.chars().any(char::is_whitespace) {
        return Err(format!("host {:?} is not a host name or address; set the mail relay's name", s.host));
    }
    if s.port == Some(0) {
        return Err("port 0 is not a port; leave it out for the usual port of the security mode".into());
    }
    if s.security == SmtpSecurity::None && !s.is_loopback() {
        return Err(format!(
            "security \"none\" sends mail unencrypted and is only allowed for a relay on this machine \
             (localhost, 127.0.0.1, ::1), not {}; use \"starttls\" or \"tls\"",
            s.host
        ));
    }
    match (&s.username, &s.password) {
        (Some(u), _) if u.is_empty() => return Err("username is empty; leave it out for no login".into()),
        (Some(_), None) => return Err("username is set but password is not; set both or neither".into()),
        (None, Some(_)) => return Err("password is set but username is not; set both or neither".into()),
        _ => {}
    }
    s.from.parse::<lettre::message::Mailbox>().map_err(|e| format!("from address {:?} is not an e-mail address: {e}", s.from))?;
    if s.to.is_empty() {
        return Err("no recipients: add at least one address to \"to\"".into());
    }
    for to in &s.to {
        to.parse::<lettre::message::Mailbox>().map_err(|e| format!("recipient {to:?} is not an e-mail address: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_api_types::SmtpSecurity;

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
    fn plain_smtp_only_to_loopback() {
        let mut s = settings();
        s.security = SmtpSecurity::None;
        let err = validate(&s).unwrap_err();
        assert!(err.contains("mail.example.org") && err.contains("starttls"), "{err}");
        for host in ["localhost", "127.0.0.1", "127.0.0.53", "::1", "[::1]"] {
            s.host = host.into();
            validate(&s).unwrap_or_else(|e| panic!("{host}: {e}"));
        }
        assert_eq!(s.port(), 25);
    }

    #[test]
    fn bad_fields_are_named() {
        let mut s = settings();
        s.to = vec!["not an address".into()];
        assert!(validate(&s).unwrap_err().contains("not an address"));
        let mut s = settings();
        s.to.clear();
        assert!(validate(&s).unwrap_err().contains("recipients"));
        let mut s = settings();
        s.password = None;
        assert!(validate(&s).unwrap_err().contains("password"));
        let mut s = settings();
        s.host = " ".into();
        assert!(validate(&s).unwrap_err().contains("host"));
    }
}
