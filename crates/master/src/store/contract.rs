//! The store contract: one suite every backend must pass. Each check takes a
//! fresh store; `persistence` also takes a way to reopen it. [`contract_tests!`]
//! turns the checks into one `#[tokio::test]` each for a backend.

use super::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One `#[tokio::test]` per contract check (all but `persistence`, whose
/// reopening is the backend's own) for the backend that `$fresh` makes:
/// an `async` expression giving `(guard, Arc<dyn Store>)`, the guard kept
/// alive for the test (a temporary directory, a test server).
macro_rules! contract_tests {
    ($fresh:expr) => {
        $crate::store::contract::contract_tests!(@each $fresh;
            workers, tasks, task_history, pruning, assignments_and_results, batches,
            conditional_updates_with_records, log_chunks, users, secrets);

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn contract_concurrent_writers() {
            let (_guard, store) = $fresh.await;
            $crate::store::contract::concurrent_writers(store).await;
        }
    };
    (@each $fresh:expr; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (_guard, store) = $fresh.await;
                $crate::store::contract::$check(store).await;
            }
        )*
    };
}
pub(crate) use contract_tests;

fn task(id: &str, created_at: i64, state: TaskState) -> TaskRecord {
    TaskRecord {
        command: vec!["true".into()],
        env: BTreeMap::from([("K".into(), "V".into())]),
        limits: Limits {
            nano_cpus: 1,
            memory_bytes: 6 << 20,
            gpu_count: 0,
            gpu_device_ids: vec![],
        },
        state,
        worker_id: Some("w1".into()),
        ..TaskRecord::queued(id, "busybox", created_at)
    }
}

fn worker(id: &str) -> WorkerRecord {
    WorkerRecord {
        registered_at: 1,
        host: Some(HostRecord::default()),
        cert_fingerprint: Some("ab".repeat(32)),
        ..WorkerRecord::new(id, "127.0.0.1:50052")
    }
}

/// Workers: put, replace, list in id order, delete.
pub async fn workers(store: Arc<dyn Store>) {
    store.put_worker(&worker("b")).await.unwrap();
    store.put_worker(&worker("a")).await.unwrap();
    let mut updated = worker("a");
    updated.address = "10.0.0.1:1".into();
    store.put_worker(&updated).await.unwrap();
    let listed = store.list_workers().await.unwrap();
    assert_eq!(
        listed.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(listed[0].address, "10.0.0.1:1");
    assert!(store.delete_worker("a").await.unwrap());
    assert!(!store.delete_worker("a").await.unwrap());
    assert_eq!(store.list_workers().await.unwrap().len(), 1);
}

/// Every task of a store, newest first, read a page at a time.
pub async fn all_tasks(store: &dyn Store) -> Vec<TaskRecord> {
    every_page(store, 3).await
}

/// Every task of a store, newest first, following cursors through pages of `limit`.
pub async fn every_page(store: &dyn Store, limit: usize) -> Vec<TaskRecord> {
    let mut query = TaskQuery {
        limit,
        ..TaskQuery::default()
    };
    let mut tasks = Vec::new();
    loop {
        let page = store.query_tasks(&query).await.unwrap();
        tasks.extend(page.tasks);
        match page.next {
            Some(next) => query.before = Some(next),
            None => return tasks,
        }
    }
}

/// Tasks: get, list newest first, conditional updates follow the expected state.
pub async fn tasks(store: Arc<dyn Store>) {
    store
        .put_task(&task("t-2", 20, TaskState::Queued))
        .await
        .unwrap();
    store
        .put_task(&task("t-1", 10, TaskState::Queued))
        .await
        .unwrap();
    assert_eq!(
        store.get_task("t-1").await.unwrap().unwrap(),
        task("t-1", 10, TaskState::Queued)
    );
    assert!(store.get_task("nope").await.unwrap().is_none());
    let ids: Vec<String> = all_tasks(&*store).await.into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["t-2", "t-1"]);

    let completed = task("t-1", 10, TaskState::Completed);
    assert!(
        !store
            .update_task_if(&completed, &[TaskState::Running])
            .await
            .unwrap(),
        "state is queued, not running"
    );
    assert!(
        store
            .update_task_if(&completed, &[TaskState::Queued])
            .await
            .unwrap()
    );
    // A completed task cannot go back to running through a conditional update.
    let running = task("t-1", 10, TaskState::Running);
    let allowed = TaskState::predecessors(TaskState::Running);
    assert!(!store.update_task_if(&running, &allowed).await.unwrap());
    assert_eq!(
        store.get_task("t-1").await.unwrap().unwrap().state,
        TaskState::Completed
    );
    assert!(
        !store
            .update_task_if(&task("ghost", 0, TaskState::Running), &[TaskState::Queued])
            .await
            .unwrap()
    );
}

