//! The master's gRPC services: `MasterService` for workers (`worker_api`) and
//! `MasterAgent` for external schedulers (`agent_api`, with its protobuf views
//! in `agent_views`).

pub(crate) mod agent_api;
pub(crate) mod agent_views;
pub(crate) mod worker_api;
