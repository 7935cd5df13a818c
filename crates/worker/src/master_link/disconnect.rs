//! The worker's half of the at-most-once rule: a worker whose heartbeats have
//! not reached the master for the disconnect window stops its tasks'
//! containers (their output is kept and uploaded once the master is back),
//! because by then the master may run them elsewhere.
//!
//! The window starts at the last heartbeat (or registration) the master
//! acknowledged, counted from when it was sent. The master announces the
//! window at registration; both are remembered in `<data-dir>/master-contact`
//! so that a restarted worker knows how long it has been out of touch and
//! stops adopted containers that are overdue.

use crate::Worker;
use crate::task::handle::StopReason;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The window until a master announces its own (the master's default).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Longest SIGTERM-to-SIGKILL grace of a stop after a disconnect (the master
/// allows for it in its margin).
pub const DISCONNECT_STOP_GRACE: Duration = Duration::from_secs(5);
/// How often the watchdog looks.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// When the master last acknowledged this worker, and its window.
pub struct Contact {
    state: Mutex<State>,
    file: Option<PathBuf>,
}

#[derive(Clone, Copy)]
struct State {
    at: Instant,
    window: Duration,
    /// When `at` was last written to the file.
    saved: Option<Instant>,
}

impl Contact {
    /// The contact remembered in `file`, or "just now" with the default window.
    pub fn load(file: Option<PathBuf>) -> Self {
        let now = Instant::now();
        let remembered = file
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| parse(&text));
        let (at, window) = match remembered {
            Some((at_ms, window)) => {
                let ago = unix_ms(SystemTime::now()).saturating_sub(at_ms).max(0) as u64;
                let at = now.checked_sub(Duration::from_millis(ago)).unwrap_or(now);
                (at, window)
            }
            None => (now, DEFAULT_WINDOW),
        };
        Self {
            state: Mutex::new(State {
                at,
                window,
                saved: None,
            }),
            file,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The master acknowledged a call sent at `sent` (and announced `window`).
    pub fn record(&self, sent: Instant, sent_wall: SystemTime, window: Option<Duration>) {
        let (save, window) = {
            let mut state = self.state();
            if sent > state.at {
                state.at = sent;
            }
            let changed = window.is_some_and(|w| w != state.window);
            if let Some(window) = window {
                state.window = window;
            }
            // Written at most once a second: a restart loses less than that.
            let save = changed || state.saved.is_none_or(|s| s.elapsed() >= CHECK_EVERY);
            if save {
                state.saved = Some(Instant::now());
            }
            (save, state.window)
        };
        if let (true, Some(path)) = (save, &self.file) {
            let text = format!("{} {}\n", unix_ms(sent_wall), window.as_millis());
            if let Err(error) = std::fs::write(path, text) {
                tracing::warn!(path = %path.display(), %error, "cannot remember the last contact with the master");
            }
        }
    }

    /// The window, once it has passed since the last contact.
    pub fn overdue(&self) -> Option<Duration> {
        let state = self.state();
        (state.at.elapsed() > state.window).then_some(state.window)
    }
}

/// Milliseconds since the Unix epoch (0 before it).
fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `"<unix ms> <window ms>"`.
fn parse(text: &str) -> Option<(i64, Duration)> {
    let mut words = text.split_whitespace();
    let at: i64 = words.next()?.parse().ok()?;
    let window: u64 = words.next()?.parse().ok()?;
    Some((at, Duration::from_millis(window)))
}

/// Once a second: when the window has passed without contact, every task the
/// worker holds is stopped (running containers with a short grace; tasks not
/// started yet never start).
pub async fn run_watchdog(worker: Worker) {
    loop {
        tokio::select! {
            _ = worker.shutdown_token().cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let Some(window) = worker.link().contact().overdue() else {
            continue;
        };
        let grace = worker.config().stop_grace.min(DISCONNECT_STOP_GRACE);
        let stopped = worker.stop_all(StopReason::Disconnected, grace);
        if stopped > 0 {
            tracing::warn!(
                window_s = window.as_secs(),
                stopped,
                "no heartbeat reached the master within the disconnect window: stopping this worker's tasks (the master reruns them by policy)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_contact_counts_from_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master-contact");
        std::fs::write(
            &path,
            format!("{} 5000\n", unix_ms(SystemTime::now()) - 60_000),
        )
        .unwrap();
        let contact = Contact::load(Some(path.clone()));
        assert_eq!(contact.overdue(), Some(Duration::from_secs(5)));
        contact.record(
            Instant::now(),
            SystemTime::now(),
            Some(Duration::from_secs(90)),
        );
        assert_eq!(contact.overdue(), None);
        let again = Contact::load(Some(path));
        assert_eq!(again.overdue(), None);
        assert_eq!(again.state().window, Duration::from_secs(90));
    }

    #[test]
    fn garbage_or_no_file_means_just_now() {
        assert_eq!(parse("nonsense"), None);
        assert_eq!(parse("12"), None);
        let contact = Contact::load(None);
        assert_eq!(contact.overdue(), None);
        assert_eq!(contact.state().window, DEFAULT_WINDOW);
    }

    #[test]
    fn an_older_acknowledgement_does_not_move_the_contact_back() {
        let contact = Contact::load(None);
        let before = contact.state().at;
        let earlier = before.checked_sub(Duration::from_secs(1)).unwrap_or(before);
        contact.record(earlier, SystemTime::now(), None);
        assert_eq!(contact.state().at, before);
    }
}
