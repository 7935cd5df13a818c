//! The executor's one way to the master: `MasterAgent` and `MasterAdmin`
//! over a [`Transport`]: a TLS channel for `cloudai`, or the master's own
//! services in-process for its console. Every call carries the API token.

use cloudai_proto::v1::master_admin_client::MasterAdminClient;
use cloudai_proto::v1::master_agent_client::MasterAgentClient;
use cloudai_proto::v1::{
    AddUserRequest, AddUserResponse, AdminRegisterWorkerRequest, AdminRegisterWorkerResponse,
    AgentCancelTaskRequest, AgentCancelTaskResponse, ClusterState, ClusterStatus,
    CreateTokenRequest, CreateTokenResponse, GetClusterStateRequest, GetStatusRequest,
    GetTaskRequest, IssueJoinTokenRequest, IssueJoinTokenResponse, ListCertificatesRequest,
    ListCertificatesResponse, ListSecretsRequest, ListSecretsResponse, ListTasksRequest,
    ListTasksResponse, ListUsersRequest, ListUsersResponse, RemoveSecretRequest, RemoveUserRequest,
    RevokeTokenRequest, RevokeTokenResponse, SetSecretRequest, SetSecretResponse,
    StreamTaskOutputRequest, SubmitTaskRequest, SubmitTaskResponse, TaskOutput, TaskView,
    UnregisterWorkerRequest, WhoAmIRequest, WhoAmIResponse,
};
use tonic::codegen::http;
use tonic::{Request, Status, Streaming};

/// An error from a transport.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How calls reach the master: any HTTP/2 service that speaks gRPC.
pub type Transport = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    BoxError,
>;

/// A connection to one master, as one user (cheap to clone).
#[derive(Clone)]
pub struct Client {
    agent: MasterAgentClient<Transport>,
    admin: MasterAdminClient<Transport>,
    token: Option<String>,
    /// Where the master is, for messages ("master at 10.0.0.5:50051").
    target: String,
}

/// One API answer.
pub type Answer<T> = Result<T, Status>;

impl Client {
    /// A client over `transport`, sending `token` with every call.
    pub fn new(transport: Transport, token: Option<String>, target: impl Into<String>) -> Self {
        let limit = 64 << 20;
        Self {
            agent: MasterAgentClient::new(transport.clone()).max_decoding_message_size(limit),
            admin: MasterAdminClient::new(transport).max_decoding_message_size(limit),
            token,
            target: target.into(),
        }
    }

    /// Where the master is.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// Who the token belongs to.
    pub async fn who_am_i(&self) -> Answer<WhoAmIResponse> {
        let request = self.request(WhoAmIRequest {});
        Ok(self.admin.clone().who_am_i(request).await?.into_inner())
    }

    /// The cluster in numbers.
    pub async fn status(&self) -> Answer<ClusterStatus> {
        let request = self.request(GetStatusRequest {});
        Ok(self.admin.clone().get_status(request).await?.into_inner())
    }

    /// Workers with their info, latest heartbeat and free resources.
    pub async fn cluster_state(&self) -> Answer<ClusterState> {
        let request = self.request(GetClusterStateRequest {});
        Ok(self
            .agent
            .clone()
            .get_cluster_state(request)
            .await?
            .into_inner())
    }

    /// Submits a task.
    pub async fn submit(&self, task: SubmitTaskRequest) -> Answer<SubmitTaskResponse> {
        let request = self.request(task);
        Ok(self.agent.clone().submit_task(request).await?.into_inner())
    }

    /// One task.
    pub async fn task(&self, task_id: &str) -> Answer<TaskView> {
        let request = self.request(GetTaskRequest {
            task_id: task_id.into(),
        });
        Ok(self.agent.clone().get_task(request).await?.into_inner())
    }

    /// Tasks, filtered.
    pub async fn tasks(&self, filter: ListTasksRequest) -> Answer<ListTasksResponse> {
        let request = self.request(filter);
        Ok(self.admin.clone().list_tasks(request).await?.into_inner())
    }

    /// A task's output: stored, or live with `follow`.
    pub async fn output(&self, task_id: &str, follow: bool) -> Answer<Streaming<TaskOutput>> {
        let request = self.request(StreamTaskOutputRequest {
            task_id: task_id.into(),
            follow,
        });
        Ok(self
            .admin
            .clone()
            .stream_task_output(request)
            .await?
            .into_inner())
    }

    /// Cancels a task.
    pub async fn cancel(&self, task_id: &str) -> Answer<AgentCancelTaskResponse> {
        let request = self.request(AgentCancelTaskRequest {
            task_id: task_id.into(),
        });
        Ok(self.agent.clone().cancel_task(request).await?.into_inner())
    }

