//! A blocking client of the Lifeboat API: the CLI's remote mode
//! (`lifeboat --server URL --token T ...`) and ingest agents use it.
//!
//! The appliance serves TLS with a self-signed certificate, so trust is
//! pinned by the certificate's SHA-256 fingerprint (shown by
//! `lifeboat serve` and the console) rather than by a CA; `--insecure`
//! skips the check for tests and first contact.
#![warn(missing_docs)]

mod tls;

use lifeboat_api_types::{ApiError, Event};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::BufRead;

pub use tls::{cert_fingerprint, TlsTrust};

/// Why a call to the appliance failed.
#[derive(Debug, thiserror::Error)]
// Each variant's `#[error]` text is its documentation.
#[allow(missing_docs)]
pub enum ClientError {
    /// The server answered with an error document.
    #[error("{server}: {message} (HTTP {status})")]
    Api { server: String, status: u16, kind: String, message: String },
    #[error("{server}: {message}")]
    Transport { server: String, message: String },
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The client's result type.
pub type Result<T> = std::result::Result<T, ClientError>;

/// A blocking client of one appliance's REST API, with a token.
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl ApiClient {
    /// A client of `server` (`https://host:port`), trusting its
    /// certificate as `trust` says.
    pub fn new(server: &str, token: Option<String>, trust: TlsTrust) -> Result<ApiClient> {
        Self::with_builder(server, token, trust, reqwest::blocking::Client::builder())
    }

    /// A client for an ingest agent: a cut link is noticed within about
    /// 10 s whether the agent is sending (data unacknowledged that long:
    /// TCP user timeout) or waiting for an answer (keep-alive probes after
    /// 4 s of silence, every 2 s), so the agent retries on a new
    /// connection. The appliance's kernel answers the probes even while it
    /// is busy with a request. Many requests share the connection (HTTP/2).
    pub fn new_agent(server: &str, token: Option<String>, trust: TlsTrust) -> Result<ApiClient> {
        let builder = reqwest::blocking::Client::builder()
            .tcp_user_timeout(std::time::Duration::from_secs(10))
            .tcp_keepalive(std::time::Duration::from_secs(4))
            .tcp_keepalive_interval(std::time::Duration::from_secs(2))
            .tcp_keepalive_retries(3)
            .pool_max_idle_per_host(4);
        Self::with_builder(server, token, trust, builder)
    }

    /// A client whose every request gives up after `timeout` (the
    /// console's status screen asks a loopback daemon).
    pub fn new_with_timeout(server: &str, token: Option<String>, trust: TlsTrust, timeout: std::time::Duration) -> Result<ApiClient> {
        Self::build(server, token, trust, reqwest::blocking::Client::builder(), Some(timeout))
    }

    fn with_builder(server: &str, token: Option<String>, trust: TlsTrust, builder: reqwest::blocking::ClientBuilder) -> Result<ApiClient> {
        Self::build(server, token, trust, builder, None)
    }

    fn build(server: &str, token: Option<String>, trust: TlsTrust, builder: reqwest::blocking::ClientBuilder, timeout: Option<std::time::Duration>) -> Result<ApiClient> {
        let base = server.trim_end_matches('/').to_string();
        let connect = timeout.unwrap_or(std::time::Duration::from_secs(10)).min(std::time::Duration::from_secs(10));
        let builder = builder.timeout(timeout).connect_timeout(connect);
        let builder = if base.starts_with("https://") {
            builder.use_preconfigured_tls(tls::client_config(trust)?)
        } else if base.starts_with("http://") {
            builder
        } else {
            return Err(ClientError::Usage(format!("server URL {server:?} must start with https:// (or http:// for a loopback listener)")));
        };
        let http = builder.build().map_err(|e| ClientError::Transport { server: base.clone(), message: e.to_string() })?;
        Ok(ApiClient { base, token, http })
    }

    /// The appliance's base URL.
    pub fn server(&self) -> &str {
        &self.base
    }

    /// Uses this token from now on.
    pub fn set_token(&mut self, token: String) {
        self.token = Some(token);
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let rb = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        // reqwest's Display hides the cause (e.g. the TLS verifier's message).
        let mut message = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            message = format!("{message}: {s}");
            src = s.source();
        }
        ClientError::Transport { server: self.base.clone(), message }
    }

