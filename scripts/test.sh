#!/usr/bin/env bash
# The whole test suite, from a clean checkout: installs and starts what the
# tests need when missing (dockerd, the offline test image), builds every binary
# and test once, then runs them all with cargo-nextest (cargo test as fallback).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-docker.sh
bash scripts/build-test-image.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> Python stubs (proto/generate.sh)"
stubs=$(mktemp -d)
bash proto/generate.sh "$stubs/cloudai_proto" >/dev/null
(cd "$stubs" && python3 -c 'import cloudai_proto.master_agent_pb2_grpc, cloudai_proto.master_worker_pb2_grpc')
rm -rf "$stubs"

echo "==> building binaries and tests"
cargo build --workspace --bins --tests --locked

if cargo nextest --version >/dev/null 2>&1; then
  echo "==> cargo nextest run"
  cargo nextest run --workspace --locked --no-fail-fast
else
  echo "==> cargo test (cargo-nextest not installed)"
  cargo test --workspace --locked --no-fail-fast
fi
