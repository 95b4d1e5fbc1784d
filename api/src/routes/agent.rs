//! Remote ingest agents' upload protocol (docs/agent-protocol.md): open a
//! session, ask which blobs are missing, upload packs, read the parent's
//! trees, commit. The sessions live in the `IngestActor`; a session
//! belongs to the token that opened it. Needs the backup permission
//! (agents' tokens are backup-only).

use crate::auth::{perm, Auth};
use crate::ApiState;
use actix_web::http::StatusCode;
use actix_web::{delete, post, put, web, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;
use lifeboat_actors::ingest::{CallSession, OpenAgentSession, SessionCall, SessionReply};
use lifeboat_api_types::ApiError;
use lifeboat_remote::protocol::{self, CommitRequest, Committed, OpenSession, PackStored, SessionInfo};
use lifeboat_remote::RemoteError;
use lifeboat_store::{BlobId, PackId};
use serde::Deserialize;
use utoipa::IntoParams;

/// A session error as an `ApiError` document with the status that fits.
#[derive(Debug)]
pub struct AgentErr(RemoteError);

impl std::fmt::Display for AgentErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for AgentErr {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            tracing::error!("agent session: {}", self.0);
        }
        HttpResponse::build(self.status_code()).json(ApiError { error: self.0.kind().into(), message: self.0.to_string() })
    }
}

impl From<RemoteError> for AgentErr {
    fn from(e: RemoteError) -> Self {
        AgentErr(e)
    }
}

impl From<actix::MailboxError> for AgentErr {
    fn from(e: actix::MailboxError) -> Self {
        AgentErr(RemoteError::Internal(format!("the ingest actor: {e}")))
    }
}

type Reply<T> = Result<T, actix_web::Error>;

fn bad(message: String) -> AgentErr {
    AgentErr(RemoteError::BadRequest(message))
}

async fn call(st: &ApiState, auth: &Auth<perm::Backup>, session: String, call: SessionCall) -> Result<SessionReply, AgentErr> {
    Ok(st.ingest.send(CallSession { owner: auth.principal.name.clone(), session, call }).await??)
}

