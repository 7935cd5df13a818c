//! The embedded store's tables and the generic operations on them: one
//! blocking redb transaction per call on tokio's blocking pool, JSON
//! documents encoded and decoded, and a [`Write`] turned into a table operation.

use super::EmbeddedStore;
use crate::store::{StoreError, StoreResult, Write};
use redb::{Database, ReadableDatabase, TableDefinition, TableHandle};
use serde::{Serialize, de::DeserializeOwned};

pub(super) type Table = TableDefinition<'static, &'static str, &'static [u8]>;

pub(super) const USERS: Table = TableDefinition::new("USERS");
pub(super) const WORKER_REGISTRY: Table = TableDefinition::new("WORKER_REGISTRY");
pub(super) const TASKS: Table = TableDefinition::new("TASKS");
pub(super) const ASSIGNMENTS: Table = TableDefinition::new("ASSIGNMENTS");
pub(super) const RESULTS: Table = TableDefinition::new("RESULTS");
pub(super) const SECRETS: Table = TableDefinition::new("SECRETS");
/// Raw output bytes (not JSON), keyed by [`log_chunk_key`](crate::store::log_chunk_key).
pub(super) const LOG_CHUNKS: Table = TableDefinition::new("LOG_CHUNKS");
/// Newest-first history: `<created_at>/<id>` to the fields filters use.
pub(super) const TASKS_BY_TIME: Table = TableDefinition::new("TASKS_BY_TIME");
/// Ids of the tasks not in a final state.
pub(super) const TASKS_UNFINISHED: Table = TableDefinition::new("TASKS_UNFINISHED");
/// Tasks per state (little-endian u64).
pub(super) const TASK_COUNTS: Table = TableDefinition::new("TASK_COUNTS");
/// What the file holds beyond the collections (index versions).
pub(super) const META: Table = TableDefinition::new("META");

/// A write transaction that records the allocator state with its commit
/// (redb's quick repair), so opening the file after a crash does not walk
/// the whole database: a restart does not slow down as history grows.
pub(super) fn begin_write(db: &Database) -> Result<redb::WriteTransaction, String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.set_quick_repair(true);
    Ok(txn)
}

pub(super) fn backend(operation: &'static str) -> impl Fn(String) -> StoreError {
    move |message| StoreError::Backend { operation, message }
}

impl EmbeddedStore {
    /// Runs a blocking closure against the database on the blocking pool.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&Database) -> Result<T, String> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| StoreError::Backend {
                operation,
                message: e.to_string(),
            })?
            .map_err(backend(operation))
    }

    pub(super) async fn put<T: Serialize>(
        &self,
        operation: &'static str,
        table: Table,
        key: String,
        value: &T,
    ) -> StoreResult<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| backend(operation)(e.to_string()))?;
        self.blocking(operation, move |db| {
            let txn = begin_write(db)?;
            txn.open_table(table)
                .map_err(|e| e.to_string())?
                .insert(key.as_str(), bytes.as_slice())
                .map_err(|e| e.to_string())?;
            txn.commit().map_err(|e| e.to_string())
        })
        .await
    }

    pub(super) async fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        operation: &'static str,
        table: Table,
        key: String,
    ) -> StoreResult<Option<T>> {
        let bytes: Option<Vec<u8>> = self
            .blocking(operation, move |db| {
                let txn = db.begin_read().map_err(|e| e.to_string())?;
                let table = txn.open_table(table).map_err(|e| e.to_string())?;
                let value = table.get(key.as_str()).map_err(|e| e.to_string())?;
                Ok(value.map(|v| v.value().to_vec()))
            })
            .await?;
        bytes.map(|b| decode(table, "?", &b)).transpose()
    }

    /// Reads every record of a table whose key starts with `prefix`.
    pub(super) async fn scan<T: DeserializeOwned + Send + 'static>(
        &self,
        operation: &'static str,
        table: Table,
        prefix: String,
    ) -> StoreResult<Vec<T>> {
        let rows: Vec<(String, Vec<u8>)> = self
            .blocking(operation, move |db| {
                let txn = db.begin_read().map_err(|e| e.to_string())?;
                let table = txn.open_table(table).map_err(|e| e.to_string())?;
                let mut rows = Vec::new();
                for entry in table.range(prefix.as_str()..).map_err(|e| e.to_string())? {
                    let (key, value) = entry.map_err(|e| e.to_string())?;
                    if !key.value().starts_with(prefix.as_str()) {
                        break;
                    }
                    rows.push((key.value().to_string(), value.value().to_vec()));
                }
                Ok(rows)
            })
            .await?;
        rows.iter()
            .map(|(key, bytes)| decode(table, key, bytes))
            .collect()
    }
}

impl EmbeddedStore {
    /// Removes one record; returns whether it existed.
    pub(super) async fn delete(
        &self,
        operation: &'static str,
        table: Table,
        key: String,
    ) -> StoreResult<bool> {
        self.blocking(operation, move |db| {
            let txn = begin_write(db)?;
            let existed = txn
                .open_table(table)
                .map_err(|e| e.to_string())?
                .remove(key.as_str())
                .map_err(|e| e.to_string())?
                .is_some();
            txn.commit().map_err(|e| e.to_string())?;
            Ok(existed)
        })
        .await
    }
}

fn decode<T: DeserializeOwned>(table: Table, id: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        collection: table_name(table),
        id: id.to_string(),
        message: e.to_string(),
    })
}

fn table_name(table: Table) -> &'static str {
    match table.name() {
        "USERS" => "USERS",
        "WORKER_REGISTRY" => "WORKER_REGISTRY",
        "TASKS" => "TASKS",
        "ASSIGNMENTS" => "ASSIGNMENTS",
        "SECRETS" => "SECRETS",
        _ => "RESULTS",
    }
}

/// A write as a table operation: the table and key of its document
/// ([`Write::document`]), and the value to insert (`None`: remove).
pub(super) fn table_operation(write: &Write) -> Result<(Table, String, Option<Vec<u8>>), String> {
    fn encode<T: Serialize>(value: &T) -> Result<Option<Vec<u8>>, String> {
        serde_json::to_vec(value)
            .map(Some)
            .map_err(|e| e.to_string())
    }
    let (collection, key) = write.document();
    let table = [USERS, WORKER_REGISTRY, TASKS, ASSIGNMENTS, RESULTS, SECRETS]
        .into_iter()
        .find(|table| table.name() == collection)
        .ok_or_else(|| format!("no table {collection}"))?;
    let value = match write {
        Write::PutWorker(worker) => encode(worker)?,
        Write::PutTask(task) => encode(task)?,
        Write::PutAssignment(assignment) => encode(assignment)?,
        Write::PutResult(result) => encode(result)?,
        Write::PutUser(user) => encode(user)?,
        Write::PutSecret(secret) => encode(secret)?,
        Write::DeleteWorker(_) | Write::DeleteUser(_) | Write::DeleteSecret(_) => None,
    };
    Ok((table, key, value))
}
