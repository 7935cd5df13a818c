//! The operator REPL: a pure parser ([`parse`]), an executor ([`exec`]) and the
//! line-reading thread ([`repl`]) and what it draws ([`views`]).

pub mod complete;
pub mod exec;
mod follow;
pub mod keys;
pub mod parse;
pub mod repl;
pub mod views;
