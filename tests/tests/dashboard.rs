//! The web dashboard in a real browser: headless Chromium driven through
//! chromedriver (WebDriver, `fantoccini`) against a real master with TLS and
//! real workers. Screenshots of every step are saved under
//! `target/dashboard-screenshots/` as test artifacts.

use cloudai_e2e::{Master, MasterOptions, TEST_IMAGE, WAIT, Worker, free_port};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// chromedriver with one headless Chromium session; both stopped on drop.
struct Browser {
    driver: Child,
    client: Option<Client>,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session's Chromium is a child of chromedriver; killing the
        // driver's process group would be harsher than needed: ask it first.
        if let Some(client) = self.client.take() {
            let close = async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
            };
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(close)
            })
            .join();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start(name: &str) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver; scripts/test.sh installs it)");
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut browser = Browser {
            driver,
            client: None,
            shots: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/dashboard-screenshots")
                .join(name),
        };
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1200",
                         // The master's certificate comes from the cluster's own CA.
                         "--ignore-certificate-errors"]
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        browser.client = Some(client);
        std::fs::create_dir_all(&browser.shots).unwrap();
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Clicks the element `css` selects.
    async fn click(&self, css: &str) {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Saves a screenshot as `<step>.png`.
    async fn shot(&self, step: &str) {
        let png = self.client().screenshot().await.expect("a screenshot");
        std::fs::write(self.shots.join(format!("{step}.png")), png).unwrap();
    }

    /// Evaluates `script` (a function body) until it returns something other
    /// than null/false; returns that value.
    async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self
                .client()
                .execute(script, vec![])
                .await
                .unwrap_or(Value::Null);
            if !matches!(value, Value::Null | Value::Bool(false)) {
                return value;
            }
            if Instant::now() > deadline {
                let page = self
                    .client()
                    .execute("return document.body.innerText", vec![])
                    .await
                    .unwrap_or(Value::Null);
                self.shot(&format!("timeout-{}", what.replace(' ', "-")))
                    .await;
                panic!("the page never showed {what}; it shows:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("Chromium (Debian chromium; scripts/test.sh installs it)")
}

fn card(worker: &str, expression: &str) -> String {
    format!(
        "const c = document.querySelector('article.worker[data-worker-id=\"{worker}\"]'); \
         if (!c) return null; return {expression};"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_live() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("master");
    let options = MasterOptions {
        grpc_port: free_port(),
        http_port: free_port(),
        ..MasterOptions::default()
    };
    let mut master = Master::start(&data, &options);
    let token = master
        .token
        .clone()
        .expect("TLS is on: the harness made a token");
    let worker = Worker::join(&mut master, "dash", dir.path());
    let mut doomed = Worker::join(&mut master, "dash", dir.path());
    let browser = Browser::start("live").await;
    let url = format!("https://{}/", master.http_addr);

    // With security on the page asks for a token, then goes live over WSS.
    browser.client().goto(&url).await.unwrap();
    browser
        .wait_for(
            "the token prompt",
            "return !document.querySelector('#token-form').hidden",
        )
        .await;
    browser.shot("01-token-prompt").await;
    let input = browser
        .client()
        .find(Locator::Css("#token-input"))
        .await
        .unwrap();
    input.send_keys(&token).await.unwrap();
    browser
        .client()
        .find(Locator::Css("#token-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_for(
            "the live connection",
            "return document.querySelector('#connection').dataset.state === 'live'",
        )
        .await;

    // The worker grid shows live numbers that change between heartbeats.
    let first = browser
        .wait_for(
            "the worker's metrics",
            &card(
                &worker.id,
                "c.dataset.sampledAt && [c.dataset.sampledAt, c.querySelector('.cpu-value').textContent]",
            ),
        )
        .await;
    let first_sample = first[0].as_str().unwrap().to_string();
    assert!(first[1].as_str().unwrap().contains('%'), "{first}");
    let later = browser
        .wait_for(
            "a newer heartbeat",
            &card(
                &worker.id,
                &format!("c.dataset.sampledAt !== '{first_sample}' && c.dataset.sampledAt"),
            ),
        )
        .await;
    assert!(
        later.as_str().unwrap().parse::<u64>().unwrap() > first_sample.parse::<u64>().unwrap(),
        "{later} after {first_sample}"
    );
    let memory = browser
        .wait_for(
            "the memory meter",
            &card(
                &worker.id,
                "c.querySelectorAll('.meter .num')[1].textContent",
            ),
        )
        .await;
    assert!(memory.as_str().unwrap().contains("GiB"), "{memory}");
    browser
        .wait_for(
            "the header counts",
            "return document.querySelector('[data-stat=\"workers-active\"]').textContent === '2'",
        )
        .await;
    browser.shot("02-workers").await;

    // A task appears in the table, and its view follows the output live.
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} --shm-size 128m --tmpfs /scratch -- sh -c 'for i in 1 2 3 4 5 6; do echo dash-line-$i; sleep 1; done'",
        worker.id
    ));
    let row = format!("#tasks tbody tr[data-task-id=\"{task}\"]");
    browser
        .wait_for(
            "the task's row",
            &format!("return document.querySelector('{row}') !== null"),
        )
        .await;
    browser
        .wait_for(
            "the task running",
            &format!("const r = document.querySelector('{row}'); return r && r.dataset.state === 'running'"),
        )
        .await;
    browser
        .client()
        .find(Locator::Css(&row))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let status = browser
        .wait_for(
            "live output",
            "const log = document.querySelector('#task-log').textContent; \
             return log.includes('dash-line-2') && document.querySelector('#task-log-status').textContent",
        )
        .await;
    assert!(
        status.as_str().unwrap().contains("live"),
        "the log tail is followed while the task runs: {status}"
    );
    browser.shot("03-task-live-log").await;
    browser
        .wait_for(
            "the container options in the task's details",
            "const d = (f) => document.querySelector(`#task-details [data-field=\"${f}\"]`); \
             return d('container') && d('mounts') \
             && d('container').textContent.includes('shm 128') \
             && d('mounts').textContent.includes('tmpfs → /scratch')",
        )
        .await;
    browser
        .wait_for(
            "the finished task's stored log",
            "return document.querySelector('#task-view').dataset.state === 'completed' \
             && document.querySelector('#task-log').textContent.includes('dash-line-6')",
        )
        .await;
    browser
        .wait_for(
            "the task completed in the table",
            &format!("const r = document.querySelector('{row}'); return r && r.dataset.state === 'completed'"),
        )
        .await;
    browser
        .wait_for(
            "the running task on the worker card",
            &card(
                &worker.id,
                "c.querySelector('footer').textContent.includes('idle')",
            ),
        )
        .await;
    browser.shot("04-task-finished").await;

    // A pull in progress shows in the task's row and its details: an image
    // from a registry that is not up is retried with backoff, and says so.
    let absent = format!("127.0.0.1:{}/team/absent:v1", free_port());
    let pulling = master.submit(&format!(
        "task {} {absent} --pull always -- true",
        worker.id
    ));
    let row = format!("#tasks tbody tr[data-task-id=\"{pulling}\"]");
    let text = browser
        .wait_for(
            "the pull's progress in the task's row",
            &format!(
                "const c = document.querySelector('{row} td.progress'); \
                 return c && c.textContent.includes('retrying in') && c.textContent"
            ),
        )
        .await;
    assert!(
        text.as_str()
            .unwrap()
            .contains(&format!("{} · pulling: retrying in", worker.id)),
        "{text}"
    );
    browser.click(&row).await;
    browser
        .wait_for(
            "the pull's progress in the task's details",
            "const d = document.querySelector('#task-details dd[data-field=\"pulling\"]'); \
             return d && d.textContent.startsWith('pulling')",
        )
        .await;
    browser.shot("04b-task-pulling").await;
    master.expect(&format!("cancel {pulling}"), "stop requested");
    browser
        .wait_for(
            "the cancelled pull in the table",
            &format!("const r = document.querySelector('{row}'); return r && r.dataset.state === 'cancelled'"),
        )
        .await;

    // A task with more output than its tail, followed live (the page keeps up
    // with its 100,000 lines), offers the whole output once it ended.
    let large = master.submit(&format!(
        "task {} {TEST_IMAGE} -- sh -c 'sleep 5; seq 1 100000'",
        worker.id
    ));
    let row = format!("#tasks tbody tr[data-task-id=\"{large}\"]");
    browser
        .wait_for(
            "the large task running in the table",
            &format!("const r = document.querySelector('{row}'); return r && r.dataset.state === 'running'"),
        )
        .await;
    browser.click(&row).await;
    browser
        .wait_for(
            "the large task followed live",
            "return document.querySelector('#task-log-status').textContent === '(live)'",
        )
        .await;
    // When it ends the view turns to the stored output, which offers the whole.
    let status = browser
        .wait_for(
            "the download button once the task ended",
            "return !document.querySelector('#task-log-download').hidden \
             && document.querySelector('#task-log-status').textContent",
        )
        .await;
    assert!(
        status.as_str().unwrap().contains("of 575 KiB"),
        "the status names the whole size (588,895 bytes): {status}"
    );
    browser.shot("04b-large-output").await;

    // A killed worker turns inactive on the page.
    doomed.kill9();
    browser
        .wait_for(
            "the killed worker greyed out",
            &card(
                &doomed.id,
                "c.classList.contains('inactive') && c.querySelector('.age').textContent.includes('silent for')",
            ),
        )
        .await;
    browser
        .wait_for(
            "one inactive worker in the header",
            "return document.querySelector('[data-stat=\"workers-inactive\"]').textContent === '1'",
        )
        .await;
    browser.shot("05-worker-inactive").await;

    // GPU rows: this machine has no GPU, so the page is handed one telemetry
    // message shaped like the H200 sample in docs/WEBSOCKET_TELEMETRY.md
    // (the rendering path only; NVML itself is checked on a GPU host).
    browser
        .client()
        .execute(
            "handle({type: 'telemetry', worker_id: 'gpu-sample', metrics: {sampled_at: 1, \
               cpu_percent: 12.5, cpu_count: 64, load_average_1m: 3, memory_used_bytes: 2**34, \
               memory_total_bytes: 2**39, disk_used_bytes: 0, disk_total_bytes: 0, \
               running_task_ids: ['t-gpu'], gpus: [{index: 0, uuid: 'GPU-f565c51d', \
               name: 'NVIDIA H200', utilization_percent: 87, memory_used_bytes: 75e9, \
               memory_total_bytes: 150754820096, temperature_celsius: 61, power_watts: 420, \
               task_id: 't-gpu'}]}});",
            vec![],
        )
        .await
        .unwrap();
    let gpu = browser
        .wait_for(
            "the GPU meters",
            &card(
                "gpu-sample",
                "[...c.querySelectorAll('.gpu .num')].map(n => n.textContent).join(' | ') \
                 + ' | ' + c.querySelector('.gpu-name').textContent",
            ),
        )
        .await;
    assert_eq!(
        gpu.as_str().unwrap(),
        "87% | 69.8 GiB / 140 GiB | 61 °C | 0: NVIDIA H200 · held by t-gpu",
    );
    browser.shot("05b-gpu-rows").await;

    // The page survives a master restart: it says it is reconnecting, then
    // resyncs from the new snapshot.
    master.kill9();
    browser
        .wait_for(
            "the reconnecting notice",
            "return document.querySelector('#connection').dataset.state === 'reconnecting'",
        )
        .await;
    browser.shot("06-reconnecting").await;
    let mut master = Master::start(&data, &options);
    browser
        .wait_for(
            "the live connection again",
            "return document.querySelector('#connection').dataset.state === 'live'",
        )
        .await;
    browser
        .wait_for(
            "the worker back after the restart",
            &card(&worker.id, "c.dataset.state === 'active'"),
        )
        .await;
    browser
        .wait_for(
            "the task history after the restart",
            &format!("return document.querySelector('{row}') !== null"),
        )
        .await;
    browser.shot("07-after-restart").await;
    master.expect("status", "workers:");
}

/// The dashboard's API over real HTTPS: assets without a token, data only with
/// one, bad input answered with a clear JSON error, no task environment shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_api_checks_tokens_and_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let viewer = master.api_token("viewer");
    let token = Some(viewer.as_str());

    let (status, head, page) = master.http_response("/", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("/dashboard/app.js"), "{page}");
    assert!(
        head.to_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    let (status, script) = master.http_get("/dashboard/app.js", None).await;
    assert_eq!(status, 200);
    assert!(script.contains("/ws/telemetry"));

    for path in [
        "/api/cluster",
        "/api/tasks",
        "/api/tasks/t-1",
        "/api/tasks/t-1/log",
    ] {
        let (status, body) = master.http_get(path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    let (status, body) = master.http_get("/api/cluster", token).await;
    assert_eq!(status, 200, "{body}");
    let cluster: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cluster["store_healthy"], true, "{cluster}");
    assert_eq!(cluster["tasks"]["queued"], 0, "{cluster}");

    let task = master.submit(&format!(
        "task auto {TEST_IMAGE} --env SECRET_KEY=hunter2 -- true"
    ));
    let (status, body) = master.http_get("/api/tasks?state=queued", token).await;
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listed["tasks"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["tasks"][0]["id"], task.as_str());
    assert_eq!(
        listed["next_cursor"],
        Value::Null,
        "one page holds it: {listed}"
    );
    assert!(
        !body.contains("hunter2"),
        "environments are never sent: {body}"
    );
    let (status, body) = master.http_get(&format!("/api/tasks/{task}"), token).await;
    assert_eq!(status, 200, "{body}");
    let one: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(one["task"]["state"], "queued");
    assert_eq!(one["log"], Value::Null);
    let (status, body) = master
        .http_get(&format!("/api/tasks/{task}/log"), token)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("stored when it ends"), "{body}");

    for (path, status, needle) in [
        ("/api/tasks?state=sleeping", 400, "unknown state 'sleeping'"),
        (
            "/api/tasks?limit=0",
            400,
            "limit must be between 1 and 1000",
        ),
        ("/api/tasks?worker=bad%20id", 400, "worker"),
        ("/api/tasks/t-nope", 404, "no task 't-nope'"),
        ("/api/tasks/t-nope/log", 404, "no task 't-nope'"),
    ] {
        let (got, body) = master.http_get(path, token).await;
        assert_eq!(got, status, "{path}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
}
