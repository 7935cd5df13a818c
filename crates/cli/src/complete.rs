//! Tab completion and hints for the REPL: command names, then worker ids or
//! task ids where a command takes one. The logic is a pure function;
//! [`ReplHelper`] plugs it into rustyline with live ids from the master.

use crate::client::Client;
use crate::parse::{COMMANDS, usage};
use cloudai_proto::v1::ListTasksRequest;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};
use std::borrow::Cow;
use std::time::Duration;
use tokio::runtime::Handle;

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
        ["logs", _] => vec!["--follow".into()],
        ["tasks", ..] if words_before.last() == Some(&"--state") => crate::views::STATES
            .iter()
            .map(|s| crate::views::state_name(*s as i32).to_string())
            .collect(),
        ["tasks", ..] if words_before.last() == Some(&"--worker") => workers.to_vec(),
        ["tasks", ..] => [
            "--state", "--worker", "--owner", "--image", "--since", "--until", "--cursor",
            "--newest", "--limit",
        ]
        .map(String::from)
        .to_vec(),
        ["status"] => vec!["--watch".into()],
        ["user"] => vec!["add".into(), "remove".into()],
        ["token"] => vec!["create".into(), "revoke".into()],
        ["secret"] => vec!["set".into(), "remove".into()],
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
    client: Client,
    runtime: Handle,
    colour: bool,
}

/// Longest a completion waits for the master's ids.
const LOOKUP_WAIT: Duration = Duration::from_secs(1);

impl ReplHelper {
    /// A helper reading ids from the master through `client`.
    pub fn new(client: Client, runtime: Handle, colour: bool) -> Self {
        Self {
            client,
            runtime,
            colour,
        }
    }

    /// Worker ids and recent task ids (none when the master does not answer
    /// at once: completion must never hang the prompt).
    fn ids(&self) -> (Vec<String>, Vec<String>) {
        let client = self.client.clone();
        self.runtime.block_on(async move {
            let workers = tokio::time::timeout(LOOKUP_WAIT, client.cluster_state()).await;
            let workers = match workers {
                Ok(Ok(state)) => state
                    .workers
                    .into_iter()
                    .filter_map(|w| w.info.map(|i| i.worker_id))
                    .collect(),
                _ => Vec::new(),
            };
            let recent = ListTasksRequest {
                limit: 200,
                newest_first: true,
                ..Default::default()
            };
            let tasks = match tokio::time::timeout(LOOKUP_WAIT, client.tasks(recent)).await {
                Ok(Ok(answer)) => answer
                    .tasks
                    .into_iter()
                    .filter_map(|t| t.task.map(|t| t.task_id))
                    .collect(),
                _ => Vec::new(),
            };
            (workers, tasks)
        })
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
        let (workers, tasks) = self.ids();
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
