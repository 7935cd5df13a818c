//! Security end to end: join tokens, certificates, revocation, API tokens and
//! roles, plaintext and oversized requests, and secrets kept out of logs.

use cloudai_e2e::{
    Master, MasterOptions, TEST_IMAGE, WAIT, Worker, WorkerOptions, free_port, unique, with_token,
};
use cloudai_proto::v1::master_agent_client::MasterAgentClient;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use cloudai_proto::v1::{GetClusterStateRequest, Heartbeat, SubmitTaskRequest, Task};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn worker_identity(worker: &Worker) -> Identity {
    let read =
        |name: &str| std::fs::read_to_string(worker.data_dir.join("tls").join(name)).unwrap();
    Identity::from_pem(read("worker.crt"), read("worker.key"))
}

fn echo_task() -> Task {
    Task {
        image: TEST_IMAGE.into(),
        command: vec!["echo".into(), "hi".into()],
        ..Default::default()
    }
}

#[test]
fn bad_join_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = MasterOptions {
        extra: vec!["--join-token-ttl", "2s"],
        ..MasterOptions::default()
    };
    let mut master = Master::start(&dir.path().join("master"), &options);
    let master_addr = Some(master.grpc_addr.clone());

    // No token at all: the worker says what to do and exits.
    let id = unique("nt");
    let output = Worker::start_failing(
        &id,
        dir.path(),
        &WorkerOptions {
            master: master_addr.clone(),
            ..WorkerOptions::default()
        },
    );
    assert!(output.contains(&format!("run `register {id}")), "{output}");

    // A token for another worker id.
    let (a, b) = (unique("ta"), unique("tb"));
    let token_a = master
        .register(&a, &format!("127.0.0.1:{}", free_port()))
        .unwrap();
    master.register(&b, &format!("127.0.0.1:{}", free_port()));
    let options = WorkerOptions {
        master: master_addr.clone(),
        token: Some(token_a.clone()),
        ..WorkerOptions::default()
    };
    let output = Worker::start_failing(&b, dir.path(), &options);
    assert!(output.contains(&format!("is for worker '{a}'")), "{output}");

    // A forged secret for a real id.
    let prefix = &token_a[..token_a.len() - a.len() - 65];
    let forged = format!("{prefix}{}.{a}", "0".repeat(64));
    let options = WorkerOptions {
        master: master_addr.clone(),
        token: Some(forged),
        ..WorkerOptions::default()
    };
    let output = Worker::start_failing(&a, dir.path(), &options);
    assert!(output.contains("not valid or was already used"), "{output}");

    // A token used once cannot be used again.
    let port = free_port();
    let c = unique("tc");
    let token_c = master.register(&c, &format!("127.0.0.1:{port}")).unwrap();
    let first = Worker::start(
        &c,
        dir.path(),
        &WorkerOptions {
            port,
            master: master_addr.clone(),
            token: Some(token_c.clone()),
            ..WorkerOptions::default()
        },
    );
    master.poll("workers", &[&c, "active"], WAIT);
    let other_dir = tempfile::tempdir().unwrap();
    let options = WorkerOptions {
        master: master_addr.clone(),
        token: Some(token_c),
        ..WorkerOptions::default()
    };
    let output = Worker::start_failing(&c, other_dir.path(), &options);
    assert!(output.contains("not valid or was already used"), "{output}");
    drop(first);

    // An expired token (the master was started with --join-token-ttl 2s).
    let d = unique("td");
    let token_d = master
        .register(&d, &format!("127.0.0.1:{}", free_port()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let options = WorkerOptions {
        master: master_addr,
        token: Some(token_d),
        ..WorkerOptions::default()
    };
    let output = Worker::start_failing(&d, dir.path(), &options);
    assert!(output.contains("expired"), "{output}");
    // `certs` shows the expired token, and `join-token` makes a fresh one.
    master.poll("certs", &[&d, "expired"], WAIT);
    master.expect(&format!("join-token {d}"), "join token (single use");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_bind_workers_and_other_cas_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let a = Worker::join(&mut master, "ca", dir.path());
    let b = Worker::join(&mut master, "cb", dir.path());

    // Worker a's certificate cannot speak for worker b.
    let mut as_a = MasterServiceClient::new(master.grpc_channel(Some(worker_identity(&a))).await);
    let status = as_a
        .send_heartbeat(Heartbeat {
            worker_id: b.id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a's certificate claiming to be b");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    as_a.send_heartbeat(Heartbeat {
        worker_id: a.id.clone(),
        ..Default::default()
    })
    .await
    .expect("a speaking for itself");

    // No client certificate: Unauthenticated.
    let mut anonymous = MasterServiceClient::new(master.grpc_channel(None).await);
    let status = anonymous
        .send_heartbeat(Heartbeat {
            worker_id: a.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // A worker certificate from another cluster's CA fails the TLS handshake.
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = Master::start(&other_dir.path().join("master"), &MasterOptions::default());
    let stranger = Worker::join(&mut other, "cx", other_dir.path());
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(master.ca_pem()))
        .identity(worker_identity(&stranger))
        .domain_name("127.0.0.1");
    let endpoint = Channel::from_shared(format!("https://{}", master.grpc_addr))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let refused = match endpoint.connect().await {
        Err(_) => true,
        Ok(channel) => MasterServiceClient::new(channel)
            .send_heartbeat(Heartbeat {
                worker_id: a.id.clone(),
                ..Default::default()
            })
            .await
            .is_err(),
    };
    assert!(refused, "a certificate from another CA must be refused");

    // A plaintext client against the TLS port fails cleanly, and the master carries on.
    let plain = Channel::from_shared(format!("http://{}", master.grpc_addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(plain) = plain {
        let result = MasterServiceClient::new(plain)
            .send_heartbeat(Heartbeat {
                worker_id: a.id.clone(),
                ..Default::default()
            })
            .await;
        assert!(result.is_err(), "plaintext must not be served");
    }
    master.poll("status", &["workers: 2 active"], WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_and_roles_guard_the_agent_api_and_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let _worker = Worker::join(&mut master, "ra", dir.path());
    let viewer = master.api_token("viewer");
    let operator = master.api_token("operator");
    let mut agent = MasterAgentClient::new(master.grpc_channel(None).await);

    let status = agent
        .get_cluster_state(GetClusterStateRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let state = agent
        .get_cluster_state(with_token(GetClusterStateRequest {}, &viewer))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.workers.len(), 1);
    let submit = SubmitTaskRequest {
        task: Some(echo_task()),
        ..Default::default()
    };
    let status = agent
        .submit_task(with_token(submit.clone(), &viewer))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "a viewer must not submit: {status:?}"
    );
    let submitted = agent
        .submit_task(with_token(submit, &operator))
        .await
        .expect("an operator submits")
        .into_inner();
    assert!(submitted.task_id.starts_with("t-"));

    // WebSocket and metrics need a token; a wrong one is refused too.
    assert!(master.websocket("/ws/telemetry", None).await.is_err());
    assert!(
        master
            .websocket("/ws/telemetry", Some("cat1.00000000.nope"))
            .await
            .is_err()
    );
    let mut ws = master
        .websocket("/ws/telemetry", Some(&viewer))
        .await
        .expect("a viewer may watch");
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
    assert_eq!(master.http_get("/metrics", None).await.0, 401);
    assert_eq!(master.http_get("/metrics", Some(&viewer)).await.0, 200);
    assert_eq!(
        master
            .http_get(&format!("/metrics?token={viewer}"), None)
            .await
            .0,
        200
    );

    // An oversized WebSocket message closes that socket only.
    let _ = ws.send(Message::text("x".repeat(200 * 1024))).await;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an oversized frame must end the connection");

    // An oversized gRPC message is refused; the master keeps serving.
    let huge = Task {
        image: TEST_IMAGE.into(),
        command: vec!["x".repeat(5 << 20)],
        ..Default::default()
    };
    let status = agent
        .submit_task(with_token(
            SubmitTaskRequest {
                task: Some(huge),
                ..Default::default()
            },
            &operator,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // A body that is not the request's message is the client's error too.
    let mut raw = tonic::client::Grpc::new(master.grpc_channel(None).await);
    raw.ready().await.unwrap();
    let wrong = cloudai_proto::v1::ResourceLimits {
        nano_cpus: 5,
        ..Default::default()
    };
    let status =
        raw
            .unary(
                with_token(wrong, &operator),
                "/cloudai.v1.MasterAgent/GetTask".parse().unwrap(),
                tonic_prost::ProstCodec::<
                    cloudai_proto::v1::ResourceLimits,
                    cloudai_proto::v1::TaskView,
                >::default(),
            )
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed request"), "{status:?}");
    let mut agent = MasterAgentClient::new(master.grpc_channel(None).await);
    agent
        .get_cluster_state(with_token(GetClusterStateRequest {}, &viewer))
        .await
        .expect("still serving");

    // Revoked tokens stop working at once.
    let token_id = viewer.split('.').nth(1).unwrap().to_string();
    master.expect(&format!("token revoke {token_id}"), "revoked");
    let status = agent
        .get_cluster_state(with_token(GetClusterStateRequest {}, &viewer))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Repeated failures from one address are rate limited.
    let mut last = Code::Ok;
    for _ in 0..15 {
        last = agent
            .get_cluster_state(with_token(GetClusterStateRequest {}, "cat1.00000000.bad"))
            .await
            .unwrap_err()
            .code();
    }
    assert_eq!(last, Code::ResourceExhausted);
}

#[test]
fn logs_of_a_whole_run_hold_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let worker = Worker::join(&mut master, "ls", dir.path());
    let token = master.api_token("operator");
    let join_token = master
        .register(&unique("lz"), &format!("127.0.0.1:{}", free_port()))
        .unwrap();
    master.submit(&format!("task {} {TEST_IMAGE} -- echo logged", worker.id));
    master.poll("tasks", &["completed"], WAIT);
    let logs = format!("{}\n{}", master.log(), worker.log());
    let secrets = [
        token.as_str(),
        token.rsplit('.').next().unwrap(),
        join_token.as_str(),
        join_token.split('.').nth(2).unwrap(),
        "PRIVATE KEY",
        master.token.as_deref().unwrap(),
    ];
    for secret in secrets {
        assert!(
            !logs.contains(secret),
            "a log line holds secret material ({}…)",
            &secret[..8.min(secret.len())]
        );
    }
    // Key files are readable by their owner only.
    #[cfg(unix)]
    for path in [
        master.data_dir.join("tls/ca.key"),
        master.data_dir.join("tls/master.key"),
        worker.data_dir.join("tls/worker.key"),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}

#[test]
fn worker_certificates_renew_before_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let options = MasterOptions {
        extra: vec!["--worker-cert-validity", "15s"],
        ..MasterOptions::default()
    };
    let mut master = Master::start(&dir.path().join("master"), &options);
    let worker = Worker::join(&mut master, "rn", dir.path());
    let first = std::fs::read_to_string(worker.data_dir.join("tls/worker.crt")).unwrap();
    // Renewal starts after two thirds of the lifetime (about 10s here).
    worker.wait_log("certificate renewed", Duration::from_secs(40));
    let renewed = std::fs::read_to_string(worker.data_dir.join("tls/worker.crt")).unwrap();
    assert_ne!(first, renewed, "a new certificate is stored");
    // Still trusted both ways: heartbeats accepted, and the master reaches the
    // worker's restarted server with its new certificate.
    worker.wait_log(
        "restarting the gRPC server with the renewed certificate",
        WAIT,
    );
    master.poll("workers", &[&worker.id, "active"], WAIT);
    let task = master.submit(&format!("task {} {TEST_IMAGE} -- echo renewed", worker.id));
    master.poll("tasks", &[&task, "completed"], WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_needs_the_workers_own_certificate() {
    use cloudai_proto::v1::{RegisterWorkerRequest, WorkerInfo};
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let a = Worker::join(&mut master, "ra", dir.path());
    let b = Worker::join(&mut master, "rb", dir.path());
    let claim = |id: &str, address: &str| RegisterWorkerRequest {
        info: Some(WorkerInfo {
            worker_id: id.into(),
            address: address.into(),
            cpu_count: 512,
            ..Default::default()
        }),
        task_ids: vec![],
    };
    // Without a certificate, even the registered id and address are refused.
    let mut anonymous = MasterServiceClient::new(master.grpc_channel(None).await);
    let status = anonymous
        .register_worker(claim(&a.id, &a.address))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // With another worker's certificate too.
    let mut as_b = MasterServiceClient::new(master.grpc_channel(Some(worker_identity(&b))).await);
    let status = as_b
        .register_worker(claim(&a.id, &a.address))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // Nothing the impostors claimed was taken.
    let row = master.poll("workers", &[&a.id, "active"], WAIT);
    assert!(!row.contains(" 512 "), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_itself_refuses_a_token_for_another_worker() {
    use cloudai_proto::v1::JoinClusterRequest;
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let (a, b) = (unique("ja"), unique("jb"));
    let port_a = free_port();
    let token_a = master.register(&a, &format!("127.0.0.1:{port_a}")).unwrap();
    master.register(&b, &format!("127.0.0.1:{}", free_port()));
    // A client that skips the worker's own check: the master refuses too.
    let mut client = MasterServiceClient::new(master.grpc_channel(None).await);
    let request = JoinClusterRequest {
        worker_id: b.clone(),
        token: token_a.clone(),
        csr_der: b"not used".to_vec(),
    };
    let status = client.join_cluster(request).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains(&format!("is for worker '{a}'")),
        "{}",
        status.message()
    );
    // A malformed CSR with a valid token is refused clearly and does not use up the token.
    let request = JoinClusterRequest {
        worker_id: a.clone(),
        token: token_a.clone(),
        csr_der: b"garbage".to_vec(),
    };
    let status = client.join_cluster(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let options = WorkerOptions {
        port: port_a,
        master: Some(master.grpc_addr.clone()),
        token: Some(token_a),
        ..WorkerOptions::default()
    };
    let worker = Worker::start(&a, dir.path(), &options);
    master.poll("workers", &[&worker.id, "active"], WAIT);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_token_ends_its_open_streams() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let viewer = master.api_token("viewer");
    let other = master.api_token("viewer");
    let mut agent = MasterAgentClient::new(master.grpc_channel(None).await);
    let request = cloudai_proto::v1::StreamEventsRequest {
        include_telemetry: false,
    };
    let mut events = agent
        .stream_events(with_token(request, &viewer))
        .await
        .expect("a viewer may stream events")
        .into_inner();
    let mut kept = agent
        .stream_events(with_token(request, &other))
        .await
        .unwrap()
        .into_inner();
    let mut ws = master
        .websocket("/ws/telemetry", Some(&viewer))
        .await
        .expect("a viewer may watch");
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));

    let token_id = viewer.split('.').nth(1).unwrap().to_string();
    master.expect(&format!("token revoke {token_id}"), "revoked");

    let ended = tokio::time::timeout(WAIT, events.message())
        .await
        .expect("the event stream ends at once");
    let status = ended.expect_err("with an error");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.reason.to_string()),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the WebSocket closes at once");
    assert_eq!(closed.as_deref(), Some("the API token was revoked"));
    // Another user's stream goes on: a submitted task still shows up on it.
    let operator = master.api_token("operator");
    agent
        .submit_task(with_token(
            SubmitTaskRequest {
                task: Some(echo_task()),
                ..Default::default()
            },
            &operator,
        ))
        .await
        .unwrap();
    let next = tokio::time::timeout(WAIT, kept.message()).await.unwrap();
    assert!(matches!(next, Ok(Some(_))), "{next:?}");
}
