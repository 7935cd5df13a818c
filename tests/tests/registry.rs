//! The registry harness on real components (`docker-registry` and dockerd,
//! no CloudAI binaries): an image pushed with credentials can be pulled only
//! with them, and a pull from the stalled registry does not complete.

use cloudai_e2e::registry::{Registry, StalledRegistry};
use cloudai_e2e::{TEST_IMAGE, ensure_test_image, unique};
use std::path::Path;
use std::process::{Command, Output};

/// Runs `docker pull reference` with `DOCKER_CONFIG=config`, under
/// `timeout SECONDS` when given.
fn pull(config: &Path, reference: &str, timeout: Option<u32>) -> Output {
    let mut command = match timeout {
        Some(seconds) => {
            let mut command = Command::new("timeout");
            command.arg(seconds.to_string()).arg("docker");
            command
        }
        None => Command::new("docker"),
    };
    command
        .args(["pull", reference])
        .env("DOCKER_CONFIG", config)
        .output()
        .expect("run docker pull")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Removes these image references when dropped (the source image stays).
struct RemoveImages(Vec<String>);

impl Drop for RemoveImages {
    fn drop(&mut self) {
        for reference in &self.0 {
            let _ = Command::new("docker").args(["rmi", reference]).output();
        }
    }
}

#[test]
fn a_pushed_image_pulls_only_with_credentials() {
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), &[("alice", "secret")]);
    let repo = format!("{}:v1", unique("cloudai-e2e/busybox"));
    let reference = registry.push(TEST_IMAGE, &repo, "alice", "secret");
    let _cleanup = RemoveImages(vec![reference.clone()]);
    assert_eq!(reference, format!("{}/{repo}", registry.host));
    let local = Command::new("docker")
        .args(["image", "inspect", &reference])
        .output()
        .unwrap();
    assert!(!local.status.success(), "push left the tag {reference}");

    let anonymous = tempfile::tempdir().unwrap();
    let out = pull(anonymous.path(), &reference, None);
    assert!(!out.status.success(), "pulled without credentials");
    assert!(
        text(&out).contains("no basic auth credentials"),
        "{}",
        text(&out)
    );

    let wrong = registry.docker_config("alice", "wrong");
    let out = pull(wrong.path(), &reference, None);
    assert!(!out.status.success(), "pulled with a wrong password");
    assert!(
        text(&out).contains("unauthorized: authentication required"),
        "{}",
        text(&out)
    );

    let alice = registry.login("alice", "secret");
    let out = pull(alice.path(), &reference, None);
    assert!(
        out.status.success(),
        "{}\nregistry log:\n{}",
        text(&out),
        registry.log()
    );
}

#[test]
fn a_pull_from_the_stalled_registry_does_not_complete() {
    let stalled = StalledRegistry::start();
    let reference = format!("{}/cloudai-e2e/never:v1", stalled.host);
    let _cleanup = RemoveImages(vec![reference.clone()]);
    let config = tempfile::tempdir().unwrap();
    let out = pull(config.path(), &reference, Some(3));
    // 124: timeout(1) stopped the pull; it neither succeeded nor failed on its own.
    assert_eq!(out.status.code(), Some(124), "{}", text(&out));
}