/// History: pages newest first that continue where the last one ended,
/// filters, the time range, unfinished tasks and counts that follow updates.
pub async fn task_history(store: Arc<dyn Store>) {
    let states = [TaskState::Completed, TaskState::Failed, TaskState::Queued];
    for n in 0..12 {
        let mut t = task(&format!("h-{n:02}"), 100 + n / 2, states[n as usize % 3]);
        t.owner = match n {
            0 => "a\"na".into(), // escaped in the stored JSON
            1..6 => "ana".into(),
            _ => "bo".into(),
        };
        t.image = if n % 2 == 0 { "even" } else { "odd" }.into();
        store.put_task(&t).await.unwrap();
    }
    let ids = |tasks: &[TaskRecord]| tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
    let everything = all_tasks(&*store).await;
    let expected: Vec<String> = (0..12).rev().map(|n| format!("h-{n:02}")).collect();
    assert_eq!(ids(&everything), expected, "newest first, ties by id");

    let page = |query: TaskQuery| {
        let store = store.clone();
        async move { store.query_tasks(&query).await.unwrap() }
    };
    let first = page(TaskQuery {
        limit: 5,
        ..TaskQuery::default()
    })
    .await;
    assert_eq!(ids(&first.tasks), expected[..5]);
    let second = page(TaskQuery {
        limit: 5,
        before: first.next.clone(),
        ..TaskQuery::default()
    })
    .await;
    assert_eq!(ids(&second.tasks), expected[5..10]);
    let last = page(TaskQuery {
        limit: 5,
        before: second.next.clone(),
        ..TaskQuery::default()
    })
    .await;
    assert_eq!(ids(&last.tasks), expected[10..]);
    assert_eq!(last.next, None, "nothing older");

    let filtered = page(TaskQuery {
        state: Some(TaskState::Failed),
        owner: Some("bo".into()),
        limit: 100,
        ..TaskQuery::default()
    })
    .await;
    assert_eq!(ids(&filtered.tasks), ["h-10", "h-07"]);
    let quoted = page(TaskQuery {
        owner: Some("a\"na".into()),
        limit: 100,
        ..TaskQuery::default()
    })
    .await;
    assert_eq!(ids(&quoted.tasks), ["h-00"]);
    let by_image = page(TaskQuery {
        image: Some("odd".into()),
        since: Some(102),
        until: Some(105),
        limit: 100,
        ..TaskQuery::default()
    })
    .await;
    assert_eq!(ids(&by_image.tasks), ["h-09", "h-07", "h-05"]);
    let by_worker = page(TaskQuery {
        worker_id: Some("elsewhere".into()),
        limit: 100,
        ..TaskQuery::default()
    })
    .await;
    assert!(by_worker.tasks.is_empty() && by_worker.next.is_none());

    let mut unfinished = ids(&store.list_unfinished_tasks().await.unwrap());
    unfinished.sort();
    assert_eq!(unfinished, ["h-02", "h-05", "h-08", "h-11"]);
    let mut done = task("h-02", 101, TaskState::Completed);
    done.owner = "ana".into();
    done.image = "even".into();
    assert!(
        store
            .update_task_if(&done, &[TaskState::Queued])
            .await
            .unwrap()
    );
    assert_eq!(store.list_unfinished_tasks().await.unwrap().len(), 3);
    let counts = store.count_tasks().await.unwrap();
    assert_eq!(counts.get(&TaskState::Completed), Some(&5));
    assert_eq!(counts.get(&TaskState::Failed), Some(&4));
    assert_eq!(counts.get(&TaskState::Queued), Some(&3));
    let completed = page(TaskQuery {
        state: Some(TaskState::Completed),
        limit: 100,
        ..TaskQuery::default()
    })
    .await;
    assert_eq!(
        ids(&completed.tasks),
        ["h-09", "h-06", "h-03", "h-02", "h-00"]
    );
}

