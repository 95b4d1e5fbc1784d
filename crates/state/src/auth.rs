//! Who may call the API. One admin account (password hashed with
//! argon2id) that logs in for a session token, and API tokens with a
//! role for agents and scripts. Token secrets are 256-bit random, so they
//! are stored as a BLAKE3 hash (a slow KDF adds nothing against brute
//! force there and would cost every request). Sessions live in memory: a
//! daemon restart logs everyone out, which is what an admin expects.

use crate::{random_hex, read_json, write_json, Result, StateError};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Duration, Utc};
use lifeboat_api_types::{Role, TokenCreated, TokenInfo};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The one user name that logs in with the admin password.
pub const ADMIN_USER: &str = "admin";
/// The principal name of the console's read-only credential.
pub const CONSOLE_USER: &str = "console";
const MIN_PASSWORD_LEN: usize = 8;

#[derive(Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    admin_password: Option<String>,
    #[serde(default)]
    tokens: Vec<StoredToken>,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredToken {
    id: String,
    name: String,
    role: Role,
    created: DateTime<Utc>,
    #[serde(default)]
    agent: bool,
    #[serde(default)]
    original_location: bool,
    secret_blake3: String,
}

impl StoredToken {
    fn info(&self) -> TokenInfo {
        TokenInfo { id: self.id.clone(), name: self.name.clone(), role: self.role, created: self.created, agent: self.agent, original_location: self.original_location }
    }
}

/// Who a request is from, once its token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `admin` for a session, `console` for the console token,
    /// `token:<name>` for an API token (the name it was created with).
    pub name: String,
    /// What the principal may call (sessions are always `Admin`, the
    /// console token `ReadOnly`).
    pub role: Role,
    /// The API token's id, `None` for a session or the console token.
    pub token_id: Option<String>,
    /// An admin token's "restore to the original location" capability.
    pub original_location: bool,
}

impl Principal {
    /// What this principal's jobs may do on the appliance's files.
    pub fn grant(&self) -> crate::confine::Grant {
        let admin = self.role == Role::Admin;
        crate::confine::Grant { admin, original_location: admin && self.original_location }
    }
}

struct Session {
    expires: DateTime<Utc>,
    /// A browser session opened with an API token: it acts with that
    /// token's role and ends when the token is revoked. `None`: the admin.
    token_id: Option<String>,
}

/// The admin password, API tokens and login sessions. Password and
/// tokens persist in `<state>/auth.json` (mode 0600, holding only
/// hashes); sessions and the console token live in memory only. Shared
/// between threads: every method takes `&self`.
pub struct AuthStore {
    path: PathBuf,
    file: Mutex<AuthFile>,
    sessions: Mutex<HashMap<String, Session>>,
    session_len: Duration,
    /// The local console's read-only token of this daemon run (`c.` +
    /// 256 random bits), kept in memory only: a restart makes a new one.
    console_token: Mutex<Option<String>>,
}

impl AuthStore {
    /// Reads `<state_dir>/auth.json` (none yet: no password, no tokens).
    /// Sessions opened later last `session_minutes`.
    pub fn open(state_dir: &Path, session_minutes: u64) -> Result<AuthStore> {
        let path = state_dir.join("auth.json");
        let file = read_json(&path)?.unwrap_or_default();
        Ok(AuthStore { path, file: Mutex::new(file), sessions: Mutex::new(HashMap::new()), session_len: Duration::minutes(session_minutes as i64), console_token: Mutex::new(None) })
    }

    /// Whether the admin password was set; until it is, nobody can log
    /// in (the console TUI or
    /// `lifeboat admin passwd` sets it).
    pub fn has_admin_password(&self) -> bool {
        self.file.lock().admin_password.is_some()
    }

