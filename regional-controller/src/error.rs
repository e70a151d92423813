//! The controller's one error type and its mapping to gRPC status codes.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum CtrlError {
    /// Bad input: names the field and what is allowed.
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The request is valid but the current state forbids it (in use, wrong state, ...).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// A server the controller depends on (Vault) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A limit of the region (an organization's object quota) is reached.
    #[error("{0}")]
    QuotaExceeded(String),
    /// Authenticated, but this identity may not do that.
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Timeout(String),
    /// Concurrent writers kept changing what this request depends on.
    #[error("{0} changed concurrently too often; retry")]
    Conflict(String),
    #[error("etcd: {0}")]
    Store(#[from] etcd_client::Error),
    #[error("stored value of {key} cannot be read: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
}

pub type Result<T, E = CtrlError> = std::result::Result<T, E>;

impl From<CtrlError> for Status {
    fn from(e: CtrlError) -> Self {
        // What the store said stays in the log; callers learn only that it failed.
        if let CtrlError::Store(err) = &e {
            tracing::error!(error = %err, "etcd request failed");
            return Status::unavailable("the region's store did not take the request; retry later");
        }
        let code = match &e {
            CtrlError::Invalid(_) => Code::InvalidArgument,
            CtrlError::NotFound(_) => Code::NotFound,
            CtrlError::PermissionDenied(_) => Code::PermissionDenied,
            CtrlError::QuotaExceeded(_) => Code::ResourceExhausted,
            CtrlError::Unavailable(_) => Code::Unavailable,
            CtrlError::AlreadyExists(_) => Code::AlreadyExists,
            CtrlError::FailedPrecondition(_) => Code::FailedPrecondition,
            CtrlError::Unauthenticated(_) => Code::Unauthenticated,
            CtrlError::Timeout(_) => Code::DeadlineExceeded,
            CtrlError::Conflict(_) => Code::Aborted,
            CtrlError::Store(_) => Code::Unavailable,
            CtrlError::Corrupt { .. } => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// Shorthand for an invalid-argument error.
pub fn invalid(msg: impl Into<String>) -> CtrlError {
    CtrlError::Invalid(msg.into())
}
