//! Lifeboat notifications: job report e-mails sent over SMTP with lettre.
//!
//! `SmtpSettings` is what an admin configures (relay, security mode,
//! credentials, sender, recipients); `Mailer` checks them once and sends
//! plain-text mails; `JobReport` turns a finished job into one. The
//! settings type itself is in lifeboat-api-types (the API carries it).
//! Sending is blocking (lettre's synchronous transport): callers in async
//! code run it on a blocking pool. The password never appears in `Debug` output, logs
//! or errors, and `SmtpSettings::masked` is what an API returns.
#![warn(missing_docs)]

mod mailer;
mod report;
mod settings;
#[cfg(feature = "test-sink")]
pub mod testing;

pub use lifeboat_api_types::{SmtpSecurity, SmtpSettings, PASSWORD_MASK};
pub use mailer::{Mailer, NotifyError};
pub use report::{Attachment, JobReport};
pub use settings::validate;
