//! Sending mail: a checked SMTP transport and the errors an admin can act on.

use crate::{JobReport, SmtpSecurity, SmtpSettings};
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use std::time::Duration;

/// How long one SMTP step (connect, a command's reply) may take before the
/// relay counts as unreachable.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a mail could not be sent; each names the relay and what to check.
#[derive(Debug, thiserror::Error)]
// Each variant's `#[error]` text is its documentation.
#[allow(missing_docs)]
pub enum NotifyError {
    #[error("SMTP settings: {0}")]
    Invalid(String),
    #[error("SMTP settings: cannot use CA certificate {path}: {detail}")]
    CaFile { path: String, detail: String },
    #[error("cannot reach SMTP server {server}: {detail}; check the host, the port and that the relay is running")]
    Unreachable { server: String, detail: String },
    #[error(
        "TLS with SMTP server {server} failed: {detail}; check the security mode (starttls or tls, \
         matching the port) and that the server's certificate is trusted (ca_file)"
    )]
    Tls { server: String, detail: String },
    #[error("SMTP server {server} refused the login of user {user:?}: {detail}; check the SMTP username and password")]
    AuthFailed { server: String, user: String, detail: String },
    #[error("SMTP server {server} wants a login: {detail}; set the SMTP username and password")]
    AuthRequired { server: String, detail: String },
    #[error("SMTP server {server} did not take the mail: {detail}")]
    Rejected { server: String, detail: String },
    #[error("SMTP session with {server} failed: {detail}")]
    Session { server: String, detail: String },
}

/// A relay connection recipe checked against its settings; each `send`
/// opens one SMTP session.
pub struct Mailer {
    settings: SmtpSettings,
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: SmtpTransport,
}

impl Mailer {
    /// A mailer for these settings (checked first; no connection yet).
    pub fn new(settings: &SmtpSettings) -> Result<Mailer, NotifyError> {
        crate::validate(settings).map_err(NotifyError::Invalid)?;
        let from: Mailbox = settings.from.parse().map_err(|e| NotifyError::Invalid(format!("from: {e}")))?;
        let to = settings.to.iter().map(|t| t.parse::<Mailbox>().map_err(|e| NotifyError::Invalid(format!("recipient {t:?}: {e}")))).collect::<Result<Vec<_>, _>>()?;
        let host = settings.host.trim_start_matches('[').trim_end_matches(']').to_string();
        let tls = match settings.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::Starttls => Tls::Required(tls_parameters(settings, &host)?),
            SmtpSecurity::Tls => Tls::Wrapper(tls_parameters(settings, &host)?),
        };
        let mut builder = SmtpTransport::builder_dangerous(host).port(settings.port()).tls(tls).timeout(Some(SMTP_TIMEOUT));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone())).authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(Mailer { settings: settings.clone(), from, to, transport: builder.build() })
    }

    /// Sends one plain-text mail to every recipient of the settings.
    pub fn send(&self, subject: &str, body: &str) -> Result<(), NotifyError> {
        let mut message = Message::builder().from(self.from.clone()).subject(subject).header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message.body(body.to_string()).map_err(|e| NotifyError::Invalid(format!("cannot build the mail: {e}")))?;
        self.transport.send(&message).map(|_| ()).map_err(|e| self.classify(e))
    }

    /// The report as a mail: its text as the body, its attachments (a
    /// lab run's HTML report) attached.
    pub fn send_report(&self, report: &JobReport) -> Result<(), NotifyError> {
        if report.attachments.is_empty() {
            return self.send(&report.subject(), &report.body());
        }
        use lettre::message::{Attachment, MultiPart, SinglePart};
        let mut message = Message::builder().from(self.from.clone()).subject(report.subject());
        for to in &self.to {
            message = message.to(to.clone());
        }
        let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(report.body()));
        for a in &report.attachments {
            let ct = ContentType::parse(&a.content_type).map_err(|e| NotifyError::Invalid(format!("attachment {}: content type {:?}: {e}", a.filename, a.content_type)))?;
            parts = parts.singlepart(Attachment::new(a.filename.clone()).body(a.data.clone(), ct));
        }
        let message = message.multipart(parts).map_err(|e| NotifyError::Invalid(format!("cannot build the mail: {e}")))?;
        self.transport.send(&message).map(|_| ()).map_err(|e| self.classify(e))
    }

    /// A mail that only proves the settings work.
    pub fn send_test(&self, appliance: &str) -> Result<(), NotifyError> {
        self.send(
            &format!("[Lifeboat {appliance}] test mail"),
            &format!(
                "This is a test mail from the Lifeboat appliance {appliance}.\n\
                 Job reports will reach you the same way.\n\nSMTP server: {}\n",
                self.settings.server()
            ),
        )
    }

    fn classify(&self, e: lettre::transport::smtp::Error) -> NotifyError {
        let server = self.settings.server();
        let detail = error_chain(&e);
        let code = e.status().map(|c| c.to_string());
        match code.as_deref() {
            // 535: credentials invalid; 534/538: mechanism too weak / needs encryption.
            Some("535" | "534" | "538") => {
                let user = self.settings.username.clone().unwrap_or_default();
                return NotifyError::AuthFailed { server, user, detail };
            }
            Some("530") => return NotifyError::AuthRequired { server, detail },
            _ => {}
        }
        if e.is_tls() || is_tls_failure(&e) || (e.is_client() && detail.contains("STARTTLS")) {
            NotifyError::Tls { server, detail }
        } else if e.is_permanent() || e.is_transient() {
            NotifyError::Rejected { server, detail }
        } else if e.is_client() && detail.contains("authentication mechanism") {
            let detail = format!("{detail}: the server offers no AUTH mechanism Lifeboat speaks (PLAIN, LOGIN)");
            NotifyError::Session { server, detail }
        } else if e.is_response() || e.is_client() {
            NotifyError::Session { server, detail }
        } else if is_timeout(&e) {
            let detail = format!("no answer within {} s ({detail})", SMTP_TIMEOUT.as_secs());
            NotifyError::Unreachable { server, detail }
        } else {
            // Connection and network errors.
            NotifyError::Unreachable { server, detail }
        }
    }
}

fn tls_parameters(settings: &SmtpSettings, host: &str) -> Result<TlsParameters, NotifyError> {
    let mut params = TlsParameters::builder(host.to_string());
    if let Some(path) = &settings.ca_file {
        let ca_error = |detail: String| NotifyError::CaFile { path: path.display().to_string(), detail };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| ca_error(format!("not a PEM certificate: {e}")))?;
        params = params.add_root_certificate(cert);
    }
    params.build_rustls().map_err(|e| NotifyError::Tls { server: settings.server(), detail: error_chain(&e) })
}

/// lettre reports a failed TLS handshake (untrusted certificate, wrong
/// name) as a network error around rustls' error.
fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    sources(e).any(|s| s.is::<rustls::Error>() || s.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).is_some_and(|inner| inner.is::<rustls::Error>()))
}

/// A socket read or write timeout shows as EAGAIN (`WouldBlock`), not `TimedOut`.
fn is_timeout(e: &lettre::transport::smtp::Error) -> bool {
    e.is_timeout() || sources(e).any(|s| s.downcast_ref::<std::io::Error>().is_some_and(|io| matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)))
}

fn sources<'a>(e: &'a (dyn std::error::Error + 'static)) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |s| s.source())
}

/// "a: b: c" from an error and its sources, without repeats (lettre's
/// Display often already includes its source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