    /// Pre-registers a worker.
    pub async fn register(
        &self,
        worker_id: &str,
        address: &str,
    ) -> Answer<AdminRegisterWorkerResponse> {
        let request = self.request(AdminRegisterWorkerRequest {
            worker_id: worker_id.into(),
            address: address.into(),
        });
        Ok(self
            .admin
            .clone()
            .register_worker(request)
            .await?
            .into_inner())
    }

    /// Removes a worker.
    pub async fn unregister(&self, worker_id: &str) -> Answer<()> {
        let request = self.request(UnregisterWorkerRequest {
            worker_id: worker_id.into(),
        });
        self.admin.clone().unregister_worker(request).await?;
        Ok(())
    }

    /// A new join token for a registered worker.
    pub async fn join_token(&self, worker_id: &str) -> Answer<IssueJoinTokenResponse> {
        let request = self.request(IssueJoinTokenRequest {
            worker_id: worker_id.into(),
        });
        Ok(self
            .admin
            .clone()
            .issue_join_token(request)
            .await?
            .into_inner())
    }

    /// Worker certificates and join tokens.
    pub async fn certificates(&self) -> Answer<ListCertificatesResponse> {
        let request = self.request(ListCertificatesRequest {});
        Ok(self
            .admin
            .clone()
            .list_certificates(request)
            .await?
            .into_inner())
    }

    /// API users and their tokens.
    pub async fn users(&self) -> Answer<ListUsersResponse> {
        let request = self.request(ListUsersRequest {});
        Ok(self.admin.clone().list_users(request).await?.into_inner())
    }

    /// Adds a user.
    pub async fn add_user(&self, name: &str, role: &str) -> Answer<AddUserResponse> {
        let request = self.request(AddUserRequest {
            name: name.into(),
            role: role.into(),
        });
        Ok(self.admin.clone().add_user(request).await?.into_inner())
    }

    /// Removes a user and their tokens.
    pub async fn remove_user(&self, name: &str) -> Answer<()> {
        let request = self.request(RemoveUserRequest { name: name.into() });
        self.admin.clone().remove_user(request).await?;
        Ok(())
    }

    /// A new API token for a user (`expires_in_seconds` 0: never expires).
    pub async fn create_token(
        &self,
        user: &str,
        expires_in_seconds: u64,
    ) -> Answer<CreateTokenResponse> {
        let request = self.request(CreateTokenRequest {
            user: user.into(),
            expires_in_seconds,
        });
        Ok(self.admin.clone().create_token(request).await?.into_inner())
    }

    /// Revokes a token.
    pub async fn revoke_token(&self, token_id: &str) -> Answer<RevokeTokenResponse> {
        let request = self.request(RevokeTokenRequest {
            token_id: token_id.into(),
        });
        Ok(self.admin.clone().revoke_token(request).await?.into_inner())
    }

    /// Secret names and kinds.
    pub async fn secrets(&self) -> Answer<ListSecretsResponse> {
        let request = self.request(ListSecretsRequest {});
        Ok(self.admin.clone().list_secrets(request).await?.into_inner())
    }

    /// Sets a secret (a registry login with `registry`).
    pub async fn set_secret(
        &self,
        name: &str,
        value: &str,
        registry: Option<&str>,
    ) -> Answer<SetSecretResponse> {
        let request = self.request(SetSecretRequest {
            name: name.into(),
            value: value.into(),
            registry: registry.unwrap_or_default().into(),
        });
        Ok(self.admin.clone().set_secret(request).await?.into_inner())
    }

    /// Removes a secret.
    pub async fn remove_secret(&self, name: &str) -> Answer<()> {
        let request = self.request(RemoveSecretRequest { name: name.into() });
        self.admin.clone().remove_secret(request).await?;
        Ok(())
    }

    /// One line for a failed call: the master's own message, or for a call
    /// that never reached it, what went wrong and what to do.
    pub fn explain(&self, status: &Status) -> String {
        if status.code() == tonic::Code::Unavailable || status.code() == tonic::Code::Unknown {
            let cause = chain(status);
            if cause.contains("UnknownIssuer") || cause.contains("certificate") {
                return format!(
                    "the {} presented a certificate the trusted CA did not sign ({cause}); log in again with the cluster's CA (`cloudai login ADDR --ca ca.pem`)",
                    self.target
                );
            }
            if status.message().contains("transport error") || status.source().is_some() {
                return format!(
                    "cannot reach the {} ({cause}): check that it runs and the address (`cloudai login`, CLOUDAI_MASTER)",
                    self.target
                );
            }
        }
        status.message().to_string()
    }
}

use std::error::Error as _;

/// A status with its chain of causes, innermost last.
fn chain(status: &Status) -> String {
    let mut text = status.message().to_string();
    let mut source = status.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
