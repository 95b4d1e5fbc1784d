//! Every failure leaves the API as an `ApiError` JSON document with the
//! right status; internal details go to the log, not to the caller.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use lifeboat_api_types::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ApiErr {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
    /// A server the appliance talks to (an SMTP relay) failed.
    #[error("{0}")]
    BadGateway(String),
}

impl ApiErr {
    fn kind(&self) -> &'static str {
        match self {
            ApiErr::Unauthorized(_) => "unauthorized",
            ApiErr::Forbidden(_) => "forbidden",
            ApiErr::NotFound(_) => "not-found",
            ApiErr::BadRequest(_) => "bad-request",
            ApiErr::Conflict(_) => "conflict",
            ApiErr::Internal(_) => "internal",
            ApiErr::BadGateway(_) => "bad-gateway",
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> ApiErr {
        ApiErr::Internal(e.to_string())
    }
}

impl ResponseError for ApiErr {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiErr::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiErr::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiErr::NotFound(_) => StatusCode::NOT_FOUND,
            ApiErr::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiErr::Conflict(_) => StatusCode::CONFLICT,
            ApiErr::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiErr::BadGateway(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiErr::Internal(m) = self {
            tracing::error!("internal error: {m}");
        }
        let mut r = HttpResponse::build(self.status_code());
        if matches!(self, ApiErr::Unauthorized(_)) {
            r.insert_header(("WWW-Authenticate", "Bearer"));
        }
        r.json(ApiError { error: self.kind().into(), message: self.to_string() })
    }
}

impl From<lifeboat_actors::jobs::JobError> for ApiErr {
    fn from(e: lifeboat_actors::jobs::JobError) -> Self {
        use lifeboat_actors::jobs::JobError as J;
        match e {
            J::UnknownDatastore(_) | J::NotFound(_) | J::UnknownVm(_) => ApiErr::NotFound(e.to_string()),
            J::Invalid(_) => ApiErr::BadRequest(e.to_string()),
            J::Finished(_) | J::Busy(_) => ApiErr::Conflict(e.to_string()),
            J::State(_) => ApiErr::Internal(e.to_string()),
        }
    }
}

impl From<lifeboat_actors::scheduler::ScheduleError> for ApiErr {
    fn from(e: lifeboat_actors::scheduler::ScheduleError) -> Self {
        use lifeboat_actors::scheduler::ScheduleError as S;
        match e {
            S::Invalid(m) => ApiErr::BadRequest(m),
            S::NotFound(_) => ApiErr::NotFound(e.to_string()),
            S::Conflict(m) => ApiErr::Conflict(m),
            S::State(m) => ApiErr::Internal(m),
        }
    }
}

impl From<lifeboat_state::StateError> for ApiErr {
    fn from(e: lifeboat_state::StateError) -> Self {
        use lifeboat_state::StateError as S;
        match e {
            S::Invalid(m) => ApiErr::BadRequest(m),
            S::NotFound(_) => ApiErr::NotFound(e.to_string()),
            S::Conflict(m) => ApiErr::Conflict(m),
            e => ApiErr::Internal(e.to_string()),
        }
    }
}

impl From<lifeboat_actors::connector::ConnectorError> for ApiErr {
    fn from(e: lifeboat_actors::connector::ConnectorError) -> Self {
        use lifeboat_actors::connector::ConnectorError as C;
        match e {
            C::Invalid(m) | C::Unreachable(m) => ApiErr::BadRequest(m),
            C::NotFound(_) => ApiErr::NotFound(e.to_string()),
            C::Conflict(m) => ApiErr::Conflict(m),
            C::State(m) => ApiErr::Internal(m),
        }
    }
}

impl From<lifeboat_actors::export::ExportError> for ApiErr {
    fn from(e: lifeboat_actors::export::ExportError) -> Self {
        use lifeboat_actors::export::ExportError as X;
        match e {
            X::Invalid(m) => ApiErr::BadRequest(m),
            X::NotFound(m) => ApiErr::NotFound(m),
            X::Unavailable(m) => ApiErr::Internal(m),
        }
    }
}

impl From<actix::MailboxError> for ApiErr {
    fn from(e: actix::MailboxError) -> Self {
        ApiErr::Internal(format!("an actor did not answer: {e}"))
    }
}

/// Malformed JSON, paths and queries get our error document too.
pub fn json_config() -> actix_web::web::JsonConfig {
    actix_web::web::JsonConfig::default().limit(1 << 20).error_handler(|e, _| ApiErr::BadRequest(format!("invalid request body: {e}")).into())
}

pub fn path_config() -> actix_web::web::PathConfig {
    actix_web::web::PathConfig::default().error_handler(|e, _| ApiErr::BadRequest(format!("invalid path: {e}")).into())
}

pub fn query_config() -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default().error_handler(|e, _| ApiErr::BadRequest(format!("invalid query: {e}")).into())
}
