//! The master's error type and its single mapping to gRPC status codes.

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

impl From<MasterError> for tonic::Status {
    fn from(error: MasterError) -> Self {
        match error {
            MasterError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            MasterError::NotFound(m) => tonic::Status::not_found(m),
            MasterError::PermissionDenied(m) => tonic::Status::permission_denied(m),
            MasterError::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            MasterError::ResourceExhausted(m) => tonic::Status::resource_exhausted(m),
            MasterError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            MasterError::Unavailable(m) => tonic::Status::unavailable(m),
            MasterError::Store(e) => {
                tracing::error!(error = %e, "store failure while serving a request");
                tonic::Status::internal("the master's store failed; see the master log")
            }
        }
    }
}