    /// Sets the admin password (console TUI, `lifeboat admin passwd`,
    /// the API's password change) and ends every session.
    pub fn set_admin_password(&self, password: &str) -> Result<()> {
        check_password_strength(password)?;
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).expect("the OS random source works");
        let salt = SaltString::encode_b64(&salt).map_err(|e| StateError::Invalid(format!("salt: {e}")))?;
        let hash = argon2::Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|e| StateError::Invalid(format!("hashing the password: {e}")))?.to_string();
        let mut f = self.file.lock();
        let old = f.admin_password.replace(hash);
        if let Err(e) = write_json(&self.path, &*f, 0o600) {
            f.admin_password = old;
            return Err(e);
        }
        self.sessions.lock().clear();
        Ok(())
    }

    /// Whether `username` is `admin` and `password` matches its argon2id
    /// hash; false while no password is set. Opens no session.
    pub fn verify_admin_password(&self, username: &str, password: &str) -> bool {
        let hash = match &self.file.lock().admin_password {
            Some(h) => h.clone(),
            None => return false,
        };
        // Verify even for a wrong user name so timing does not tell.
        let ok = PasswordHash::new(&hash).map(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok()).unwrap_or(false);
        ok && username == ADMIN_USER
    }

    /// Checks the credentials and opens a session: returns its bearer
    /// token (`s.` + 64 hex digits) and when it expires. Expired
    /// sessions are dropped here.
    pub fn login(&self, username: &str, password: &str) -> Option<(String, DateTime<Utc>)> {
        if !self.verify_admin_password(username, password) {
            return None;
        }
        Some(self.open_session(None))
    }

    /// Opens a session that acts as the API token `bearer` (a read-only
    /// or operator user signing in to the web console): the session ends
    /// at its expiry, at logout or when the token is revoked, and logout
    /// leaves the token itself valid. Returns the session's bearer, its
    /// expiry and who it is.
    pub fn login_with_token(&self, bearer: &str) -> Option<(String, DateTime<Utc>, Principal)> {
        if bearer.starts_with("s.") {
            return None;
        }
        let principal = self.authenticate(bearer)?;
        let id = principal.token_id.clone()?;
        let (token, expires) = self.open_session(Some(id));
        Some((token, expires, principal))
    }

    fn open_session(&self, token_id: Option<String>) -> (String, DateTime<Utc>) {
        let token = format!("s.{}", random_hex(32));
        let expires = Utc::now() + self.session_len;
        let mut s = self.sessions.lock();
        let now = Utc::now();
        s.retain(|_, v| v.expires > now);
        s.insert(token.clone(), Session { expires, token_id });
        (token, expires)
    }

    /// When the session of `bearer` ends, if it is a live session.
    pub fn session_expiry(&self, bearer: &str) -> Option<DateTime<Utc>> {
        self.sessions.lock().get(bearer).map(|s| s.expires).filter(|e| *e > Utc::now())
    }

    /// Ends the session of that bearer token (no-op if unknown).
    pub fn logout(&self, token: &str) {
        self.sessions.lock().remove(token);
    }

    /// Makes this run's read-only console token (replacing any earlier
    /// one) and returns it: the daemon hands it to `lifeboat console`
    /// through a root-only file (`crate::console`).
    pub fn issue_console_token(&self) -> String {
        let token = format!("c.{}", random_hex(32));
        *self.console_token.lock() = Some(token.clone());
        token
    }

    /// The principal behind a bearer token, if it is valid.
    pub fn authenticate(&self, bearer: &str) -> Option<Principal> {
        if bearer.starts_with("c.") {
            let t = self.console_token.lock();
            let t = t.as_deref()?;
            return constant_time_eq(t.as_bytes(), bearer.as_bytes()).then(|| Principal { name: CONSOLE_USER.into(), role: Role::ReadOnly, token_id: None, original_location: false });
        }
        if bearer.starts_with("s.") {
            let s = self.sessions.lock();
            let sess = s.get(bearer)?;
            if sess.expires <= Utc::now() {
                return None;
            }
            let Some(id) = &sess.token_id else {
                // A session is not "original location": that capability is
                // given deliberately, to a token.
                return Some(Principal { name: ADMIN_USER.into(), role: Role::Admin, token_id: None, original_location: false });
            };
            let f = self.file.lock();
            // A revoked token ends the sessions opened with it.
            let t = f.tokens.iter().find(|t| &t.id == id)?;
            return Some(Principal { name: format!("token:{}", t.name), role: t.role, token_id: Some(t.id.clone()), original_location: t.original_location });
        }
        let (id, secret) = bearer.split_once('.')?;
        let f = self.file.lock();
        let t = f.tokens.iter().find(|t| t.id == id)?;
        let h = blake3::hash(secret.as_bytes()).to_hex();
        if constant_time_eq(h.as_bytes(), t.secret_blake3.as_bytes()) {
            Some(Principal { name: format!("token:{}", t.name), role: t.role, token_id: Some(t.id.clone()), original_location: t.original_location })
        } else {
            None
        }
    }

    /// Creates an API token named `name` (unique, checked by
    /// `validate_name`) and stores it. `agent` marks a token registered
    /// for an ingest agent; `original_location` is refused unless `role` is admin. The
    /// returned `token` (`<id>.<secret>`) is shown once: only its hash is
    /// kept.
    pub fn create_token(&self, name: &str, role: Role, agent: bool, original_location: bool) -> Result<TokenCreated> {
        crate::config::validate_name(name).map_err(StateError::Invalid)?;
        if original_location && role != Role::Admin {
            return Err(StateError::Invalid(format!("original_location is an admin token's capability; a {} token cannot have it", role.as_str())));
        }
        let mut f = self.file.lock();
        if f.tokens.iter().any(|t| t.name == name) {
            return Err(StateError::Conflict(format!("a token named {name:?} exists already; revoke it first or pick another name")));
        }
        let id = random_hex(8);
        let secret = random_hex(32);
        let t = StoredToken { id: id.clone(), name: name.into(), role, created: Utc::now(), agent, original_location, secret_blake3: blake3::hash(secret.as_bytes()).to_hex().to_string() };
        f.tokens.push(t.clone());
        if let Err(e) = write_json(&self.path, &*f, 0o600) {
            f.tokens.pop();
            return Err(e);
        }
        Ok(TokenCreated { info: t.info(), token: format!("{id}.{secret}") })
    }

    /// The stored API tokens, without secrets.
    pub fn tokens(&self) -> Vec<TokenInfo> {
        self.file.lock().tokens.iter().map(StoredToken::info).collect()
    }

    /// Deletes the token with id `id` and returns what it was;
    /// `NotFound` if there is none. Requests with it fail from then on.
    pub fn revoke_token(&self, id: &str) -> Result<TokenInfo> {
        let mut f = self.file.lock();
        let pos = f.tokens.iter().position(|t| t.id == id).ok_or_else(|| StateError::NotFound(format!("token {id}")))?;
        let t = f.tokens.remove(pos);
        if let Err(e) = write_json(&self.path, &*f, 0o600) {
            f.tokens.insert(pos, t);
            return Err(e);
        }
        Ok(t.info())
    }
}