/// Reads a binary body of at most `limit` bytes.
async fn body(req: &HttpRequest, mut payload: web::Payload, limit: usize, what: &str) -> Result<bytes::Bytes, AgentErr> {
    // Sized up front from Content-Length: a 16 MiB pack is not regrown
    // (and copied) a dozen times on its way in.
    let announced = req.headers().get(actix_web::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    let mut buf = bytes::BytesMut::with_capacity(announced.min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| bad(format!("reading the {what}: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(bad(format!("the {what} is larger than {limit} bytes")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn unexpected() -> AgentErr {
    AgentErr(RemoteError::Internal("unexpected reply from the ingest actor".into()))
}

/// Open an upload session: the snapshot this agent run will commit.
#[utoipa::path(tag = "agent", security(("bearer" = [])), request_body = OpenSession,
    responses((status = 201, body = SessionInfo), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError, description = "no such datastore"), (status = 409, body = ApiError, description = "the datastore is encrypted")))]
#[post("/api/agent/sessions")]
pub async fn open(auth: Auth<perm::Backup>, st: web::Data<ApiState>, req: web::Json<OpenSession>) -> Reply<HttpResponse> {
    let info = st.ingest.send(OpenAgentSession { owner: auth.principal.name.clone(), req: req.into_inner() }).await.map_err(AgentErr::from)?.map_err(AgentErr)?;
    Ok(HttpResponse::Created().json(info))
}

/// Which of these blobs the datastore lacks. Body: ids, 32 raw bytes
/// each (at most 4096); answer: one bit per id, LSB first, set = missing.
#[utoipa::path(tag = "agent", security(("bearer" = [])), params(("session" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = Vec<u8>, content_type = "application/octet-stream"), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[post("/api/agent/sessions/{session}/missing")]
pub async fn missing(auth: Auth<perm::Backup>, st: web::Data<ApiState>, session: web::Path<String>, req: HttpRequest, payload: web::Payload) -> Reply<HttpResponse> {
    let b = body(&req, payload, protocol::MISSING_QUERY_MAX * 32, "id list").await?;
    let ids = protocol::decode_ids(&b).ok_or_else(|| bad(format!("the id list is {} bytes, not a multiple of 32", b.len())))?;
    match call(&st, &auth, session.into_inner(), SessionCall::Missing(ids)).await? {
        SessionReply::Missing(bits) => Ok(HttpResponse::Ok().content_type("application/octet-stream").body(protocol::encode_bits(&bits))),
        _ => Err(unexpected().into()),
    }
}

#[derive(Deserialize, IntoParams)]
pub struct PackSeq {
    /// The pack's place in the run (0, 1, ...): packs are indexed in this order.
    pub seq: u64,
}

/// Upload a pack (the pack file as stored): verified record by record,
/// written, fsynced and indexed in `seq` order. Idempotent.
#[utoipa::path(tag = "agent", security(("bearer" = [])), params(("session" = String, Path), ("pack" = String, Path), PackSeq),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = PackStored), (status = 400, body = ApiError, description = "the pack is damaged or not a pack"), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError, description = "a tree names a blob the datastore lacks")))]
#[put("/api/agent/sessions/{session}/packs/{pack}")]
pub async fn put_pack(
    auth: Auth<perm::Backup>,
    st: web::Data<ApiState>,
    path: web::Path<(String, String)>,
    q: web::Query<PackSeq>,
    req: HttpRequest,
    payload: web::Payload,
) -> Reply<web::Json<PackStored>> {
    let (session, pack) = path.into_inner();
    let pack = PackId::from_hex(&pack).ok_or_else(|| bad(format!("pack id {pack:?} is not 32 hex digits")))?;
    let bytes = body(&req, payload, protocol::PACK_UPLOAD_MAX as usize, "pack").await?;
    match call(&st, &auth, session, SessionCall::PutPack { pack, seq: q.seq, bytes }).await? {
        SessionReply::Stored(s) => Ok(web::Json(s)),
        _ => Err(unexpected().into()),
    }
}

/// A tree blob's plain bytes (the agent walks its parent snapshot with
/// them). POST, like every call of an upload session: it needs the backup
/// permission, which read-only tokens lack.
#[utoipa::path(tag = "agent", security(("bearer" = [])), params(("session" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Vec<u8>, content_type = "application/octet-stream"), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[post("/api/agent/sessions/{session}/trees/{id}")]
pub async fn tree(auth: Auth<perm::Backup>, st: web::Data<ApiState>, path: web::Path<(String, String)>) -> Reply<HttpResponse> {
    let (session, id) = path.into_inner();
    let id = BlobId::from_hex(&id).ok_or_else(|| bad(format!("blob id {id:?} is not 64 hex digits")))?;
    match call(&st, &auth, session, SessionCall::ReadTree(id)).await? {
        SessionReply::Tree(t) => Ok(HttpResponse::Ok().content_type("application/octet-stream").body(t)),
        _ => Err(unexpected().into()),
    }
}

/// Commit the snapshot (the last request of a run). Safe to repeat.
#[utoipa::path(tag = "agent", security(("bearer" = [])), params(("session" = String, Path)), request_body = CommitRequest,
    responses((status = 200, body = Committed), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError, description = "the root tree is not stored")))]
#[post("/api/agent/sessions/{session}/commit")]
pub async fn commit(auth: Auth<perm::Backup>, st: web::Data<ApiState>, session: web::Path<String>, req: web::Json<CommitRequest>) -> Reply<web::Json<Committed>> {
    match call(&st, &auth, session.into_inner(), SessionCall::Commit(req.into_inner())).await? {
        SessionReply::Committed(c) => Ok(web::Json(c)),
        _ => Err(unexpected().into()),
    }
}

/// End a session (after its commit, or to give up without a snapshot).
#[utoipa::path(tag = "agent", security(("bearer" = [])), params(("session" = String, Path)),
    responses((status = 204), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[delete("/api/agent/sessions/{session}")]
pub async fn close(auth: Auth<perm::Backup>, st: web::Data<ApiState>, session: web::Path<String>) -> Reply<HttpResponse> {
    call(&st, &auth, session.into_inner(), SessionCall::Close).await?;
    Ok(HttpResponse::NoContent().finish())
}
