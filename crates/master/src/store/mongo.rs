//! The MongoDB backend (`mongodb` crate): collections `USERS`, `WORKER_REGISTRY`,
//! `TASKS`, `ASSIGNMENTS` and `RESULTS` of typed serde documents, and
//! `LOG_CHUNKS` of output pieces, with the indexes their queries use.
//! Output bytes are stored as base64 text (`data_base64`), which every
//! MongoDB wire-protocol server takes: nx-27017, the server CI runs, keeps
//! documents as JSON and has no binary type. Writes replace or remove whole documents (no
//! multi-document transactions), and a batch goes as one multi-statement command per
//! collection.

use super::{
    AssignmentRecord, LogChunkRecord, ResultRecord, SecretRecord, Store, StoreError, StoreResult,
    TaskCursor, TaskPage, TaskQuery, TaskRecord, TaskState, UserRecord, WorkerRecord, Write,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc, to_bson};
use mongodb::options::IndexOptions;
use mongodb::{Client, Collection, Database, IndexModel};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// A MongoDB-backed store.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    /// The URI without its password, for messages.
    display: String,
}

/// A URI with any password replaced by `***`, safe for logs and errors.
pub fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return uri.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{credentials}@{host}"),
    }
}

fn failed(operation: &'static str) -> impl Fn(mongodb::error::Error) -> StoreError {
    move |e| StoreError::Backend {
        operation,
        message: e.to_string(),
    }
}

impl MongoStore {
    /// Connects, checks the server answers, and creates the indexes.
    pub async fn connect(uri: &str, database: &str) -> StoreResult<Self> {
        let display = redact(uri);
        let connecting = |e: mongodb::error::Error| StoreError::Backend {
            operation: "connecting to MongoDB",
            message: format!("{display}: {e}"),
        };
        let mut options = mongodb::options::ClientOptions::parse(uri)
            .await
            .map_err(connecting)?;
        options.app_name = Some("cloudai-master".into());
        options
            .server_selection_timeout
            .get_or_insert(std::time::Duration::from_secs(10));
        let client = Client::with_options(options).map_err(connecting)?;
        let db = client.database(database);
        db.run_command(doc! { "ping": 1 })
            .await
            .map_err(connecting)?;
        let store = Self {
            db,
            display: format!("{display} (database {database})"),
        };
        store.create_indexes().await?;
        Ok(store)
    }

    async fn create_indexes(&self) -> StoreResult<()> {
        let unique = |keys| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().unique(true).build())
                .build()
        };
        let plain = |keys| IndexModel::builder().keys(keys).build();
        let indexing = failed("creating MongoDB indexes");
        self.db
            .collection::<UserRecord>("USERS")
            .create_index(unique(doc! { "name": 1 }))
            .await
            .map_err(&indexing)?;
        self.db
            .collection::<SecretRecord>("SECRETS")
            .create_index(unique(doc! { "name": 1 }))
            .await
            .map_err(&indexing)?;
        self.db
            .collection::<WorkerRecord>("WORKER_REGISTRY")
            .create_index(unique(doc! { "id": 1 }))
            .await
            .map_err(&indexing)?;
        let tasks = self.db.collection::<TaskRecord>("TASKS");
        tasks
            .create_index(unique(doc! { "id": 1 }))
            .await
            .map_err(&indexing)?;
        // The unfinished tasks a starting master loads, and history by state.
        tasks
            .create_index(plain(doc! { "state": 1, "created_at": -1, "id": -1 }))
            .await
            .map_err(&indexing)?;
        // History, newest first.
        tasks
            .create_index(plain(doc! { "created_at": -1, "id": -1 }))
            .await
            .map_err(&indexing)?;
        self.db
            .collection::<AssignmentRecord>("ASSIGNMENTS")
            .create_index(unique(doc! { "task_id": 1, "attempt": 1 }))
            .await
            .map_err(&indexing)?;
        self.db
            .collection::<ResultRecord>("RESULTS")
            .create_index(unique(doc! { "task_id": 1 }))
            .await
            .map_err(&indexing)?;
        self.db
            .collection::<Document>("LOG_CHUNKS")
            .create_index(unique(doc! { "task_id": 1, "attempt": 1, "seq": 1 }))
            .await
            .map_err(&indexing)?;
        Ok(())
    }

    /// Runs a write command; statement errors in its reply are errors too.
    async fn write_command(&self, command: Document) -> StoreResult<()> {
        let reply = self
            .db
            .run_command(command)
            .await
            .map_err(failed("writing a batch"))?;
        let errors = reply.get_array("writeErrors").map(Vec::len).unwrap_or(0);
        if errors > 0 || reply.contains_key("writeConcernError") {
            return Err(StoreError::Backend {
                operation: "writing a batch",
                message: format!("{errors} writes refused: {reply}"),
            });
        }
        Ok(())
    }

    fn collection<T: Send + Sync>(&self, name: &str) -> Collection<T> {
        self.db.collection(name)
    }

    async fn upsert<T: Serialize + Send + Sync>(
        &self,
        operation: &'static str,
        name: &str,
        filter: mongodb::bson::Document,
        value: &T,
    ) -> StoreResult<()> {
        self.collection::<T>(name)
            .replace_one(filter, value)
            .upsert(true)
            .await
            .map_err(failed(operation))?;
        Ok(())
    }

    async fn all<T: DeserializeOwned + Send + Sync>(
        &self,
        operation: &'static str,
        name: &str,
        filter: mongodb::bson::Document,
        sort: mongodb::bson::Document,
    ) -> StoreResult<Vec<T>> {
        let cursor = self
            .collection::<T>(name)
            .find(filter)
            .sort(sort)
            .await
            .map_err(failed(operation))?;
        cursor.try_collect().await.map_err(failed(operation))
    }
}