/// Pruning removes finished tasks with everything of theirs, and nothing else.
pub async fn pruning(store: Arc<dyn Store>) {
    for (id, state) in [
        ("p-done", TaskState::Completed),
        ("p-live", TaskState::Running),
    ] {
        store.put_task(&task(id, 1, state)).await.unwrap();
        store
            .put_assignment(&AssignmentRecord {
                task_id: id.into(),
                attempt: 1,
                worker_id: "w1".into(),
                assigned_at: 1,
            })
            .await
            .unwrap();
        store
            .put_log_chunk(&LogChunkRecord {
                task_id: id.into(),
                attempt: 1,
                seq: 0,
                data: b"out".to_vec(),
            })
            .await
            .unwrap();
    }
    // A task whose id extends the pruned one's keeps its records.
    store
        .put_task(&task("p-done2", 2, TaskState::Completed))
        .await
        .unwrap();
    store
        .put_log_chunk(&LogChunkRecord {
            task_id: "p-done2".into(),
            attempt: 1,
            seq: 0,
            data: b"kept".to_vec(),
        })
        .await
        .unwrap();
    let ids = ["p-done", "p-live", "p-ghost"].map(String::from);
    let removed = store.delete_finished_tasks(&ids).await.unwrap();
    assert_eq!(removed, [("p-done".to_string(), TaskState::Completed)]);
    assert!(store.get_task("p-done").await.unwrap().is_none());
    assert!(store.list_assignments("p-done").await.unwrap().is_empty());
    assert!(
        store
            .log_chunks("p-done", 1, 0, 8)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.get_task("p-live").await.unwrap().is_some());
    assert_eq!(store.list_assignments("p-live").await.unwrap().len(), 1);
    assert_eq!(store.log_chunks("p-done2", 1, 0, 8).await.unwrap().len(), 1);
    let counts = store.count_tasks().await.unwrap();
    assert_eq!(counts.get(&TaskState::Completed), Some(&1));
    assert_eq!(all_tasks(&*store).await.len(), 2);
}

/// Concurrent writers: every insert lands, and exactly one of many racing
/// conditional updates from the same state wins.
pub async fn concurrent_writers(store: Arc<dyn Store>) {
    let inserts = (0..40).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .put_task(&task(&format!("c-{i:02}"), i, TaskState::Assigned))
                .await
        })
    });
    for insert in futures::future::join_all(inserts).await {
        insert.unwrap().unwrap();
    }
    assert_eq!(all_tasks(&*store).await.len(), 40);
    let racers = (0..16).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut next = task("c-00", 0, TaskState::Running);
            next.error = Some(format!("racer {i}"));
            store.update_task_if(&next, &[TaskState::Assigned]).await
        })
    });
    let winners = futures::future::join_all(racers)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap().as_ref().unwrap())
        .count();
    assert_eq!(winners, 1);
}

/// Assignments and results: per task, in attempt order; results replace.
pub async fn assignments_and_results(store: Arc<dyn Store>) {
    for (task_id, attempt) in [("t-a", 2), ("t-a", 1), ("t-b", 1), ("t-ab", 1)] {
        store
            .put_assignment(&AssignmentRecord {
                task_id: task_id.into(),
                attempt,
                worker_id: "w1".into(),
                assigned_at: 5,
            })
            .await
            .unwrap();
    }
    let attempts: Vec<u32> = store
        .list_assignments("t-a")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.attempt)
        .collect();
    assert_eq!(attempts, [1, 2], "only t-a's assignments, in attempt order");
    let mut result = ResultRecord {
        task_id: "t-a".into(),
        worker_id: "w1".into(),
        attempt: 1,
        state: TaskState::Failed,
        exit_code: Some(3),
        error: Some("exited with code 3".into()),
        oom_killed: false,
        started_at: Some(1),
        finished_at: Some(2),
        log: "hello\n".into(),
        log_truncated: false,
        log_chunks: 0,
        log_chunk_bytes: 0,
        log_total_bytes: 0,
    };
    store.put_result(&result).await.unwrap();
    result.attempt = 2;
    result.log_chunks = 3;
    result.log_chunk_bytes = 3 << 20;
    result.log_total_bytes = 5 << 20;
    store.put_result(&result).await.unwrap();
    assert_eq!(store.get_result("t-a").await.unwrap().unwrap(), result);
    assert!(store.get_result("t-b").await.unwrap().is_none());
}

