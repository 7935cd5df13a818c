//! The embedded store's task indexes, kept in the same transaction as every
//! task write: `TASKS_BY_TIME` (newest-first history, with the fields its
//! filters need, so a filtered page never decodes a task it skips),
//! `TASKS_UNFINISHED` (what a starting master loads) and `TASK_COUNTS`.
//! A file written before the indexes existed is indexed when it is opened.

use super::tables::{
    ASSIGNMENTS, LOG_CHUNKS, META, RESULTS, TASK_COUNTS, TASKS, TASKS_BY_TIME, TASKS_UNFINISHED,
    Table,
};
use crate::store::{TaskCursor, TaskQuery, TaskRecord, TaskState};
use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Index entries one page may read before it returns what it found (with a
/// cursor to go on): a filter that matches little never scans all history.
pub(super) const SCAN_BUDGET: usize = 100_000;

/// `META` key and value saying the task indexes are complete.
const INDEXED: (&str, &[u8]) = ("task_indexes", b"1");

/// What a task's `TASKS_BY_TIME` entry holds: the fields a query filters on
/// (borrowed from the stored bytes unless they hold escapes).
#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    #[serde(rename = "s")]
    state: TaskState,
    #[serde(rename = "w", default, borrow)]
    worker_id: Option<Cow<'a, str>>,
    #[serde(rename = "o", default, borrow)]
    owner: Cow<'a, str>,
    #[serde(rename = "i", borrow)]
    image: Cow<'a, str>,
}

/// The part of a stored task its index entries are made from. A state this
/// master does not know (`None`) is indexed by time only.
struct Indexed {
    id: String,
    created_at: i64,
    state: Option<TaskState>,
}

impl Indexed {
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Raw {
            id: String,
            created_at: i64,
            #[serde(default)]
            state: String,
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(Self {
            state: TaskState::parse(&raw.state),
            id: raw.id,
            created_at: raw.created_at,
        })
    }
}

/// The `TASKS_BY_TIME` key: zero-padded submission time, then id, so keys
/// sort by time (times before 1970 sort as 1970).
fn time_key(created_at: i64, id: &str) -> String {
    format!("{:020}/{id}", created_at.max(0))
}

fn position_of(key: &str) -> Result<TaskCursor, String> {
    let (time, id) = key
        .split_once('/')
        .ok_or_else(|| format!("bad task index key '{key}'"))?;
    let created_at = time
        .parse()
        .map_err(|_| format!("bad task index key '{key}'"))?;
    Ok(TaskCursor {
        created_at,
        id: id.to_string(),
    })
}

fn open(
    txn: &WriteTransaction,
    table: Table,
) -> Result<redb::Table<'_, &'static str, &'static [u8]>, String> {
    txn.open_table(table).map_err(|e| e.to_string())
}

/// Adds (`by` = 1) or removes (`by` = -1) one task from `TASK_COUNTS`.
fn count(txn: &WriteTransaction, state: TaskState, by: i64) -> Result<(), String> {
    let mut counts = open(txn, TASK_COUNTS)?;
    let current = match counts.get(state.as_str()).map_err(|e| e.to_string())? {
        Some(value) => decode_count(value.value())?,
        None => 0,
    };
    let next = current.checked_add_signed(by).unwrap_or(0);
    counts
        .insert(state.as_str(), next.to_le_bytes().as_slice())
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn decode_count(bytes: &[u8]) -> Result<u64, String> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| "bad task count".to_string())?;
    Ok(u64::from_le_bytes(bytes))
}

fn unindex(txn: &WriteTransaction, old: &Indexed) -> Result<(), String> {
    open(txn, TASKS_BY_TIME)?
        .remove(time_key(old.created_at, &old.id).as_str())
        .map_err(|e| e.to_string())?;
    open(txn, TASKS_UNFINISHED)?
        .remove(old.id.as_str())
        .map_err(|e| e.to_string())?;
    match old.state {
        Some(state) => count(txn, state, -1),
        None => Ok(()),
    }
}

