//! The operator REPL: a pure parser ([`parse`]), an executor ([`exec`]) and the
//! line-reading thread ([`repl`]).

pub mod exec;
pub mod parse;
pub mod repl;
