//! Stopping a live view with any key: raw mode on the terminal while the view
//! runs, and a blocking poller that reports the first key press. Without a
//! terminal it does nothing (Ctrl-C still stops the view).

use crossterm::event::{self, Event};
use crossterm::terminal;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Watches for a key press until stopped.
pub struct KeyStop {
    pressed: CancellationToken,
    done: Arc<AtomicBool>,
    poller: Option<tokio::task::JoinHandle<()>>,
}

impl KeyStop {
    /// Starts watching (only when stdin is a terminal and raw mode works).
    pub fn start() -> Self {
        let pressed = CancellationToken::new();
        let done = Arc::new(AtomicBool::new(false));
        let poller =
            (std::io::stdin().is_terminal() && terminal::enable_raw_mode().is_ok()).then(|| {
                let (pressed, done) = (pressed.clone(), done.clone());
                tokio::task::spawn_blocking(move || {
                    while !done.load(Ordering::SeqCst) {
                        if event::poll(Duration::from_millis(100)).unwrap_or(false)
                            && matches!(event::read(), Ok(Event::Key(_)))
                        {
                            pressed.cancel();
                            return;
                        }
                    }
                })
            });
        Self {
            pressed,
            done,
            poller,
        }
    }

    /// Resolves when a key was pressed (never without a terminal).
    pub async fn pressed(&self) {
        self.pressed.cancelled().await;
    }

    /// Stops watching and restores the terminal.
    pub async fn stop(mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(poller) = self.poller.take() {
            let _ = poller.await;
            if let Err(error) = terminal::disable_raw_mode() {
                tracing::warn!(%error, "could not restore the terminal mode");
            }
        }
    }
}

/// Reads a line from the terminal without echoing it (a secret's value):
/// raw mode while it reads; Enter ends it, Esc or Ctrl-C abandons it (`None`).
pub fn read_hidden(prompt: &str) -> std::io::Result<Option<String>> {
    use crossterm::event::{KeyCode, KeyEventKind, KeyModifiers};
    use std::io::Write;
    let mut out = std::io::stdout();
    write!(out, "{prompt}")?;
    out.flush()?;
    terminal::enable_raw_mode()?;
    let mut value = String::new();
    let read = loop {
        let key = match event::read() {
            Ok(Event::Key(key)) if key.kind != KeyEventKind::Release => key,
            Ok(_) => continue,
            Err(error) => break Err(error),
        };
        match key.code {
            KeyCode::Enter => break Ok(Some(std::mem::take(&mut value))),
            KeyCode::Esc => break Ok(None),
            KeyCode::Char('c' | 'd') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                break Ok(None);
            }
            KeyCode::Backspace => {
                value.pop();
            }
            KeyCode::Char(c) => value.push(c),
            _ => {}
        }
    };
    let restored = terminal::disable_raw_mode();
    writeln!(out)?;
    let read = read?;
    restored?;
    Ok(read)
}