/// Task states as stored (their BSON strings).
fn states(
    operation: &'static str,
    states: impl IntoIterator<Item = TaskState>,
) -> StoreResult<Vec<Bson>> {
    states
        .into_iter()
        .map(|s| {
            to_bson(&s).map_err(|e| StoreError::Backend {
                operation,
                message: e.to_string(),
            })
        })
        .collect()
}

/// The MongoDB filter of a history query (all but its limit).
fn task_filter(query: &TaskQuery) -> Document {
    let mut filter = Document::new();
    if let Some(state) = query.state {
        filter.insert("state", state.as_str());
    }
    if let Some(worker) = &query.worker_id {
        filter.insert("worker_id", worker.as_str());
    }
    match query.owner.as_deref() {
        // Tasks stored before owners were kept have no owner field.
        Some("") => drop(filter.insert("owner", doc! { "$in": ["", Bson::Null] })),
        Some(owner) => drop(filter.insert("owner", owner)),
        None => {}
    }
    if let Some(image) = &query.image {
        filter.insert("image", image.as_str());
    }
    let mut time = Document::new();
    if let Some(since) = query.since {
        time.insert("$gte", since);
    }
    if let Some(until) = query.until {
        time.insert("$lt", until);
    }
    if !time.is_empty() {
        filter.insert("created_at", time);
    }
    if let Some(cursor) = &query.before {
        filter.insert(
            "$or",
            vec![
                doc! { "created_at": { "$lt": cursor.created_at } },
                doc! { "created_at": cursor.created_at, "id": { "$lt": &cursor.id } },
            ],
        );
    }
    filter
}

/// Statements in one `update` or `delete` command (servers take up to 100,000).
const MAX_STATEMENTS: usize = 1000;

/// A write as a statement: its collection, the filter of its document and
/// the document that replaces it (`None`: it is deleted).
fn statement(write: &Write) -> StoreResult<(&'static str, Document, Option<Document>)> {
    fn encode<T: Serialize>(value: &T) -> StoreResult<Option<Document>> {
        mongodb::bson::to_document(value)
            .map(Some)
            .map_err(|e| StoreError::Backend {
                operation: "writing a batch",
                message: e.to_string(),
            })
    }
    Ok(match write {
        Write::PutWorker(w) => ("WORKER_REGISTRY", doc! { "id": &w.id }, encode(w)?),
        Write::DeleteWorker(id) => ("WORKER_REGISTRY", doc! { "id": id }, None),
        Write::PutTask(t) => ("TASKS", doc! { "id": &t.id }, encode(t)?),
        Write::PutAssignment(a) => (
            "ASSIGNMENTS",
            doc! { "task_id": &a.task_id, "attempt": a.attempt },
            encode(a)?,
        ),
        Write::PutResult(r) => ("RESULTS", doc! { "task_id": &r.task_id }, encode(r)?),
        Write::PutUser(u) => ("USERS", doc! { "name": &u.name }, encode(u)?),
        Write::DeleteUser(name) => ("USERS", doc! { "name": name }, None),
        Write::PutSecret(s) => ("SECRETS", doc! { "name": &s.name }, encode(s)?),
        Write::DeleteSecret(name) => ("SECRETS", doc! { "name": name }, None),
    })
}

#[async_trait::async_trait]
impl Store for MongoStore {
    fn describe(&self) -> String {
        format!("MongoDB {}", self.display)
    }

