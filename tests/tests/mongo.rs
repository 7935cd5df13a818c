//! The master on MongoDB (an `nx-27017` wire-protocol server): the core loop
//! works, what the REPL shows is what a separate client reads from the five
//! collections (and `LOG_CHUNKS`), and history survives a master restart.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use cloudai_e2e::{Master, MasterOptions, MongoServer, TEST_IMAGE, WAIT, Worker, free_port};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};

/// Options for a master on `mongo` (flags take static strings; a test leaks one).
fn on_mongodb(mongo: &MongoServer) -> MasterOptions {
    let uri: &'static str = Box::leak(mongo.uri.clone().into_boxed_str());
    MasterOptions {
        grpc_port: free_port(),
        extra: vec!["--mongodb-uri", uri],
        ..MasterOptions::default()
    }
}

async fn read_all(uri: &str, collection: &str) -> Vec<Document> {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let cursor = client
        .database("cloudai")
        .collection::<Document>(collection)
        .find(doc! {})
        .await
        .unwrap();
    cursor.try_collect().await.unwrap()
}

/// The one document of `collection` whose `field` is `value`, read with a
/// separate client.
async fn read_one(uri: &str, collection: &str, field: &str, value: &str) -> Document {
    read_all(uri, collection)
        .await
        .into_iter()
        .find(|d| d.get_str(field) == Ok(value))
        .unwrap_or_else(|| panic!("no {collection} document with {field} = {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_runs_on_mongodb_and_stores_what_the_repl_shows() {
    let dir = tempfile::tempdir().unwrap();
    let mongo = MongoServer::start(&dir.path().join("mongo"));
    let options = on_mongodb(&mongo);
    let data = dir.path().join("master");
    let mut master = Master::start(&data, &options);
    let line = master.expect("status", "store:   MongoDB mongodb://127.0.0.1");
    assert!(line.ends_with("(healthy)"), "{line}");
    let worker = Worker::join(&mut master, "mg", dir.path());
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} -- sh -c 'echo hello-mongo; exit 3'",
        worker.id
    ));
    let row = master.poll("tasks", &[&task, "failed", "busybox"], WAIT);
    assert!(row.contains(" 3 "), "{row}");

    // A separate client sees the same facts in the five collections.
    let stored = read_one(&mongo.uri, "TASKS", "id", &task).await;
    assert_eq!(stored.get_str("state").unwrap(), "failed");
    assert_eq!(stored.get_i32("exit_code").unwrap(), 3);
    let result = read_one(&mongo.uri, "RESULTS", "task_id", &task).await;
    assert!(result.get_str("log").unwrap().contains("hello-mongo"));
    let assignments = read_all(&mongo.uri, "ASSIGNMENTS").await;
    assert!(
        assignments
            .iter()
            .any(|a| a.get_str("task_id") == Ok(task.as_str())
                && a.get_str("worker_id") == Ok(worker.id.as_str()))
    );
    let registered = read_one(&mongo.uri, "WORKER_REGISTRY", "id", &worker.id).await;
    assert!(
        registered.get_str("cert_fingerprint").is_ok(),
        "its certificate binding is stored"
    );
    assert!(
        !read_all(&mongo.uri, "USERS").await.is_empty(),
        "the harness's admin user"
    );

    // History and registry survive a master restart on the same database.
    master.kill9();
    let mut master = Master::start(&data, &options);
    master.poll("workers", &[&worker.id, "active"], WAIT);
    let from = master.send(&format!("logs {task}"));
    master.wait_from(from, "hello-mongo", WAIT);
}

