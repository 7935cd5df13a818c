//! Transport only: the gRPC services (`grpc`) and the HTTP server (`http`).
//! Handlers validate, call the core and render its answers.

pub(crate) mod grpc;
pub(crate) mod http;
