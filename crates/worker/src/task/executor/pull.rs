//! Getting a task's image: the pull policy, the pull timeout, registry
//! logins, retries of transient errors with backoff, and progress (layers
//! and bytes) read from Docker's pull stream.

use super::{DockerError, Executor, docker_message};
use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptions;
use cloudai_proto::v1::{PullPolicy, RegistryCredentials};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How the image of one attempt is to be got.
pub struct ImageRequest<'a> {
    /// The image reference.
    pub image: &'a str,
    /// When to pull.
    pub policy: PullPolicy,
    /// Longest the whole pull (retries included) may take.
    pub timeout: Duration,
    /// The login for the image's registry, if the master sent one.
    pub credentials: Option<&'a RegistryCredentials>,
}

/// Progress of a pull, over the layers Docker announced so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullProgress {
    /// Layers downloaded and extracted, or already present.
    pub layers_done: u32,
    /// Layers announced.
    pub layers_total: u32,
    /// Bytes downloaded, over layers of known size.
    pub bytes_done: u64,
    /// Bytes to download, over layers of known size.
    pub bytes_total: u64,
    /// The latest note (a retry, a status).
    pub message: String,
}

/// Pull attempts before a transient error fails the task.
const PULL_ATTEMPTS: u32 = 5;
/// Pause before the first retry; doubled for each next one.
const FIRST_RETRY: Duration = Duration::from_secs(1);

impl Executor {
    /// Makes sure the image is on this host as the request's policy says,
    /// publishing pull progress on `progress`.
    pub async fn prepare_image(
        &self,
        request: &ImageRequest<'_>,
        progress: &watch::Sender<PullProgress>,
    ) -> Result<(), DockerError> {
        let image = request.image;
        let present = self.has_image(image).await?;
        match (request.policy, present) {
            (PullPolicy::Never, true) | (PullPolicy::Missing, true) => return Ok(()),
            (PullPolicy::Never, false) => {
                return Err(DockerError(format!(
                    "image '{image}' is not on this worker, and the task's --pull never forbids pulling it"
                )));
            }
            _ => {}
        }
        let deadline = Instant::now() + request.timeout;
        let mut delay = FIRST_RETRY;
        let mut attempt = 1;
        loop {
            tracing::info!(image, attempt, "pulling image");
            let failure =
                match tokio::time::timeout_at(deadline, self.pull(request, progress)).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(message)) => message,
                    Err(_) => {
                        return Err(DockerError(format!(
                            "pulling image '{image}' took longer than its pull timeout ({}s)",
                            request.timeout.as_secs()
                        )));
                    }
                };
            let why = || {
                format!(
                    "image '{image}' could not be pulled: {failure}{}",
                    hint(&failure)
                )
            };
            if !transient(&failure) || attempt >= PULL_ATTEMPTS {
                return Err(DockerError(why()));
            }
            if Instant::now() + delay >= deadline {
                return Err(DockerError(format!(
                    "{} (no time left within the pull timeout to retry)",
                    why()
                )));
            }
            tracing::warn!(image, attempt, retry_in_s = delay.as_secs(), error = %failure, "image pull failed; retrying");
            progress.send_modify(|p| {
                p.message = format!("retrying in {}s: {failure}", delay.as_secs());
            });
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }

    /// One pull, reading Docker's stream to its end.
    async fn pull(
        &self,
        request: &ImageRequest<'_>,
        progress: &watch::Sender<PullProgress>,
    ) -> Result<(), String> {
        let options = CreateImageOptions {
            from_image: Some(request.image.to_string()),
            ..Default::default()
        };
        let credentials = request.credentials.map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(c.server.clone()),
            ..Default::default()
        });
        let mut layers = Layers::default();
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        while let Some(step) = stream.next().await {
            let info = step.map_err(docker_message)?;
            if let Some(error) = info.error_detail.and_then(|d| d.message) {
                return Err(error);
            }
            let detail = info.progress_detail.unwrap_or_default();
            layers.update(
                info.id.as_deref(),
                info.status.as_deref().unwrap_or_default(),
                detail.current,
                detail.total,
            );
            // The layers' state, keeping the latest note (a retry's).
            progress.send_if_modified(|p| {
                let now = PullProgress {
                    message: p.message.clone(),
                    ..layers.progress()
                };
                let changed = *p != now;
                *p = now;
                changed
            });
        }
        Ok(())
    }
}

/// Whether a failed pull may work when tried again: not when the image does
/// not exist, the login is wrong or missing, or the reference is malformed.
fn transient(message: &str) -> bool {
    const FINAL: [&str; 10] = [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
        "not found",
        "manifest unknown",
        "name unknown",
        "invalid reference",
        "repository does not exist",
        "no matching manifest",
    ];
    let message = message.to_ascii_lowercase();
    !FINAL.iter().any(|word| message.contains(word))
}