/// Log chunks: binary data round-trips, pages come in order from any chunk,
/// a rewritten chunk replaces the old one, attempts and tasks whose ids share
/// a prefix stay apart, also when one attempt's chunks are deleted.
pub async fn log_chunks(store: Arc<dyn Store>) {
    let chunk = |task_id: &str, attempt: u32, seq: u32, data: Vec<u8>| LogChunkRecord {
        task_id: task_id.into(),
        attempt,
        seq,
        data,
    };
    // Every byte value, and a chunk of the largest size a worker sends.
    let binary: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    for seq in [2, 0, 11, 1] {
        let data = if seq == 1 {
            binary.clone()
        } else {
            format!("chunk {seq}\n").into_bytes()
        };
        store
            .put_log_chunk(&chunk("t-1", 1, seq, data))
            .await
            .unwrap();
    }
    store
        .put_log_chunk(&chunk("t-1", 1, 0, b"chunk 0, again\n".to_vec()))
        .await
        .unwrap();
    store
        .put_log_chunk(&chunk("t-1", 2, 0, b"second attempt\n".to_vec()))
        .await
        .unwrap();
    store
        .put_log_chunk(&chunk("t-10", 1, 0, b"another task\n".to_vec()))
        .await
        .unwrap();

    let all = store.log_chunks("t-1", 1, 0, 100).await.unwrap();
    let seqs: Vec<u32> = all.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 11], "t-1 attempt 1 only, in order");
    assert_eq!(all[0].data, b"chunk 0, again\n", "the rewrite won");
    assert_eq!(all[1].data, binary, "binary data round-trips");
    assert!(all.iter().all(|c| c.task_id == "t-1" && c.attempt == 1));
    let page = store.log_chunks("t-1", 1, 1, 2).await.unwrap();
    let seqs: Vec<u32> = page.iter().map(|c| c.seq).collect();
    assert_eq!(
        seqs,
        [1, 2],
        "a page starts at its chunk and stops at its limit"
    );
    let rest = store.log_chunks("t-1", 1, 3, 100).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].seq, 11);
    let second = store.log_chunks("t-1", 2, 0, 100).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].data, b"second attempt\n");
    assert!(store.log_chunks("t-1", 3, 0, 100).await.unwrap().is_empty());
    assert!(store.log_chunks("t-", 1, 0, 100).await.unwrap().is_empty());

    // Deleting one attempt's chunks leaves the other attempt and task alone.
    assert_eq!(store.delete_log_chunks("t-1", 1).await.unwrap(), 4);
    assert!(store.log_chunks("t-1", 1, 0, 100).await.unwrap().is_empty());
    assert_eq!(store.log_chunks("t-1", 2, 0, 100).await.unwrap().len(), 1);
    assert_eq!(store.log_chunks("t-10", 1, 0, 100).await.unwrap().len(), 1);
    assert_eq!(store.delete_log_chunks("t-1", 1).await.unwrap(), 0);
}

/// Users: put and list.
pub async fn users(store: Arc<dyn Store>) {
    store
        .put_user(&UserRecord {
            name: "ops".into(),
            role: "operator".into(),
            created_at: 1,
            tokens: vec![ApiTokenRecord {
                id: "0a1b2c3d".into(),
                hash: "f".repeat(64),
                created_at: 1,
                expires_at: Some(2),
            }],
        })
        .await
        .unwrap();
    store
        .put_user(&UserRecord {
            name: "admin".into(),
            role: "admin".into(),
            created_at: 2,
            tokens: vec![],
        })
        .await
        .unwrap();
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["admin", "ops"]);
    let ops = store.list_users().await.unwrap().remove(1);
    assert_eq!(ops.tokens.len(), 1);
    assert!(store.delete_user("ops").await.unwrap());
    assert!(!store.delete_user("ops").await.unwrap());
    assert_eq!(store.list_users().await.unwrap().len(), 1);
}

