//! The master's gRPC services: `MasterService` for workers (`worker_api`),
//! `MasterAgent` for external schedulers (`agent_api`, with its protobuf views
//! in `agent_views`) and `MasterAdmin` for the `cloudai` CLI (`admin_api`).

pub(crate) mod admin_api;
pub(crate) mod agent_api;
pub(crate) mod agent_views;
pub(crate) mod worker_api;

use crate::auth::Auth;
use crate::auth::users::{Caller, Role};
use tonic::{Request, Status};

/// Who makes a call, when they have at least `role`: the console's own
/// in-process calls carry a [`Caller`] extension (a peer cannot set one);
/// every other call is checked by its bearer token.
pub(crate) fn caller<T>(auth: &Auth, request: &Request<T>, role: Role) -> Result<Caller, Status> {
    if let Some(console) = request.extensions().get::<Caller>() {
        return Ok(console.clone());
    }
    Ok(auth.authorize(bearer(request), role, request.remote_addr())?)
}

/// The bearer token of a call, from its `authorization` metadata.
pub(crate) fn bearer<T>(request: &Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}
