//! One task's life on this host: the Docker runtime (`executor`), the handle
//! of a task held and why it stops (`handle`), the run from assignment to
//! result (`runner`), the adoption of containers left by an earlier run
//! (`reconcile`), its output in memory (`logs`) and on disk for the upload
//! (`spool`).

pub(crate) mod executor;
pub(crate) mod handle;
pub(crate) mod logs;
pub(crate) mod reconcile;
pub(crate) mod runner;
pub(crate) mod spool;