/// What the operator can do about a final pull error.
fn hint(message: &str) -> &'static str {
    let message = message.to_ascii_lowercase();
    if [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
    ]
    .iter()
    .any(|w| message.contains(w))
    {
        " (check the registry login: `secret set NAME --registry HOST` with USER:PASSWORD)"
    } else {
        ""
    }
}

/// What Docker said so far about each layer of a pull.
#[derive(Default)]
struct Layers {
    by_id: HashMap<String, Layer>,
}

#[derive(Default, Clone, Copy)]
struct Layer {
    downloaded: u64,
    size: Option<u64>,
    done: bool,
}

impl Layers {
    fn update(&mut self, id: Option<&str>, status: &str, current: Option<i64>, total: Option<i64>) {
        // Lines without a layer id ("Pulling from …", "Digest: …") and the
        // line naming the tag itself carry no layer progress.
        let Some(id) = id.filter(|_| is_layer_status(status)) else {
            return;
        };
        let layer = self.by_id.entry(id.to_string()).or_default();
        let size = total.and_then(|t| u64::try_from(t).ok()).filter(|t| *t > 0);
        match status {
            "Downloading" => {
                layer.size = size.or(layer.size);
                layer.downloaded = current.and_then(|c| u64::try_from(c).ok()).unwrap_or(0);
            }
            "Verifying Checksum" | "Download complete" | "Extracting" => {
                if let Some(size) = layer.size {
                    layer.downloaded = size;
                }
            }
            "Pull complete" | "Already exists" => {
                if let Some(size) = layer.size {
                    layer.downloaded = size;
                }
                layer.done = true;
            }
            _ => {}
        }
    }

    fn progress(&self) -> PullProgress {
        let layers = self.by_id.values();
        PullProgress {
            layers_done: layers.clone().filter(|l| l.done).count() as u32,
            layers_total: self.by_id.len() as u32,
            bytes_done: layers
                .clone()
                .filter(|l| l.size.is_some())
                .map(|l| l.downloaded)
                .fold(0u64, u64::saturating_add),
            bytes_total: layers
                .filter_map(|l| l.size)
                .fold(0u64, u64::saturating_add),
            message: String::new(),
        }
    }
}

fn is_layer_status(status: &str) -> bool {
    matches!(
        status,
        "Pulling fs layer"
            | "Waiting"
            | "Downloading"
            | "Verifying Checksum"
            | "Download complete"
            | "Extracting"
            | "Pull complete"
            | "Already exists"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_add_up_from_dockers_stream() {
        let mut layers = Layers::default();
        layers.update(Some("latest"), "Pulling from team/app", None, None);
        layers.update(Some("a"), "Pulling fs layer", None, None);
        layers.update(Some("b"), "Already exists", None, None);
        layers.update(Some("c"), "Pulling fs layer", None, None);
        layers.update(Some("a"), "Downloading", Some(300), Some(1000));
        layers.update(Some("c"), "Downloading", Some(50), Some(200));
        let p = layers.progress();
        assert_eq!((p.layers_done, p.layers_total), (1, 3));
        assert_eq!((p.bytes_done, p.bytes_total), (350, 1200));
        layers.update(Some("a"), "Download complete", None, None);
        layers.update(Some("a"), "Extracting", Some(10), Some(1000));
        layers.update(Some("a"), "Pull complete", None, None);
        layers.update(None, "Digest: sha256:abc", None, None);
        let p = layers.progress();
        assert_eq!((p.layers_done, p.layers_total), (2, 3));
        assert_eq!((p.bytes_done, p.bytes_total), (1050, 1200));
    }

    #[test]
    fn only_errors_that_may_pass_are_retried() {
        for message in [
            "Get \"http://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused",
            "received unexpected HTTP status: 503 Service Unavailable",
            "net/http: TLS handshake timeout",
            "unexpected EOF",
        ] {
            assert!(transient(message), "{message}");
        }
        for message in [
            "Head \"http://127.0.0.1:5000/v2/app/manifests/v1\": no basic auth credentials",
            "unauthorized: authentication required",
            "manifest for 127.0.0.1:5000/app:v2 not found: manifest unknown",
            "pull access denied for app, repository does not exist or may require 'docker login'",
            "invalid reference format",
        ] {
            assert!(!transient(message), "{message}");
        }
        assert!(hint("unauthorized: authentication required").contains("secret set"));
        assert_eq!(hint("manifest unknown"), "");
    }
}
