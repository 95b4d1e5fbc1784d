//! Appliance settings kept in the state directory. So far the SMTP relay
//! for report mails, in `<state>/smtp.json`, mode 0600: it holds the
//! relay's password in clear (SMTP AUTH needs it), so only root reads it.

use crate::{read_json, write_json, Result, StateError};
use lifeboat_api_types::SmtpSettings;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};

/// Appliance settings from the state directory, cached in memory.
pub struct SettingsStore {
    smtp_path: PathBuf,
    smtp: Mutex<Option<SmtpSettings>>,
}

impl SettingsStore {
    /// Reads the settings files under `state_dir` (absent: not set).
    pub fn open(state_dir: &Path) -> Result<SettingsStore> {
        let smtp_path = state_dir.join("smtp.json");
        let smtp = read_json(&smtp_path)?;
        Ok(SettingsStore { smtp_path, smtp: Mutex::new(smtp) })
    }

    /// The SMTP relay, None when mails are off.
    pub fn smtp(&self) -> Option<SmtpSettings> {
        self.smtp.lock().clone()
    }

    /// Stores new SMTP settings (None: no mails), checked by the caller.
    pub fn set_smtp(&self, settings: Option<SmtpSettings>) -> Result<()> {
        let mut current = self.smtp.lock();
        match &settings {
            Some(s) => write_json(&self.smtp_path, s, 0o600)?,
            None => match std::fs::remove_file(&self.smtp_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StateError::Io { path: self.smtp_path.clone(), source }),
            },
        }
        *current = settings;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_api_types::SmtpSecurity;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn smtp_settings_survive_reopen_and_stay_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = SettingsStore::open(dir.path()).unwrap();
        assert_eq!(store.smtp(), None);
        let s = SmtpSettings {
            host: "mail.example.org".into(),
            port: Some(2525),
            security: SmtpSecurity::Starttls,
            username: Some("u".into()),
            password: Some("p".into()),
            from: "a@example.org".into(),
            to: vec!["b@example.org".into()],
            ca_file: None,
        };
        store.set_smtp(Some(s.clone())).unwrap();
        let mode = std::fs::metadata(dir.path().join("smtp.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(SettingsStore::open(dir.path()).unwrap().smtp(), Some(s));
        store.set_smtp(None).unwrap();
        assert_eq!(SettingsStore::open(dir.path()).unwrap().smtp(), None);
    }
}