    async fn health(&self) -> StoreResult<()> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(failed("pinging MongoDB"))?;
        Ok(())
    }

    async fn put_worker(&self, worker: &WorkerRecord) -> StoreResult<()> {
        self.upsert(
            "saving a worker",
            "WORKER_REGISTRY",
            doc! { "id": &worker.id },
            worker,
        )
        .await
    }

    async fn delete_worker(&self, worker_id: &str) -> StoreResult<bool> {
        let result = self
            .collection::<WorkerRecord>("WORKER_REGISTRY")
            .delete_one(doc! { "id": worker_id })
            .await
            .map_err(failed("deleting a worker"))?;
        Ok(result.deleted_count > 0)
    }

    async fn list_workers(&self) -> StoreResult<Vec<WorkerRecord>> {
        self.all(
            "listing workers",
            "WORKER_REGISTRY",
            doc! {},
            doc! { "id": 1 },
        )
        .await
    }

    /// A batch keeps only the last write to each document and sends them
    /// as one multi-statement `update` (upserts) or `delete` command per
    /// collection, the collections at once: a few round trips per batch,
    /// whatever its size. Every write replaces or removes a whole document,
    /// so the result is the same as applying the batch in order.
    async fn write_batch(&self, writes: &[Write]) -> StoreResult<()> {
        let mut last = std::collections::HashMap::new();
        for (index, write) in writes.iter().enumerate() {
            last.insert(write.document(), index);
        }
        let mut order: Vec<usize> = last.into_values().collect();
        order.sort_unstable();
        let mut commands: BTreeMap<(&'static str, bool), Vec<Document>> = BTreeMap::new();
        for index in order {
            let (collection, filter, replacement) = statement(&writes[index])?;
            let upsert = replacement.is_some();
            let statement = match replacement {
                Some(document) => doc! { "q": filter, "u": document, "upsert": true },
                None => doc! { "q": filter, "limit": 1 },
            };
            commands
                .entry((collection, upsert))
                .or_default()
                .push(statement);
        }
        let sent = commands
            .into_iter()
            .flat_map(|((collection, upserts), statements)| {
                let chunks: Vec<Vec<Document>> = statements
                    .chunks(MAX_STATEMENTS)
                    .map(<[Document]>::to_vec)
                    .collect();
                chunks.into_iter().map(move |chunk| {
                    let command = if upserts {
                        doc! { "update": collection, "updates": chunk, "ordered": false }
                    } else {
                        doc! { "delete": collection, "deletes": chunk, "ordered": false }
                    };
                    self.write_command(command)
                })
            });
        futures::future::try_join_all(sent).await.map(drop)
    }

    async fn put_task(&self, task: &TaskRecord) -> StoreResult<()> {
        self.upsert("saving a task", "TASKS", doc! { "id": &task.id }, task)
            .await
    }

    async fn update_task_if(&self, task: &TaskRecord, expected: &[TaskState]) -> StoreResult<bool> {
        let states = states("updating a task", expected.iter().copied())?;
        // A conditional single-document replace: matched 0 or 1.
        let result = self
            .collection::<TaskRecord>("TASKS")
            .replace_one(doc! { "id": &task.id, "state": { "$in": states } }, task)
            .await
            .map_err(failed("updating a task"))?;
        Ok(result.matched_count == 1)
    }

    async fn get_task(&self, task_id: &str) -> StoreResult<Option<TaskRecord>> {
        self.collection::<TaskRecord>("TASKS")
            .find_one(doc! { "id": task_id })
            .await
            .map_err(failed("reading a task"))
    }

    async fn query_tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
        let operation = "listing tasks";
        let size = query.page_size();
        let cursor = self
            .collection::<TaskRecord>("TASKS")
            .find(task_filter(query))
            .sort(doc! { "created_at": -1, "id": -1 })
            .limit(i64::try_from(size + 1).unwrap_or(i64::MAX))
            .await
            .map_err(failed(operation))?;
        let mut tasks: Vec<TaskRecord> = cursor.try_collect().await.map_err(failed(operation))?;
        let next = (tasks.len() > size).then(|| TaskCursor::of(&tasks[size - 1]));
        tasks.truncate(size);
        Ok(TaskPage { tasks, next })
    }

    async fn list_unfinished_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        let unfinished = TaskState::ALL.into_iter().filter(|s| !s.is_terminal());
        let filter = doc! { "state": { "$in": states("listing unfinished tasks", unfinished)? } };
        self.all(
            "listing unfinished tasks",
            "TASKS",
            filter,
            doc! { "created_at": 1 },
        )
        .await
    }

    /// The task goes last: a prune that fails halfway leaves it, and the
    /// next prune finds it and removes what is left.
    async fn delete_finished_tasks(
        &self,
        task_ids: &[String],
    ) -> StoreResult<Vec<(String, TaskState)>> {
        let operation = "pruning tasks";
        let finished = states(
            operation,
            TaskState::ALL.into_iter().filter(|s| s.is_terminal()),
        )?;
        let found = self
            .collection::<Document>("TASKS")
            .find(doc! { "id": { "$in": task_ids }, "state": { "$in": &finished } })
            .projection(doc! { "id": 1, "state": 1 })
            .await
            .map_err(failed(operation))?;
        let found: Vec<Document> = found.try_collect().await.map_err(failed(operation))?;
        let removed: Vec<(String, TaskState)> = found
            .iter()
            .filter_map(|d| {
                let state = TaskState::parse(d.get_str("state").ok()?)?;
                Some((d.get_str("id").ok()?.to_string(), state))
            })
            .collect();
        let ids: Vec<&str> = removed.iter().map(|(id, _)| id.as_str()).collect();
        if ids.is_empty() {
            return Ok(removed);
        }
        for name in ["LOG_CHUNKS", "RESULTS", "ASSIGNMENTS"] {
            self.collection::<Document>(name)
                .delete_many(doc! { "task_id": { "$in": &ids } })
                .await
                .map_err(failed(operation))?;
        }
        self.collection::<Document>("TASKS")
            .delete_many(doc! { "id": { "$in": &ids }, "state": { "$in": finished } })
            .await
            .map_err(failed(operation))?;
        Ok(removed)
    }

    async fn count_tasks(&self) -> StoreResult<BTreeMap<TaskState, u64>> {
        let tasks = self.collection::<Document>("TASKS");
        let counted = TaskState::ALL.map(|state| {
            let tasks = tasks.clone();
            async move {
                let filter = doc! { "state": state.as_str() };
                let count = tasks.count_documents(filter).await;
                count.map(|n| (state, n)).map_err(failed("counting tasks"))
            }
        });
        let counts = futures::future::try_join_all(counted).await?;
        Ok(counts.into_iter().filter(|(_, n)| *n > 0).collect())
    }

    async fn put_assignment(&self, assignment: &AssignmentRecord) -> StoreResult<()> {
        let filter = doc! { "task_id": &assignment.task_id, "attempt": assignment.attempt };
        self.upsert("saving an assignment", "ASSIGNMENTS", filter, assignment)
            .await
    }

    async fn list_assignments(&self, task_id: &str) -> StoreResult<Vec<AssignmentRecord>> {
        self.all(
            "listing assignments",
            "ASSIGNMENTS",
            doc! { "task_id": task_id },
            doc! { "attempt": 1 },
        )
        .await
    }

    async fn put_result(&self, result: &ResultRecord) -> StoreResult<()> {
        self.upsert(
            "saving a result",
            "RESULTS",
            doc! { "task_id": &result.task_id },
            result,
        )
        .await
    }

    async fn get_result(&self, task_id: &str) -> StoreResult<Option<ResultRecord>> {
        self.collection::<ResultRecord>("RESULTS")
            .find_one(doc! { "task_id": task_id })
            .await
            .map_err(failed("reading a result"))
    }

    async fn put_log_chunk(&self, chunk: &LogChunkRecord) -> StoreResult<()> {
        let filter = doc! {
            "task_id": &chunk.task_id,
            "attempt": i64::from(chunk.attempt),
            "seq": i64::from(chunk.seq),
        };
        let mut document = filter.clone();
        document.insert("data_base64", BASE64.encode(&chunk.data));
        self.upsert("saving a log chunk", "LOG_CHUNKS", filter, &document)
            .await
    }

    async fn delete_log_chunks(&self, task_id: &str, attempt: u32) -> StoreResult<u64> {
        let result = self
            .collection::<Document>("LOG_CHUNKS")
            .delete_many(doc! { "task_id": task_id, "attempt": i64::from(attempt) })
            .await
            .map_err(failed("deleting log chunks"))?;
        Ok(result.deleted_count)
    }

    async fn log_chunks(
        &self,
        task_id: &str,
        attempt: u32,
        from_seq: u32,
        limit: usize,
    ) -> StoreResult<Vec<LogChunkRecord>> {
        let reading = failed("reading log chunks");
        let filter = doc! {
            "task_id": task_id,
            "attempt": i64::from(attempt),
            "seq": { "$gte": i64::from(from_seq) },
        };
        let documents: Vec<Document> = self
            .collection::<Document>("LOG_CHUNKS")
            .find(filter)
            .sort(doc! { "seq": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(&reading)?
            .try_collect()
            .await
            .map_err(&reading)?;
        documents
            .into_iter()
            .map(|document| {
                let corrupt = |message: String| StoreError::Corrupt {
                    collection: "LOG_CHUNKS",
                    id: format!("{task_id}/{attempt}"),
                    message,
                };
                // Servers may hand back a small number as a 32-bit integer.
                let seq = match document.get("seq") {
                    Some(Bson::Int32(n)) => u32::try_from(*n).ok(),
                    Some(Bson::Int64(n)) => u32::try_from(*n).ok(),
                    _ => None,
                }
                .ok_or_else(|| corrupt("no chunk number".into()))?;
                let data = document
                    .get_str("data_base64")
                    .map_err(|e| e.to_string())
                    .and_then(|text| BASE64.decode(text).map_err(|e| e.to_string()))
                    .map_err(|e| corrupt(format!("chunk {seq}: {e}")))?;
                Ok(LogChunkRecord {
                    task_id: task_id.to_string(),
                    attempt,
                    seq,
                    data,
                })
            })
            .collect()
    }

    async fn put_user(&self, user: &UserRecord) -> StoreResult<()> {
        self.upsert("saving a user", "USERS", doc! { "name": &user.name }, user)
            .await
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        self.all("listing users", "USERS", doc! {}, doc! { "name": 1 })
            .await
    }

    async fn delete_user(&self, name: &str) -> StoreResult<bool> {
        let result = self
            .collection::<UserRecord>("USERS")
            .delete_one(doc! { "name": name })
            .await
            .map_err(failed("deleting a user"))?;
        Ok(result.deleted_count > 0)
    }

    async fn put_secret(&self, secret: &SecretRecord) -> StoreResult<()> {
        let filter = doc! { "name": &secret.name };
        self.upsert("saving a secret", "SECRETS", filter, secret)
            .await
    }

    async fn list_secrets(&self) -> StoreResult<Vec<SecretRecord>> {
        self.all("listing secrets", "SECRETS", doc! {}, doc! { "name": 1 })
            .await
    }

    async fn delete_secret(&self, name: &str) -> StoreResult<bool> {
        let result = self
            .collection::<SecretRecord>("SECRETS")
            .delete_one(doc! { "name": name })
            .await
            .map_err(failed("deleting a secret"))?;
        Ok(result.deleted_count > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::contract;
    use super::*;
    use cloudai_e2e::MongoServer;
    use std::sync::Arc;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("mongodb://ops:s3cret@db1:27017/?authSource=admin"),
            "mongodb://ops:***@db1:27017/?authSource=admin"
        );
        assert_eq!(redact("mongodb://db1:27017"), "mongodb://db1:27017");
        assert_eq!(redact("mongodb://ops@db1"), "mongodb://ops@db1");
    }

    /// A fresh `nx-27017` server of the end-to-end harness (own data, pid and
    /// log files; killed on drop).
    fn server() -> MongoServer {
        MongoServer::temporary()
    }

    async fn store(server: &MongoServer) -> Arc<dyn Store> {
        Arc::new(
            MongoStore::connect(&server.uri, "cloudai_test")
                .await
                .expect("connect to nx-27017"),
        )
    }

    super::super::contract::contract_tests!(async {
        let server = server();
        let store = store(&server).await;
        (server, store)
    });

    #[tokio::test]
    async fn persistence() {
        let mut server = server();
        let first = store(&server).await;
        contract::persistence(first, async |old| {
            drop(old);
            // The same file and port, a new server process.
            server.stop();
            server.resume();
            store(&server).await
        })
        .await;
    }

    #[tokio::test]
    async fn health_follows_the_server() {
        let server = server();
        let uri = format!("{}&serverSelectionTimeoutMS=500", server.uri);
        let store = MongoStore::connect(&uri, "cloudai_test").await.unwrap();
        store.health().await.expect("healthy while the server runs");
        drop(server);
        let error = store
            .health()
            .await
            .expect_err("unhealthy once it is gone")
            .to_string();
        assert!(error.contains("pinging MongoDB"), "{error}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_error_without_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let uri = format!(
            "mongodb://ops:s3cret@127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=500"
        );
        let error = MongoStore::connect(&uri, "x")
            .await
            .err()
            .expect("nothing listens there")
            .to_string();
        assert!(
            error.contains("connecting to MongoDB") && error.contains("ops:***@"),
            "{error}"
        );
        assert!(!error.contains("s3cret"), "{error}");
    }
}