    fn finish<T: DeserializeOwned>(&self, resp: reqwest::blocking::Response) -> Result<T> {
        let status = resp.status();
        let body = resp.bytes().map_err(|e| self.transport(e))?;
        if status.is_success() {
            let body: &[u8] = if body.is_empty() { b"null" } else { &body };
            return serde_json::from_slice(body).map_err(|e| ClientError::Transport { server: self.base.clone(), message: format!("unexpected answer: {e}") });
        }
        let (kind, message) = match serde_json::from_slice::<ApiError>(&body) {
            Ok(e) => (e.error, e.message),
            Err(_) => ("http".into(), String::from_utf8_lossy(&body).trim().to_string()),
        };
        Err(ClientError::Api { server: self.base.clone(), status: status.as_u16(), kind, message })
    }

    /// GET, the answer as JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let r = self.request(reqwest::Method::GET, path).send().map_err(|e| self.transport(e))?;
        self.finish(r)
    }

    /// GET with query parameters (None fields are left out).
    pub fn get_query<Q: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, query: &Q) -> Result<T> {
        let r = self.request(reqwest::Method::GET, path).query(query).send().map_err(|e| self.transport(e))?;
        self.finish(r)
    }

    /// A GET whose body is read as it arrives (a download); an error
    /// answer is returned as the typed calls return it. A body cut short
    /// by the server is a read error, not an early end.
    pub fn download<Q: Serialize + ?Sized>(&self, path: &str, query: &Q) -> Result<reqwest::blocking::Response> {
        let r = self.request(reqwest::Method::GET, path).query(query).send().map_err(|e| self.transport(e))?;
        if !r.status().is_success() {
            return Err(self.finish::<()>(r).unwrap_err());
        }
        Ok(r)
    }

    /// GET, the answer as text.
    pub fn get_text(&self, path: &str) -> Result<String> {
        let r = self.request(reqwest::Method::GET, path).send().map_err(|e| self.transport(e))?;
        if !r.status().is_success() {
            return self.finish::<()>(r).map(|_| String::new());
        }
        r.text().map_err(|e| self.transport(e))
    }

    /// POST a JSON body, the answer as JSON.
    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let r = self.request(reqwest::Method::POST, path).json(body).send().map_err(|e| self.transport(e))?;
        self.finish(r)
    }

    /// PUT a JSON body, the answer as JSON.
    pub fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let r = self.request(reqwest::Method::PUT, path).json(body).send().map_err(|e| self.transport(e))?;
        self.finish(r)
    }

    /// DELETE, the answer as JSON (`()` for none).
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let r = self.request(reqwest::Method::DELETE, path).send().map_err(|e| self.transport(e))?;
        self.finish(r)
    }

    /// A raw request for callers that stream bodies (agents).
    pub fn raw(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.request(method, path)
    }

    /// Checks a raw response the same way the typed calls do.
    pub fn finish_raw<T: DeserializeOwned>(&self, resp: reqwest::blocking::Response) -> Result<T> {
        self.finish(resp)
    }

    /// The server's event stream; blocks on `next()` until an event comes.
    pub fn events(&self) -> Result<EventStream> {
        let r = self.request(reqwest::Method::GET, "/api/events").send().map_err(|e| self.transport(e))?;
        if !r.status().is_success() {
            return Err(self.finish::<()>(r).unwrap_err());
        }
        Ok(EventStream { lines: std::io::BufReader::new(r) })
    }
}

/// Server-sent events parsed into `Event`s. Ends when the server closes.
pub struct EventStream {
    lines: std::io::BufReader<reqwest::blocking::Response>,
}

impl Iterator for EventStream {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        let mut data = String::new();
        loop {
            let mut line = String::new();
            match self.lines.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                if let Ok(ev) = serde_json::from_str(&data) {
                    return Some(ev);
                }
                data.clear();
            }
        }
    }
}