/// Secrets: put (replacing), list by name, delete.
pub async fn secrets(store: Arc<dyn Store>) {
    let secret = |name: &str, sealed: &str, registry: Option<&str>| SecretRecord {
        name: name.into(),
        registry: registry.map(Into::into),
        sealed: sealed.into(),
        key_id: "0123abcd".into(),
        created_at: 1,
        updated_at: 2,
    };
    store
        .put_secret(&secret("wandb", "AAAA", None))
        .await
        .unwrap();
    let login = secret("hub", "BBBB", Some("registry.example:5000"));
    store.put_secret(&login).await.unwrap();
    store
        .put_secret(&secret("wandb", "CCCC", None))
        .await
        .unwrap();
    let all = store.list_secrets().await.unwrap();
    assert_eq!(all, [login, secret("wandb", "CCCC", None)]);
    assert!(store.delete_secret("wandb").await.unwrap());
    assert!(!store.delete_secret("wandb").await.unwrap());
    assert_eq!(store.list_secrets().await.unwrap().len(), 1);
}

/// Everything written survives closing and reopening the store (for MongoDB:
/// restarting the server).
pub async fn persistence(
    store: Arc<dyn Store>,
    reopen: impl AsyncFnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
) {
    store.put_worker(&worker("w1")).await.unwrap();
    store
        .put_task(&task("t-1", 1, TaskState::Failed))
        .await
        .unwrap();
    store
        .put_assignment(&AssignmentRecord {
            task_id: "t-1".into(),
            attempt: 1,
            worker_id: "w1".into(),
            assigned_at: 1,
        })
        .await
        .unwrap();
    let store = reopen(store).await;
    assert_eq!(store.list_workers().await.unwrap(), vec![worker("w1")]);
    assert_eq!(
        store.get_task("t-1").await.unwrap().unwrap().state,
        TaskState::Failed
    );
    assert_eq!(store.list_assignments("t-1").await.unwrap().len(), 1);
}

/// A batch of writes lands in order: later writes win, deletes remove.
pub async fn batches(store: Arc<dyn Store>) {
    let mut completed = task("t-b", 1, TaskState::Completed);
    completed.exit_code = Some(0);
    store
        .write_batch(&[
            Write::PutWorker(worker("w-gone")),
            Write::PutWorker(worker("w-kept")),
            Write::PutTask(task("t-b", 1, TaskState::Queued)),
            Write::PutAssignment(AssignmentRecord {
                task_id: "t-b".into(),
                attempt: 1,
                worker_id: "w-kept".into(),
                assigned_at: 2,
            }),
            Write::PutTask(completed.clone()),
            Write::DeleteWorker("w-gone".into()),
            Write::PutUser(UserRecord {
                name: "ops".into(),
                role: "viewer".into(),
                created_at: 1,
                tokens: vec![],
            }),
        ])
        .await
        .unwrap();
    assert_eq!(store.get_task("t-b").await.unwrap(), Some(completed));
    assert_eq!(store.list_workers().await.unwrap(), vec![worker("w-kept")]);
    assert_eq!(store.list_assignments("t-b").await.unwrap().len(), 1);
    assert_eq!(store.list_users().await.unwrap().len(), 1);
    store.write_batch(&[]).await.unwrap();
}

/// A conditional update carries its companion records only when it wins.
pub async fn conditional_updates_with_records(store: Arc<dyn Store>) {
    store
        .put_task(&task("t-c", 1, TaskState::Queued))
        .await
        .unwrap();
    let assignment = |attempt| {
        Write::PutAssignment(AssignmentRecord {
            task_id: "t-c".into(),
            attempt,
            worker_id: "w1".into(),
            assigned_at: 3,
        })
    };
    let assigned = task("t-c", 1, TaskState::Assigned);
    assert!(
        !store
            .update_task_if_then(&assigned, &[TaskState::Running], &[assignment(7)])
            .await
            .unwrap(),
        "the task is queued, not running"
    );
    assert!(store.list_assignments("t-c").await.unwrap().is_empty());
    assert!(
        store
            .update_task_if_then(&assigned, &[TaskState::Queued], &[assignment(1)])
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_task("t-c").await.unwrap().unwrap().state,
        TaskState::Assigned
    );
    let attempts: Vec<u32> = store
        .list_assignments("t-c")
        .await
        .unwrap()
        .iter()
        .map(|a| a.attempt)
        .collect();
    assert_eq!(attempts, [1]);
}
