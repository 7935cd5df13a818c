//! A history checker for fault tests, watching the system from outside:
//! Docker's event log says when each container of a task really started and
//! died, a WebSocket client records every `task_state` event the master sent,
//! and the test records each task the master acknowledged. [`History::check`]
//! then asserts what the system promises:
//!
//! - no two containers (attempts) of a task ran at the same time;
//! - every acknowledged task reached a final state;
//! - a `completed` task had a container that started (no invented result);
//! - its final state is the same in the API, in the store (read back with
//!   `cloudai-master export`) and in the events (the last one seen for the
//!   task, where the stream had no gap).

use crate::{Master, binary, connect_http, websocket_request};
use futures::StreamExt;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// States nothing moves a task out of. `lost` is not one: the master retries
/// or fails a lost attempt right after, and the API may show it in between.
const FINAL: [&str; 4] = ["completed", "failed", "cancelled", "timed_out"];

/// How to reach a master's HTTP port from another thread.
#[derive(Clone)]
struct Endpoint {
    http_addr: String,
    ca_pem: Option<String>,
    token: Option<String>,
}

impl Endpoint {
    /// Follows `/ws/telemetry` until `stop`, recording task states.
    async fn record(self, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
        let mut first = true;
        while !stop.load(Ordering::SeqCst) {
            let request = websocket_request(
                &self.http_addr,
                "/ws/telemetry",
                self.ca_pem.is_some(),
                self.token.as_deref(),
            )
            .unwrap();
            let socket = match connect_http(&self.http_addr, self.ca_pem.as_deref()).await {
                Ok(io) => tokio_tungstenite::client_async(request, io).await.ok(),
                Err(_) => None,
            };
            let Some((mut socket, _)) = socket else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if !first {
                // Events sent while the stream was down are missing.
                seen.lock().unwrap().gaps += 1;
            }
            first = false;
            loop {
                let next = tokio::time::timeout(Duration::from_millis(200), socket.next()).await;
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let message = match next {
                    Err(_) => continue,
                    Ok(Some(Ok(message))) => message,
                    Ok(_) => break,
                };
                let Ok(text) = message.into_text() else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let mut seen = seen.lock().unwrap();
                match value["type"].as_str() {
                    Some("task_state") => {
                        let (Some(task), Some(state)) =
                            (value["task_id"].as_str(), value["state"].as_str())
                        else {
                            continue;
                        };
                        seen.last.insert(task.to_string(), state.to_string());
                    }
                    Some("lagged") => seen.gaps += 1,
                    _ => {}
                }
            }
        }
    }
}

#[derive(Default)]
struct Seen {
    last: HashMap<String, String>,
    gaps: u32,
}

/// What a test saw, and the checks on it.
pub struct History {
    since: u128,
    acknowledged: Vec<String>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    recorder: Option<std::thread::JoinHandle<()>>,
}

/// Unix time in nanoseconds.
pub fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

impl History {
    /// Starts recording: Docker events from now on, and the master's events.
    pub fn start(master: &Master) -> History {
        Self::record(master, None)
    }

    /// Starts recording on a cluster that already ran tasks: Docker events
    /// from `since` (Unix nanoseconds); the event stream missed what came
    /// before, so only the events it does see are checked.
    pub fn start_since(master: &Master, since: u128) -> History {
        Self::record(master, Some(since))
    }

