//! The master's error type, and the one table that maps each kind of error to
//! its gRPC code and its HTTP status (both transports render errors from it).

use crate::store::StoreError;
use cloudai_common::validate::ValidationError;

/// What a master operation can fail with. Messages are written for the
/// operator or client that made the request.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// Malformed or out-of-range input.
    #[error("{0}")]
    InvalidArgument(String),
    /// Unknown worker or task.
    #[error("{0}")]
    NotFound(String),
    /// Caller did not prove who it is (no certificate or token).
    #[error("{0}")]
    Unauthenticated(String),
    /// Too many failed attempts; try again later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Caller not allowed (e.g. worker not pre-registered).
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is valid but the cluster is not in a state to do it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A worker could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result alias for master operations.
pub type MasterResult<T> = Result<T, MasterError>;

impl From<ValidationError> for MasterError {
    fn from(error: ValidationError) -> Self {
        MasterError::InvalidArgument(error.to_string())
    }
}

/// The kind of an error, as both transports know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed or out of range.
    InvalidArgument,
    /// It names something that does not exist.
    NotFound,
    /// The caller did not prove who it is.
    Unauthenticated,
    /// The caller failed too often; later.
    ResourceExhausted,
    /// The caller may not do this.
    PermissionDenied,
    /// Valid, but not in the cluster's current state.
    FailedPrecondition,
    /// A worker (or the store, for a moment) cannot be reached.
    Unavailable,
    /// The master itself failed.
    Internal,
}

impl ErrorCode {
    /// The gRPC code and the HTTP status of each kind.
    const TABLE: [(ErrorCode, tonic::Code, u16); 8] = [
        (
            ErrorCode::InvalidArgument,
            tonic::Code::InvalidArgument,
            400,
        ),
        (ErrorCode::NotFound, tonic::Code::NotFound, 404),
        (
            ErrorCode::Unauthenticated,
            tonic::Code::Unauthenticated,
            401,
        ),
        (
            ErrorCode::ResourceExhausted,
            tonic::Code::ResourceExhausted,
            429,
        ),
        (
            ErrorCode::PermissionDenied,
            tonic::Code::PermissionDenied,
            403,
        ),
        (
            ErrorCode::FailedPrecondition,
            tonic::Code::FailedPrecondition,
            409,
        ),
        (ErrorCode::Unavailable, tonic::Code::Unavailable, 503),
        (ErrorCode::Internal, tonic::Code::Internal, 500),
    ];

    fn row(self) -> (ErrorCode, tonic::Code, u16) {
        Self::TABLE
            .into_iter()
            .find(|(code, _, _)| *code == self)
            .unwrap_or((ErrorCode::Internal, tonic::Code::Internal, 500))
    }

    /// Its gRPC status code.
    pub fn grpc(self) -> tonic::Code {
        self.row().1
    }

    /// Its HTTP status code.
    pub fn http(self) -> u16 {
        self.row().2
    }
}

impl MasterError {
    /// The kind of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            MasterError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            MasterError::NotFound(_) => ErrorCode::NotFound,
            MasterError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            MasterError::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            MasterError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            MasterError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            MasterError::Unavailable(_) => ErrorCode::Unavailable,
            MasterError::Store(_) => ErrorCode::Internal,
        }
    }

    /// What the client is told: the message, except for the master's own
    /// failures, which are logged and named only by where to look.
    pub fn client_message(&self) -> String {
        match self {
            MasterError::Store(error) => {
                tracing::error!(%error, "store failure while serving a request");
                "the master's store failed; see the master log".into()
            }
            other => other.to_string(),
        }
    }
}

impl From<MasterError> for tonic::Status {
    fn from(error: MasterError) -> Self {
        tonic::Status::new(error.code().grpc(), error.client_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_row() {
        for (code, _, _) in ErrorCode::TABLE {
            let rows = ErrorCode::TABLE
                .iter()
                .filter(|(c, _, _)| *c == code)
                .count();
            assert_eq!(rows, 1, "{code:?}");
        }
        assert_eq!(ErrorCode::NotFound.http(), 404);
        assert_eq!(
            ErrorCode::FailedPrecondition.grpc(),
            tonic::Code::FailedPrecondition
        );
        let store = MasterError::Store(StoreError::Backend {
            operation: "test",
            message: "secret detail".into(),
        });
        let status = tonic::Status::from(store);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("secret detail"));
    }
}
