//! Tab completion and hints for the REPL: command names, then worker ids or
//! task ids where a command takes one. The logic is a pure function;
//! [`ReplHelper`] plugs it into rustyline with live ids from the master.

use super::parse::{COMMANDS, usage};
use crate::services::Services;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};
use std::borrow::Cow;

/// What the word under the cursor can be.
fn candidates_for(words_before: &[&str], workers: &[String], tasks: &[String]) -> Vec<String> {
    match words_before {
        [] => COMMANDS
            .iter()
            .map(|(name, _, _)| name.to_string())
            .collect(),
        ["help"] => COMMANDS
            .iter()
            .map(|(name, _, _)| name.to_string())
            .collect(),
        ["task"] => std::iter::once("auto".to_string())
            .chain(workers.iter().cloned())
            .collect(),
        ["stats"] => std::iter::once("--watch".to_string())
            .chain(workers.iter().cloned())
            .collect(),
        ["stats", _] => vec!["--watch".into()],
        ["unregister" | "join-token"] => workers.to_vec(),
        ["monitor" | "logs" | "cancel"] => tasks.to_vec(),
        ["tasks"] => vec!["--state".into()],
        ["tasks", "--state"] => crate::store::TaskState::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        ["status"] => vec!["--watch".into()],
        ["user"] => vec!["add".into(), "remove".into()],
        ["token"] => vec!["create".into(), "revoke".into()],
        ["user", "add", _] => vec!["admin".into(), "operator".into(), "viewer".into()],
        _ => Vec::new(),
    }
}

/// Completes the word ending at the cursor: (start of that word, candidates).
pub fn complete(line: &str, workers: &[String], tasks: &[String]) -> (usize, Vec<String>) {
    let start = line.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let (before, word) = line.split_at(start);
    let words: Vec<&str> = before.split_whitespace().collect();
    let mut found: Vec<String> = candidates_for(&words, workers, tasks)
        .into_iter()
        .filter(|c| c.starts_with(word))
        .collect();
    found.sort();
    found.dedup();
    (start, found)
}

/// The greyed-out rest of the line rustyline shows: the rest of a uniquely
/// typed command name, or the command's usage after it.
pub fn hint(line: &str) -> Option<String> {
    if line.is_empty() {
        return None;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [word] if !line.ends_with(' ') => {
            let matches: Vec<&str> = COMMANDS
                .iter()
                .map(|(n, _, _)| *n)
                .filter(|n| n.starts_with(word))
                .collect();
            match matches.as_slice() {
                [only] if *only != *word => Some(only[word.len()..].to_string()),
                _ => None,
            }
        }
        [command] => usage(command)
            .and_then(|u| u.split_once(' '))
            .map(|(_, rest)| rest.to_string()),
        _ => None,
    }
}

/// The rustyline helper: completion, hints, and dim hint styling.
pub struct ReplHelper {
    services: Services,
    colour: bool,
}

impl ReplHelper {
    /// A helper reading ids from `master`.
    pub fn new(services: Services, colour: bool) -> Self {
        Self { services, colour }
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let workers: Vec<String> = self
            .services
            .workers
            .registry()
            .list()
            .into_iter()
            .map(|w| w.record.id)
            .collect();
        let mut tasks: Vec<String> = self
            .services
            .lifecycle
            .active_tasks()
            .keys()
            .cloned()
            .collect();
        tasks.extend(self.services.lifecycle.recent_task_ids());
        let (start, found) = complete(&line[..pos], &workers, &tasks);
        Ok((
            start,
            found
                .into_iter()
                .map(|c| Pair {
                    display: c.clone(),
                    replacement: c,
                })
                .collect(),
        ))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _: &Context<'_>) -> Option<String> {
        (pos == line.len()).then(|| hint(line)).flatten()
    }
}

impl Highlighter for ReplHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if self.colour {
            Cow::Owned(format!("\x1b[2m{hint}\x1b[0m"))
        } else {
            Cow::Borrowed(hint)
        }
    }
}

impl Validator for ReplHelper {}

impl Helper for ReplHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn commands_then_ids() {
        let workers = ids(&["gpu-1", "gpu-2", "cpu-1"]);
        let tasks = ids(&["t-aaa", "t-abb"]);
        assert_eq!(
            complete("sta", &workers, &tasks),
            (0, ids(&["stats", "status"]))
        );
        assert_eq!(
            complete("stats gp", &workers, &tasks),
            (6, ids(&["gpu-1", "gpu-2"]))
        );
        assert_eq!(complete("task a", &workers, &tasks), (5, ids(&["auto"])));
        assert_eq!(
            complete("monitor t-a", &workers, &tasks),
            (8, ids(&["t-aaa", "t-abb"]))
        );
        assert_eq!(
            complete("tasks --state ru", &workers, &tasks),
            (14, ids(&["running"]))
        );
        assert_eq!(
            complete("task gpu-1 busybox ", &workers, &tasks).1,
            Vec::<String>::new()
        );
    }

    #[test]
    fn hints_finish_commands_and_show_usage() {
        assert_eq!(hint("unreg").as_deref(), Some("ister"));
        assert_eq!(hint("monitor ").as_deref(), Some("<task>"));
        assert_eq!(hint("st"), None, "ambiguous: stats/status");
        assert_eq!(hint(""), None);
    }
}
