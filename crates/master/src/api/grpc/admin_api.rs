//! The `MasterAdmin` gRPC service: what the master's console does, for the
//! `cloudai` CLI. Reads need a viewer token; changes to security state
//! (workers, join tokens, users, tokens, secrets), and reading it, need an
//! admin token. The console calls the same service in-process as the local
//! admin (see [`super::caller`]).

use super::agent_views::{millis_timestamp, progress_message, task_view_for};
use super::caller;
use crate::auth::Auth;
use crate::auth::users::{Caller, Role};
use crate::core::convert;
use crate::core::events::{Event, EventBus};
use crate::core::lifecycle::Lifecycle;
use crate::core::registry::WorkerState;
use crate::core::runtime::{Runtime, Settings};
use crate::core::scheduler::Scheduler;
use crate::core::secrets::Secrets;
use crate::core::tasks::Tasks;
use crate::core::workers::{Registration, Workers};
use crate::error::{MasterError, MasterResult};
use crate::services::{Services, Vitals};
use crate::store::{Store, TaskCursor, TaskQuery, TaskRecord, TaskState, now_millis};
use cloudai_common::ids::{TaskId, WorkerId};
use cloudai_proto::v1::master_admin_server::{MasterAdmin, MasterAdminServer};
use cloudai_proto::v1::task_output::Item;
use cloudai_proto::v1::{
    AddUserRequest, AddUserResponse, AdminRegisterWorkerRequest, AdminRegisterWorkerResponse,
    ApiToken, ClusterStatus, CreateTokenRequest, CreateTokenResponse, GetStatusRequest,
    IssueJoinTokenRequest, IssueJoinTokenResponse, JoinToken, ListCertificatesRequest,
    ListCertificatesResponse, ListSecretsRequest, ListSecretsResponse, ListTasksRequest,
    ListTasksResponse, ListUsersRequest, ListUsersResponse, RemoveSecretRequest,
    RemoveSecretResponse, RemoveUserRequest, RemoveUserResponse, RevokeTokenRequest,
    RevokeTokenResponse, Secret, SetSecretRequest, SetSecretResponse, StreamTaskOutputRequest,
    TaskOutput, TaskStatus, TaskView, UnregisterWorkerRequest, UnregisterWorkerResponse, User,
    WhoAmIRequest, WhoAmIResponse, WorkerCertificate,
};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Most tasks one `ListTasks` answer holds.
pub const MAX_LIST_TASKS: u32 = 10_000;
/// What `ListTasks` answers without a limit.
pub const DEFAULT_LIST_TASKS: u32 = 1_000;
/// How long a followed task's final state may take after its output ends.
const FINAL_STATE_WAIT: Duration = Duration::from_secs(30);
/// How often a followed task is looked at again without an event about it.
const RECHECK: Duration = Duration::from_millis(500);

/// The `MasterAdmin` implementation.
pub struct AdminGrpc {
    auth: Auth,
    settings: Settings,
    runtime: Runtime,
    store: Arc<dyn Store>,
    events: EventBus,
    lifecycle: Lifecycle,
    workers: Workers,
    tasks: Tasks,
    scheduler: Scheduler,
    secrets: Secrets,
    vitals: Vitals,
}

impl AdminGrpc {
    /// The service over the master's services.
    pub fn new(services: &Services) -> Self {
        Self {
            auth: services.auth.clone(),
            settings: services.settings.clone(),
            runtime: services.runtime.clone(),
            store: services.store.clone(),
            events: services.events.clone(),
            lifecycle: services.lifecycle.clone(),
            workers: services.workers.clone(),
            tasks: services.tasks.clone(),
            scheduler: services.scheduler.clone(),
            secrets: services.secrets.clone(),
            vitals: services.vitals.clone(),
        }
    }

    /// A tonic service, with message size limits.
    pub fn service(services: &Services) -> MasterAdminServer<Self> {
        MasterAdminServer::new(Self::new(services))
            .max_decoding_message_size(crate::api::grpc::worker_api::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::api::grpc::worker_api::MAX_MESSAGE_BYTES)
    }

    fn authorize<T>(&self, request: &Request<T>, role: Role) -> Result<Caller, Status> {
        caller(&self.auth, request, role)
    }

    fn view(&self, task: &TaskRecord, role: Role) -> cloudai_proto::v1::TaskView {
        view(&self.lifecycle, &self.scheduler, task, role)
    }