/// The admin password rule: at least 8 characters. `Invalid` says so.
pub fn check_password_strength(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(StateError::Invalid(format!("the password is too short: use at least {MIN_PASSWORD_LEN} characters")));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_sessions_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let a = AuthStore::open(dir.path(), 60).unwrap();
        assert!(a.login("admin", "whatever1").is_none(), "no password set yet");
        assert!(a.set_admin_password("short").is_err());
        a.set_admin_password("correct horse").unwrap();
        assert!(a.login("admin", "wrong horse").is_none());
        assert!(a.login("root", "correct horse").is_none());
        let (s, _) = a.login("admin", "correct horse").unwrap();
        assert_eq!(a.authenticate(&s).unwrap().role, Role::Admin);
        let t = a.create_token("agent-1", Role::BackupOnly, true, false).unwrap();
        assert_eq!(a.authenticate(&t.token).unwrap().role, Role::BackupOnly);
        assert!(a.authenticate(&format!("{}.{}", t.info.id, "0".repeat(64))).is_none());
        assert!(a.create_token("agent-1", Role::ReadOnly, false, false).is_err());
        assert!(a.create_token("op", Role::Operator, false, true).is_err(), "original_location is admin-only");
        let o = a.create_token("dr", Role::Admin, false, true).unwrap();
        let p = a.authenticate(&o.token).unwrap();
        assert!(p.original_location && p.grant().original_location && o.info.original_location);
        assert!(!a.authenticate(&s).unwrap().grant().original_location, "sessions do not have it");
        // Persisted, sessions not.
        let b = AuthStore::open(dir.path(), 60).unwrap();
        assert!(b.authenticate(&s).is_none());
        assert!(b.authenticate(&t.token).is_some());
        b.revoke_token(&t.info.id).unwrap();
        assert!(b.authenticate(&t.token).is_none());
        let text = std::fs::read_to_string(dir.path().join("auth.json")).unwrap();
        assert!(!text.contains("correct horse"));
        assert!(!text.contains(t.token.split_once('.').unwrap().1));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.path().join("auth.json")).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
