//! The HTTP port: the axum router and its token check (`router`), the handles
//! its routes share (`app`), the
//! listeners behind the connection gate and TLS (`listener`), the dashboard's
//! JSON API (`rest`), secrets for admins (`secrets`), a task's live output
//! (`logs_ws`), WebSocket telemetry
//! (`telemetry_ws`) and
//! the dashboard page itself (`dashboard`).

pub(crate) mod app;
pub(crate) mod dashboard;
pub(crate) mod listener;
pub(crate) mod logs_ws;
pub(crate) mod rest;
pub(crate) mod router;
pub(crate) mod secrets;
pub(crate) mod telemetry_ws;
