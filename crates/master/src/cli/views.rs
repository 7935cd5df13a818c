//! What the REPL draws: aligned tables (comfy-table), usage bars, and colour
//! when stdout is a terminal and `NO_COLOR` is unset.

use crate::core::registry::WorkerState;
use crate::error::{MasterError, MasterResult};
use crate::services::Services;
use crate::store::{TaskRecord, TaskState, now_millis};
use cloudai_common::units::{format_bytes, format_duration};
use comfy_table::{CellAlignment, Table, presets};
use std::io::IsTerminal;
use std::time::Duration;

/// Whether to colour output: a terminal, and `NO_COLOR` unset.
pub fn colour_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn paint(text: &str, code: &str, colour: bool) -> String {
    if colour {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// A worker state, coloured.
fn worker_state(state: WorkerState, colour: bool) -> String {
    let code = match state {
        WorkerState::Active => "32",
        WorkerState::Inactive => "31",
        WorkerState::Pending => "33",
    };
    paint(state.as_str(), code, colour)
}

/// A usage bar like `[#####-----]  47%`.
pub fn bar(used: f64, total: f64) -> String {
    const WIDTH: usize = 10;
    let fraction = if total > 0.0 {
        (used / total).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let filled = (fraction * WIDTH as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        fraction * 100.0
    )
}

fn table(headers: &[&str], right_aligned: &[usize]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_header(headers.to_vec());
    for index in right_aligned {
        if let Some(column) = table.column_mut(*index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// `status`: the cluster in a few lines.
pub async fn status(services: &Services, colour: bool) -> MasterResult<String> {
    let (pending, active, inactive) = services.workers.registry().counts();
    let by_state: Vec<String> = services
        .lifecycle
        .task_counts()
        .await?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    let tasks_line = if by_state.is_empty() {
        "none".to_string()
    } else {
        by_state.join(", ")
    };
    Ok(format!(
        "workers: {} active, {} inactive, {} pending\ntasks:   {tasks_line}\nstore:   {}\nuptime:  {}\n",
        paint(&active.to_string(), "32", colour),
        paint(
            &inactive.to_string(),
            if inactive > 0 { "31" } else { "0" },
            colour
        ),
        pending,
        match services.vitals.store().await {
            Ok(()) => format!(
                "{} ({})",
                services.store.describe(),
                paint("healthy", "32", colour)
            ),
            Err(error) => format!(
                "{} ({})",
                services.store.describe(),
                paint(&format!("UNREACHABLE: {error}"), "31", colour)
            ),
        },
        format_duration(services.vitals.uptime()),
    ))
}

/// `workers`: the registry as a table.
pub fn workers(services: &Services, colour: bool) -> String {
    let entries = services.workers.registry().list();
    if entries.is_empty() {
        return "no workers registered: `register <id> <host:port>` adds one\n".into();
    }
    let load = services.lifecycle.running_per_worker();
    let mut table = table(
        &[
            "ID",
            "STATE",
            "ADDRESS",
            "CPUS",
            "MEMORY",
            "GPUS",
            "TASKS",
            "LAST SEEN",
        ],
        &[3, 4, 5, 6],
    );
    for w in entries {
        let host = w.record.host.clone().unwrap_or_default();
        let seen = w.last_seen.map_or("never".to_string(), |t| {
            format!("{} ago", format_duration(t.elapsed()))
        });
        table.add_row(vec![
            w.record.id.clone(),
            worker_state(w.state, false),
            w.record.address.clone(),
            host.cpu_count.to_string(),
            format_bytes(host.memory_total_bytes),
            host.gpus.len().to_string(),
            load.get(&w.record.id).copied().unwrap_or(0).to_string(),
            seen,
        ]);
    }
    let _ = colour;
    format!("{table}\n")
}

/// `stats [worker]`: latest metrics with usage bars.
pub fn stats(services: &Services, only: Option<&str>, colour: bool) -> MasterResult<String> {
    let entries: Vec<_> = services
        .workers
        .registry()
        .list()
        .into_iter()
        .filter(|w| only.is_none_or(|id| w.record.id == id))
        .collect();
    if let Some(id) = only
        && entries.is_empty()
    {
        return Err(MasterError::NotFound(format!(
            "no worker '{id}': `workers` lists the registered ones"
        )));
    }
    if entries.is_empty() {
        return Ok("no workers registered\n".into());
    }
    let mut out = String::new();
    for w in entries {
        let state = worker_state(w.state, colour);
        let Some(hb) = &w.latest else {
            out.push_str(&format!("{} {state}: no heartbeat yet\n", w.record.id));
            continue;
        };
        out.push_str(&format!(
            "{} {state}  {} CPUs, load {:.2}, {} tasks running\n",
            w.record.id,
            hb.cpu_count,
            hb.load_average_1m,
            hb.running_task_ids.len()
        ));
        out.push_str(&format!(
            "  cpu  {}\n",
            bar(f64::from(hb.cpu_percent), 100.0)
        ));
        out.push_str(&format!(
            "  mem  {}  {} / {}\n",
            bar(hb.memory_used_bytes as f64, hb.memory_total_bytes as f64),
            format_bytes(hb.memory_used_bytes),
            format_bytes(hb.memory_total_bytes)
        ));
        if hb.disk_total_bytes > 0 {
            out.push_str(&format!(
                "  disk {}  {} / {}\n",
                bar(hb.disk_used_bytes as f64, hb.disk_total_bytes as f64),
                format_bytes(hb.disk_used_bytes),
                format_bytes(hb.disk_total_bytes)
            ));
        }
        for gpu in &hb.gpus {
            let holder = if gpu.task_id.is_empty() {
                String::new()
            } else {
                format!("  task {}", gpu.task_id)
            };
            out.push_str(&format!(
                "  gpu{} {}  mem {}  {:.0}°C {:.0} W  {}{holder}\n",
                gpu.index,
                bar(f64::from(gpu.utilization_percent), 100.0),
                bar(gpu.memory_used_bytes as f64, gpu.memory_total_bytes as f64),
                gpu.temperature_celsius,
                gpu.power_watts,
                gpu.name
            ));
        }
    }
    Ok(out)
}

/// `tasks [--state S]`: a table, oldest first, with waiting reasons.
pub fn tasks(services: &Services, tasks: &[TaskRecord]) -> String {
    if tasks.is_empty() {
        return "no tasks\n".into();
    }
    let mut table = table(&["ID", "STATE", "WORKER", "EXIT", "IMAGE", "NOTE"], &[3]);
    for t in tasks {
        let note = match (t.state, services.scheduler.waiting_reason(&t.id)) {
            (TaskState::Queued, Some(reason)) => format!("waiting: {reason}"),
            (TaskState::Assigned, _) => services
                .lifecycle
                .progress(&t.id)
                .map(|p| p.describe())
                .or_else(|| t.error.clone())
                .unwrap_or_default(),
            _ => t.error.clone().unwrap_or_default(),
        };
        table.add_row(vec![
            t.id.clone(),
            t.state.as_str().to_string(),
            t.worker_id.clone().unwrap_or_else(|| "-".into()),
            t.exit_code.map_or("-".to_string(), |c| c.to_string()),
            t.image.clone(),
            note,
        ]);
    }
    format!("{table}\n")
}

/// How long ago a moment (ms since epoch) was: `3m12s ago`.
pub fn age(millis: i64) -> String {
    let elapsed = now_millis().saturating_sub(millis).max(0);
    format!(
        "{} ago",
        format_duration(Duration::from_millis(elapsed as u64))
    )
}

/// `certs`: certificates and outstanding join tokens.
pub fn certs(services: &Services) -> String {
    if services.auth.pki().is_none() {
        return "this master runs with --insecure: no certificates\n".into();
    }
    let now = now_millis();
    let mut table = table(&["WORKER", "CERTIFICATE", "EXPIRES IN", "JOIN TOKEN"], &[]);
    for worker in services.workers.registry().list() {
        let record = worker.record;
        let fingerprint = record
            .cert_fingerprint
            .as_deref()
            .map_or("none".to_string(), |f| {
                format!("{}…", &f[..16.min(f.len())])
            });
        let expires = record.cert_expires_at.map_or("-".to_string(), |t| {
            let left = t * 1000 - now;
            if left <= 0 {
                "expired".to_string()
            } else {
                format_duration(Duration::from_millis(left as u64))
            }
        });
        let token = match record.join_token_expires_at {
            Some(t) if t > now => format!(
                "outstanding, expires in {}",
                format_duration(Duration::from_millis((t - now) as u64))
            ),
            Some(_) => "expired (`join-token <id>` makes a new one)".to_string(),
            None => "-".to_string(),
        };
        table.add_row(vec![record.id, fingerprint, expires, token]);
    }
    format!("{table}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_bounded() {
        assert_eq!(bar(0.0, 100.0), "[----------]   0%");
        assert_eq!(bar(47.0, 100.0), "[#####-----]  47%");
        assert_eq!(bar(300.0, 100.0), "[##########] 100%");
        assert_eq!(bar(1.0, 0.0), "[----------]   0%");
    }

    #[test]
    fn paint_only_when_asked() {
        assert_eq!(paint("x", "32", false), "x");
        assert_eq!(paint("x", "32", true), "\x1b[32mx\x1b[0m");
    }
}
