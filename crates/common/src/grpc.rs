//! gRPC status codes as the gRPC conventions use them for what a client sent.
//! tonic answers an undecodable request with `INTERNAL` and one over the size
//! limit with `OUT_OF_RANGE`; both are the client's fault, not the server's:
//! [`conventional_codes`] turns them into `INVALID_ARGUMENT` and
//! `RESOURCE_EXHAUSTED` (a tower layer over every server).

use tonic::codegen::http;
use tonic::{Code, Status};

/// tonic's message for a request body that is not valid protobuf.
const DECODE_FAILURE: &str = "failed to decode Protobuf message";
/// tonic's message for a request larger than the server's limit.
const TOO_LARGE: &str = "message length too large";

/// The conventional status for an error tonic produced itself, if it differs.
pub fn conventional(status: &Status) -> Option<Status> {
    match status.code() {
        Code::Internal if status.message().starts_with(DECODE_FAILURE) => Some(
            Status::invalid_argument(format!("malformed request: {}", status.message())),
        ),
        Code::OutOfRange if status.message().contains(TOO_LARGE) => Some(
            Status::resource_exhausted(format!("request too large: {}", status.message())),
        ),
        _ => None,
    }
}

/// Rewrites an error response (tonic keeps the `Status` of a headers-only
/// error in the response extensions) to the conventional code.
pub fn conventional_codes<B: Default>(response: http::Response<B>) -> http::Response<B> {
    match response.extensions().get::<Status>().and_then(conventional) {
        Some(status) => status.into_http(),
        None => response,
    }
}

/// [`conventional_codes`] as a layer for `tonic::transport::Server::layer`.
pub fn conventional_codes_layer<B: Default>()
-> tower::util::MapResponseLayer<fn(http::Response<B>) -> http::Response<B>> {
    tower::util::MapResponseLayer::new(conventional_codes::<B>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_faults_get_client_codes() {
        let decode = Status::internal("failed to decode Protobuf message: invalid wire type");
        assert_eq!(conventional(&decode).unwrap().code(), Code::InvalidArgument);
        let large = Status::out_of_range(
            "Error, decoded message length too large: found 5242890 bytes, the limit is: 4194304 bytes",
        );
        assert_eq!(
            conventional(&large).unwrap().code(),
            Code::ResourceExhausted
        );
        // The server's own failures keep their codes.
        assert!(conventional(&Status::internal("store failed: see the master log")).is_none());
        assert!(conventional(&Status::not_found("no task")).is_none());
    }

    #[test]
    fn responses_are_rewritten_only_for_those() {
        let response: http::Response<()> =
            Status::internal("failed to decode Protobuf message: x").into_http();
        let rewritten = conventional_codes(response);
        assert_eq!(rewritten.headers()["grpc-status"], "3");
        let response: http::Response<()> = Status::unavailable("later").into_http();
        assert_eq!(conventional_codes(response).headers()["grpc-status"], "14");
    }
}
