//! The master's console: the shared command layer of `cloudai_cli` (one
//! grammar, one executor, one set of views) run in-process against this
//! master's own `MasterAgent` and `MasterAdmin` services, as the local admin.
//! `cloudai` runs the same code over the network.

use crate::api::grpc::admin_api::AdminGrpc;
use crate::api::grpc::agent_api::AgentGrpc;
use crate::auth::users::Caller;
use crate::services::Services;
use cloudai_cli::client::{BoxError, Client, Transport};
use cloudai_cli::exec::{Flow, Format, Session};
use std::path::PathBuf;
use tokio::runtime::Handle;
use tonic::codegen::http;
use tower::ServiceExt;

/// File name of the console's REPL history inside the data directory.
pub const HISTORY_FILE: &str = "repl_history";

/// A client whose calls never leave the process: they reach the master's
/// gRPC services directly, marked as the console's (the local admin; a
/// peer cannot mark its calls so).
pub fn console_client(services: &Services) -> Client {
    let routes = tonic::service::Routes::new(AgentGrpc::service(services))
        .add_service(AdminGrpc::service(services))
        .prepare();
    let console = routes
        .map_request(|mut request: http::Request<tonic::body::Body>| {
            request.extensions_mut().insert(Caller::console());
            request
        })
        .map_err(|never| -> BoxError { match never {} });
    Client::new(Transport::new(console), None, "master")
}

/// Starts the console REPL on its own thread. `exit` (or Ctrl-D on a
/// terminal) stops the master; the end of piped input only ends the REPL.
pub fn spawn(
    services: Services,
    runtime: Handle,
    data_dir: PathBuf,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("repl".into()).spawn(move || {
        let repl = cloudai_cli::repl::Repl {
            session: Session {
                client: console_client(&services),
                format: Format::Text,
                colour: cloudai_cli::views::colour_enabled(),
            },
            runtime,
            history: Some(data_dir.join(HISTORY_FILE)),
            banner: "cloudai master ready: `help` lists commands, Ctrl-C stops a live view, `exit` or Ctrl-D stops the master".into(),
            stop: services.runtime.shutdown.clone(),
        };
        match repl.run() {
            Ok(Flow::Exit) => {
                tracing::info!("exit requested from the REPL");
                services.runtime.shutdown.cancel();
            }
            Ok(Flow::Continue) => {
                tracing::info!("stdin closed: the REPL ended, the master keeps serving (stop it with SIGTERM)");
            }
            Err(error) => {
                tracing::error!(%error, "REPL failed; the master keeps serving (stop it with SIGTERM)");
            }
        }
    })
}
