//! The REPL thread. rustyline blocks, so it runs on its own OS thread and drives
//! the async core through a runtime handle. With stdin not a terminal (piped
//! commands, tests) it reads plain lines instead.

use super::complete::ReplHelper;
use super::exec::{Flow, execute};
use super::parse::{Command, parse};
use crate::services::Services;
use rustyline::Editor;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// File name of the REPL history inside the data directory.
pub const HISTORY_FILE: &str = "repl_history";

/// Starts the REPL on its own thread. `exit` (or Ctrl-D on a terminal) stops the
/// master; the end of piped input only ends the REPL.
pub fn spawn(
    services: Services,
    runtime: Handle,
    data_dir: PathBuf,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("repl".into()).spawn(move || {
        let interactive = std::io::stdin().is_terminal();
        let result = if interactive {
            run_interactive(&services, &runtime, data_dir.join(HISTORY_FILE))
        } else {
            run_piped(&services, &runtime)
        };
        match result {
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

/// The command being run, so Ctrl-C can interrupt it.
type Current = Arc<Mutex<Option<CancellationToken>>>;

/// Reads a secret's value for `secret set` (`None`: none was given).
type ReadValue<'a> = &'a mut dyn FnMut(&str) -> std::io::Result<Option<String>>;

fn handle_line(
    services: &Services,
    runtime: &Handle,
    current: &Current,
    line: &str,
    read_value: ReadValue<'_>,
) -> std::io::Result<Flow> {
    let mut out = std::io::stdout();
    let interrupt = CancellationToken::new();
    *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(interrupt.clone());
    let flow = match parse(line) {
        Ok(Command::SecretSet {
            name,
            registry,
            value: None,
        }) => {
            let prompt = match &registry {
                Some(host) => format!("login for {host} (USER:PASSWORD, not echoed): "),
                None => format!("value of {name} (not echoed): "),
            };
            let value = read_value(&prompt)?;
            let command = Command::SecretSet {
                name,
                registry,
                value,
            };
            runtime.block_on(execute(services, command, &mut out, &interrupt))?
        }
        Ok(command) => runtime.block_on(execute(services, command, &mut out, &interrupt))?,
        Err(message) => {
            writeln!(out, "error: {message}")?;
            Flow::Continue
        }
    };
    current.lock().unwrap_or_else(|p| p.into_inner()).take();
    out.flush()?;
    Ok(flow)
}

/// Turns SIGINT into "interrupt the current command" while the REPL runs.
fn forward_interrupts(runtime: &Handle, current: Current) {
    // Registered here, synchronously, before rustyline first reads a line:
    // rustyline saves and restores the SIGINT disposition around each read, so
    // a handler installed concurrently could be undone.
    let _in_runtime = runtime.enter();
    let Ok(mut interrupts) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    else {
        tracing::warn!("cannot listen for Ctrl-C; live views stop with their task");
        return;
    };
    runtime.spawn(async move {
        while interrupts.recv().await.is_some() {
            if let Some(command) = current.lock().unwrap_or_else(|p| p.into_inner()).take() {
                command.cancel();
            }
        }
    });
}

/// Piped input: a `secret set` line's value is the next line.
fn run_piped(services: &Services, runtime: &Handle) -> std::io::Result<Flow> {
    let current = Current::default();
    let mut lines = std::io::stdin().lock().lines();
    while let Some(line) = lines.next() {
        let line = line?;
        let mut next_line = |_: &str| lines.next().transpose();
        if handle_line(services, runtime, &current, &line, &mut next_line)? == Flow::Exit {
            return Ok(Flow::Exit);
        }
    }
    Ok(Flow::Continue)
}

fn run_interactive(
    services: &Services,
    runtime: &Handle,
    history: PathBuf,
) -> std::io::Result<Flow> {
    let current = Current::default();
    forward_interrupts(runtime, current.clone());
    let mut editor: Editor<ReplHelper, DefaultHistory> =
        Editor::new().map_err(std::io::Error::other)?;
    editor.set_helper(Some(ReplHelper::new(
        services.clone(),
        super::views::colour_enabled(),
    )));
    // No history yet is normal on first start.
    let _ = editor.load_history(&history);
    println!(
        "cloudai master ready: `help` lists commands, Ctrl-C stops a live view, `exit` or Ctrl-D stops the master"
    );
    loop {
        if services.runtime.shutdown.is_cancelled() {
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
                let mut hidden = super::keys::read_hidden;
                if handle_line(services, runtime, &current, &line, &mut hidden)? == Flow::Exit {
                    return Ok(Flow::Exit);
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return Ok(Flow::Exit),
            Err(error) => return Err(std::io::Error::other(error)),
        }
    }
}