    fn record(master: &Master, since: Option<u128>) -> History {
        let endpoint = Endpoint {
            http_addr: master.http_addr.clone(),
            ca_pem: (!master.insecure).then(|| master.ca_pem()),
            token: master.token.clone(),
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(endpoint.record(seen, stop))
            })
        };
        // Let the socket open before the test acts.
        std::thread::sleep(Duration::from_millis(500));
        if since.is_some() {
            seen.lock().unwrap().gaps += 1;
        }
        History {
            since: since.unwrap_or_else(now_nanos),
            acknowledged: Vec::new(),
            seen,
            stop,
            recorder: Some(recorder),
        }
    }

    /// A task the master acknowledged (its id came back to the client).
    pub fn acknowledge(&mut self, task_id: &str) {
        self.acknowledged.push(task_id.to_string());
    }

    /// Waits (up to `timeout`) for every acknowledged task to be final, then
    /// runs every check; `store_uri` is the MongoDB store to read back.
    /// Returns the final state of each task.
    pub fn check(
        mut self,
        master: &Master,
        store_uri: Option<&str>,
        timeout: Duration,
    ) -> BTreeMap<String, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let deadline = Instant::now() + timeout;
        let mut finals = BTreeMap::new();
        for task in &self.acknowledged {
            loop {
                let (status, body) = runtime.block_on(
                    master.http_get(&format!("/api/tasks/{task}"), master.token.as_deref()),
                );
                let state = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["task"]["state"].as_str().map(str::to_string));
                if let (200, Some(state)) = (status, &state)
                    && FINAL.contains(&state.as_str())
                {
                    finals.insert(task.clone(), state.clone());
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "acknowledged task {task} never reached a final state ({status} {body})\nmaster log:\n{}",
                    master.log()
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        // Late events of the last transitions still arrive: give them a moment.
        std::thread::sleep(Duration::from_secs(1));
        self.stop.store(true, Ordering::SeqCst);
        if let Some(recorder) = self.recorder.take() {
            let _ = recorder.join();
        }

        for (task, state) in &finals {
            let runs = container_runs(task, self.since);
            assert_no_overlap(task, &runs);
            if state == "completed" {
                assert!(
                    !runs.is_empty(),
                    "task {task} completed but none of its containers ever started"
                );
            }
        }

        if let Some(uri) = store_uri {
            let stored = stored_states(uri);
            for (task, state) in &finals {
                assert_eq!(
                    stored.get(task),
                    Some(state),
                    "task {task}: the API says {state}, the store {:?}",
                    stored.get(task)
                );
            }
        }

        let seen = self.seen.lock().unwrap();
        for (task, state) in &finals {
            match seen.last.get(task) {
                Some(last) => assert_eq!(
                    last, state,
                    "task {task}: the API says {state}, the last event {last}"
                ),
                None => assert!(
                    seen.gaps > 0,
                    "task {task}: no task_state event although the stream never broke"
                ),
            }
        }
        finals
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One container's run: (start, die) in Unix nanoseconds; `None` while it
/// has not died (or died after the log was read).
pub type Run = (String, u128, Option<u128>);

/// The runs of a task's containers since `since`, from Docker's event log.
pub fn container_runs(task_id: &str, since: u128) -> Vec<Run> {
    let until = now_nanos() / 1_000_000_000 + 1;
    let out = Command::new("docker")
        .args(["events", "--since", &(since / 1_000_000_000).to_string()])
        .args(["--until", &until.to_string()])
        .args(["--filter", &format!("label=cloudai.task_id={task_id}")])
        .args(["--filter", "event=start", "--filter", "event=die"])
        .args([
            "--format",
            "{{.TimeNano}} {{.Action}} {{.Actor.Attributes.name}}",
        ])
        .output()
        .expect("docker events");
    let mut runs: Vec<Run> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut words = line.split_whitespace();
        let (Some(at), Some(action), Some(name)) = (
            words.next().and_then(|w| w.parse::<u128>().ok()),
            words.next(),
            words.next(),
        ) else {
            continue;
        };
        if at < since {
            continue;
        }
        match action {
            "start" => runs.push((name.to_string(), at, None)),
            "die" => {
                if let Some(run) = runs
                    .iter_mut()
                    .rev()
                    .find(|(n, _, end)| n == name && end.is_none())
                {
                    run.2 = Some(at);
                }
            }
            _ => {}
        }
    }
    runs
}

/// Panics when two runs of a task overlap in time.
pub fn assert_no_overlap(task_id: &str, runs: &[Run]) {
    for (i, (a, a_start, a_end)) in runs.iter().enumerate() {
        for (b, b_start, b_end) in &runs[i + 1..] {
            let a_before_b = a_end.is_some_and(|end| end <= *b_start);
            let b_before_a = b_end.is_some_and(|end| end <= *a_start);
            assert!(
                a_before_b || b_before_a,
                "task {task_id}: {a} and {b} ran at the same time: {runs:?}"
            );
        }
    }
}

/// Task id → state, as the store holds them (`cloudai-master export`).
fn stored_states(uri: &str) -> HashMap<String, String> {
    let out = Command::new(binary("cloudai-master"))
        .args(["--mongodb-uri", uri, "export", "-"])
        .output()
        .expect("cloudai-master export");
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["collection"] == "TASKS")
        .filter_map(|line| {
            let record = &line["record"];
            Some((
                record["id"].as_str()?.to_string(),
                record["state"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_runs_are_caught() {
        let apart = vec![("a".into(), 1, Some(5)), ("b".into(), 6, Some(9))];
        assert_no_overlap("t", &apart);
        let overlapping = vec![("a".into(), 1, Some(7)), ("b".into(), 6, Some(9))];
        assert!(std::panic::catch_unwind(|| assert_no_overlap("t", &overlapping)).is_err());
        let still_running = vec![("a".into(), 1, None), ("b".into(), 6, Some(9))];
        assert!(std::panic::catch_unwind(|| assert_no_overlap("t", &still_running)).is_err());
    }
}
