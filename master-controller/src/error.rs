//! REST errors: `{"message": "..."}` with 400/401/403/404/409/429/503, never 500 for bad input.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, m)
    }
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden")
    }
    pub fn forbidden_msg(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(serde_json::json!({ "message": self.message }))
    }
}

impl From<sqlx::Error> for ApiError {
    /// The database's own text never reaches the client: it is logged, and the client gets a message it
    /// can act on.
    fn from(e: sqlx::Error) -> Self {
        match &e {
            // Also the server's own goodbyes: class 08 (connection exception) and 57P01-03 (shutting
            // down, crashed, starting up), which a restart of PostgreSQL sends to open connections.
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(error = %e, "database unavailable");
                Self::unavailable("database unavailable, retry later")
            }
            sqlx::Error::Database(d)
                if d.code().is_some_and(|c| {
                    c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
                }) =>
            {
                tracing::warn!(error = %e, "database unavailable");
                Self::unavailable("database unavailable, retry later")
            }
            // 22021: a NUL byte in text; 22P05: \u0000 in JSON; 22001: a value too long for its column.
            sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("22021" | "22P05")) => {
                Self::bad_request("Invalid input: text must not contain NUL characters")
            }
            sqlx::Error::Database(d) if d.code().as_deref() == Some("22001") => {
                Self::bad_request("Invalid input: a value is too long")
            }
            _ => {
                tracing::error!(error = %e, "database error");
                Self::internal("internal error, see the master controller's log")
            }
        }
    }
}

/// HTTP status for a controller's gRPC code.
pub fn from_status(s: &tonic::Status) -> ApiError {
    use tonic::Code::*;
    let status = match s.code() {
        InvalidArgument | FailedPrecondition | OutOfRange => StatusCode::BAD_REQUEST,
        NotFound => StatusCode::NOT_FOUND,
        AlreadyExists | Aborted => StatusCode::CONFLICT,
        PermissionDenied => StatusCode::FORBIDDEN,
        Unauthenticated => StatusCode::UNAUTHORIZED,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Unimplemented => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, s.message())
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;