    /// A join token just issued, with what starting its worker needs (the
    /// address and expiry as the registry recorded them).
    fn join_token(&self, worker_id: &str, token: String) -> JoinToken {
        let record = self.workers.registry().get(worker_id).map(|w| w.record);
        JoinToken {
            worker_id: worker_id.to_string(),
            worker_address: record
                .as_ref()
                .map(|r| r.address.clone())
                .unwrap_or_default(),
            token,
            expires_at: record
                .and_then(|r| r.join_token_expires_at)
                .map(millis_timestamp),
            ttl_seconds: self.auth.join_token_ttl().as_secs(),
            master_address: self.workers.address_for_workers("<this-master-host>"),
        }
    }
}

/// A task as `role` may see it, with its pull progress and, while queued,
/// why it waits.
fn view(
    lifecycle: &Lifecycle,
    scheduler: &Scheduler,
    task: &TaskRecord,
    role: Role,
) -> cloudai_proto::v1::TaskView {
    let progress = lifecycle.progress(&task.id);
    let mut view = task_view_for(task, role, progress.as_ref());
    if task.state == TaskState::Queued {
        view.waiting_reason = scheduler.waiting_reason(&task.id).unwrap_or_default();
    }
    view
}

fn worker_id(field: &'static str, value: &str) -> Result<WorkerId, Status> {
    Ok(WorkerId::parse(field, value).map_err(MasterError::from)?)
}

