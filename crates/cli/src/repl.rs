//! The interactive REPL, for the master's console and `cloudai repl` alike.
//! rustyline blocks, so it runs on the calling (non-async) thread and drives
//! the async executor through a runtime handle. With stdin not a terminal
//! (piped commands, tests) it reads plain lines instead.

use crate::complete::ReplHelper;
use crate::exec::{Flow, Session, execute};
use crate::parse::{Command, parse};
use rustyline::Editor;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// How a REPL runs.
pub struct Repl {
    /// Where commands go.
    pub session: Session,
    /// The runtime the executor runs on.
    pub runtime: Handle,
    /// The history file (interactive only; `None`: no history).
    pub history: Option<PathBuf>,
    /// The first line on a terminal.
    pub banner: String,
    /// Cancelled when the REPL should end (the master is stopping).
    pub stop: CancellationToken,
}

/// The command being run, so Ctrl-C can interrupt it.
type Current = Arc<Mutex<Option<CancellationToken>>>;

/// Reads a secret's value for `secret set` (`None`: none was given).
type ReadValue<'a> = &'a mut dyn FnMut(&str) -> std::io::Result<Option<String>>;

impl Repl {
    /// Reads and runs lines until `exit` (or Ctrl-D on a terminal:
    /// [`Flow::Exit`]) or the end of piped input ([`Flow::Continue`]).
    pub fn run(&self) -> std::io::Result<Flow> {
        if std::io::stdin().is_terminal() {
            self.run_interactive()
        } else {
            self.run_piped()
        }
    }

    fn handle_line(
        &self,
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
                let value = read_value(&secret_prompt(&name, registry.as_deref()))?;
                let command = Command::SecretSet {
                    name,
                    registry,
                    value,
                };
                self.runtime
                    .block_on(execute(&self.session, command, &mut out, &interrupt))?
            }
            Ok(command) => {
                self.runtime
                    .block_on(execute(&self.session, command, &mut out, &interrupt))?
            }
            Err(message) => {
                writeln!(out, "error: {message}")?;
                Flow::Continue
            }
        };
        current.lock().unwrap_or_else(|p| p.into_inner()).take();
        out.flush()?;
        Ok(flow)
    }

    /// Piped input: a `secret set` line's value is the next line.
    fn run_piped(&self) -> std::io::Result<Flow> {
        let current = Current::default();
        let mut lines = std::io::stdin().lock().lines();
        while let Some(line) = lines.next() {
            let line = line?;
            let mut next_line = |_: &str| lines.next().transpose();
            if self.handle_line(&current, &line, &mut next_line)? == Flow::Exit {
                return Ok(Flow::Exit);
            }
            if self.stop.is_cancelled() {
                break;
            }
        }
        Ok(Flow::Continue)
    }

    fn run_interactive(&self) -> std::io::Result<Flow> {
        let current = Current::default();
        forward_interrupts(&self.runtime, current.clone());
        let mut editor: Editor<ReplHelper, DefaultHistory> =
            Editor::new().map_err(std::io::Error::other)?;
        editor.set_helper(Some(ReplHelper::new(
            self.session.client.clone(),
            self.runtime.clone(),
            self.session.colour,
        )));
        if let Some(history) = &self.history {
            // No history yet is normal on first start.
            let _ = editor.load_history(history);
        }
        println!("{}", self.banner);
        loop {
            if self.stop.is_cancelled() {
                return Ok(Flow::Continue);
            }
            match editor.readline("cloudai> ") {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                        if let Some(history) = &self.history
                            && let Err(error) = editor.save_history(history)
                        {
                            tracing::warn!(%error, path = %history.display(), "could not save REPL history");
                        }
                    }
                    let mut hidden = crate::keys::read_hidden;
                    if self.handle_line(&current, &line, &mut hidden)? == Flow::Exit {
                        return Ok(Flow::Exit);
                    }
                }
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => return Ok(Flow::Exit),
                Err(error) => return Err(std::io::Error::other(error)),
            }
        }
    }
}

/// What `secret set` asks before reading the value.
pub fn secret_prompt(name: &str, registry: Option<&str>) -> String {
    match registry {
        Some(host) => format!("login for {host} (USER:PASSWORD, not echoed): "),
        None => format!("value of {name} (not echoed): "),
    }
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
