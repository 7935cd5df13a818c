#!/usr/bin/env bash
# The whole test suite, from a clean checkout: installs and starts what the
# tests need when missing (dockerd, the offline test image, nx-27017, Chromium and
# chromedriver, Docker's registry), builds every binary and test once, then runs
# them all with cargo-nextest (cargo test as fallback), the core end-to-end suite
# a second time with the master on MongoDB, and a short run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-docker.sh
bash scripts/build-test-image.sh
bash scripts/ensure-chromium.sh
bash scripts/ensure-registry.sh

echo "==> nx-27017 (MongoDB wire-protocol server for the MongoDB backend's tests)"
command -v nx-27017 >/dev/null 2>&1 || python3 -m pip install --quiet nx-27017

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> Python stubs (proto/generate.sh) and the agentic scheduler's unit tests"
bash proto/generate.sh >/dev/null
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install --quiet pytest
python3 -m pytest -q agentic_scheduler/tests

echo "==> building binaries and tests"
cargo build --workspace --bins --tests --locked

if cargo nextest --version >/dev/null 2>&1; then
  echo "==> cargo nextest run"
  cargo nextest run --workspace --locked --no-fail-fast
  echo "==> the core end-to-end suite again, with every master on MongoDB (nx-27017)"
  CLOUDAI_TEST_STORE=mongodb cargo nextest run -p cloudai-e2e --test core --locked --no-fail-fast
else
  echo "==> cargo test (cargo-nextest not installed)"
  cargo test --workspace --locked --no-fail-fast
  CLOUDAI_TEST_STORE=mongodb cargo test -p cloudai-e2e --test core --locked --no-fail-fast
fi

echo "==> fuzz targets, a short run each (scripts/fuzz.sh)"
bash scripts/fuzz.sh
