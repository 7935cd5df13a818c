//! The REPL thread. rustyline blocks, so it runs on its own OS thread and drives
//! the async core through a runtime handle. With stdin not a terminal (piped
//! commands, tests) it reads plain lines instead.

use super::exec::{Flow, execute};
use super::parse::parse;
use crate::cluster::Master;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use tokio::runtime::Handle;

/// File name of the REPL history inside the data directory.
pub const HISTORY_FILE: &str = "repl_history";

/// Starts the REPL on its own thread. `exit` (or Ctrl-D on a terminal) stops the
/// master; the end of piped input only ends the REPL.
pub fn spawn(
    master: Master,
    runtime: Handle,
    data_dir: PathBuf,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("repl".into()).spawn(move || {
        let interactive = std::io::stdin().is_terminal();
        let result = if interactive {
            run_interactive(&master, &runtime, data_dir.join(HISTORY_FILE))
        } else {
            run_piped(&master, &runtime)
        };
        match result {
            Ok(Flow::Exit) => {
                tracing::info!("exit requested from the REPL");
                master.shutdown_token().cancel();
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

fn handle_line(master: &Master, runtime: &Handle, line: &str) -> std::io::Result<Flow> {
    let mut out = std::io::stdout();
    let flow = match parse(line) {
        Ok(command) => runtime.block_on(execute(master, command, &mut out))?,
        Err(message) => {
            writeln!(out, "error: {message}")?;
            Flow::Continue
        }
    };
    out.flush()?;
    Ok(flow)
}

fn run_piped(master: &Master, runtime: &Handle) -> std::io::Result<Flow> {
    for line in std::io::stdin().lock().lines() {
        if handle_line(master, runtime, &line?)? == Flow::Exit {
            return Ok(Flow::Exit);
        }
    }
    Ok(Flow::Continue)
}

fn run_interactive(master: &Master, runtime: &Handle, history: PathBuf) -> std::io::Result<Flow> {
    let mut editor = DefaultEditor::new().map_err(std::io::Error::other)?;
    // No history yet is normal on first start.
    let _ = editor.load_history(&history);
    println!("cloudai master ready: `help` lists commands, `exit` or Ctrl-D stops the master");
    loop {
        if master.shutdown_token().is_cancelled() {
            return Ok(Flow::Continue);
        }
        match editor.readline("cloudai> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                    if let Err(error) = editor.save_history(&history) {
                        tracing::warn!(%error, path = %history.display(), "could not save REPL history");
                    }
                }
                if handle_line(master, runtime, &line)? == Flow::Exit {
                    return Ok(Flow::Exit);
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return Ok(Flow::Exit),
            Err(error) => return Err(std::io::Error::other(error)),
        }
    }
}