/// The store goes away mid-task: the master keeps serving from memory, shows
/// the store as unhealthy, and once the store is back every transition the
/// task went through while it was gone is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_mid_task_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut mongo = MongoServer::start(&dir.path().join("mongo"));
    let mut master = Master::start(&dir.path().join("master"), &on_mongodb(&mongo));
    let worker = Worker::join(&mut master, "mo", dir.path());
    // A large output (more than a result's tail) finishes first: its upload
    // fails while the store is down and is retried, without holding up the
    // other task's result.
    let lines = 100_000;
    let large = master.submit(&format!(
        "task {} {TEST_IMAGE} -- sh -c 'sleep 2; seq 1 {lines}'",
        worker.id
    ));
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} -- sh -c 'echo started; sleep 4; echo survived-outage'",
        worker.id
    ));
    master.poll("tasks", &[&task, "running"], WAIT);
    master.poll("tasks", &[&large, "running"], WAIT);

    mongo.stop();
    // The task finishes while the store is down; the REPL still answers.
    master.poll("tasks", &[&task, "completed"], WAIT);
    worker.wait_log(&format!("cannot upload the output of {large}"), WAIT);
    let row = master.poll("tasks", &[&large], WAIT);
    assert!(
        row.contains("running"),
        "its result waits for its output: {row}"
    );
    master.poll("status", &["store:", "UNREACHABLE", "held in memory"], WAIT);
    let from = master.send(&format!("logs {task}"));
    master.wait_from(from, "survived-outage", WAIT);

    mongo.resume();
    master.poll("status", &["store:", "(healthy)"], WAIT);
    let stored = read_one(&mongo.uri, "TASKS", "id", &task).await;
    assert_eq!(stored.get_str("state").unwrap(), "completed");
    assert_eq!(stored.get_i32("exit_code").unwrap(), 0);
    // Its result was written after the outage.
    let result = read_one(&mongo.uri, "RESULTS", "task_id", &task).await;
    assert!(result.get_str("log").unwrap().contains("survived-outage"));

    // Once the store is back the large output is uploaded and stored whole.
    master.poll("tasks", &[&large, "completed"], WAIT);
    let mut chunks: Vec<Document> = read_all(&mongo.uri, "LOG_CHUNKS")
        .await
        .into_iter()
        .filter(|c| c.get_str("task_id") == Ok(large.as_str()))
        .collect();
    chunks.sort_by_key(|c| c.get_i32("seq").unwrap());
    let mut stored = Vec::new();
    for chunk in &chunks {
        let data = chunk.get_str("data_base64").unwrap();
        stored.extend(BASE64.decode(data).expect("base64 chunk data"));
    }
    let expected: String = (1..=lines).map(|n| format!("{n}\n")).collect();
    assert!(
        stored == expected.as_bytes(),
        "LOG_CHUNKS holds {} bytes in {} chunks, expected {}",
        stored.len(),
        chunks.len(),
        expected.len()
    );
    let result = read_one(&mongo.uri, "RESULTS", "task_id", &large).await;
    assert_eq!(result.get_i32("log_chunks").unwrap() as usize, chunks.len());
}

/// Moving a cluster from the embedded store to MongoDB with `export` and
/// `import`: the master on MongoDB knows the worker and the finished task's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_moves_from_the_embedded_store_to_mongodb() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("master");
    let options = MasterOptions {
        grpc_port: free_port(),
        ..MasterOptions::default()
    };
    let mut master = Master::start(&data, &options);
    if cloudai_e2e::store_is_mongodb() {
        return; // this test starts its own masters on both backends
    }
    let worker = Worker::join(&mut master, "mv", dir.path());
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} -- sh -c 'echo moved-with-its-log'",
        worker.id
    ));
    master.poll("tasks", &[&task, "completed"], WAIT);
    master.kill9();

    let file = dir.path().join("cluster.jsonl");
    let mongo = MongoServer::start(&dir.path().join("mongo"));
    let run = |args: &[&std::ffi::OsStr]| {
        let output = std::process::Command::new(cloudai_e2e::bin_dir().join("cloudai-master"))
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "{stderr}");
        stderr
    };
    let exported = run(&["export".as_ref(), file.as_os_str()]);
    assert!(
        exported.contains("1 workers, 1 tasks, 1 assignments, 1 results"),
        "{exported}"
    );
    let imported = run(&[
        "--mongodb-uri".as_ref(),
        mongo.uri.as_ref(),
        "import".as_ref(),
        file.as_os_str(),
    ]);
    assert!(
        imported.contains("1 workers, 1 tasks, 1 assignments, 1 results"),
        "{imported}"
    );
    assert!(imported.contains("into MongoDB"), "{imported}");

    // The same data directory (it keeps the cluster CA) with the store on MongoDB.
    let mut master = Master::start(&data, &on_mongodb(&mongo));
    master.expect("status", "store:   MongoDB");
    master.poll("workers", &[&worker.id, "active"], WAIT);
    let from = master.send(&format!("logs {task}"));
    master.wait_from(from, "moved-with-its-log", WAIT);
}