fn index(txn: &WriteTransaction, task: &TaskRecord) -> Result<(), String> {
    let entry = Entry {
        state: task.state,
        worker_id: task.worker_id.as_deref().map(Cow::Borrowed),
        owner: Cow::Borrowed(&task.owner),
        image: Cow::Borrowed(&task.image),
    };
    let entry = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
    open(txn, TASKS_BY_TIME)?
        .insert(
            time_key(task.created_at, &task.id).as_str(),
            entry.as_slice(),
        )
        .map_err(|e| e.to_string())?;
    if !task.state.is_terminal() {
        open(txn, TASKS_UNFINISHED)?
            .insert(task.id.as_str(), [].as_slice())
            .map_err(|e| e.to_string())?;
    }
    count(txn, task.state, 1)
}

/// Stores `task` (`bytes`, its JSON) and moves its index entries, in `txn`.
pub(super) fn write_task(
    txn: &WriteTransaction,
    task: &TaskRecord,
    bytes: &[u8],
) -> Result<(), String> {
    let old = {
        let mut tasks = open(txn, TASKS)?;
        let old = tasks
            .insert(task.id.as_str(), bytes)
            .map_err(|e| e.to_string())?;
        match old.map(|v| Indexed::decode(v.value())) {
            Some(Ok(old)) => Some(old),
            // Replaced by a record that reads: its old entries cannot be
            // found, and the new ones are right.
            Some(Err(error)) => {
                tracing::warn!(task_id = %task.id, %error, "replacing a stored task that does not decode");
                None
            }
            None => None,
        }
    };
    if let Some(old) = &old {
        unindex(txn, old)?;
    }
    index(txn, task)
}

/// Removes a finished task, its index entries, assignments, result and
/// output chunks, in `txn`; returns its state when it was there, finished
/// (a task that does not decode is left alone).
pub(super) fn remove_finished_task(
    txn: &WriteTransaction,
    id: &str,
) -> Result<Option<TaskState>, String> {
    let (old, state) = {
        let mut tasks = open(txn, TASKS)?;
        let old = match tasks.get(id).map_err(|e| e.to_string())? {
            Some(value) => Indexed::decode(value.value()).ok(),
            None => None,
        };
        let Some((old, state)) = old.and_then(|o| o.state.map(|s| (o, s))) else {
            return Ok(None);
        };
        if !state.is_terminal() {
            return Ok(None);
        }
        tasks.remove(id).map_err(|e| e.to_string())?;
        (old, state)
    };
    unindex(txn, &old)?;
    // Every key `<id>/...`: up to `<id>0`, '0' being the character after '/'.
    let (start, end) = (format!("{id}/"), format!("{id}0"));
    for table in [ASSIGNMENTS, LOG_CHUNKS] {
        open(txn, table)?
            .retain_in(start.as_str()..end.as_str(), |_, _| false)
            .map_err(|e| e.to_string())?;
    }
    open(txn, RESULTS)?.remove(id).map_err(|e| e.to_string())?;
    Ok(Some(state))
}

/// Indexes every task of a file written before the indexes existed (once).
pub(super) fn ensure_indexes(txn: &WriteTransaction) -> Result<(), String> {
    if open(txn, META)?
        .get(INDEXED.0)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(());
    }
    for table in [TASKS_BY_TIME, TASKS_UNFINISHED, TASK_COUNTS] {
        open(txn, table)?
            .retain(|_, _| false)
            .map_err(|e| e.to_string())?;
    }
    let tasks: Vec<TaskRecord> = {
        let table = open(txn, TASKS)?;
        let mut tasks = Vec::new();
        for row in table.iter().map_err(|e| e.to_string())? {
            let (key, value) = row.map_err(|e| e.to_string())?;
            tasks.push(
                serde_json::from_slice(value.value())
                    .map_err(|e| format!("task '{}': {e}", key.value()))?,
            );
        }
        tasks
    };
    if !tasks.is_empty() {
        tracing::info!(
            tasks = tasks.len(),
            "indexing the tasks of an older store file"
        );
    }
    for task in &tasks {
        index(txn, task)?;
    }
    open(txn, META)?
        .insert(INDEXED.0, INDEXED.1)
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn get_task(txn: &ReadTransaction, id: &str) -> Result<Option<TaskRecord>, String> {
    let tasks = txn.open_table(TASKS).map_err(|e| e.to_string())?;
    let value = tasks.get(id).map_err(|e| e.to_string())?;
    value
        .map(|v| serde_json::from_slice(v.value()).map_err(|e| format!("task '{id}': {e}")))
        .transpose()
}

