//! The agent's transport over the appliance's REST API (HTTP/2 over TLS,
//! through `lifeboat-client`): the routes of `api/src/routes/agent.rs`.

use crate::agent::{Transport, TransportError};
use crate::protocol::{self, CommitRequest, Committed, OpenSession, PackStored, SessionInfo};
use lifeboat_client::{ApiClient, ClientError};
use lifeboat_store::{BlobId, PackId};
use reqwest::Method;
use std::time::Duration;

/// A request other than a pack upload that takes longer than this failed
/// (and is retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The [`Transport`] `lifeboat agent` uses: the appliance's agent routes
/// through an authenticated [`ApiClient`]. Gateway errors (HTTP 502-504)
/// and failed connections are [`TransportError::Connection`] (retried);
/// any other error answer is [`TransportError::Refused`].
pub struct HttpTransport {
    client: ApiClient,
}

impl HttpTransport {
    /// A transport over `client` (server address, TLS trust and token
    /// already set). Make it with `ApiClient::new_agent`: pack uploads have
    /// no overall timeout, so only its TCP timeouts notice a dead link.
    pub fn new(client: ApiClient) -> Self {
        HttpTransport { client }
    }

    fn session_path(session: &str, rest: &str) -> String {
        format!("/api/agent/sessions/{session}{rest}")
    }

    fn send(&self, rb: reqwest::blocking::RequestBuilder) -> Result<reqwest::blocking::Response, TransportError> {
        let resp = rb.send().map_err(|e| TransportError::Connection(describe(&e)))?;
        Ok(resp)
    }

    /// A binary answer, or the error document turned into a `TransportError`.
    fn bytes(&self, resp: reqwest::blocking::Response) -> Result<Vec<u8>, TransportError> {
        if resp.status().is_success() {
            return resp.bytes().map(|b| b.to_vec()).map_err(|e| TransportError::Connection(describe(&e)));
        }
        Err(map(self.client.finish_raw::<()>(resp).unwrap_err()))
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message = format!("{message}: {s}");
        src = s.source();
    }
    message
}

/// Gateway errors and no answer at all are worth another try; any other
/// answer is the appliance's final word.
fn map(e: ClientError) -> TransportError {
    match e {
        ClientError::Api { status: 502..=504, .. } => TransportError::Connection(e.to_string()),
        ClientError::Api { status, message, .. } => TransportError::Refused { status, message },
        ClientError::Transport { .. } => TransportError::Connection(e.to_string()),
        ClientError::Usage(m) => TransportError::Refused { status: 0, message: m },
    }
}

impl Transport for HttpTransport {
    fn server(&self) -> String {
        self.client.server().to_string()
    }

    fn open(&self, req: &OpenSession) -> Result<SessionInfo, TransportError> {
        self.client.post("/api/agent/sessions", req).map_err(map)
    }

    fn missing(&self, session: &str, ids: &[BlobId]) -> Result<Vec<bool>, TransportError> {
        let rb = self
            .client
            .raw(Method::POST, &Self::session_path(session, "/missing"))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .timeout(REQUEST_TIMEOUT)
            .body(protocol::encode_ids(ids));
        let body = self.bytes(self.send(rb)?)?;
        protocol::decode_bits(&body, ids.len()).ok_or_else(|| TransportError::Refused { status: 200, message: format!("a missing-blob answer of {} bytes for {} ids", body.len(), ids.len()) })
    }

    fn put_pack(&self, session: &str, pack: &PackId, seq: u64, bytes: &[u8]) -> Result<PackStored, TransportError> {
        // No overall timeout: a big pack on a slow link takes what it takes;
        // a dead link is noticed by the TCP user timeout.
        let rb = self.client.raw(Method::PUT, &Self::session_path(session, &format!("/packs/{pack}?seq={seq}"))).header(reqwest::header::CONTENT_TYPE, "application/octet-stream").body(bytes.to_vec());
        let resp = self.send(rb)?;
        self.client.finish_raw(resp).map_err(map)
    }

    fn read_tree(&self, session: &str, id: &BlobId) -> Result<Vec<u8>, TransportError> {
        let rb = self.client.raw(Method::POST, &Self::session_path(session, &format!("/trees/{id}"))).timeout(REQUEST_TIMEOUT);
        self.bytes(self.send(rb)?)
    }

    fn commit(&self, session: &str, req: &CommitRequest) -> Result<Committed, TransportError> {
        let rb = self.client.raw(Method::POST, &Self::session_path(session, "/commit")).timeout(REQUEST_TIMEOUT).json(req);
        let resp = self.send(rb)?;
        self.client.finish_raw(resp).map_err(map)
    }

    fn close(&self, session: &str) -> Result<(), TransportError> {
        let rb = self.client.raw(Method::DELETE, &Self::session_path(session, "")).timeout(REQUEST_TIMEOUT);
        let resp = self.send(rb)?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(map(self.client.finish_raw::<()>(resp).unwrap_err()))
    }
}