#[tonic::async_trait]
impl MasterAdmin for AdminGrpc {
    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let caller = self.authorize(&request, Role::Viewer)?;
        Ok(Response::new(WhoAmIResponse {
            user: caller.user,
            role: caller.role.as_str().into(),
            token_expires_at: caller.expires_at.map(millis_timestamp),
        }))
    }

    async fn get_status(
        &self,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        self.authorize(&request, Role::Viewer)?;
        let (pending, active, inactive) = self.workers.registry().counts();
        let tasks_by_state = self
            .lifecycle
            .task_counts()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(state, n)| (state.as_str().to_string(), n as u64))
            .collect();
        Ok(Response::new(ClusterStatus {
            workers_active: active as u32,
            workers_inactive: inactive as u32,
            workers_pending: pending as u32,
            tasks_by_state,
            store: self.vitals.store_description(),
            store_error: self
                .vitals
                .store()
                .await
                .err()
                .map_or(String::new(), |e| e.to_string()),
            uptime_seconds: self.vitals.uptime().as_secs(),
            placement_mode: self.settings.placement_mode.as_str().into(),
            heartbeat_interval_ms: self.settings.heartbeat_interval.as_millis() as u64,
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let role = self.authorize(&request, Role::Viewer)?.role;
        let filter = request.into_inner();
        let state = match TaskStatus::try_from(filter.state) {
            Ok(TaskStatus::Unspecified) => None,
            Ok(status) => convert::task_state(status),
            Err(_) => return Err(Status::invalid_argument("state: not a task status")),
        };
        if filter.limit > MAX_LIST_TASKS {
            return Err(Status::invalid_argument(format!(
                "limit: {} is more than the {MAX_LIST_TASKS} one answer holds",
                filter.limit
            )));
        }
        let limit = if filter.limit == 0 {
            DEFAULT_LIST_TASKS
        } else {
            filter.limit
        } as usize;
        let ago = |seconds: u64| {
            let millis = i64::try_from(seconds)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000);
            now_millis().saturating_sub(millis)
        };
        let before = match filter.cursor.as_str() {
            "" => None,
            text => {
                Some(TaskCursor::parse(text).map_err(|e| Status::invalid_argument(e.to_string()))?)
            }
        };
        let nonempty = |text: String| (!text.is_empty()).then_some(text);
        let query = TaskQuery {
            state,
            worker_id: nonempty(filter.worker_id),
            owner: nonempty(filter.owner),
            image: nonempty(filter.image),
            since: (filter.since_seconds > 0).then(|| ago(filter.since_seconds)),
            until: (filter.until_seconds > 0).then(|| ago(filter.until_seconds)),
            before,
            limit,
        };
        let page = self
            .store
            .query_tasks(&query)
            .await
            .map_err(MasterError::from)?;
        let mut tasks: Vec<TaskView> = page.tasks.iter().map(|t| self.view(t, role)).collect();
        if !filter.newest_first {
            tasks.reverse();
        }
        let next_cursor = page.next.map(|c| c.to_string()).unwrap_or_default();
        Ok(Response::new(ListTasksResponse { tasks, next_cursor }))
    }

    type StreamTaskOutputStream = ReceiverStream<Result<TaskOutput, Status>>;

    async fn stream_task_output(
        &self,
        request: Request<StreamTaskOutputRequest>,
    ) -> Result<Response<Self::StreamTaskOutputStream>, Status> {
        let caller = self.authorize(&request, Role::Viewer)?;
        // The console has no token to lose; every other stream ends with its token.
        let revoked: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            if caller.token_id.is_some() {
                Box::pin(
                    self.auth
                        .revoked(super::bearer(&request).map(str::to_string), Role::Viewer),
                )
            } else {
                Box::pin(std::future::pending())
            };
        let ask = request.into_inner();
        let task_id = TaskId::parse("task_id", &ask.task_id).map_err(MasterError::from)?;
        // Subscribed before the first read, so no state change falls between.
        let events = self.events.subscribe();
        let task = self.tasks.task(&task_id).await?;
        if !task.state.is_terminal() && !ask.follow {
            return Err(MasterError::FailedPrecondition(format!(
                "task '{task_id}' is {}; its output is stored when it ends: follow it live (`logs -f {task_id}`)",
                task.state
            ))
            .into());
        }
        let (tx, rx) = mpsc::channel(64);
        let follower = Follower {
            admin: self.clone_handles(),
            role: caller.role,
            task_id,
            tx,
        };
        let shutdown = self.runtime.shutdown.clone();
        self.runtime.tracker.spawn(async move {
            let tx = follower.tx.clone();
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => Err(Status::unavailable("the master is stopping")),
                _ = revoked => Err(Status::unauthenticated("the API token was revoked or has expired")),
                _ = tx.closed() => return,
                outcome = follower.run(task, events) => outcome,
            };
            if let Err(status) = outcome {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn register_worker(
        &self,
        request: Request<AdminRegisterWorkerRequest>,
    ) -> Result<Response<AdminRegisterWorkerResponse>, Status> {
        self.authorize(&request, Role::Admin)?;
        let ask = request.into_inner();
        let id = worker_id("worker_id", &ask.worker_id)?;
        let mut answer = AdminRegisterWorkerResponse::default();
        match self.workers.register(&id, &ask.address).await? {
            Registration::Existing(state) => {
                answer.already_registered = true;
                answer.state = state.as_str().into();
            }
            Registration::Added => {
                answer.state = WorkerState::Pending.as_str().into();
                if let Some(token) = self.auth.issue_join_token(&id).await? {
                    answer.join_token = Some(self.join_token(&id, token));
                } else {
                    match self.workers.invite(&id, &ask.address).await {
                        Ok(()) => answer.invited = true,
                        Err(reason) => answer.invite_error = reason.to_string(),
                    }
                }
            }
        }
        Ok(Response::new(answer))
    }

    async fn unregister_worker(
        &self,
        request: Request<UnregisterWorkerRequest>,
    ) -> Result<Response<UnregisterWorkerResponse>, Status> {
        self.authorize(&request, Role::Admin)?;
        let id = worker_id("worker_id", &request.get_ref().worker_id)?;
        self.workers.unregister(&id).await?;
        Ok(Response::new(UnregisterWorkerResponse {}))
    }

    async fn issue_join_token(
        &self,
        request: Request<IssueJoinTokenRequest>,
    ) -> Result<Response<IssueJoinTokenResponse>, Status> {
        self.authorize(&request, Role::Admin)?;
        let id = worker_id("worker_id", &request.get_ref().worker_id)?;
        let token = self.auth.issue_join_token(&id).await?;
        Ok(Response::new(IssueJoinTokenResponse {
            join_token: token.map(|token| self.join_token(&id, token)),
        }))
    }

    async fn list_certificates(
        &self,
        request: Request<ListCertificatesRequest>,
    ) -> Result<Response<ListCertificatesResponse>, Status> {
        self.authorize(&request, Role::Admin)?;
        if self.auth.pki().is_none() {
            return Ok(Response::new(ListCertificatesResponse {
                insecure: true,
                workers: vec![],
            }));
        }
        let workers = self
            .workers
            .registry()
            .list()
            .into_iter()
            .map(|w| WorkerCertificate {
                worker_id: w.record.id,
                fingerprint: w.record.cert_fingerprint.unwrap_or_default(),
                expires_at: w
                    .record
                    .cert_expires_at
                    .map(|s| millis_timestamp(s.saturating_mul(1000))),
                join_token_expires_at: w.record.join_token_expires_at.map(millis_timestamp),
            })
            .collect();
        Ok(Response::new(ListCertificatesResponse {
            insecure: false,
            workers,
        }))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        self.authorize(&request, Role::Admin)?;
        let users = self
            .auth
            .users()
            .await?
            .into_iter()
            .map(|user| User {
                tokens: user
                    .tokens
                    .iter()
                    .map(|t| ApiToken {
                        id: t.id.clone(),
                        created_at: Some(millis_timestamp(t.created_at)),
                        expires_at: t.expires_at.map(millis_timestamp),
                        last_used_at: self.auth.token_last_used(&t.id).map(millis_timestamp),
                    })
                    .collect(),
                name: user.name,
                role: user.role,
                created_at: Some(millis_timestamp(user.created_at)),
            })
            .collect();
        Ok(Response::new(ListUsersResponse { users }))
    }

    async fn add_user(
        &self,
        request: Request<AddUserRequest>,
    ) -> Result<Response<AddUserResponse>, Status> {
        self.authorize(&request, Role::Admin)?;
        let ask = request.get_ref();
        let role = self.auth.add_user(&ask.name, &ask.role).await?;
        Ok(Response::new(AddUserResponse {
            role: role.as_str().into(),
        }))
    }

    async fn remove_user(
        &self,
        request: Request<RemoveUserRequest>,
    ) -> Result<Response<RemoveUserResponse>, Status> {
        self.authorize(&request, Role::Admin)?;
        self.auth.remove_user(&request.get_ref().name).await?;
        Ok(Response::new(RemoveUserResponse {}))
    }

    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        self.authorize(&request, Role::Admin)?;
        let ask = request.get_ref();
        let lifetime =
            (ask.expires_in_seconds > 0).then(|| Duration::from_secs(ask.expires_in_seconds));
        let created = self.auth.create_token(&ask.user, lifetime).await?;
        Ok(Response::new(CreateTokenResponse {
            token: created.token,
            id: created.id,
            expires_at: created.expires_at.map(millis_timestamp),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        self.authorize(&request, Role::Admin)?;
        let user = self.auth.revoke_token(&request.get_ref().token_id).await?;
        Ok(Response::new(RevokeTokenResponse { user }))
    }

    async fn list_secrets(
        &self,
        request: Request<ListSecretsRequest>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        self.authorize(&request, Role::Admin)?;
        let secrets = self
            .secrets
            .list()
            .await?
            .into_iter()
            .map(|s| Secret {
                name: s.name,
                registry: s.registry.unwrap_or_default(),
                updated_at: Some(millis_timestamp(s.updated_at)),
            })
            .collect();
        Ok(Response::new(ListSecretsResponse { secrets }))
    }

    async fn set_secret(
        &self,
        request: Request<SetSecretRequest>,
    ) -> Result<Response<SetSecretResponse>, Status> {
        self.authorize(&request, Role::Admin)?;
        let ask = request.into_inner();
        let registry = (!ask.registry.is_empty()).then_some(ask.registry.as_str());
        let replaced = self.secrets.set(&ask.name, &ask.value, registry).await?;
        Ok(Response::new(SetSecretResponse { replaced }))
    }

    async fn remove_secret(
        &self,
        request: Request<RemoveSecretRequest>,
    ) -> Result<Response<RemoveSecretResponse>, Status> {
        self.authorize(&request, Role::Admin)?;
        self.secrets.remove(&request.get_ref().name).await?;
        Ok(Response::new(RemoveSecretResponse {}))
    }
}

/// What following a task's output needs.
#[derive(Clone)]
struct Handles {
    lifecycle: Lifecycle,
    tasks: Tasks,
    scheduler: Scheduler,
}

impl AdminGrpc {
    fn clone_handles(&self) -> Handles {
        Handles {
            lifecycle: self.lifecycle.clone(),
            tasks: self.tasks.clone(),
            scheduler: self.scheduler.clone(),
        }
    }
}

/// Sends one task's output down a stream: stored, or live until it ends.
struct Follower {
    admin: Handles,
    role: Role,
    task_id: TaskId,
    tx: mpsc::Sender<Result<TaskOutput, Status>>,
}

type Events = tokio::sync::broadcast::Receiver<Arc<crate::core::events::Envelope>>;

impl Follower {
    async fn send(&self, item: Item) -> Result<(), Status> {
        self.tx
            .send(Ok(TaskOutput { item: Some(item) }))
            .await
            .map_err(|_| Status::cancelled("the client went away"))
    }

    fn view(&self, task: &TaskRecord) -> cloudai_proto::v1::TaskView {
        view(
            &self.admin.lifecycle,
            &self.admin.scheduler,
            task,
            self.role,
        )
    }

    /// Follows the task through its attempts until it ends: why it waits
    /// while queued, each placed attempt's live output (retried until its
    /// worker has it), then the stored output of an attempt that was not
    /// streamed, and the final state.
    async fn run(self, mut task: TaskRecord, mut events: Events) -> Result<(), Status> {
        let mut said = String::new();
        // The attempt whose live output was sent, and when that output ended.
        let mut streamed: Option<(u32, tokio::time::Instant)> = None;
        loop {
            let note = match task.state {
                state if state.is_terminal() => {
                    if streamed.is_none_or(|(attempt, _)| attempt != task.attempt) {
                        self.stored(&task).await?;
                    }
                    return self.send(Item::Finished(self.view(&task))).await;
                }
                TaskState::Queued => Some(format!(
                    "waiting: {}",
                    self.admin
                        .scheduler
                        .waiting_reason(&task.id)
                        .unwrap_or_else(|| "in the queue".into())
                )),
                TaskState::Lost => Some("lost: waiting for the master to place it again".into()),
                // Assigned, running, or unknown (its worker silent): it has
                // output on its worker, or will have.
                _ => match streamed {
                    Some((attempt, ended)) if attempt == task.attempt => {
                        if ended.elapsed() > FINAL_STATE_WAIT {
                            return Err(Status::deadline_exceeded(format!(
                                "task {} is still {}: its worker has not reported yet",
                                task.id, task.state
                            )));
                        }
                        None
                    }
                    _ => match self.admin.tasks.follow_logs(&task).await {
                        Ok(stream) => {
                            if self.follow(&task, stream, &mut events).await? {
                                streamed = Some((task.attempt, tokio::time::Instant::now()));
                            }
                            None
                        }
                        // Its worker does not hold it yet (the assignment is
                        // on its way), or cannot be reached: try again soon.
                        Err(error) => {
                            tracing::debug!(task_id = %task.id, %error, "no live output yet");
                            (task.state == TaskState::Unknown)
                                .then(|| format!("unknown: {error}; waiting for its worker"))
                        }
                    },
                },
            };
            if let Some(note) = note
                && note != said
            {
                self.send(Item::Note(note.clone())).await?;
                said = note;
            }
            // A state change, or a moment to look again.
            let _ = tokio::time::timeout(RECHECK, changed(&mut events, &task.id)).await;
            task = self.admin.tasks.task(&self.task_id).await?;
        }
    }

    /// The live output of a placed task, with its pull's progress, until the
    /// container's output ends. Returns whether that output was sent: it
    /// ended cleanly, or broke off after some of it (sending the stored
    /// output after that would repeat it); a stream that broke off before
    /// any output counts as none.
    async fn follow(
        &self,
        task: &TaskRecord,
        mut stream: crate::core::worker_client::LogStream,
        events: &mut Events,
    ) -> Result<bool, Status> {
        let mut sent = false;
        if let Some(progress) = self.admin.lifecycle.progress(&task.id) {
            let worker = task.worker_id.as_deref().unwrap_or_default();
            self.send(Item::Progress(progress_message(
                &task.id, worker, &progress,
            )))
            .await?;
        }
        loop {
            tokio::select! {
                event = events.recv() => {
                    if let Ok(envelope) = event
                        && let Event::TaskProgress { task_id, worker_id, progress, .. } = &envelope.event
                        && task_id == task.id.as_str()
                    {
                        self.send(Item::Progress(progress_message(task_id, worker_id, progress))).await?;
                    }
                }
                chunk = stream.next() => match chunk {
                    Some(Ok(chunk)) => {
                        sent = true;
                        self.send(Item::Data(chunk.data)).await?;
                    }
                    Some(Err(status)) => {
                        if sent {
                            self.send(Item::Note(format!("log stream ended: {}", status.message()))).await?;
                        }
                        return Ok(sent);
                    }
                    None => return Ok(true),
                },
            }
        }
    }

    /// A finished task's stored output.
    async fn stored(&self, task: &TaskRecord) -> MasterResult<()> {
        let Some(output) = self.admin.tasks.stored_output(task).await? else {
            let _ = self.send(Item::Note("no output stored".into())).await;
            return Ok(());
        };
        let mut pieces = std::pin::pin!(output.pieces());
        while let Some(piece) = pieces.next().await {
            if self.send(Item::Data(piece?)).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Resolves when an event says `task_id` changed state (or events were missed).
async fn changed(events: &mut Events, task_id: &str) {
    loop {
        match events.recv().await {
            Ok(envelope) => {
                if let Event::TaskState { task_id: id, .. } = &envelope.event
                    && id == task_id
                {
                    return;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                std::future::pending::<()>().await
            }
        }
    }
}
