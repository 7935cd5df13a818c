//! The operator REPL: a pure parser ([`parse`]), an executor ([`exec`]) and the
//! line-reading thread ([`repl`]) and what it draws ([`views`]).

pub(crate) mod complete;
pub(crate) mod exec;
mod follow;
pub(crate) mod keys;
pub(crate) mod parse;
pub mod repl;
pub(crate) mod views;
