//! The CloudAI command layer: one grammar ([`parse`], clap), one executor
//! ([`exec`]) over a gRPC [`client::Client`], one set of views ([`views`]),
//! and the interactive REPL ([`repl`]). The `cloudai` binary runs it against
//! a remote master; the master's console runs the same code in-process
//! against its own services (a [`client::Transport`] that never leaves the
//! process), so the same state prints the same way in both.

pub mod app;
pub mod client;
mod complete;
pub mod config;
pub mod exec;
mod follow;
pub mod keys;
pub mod parse;
pub mod repl;
pub mod views;
