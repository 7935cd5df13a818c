//! One task's life on this host: the Docker runtime (`executor`), the run from
//! assignment to result (`runner`), its output in memory (`logs`) and on disk
//! for the upload (`spool`).

pub(crate) mod executor;
pub(crate) mod logs;
pub(crate) mod runner;
pub(crate) mod spool;