/// One page of `query`: the tasks and, when more may match, where to go on.
pub(super) fn query(
    txn: &ReadTransaction,
    query: &TaskQuery,
) -> Result<(Vec<TaskRecord>, Option<TaskCursor>), String> {
    let size = query.page_size();
    let low = time_key(query.since.unwrap_or(0), "");
    let mut high = query
        .until
        .map(|until| time_key(until, ""))
        .unwrap_or_else(|| "~".into());
    if let Some(cursor) = &query.before {
        high = high.min(time_key(cursor.created_at, &cursor.id));
    }
    if low >= high {
        return Ok((Vec::new(), None));
    }
    let by_time = txn.open_table(TASKS_BY_TIME).map_err(|e| e.to_string())?;
    let mut found: Vec<String> = Vec::new();
    let mut next = None;
    let mut scanned = 0;
    for row in by_time
        .range(low.as_str()..high.as_str())
        .map_err(|e| e.to_string())?
        .rev()
    {
        let (key, value) = row.map_err(|e| e.to_string())?;
        let entry: Entry = serde_json::from_slice(value.value())
            .map_err(|e| format!("task index '{}': {e}", key.value()))?;
        let position = position_of(key.value())?;
        let matches = query.state.is_none_or(|s| entry.state == s)
            && query
                .worker_id
                .as_deref()
                .is_none_or(|w| entry.worker_id.as_deref() == Some(w))
            && query.owner.as_deref().is_none_or(|o| entry.owner == o)
            && query.image.as_deref().is_none_or(|i| entry.image == i);
        if matches {
            if found.len() == size {
                next = found.last().map(|key| position_of(key)).transpose()?;
                break;
            }
            found.push(key.value().to_string());
        }
        scanned += 1;
        if scanned == SCAN_BUDGET {
            next = Some(position);
            break;
        }
    }
    let mut tasks = Vec::with_capacity(found.len());
    for key in &found {
        let id = &position_of(key)?.id;
        // The index and the task are written in one transaction: a miss is damage.
        let task =
            get_task(txn, id)?.ok_or_else(|| format!("task index names missing task '{id}'"))?;
        tasks.push(task);
    }
    Ok((tasks, next))
}

/// Every unfinished task.
pub(super) fn unfinished(txn: &ReadTransaction) -> Result<Vec<TaskRecord>, String> {
    let index = txn
        .open_table(TASKS_UNFINISHED)
        .map_err(|e| e.to_string())?;
    let mut tasks = Vec::new();
    for row in index.iter().map_err(|e| e.to_string())? {
        let (key, _) = row.map_err(|e| e.to_string())?;
        let id = key.value();
        let task =
            get_task(txn, id)?.ok_or_else(|| format!("task index names missing task '{id}'"))?;
        tasks.push(task);
    }
    Ok(tasks)
}

/// Tasks per state.
pub(super) fn counts(txn: &ReadTransaction) -> Result<BTreeMap<TaskState, u64>, String> {
    let table = txn.open_table(TASK_COUNTS).map_err(|e| e.to_string())?;
    let mut counts = BTreeMap::new();
    for row in table.iter().map_err(|e| e.to_string())? {
        let (key, value) = row.map_err(|e| e.to_string())?;
        let state = TaskState::parse(key.value())
            .ok_or_else(|| format!("task counts name unknown state '{}'", key.value()))?;
        counts.insert(state, decode_count(value.value())?);
    }
    Ok(counts)
}
