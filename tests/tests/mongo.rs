//! The master on MongoDB (an `nx-27017` wire-protocol server): the core loop
//! works, what the REPL shows is what a separate client reads from the five
//! collections, and history survives a master restart.

use cloudai_e2e::{Master, MasterOptions, TEST_IMAGE, WAIT, Worker, free_port};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use std::process::{Child, Command, Stdio};

struct MongoServer {
    child: Child,
    uri: &'static str,
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mongo_server(dir: &std::path::Path) -> MongoServer {
    let port = free_port();
    let child = Command::new("nx-27017")
        .args(["--db"])
        .arg(dir.join("mongo.db"))
        .args(["--host", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nx-27017 (scripts/test.sh installs it)");
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nx-27017 did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // MasterOptions takes static flags; a test leaks one short string.
    let uri =
        Box::leak(format!("mongodb://127.0.0.1:{port}/?directConnection=true").into_boxed_str());
    MongoServer { child, uri }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_runs_on_mongodb_and_stores_what_the_repl_shows() {
    let dir = tempfile::tempdir().unwrap();
    let mongo = mongo_server(dir.path());
    let options = MasterOptions {
        grpc_port: free_port(),
        extra: vec!["--mongodb-uri", mongo.uri],
        ..MasterOptions::default()
    };
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
    let tasks = read_all(mongo.uri, "TASKS").await;
    let stored = tasks
        .iter()
        .find(|t| t.get_str("id") == Ok(task.as_str()))
        .expect("the task in TASKS");
    assert_eq!(stored.get_str("state").unwrap(), "failed");
    assert_eq!(stored.get_i32("exit_code").unwrap(), 3);
    let results = read_all(mongo.uri, "RESULTS").await;
    let result = results
        .iter()
        .find(|r| r.get_str("task_id") == Ok(task.as_str()))
        .expect("its result");
    assert!(result.get_str("log").unwrap().contains("hello-mongo"));
    let assignments = read_all(mongo.uri, "ASSIGNMENTS").await;
    assert!(
        assignments
            .iter()
            .any(|a| a.get_str("task_id") == Ok(task.as_str())
                && a.get_str("worker_id") == Ok(worker.id.as_str()))
    );
    let workers = read_all(mongo.uri, "WORKER_REGISTRY").await;
    let registered = workers
        .iter()
        .find(|w| w.get_str("id") == Ok(worker.id.as_str()))
        .expect("the worker");
    assert!(
        registered.get_str("cert_fingerprint").is_ok(),
        "its certificate binding is stored"
    );
    assert!(
        !read_all(mongo.uri, "USERS").await.is_empty(),
        "the harness's admin user"
    );

    // History and registry survive a master restart on the same database.
    master.kill9();
    let mut master = Master::start(&data, &options);
    master.poll("workers", &[&worker.id, "active"], WAIT);
    let from = master.send(&format!("logs {task}"));
    master.wait_from(from, "hello-mongo", WAIT);
}
